"""Putting the server together: the skins, in order, and which listener
(port) serves which routes. Nothing registers itself by being imported: a
skin that is not listed here does not exist."""

from __future__ import annotations

from typing import Any

from servekit import openapi, payloads
from servekit.config import ServerSettings
from servekit.dataplane import DataPlane
from servekit.errors import ConfigError
from servekit.fronts.kserve import v1 as kserve_v1
from servekit.fronts.mlflow import api as mlflow_scoring
from servekit.fronts.seldon import api as seldon
from servekit.fronts.tfserving import grpc_api as tfserving_grpc
from servekit.fronts.tfserving import rest as tfserving
from servekit.fronts.torchserve import api as torchserve
from servekit.graphs import service as graphs
from servekit.observability import tracing
from servekit.protocols import predict, v2_grpc, v2_rest
from servekit.registry import Registry
from servekit.repository import reconcile
from servekit.repository.sources import ModelSources
from servekit.server import dashboard
from servekit.server.app import App
from servekit.server.http import Router
from servekit.server.lifecycle import (
    MAIN,
    METRICS,
    TFSERVING_REST,
    TORCHSERVE_MANAGEMENT,
    Mount,
    ServerContext,
    Skin,
)
from servekit.server.metrics import Metrics
from servekit.server.tls import load as load_tls
from servekit.server.tls import scheme as tls_scheme
from servekit.traffic import management as traffic

# The order matters: the first skin that mounts on a listener gives that
# listener its error format for unknown paths, and routes match in this order.
SKINS: list[Skin] = [
    v2_rest.SKIN,  # V2 REST, its repository extension and /metrics
    seldon.SKIN,  # Seldon's microservice API, and /predict bodies in Seldon's form
    predict.SKIN,  # /predict (Flask-style, typed models)
    tfserving.SKIN,  # TF Serving REST on --rest_api_port
    dashboard.skin(lambda ctx: server_info(ctx)),  # the page at /ui, and at / for browsers (before KServe V1's GET /)
    kserve_v1.SKIN,  # KServe V1 (/v1/models/{m}:predict, GET /) on the main port (after TF Serving's: a shared port answers TF Serving's status)
    torchserve.SKIN,  # TorchServe inference on the main port, management on its own
    mlflow_scoring.SKIN,  # MLflow's scoring protocol (/invocations, /health, /version); after TorchServe's /ping
    openapi.SKIN,  # /openapi.json and /docs on every HTTP port, of what that port answers
    v2_grpc.SKIN,  # V2 over gRPC
    tfserving_grpc.SKIN,  # TF Serving's gRPC API on --port, config reloads
    traffic.SKIN,  # canary and shadow: the traffic.set change, the shadow's report
    payloads.SKIN,  # payload logging: the opted-in models' calls as CloudEvents (no routes)
    reconcile.SKIN,  # repository load/unload/sync, labels, polling the sources
    graphs.SKIN,  # attaches inference graphs to the data plane, refuses cycles of graphs
]


def server_info(ctx: ServerContext) -> dict[str, Any]:
    """What the dashboard shows of the server: its listeners and skins."""
    return {
        "listeners": describe_ports(ctx.settings),
        "skins": [skin.name for skin in SKINS if skin.enabled(ctx.settings)],
    }


def build_context(
    settings: ServerSettings, registry: Registry, sources: ModelSources, index: int = 0
) -> ServerContext:
    metrics = Metrics()
    tracer = tracing.setup(settings)  # None unless an OTLP endpoint is configured
    return ServerContext(
        settings=settings,
        registry=registry,
        metrics=metrics,
        dataplane=DataPlane(registry, metrics, observers=[tracer] if tracer is not None else None),
        sources=sources,
        index=index,
    )


def listener_addresses(settings: ServerSettings) -> dict[str, tuple[str, int]]:
    """(host, port) of each listener that is on. TorchServe's management API
    binds its own host, 127.0.0.1 unless told otherwise."""
    out: dict[str, tuple[str, int]] = {MAIN: (settings.host, settings.http_port)} if settings.enable_http else {}
    if settings.enable_metrics_endpoint:
        out[METRICS] = (settings.host, settings.metrics_port)
    if settings.rest_api_port:
        out[TFSERVING_REST] = (settings.host, settings.rest_api_port)
    if torchserve.torchserve_mode(settings):
        out[TORCHSERVE_MANAGEMENT] = (settings.management_host, settings.management_port)
    return out


def listening_ports(settings: ServerSettings) -> list[tuple[str, int]]:
    """(host, port) of every HTTP socket (gRPC is separate), each port once."""
    out: list[tuple[str, int]] = []
    for host, port in listener_addresses(settings).values():
        if port not in [p for _, p in out]:
            out.append((host, port))
    return out


# the setting that names each HTTP listener's port (ssl_ports speaks of these)
PORT_SETTINGS = {
    MAIN: "http_port", METRICS: "metrics_port", TFSERVING_REST: "rest_api_port",
    TORCHSERVE_MANAGEMENT: "management_port",
}


def secure_ports(settings: ServerSettings) -> set[int]:
    """The HTTP ports that serve TLS; listeners sharing a port must agree."""
    tls = load_tls(settings)
    if tls is None:
        return set()
    secure: dict[int, tuple[bool, str]] = {}
    for listener, (_, port) in listener_addresses(settings).items():
        name = PORT_SETTINGS[listener]
        wanted = tls.serves(name)
        if port in secure and secure[port][0] != wanted:
            other = secure[port][1]
            raise ConfigError(
                f"{name} and {other} are both port {port}, but ssl_ports puts only one of them on TLS; "
                "give them different ports or list both in ssl_ports"
            )
        secure.setdefault(port, (wanted, name))
    return {port for port, (wanted, _) in secure.items() if wanted}


def build_app(ctx: ServerContext, skins: list[Skin]) -> tuple[App, list[tuple[str, int]]]:
    settings = ctx.settings
    addresses = listener_addresses(settings)
    routers: dict[int, Router] = {}
    for skin in skins:
        if skin.mounts is None:
            continue
        for mount in skin.mounts(ctx):
            address = addresses.get(mount.listener)
            if address is None:
                continue  # that listener is off
            router = routers.get(address[1])
            if router is None:
                routers[address[1]] = router = Router(on_error=mount.on_error)
            router.add(mount.routes)
    main = routers.setdefault(settings.http_port, Router())
    ctx.routers = routers
    tracer = next((each for each in ctx.dataplane.observers if isinstance(each, tracing.Tracing)), None)
    app = App(routers, main, max_body=settings.max_request_size, access_log=settings.access_log, tracing=tracer)
    return app, listening_ports(settings)


def describe_ports(settings: ServerSettings) -> list[str]:
    host = settings.host

    def http(name: str) -> str:
        return tls_scheme(settings, name)

    def grpc(name: str) -> str:
        return " (TLS)" if tls_scheme(settings, name) == "https" else ""

    lines = []
    if settings.enable_http:
        lines.append(f"HTTP server (V2 REST) listening on {http('http_port')}://{host}:{settings.http_port}")
    if settings.enable_grpc:
        lines.append(f"gRPC server (V2) listening on {host}:{settings.grpc_port}{grpc('grpc_port')}")
    if settings.enable_metrics_endpoint:
        lines.append(
            f"Metrics server listening on {http('metrics_port')}://{host}:{settings.metrics_port}"
            f"{settings.metrics_endpoint}"
        )
    if settings.rest_api_port:
        lines.append(f"TF Serving REST API listening on {http('rest_api_port')}://{host}:{settings.rest_api_port}")
    if settings.port:
        lines.append(f"TF Serving gRPC API listening on {host}:{settings.port}{grpc('port')}")
    if torchserve.torchserve_mode(settings):
        lines.append(
            "TorchServe management API listening on "
            f"{http('management_port')}://{settings.management_host}:{settings.management_port}"
        )
    return lines


__all__ = ["SKINS", "Mount", "build_app", "build_context", "describe_ports", "listening_ports", "secure_ports"]
