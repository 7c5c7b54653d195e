"""Seldon Core's microservice REST API (the Python wrapper's), for any served model.

``POST /api/v1.0/predictions`` (and ``/api/v0.1/predictions``, and ``/predict``
when the body is in Seldon's form or the model is a Seldon class; any other
``/predict`` body goes on to the plain ``/predict`` API) with one of::

    {"data": {"names": [...], "ndarray": [[...]]}}
    {"data": {"names": [...], "tensor": {"shape": [...], "values": [...]}}}
    {"strData": "..."}   {"jsonData": {...}}   {"binData": "<base64>"}

answered in the same form plus ``meta`` (``tags``/``metrics`` of the model,
``puid`` echoed). The message is the JSON body, or the form field (or query
argument) ``json=<message>``, which is how ``SeldonClient`` sends it.
``/transform-input``, ``/transform-output`` and ``/send-feedback`` (also
``/api/v1.0/feedback``, a ``{"request", "response", "reward", "truth"}``
document) call the class's methods of those names; a class without them (or a
model that is no Seldon class) passes the message through, or answers an empty
one for feedback, as Seldon's wrapper does. ``GET /health/status`` answers the
class's ``health_status()`` (``"healthy"`` without one) as ``strData``;
``GET /health/ping`` answers ``pong``. Errors use Seldon's ``{"status": {...}}``
document.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any
from urllib.parse import parse_qsl

import numpy as np
import orjson

from servekit.dataplane import Target, header_timeout
from servekit.errors import InvalidInput, ServekitError
from servekit.protocols import predict as plain
from servekit.protocols.json_values import default_model_name, tensor_values
from servekit.protocols.v2_codec import loads
from servekit.server.http import Request, Response, Route, json_response, route
from servekit.server.lifecycle import MAIN, Mount, ServerContext, Skin
from servekit.tensors import MAX_DIMS, InferenceRequest, InferenceResponse, Tensor, nesting_depth

PROTOCOL = "seldon"
# the top-level keys of a Seldon message
SELDON_KEYS = frozenset({"data", "strData", "jsonData", "binData"})
# the platform of Seldon user classes (runtimes/seldon_class.py)
SELDON_PLATFORM = "seldon"
FORM = "application/x-www-form-urlencoded"
# form fields read from one body: SeldonClient sends one (json=…)
MAX_FORM_FIELDS = 100


def error_response(exc: ServekitError) -> Response:
    reason = "MICROSERVICE_BAD_DATA" if exc.status < 500 else "MICROSERVICE_INTERNAL_ERROR"
    body = {"status": {"code": -1, "info": exc.message, "reason": reason, "status": 1}}
    return json_response(body, exc.status)


def _one(value: bytes, content_type: str) -> Tensor:
    data = np.empty(1, dtype=object)
    data[0] = value
    return Tensor("input", data, "BYTES", {"content_type": content_type})


def _json(value: Any, what: str) -> Tensor:
    """``value`` handed to the model as it is, as one JSON document."""
    try:
        payload = orjson.dumps(value)
    except orjson.JSONEncodeError as exc:  # nested deeper than orjson writes
        raise InvalidInput(f"{what} cannot be passed to the model as JSON: {exc}") from None
    return _one(payload, "json")


def _array(values: Any, what: str) -> Tensor:
    try:
        array = np.asarray(values)
    except ValueError:  # ragged rows: hand the list over as it is
        nesting_depth(values, f"data.{what}")
        return _json(values, f"data.{what}")
    if array.ndim > MAX_DIMS:
        nesting_depth(values, f"data.{what}")  # raises: deeper than a tensor can be
    if array.dtype.kind in "biuf":
        return Tensor("input", array)
    if array.dtype.kind == "U":
        return Tensor("input", np.vectorize(str.encode, otypes=[object])(array), "BYTES")
    if array.dtype.kind == "O":
        nesting_depth(values, f"data.{what}")
        return _json(values, f"data.{what}")
    raise InvalidInput(f"data.{what} must be a (nested) list of numbers or strings")


def _tensor(spec: Any) -> Tensor:
    """``data.tensor``: flat ``values`` and the ``shape`` they fill."""
    if not isinstance(spec, dict) or not isinstance(spec.get("values"), list):
        raise InvalidInput('data.tensor needs {"shape": [...], "values": [...]}')
    try:
        values = np.asarray(spec["values"], dtype=np.float64)
    except (ValueError, TypeError):
        raise InvalidInput("data.tensor.values must be a flat list of numbers") from None
    shape = spec.get("shape") or [values.size]
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= -1 for d in shape
    ):
        raise InvalidInput("data.tensor.shape must be a list of integers (-1 for one free dimension)")
    if len(shape) > MAX_DIMS:
        raise InvalidInput(
            f"data.tensor.shape has {len(shape)} dimensions; a tensor has at most {MAX_DIMS}"
        )
    try:
        return Tensor("input", values.reshape(shape))
    except (ValueError, TypeError, OverflowError):
        raise InvalidInput(f"data.tensor: {values.size} values do not fit shape {shape}") from None


def read_message(request: Request, body: bytes) -> Any:
    """The Seldon message of a call: the form field ``json`` of a form-encoded
    body (``SeldonClient`` posts ``json=<message>``), else the query argument
    ``json``, else the body as JSON (whatever its content type says)."""
    content_type = request.headers.get("content-type", "").lower()
    if content_type.startswith("multipart/"):
        raise InvalidInput(
            "multipart bodies are not read here; send the message as JSON, or form-encoded as json=<message>"
        )
    if FORM in content_type and body and not body.lstrip().startswith((b"{", b"[")):
        try:
            fields = parse_qsl(body.decode("latin-1"), keep_blank_values=True,
                               max_num_fields=MAX_FORM_FIELDS, errors="strict")
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"the form-encoded body cannot be read ({exc}); send json=<message>") from None
        for key, value in fields:
            if key == "json":
                return loads(value.encode())
        if "json" not in request.query:
            names = ", ".join(sorted({key for key, _ in fields})) or "none"
            raise InvalidInput(f"the form-encoded body has no field 'json' (fields: {names}); send json=<message>")
    if "json" in request.query:
        return loads(request.query["json"].encode())
    return loads(body)


def decode(document: Any) -> tuple[InferenceRequest, str]:
    """The request and the form (``ndarray``, ``tensor``, ``strData`` …) it came in."""
    if not isinstance(document, dict):
        raise InvalidInput("a Seldon message must be a JSON object")
    parameters: dict[str, Any] = {}
    if "strData" in document:
        if not isinstance(document["strData"], str):
            raise InvalidInput("strData must be a string")
        return InferenceRequest([_one(document["strData"].encode(), "str")]), "strData"
    if "jsonData" in document:
        return InferenceRequest([_json(document["jsonData"], "jsonData")]), "jsonData"
    if "binData" in document:
        try:
            raw = base64.b64decode(document["binData"], validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise InvalidInput("binData must be base64-encoded bytes") from None
        return InferenceRequest([_one(raw, "base64")]), "binData"
    data = document.get("data")
    if not isinstance(data, dict):
        raise InvalidInput("send data.ndarray, data.tensor, strData, jsonData or binData")
    names = data.get("names")
    if isinstance(names, list) and names:
        if not all(isinstance(n, (str, int, float)) for n in names):
            raise InvalidInput("data.names must be a list of strings (the feature names)")
        parameters["names"] = [str(n) for n in names]
    if "ndarray" in data:
        tensor, form = _array(data["ndarray"], "ndarray"), "ndarray"
    elif "tensor" in data:
        tensor, form = _tensor(data["tensor"]), "tensor"
    else:
        raise InvalidInput("data needs 'ndarray' or 'tensor'")
    return InferenceRequest([tensor], parameters=parameters), form


def encode(response: InferenceResponse, form: str, puid: str | None) -> dict[str, Any]:
    if not response.outputs:
        raise ServekitError("the model returned nothing")
    output = response.outputs[0]
    meta: dict[str, Any] = dict(response.parameters.get("meta") or {})
    if puid:
        meta["puid"] = puid
    content_type = output.content_type
    if content_type in ("str", "json", "base64"):
        raw = output.data.reshape(-1)[0]
        raw = raw if isinstance(raw, bytes) else str(raw).encode()
        if content_type == "str":
            return {"strData": raw.decode("utf-8", "replace"), "meta": meta}
        if content_type == "json":
            return {"jsonData": orjson.loads(raw), "meta": meta}
        return {"binData": base64.b64encode(raw).decode(), "meta": meta}
    names = response.parameters.get("names")
    if not names:
        shape = output.data.shape
        names = [f"t:{i}" for i in range(shape[1])] if len(shape) > 1 else []
    if form == "tensor" and output.datatype != "BYTES":
        body = {"shape": list(output.data.shape), "values": output.data.reshape(-1)}
        return {"data": {"names": names, "tensor": body}, "meta": meta}
    return {"data": {"names": names, "ndarray": tensor_values(output)}, "meta": meta}


def _puid(document: Any) -> str | None:
    meta = document.get("meta") if isinstance(document, dict) else None
    puid = meta.get("puid") if isinstance(meta, dict) else None
    return puid if isinstance(puid, str) else None


def _is_seldon_class(ctx: ServerContext, name: str) -> bool:
    """Whether the version a call without a version reaches is a Seldon user class."""
    return ctx.registry.resolve(name).metadata().platform == SELDON_PLATFORM


def _default_is_seldon_class(ctx: ServerContext) -> bool:
    try:
        return _is_seldon_class(ctx, default_model_name(ctx))
    except ServekitError:
        return False


async def call(
    ctx: ServerContext, name: str, document: Any, timeout: float | None, method: str = "predict"
) -> Response:
    """``method`` (``predict``, ``transform_input``, ``transform_output``) on
    one Seldon message."""
    request, form = decode(document)
    if method != "predict" and not _is_seldon_class(ctx, name):
        # what Seldon's wrapper does for a class without the method: pass it through
        echo = InferenceResponse(model_name=name, outputs=list(request.inputs), parameters={})
        return json_response(encode(echo, form, _puid(document)))
    request.parameters["seldon_method"] = method
    response = await ctx.dataplane.infer(Target(name), request, protocol=PROTOCOL, timeout=timeout)
    return json_response(encode(response, form, _puid(document)))


async def predict(ctx: ServerContext, name: str, document: Any, timeout: float | None) -> Response:
    return await call(ctx, name, document, timeout)


def _reward(value: Any) -> float:
    if value is None:
        return 0.0
    if isinstance(value, bool):
        raise InvalidInput("feedback reward must be a number")
    try:
        reward = float(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"feedback reward must be a number, got {value!r}") from None
    if reward != reward or reward in (float("inf"), float("-inf")):
        raise InvalidInput("feedback reward must be a finite number")
    return reward


async def feedback(ctx: ServerContext, name: str, document: Any, timeout: float | None) -> Response:
    """``{"request": msg, "response": msg, "reward": r, "truth": msg}`` to the
    class's ``send_feedback(X, names, reward, truth)``."""
    if not isinstance(document, dict):
        raise InvalidInput('feedback must be a JSON object: {"request": …, "response": …, "reward": …, "truth": …}')
    reward = _reward(document.get("reward"))
    if document.get("request") is not None:
        request, form = decode(document["request"])
    else:
        request, form = InferenceRequest([Tensor("input", np.empty(0))]), "tensor"
    if not _is_seldon_class(ctx, name):
        empty = InferenceResponse(model_name=name, outputs=[Tensor("output", np.empty(0))], parameters={})
        return json_response(encode(empty, "ndarray", None))
    if document.get("truth") is not None:
        truth, _ = decode(document["truth"])
        request.inputs.append(truth.inputs[0])
    request.parameters.update(seldon_method="send_feedback", reward=reward)
    response = await ctx.dataplane.infer(Target(name), request, protocol=PROTOCOL, timeout=timeout)
    return json_response(encode(response, "ndarray" if form == "tensor" else form, None))


async def health_status(ctx: ServerContext, name: str) -> Response:
    """The class's ``health_status()`` as a message; ``"healthy"`` for a ready
    model without one."""
    if not _is_seldon_class(ctx, name):
        return json_response({"strData": "healthy", "meta": {}})
    request = InferenceRequest([], parameters={"seldon_method": "health_status"})
    response = await ctx.dataplane.infer(Target(name), request, protocol=PROTOCOL, timeout=None)
    return json_response(encode(response, "ndarray", None))


def routes(ctx: ServerContext) -> list[Route]:
    async def message(request: Request) -> Any:
        return read_message(request, await request.body())

    def method_route(method: str) -> Any:
        async def handler(request: Request) -> Response:
            document = await message(request)
            return await call(ctx, default_model_name(ctx), document, header_timeout(request.headers), method)

        return handler

    async def send_feedback(request: Request) -> Response:
        document = await message(request)
        return await feedback(ctx, default_model_name(ctx), document, header_timeout(request.headers))

    async def nameless(request: Request) -> Response:
        """``/predict``: Seldon's API for a message in Seldon's form (JSON or
        ``json=``) or a Seldon class; anything else to the plain API."""
        body = await request.body()
        timeout = header_timeout(request.headers)
        content_type = request.headers.get("content-type", "").lower()
        seldon = FORM in content_type or "json" in request.query or request.method == "GET"
        if not seldon:
            try:
                document = loads(body)
            except InvalidInput:
                document = None
            seldon = isinstance(document, dict) and bool(SELDON_KEYS & set(document))
        if seldon or _default_is_seldon_class(ctx):
            try:
                return await call(ctx, default_model_name(ctx), read_message(request, body), timeout)
            except ServekitError as exc:
                return error_response(exc)
        return await plain.predict_named(ctx, default_model_name(ctx), body, timeout)

    async def status(request: Request) -> Response:
        return await health_status(ctx, default_model_name(ctx))

    async def ping(request: Request) -> Response:
        return Response(b"pong", content_type=b"text/plain; charset=utf-8")

    e = error_response
    predictions = method_route("predict")
    out = [
        route("POST", "/api/v1.0/predictions", predictions, e),
        route("POST", "/api/v0.1/predictions", predictions, e),
        route("POST", "/api/v1.0/feedback", send_feedback, e),
        route("POST", "/api/v0.1/feedback", send_feedback, e),
        route("GET", "/health/ping", ping, e),
        route("GET", "/health/status", status, e),
        route("GET", "/api/v1.0/health/status", status, e),
        route("POST", "/predict", nameless, plain.error_response),
        route("GET", "/predict", nameless, e),
    ]
    for path, handler in (
        ("/transform-input", method_route("transform_input")),
        ("/transform-output", method_route("transform_output")),
        ("/send-feedback", send_feedback),
    ):
        out += [route("POST", path, handler, e), route("GET", path, handler, e)]
    return out


SKIN = Skin(name="seldon", mounts=lambda ctx: [Mount(MAIN, routes(ctx), error_response)])
