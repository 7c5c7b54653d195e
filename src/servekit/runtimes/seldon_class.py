"""Serving Seldon Core's Python wrapper classes, of every service type: a
MODEL's ``predict(X, features_names)``, a ROUTER's ``route(features,
feature_names)`` (a child's index), a COMBINER's ``aggregate(features_list,
feature_names_list)``, a TRANSFORMER's ``transform_input`` and an
OUTPUT_TRANSFORMER's ``transform_output``, plus ``send_feedback``,
``health_status``, ``load``, ``tags``, ``metrics`` and ``class_names``, and the
low-level ``*_raw`` (and deprecated ``*_rest``) variants, which take and give
whole Seldon messages.

The method a call runs is the request parameter ``seldon_method`` (Seldon's
routes set it); a call that names none (V2, a graph node) runs the service
type's method (``parameters.extra.seldon_service_type``, MODEL by default).
Input tensors become ``X`` (one per message; ``aggregate`` gets them all): a
numpy array for numeric data (Seldon's ``ndarray``/``tensor``), ``str`` for
content type ``str`` (``strData``), the parsed document for ``json``
(``jsonData``) and ``bytes`` for ``base64`` (``binData``). Feature names travel
in the request parameter ``names`` (``names_list`` for ``aggregate``), the
message's ``meta`` in ``meta`` (passed as ``meta=`` to methods that take it,
as Seldon does), the whole message in ``seldon_message`` (for ``*_raw``).
The result goes back the same way; the response parameters carry ``names``
(from ``class_names``, for 2-D results), Seldon's ``meta`` (``tags``,
``metrics``, also from a returned ``SeldonResponse``), and a ``*_raw`` answer
as ``seldon_message``. As in Seldon's wrapper, a class without ``predict``
answers an empty message, one without a transform passes the data through,
and ``route``/``aggregate`` are required. ``parameters.extra.init_parameters``
are passed to the constructor, as Seldon's ``--parameters`` are.
"""

from __future__ import annotations

import base64
import inspect
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import orjson

from servekit.errors import InvalidInput, ModelLoadError, ServekitError
from servekit.runtimes.adapters import register_adapter
from servekit.runtimes.base import Runtime
from servekit.tensors import InferenceRequest, InferenceResponse, Tensor, as_bytes_array

# the method each service type runs when a call names none (Seldon's executor
# calls /route on a ROUTER, /aggregate on a COMBINER, ...)
SERVICE_TYPES = {
    "MODEL": "predict",
    "ROUTER": "route",
    "COMBINER": "aggregate",
    "TRANSFORMER": "transform_input",
    "OUTPUT_TRANSFORMER": "transform_output",
    "OUTLIER_DETECTOR": "predict",  # accepted by seldon-core-microservice; no method of its own
}
# what a class served as that type must have (one of)
REQUIRED = {
    "ROUTER": ("route",),
    "COMBINER": ("aggregate",),
    "TRANSFORMER": ("transform_input", "transform_output"),
    "OUTPUT_TRANSFORMER": ("transform_output",),
}
# the class methods the Seldon API calls (request parameter ``seldon_method``)
METHODS = ("predict", "route", "aggregate", "transform_input", "transform_output", "send_feedback", "health_status")
# methods with a low-level variant taking the whole message
RAW = ("predict", "route", "aggregate", "transform_input", "transform_output", "health_status")
METRIC_TYPES = ("COUNTER", "GAUGE", "TIMER")
# what _optional answers for a method the class does not have
_ABSENT = object()


class SeldonUserError(ServekitError):
    """An error with Seldon's status code and reason (``MICROSERVICE_BAD_DATA``
    …), as the wrapper answers it."""

    def __init__(self, message: str, status: int = 400, reason: str = "MICROSERVICE_BAD_DATA") -> None:
        super().__init__(message)
        self.status = status if 400 <= status < 600 else 500
        self.reason = reason


def _not_implemented(exc: BaseException) -> bool:
    """``seldon_core.user_model.SeldonNotImplementedError`` (raised by
    ``SeldonComponent``'s defaults), told by name: servekit does not need seldon-core."""
    return any(k.__name__ == "SeldonNotImplementedError" for k in type(exc).__mro__)


def _seldon_exception(exc: BaseException) -> SeldonUserError | None:
    """A ``SeldonMicroserviceException`` (or a user exception shaped like it)."""
    status, message = getattr(exc, "status_code", None), getattr(exc, "message", None)
    if not isinstance(status, int) or not callable(getattr(exc, "to_dict", None)):
        return None
    reason = getattr(exc, "reason", None)
    return SeldonUserError(str(message if message is not None else exc), status,
                           reason if isinstance(reason, str) else "MICROSERVICE_BAD_DATA")


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


def tensor_message(tensor: Tensor, names: list[str] | None = None) -> dict[str, Any]:
    """A Seldon message holding ``tensor`` (for a ``*_raw`` method called
    through another protocol or a graph)."""
    value = input_value(tensor)
    if isinstance(value, str):
        return {"strData": value}
    if isinstance(value, bytes):
        return {"binData": base64.b64encode(value).decode()}
    if isinstance(value, dict):
        return {"jsonData": value}
    return {"data": {"names": list(names or []), "ndarray": np.asarray(value).tolist()}}


def message_tensor(message: Any) -> Tensor:
    """The data of a Seldon message a ``*_raw`` method returned, as a tensor."""
    if hasattr(message, "DESCRIPTOR"):  # a SeldonMessage proto
        from google.protobuf.json_format import MessageToDict

        message = MessageToDict(message)
    if not isinstance(message, dict):
        return output_tensor(message)
    if "strData" in message:
        return output_tensor(str(message["strData"]))
    if "binData" in message:
        return output_tensor(base64.b64decode(message["binData"]))
    if "jsonData" in message:
        return output_tensor(message["jsonData"] if isinstance(message["jsonData"], dict) else {"jsonData": message["jsonData"]})
    data = message.get("data")
    if isinstance(data, dict) and "ndarray" in data:
        return output_tensor(data["ndarray"])
    if isinstance(data, dict) and isinstance(data.get("tensor"), dict):
        spec = data["tensor"]
        return output_tensor(np.asarray(spec.get("values", []), dtype=np.float64).reshape(spec.get("shape") or [-1]))
    return output_tensor(message)


def _takes_meta(function: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "meta" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def _metrics(value: Any, what: str) -> list[dict[str, Any]]:
    """Seldon's check of custom metrics: a list of {type, key, value}."""
    good = isinstance(value, list) and all(
        isinstance(m, dict) and {"key", "value", "type"} <= set(m) and m["type"] in METRIC_TYPES
        and isinstance(m["value"], (int, float)) and not isinstance(m["value"], bool)
        for m in value
    )
    if not good:
        shown = orjson.dumps(value, default=str).decode()[:200]
        raise SeldonUserError(f"Bad metric created during request ({what}): {shown}", 500, "MICROSERVICE_BAD_METRIC")
    return list(value)


class SeldonClassRuntime(Runtime):
    """One instance of a Seldon-style user class; subclassed per class."""

    platform: ClassVar[str] = "seldon"
    user_class: ClassVar[Any] = None

    def load(self) -> None:
        extra = self.settings.parameters.extra
        service_type = str(extra.get("seldon_service_type") or "MODEL").upper()
        if service_type not in SERVICE_TYPES:
            raise ModelLoadError(
                f"unknown Seldon service type {service_type!r}; use one of {', '.join(SERVICE_TYPES)}"
            )
        init = extra.get("init_parameters") or {}
        try:
            self.user: Any = self.user_class(**init)
            if callable(getattr(self.user, "load", None)):
                self.user.load()
        except Exception as exc:
            raise ModelLoadError(f"{self.user_class.__name__}: {type(exc).__name__}: {exc}") from exc
        has = {m for m in METHODS if callable(getattr(self.user, m, None))}
        has |= {m for m in RAW if self._raw(m) is not None}
        wanted = REQUIRED.get(service_type, ())
        if wanted and not has & set(wanted):
            raise ModelLoadError(
                f"{self.user_class.__name__} is served as a {service_type} but has no "
                f"{' or '.join(f'{m}()' for m in wanted)} (nor {wanted[0]}_raw)"
            )
        self.service_type = service_type
        self.default_method = SERVICE_TYPES[service_type]
        if service_type == "TRANSFORMER" and "transform_input" not in has:
            self.default_method = "transform_output"
        self.takes_meta = {m: _takes_meta(getattr(self.user, m)) for m in METHODS if m in has and hasattr(self.user, m)}
        # looked up once: each call only reads these
        self.raw_methods = {m: self._raw(m) for m in RAW}
        self.methods = {m: getattr(self.user, m, None) for m in METHODS}
        self.extras = {n: getattr(self.user, n, None) for n in ("class_names", "tags", "metrics")}
        self.ready = True

    def _raw(self, method: str) -> Callable[..., Any] | None:
        """The low-level variant Seldon's wrapper prefers: ``*_rest`` (deprecated), else ``*_raw``."""
        for suffix in ("_rest", "_raw"):
            function = getattr(self.user, method + suffix, None)
            if callable(function):
                return function  # type: ignore[no-any-return]
        return None

    def predict(self, request: InferenceRequest) -> InferenceResponse:
        method = request.parameters.get("seldon_method") or self.default_method
        if method not in METHODS:
            raise InvalidInput(f"unknown Seldon method {method!r}; use one of {', '.join(METHODS)}")
        try:
            return self._call(method, request)
        except ServekitError:
            raise
        except Exception as exc:
            seldon = _seldon_exception(exc)
            if seldon is not None:
                raise seldon from None
            if isinstance(exc, (ValueError, TypeError, KeyError, IndexError)):
                raise InvalidInput(
                    f"{self.user_class.__name__}.{method} rejected the input: {type(exc).__name__}: {exc}"
                ) from None
            raise

    def _call(self, method: str, request: InferenceRequest) -> InferenceResponse:
        raw = self.raw_methods.get(method)
        if raw is not None:
            message = request.parameters.get("seldon_message")
            if message is None and method != "health_status":
                message = self._message(method, request)
            try:
                answer = raw() if method == "health_status" else raw(message)
            except Exception as exc:
                if not (_not_implemented(exc) and raw.__name__.endswith("_raw")):
                    raise
            else:
                return self.response(request, [message_tensor(answer)], seldon_message=answer)
        if method == "health_status":
            check = self.methods["health_status"]
            try:
                status = check() if callable(check) else "healthy"
            except Exception as exc:
                if not _not_implemented(exc):
                    raise
                status = "not implemented - assuming healthy"
            return self._answer(request, status)
        if not request.inputs:
            raise InvalidInput("the request has no data")
        function = self.methods[method]
        names = request.parameters.get("names") or []
        meta = request.parameters.get("meta")
        kwargs = {"meta": meta if isinstance(meta, dict) else None} if self.takes_meta.get(method) else {}
        X = input_value(request.inputs[0])
        if method == "aggregate":
            if not callable(function):
                raise SeldonUserError("Aggregate not defined (the class has no aggregate(features_list, feature_names_list))")
            names_list = request.parameters.get("names_list") or [[] for _ in request.inputs]
            result = function([input_value(t) for t in request.inputs], names_list)
        elif method == "route":
            if not callable(function):
                raise SeldonUserError("Route not defined (the class has no route(features, feature_names))")
            result = function(X, names, **kwargs)
        elif method == "send_feedback":
            truth = input_value(request.inputs[1]) if len(request.inputs) > 1 else None
            reward = float(request.parameters.get("reward") or 0.0)
            routing = request.parameters.get("routing")
            routing = routing if isinstance(routing, int) and not isinstance(routing, bool) else None
            result = self._optional(function, X, names, reward, truth, routing=routing)
            if result is None or result is _ABSENT:  # Seldon answers an empty message
                result = np.empty(0)
        elif method == "predict":
            result = self._optional(function, X, names, **kwargs)
            if result is _ABSENT:  # no predict: Seldon answers an empty message
                result = []
        else:  # a transform; without one the message passes through
            result = self._optional(function, X, names, **kwargs)
            if result is _ABSENT:
                result = X
        if result is None and method != "route":
            raise SeldonUserError(f"{self.user_class.__name__}.{method} returned None; return an array, a list, "
                                  "a str, bytes or a dict")
        return self._answer(request, result, method)

    @staticmethod
    def _optional(function: Any, *args: Any, **kwargs: Any) -> Any:
        """``function(...)``, or ``_ABSENT`` when the class lacks it (or it is
        ``SeldonComponent``'s default, which raises SeldonNotImplementedError)."""
        if not callable(function):
            return _ABSENT
        try:
            return function(*args, **kwargs)
        except Exception as exc:
            if _not_implemented(exc):
                return _ABSENT
            raise

    def _message(self, method: str, request: InferenceRequest) -> Any:
        if method == "aggregate":
            names_list = request.parameters.get("names_list") or [[] for _ in request.inputs]
            return {"seldonMessages": [tensor_message(t, n) for t, n in zip(request.inputs, names_list, strict=False)]}
        if not request.inputs:
            raise InvalidInput("the request has no data")
        return tensor_message(request.inputs[0], request.parameters.get("names"))

    def _answer(self, request: InferenceRequest, result: Any, method: str = "") -> InferenceResponse:
        tags: dict[str, Any] = {}
        runtime_metrics: list[dict[str, Any]] = []
        if type(result).__name__ == "SeldonResponse" and hasattr(result, "data"):
            tags = dict(getattr(result, "tags", None) or {})
            runtime_metrics = _metrics(getattr(result, "metrics", None) or [], "SeldonResponse.metrics")
            result = result.data
        if method == "route":
            if not isinstance(result, int):
                raise SeldonUserError(f"Routing response must be int but got {result} "
                                      f"({type(result).__name__}): return the child's index as a Python int")
            output = Tensor("output", np.array([[int(result)]], dtype=np.int64))
        else:
            output = output_tensor(result)
        parameters: dict[str, Any] = {}
        if output.data.ndim > 1:  # as Seldon: class names for 2-D answers only
            class_names = self._user_value("class_names")
            if class_names:
                parameters["names"] = [str(n) for n in class_names]
        class_tags = self._user_value("tags")
        meta: dict[str, Any] = {}
        if class_tags or tags:
            meta["tags"] = {**(class_tags if isinstance(class_tags, dict) else {}), **tags}
        metrics = self._user_value("metrics")
        metrics = _metrics(metrics, "metrics()") if metrics is not None else []
        if metrics or runtime_metrics:
            meta["metrics"] = metrics + runtime_metrics
        if meta:
            parameters["meta"] = meta
        return self.response(request, [output], **parameters)

    def _user_value(self, name: str) -> Any:
        """``tags()``, ``metrics()``, ``class_names()`` (or a plain attribute),
        None when missing or not implemented."""
        value = self.extras[name]
        if value is None:
            return None
        if not callable(value):
            return getattr(self.user, name, None)  # a plain attribute: read now
        try:
            return value()
        except Exception as exc:
            if _not_implemented(exc):
                return None
            raise


def adapt_seldon_class(cls: Any) -> type[Runtime] | None:
    """A class with any of Seldon's methods (``predict(X, features_names)``,
    ``route``, ``aggregate``, ``transform_input``/``transform_output``, or
    their ``*_raw`` forms), and not a servekit model."""
    if not isinstance(cls, type):
        return None
    if any(k.__module__.startswith("servekit.") for k in cls.__mro__[1:]):
        return None
    found = False
    for method in ("predict", "route", "aggregate", "transform_input", "transform_output"):
        function = getattr(cls, method, None)
        if callable(function):
            try:
                parameters = list(inspect.signature(function).parameters)
            except (TypeError, ValueError):
                continue
            found = found or len(parameters) >= 2  # self and X at least
    found = found or any(callable(getattr(cls, m + s, None)) for m in RAW for s in ("_raw", "_rest"))
    if not found:
        return None
    return type(f"{cls.__name__}SeldonRuntime", (SeldonClassRuntime,), {"user_class": cls})


register_adapter(adapt_seldon_class)
