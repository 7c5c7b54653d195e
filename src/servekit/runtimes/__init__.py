"""Runtime plugins and how a model's settings pick one.

``implementation`` may be a servekit runtime name (``sklearn``), an MLServer
implementation path (``mlserver_sklearn.SKLearnModel``), or the dotted path of
any class (imported with the model's folder on ``sys.path``). Without it, the
runtime is chosen from the model file's suffix.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any

from servekit.config import ModelSettings
from servekit.errors import ModelLoadError, ServekitError
from servekit.runtimes.base import Runtime

# runtime name -> "module:Class"; imported only when a model needs it
BUILTIN_RUNTIMES: dict[str, str] = {
    "sklearn": "servekit.runtimes.sklearn:SKLearnRuntime",
    "xgboost": "servekit.runtimes.xgboost:XGBoostRuntime",
    "lightgbm": "servekit.runtimes.lightgbm:LightGBMRuntime",
    "catboost": "servekit.runtimes.catboost:CatBoostRuntime",
    "tensorflow": "servekit.runtimes.tensorflow:TensorFlowRuntime",
    "onnx": "servekit.runtimes.onnx:ONNXRuntime",
    "torch": "servekit.runtimes.torch:TorchRuntime",
    "torchserve": "servekit.torch_handler.runtime:HandlerRuntime",
    "mlflow": "servekit.runtimes.mlflow:MLflowRuntime",  # a folder with an MLmodel file, runs:/, models:/
    "huggingface": "servekit.runtimes.huggingface:HuggingFaceRuntime",  # transformers pipelines, sentence-transformers
    "graph": "servekit.graphs.runtime:GraphRuntime",  # an inference graph of served models
}

ALIASES: dict[str, str] = {
    "mlserver_sklearn.SKLearnModel": "sklearn",
    "mlserver_xgboost.XGBoostModel": "xgboost",
    "mlserver_lightgbm.LightGBMModel": "lightgbm",
    "mlserver_catboost.CatboostModel": "catboost",
    "scikit-learn": "sklearn",
    "keras": "tensorflow",
    "tensorflow_savedmodel": "tensorflow",  # Triton's platform names
    "onnxruntime_onnx": "onnx",
    "onnxruntime": "onnx",
    "pytorch": "torch",
    "handler": "torchserve",
    "mlserver_mlflow.MLflowRuntime": "mlflow",
    "mlserver_huggingface.HuggingFaceRuntime": "huggingface",
}

# file suffix -> runtime name, for models without an ``implementation``
SUFFIX_RUNTIMES: dict[str, str] = {
    ".joblib": "sklearn",
    ".pkl": "sklearn",
    ".pickle": "sklearn",
    ".skops": "sklearn",
    ".cbm": "catboost",
    ".json": "xgboost",
    ".ubj": "xgboost",
    ".txt": "lightgbm",
    ".lgb": "lightgbm",
    ".keras": "tensorflow",
    ".h5": "tensorflow",
    ".onnx": "onnx",
    ".pt": "torch",
    ".pth": "torch",
    ".pt2": "torch",
    ".mar": "torchserve",
}

# exact file name -> runtime name, for formats that are a folder around a fixed file
FILE_NAMES: dict[str, str] = {
    "saved_model.pb": "tensorflow",  # TensorFlow SavedModel
    "saved_model.pbtxt": "tensorflow",
    "MLmodel": "mlflow",  # an MLflow model folder: the MLmodel file stands for the folder
    "graph.yaml": "graph",  # an inference graph (servekit.graphs)
    "graph.yml": "graph",
    "modules.json": "huggingface",  # a sentence-transformers model's folder (its list of modules)
}

# files that are never the model itself
IGNORED_FILES = {"model-settings.json", "settings.json", "requirements.txt"}


def register_runtime(name: str, target: str, *aliases: str, suffixes: tuple[str, ...] = ()) -> None:
    """Make a runtime known by ``name`` (and aliases), optionally by file suffix."""
    BUILTIN_RUNTIMES[name] = target
    for alias in aliases:
        ALIASES[alias] = name
    for suffix in suffixes:
        SUFFIX_RUNTIMES[suffix] = name


def model_files(folder: Path) -> list[Path]:
    """Files in ``folder`` that some runtime can serve (an MLflow model folder:
    its ``MLmodel`` file alone, whatever the flavour's files are)."""
    if (folder / "MLmodel").is_file():
        return [folder / "MLmodel"]
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.name not in IGNORED_FILES and runtime_for_file(p) is not None
    )


def runtime_for_file(path: Path) -> str | None:
    """The runtime for a model file, peeking inside where the suffix is ambiguous."""
    if path.name in FILE_NAMES:
        return FILE_NAMES[path.name]
    suffix = path.suffix
    if suffix in (".bst", ".json", ".txt"):
        try:
            with path.open("rb") as fh:
                head = fh.read(64)
        except OSError:
            return None
        if head.startswith(b"tree\n"):
            return "lightgbm"
        if suffix == ".bst":
            return "xgboost"
        if suffix == ".json":
            return "xgboost" if head.lstrip().startswith(b'{"learner"') else None
        return None
    return SUFFIX_RUNTIMES.get(suffix)


def infer_implementation(settings: ModelSettings) -> str:
    if settings.parameters.uri and settings.parameters.uri.startswith(("runs:/", "models:/")):
        return "mlflow"  # a model in an MLflow tracking server
    path = settings.resolved_uri()
    if path is not None and path.is_dir():
        files = model_files(path)
        path = files[0] if files else None
    name = runtime_for_file(path) if path is not None and path.exists() else None
    if name is None:
        raise ModelLoadError(
            f"model {settings.name!r}: cannot tell the runtime from "
            f"{settings.parameters.uri or settings.source_dir!r}; set 'implementation'"
        )
    return name


def runtime_class(settings: ModelSettings) -> type[Runtime]:
    if settings.parameters.environment not in (None, False, ""):
        # the model asks for its own environment: served from a process there (servekit.envs),
        # which calls this again without ``environment`` to pick the model's runtime
        from servekit.runtimes.isolated import IsolatedRuntime

        return IsolatedRuntime
    implementation = settings.implementation or infer_implementation(settings)
    implementation = ALIASES.get(implementation, implementation)
    target = BUILTIN_RUNTIMES.get(implementation)
    if target is not None:
        module_name, _, attr = target.partition(":")
    else:
        module_name, _, attr = implementation.rpartition(".")
        if not module_name:
            known = ", ".join(sorted(BUILTIN_RUNTIMES))
            raise ModelLoadError(
                f"unknown implementation {implementation!r}; use one of {known} "
                "or a dotted path to a class"
            )
    cls = _import(module_name, attr, settings.source_dir)
    if isinstance(cls, type) and issubclass(cls, Runtime):
        return cls
    from servekit.runtimes.adapters import adapt_user_class

    return adapt_user_class(cls, implementation)


def survives_fork(settings: ModelSettings) -> bool:
    """Whether a model loaded before the server forks its workers still works in
    them. Runtimes whose framework keeps thread pools (TensorFlow, onnxruntime)
    set ``fork_safe = False`` and are loaded in each worker instead."""
    try:
        cls = runtime_class(settings)
    except ServekitError:
        return True  # loading reports the problem
    decide = getattr(cls, "survives_fork", None)  # a runtime whose answer depends on the model
    if callable(decide):
        return bool(decide(settings))
    return cls.fork_safe


def create_runtime(settings: ModelSettings) -> Runtime:
    return runtime_class(settings)(settings)


def _import(module_name: str, attr: str, folder: str) -> Any:
    # the model's folder first, then the current folder (as ``python -m`` has it)
    for entry in (os.getcwd(), folder):
        if entry and entry not in sys.path:
            sys.path.insert(0, entry)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelLoadError(
            f"cannot import {module_name!r}: {exc} (is its framework extra installed?)"
        ) from exc
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ModelLoadError(f"module {module_name!r} has no {attr!r}") from None
