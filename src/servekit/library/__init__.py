"""The typed Python model library: models, composition, assets, prediction
cache and profiling."""

from servekit.library._signature import ItemValidationError, ReturnValueError, Signature
from servekit.library.assets import AssetsManager, AssetSpec, AssetStore
from servekit.library.library import ModelLibrary, find_model_classes, load_model
from servekit.library.model import (
    AsyncModel,
    Model,
    ModelBase,
    ModelConfiguration,
    ModelDependencies,
)
from servekit.library.prediction_cache import LRUCache, PredictionCache, RedisCache
from servekit.library.profiler import SimpleProfiler
from servekit.library.settings import LibrarySettings

__all__ = [
    "AssetSpec",
    "AssetStore",
    "AssetsManager",
    "AsyncModel",
    "ItemValidationError",
    "LRUCache",
    "LibrarySettings",
    "Model",
    "ModelBase",
    "ModelConfiguration",
    "ModelDependencies",
    "ModelLibrary",
    "PredictionCache",
    "RedisCache",
    "ReturnValueError",
    "Signature",
    "SimpleProfiler",
    "find_model_classes",
    "load_model",
]
