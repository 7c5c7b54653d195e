"""Handlers written for TorchServe import ``ts.torch_handler…`` and ``ts.context``.
When TorchServe itself is not installed, those names are made to point at
servekit's modules, so archives made for TorchServe load unchanged."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

ALIASES = {
    "ts.torch_handler": "servekit.torch_handler",
    "ts.torch_handler.base_handler": "servekit.torch_handler.base_handler",
    "ts.torch_handler.vision_handler": "servekit.torch_handler.vision_handler",
    "ts.torch_handler.image_classifier": "servekit.torch_handler.image_classifier",
    "ts.torch_handler.object_detector": "servekit.torch_handler.object_detector",
    "ts.torch_handler.image_segmenter": "servekit.torch_handler.image_segmenter",
    "ts.torch_handler.text_classifier": "servekit.torch_handler.text_classifier",
    "ts.context": "servekit.torch_handler.context",
}


def alias_ts_package() -> None:
    if "ts" in sys.modules:
        return
    spec = importlib.util.find_spec("ts")
    if spec is not None and spec.origin is not None:  # TorchServe is installed (not a stray folder)
        return
    package = types.ModuleType("ts", "servekit's stand-in for TorchServe's ts package")
    package.__path__ = []
    sys.modules["ts"] = package
    for alias, target in ALIASES.items():
        module = importlib.import_module(target)
        sys.modules[alias] = module
        parent, _, child = alias.rpartition(".")
        if parent == "ts":  # `import ts.context` looks the child up as an attribute
            setattr(package, child, module)
