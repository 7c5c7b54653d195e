"""``ModelLibrary``: builds the models a service needs, each once, dependencies first.

    library = ModelLibrary(models=sentiment, required_models=["classifier"])
    classifier = library.get("classifier")

``models`` is a package or module (searched recursively for model classes
with ``CONFIGURATIONS``), a class, a dotted name, or a list of them. Missing
dependencies and dependency cycles are reported when the library is created;
models are built then (eager, the default) or on first ``get`` (lazy).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import threading
from collections.abc import Iterable
from types import ModuleType
from typing import Any, TypeVar, overload

from servekit.errors import ConfigError
from servekit.library.model import ModelBase, ModelConfiguration, default_key
from servekit.library.prediction_cache import PredictionCache, make_cache
from servekit.library.settings import LibrarySettings

ModelSource = type | ModuleType | str
M = TypeVar("M", bound=ModelBase[Any, Any])


def find_model_classes(models: ModelSource | Iterable[ModelSource]) -> list[type[ModelBase[Any, Any]]]:
    """Model classes in packages/modules (recursively), classes or dotted names."""
    sources: list[ModelSource] = (
        [models] if isinstance(models, (type, ModuleType, str)) else list(models)
    )
    found: list[type[ModelBase[Any, Any]]] = []
    for source in sources:
        if isinstance(source, str):
            source = _import_name(source)
        if isinstance(source, type):
            if issubclass(source, ModelBase):
                found.append(source)
            continue
        for module in _walk(source):
            for _, obj in inspect.getmembers(module, inspect.isclass):
                if issubclass(obj, ModelBase) and obj.__module__ == module.__name__ and (
                    "CONFIGURATIONS" in obj.__dict__
                ):
                    found.append(obj)
    unique: dict[type[ModelBase[Any, Any]], None] = dict.fromkeys(found)
    return list(unique)


def _import_name(name: str) -> ModuleType | type:
    try:
        return importlib.import_module(name)
    except ImportError as first:
        module_name, _, attr = name.rpartition(".")
        if not module_name:
            raise ConfigError(f"cannot import models from {name!r}: {first}") from None
        try:
            found = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError):
            raise ConfigError(f"cannot import models from {name!r}: {first}") from None
        if isinstance(found, (type, ModuleType)):
            return found
        raise ConfigError(f"{name!r} is neither a module nor a class") from None


def _walk(module: ModuleType) -> list[ModuleType]:
    modules = [module]
    path = getattr(module, "__path__", None)
    if path is not None:
        for info in pkgutil.walk_packages(path, module.__name__ + "."):
            modules.append(importlib.import_module(info.name))
    return modules


class ModelLibrary:
    """Shared, dependency-ordered model instances."""

    def __init__(
        self,
        models: ModelSource | Iterable[ModelSource],
        required_models: Iterable[str] | None = None,
        settings: LibrarySettings | dict[str, Any] | None = None,
        *,
        configuration_overrides: dict[str, dict[str, Any]] | None = None,
        cache: PredictionCache | None = None,
    ) -> None:
        if isinstance(settings, dict):
            settings = LibrarySettings.from_env().model_copy(update=settings)
        self.settings = settings or LibrarySettings.from_env()
        self.configurations: dict[str, tuple[type[ModelBase[Any, Any]], ModelConfiguration]] = {}
        for cls in find_model_classes(models):
            keys = list(cls.CONFIGURATIONS) or [default_key(cls)]
            for key in keys:
                if key in self.configurations and self.configurations[key][0] is not cls:
                    other = self.configurations[key][0]
                    raise ConfigError(
                        f"configuration {key!r} is defined by both {other.__qualname__} "
                        f"and {cls.__qualname__}"
                    )
                config = cls.configuration(key) if cls.CONFIGURATIONS else ModelConfiguration()
                override = (configuration_overrides or {}).get(key)
                if override:
                    config = config.model_copy(update=ModelConfiguration.model_validate(override).model_dump(exclude_unset=True))
                self.configurations[key] = (cls, config)
        self.required_models = list(required_models) if required_models is not None else list(self.configurations)
        self._cache = cache
        self._assets: Any = None
        self._instances: dict[str, ModelBase[Any, Any]] = {}
        self._lock = threading.RLock()
        self.build_order = self._check(self.required_models)
        if not self.settings.lazy_loading:
            for key in self.build_order:
                self.get(key)

    # -- start-up checks --------------------------------------------------
    def _check(self, required: list[str]) -> list[str]:
        """Dependency order of ``required``; ConfigError on missing names or cycles."""
        order: list[str] = []
        state: dict[str, str] = {}

        def visit(key: str, path: list[str]) -> None:
            if state.get(key) == "done":
                return
            if state.get(key) == "visiting":
                cycle = [*path[path.index(key) :], key]
                raise ConfigError("model dependency cycle: " + " -> ".join(cycle))
            if key not in self.configurations:
                known = ", ".join(sorted(self.configurations)) or "none"
                by = f"model {path[-1]!r} depends on {key!r}, which" if path else f"model {key!r}"
                raise ConfigError(f"{by} is not defined by any model class (known: {known})")
            state[key] = "visiting"
            for dependency in self.configurations[key][1].model_dependencies.values():
                visit(dependency, [*path, key])
            state[key] = "done"
            order.append(key)

        for key in required:
            visit(key, [])
        return order

    # -- building -------------------------------------------------------------
    @property
    def cache(self) -> PredictionCache:
        if self._cache is None:
            self._cache = make_cache(self.settings)
        return self._cache

    @property
    def assets_manager(self) -> Any:
        if self._assets is None:
            from servekit.library.assets import AssetsManager

            self._assets = AssetsManager(self.settings)
        return self._assets

    @overload
    def get(self, key: str) -> ModelBase[Any, Any]: ...
    @overload
    def get(self, key: str, model_type: type[M]) -> M: ...

    def get(self, key: str, model_type: type[Any] | None = None) -> Any:
        """The shared instance of configuration ``key`` (built with its dependencies)."""
        with self._lock:
            model = self._instances.get(key)
            if model is None:
                if key not in self.build_order:
                    self.build_order = self._check([*self.required_models, key])
                    self.required_models.append(key)
                model = self._build(key)
        if model_type is not None and not isinstance(model, model_type):
            raise TypeError(f"model {key!r} is a {type(model).__name__}, not {model_type.__name__}")
        return model

    def _build(self, key: str) -> ModelBase[Any, Any]:
        cls, config = self.configurations[key]
        dependencies = {
            local: self._instances.get(target) or self._build(target)
            for local, target in config.model_dependencies.items()
        }
        asset_path = ""
        version = str(config.model_settings.get("version", ""))
        if config.asset:
            asset = self.assets_manager.fetch_asset(config.asset)
            asset_path = str(asset.path)
            version = version or asset.version
        cache = self.cache if config.model_settings.get("cache_predictions") else None
        model = cls(
            configuration_key=key,
            asset_path=asset_path,
            model_dependencies=dependencies,
            model_settings=config.model_settings,
            cache=cache,
            version=version,
        )
        self._instances[key] = model
        return model

    # -- introspection ----------------------------------------------------
    @property
    def models(self) -> dict[str, ModelBase[Any, Any]]:
        return dict(self._instances)

    def describe(self, print_table: bool = False) -> dict[str, dict[str, Any]] | str:
        """Per model: signature, dependencies, asset, load time and memory added."""
        from servekit.library.describe import describe_library

        return describe_library(self, print_table)

    def close(self) -> None:
        for model in reversed(list(self._instances.values())):
            model.close()
        self._instances.clear()


def load_model(key: str, models: ModelSource | Iterable[ModelSource], **kwargs: Any) -> ModelBase[Any, Any]:
    """One model (and its dependencies) from ``models``."""
    return ModelLibrary(models, required_models=[key], **kwargs).get(key)
