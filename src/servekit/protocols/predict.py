"""The plain ``/predict`` API, as a 15-line Flask app serves a model, and the
typed API of library models, with an OpenAPI document.

- ``POST /predict/{name}`` with ``{"inputs": [[...], ...]}`` answers
  ``{"prediction": [...]}`` for any model. A typed library model instead takes
  its item as the body and answers its output (``{"inputs": …}`` still works
  when the item type has no ``inputs`` field).
- ``POST /predict/batch/{name}``: a JSON list of items -> the list of outputs.
- ``POST /predict``: the only served model (or ``default_model``), as above.
  (With Seldon's front on, a body in Seldon's form is answered by it first:
  see :mod:`servekit.fronts.seldon.api`.)

Typed models' schemas (from their types) are in the main port's
``/openapi.json`` (:mod:`servekit.openapi`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from servekit.dataplane import Target, header_timeout
from servekit.errors import InvalidInput, ServekitError
from servekit.protocols.json_values import default_model_name, tensor_values
from servekit.protocols.v2_codec import loads
from servekit.registry import ModelVersion, Registry
from servekit.server.http import Request, Response, Route, default_error, json_response, route
from servekit.server.lifecycle import MAIN, Mount, ServerContext, Skin
from servekit.tensors import InferenceRequest, InferenceResponse, ModelMetadata, Tensor

PROTOCOL = "predict"


def error_response(exc: ServekitError) -> Response:
    """Flask-style errors: ``{"error": message}`` with the error's status."""
    return default_error(exc)


def model_metadata(registry: Registry, name: str) -> ModelMetadata:
    return registry.resolve(name).metadata()


def is_typed(meta: ModelMetadata) -> bool:
    return bool(meta.parameters.get("typed"))


def items_tensor(items: list[Any]) -> Tensor:
    data = np.empty((len(items), 1), dtype=object)
    data[:, 0] = [orjson.dumps(item) for item in items]
    return Tensor("input", data, "BYTES", {"content_type": "json"})


def inputs_tensor(inputs: Any, meta: ModelMetadata) -> Tensor:
    """Flask's ``inputs`` (rows of features) as one tensor."""
    try:
        array = np.asarray(inputs)
    except ValueError as exc:
        raise InvalidInput(f"'inputs' must be a rectangular list of rows: {exc}") from None
    name = meta.inputs[0].name if len(meta.inputs) == 1 else "input-0"
    if array.dtype.kind in "biuf":
        return Tensor(name, array)
    if array.dtype.kind == "U":
        return Tensor(name, np.vectorize(str.encode, otypes=[object])(array), "BYTES")
    raise InvalidInput("'inputs' must hold numbers or strings, in equal-length rows")


# -- handlers ------------------------------------------------------------------
def first_output(name: str, response: InferenceResponse) -> Tensor:
    if not response.outputs:
        raise ServekitError(f"model {name!r} returned no outputs")
    return response.outputs[0]


def flask_tensor(document: Any, meta: ModelMetadata) -> Tensor:
    """Flask's ``{"inputs": [...]}``: rows of features, or a typed model's items."""
    inputs = document.get("inputs") if isinstance(document, dict) else None
    if inputs is None:
        raise InvalidInput('send {"inputs": [[feature, ...], ...]}')
    if is_typed(meta):
        if not isinstance(inputs, list):
            raise InvalidInput("'inputs' must be a list of items")
        return items_tensor(inputs)
    return inputs_tensor(inputs, meta)


def _flask_shaped(document: Any, meta: ModelMetadata) -> bool:
    """A typed model's body is Flask's form when its item type has no ``inputs`` field."""
    if not (isinstance(document, dict) and set(document) == {"inputs"}):
        return False
    schema = meta.parameters.get("input_schema") or {}
    return "inputs" not in (schema.get("properties") or {})


async def predict_named(ctx: ServerContext, name: str, body: bytes, timeout: float | None) -> Response:
    flask: list[bool] = []

    def decode(model: ModelVersion) -> InferenceRequest:
        meta = model.metadata()
        document = loads(body)
        flask.append(not is_typed(meta) or _flask_shaped(document, meta))
        tensor = flask_tensor(document, meta) if flask[0] else items_tensor([document])
        return InferenceRequest(inputs=[tensor])

    def encode(response: InferenceResponse) -> Response:
        output = first_output(name, response)
        if flask[0]:
            return json_response({"prediction": tensor_values(output)})
        if output.content_type == "json":
            return Response(bytes(output.data.reshape(-1)[0]))
        return json_response(tensor_values(output)[0])

    return await ctx.dataplane.serve(Target(name), decode, encode, protocol=PROTOCOL, timeout=timeout)


async def predict_batch(ctx: ServerContext, name: str, body: bytes, timeout: float | None) -> Response:
    document = loads(body)
    if isinstance(document, list) and not document and is_typed(model_metadata(ctx.registry, name)):
        return Response(b"[]")

    def decode(model: ModelVersion) -> InferenceRequest:
        if not is_typed(model.metadata()):
            raise InvalidInput(
                f"model {name!r} is not a typed library model; use POST /predict/{name} "
                'with {"inputs": [...]}'
            )
        if not isinstance(document, list):
            raise InvalidInput("the body of /predict/batch/<name> must be a JSON list of items")
        return InferenceRequest(inputs=[items_tensor(document)])

    def encode(response: InferenceResponse) -> Response:
        output = first_output(name, response)
        if output.content_type == "json":
            return Response(b"[" + b",".join(bytes(v) for v in output.data.reshape(-1)) + b"]")
        return json_response(tensor_values(output))

    return await ctx.dataplane.serve(Target(name), decode, encode, protocol=PROTOCOL, timeout=timeout)


def routes(ctx: ServerContext) -> list[Route]:
    async def named(request: Request) -> Response:
        timeout = header_timeout(request.headers)
        return await predict_named(ctx, request.path_params["name"], await request.body(), timeout)

    async def batch(request: Request) -> Response:
        timeout = header_timeout(request.headers)
        return await predict_batch(ctx, request.path_params["name"], await request.body(), timeout)

    async def nameless(request: Request) -> Response:
        timeout = header_timeout(request.headers)
        return await predict_named(ctx, default_model_name(ctx), await request.body(), timeout)

    e = error_response
    return [
        route("POST", "/predict", nameless, e),
        route("POST", "/predict/batch/{name}", batch, e),
        route("POST", "/predict/{name}", named, e),
    ]


SKIN = Skin(name="predict", mounts=lambda ctx: [Mount(MAIN, routes(ctx), error_response)])
