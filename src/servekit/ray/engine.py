"""A model repository as one Ray Serve application (needs the ``ray`` extra).

::

    HTTP ─► Ray's proxy ─► servekit ingress ─► model deployment "iris"   (replicas: ModelReplica)
            (every node)   (App + forwarding)  model deployment "digits" …

Each model of the repository (every version of one name) is one deployment;
its replicas and autoscaling come from its settings
(:func:`servekit.ray.options.replica_options`). The ingress is the one
deployment that receives HTTP (Ray's ``serve.ingress`` with servekit's own
ASGI application); it reaches each model through a deployment handle.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray import serve
from ray.serve.handle import DeploymentHandle

from servekit.config import ModelSettings, ServerSettings, load_server_settings
from servekit.errors import ConfigError
from servekit.ray.ingress import Forward, build_app
from servekit.ray.options import newest, replica_options
from servekit.ray.replica import Answer, Headers, ModelReplica
from servekit.repository.sources import ModelSources

log = logging.getLogger("servekit.ray")

APP_NAME = "servekit"
# the ingress deployment's name: no model can have it (a model name starts with a letter or digit)
INGRESS = "_servekit_ingress"
# requests a replica takes at once (Ray's default is 5): a model replica's batcher joins
# what is queued, so it should see more than one request at a time
MAX_ONGOING_REQUESTS = 64
INGRESS_MAX_ONGOING_REQUESTS = 1000


class ServekitModel:
    """A replica of one model's deployment (Ray creates it with ``async __init__``)."""

    async def __init__(self, name: str, versions: list[ModelSettings], server: ServerSettings) -> None:  # type: ignore[misc]
        self.replica = ModelReplica(name, versions, server)
        await self.replica.load()

    async def call(self, method: str, path: str, query: bytes, headers: Headers, body: bytes) -> Answer:
        return await self.replica.call(method, path, query, headers, body)


class ServekitIngress:
    """The ingress's replica: servekit's App, forwarding to the model deployments."""

    def __init__(self, models: dict[str, DeploymentHandle[Any]], server_name: str, max_body: int) -> None:
        self.models = models
        self.server_name = server_name
        self.max_body = max_body

    def __serve_build_asgi_app__(self) -> Any:
        forwards = {name: _forward(handle) for name, handle in self.models.items()}
        return build_app(forwards, server_name=self.server_name, max_body=self.max_body)


def _forward(handle: DeploymentHandle[Any]) -> Forward:
    method = handle.call

    async def forward(verb: str, path: str, query: bytes, headers: Headers, body: bytes) -> Answer:
        answer: Answer = await method.remote(verb, path, query, headers, body)
        return answer

    return forward


MODEL_DEPLOYMENT: Any = serve.deployment(ServekitModel)
INGRESS_DEPLOYMENT: Any = serve.deployment(serve.ingress()(ServekitIngress))


@dataclass(frozen=True)
class Deployed:
    """What :func:`deploy` started: the application's name, its HTTP address,
    the ingress's handle, and each model's deployment options."""

    app_name: str
    url: str
    handle: DeploymentHandle[Any]
    models: dict[str, dict[str, Any]]


def models_of(root: str | Path, settings: ServerSettings) -> dict[str, list[ModelSettings]]:
    """Every version of every model in the repository, by name."""
    sources = ModelSources(settings)
    sources.add_repository(root)
    out: dict[str, list[ModelSettings]] = defaultdict(list)
    for each in sources.wanted():
        out[each.name].append(each)
    return dict(sorted(out.items()))


def build_application(
    root: str | Path,
    *,
    settings: ServerSettings | None = None,
    num_cpus: float = 1.0,
    ingress_replicas: int = 1,
) -> tuple[Any, dict[str, dict[str, Any]]]:
    """The Ray Serve application of a repository (``serve.run`` takes it) and
    each model's options. ``num_cpus``: the CPUs Ray reserves for each replica
    (of the models and of the ingress)."""
    settings = settings or load_server_settings(str(root), {})
    models = models_of(root, settings)
    if not models:
        raise ConfigError(f"no models in {str(root)!r}: nothing to deploy on Ray Serve")
    bound: dict[str, Any] = {}
    options: dict[str, dict[str, Any]] = {}
    for name, versions in models.items():
        options[name] = replica_options(newest(versions))
        bound[name] = MODEL_DEPLOYMENT.options(
            name=name, max_ongoing_requests=MAX_ONGOING_REQUESTS,
            ray_actor_options={"num_cpus": num_cpus}, **options[name],
        ).bind(name, versions, settings)
    ingress = INGRESS_DEPLOYMENT.options(
        name=INGRESS, num_replicas=ingress_replicas, max_ongoing_requests=INGRESS_MAX_ONGOING_REQUESTS,
        ray_actor_options={"num_cpus": num_cpus},
    ).bind(bound, settings.server_name, settings.max_request_size)
    return ingress, options


BUILDER_ARGS = ("repository", "num_cpus", "ingress_replicas")


def app(args: dict[str, Any]) -> Any:
    """Ray Serve's application builder, for ``serve run
    servekit.ray.engine:app repository=/mnt/models`` and for a Serve config
    file (a KubeRay ``RayService``'s ``serveConfigV2``) whose application has
    ``import_path: servekit.ray.engine:app`` and ``args: {repository: …,
    num_cpus: …, ingress_replicas: …}``."""
    unknown = sorted(set(args) - set(BUILDER_ARGS))
    if unknown:
        raise ConfigError(f"servekit.ray.engine:app takes the args {', '.join(BUILDER_ARGS)}, not "
                          + ", ".join(repr(str(name)[:64]) for name in unknown))
    repository = args.get("repository")
    if not repository or not Path(str(repository)).is_dir():
        raise ConfigError(f"servekit.ray.engine:app needs args.repository, a folder of models (got {repository!r})")
    try:
        num_cpus, ingress_replicas = float(args.get("num_cpus", 1.0)), int(args.get("ingress_replicas", 1))
    except (TypeError, ValueError):
        raise ConfigError("servekit.ray.engine:app: num_cpus is a number, ingress_replicas a whole number") from None
    application, _ = build_application(str(repository), num_cpus=num_cpus, ingress_replicas=ingress_replicas)
    return application


def deploy(
    root: str | Path,
    *,
    address: str | None = None,
    settings: ServerSettings | None = None,
    app_name: str = APP_NAME,
    num_cpus: float = 1.0,
    ingress_replicas: int = 1,
) -> Deployed:
    """Serve the repository at ``root`` on Ray Serve and return once every
    replica is up. Connects to the Ray cluster at ``address`` (None: Ray's own
    choice: ``RAY_ADDRESS``, a cluster started on this machine with ``ray
    start``, else a new local one) unless this process is connected already.
    Ray's HTTP proxy listens on the settings' host and ``http_port`` (a
    cluster-wide choice, made by the first application that starts Serve).
    Deploying again under the same ``app_name`` updates it: Ray starts new
    replicas (as many as the settings now say) and retires the old ones, a few
    at a time (``serve.run`` gives every deployment a new version)."""
    settings = settings or load_server_settings(str(root), {})
    application, options = build_application(
        root, settings=settings, num_cpus=num_cpus, ingress_replicas=ingress_replicas
    )
    if not ray.is_initialized():
        ray.init(address=address, logging_level=logging.WARNING)
    serve.start(http_options={"host": settings.host, "port": settings.http_port})
    handle = serve.run(application, name=app_name, route_prefix="/")
    return Deployed(app_name, f"http://{settings.host}:{settings.http_port}", handle, options)


def replicas(app_name: str = APP_NAME) -> dict[str, dict[str, int]]:
    """Replica states per deployment of the application, from ``serve.status()``
    (``{"iris": {"RUNNING": 2}, …}``)."""
    application = serve.status().applications.get(app_name)
    if application is None:
        return {}
    return {
        name: {str(getattr(state, "value", state)): count for state, count in status.replica_states.items()}
        for name, status in application.deployments.items()
    }


def serve_until_stopped(deployed: Deployed, models: dict[str, dict[str, Any]]) -> None:
    """Block until SIGINT or SIGTERM, then delete the application."""
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    for name, option in models.items():
        log.info("Model %r on Ray Serve: %s", name, option)
    print(f"servekit on Ray Serve: application {deployed.app_name!r} with {len(models)} models, "
          f"V2 REST on {deployed.url}", flush=True)
    stop.wait()
    log.info("Deleting application %r from Ray Serve", deployed.app_name)
    serve.delete(deployed.app_name)


__all__ = [
    "APP_NAME",
    "BUILDER_ARGS",
    "INGRESS",
    "Deployed",
    "ServekitIngress",
    "ServekitModel",
    "app",
    "build_application",
    "deploy",
    "models_of",
    "replicas",
    "serve_until_stopped",
]
