"""Seldon Core's microservice REST API (the Python wrapper's), for any served model.

``POST /api/v1.0/predictions`` (and ``/api/v0.1/predictions``, and ``/predict``
when the body is in Seldon's form; any other ``/predict`` body goes on to the
plain ``/predict`` API) with one of::

    {"data": {"names": [...], "ndarray": [[...]]}}
    {"data": {"names": [...], "tensor": {"shape": [...], "values": [...]}}}
    {"strData": "..."}   {"jsonData": {...}}   {"binData": "<base64>"}

answered in the same form plus ``meta`` (``tags``/``metrics`` of the model,
``puid`` echoed). Errors use Seldon's ``{"status": {...}}`` document.
``GET /health/ping`` answers ``pong``.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

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


async def predict(ctx: ServerContext, name: str, document: Any, timeout: float | None) -> Response:
    request, form = decode(document)
    response = await ctx.dataplane.infer(Target(name), request, protocol=PROTOCOL, timeout=timeout)
    meta = document.get("meta") if isinstance(document, dict) else None
    puid = meta.get("puid") if isinstance(meta, dict) else None
    return json_response(encode(response, form, puid if isinstance(puid, str) else None))


def routes(ctx: ServerContext) -> list[Route]:
    async def predictions(request: Request) -> Response:
        document = loads(await request.body())
        return await predict(ctx, default_model_name(ctx), document, header_timeout(request.headers))

    async def nameless(request: Request) -> Response:
        """``POST /predict``: Seldon's form here, anything else to the plain API."""
        body = await request.body()
        timeout = header_timeout(request.headers)
        document = loads(body)
        if isinstance(document, dict) and SELDON_KEYS & set(document):
            try:
                return await predict(ctx, default_model_name(ctx), document, timeout)
            except ServekitError as exc:
                return error_response(exc)
        return await plain.predict_named(ctx, default_model_name(ctx), body, timeout)

    async def ping(request: Request) -> Response:
        return Response(b"pong", content_type=b"text/plain; charset=utf-8")

    e = error_response
    return [
        route("POST", "/api/v1.0/predictions", predictions, e),
        route("POST", "/api/v0.1/predictions", predictions, e),
        route("GET", "/health/ping", ping, e),
        route("POST", "/predict", nameless, plain.error_response),
    ]


SKIN = Skin(name="seldon", mounts=lambda ctx: [Mount(MAIN, routes(ctx), error_response)])
