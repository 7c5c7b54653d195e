"""What the JSON-bodied skins without tensors of their own (``/predict``,
Seldon) share: the model a call without a model name goes to, and a tensor
as nested lists of JSON values."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from servekit.errors import InvalidInput
from servekit.server.lifecycle import ServerContext
from servekit.tensors import Tensor


def default_model_name(ctx: ServerContext, instead: str = "call /predict/<name>") -> str:
    """The model a call without a model name goes to: ``default_model``, else
    the only one served; else InvalidInput naming (at most 20 of) the models
    and what to do ``instead``."""
    if ctx.settings.default_model:
        return ctx.settings.default_model
    names = ctx.registry.names()
    if len(names) == 1:
        return names[0]
    served = ", ".join(names[:20]) + (" …" if len(names) > 20 else "") or "none"
    raise InvalidInput(
        f"this server serves {len(names)} models ({served}); {instead} "
        "or set default_model (--default-model NAME, SERVEKIT_DEFAULT_MODEL)"
    )


def _element(value: Any, content_type: str | None) -> Any:
    if isinstance(value, bytes):
        if content_type == "json":
            return orjson.loads(value)
        return value.decode("utf-8", "replace")
    return value.item() if isinstance(value, np.generic) else value


def tensor_values(tensor: Tensor) -> list[Any]:
    """The tensor as nested lists of JSON values, one entry per row."""
    if tensor.datatype != "BYTES":
        values = tensor.data.tolist()
        return values if isinstance(values, list) else [values]
    content_type = tensor.content_type
    out = np.empty(tensor.data.shape, dtype=object)
    flat = out.reshape(-1)
    for i, value in enumerate(tensor.data.reshape(-1)):
        flat[i] = _element(value, content_type)
    values = out.tolist()
    return values if isinstance(values, list) else [values]
