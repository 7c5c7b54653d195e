"""Turning user classes that are not servekit runtimes into runtimes.

Other modules (the typed model library, Seldon-style classes, TorchServe
handlers) register an adapter factory here; the first that accepts the class
wins.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from servekit.errors import ModelLoadError
from servekit.runtimes.base import Runtime

# each factory returns a Runtime subclass for the class, or None if it does not apply
ADAPTERS: list[Callable[[Any], type[Runtime] | None]] = []

# modules whose import registers an adapter; imported when a user class is first adapted
ADAPTER_MODULES: list[str] = [
    "servekit.runtimes.python_model",  # servekit.Model / AsyncModel
    "servekit.runtimes.seldon_class",  # predict(X, features_names)
]


def register_adapter(factory: Callable[[Any], type[Runtime] | None]) -> None:
    ADAPTERS.append(factory)


def adapt_user_class(cls: Any, implementation: str) -> type[Runtime]:
    for module in ADAPTER_MODULES:
        importlib.import_module(module)
    for factory in ADAPTERS:
        runtime = factory(cls)
        if runtime is not None:
            return runtime
    raise ModelLoadError(
        f"{implementation!r} is not a servekit Runtime and no adapter accepts it "
        "(subclass servekit.runtimes.base.Runtime, servekit.Model, or give a class "
        "with predict(X, features_names))"
    )
