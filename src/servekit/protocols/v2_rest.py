"""Open Inference Protocol V2 over REST (MLServer, KServe and Triton clients),
with the repository, statistics and binary tensor extensions."""

from __future__ import annotations

import time
from typing import Any

from servekit import __version__
from servekit.errors import InvalidInput, ModelNotFound, ServekitError
from servekit.protocols import v2_codec
from servekit.registry import ModelVersion, version_sort_key
from servekit.server.context import ServerContext
from servekit.server.http import Request, Response, Route, json_response, route

EXTENSIONS = ["binary_tensor_data", "model_repository", "statistics", "schedule_policy"]
PROTOCOL = "v2"


def error_response(exc: ServekitError) -> Response:
    return json_response({"error": exc.message}, exc.status)


def metadata_dict(model: ModelVersion, versions: list[str]) -> dict[str, Any]:
    assert model.runtime is not None
    meta = model.runtime.metadata()
    out: dict[str, Any] = {
        "name": model.name,
        "versions": versions,
        "platform": meta.platform,
        "inputs": [s.to_dict() for s in meta.inputs],
        "outputs": [s.to_dict() for s in meta.outputs],
    }
    if meta.parameters:
        out["parameters"] = meta.parameters
    return out


def stats_dict(model: ModelVersion) -> dict[str, Any]:
    assert model.batcher is not None
    s = model.batcher.stats
    return {
        "name": model.name,
        "version": model.version,
        "last_inference": s.last_inference_ms,
        "inference_count": s.inference_count,
        "execution_count": s.execution_count,
        "inference_stats": {
            "success": {"count": s.success_count, "ns": s.success_ns},
            "fail": {"count": s.fail_count, "ns": s.fail_ns},
            "queue": {"count": s.inference_count, "ns": s.queue_ns},
            "compute_infer": {"count": s.execution_count, "ns": s.compute_ns},
        },
        "batch_stats": [
            {"batch_size": size, "compute_infer": {"count": count}}
            for size, count in sorted(s.batch_sizes.items())
        ],
    }


def routes(ctx: ServerContext) -> list[Route]:
    registry = ctx.registry
    metrics = ctx.metrics

    async def live(request: Request) -> Response:
        return json_response({"live": True})

    async def ready(request: Request) -> Response:
        if registry.ready():
            return json_response({"ready": True})
        waiting = [f"{v.name}:{v.version or '-'} {v.state.value}" for v in registry.all_versions() if not v.ready]
        return json_response({"ready": False, "error": "models not ready: " + ", ".join(waiting)}, 503)

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
        entry = registry.entry(p["model"])
        model = registry.resolve(p["model"], p.get("version"))
        versions = sorted((v for v in entry.versions if v), key=version_sort_key)
        return json_response(metadata_dict(model, versions))

    async def infer(request: Request) -> Response:
        started = time.perf_counter()
        p = request.path_params
        name, version = p["model"], p.get("version")
        try:
            body = await request.body()
            inference = v2_codec.decode_request(body, request.headers)
            response = await registry.infer(name, version, inference)
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

    async def model_stats(request: Request) -> Response:
        p = request.path_params
        name = p.get("model")
        if name:
            entry = registry.entry(name)
            version = p.get("version")
            models = [entry.versions[version]] if version else list(entry.versions.values())
            if version and version not in entry.versions:
                raise ModelNotFound(f"model {name!r} has no version {version!r}")
        else:
            models = registry.all_versions()
        return json_response({"model_stats": [stats_dict(m) for m in models if m.batcher]})

    async def repository_index(request: Request) -> Response:
        body = await request.body()
        only_ready = False
        if body.strip():
            document = v2_codec.loads(body)
            if not isinstance(document, dict):
                raise InvalidInput("repository index body must be a JSON object")
            only_ready = bool(document.get("ready", False))
        rows = []
        for model in sorted(registry.all_versions(), key=lambda m: (m.name, m.version)):
            if only_ready and not model.ready:
                continue
            rows.append(
                {"name": model.name, "version": model.version, "state": model.state.value, "reason": model.reason}
            )
        if ctx.find_model_settings is not None and not only_ready:
            known = {(r["name"], r["version"]) for r in rows}
            for settings in await ctx.find_model_settings(""):
                key = (settings.name, settings.parameters.version or "")
                if key not in known:
                    rows.append({"name": key[0], "version": key[1], "state": "UNAVAILABLE", "reason": "unloaded"})
        return json_response(rows)

    async def repository_load(request: Request) -> Response:
        name = request.path_params["model"]
        if ctx.find_model_settings is None:
            raise ModelNotFound("this server has no model repository to load from")
        found = await ctx.find_model_settings(name)
        if not found:
            raise ModelNotFound(f"no model named {name!r} in the model repository")
        loaded = [await registry.load(settings) for settings in found]
        failed = [m for m in loaded if not m.ready]
        for hook in ctx.on_repository_change:
            await hook("load", name)
        if failed:
            raise ServekitError(f"model {name!r} failed to load: {failed[0].reason}")
        return json_response({"name": name, "versions": [m.version for m in loaded], "state": "READY"})

    async def repository_unload(request: Request) -> Response:
        name = request.path_params["model"]
        unloaded = await registry.unload(name)
        for hook in ctx.on_repository_change:
            await hook("unload", name)
        return json_response({"name": name, "versions": [m.version for m in unloaded], "state": "UNLOADED"})

    async def prometheus(request: Request) -> Response:
        return Response(metrics.render(), content_type=b"text/plain; version=0.0.4; charset=utf-8")

    e = error_response
    out = [
        route("GET", "/v2/health/live", live, e),
        route("GET", "/v2/health/ready", ready, e),
        route("GET", "/v2", server_metadata, e),
        route("GET", "/v2/models/stats", model_stats, e),
        route("GET", "/v2/models/{model}/ready", model_ready, e),
        route("GET", "/v2/models/{model}/versions/{version}/ready", model_ready, e),
        route("GET", "/v2/models/{model}", model_metadata, e),
        route("GET", "/v2/models/{model}/versions/{version}", model_metadata, e),
        route("POST", "/v2/models/{model}/infer", infer, e),
        route("POST", "/v2/models/{model}/versions/{version}/infer", infer, e),
        route("GET", "/v2/models/{model}/stats", model_stats, e),
        route("GET", "/v2/models/{model}/versions/{version}/stats", model_stats, e),
        route("POST", "/v2/repository/index", repository_index, e),
        route("POST", "/v2/repository/models/{model}/load", repository_load, e),
        route("POST", "/v2/repository/models/{model}/unload", repository_unload, e),
    ]
    if ctx.settings.enable_metrics_endpoint:
        out.append(route("GET", ctx.settings.metrics_endpoint, prometheus, e))
    return out


__all__ = ["routes", "error_response"]
