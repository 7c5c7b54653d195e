"""Open Inference Protocol V2 over REST (MLServer, KServe and Triton clients),
with the repository, statistics and binary tensor extensions."""

from __future__ import annotations

import time

from servekit import __version__
from servekit.errors import InvalidInput, ServekitError
from servekit.protocols import v2_codec, v2_operations
from servekit.protocols.v2_operations import metadata_dict, stats_dict
from servekit.server.context import ServerContext
from servekit.server.http import Request, Response, Route, json_response, route
from servekit.server.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE

EXTENSIONS = ["binary_tensor_data", "model_repository", "statistics", "schedule_policy"]
PROTOCOL = "v2"


def error_response(exc: ServekitError) -> Response:
    return json_response({"error": exc.message}, exc.status)


def routes(ctx: ServerContext) -> list[Route]:
    registry = ctx.registry
    metrics = ctx.metrics

    async def live(request: Request) -> Response:
        return json_response({"live": True})

    async def ready(request: Request) -> Response:
        reason = v2_operations.not_ready_reason(registry)
        if reason is None:
            return json_response({"ready": True})
        return json_response({"ready": False, "error": reason}, 503)

    async def server_metadata(request: Request) -> Response:
        return json_response(
            {"name": ctx.settings.server_name, "version": __version__, "extensions": EXTENSIONS}
        )

    async def model_ready(request: Request) -> Response:
        p = request.path_params
        model = registry.resolve(p["model"], p.get("version"))
        return json_response({"name": model.name, "version": model.version, "ready": True})

    async def model_metadata(request: Request) -> Response:
        p = request.path_params
        return json_response(v2_operations.model_metadata(registry, p["model"], p.get("version")))

    async def infer(request: Request) -> Response:
        started = time.perf_counter()
        p = request.path_params
        name, version = p["model"], p.get("version")
        try:
            model = registry.resolve(name, version)
            body = await request.raw_body()
            inference = v2_codec.decode_request(body, request.headers)
            response = await registry.submit(model, inference)
        except ServekitError as exc:
            metrics.failure(name, version or "", PROTOCOL, exc.status)
            raise
        payload, header_length = v2_codec.encode_response(response, inference)
        out = Response(payload)
        if header_length is not None:
            out.content_type = b"application/octet-stream"
            out.headers.append((b"inference-header-content-length", str(header_length).encode()))
        accept = request.headers.get("accept-encoding")
        if accept:
            out.body, encoding = v2_codec.compress(out.body, accept)
            if encoding:
                out.headers.append((b"content-encoding", encoding.encode()))
        metrics.observe(name, response.model_version or "", PROTOCOL, time.perf_counter() - started)
        return out

    async def statistics(request: Request) -> Response:
        p = request.path_params
        return json_response({"model_stats": v2_operations.model_stats(registry, p.get("model"), p.get("version"))})

    async def index(request: Request) -> Response:
        body = await request.body()
        only_ready = False
        if body.strip():
            document = v2_codec.loads(body)
            if not isinstance(document, dict):
                raise InvalidInput("repository index body must be a JSON object")
            only_ready = bool(document.get("ready", False))
        return json_response(await v2_operations.repository_index(ctx, only_ready))

    async def load(request: Request) -> Response:
        name = request.path_params["model"]
        loaded = await v2_operations.repository_load(ctx, name)
        return json_response({"name": name, "versions": [m.version for m in loaded], "state": "READY"})

    async def unload(request: Request) -> Response:
        name = request.path_params["model"]
        unloaded = await v2_operations.repository_unload(ctx, name)
        return json_response({"name": name, "versions": [m.version for m in unloaded], "state": "UNLOADED"})

    async def prometheus(request: Request) -> Response:
        return Response(metrics.render(), content_type=METRICS_CONTENT_TYPE)

    e = error_response
    out = [
        route("GET", "/v2/health/live", live, e),
        route("GET", "/v2/health/ready", ready, e),
        route("GET", "/v2", server_metadata, e),
        route("GET", "/v2/models/stats", statistics, e),
        route("GET", "/v2/models/{model}/ready", model_ready, e),
        route("GET", "/v2/models/{model}/versions/{version}/ready", model_ready, e),
        route("GET", "/v2/models/{model}", model_metadata, e),
        route("GET", "/v2/models/{model}/versions/{version}", model_metadata, e),
        route("POST", "/v2/models/{model}/infer", infer, e),
        route("POST", "/v2/models/{model}/versions/{version}/infer", infer, e),
        route("GET", "/v2/models/{model}/stats", statistics, e),
        route("GET", "/v2/models/{model}/versions/{version}/stats", statistics, e),
        route("POST", "/v2/repository/index", index, e),
        route("POST", "/v2/repository/models/{model}/load", load, e),
        route("POST", "/v2/repository/models/{model}/unload", unload, e),
    ]
    if ctx.settings.enable_metrics_endpoint:
        out.append(route("GET", ctx.settings.metrics_endpoint, prometheus, e))
    return out


__all__ = ["error_response", "metadata_dict", "routes", "stats_dict"]
