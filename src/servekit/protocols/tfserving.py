"""TensorFlow Serving's REST API (``--rest_api_port``, 8501 by default):

- ``GET  /v1/models/{name}[/versions/{v}|/labels/{l}]``  model status
- ``GET  /v1/models/{name}[…]/metadata``                 signature defs
- ``POST /v1/models/{name}[…]:predict|:classify|:regress``

Errors are ``{"error": "…"}`` with the HTTP status of the failure.
"""

from __future__ import annotations

import time

from servekit.errors import InvalidInput, ServekitError
from servekit.protocols import tfserving_codec as codec
from servekit.protocols import tfserving_operations as operations
from servekit.server.context import ServerContext
from servekit.server.http import Request, Response, Route, json_response, route

PROTOCOL = "tfserving"
METHODS = ("predict", "classify", "regress")


def error_response(exc: ServekitError) -> Response:
    return json_response({"error": exc.message}, exc.status)


def routes(ctx: ServerContext) -> list[Route]:
    registry = ctx.registry
    metrics = ctx.metrics

    def selected(p: dict[str, str]) -> tuple[str | None, str | None]:
        return p.get("version"), p.get("label")

    async def status(request: Request) -> Response:
        p = request.path_params
        version, label = selected(p)
        models = operations.model_versions(registry, p["model"], version, label)
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
        started = time.perf_counter()
        p = request.path_params
        name, method = p["model"], p["method"]
        version, label = selected(p)
        if method not in METHODS:
            raise InvalidInput(
                f"unknown method :{method} on {request.path}; use :predict, :classify or :regress"
            )
        try:
            body = await request.body()
            if method == "predict":
                inference, rows = codec.decode_predict(body)
                response = await registry.infer(name, version, inference, label=label)
                payload = codec.encode_predict(response, rows)
            else:
                examples, parameters = codec.decode_examples(body)
                response = await operations.run_examples(
                    registry, name, version, label, examples, parameters
                )
                encode = codec.encode_classify if method == "classify" else codec.encode_regress
                payload = encode(response, len(examples))
        except ServekitError as exc:
            metrics.failure(name, version or "", PROTOCOL, exc.status)
            raise
        metrics.observe(name, response.model_version or "", PROTOCOL, time.perf_counter() - started)
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


__all__ = ["error_response", "routes"]
