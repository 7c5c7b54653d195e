"""KServe's V1 protocol on the main HTTP port, where KServe's model server has it:

- ``GET  /``                          ``{"status": "alive"}`` (the V1 client's liveness call)
- ``GET  /v1/models``                 ``{"models": [names]}``
- ``GET  /v1/models/{name}``          ``{"name": name, "ready": true}``; 503 (same body) while not ready
- ``POST /v1/models/{name}:predict``  ``{"instances": [...]}`` → ``{"predictions": [...]}``
- ``POST /v1/models/{name}:explain``  501: servekit has no explainers

The request and answer bodies are TF Serving's row format (KServe V1 took it
from there), so TF Serving's codec reads and writes them. Errors are
``{"error": "…"}`` as KServe answers them.
"""

from __future__ import annotations

from servekit.dataplane import Target, header_timeout
from servekit.errors import InvalidInput, ServekitError
from servekit.fronts.tfserving import codec
from servekit.registry import ModelVersion
from servekit.server.http import Request, Response, Route, json_response, route
from servekit.server.lifecycle import MAIN, Mount, ServerContext, Skin
from servekit.tensors import InferenceRequest

PROTOCOL = "kserve-v1"


class NotImplementedHere(ServekitError):
    status = 501


def error_response(exc: ServekitError) -> Response:
    return json_response({"error": exc.message}, exc.status)


def routes(ctx: ServerContext) -> list[Route]:
    registry = ctx.registry

    async def alive(request: Request) -> Response:
        return json_response({"status": "alive"})

    async def models(request: Request) -> Response:
        return json_response({"models": registry.names()})

    async def status(request: Request) -> Response:
        name = request.path_params["model"]
        ready = any(m.ready for m in registry.select(name))
        return json_response({"name": name, "ready": ready}, 200 if ready else 503)

    async def call(request: Request) -> Response:
        name, method = request.path_params["model"], request.path_params["method"]
        if method == "explain":
            registry.select(name)  # 404 for a model that does not exist
            raise NotImplementedHere(f"model {name!r} has no explainer; servekit serves :predict")
        if method != "predict":
            raise InvalidInput(f"unknown verb :{method} on {request.path}; KServe V1 has :predict and :explain")
        body = await request.body()
        rows: list[bool] = []

        def decode(model: ModelVersion) -> InferenceRequest:
            inference, row_format = codec.decode_predict(body)
            rows.append(row_format)
            return inference

        payload = await ctx.dataplane.serve(
            Target(name), decode, lambda response: codec.encode_predict(response, rows[0]),
            protocol=PROTOCOL, timeout=header_timeout(request.headers),
        )
        return Response(payload)

    e = error_response
    return [
        route("GET", "/", alive, e),
        route("GET", "/v1/models", models, e),
        route("GET", "/v1/models/{model}", status, e),
        route("POST", "/v1/models/{model}:{method}", call, e),
    ]


SKIN = Skin(name="kserve-v1", mounts=lambda ctx: [Mount(MAIN, routes(ctx), error_response)])

__all__ = ["SKIN", "error_response", "routes"]
