"""TensorFlow Serving's REST API (``--rest_api_port``, 8501 by default):

- ``GET  /v1/models/{name}[/versions/{v}|/labels/{l}]``  model status
- ``GET  /v1/models/{name}[…]/metadata``                 signature defs
- ``POST /v1/models/{name}[…]:predict|:classify|:regress``

Errors are ``{"error": "…"}`` with the HTTP status of the failure.
"""

from __future__ import annotations

from servekit.dataplane import Target, header_timeout
from servekit.errors import InvalidInput, ServekitError
from servekit.fronts.tfserving import codec, operations
from servekit.registry import ModelVersion
from servekit.server.http import Request, Response, Route, json_response, route
from servekit.server.lifecycle import TFSERVING_REST, Mount, ServerContext, Skin
from servekit.tensors import InferenceRequest

PROTOCOL = "tfserving"
METHODS = ("predict", "classify", "regress")


def error_response(exc: ServekitError) -> Response:
    return json_response({"error": exc.message}, exc.status)


def routes(ctx: ServerContext) -> list[Route]:
    registry = ctx.registry
    dataplane = ctx.dataplane

    def selected(p: dict[str, str]) -> tuple[str | None, str | None]:
        return p.get("version"), p.get("label")

    async def status(request: Request) -> Response:
        p = request.path_params
        version, label = selected(p)
        models = registry.select(p["model"], version, label)
        return json_response(
            {"model_version_status": [operations.version_status(m) for m in models]}
        )

    async def metadata(request: Request) -> Response:
        p = request.path_params
        version, label = selected(p)
        model, signatures = operations.model_signatures(registry, p["model"], version, label)
        return json_response(
            {
                "model_spec": {"name": model.name, "signature_name": "", "version": model.version},
                "metadata": {"signature_def": {"signature_def": signatures}},
            }
        )

    async def call(request: Request) -> Response:
        p = request.path_params
        method = p["method"]
        target = Target(p["model"], *selected(p))
        if method not in METHODS:
            raise InvalidInput(
                f"unknown method :{method} on {request.path}; use :predict, :classify or :regress"
            )
        body = await request.body()
        timeout = header_timeout(request.headers)
        if method == "predict":
            rows: list[bool] = []

            def decode(model: ModelVersion) -> InferenceRequest:
                inference, count = codec.decode_predict(body)
                rows.append(count)
                return inference

            payload = await dataplane.serve(
                target, decode, lambda response: codec.encode_predict(response, rows[0]),
                protocol=PROTOCOL, timeout=timeout,
            )
            return Response(payload)
        examples, parameters = codec.decode_examples(body)
        encode = codec.encode_classify if method == "classify" else codec.encode_regress
        payload = await dataplane.serve(
            target,
            operations.examples_decoder(examples, parameters),
            lambda response: encode(response, len(examples)),
            protocol=PROTOCOL,
            timeout=timeout,
        )
        return Response(payload)

    e = error_response
    base = "/v1/models/{model}"
    out: list[Route] = []
    for prefix in (base, base + "/versions/{version}", base + "/labels/{label}"):
        out += [
            route("GET", prefix, status, e),
            route("GET", prefix + "/metadata", metadata, e),
            route("POST", prefix + ":{method}", call, e),
        ]
    return out


SKIN = Skin(
    name="tfserving-rest",
    mounts=lambda ctx: [Mount(TFSERVING_REST, routes(ctx), error_response)],
)


__all__ = ["SKIN", "error_response", "routes"]
