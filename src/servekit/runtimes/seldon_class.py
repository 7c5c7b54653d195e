"""Serving Seldon Core's Python wrapper classes: ``predict(X, features_names)``
with optional ``load``, ``tags``, ``metrics`` and ``class_names``, and
``transform_input``, ``transform_output``, ``send_feedback`` and
``health_status`` for Seldon's routes of those names (request parameter
``seldon_method``; a missing transform passes the data through).

The first input tensor becomes ``X``: a numpy array for numeric data (Seldon's
``ndarray``/``tensor``), ``str`` for content type ``str`` (``strData``), the
parsed document for ``json`` (``jsonData``) and ``bytes`` for ``base64``
(``binData``). Feature names travel in the request parameter ``names``.
The result goes back the same way; the response parameters carry ``names``
(from ``class_names``) and Seldon's ``meta`` (``tags``, ``metrics``).
``parameters.extra.init_parameters`` are passed to the constructor, as
Seldon's ``--parameters`` are.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import numpy as np
import orjson

from servekit.errors import InvalidInput, ModelLoadError
from servekit.runtimes.adapters import register_adapter
from servekit.runtimes.base import Runtime
from servekit.tensors import InferenceRequest, InferenceResponse, Tensor, as_bytes_array


def _one(data: np.ndarray) -> Any:
    flat = data.reshape(-1)
    if flat.size != 1:
        raise InvalidInput(f"expected one element, got {flat.size}")
    return flat[0]


def input_value(tensor: Tensor) -> Any:
    """``X`` as Seldon's wrapper hands it to ``predict``."""
    content_type = tensor.content_type
    if content_type in ("str", "json", "base64", "bytes"):
        raw = _one(tensor.data)
        raw = raw if isinstance(raw, bytes) else str(raw).encode()
        if content_type == "str":
            return raw.decode("utf-8", "replace")
        if content_type == "json":
            try:
                return orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise InvalidInput(f"jsonData is not valid JSON: {exc}") from None
        return raw
    if tensor.datatype == "BYTES":
        return np.vectorize(lambda b: b.decode("utf-8", "replace"), otypes=[object])(tensor.data)
    return tensor.data


def output_tensor(result: Any) -> Tensor:
    """The tensor for what ``predict`` returned."""
    if isinstance(result, str):
        return Tensor("output", np.array([result.encode()], dtype=object), "BYTES", {"content_type": "str"})
    if isinstance(result, (bytes, bytearray)):
        return Tensor("output", np.array([bytes(result)], dtype=object), "BYTES", {"content_type": "base64"})
    if isinstance(result, dict):
        raw = orjson.dumps(result, option=orjson.OPT_SERIALIZE_NUMPY)
        return Tensor("output", np.array([raw], dtype=object), "BYTES", {"content_type": "json"})
    if hasattr(result, "detach"):  # a torch tensor
        result = result.detach().cpu().numpy()
    try:
        array = np.asarray(result)
    except ValueError:
        array = np.empty(0, dtype=object)
    if array.dtype.kind in "biuf":
        return Tensor("output", array)
    if array.dtype.kind in "US" or (array.dtype == object and all(isinstance(v, (str, bytes)) for v in array.flat)):
        return Tensor("output", as_bytes_array(array), "BYTES")
    raw = orjson.dumps(result, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_PASSTHROUGH_SUBCLASS)
    return Tensor("output", np.array([raw], dtype=object), "BYTES", {"content_type": "json"})


# the class methods the Seldon API calls (request parameter ``seldon_method``)
METHODS = ("predict", "transform_input", "transform_output", "send_feedback", "health_status")


class SeldonClassRuntime(Runtime):
    """One instance of a Seldon-style user class; subclassed per class."""

    platform: ClassVar[str] = "seldon"
    user_class: ClassVar[Any] = None

    def load(self) -> None:
        init = self.settings.parameters.extra.get("init_parameters") or {}
        try:
            self.user: Any = self.user_class(**init)
            if callable(getattr(self.user, "load", None)):
                self.user.load()
        except Exception as exc:
            raise ModelLoadError(f"{self.user_class.__name__}: {type(exc).__name__}: {exc}") from exc
        self.ready = True

    def predict(self, request: InferenceRequest) -> InferenceResponse:
        method = request.parameters.get("seldon_method") or "predict"
        if method not in METHODS:
            raise InvalidInput(f"unknown Seldon method {method!r}; use one of {', '.join(METHODS)}")
        if method == "health_status":
            check = getattr(self.user, "health_status", None)
            return self._answer(request, check() if callable(check) else "healthy")
        if not request.inputs:
            raise InvalidInput("the request has no data")
        tensor = request.inputs[0]
        names = request.parameters.get("names") or []
        function = getattr(self.user, method, None)
        try:
            if method == "send_feedback":
                truth = input_value(request.inputs[1]) if len(request.inputs) > 1 else None
                reward = float(request.parameters.get("reward") or 0.0)
                result = (
                    function(input_value(tensor), names, reward, truth, routing=None)
                    if callable(function) else None
                )
                if result is None:  # Seldon answers an empty message
                    result = np.empty(0)
            elif callable(function):
                result = function(input_value(tensor), names)
            else:  # no transform_input/transform_output: the message passes through
                result = input_value(tensor)
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            raise InvalidInput(
                f"{self.user_class.__name__}.{method} rejected the input: {type(exc).__name__}: {exc}"
            ) from None
        return self._answer(request, result)

    def _answer(self, request: InferenceRequest, result: Any) -> InferenceResponse:
        output = output_tensor(result)
        parameters: dict[str, Any] = {}
        class_names = getattr(self.user, "class_names", None)
        if callable(class_names):
            class_names = class_names()
        if class_names:
            parameters["names"] = list(class_names)
        meta: dict[str, Any] = {}
        for field in ("tags", "metrics"):
            method = getattr(self.user, field, None)
            value = method() if callable(method) else None
            if value:
                meta[field] = value
        if meta:
            parameters["meta"] = meta
        return self.response(request, [output], **parameters)


def adapt_seldon_class(cls: Any) -> type[Runtime] | None:
    """A class with ``predict(X, features_names)`` (and not a servekit model)."""
    method = getattr(cls, "predict", None)
    if not isinstance(cls, type) or not callable(method):
        return None
    if any(k.__module__.startswith("servekit.") for k in cls.__mro__[1:]):
        return None
    try:
        parameters = list(inspect.signature(method).parameters)
    except (TypeError, ValueError):
        return None
    if len(parameters) < 2:  # self and X at least
        return None
    return type(f"{cls.__name__}SeldonRuntime", (SeldonClassRuntime,), {"user_class": cls})


register_adapter(adapt_seldon_class)
