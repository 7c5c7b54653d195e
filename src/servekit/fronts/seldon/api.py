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
``/transform-input``, ``/transform-output``, ``/route`` (the child's index,
as ``[[i]]``), ``/aggregate`` (``{"seldonMessages": [msg, ...]}`` or a list of
messages) and ``/send-feedback`` (also ``/api/v1.0/feedback``, a ``{"request",
"response", "reward", "truth"}`` document; the routing is read from
``response.meta.routing``) call the class's methods of those names. As in
Seldon's wrapper every route exists whatever the service type; a class without
a transform (or a model that is no Seldon class) passes the message through,
feedback answers an empty message, and ``/route`` or ``/aggregate`` on a class
without the method answers 400. The answer's ``meta`` merges the request's
(``tags``, ``metrics``, ``requestPath``; every message's for ``aggregate``,
none for ``route``) with the class's, as Seldon's wrapper does; a ``*_raw``
method's answer is returned as it is. ``GET /health/status`` answers the
class's ``health_status()`` (``"healthy"`` without one) as ``strData``;
``GET /health/ping`` answers ``pong``. Errors use Seldon's ``{"status": {...}}``
document.
"""

from __future__ import annotations

import base64
import binascii
import os
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
# messages one /aggregate call may combine
MAX_MESSAGES = 1000
# Seldon's node name and image (its executor sets them): the answer's meta.requestPath,
# and the key of this node's choice in a feedback's response.meta.routing
UNIT_ID = os.environ.get("PREDICTIVE_UNIT_ID")
REQUEST_PATH = {UNIT_ID: os.environ.get("PREDICTIVE_UNIT_IMAGE", "NOT_IMPLEMENTED:NOT_IMPLEMENTED")} if UNIT_ID else {}


def error_response(exc: ServekitError) -> Response:
    reason = getattr(exc, "reason", None)
    if not isinstance(reason, str):
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


def _meta(answer: dict[str, Any], request_metas: list[Any], puid: str | None) -> dict[str, Any]:
    """The answer's ``meta`` as Seldon's wrapper builds it: the requests'
    tags, then the class's; the requests' metrics, then the class's; the
    request's ``puid``; this node's and the requests' ``requestPath``."""
    tags: dict[str, Any] = {}
    metrics: list[Any] = []
    path = dict(REQUEST_PATH)
    for meta in request_metas:
        if isinstance(meta, dict):
            if isinstance(meta.get("tags"), dict):
                tags.update(meta["tags"])
            if isinstance(meta.get("metrics"), list):
                metrics.extend(meta["metrics"])
            if isinstance(meta.get("requestPath"), dict):
                path.update(meta["requestPath"])
    tags.update(answer.get("tags") or {})
    metrics.extend(answer.get("metrics") or [])
    out: dict[str, Any] = {}
    if tags:
        out["tags"] = tags
    if metrics:
        out["metrics"] = metrics
    if puid:
        out["puid"] = puid
    if path:
        out["requestPath"] = path
    return out


def encode(
    response: InferenceResponse, form: str, puid: str | None, request_metas: list[Any] | None = None
) -> dict[str, Any]:
    if not response.outputs:
        raise ServekitError("the model returned nothing")
    output = response.outputs[0]
    meta = _meta(response.parameters.get("meta") or {}, request_metas or [], puid)
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
    # numbers answer in the request's form, and as a tensor to strData/jsonData/binData
    if form != "ndarray" and output.datatype not in ("BYTES", "BOOL"):
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


def _message_meta(document: Any) -> Any:
    return document.get("meta") if isinstance(document, dict) else None


def raw_answer(response: InferenceResponse, method: str) -> Response | None:
    """A ``*_raw`` method's message, as it is (for ``predict``, with the HTTP
    status its ``status.code`` names, as Seldon's wrapper does)."""
    if "seldon_message" not in response.parameters:
        return None
    message = response.parameters["seldon_message"]
    status = 200
    if method == "predict" and isinstance(message, dict) and isinstance(message.get("status"), dict):
        code = message["status"].get("code")
        if isinstance(code, int) and 100 <= code < 600:
            status = code
    return json_response(message, status)


def _messages(document: Any) -> list[Any]:
    """The messages of an ``/aggregate`` call: ``{"seldonMessages": [...]}`` or a list."""
    messages = document.get("seldonMessages") if isinstance(document, dict) else document
    if not isinstance(messages, list):
        raise InvalidInput('aggregate takes {"seldonMessages": [message, ...]} (or a list of messages)')
    if not messages:
        raise InvalidInput("seldonMessages is empty: aggregate needs at least one message")
    if len(messages) > MAX_MESSAGES:
        raise InvalidInput(f"{len(messages)} messages; aggregate takes at most {MAX_MESSAGES}")
    return messages


def aggregate_request(document: Any) -> tuple[InferenceRequest, str, list[Any]]:
    """One input per message; their names in ``names_list``."""
    messages = _messages(document)
    inputs, names_list, metas, form = [], [], [], ""
    for i, message in enumerate(messages):
        try:
            one, form_i = decode(message)
        except InvalidInput as exc:
            raise InvalidInput(f"seldonMessages[{i}]: {exc.message}") from None
        tensor = one.inputs[0]
        tensor.name = f"input_{i}"
        inputs.append(tensor)
        names_list.append(one.parameters.get("names") or [])
        metas.append(_message_meta(message))
        form = form or form_i
    parameters: dict[str, Any] = {"names_list": names_list}
    return InferenceRequest(inputs, parameters=parameters), form, metas


async def call(
    ctx: ServerContext, name: str, document: Any, timeout: float | None, method: str = "predict"
) -> Response:
    """``method`` (``predict``, ``transform_input``, ``transform_output``,
    ``route``, ``aggregate``) on one Seldon message (a list of them for ``aggregate``)."""
    if method == "aggregate":
        request, form, metas = aggregate_request(document)
        puid = _puid(_messages(document)[0])
    else:
        request, form = decode(document)
        meta = _message_meta(document)
        if isinstance(meta, dict):
            request.parameters["meta"] = meta
        metas, puid = ([] if method == "route" else [meta]), _puid(document)
    if _is_seldon_class(ctx, name):
        request.parameters["seldon_method"] = method
        request.parameters["seldon_message"] = document
    elif method in ("route", "aggregate"):
        raise InvalidInput(f"{method.capitalize()} not defined: model {name!r} is not a Seldon class with {method}()")
    elif method != "predict":
        # what Seldon's wrapper does for a class without the method: pass it through
        echo = InferenceResponse(model_name=name, outputs=list(request.inputs), parameters={})
        return json_response(encode(echo, form, puid, metas))
    # else any other model (a graph too) predicts on the message's data
    response = await ctx.dataplane.infer(Target(name), request, protocol=PROTOCOL, timeout=timeout)
    return raw_answer(response, method) or json_response(encode(response, form, puid, metas))


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
        return json_response(proto_form(encode(empty, form, None)))
    if document.get("truth") is not None:
        truth, _ = decode(document["truth"])
        request.inputs.append(truth.inputs[0])
    request.parameters.update(seldon_method="send_feedback", reward=reward)
    routing = _routing(document.get("response"))
    if routing is not None:
        request.parameters["routing"] = routing
    response = await ctx.dataplane.infer(Target(name), request, protocol=PROTOCOL, timeout=timeout)
    return json_response(proto_form(encode(response, form, None)))


def _floats(value: Any) -> Any:
    """JSON numbers as a protobuf Struct holds them (doubles)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, dict):
        return {k: _floats(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_floats(v) for v in value]
    if isinstance(value, np.ndarray):
        return _floats(value.tolist())
    return value


def proto_form(message: dict[str, Any]) -> dict[str, Any]:
    """A message as Seldon's wrapper answers feedback: through its
    SeldonMessage proto, so numbers are doubles and empty lists are left out."""
    out = dict(message)
    data = out.get("data")
    if isinstance(data, dict):
        data = dict(data)
        if not data.get("names"):
            data.pop("names", None)
        if "ndarray" in data:
            data["ndarray"] = _floats(data["ndarray"])
        if isinstance(data.get("tensor"), dict):
            tensor = {"shape": [int(d) for d in data["tensor"]["shape"]]}
            values = _floats(data["tensor"]["values"])
            if values:
                tensor["values"] = values
            data["tensor"] = tensor
        out["data"] = data
    if "jsonData" in out:
        out["jsonData"] = _floats(out["jsonData"])
    return out


def _routing(response: Any) -> int | None:
    """This node's choice in a feedback's ``response.meta.routing`` (key
    ``PREDICTIVE_UNIT_ID``, "0" without one, as in Seldon's wrapper)."""
    meta = response.get("meta") if isinstance(response, dict) else None
    routing = meta.get("routing") if isinstance(meta, dict) else None
    value = routing.get(UNIT_ID or "0") if isinstance(routing, dict) else None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


async def health_status(ctx: ServerContext, name: str) -> Response:
    """The class's ``health_status()`` as a message; ``"healthy"`` for a ready
    model without one."""
    if not _is_seldon_class(ctx, name):
        return json_response({"strData": "healthy", "meta": {}})
    request = InferenceRequest([], parameters={"seldon_method": "health_status"})
    response = await ctx.dataplane.infer(Target(name), request, protocol=PROTOCOL, timeout=None)
    return raw_answer(response, "health_status") or json_response(encode(response, "ndarray", None))


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
        ("/route", method_route("route")),
        ("/aggregate", method_route("aggregate")),
        ("/send-feedback", send_feedback),
    ):
        out += [route("POST", path, handler, e), route("GET", path, handler, e)]
    return out


SKIN = Skin(name="seldon", mounts=lambda ctx: [Mount(MAIN, routes(ctx), error_response)])
