"""The dashboard: one page on the main HTTP port (``/`` for a browser, and
``/ui``) showing every model, its versions and their states, live traffic,
latency, errors, batching and queue time summed over every worker, recent
errors and the server's listeners.

Everything it needs ships in this package (``static/``: hand-written HTML,
CSS and JavaScript drawing its own SVG plots); the page loads nothing from
anywhere else (its Content-Security-Policy allows only this server). It reads
``GET /ui/api/state`` once a second:

- the models, from this worker's registry (names, versions, labels, default
  version, state and reason, runtime, load time), the states every worker
  reported, and the models of the repository that are not loaded;
- the numbers, :func:`servekit.server.dashboard.stats.combine` of every
  worker's report (gathered through the supervisor, see
  :mod:`servekit.server.reports`): cumulative counters, from which the page
  computes rates and windowed quantiles;
- the server: workers (and any that did not answer), listeners, skins.

Read-only unless a management token is configured (``management_token``, or
TorchServe mode's key): then the page offers load, unload and set-default,
calling the V2 repository API (``/v2/repository/models/{m}/load|unload``)
and ``POST /ui/api/models/{m}/default`` with the token the user types, sent
as ``Authorization: Bearer …`` and kept only in the page. Request data
reaches the page only as text (never as HTML).

``GET /`` answers a browser (``Accept: text/html``) with the page, and any
other client with what the next route for ``GET /`` on the port answers
(KServe V1's ``{"status": "alive"}``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from importlib import resources
from typing import Any

import orjson

from servekit import __version__
from servekit.errors import InvalidInput, ModelNotFound, RouteNotFound, ServekitError
from servekit.names import check_name, check_version
from servekit.registry import ModelVersion
from servekit.server.auth import require_token
from servekit.server.dashboard.stats import WorkerStats, bucket_bounds, combine
from servekit.server.http import Request, Response, Route, default_error, json_response, route
from servekit.server.lifecycle import MAIN, Change, Mount, ServerContext, Skin, Stop
from servekit.traffic.management import summary as traffic_summary

DEFAULT = "dashboard.default"  # the change that sets a model's default version
SOURCES_SECONDS = 10.0  # the repository is read again for the not-loaded models at most this often
MAX_BODY = 4096

ServerInfo = Callable[[ServerContext], dict[str, Any]]

CONTENT_TYPES = {
    "index.html": b"text/html; charset=utf-8",
    "app.js": b"text/javascript; charset=utf-8",
    "app.css": b"text/css; charset=utf-8",
    "favicon.svg": b"image/svg+xml",
}
PAGE_HEADERS = [
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
        b"base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
]


def static(name: str) -> bytes:
    """One of the page's files, from this package."""
    return resources.files(__package__).joinpath("static", name).read_bytes()


def wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


class Dashboard:
    """One worker's dashboard: its counters and its routes."""

    def __init__(self, ctx: ServerContext, server_info: ServerInfo) -> None:
        self.ctx = ctx
        self.server_info = server_info
        self.stats = WorkerStats(ctx.registry)
        self.files = {name: static(name) for name in CONTENT_TYPES}
        self.started = time.time()
        self._sources: tuple[float, list[tuple[str, str]]] | None = None

    # -- the page ---------------------------------------------------------------
    def file(self, name: str) -> Response:
        return Response(self.files[name], content_type=CONTENT_TYPES[name], headers=list(PAGE_HEADERS))

    async def root(self, request: Request) -> Response:
        if wants_html(request):
            return self.file("index.html")
        fallback = self._next_root_route()
        if fallback is None:
            raise RouteNotFound("no endpoint GET / for this client; the dashboard is at /ui")
        return await fallback.handler(request)

    def _next_root_route(self) -> Route | None:
        router = self.ctx.routers.get(self.ctx.settings.http_port)
        if router is None:
            return None
        for candidate in router.routes:
            if candidate.method == "GET" and candidate.handler != self.root and candidate.pattern.match("/"):
                return candidate
        return None

    # -- the state ----------------------------------------------------------------
    async def state(self, request: Request) -> Response:
        gathered = await self.ctx.reports.gather()
        combined = combine(gathered.reports)
        settings = self.ctx.settings
        workers = gathered.workers or 1
        server = {
            "name": settings.server_name,
            "version": __version__,
            "workers": workers,
            "note": gathered.note,
            "answered": sorted(int(r.get("worker", -1)) for r in gathered.reports),
            "missing": gathered.missing,
            "pids": {str(r.get("worker")): r.get("pid") for r in gathered.reports},
            "worker": self.ctx.index,
            "started": min((float(r.get("started", self.started)) for r in gathered.reports), default=self.started),
            "management": bool(settings.management_token),
            "residency": _residency(gathered.reports),
            **self.server_info(self.ctx),
        }
        body = {
            "time": time.time(),
            "server": server,
            "models": await self._model_rows(combined["states"]),
            "stats": combined["models"],
            "latency_bounds": bucket_bounds(),
            "errors": combined["errors"],
            # canary and shadow: each routed model's split, shadow and the shadow's outcomes
            "traffic": traffic_summary(self.ctx.registry, gathered.reports),
        }
        return Response(orjson.dumps(body), headers=[(b"cache-control", b"no-store")])

    async def _model_rows(self, states: dict[str, dict[str, dict[str, int]]]) -> list[dict[str, Any]]:
        registry = self.ctx.registry
        out: list[dict[str, Any]] = []
        for name in registry.names():
            versions = [_version_row(m, states.get(name, {}).get(m.version, {})) for m in registry.select(name)]
            out.append({
                "name": name,
                "default_version": registry.default_version(name),
                "serving": _serving(registry.find(name)),
                "labels": registry.labels(name),
                "versions": versions,
                "loaded": True,
            })
        served = set(registry.names())
        for name, version in await self._repository():
            if name in served:
                continue
            row = next((m for m in out if m["name"] == name), None)
            if row is None:
                row = {"name": name, "default_version": None, "serving": None, "labels": {}, "versions": [],
                       "loaded": False}
                out.append(row)
            row["versions"].append({"version": version, "state": "UNLOADED", "reason": "in the repository, not loaded",
                                    "runtime": "", "load_seconds": None, "workers": {}})
        return sorted(out, key=lambda m: m["name"])

    async def _repository(self) -> list[tuple[str, str]]:
        """(name, version) of every model the sources offer, read at most every
        :data:`SOURCES_SECONDS` (a poll must not read the repository each time)."""
        now = time.monotonic()
        if self._sources is None or now - self._sources[0] >= SOURCES_SECONDS:
            try:
                found = [(s.name, s.parameters.version or "") for s in await self.ctx.sources.find("")]
            except ServekitError:
                found = self._sources[1] if self._sources is not None else []
            self._sources = (now, found)
        return self._sources[1]

    # -- management ---------------------------------------------------------------
    async def set_default(self, request: Request) -> Response:
        settings = self.ctx.settings
        if not settings.management_token:
            raise ManagementOff(
                "the dashboard is read-only: start the server with a management token "
                "(--management-token or SERVEKIT_MANAGEMENT_TOKEN) to change what is served"
            )
        require_token(settings, request.headers.get("authorization"))
        name = check_name(request.path_params["model"])
        body = await request.body()
        if len(body) > MAX_BODY:
            raise InvalidInput(f"the body is {len(body)} bytes; send {{\"version\": \"…\"}} (at most {MAX_BODY})")
        try:
            document = orjson.loads(body or b"{}")
        except orjson.JSONDecodeError as exc:
            raise InvalidInput(
                f"the body is not JSON ({exc}); send {{\"version\": \"…\"}} or {{\"version\": null}}"
            ) from None
        if not isinstance(document, dict) or "version" not in document:
            raise InvalidInput('send {"version": "…"} (or {"version": null} for the newest ready version)')
        version = document["version"]
        if version is not None:
            version = check_version(version)
        versions = self.ctx.registry.version_names(name)  # 404 for a model not served
        if version is not None and version not in versions:
            raise ModelNotFound(f"model {name!r} has no version {version!r} (versions: {', '.join(versions)})")
        await self.ctx.change(Change(DEFAULT, {"name": name, "version": version}))
        return json_response({"name": name, "default_version": version})

    # -- the skin -------------------------------------------------------------------
    def routes(self) -> list[Route]:
        e = default_error

        def page(name: str) -> Callable[[Request], Any]:
            async def handler(request: Request) -> Response:
                return self.file(name)

            return handler

        return [
            route("GET", "/", self.root, e),
            route("GET", "/ui", page("index.html"), e),
            route("GET", "/ui/", page("index.html"), e),
            route("GET", "/ui/app.js", page("app.js"), e),
            route("GET", "/ui/app.css", page("app.css"), e),
            route("GET", "/ui/favicon.svg", page("favicon.svg"), e),
            route("GET", "/ui/api/state", self.state, e),
            route("POST", "/ui/api/models/{model}/default", self.set_default, e),
        ]


class ManagementOff(ServekitError):
    """A change asked of a read-only dashboard (403)."""

    status = 403


def _version_row(model: ModelVersion, workers: dict[str, int]) -> dict[str, Any]:
    runtime = type(model.runtime).__name__ if model.runtime is not None else model.settings.implementation or ""
    return {
        "version": model.version,
        "state": model.state.value,
        "reason": model.reason,
        "runtime": runtime,
        "load_seconds": round(model.load_seconds, 4) if model.ready else None,
        "workers": workers,
    }


def _residency(reports: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Lazy loading's numbers summed over the workers that answered (None when
    every model is loaded at start); the budgets are each worker's."""
    parts = [r["residency"] for r in reports if isinstance(r.get("residency"), dict)]
    if not parts:
        return None
    total: dict[str, Any] = {k: sum(int(p.get(k) or 0) for p in parts)
                             for k in ("loaded", "loaded_bytes", "loads", "load_failures", "evictions")}
    total["max_loaded_models"] = parts[0].get("max_loaded_models")
    total["max_loaded_bytes"] = parts[0].get("max_loaded_bytes")
    return total


def _serving(model: ModelVersion | None) -> str | None:
    return model.version if model is not None and model.ready else None


async def apply_default(ctx: ServerContext, change: Change) -> None:
    """Set a model's default version in this worker (every worker applies it)."""
    name, version = change.args.get("name"), change.args.get("version")
    if not isinstance(name, str) or not (version is None or isinstance(version, str)):
        raise InvalidInput("a default change needs a model name and a version (or null)")
    await ctx.registry.set_default(name, version)


def skin(server_info: ServerInfo) -> Skin:
    """The dashboard's skin; ``server_info`` tells the page the server's
    listeners and skins (the assembly knows them)."""
    dashboards: dict[int, Dashboard] = {}  # one per context (worker)

    def dashboard(ctx: ServerContext) -> Dashboard:
        found = dashboards.get(id(ctx))
        if found is None or found.ctx is not ctx:
            found = dashboards[id(ctx)] = Dashboard(ctx, server_info)
        return found

    def mounts(ctx: ServerContext) -> list[Mount]:
        return [Mount(MAIN, dashboard(ctx).routes(), default_error)]

    async def start(ctx: ServerContext) -> Stop | None:
        board = dashboard(ctx)
        ctx.dataplane.tally = board.stats
        ctx.reports.reporters["dashboard"] = board.stats.report
        return None

    return Skin(
        name="dashboard", enabled=lambda settings: settings.enable_http and settings.enable_dashboard, mounts=mounts, start=start,
        changes={DEFAULT: apply_default},
    )


__all__ = ["DEFAULT", "Dashboard", "skin"]
