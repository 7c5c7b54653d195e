"""Handlers written for TorchServe import ``ts.torch_handler…`` and ``ts.context``.
When TorchServe itself is not installed, those names are made to point at
servekit's modules, so archives made for TorchServe load unchanged."""

from __future__ import annotations

import importlib
import importlib.util
import sys

ALIASES = {
    "ts": "servekit.torch_handler",
    "ts.torch_handler": "servekit.torch_handler",
    "ts.torch_handler.base_handler": "servekit.torch_handler.base_handler",
    "ts.torch_handler.vision_handler": "servekit.torch_handler.vision_handler",
    "ts.torch_handler.image_classifier": "servekit.torch_handler.image_classifier",
    "ts.context": "servekit.torch_handler.context",
}


def alias_ts_package() -> None:
    if "ts" in sys.modules or importlib.util.find_spec("ts") is not None:
        return
    for alias, target in ALIASES.items():
        sys.modules.setdefault(alias, importlib.import_module(target))
