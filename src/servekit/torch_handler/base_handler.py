"""``BaseHandler``: TorchServe's handler lifecycle (``initialize``,
``preprocess``, ``inference``, ``postprocess``, ``handle``) on servekit.

Migrating a TorchServe handler is one change of import:
``from ts.torch_handler.base_handler import BaseHandler`` becomes
``from servekit.torch_handler.base_handler import BaseHandler``.

torch is imported only when a method needs it, so handlers that override
``initialize`` and ``inference`` can serve models of any framework.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from servekit.errors import InvalidInput, ModelLoadError
from servekit.torch_handler.spec import file_inside

log = logging.getLogger("servekit.torch_handler")

LABELS_FILE = "index_to_name.json"


class BaseHandler:
    """Loads the archive's model and runs preprocess → inference → postprocess."""

    def __init__(self) -> None:
        self.model: Any = None
        self.mapping: dict[str, Any] | None = None
        self.device: Any = None
        self.map_location = "cpu"
        self.initialized = False
        self.context: Any = None
        self.manifest: dict[str, Any] | None = None
        self.model_pt_path: str | None = None
        self.model_yaml_config: dict[str, Any] = {}
        self.explain = False
        self.target = 0

    # -- lifecycle ------------------------------------------------------------
    def initialize(self, context: Any) -> None:
        """Load the serialized file (weights + model file, TorchScript or .pt2)
        from ``context.system_properties["model_dir"]`` and the labels."""
        import torch

        self.context = context
        properties = context.system_properties
        model_dir = str(properties.get("model_dir"))
        self.device = torch.device("cpu")
        self.manifest = context.manifest
        self.model_yaml_config = getattr(context, "model_yaml_config", {}) or {}
        model_info = (self.manifest or {}).get("model", {})
        serialized = model_info.get("serializedFile")
        if not serialized:
            raise ModelLoadError("the manifest names no serializedFile for BaseHandler to load")
        self.model_pt_path = str(file_inside(model_dir, serialized, "serializedFile"))
        model_file = model_info.get("modelFile")
        if model_file:
            file_inside(model_dir, model_file, "modelFile")
            self.model = self._load_pickled_model(model_dir, model_file, self.model_pt_path)
        else:
            self.model = self._load_torchscript_model(self.model_pt_path)
        if not self.model_pt_path.endswith(".pt2"):  # exported programs refuse eval()
            self.model.eval()
        self.mapping = load_label_mapping(Path(model_dir) / LABELS_FILE)
        self.initialized = True

    def _load_pickled_model(self, model_dir: str, model_file: str, model_pt_path: str) -> Any:
        """Eager mode: the one nn.Module class of ``model_file`` filled with the
        weights (a state dict or a checkpoint dict with ``model_state_dict``)."""
        from servekit.runtimes.torch import load_module

        return load_module(
            Path(model_pt_path),
            {"init_kwargs": self.model_yaml_config.get("model_init_kwargs") or {}},
            model_file=file_inside(model_dir, model_file, "modelFile"),
        )

    def _load_torchscript_model(self, model_pt_path: str) -> Any:
        from servekit.runtimes.torch import load_module

        return load_module(Path(model_pt_path))

    def preprocess(self, data: list[dict[str, Any]]) -> Any:
        """One sample per request: JSON (or a list) of numbers, stacked into a batch."""
        import torch

        samples = [np.asarray(_numbers(row), dtype=np.float32) for row in data]
        shapes = {s.shape for s in samples}
        if len(shapes) != 1:
            raise InvalidInput(f"requests in one batch have different shapes: {sorted(shapes)}")
        return torch.as_tensor(np.stack(samples), device=self.device)

    def inference(self, data: Any, *args: Any, **kwargs: Any) -> Any:
        import torch

        with torch.inference_mode():
            return self.model(data.to(self.device), *args, **kwargs)

    def postprocess(self, data: Any) -> list[Any]:
        result: list[Any] = data.tolist()
        return result

    def handle(self, data: list[dict[str, Any]], context: Any) -> list[Any]:
        """What the server calls: one result per request in ``data``."""
        self.context = context
        started = time.perf_counter()
        output = self.postprocess(self.inference(self.preprocess(data)))
        metrics = getattr(context, "metrics", None)
        if metrics is not None:
            metrics.add_time("HandlerTime", round((time.perf_counter() - started) * 1000, 2), None, "ms")
        return output


def load_label_mapping(path: Path) -> dict[str, Any] | None:
    """``index_to_name.json``: ``{"0": "cat"}`` or ``{"0": ["n021", "cat"]}``."""
    if not path.is_file():
        return None
    try:
        mapping = json.loads(path.read_text())
    except ValueError as exc:
        raise ModelLoadError(f"{path.name} is not valid JSON: {exc}") from None
    if not isinstance(mapping, dict):
        raise ModelLoadError(f"{path.name} must map class indexes to names")
    return {str(k): v for k, v in mapping.items()}


def label_of(mapping: dict[str, Any] | None, index: int) -> str:
    if mapping is None:
        return str(index)
    value = mapping.get(str(index), str(index))
    if isinstance(value, list):
        return str(value[-1])
    return str(value)


def _numbers(row: Any) -> Any:
    value = row
    if isinstance(row, dict):
        value = row.get("data")
        if value is None:
            value = row.get("body")
        if value is None and row:
            value = next(iter(row.values()))
    if isinstance(value, bytes | bytearray | str):
        try:
            value = json.loads(value)
        except ValueError:
            raise InvalidInput(
                "this handler takes a JSON list of numbers per request "
                "(e.g. [0.1, 0.2]); the body is not JSON"
            ) from None
    if isinstance(value, dict):
        for key in ("data", "instances", "inputs"):
            if key in value:
                value = value[key]
                break
    try:
        np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        raise InvalidInput("this handler takes a JSON list of numbers per request") from None
    return value
