"""Putting the protocols together: which routes listen on which port."""

from __future__ import annotations

from servekit.config import ServerSettings
from servekit.library import runtime_cache
from servekit.protocols import predict as predict_api
from servekit.protocols import seldon, tfserving_grpc, v2_grpc, v2_rest
from servekit.registry import Registry
from servekit.repository.sources import ModelSources
from servekit.server.app import App
from servekit.server.context import ServerContext
from servekit.server.http import Router, route
from servekit.server.metrics import Metrics

# importing runtime_cache registers the worker hook that caches opted-in models' predictions
PREDICTION_CACHE_HOOK = runtime_cache.install
# importing v2_grpc registers its worker hook, which serves V2 over gRPC
GRPC_WORKER_HOOK = v2_grpc.start_in_worker
# and tfserving_grpc's, which serves TF Serving's gRPC API on --port
TFSERVING_GRPC_WORKER_HOOK = tfserving_grpc.start_in_worker


def build_context(
    settings: ServerSettings, registry: Registry, sources: ModelSources
) -> ServerContext:
    return ServerContext(
        settings=settings,
        registry=registry,
        metrics=Metrics(),
        find_model_settings=sources.find,
    )


def listening_ports(settings: ServerSettings) -> list[tuple[str, int]]:
    """(host, port) of every HTTP listener (gRPC is separate). TorchServe's
    management API binds its own host, 127.0.0.1 unless told otherwise."""
    from servekit.protocols.torchserve import torchserve_mode

    ports = [settings.http_port]
    if settings.enable_metrics_endpoint and settings.metrics_port not in ports:
        ports.append(settings.metrics_port)
    if settings.rest_api_port and settings.rest_api_port not in ports:
        ports.append(settings.rest_api_port)
    listeners = [(settings.host, port) for port in ports]
    if torchserve_mode(settings) and settings.management_port not in ports:
        listeners.append((settings.management_host, settings.management_port))
    return listeners


def build_app(ctx: ServerContext) -> tuple[App, list[tuple[str, int]]]:
    settings = ctx.settings
    main = Router(v2_rest.routes(ctx), on_error=v2_rest.error_response)
    # Seldon's microservice API and the plain /predict API; POST /predict picks one
    # by the body's shape (see servekit/protocols/predict.py)
    main.add(seldon.routes(ctx) + predict_api.routes(ctx))
    routers = {settings.http_port: main}
    if settings.enable_metrics_endpoint and settings.metrics_port != settings.http_port:
        metrics_routes = [r for r in main.routes if r.pattern.pattern == f"^{settings.metrics_endpoint}$"]
        routers[settings.metrics_port] = Router(metrics_routes, on_error=v2_rest.error_response)
    if settings.rest_api_port:
        from servekit.protocols import tfserving

        if settings.rest_api_port in routers:
            routers[settings.rest_api_port].add(tfserving.routes(ctx))
        else:
            routers[settings.rest_api_port] = Router(
                tfserving.routes(ctx), on_error=tfserving.error_response
            )
    # TorchServe: /ping and /predictions on the main port, management on its own
    from servekit.protocols import torchserve

    main.add(torchserve.inference_routes(ctx))
    if torchserve.torchserve_mode(settings) and settings.management_port not in routers:
        routers[settings.management_port] = Router(
            torchserve.management_routes(ctx), on_error=torchserve.error_response
        )
    app = App(routers, main, max_body=settings.max_request_size, access_log=settings.access_log)
    return app, listening_ports(settings)


def describe_ports(settings: ServerSettings) -> list[str]:
    host = settings.host
    lines = [f"HTTP server (V2 REST) listening on http://{host}:{settings.http_port}"]
    if settings.enable_grpc:
        lines.append(f"gRPC server (V2) listening on {host}:{settings.grpc_port}")
    if settings.enable_metrics_endpoint:
        lines.append(f"Metrics server listening on http://{host}:{settings.metrics_port}{settings.metrics_endpoint}")
    if settings.rest_api_port:
        lines.append(f"TF Serving REST API listening on http://{host}:{settings.rest_api_port}")
    if settings.port:
        lines.append(f"TF Serving gRPC API listening on {host}:{settings.port}")
    if settings.model_store or settings.load_models or settings.ts_config:
        lines.append(
            "TorchServe management API listening on "
            f"http://{settings.management_host}:{settings.management_port}"
        )
    return lines


__all__ = ["build_app", "build_context", "describe_ports", "listening_ports", "route"]
