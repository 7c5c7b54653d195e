"""Which models a worker keeps loaded: lazy loading and a budget.

With ``load_models_at_startup: false``, or a budget (``max_loaded_models``,
``max_loaded_bytes``), a model of the repository is loaded on its first
inference request::

    DataPlane.serve ── Residency.touch(target) ── loaded: the version, marked most recently used
                                 │ not loaded, in the repository
                                 ▼
                       Residency.load(target): one load per model however many
                       requests wait on it; first make room under the budget by
                       unloading the least recently used idle models, then
                       registry.load every version of it

The unit is a model (all its versions load and unload together). A model with
a request queued or running is never unloaded; when every loaded model is
busy, a load waits for one to become idle (at most ``max_queue_time``) and
then answers 503. An unloaded model stays in the repository index
(``UNAVAILABLE``, reason ``unloaded``: the V2 protocol's state names) and
loads again on its next request. A load that fails leaves the model
``UNAVAILABLE`` with its reason, answered to every request until a repository
load call (or a changed settings file) tries again. A model unloaded through
the repository API stays unloaded until it is loaded through it again.

Each worker process keeps its own budget and its own recently-used order
(a model asked of two workers is loaded in both): the server holds up to
``workers * max_loaded_models`` models.

The byte budget is an estimate: the sizes of the files a model loads from
(its ``uri``, else its settings folder), which for pickled scikit-learn,
XGBoost or LightGBM models is close to what they take in memory. Measuring
each load's resident-memory growth instead would read allocator noise and
other requests' buffers as the model's.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge

from servekit.config import ModelSettings, ServerSettings
from servekit.errors import ModelLoadError, ModelNotFound, ModelNotReady, Overloaded, ServekitError
from servekit.registry import ModelVersion, Registry
from servekit.repository.sources import ModelSources

if TYPE_CHECKING:
    from servekit.dataplane import Target
    from servekit.server.lifecycle import ServerContext

log = logging.getLogger("servekit.residency")

Resolve = Callable[["Target"], ModelVersion]
Relabel = Callable[[str, list[ModelSettings]], Awaitable[None]]

# a request whose model was unloaded again before it could run (a budget
# smaller than the models asked for at once) tries this many loads, then 503
MAX_TRIES = 3
# files summed for one model's size estimate (a folder of more is cut short)
MAX_FILES = 1000
# seconds a load waits for a busy model to become idle when max_queue_time is 0 (no limit)
DEFAULT_BUSY_WAIT = 30.0


def lazy(settings: ServerSettings) -> bool:
    """Whether models load on their first request: ``load_models_at_startup``
    is off, or a budget is set."""
    return (
        not settings.load_models_at_startup
        or settings.max_loaded_models is not None
        or settings.max_loaded_bytes is not None
    )


def loads_at_startup(settings: ServerSettings) -> bool:
    return not lazy(settings)


class Residency:
    """The loaded models of one worker, least recently used first, and the
    loads and unloads that keep them within the budget."""

    def __init__(
        self,
        registry: Registry,
        sources: ModelSources,
        settings: ServerSettings,
        resolve: Resolve,
        *,
        relabel: Relabel | None = None,
        metrics: CollectorRegistry | None = None,
    ) -> None:
        self.registry = registry
        self.sources = sources
        self.max_models = settings.max_loaded_models
        self.max_bytes = settings.max_loaded_bytes
        self.busy_wait = settings.max_queue_time or DEFAULT_BUSY_WAIT
        self._resolve = resolve
        self._relabel = relabel
        # model name -> None, least recently used first: every loaded model
        self._recent: OrderedDict[str, None] = OrderedDict()
        # (name, version) -> estimated bytes of each loaded version
        self._bytes: dict[tuple[str, str], int] = {}
        self.loaded_bytes = 0
        self._loading: dict[str, asyncio.Task[None]] = {}
        self._lock = asyncio.Lock()  # one make-room-then-load at a time
        self._catalog: dict[str, list[ModelSettings]] | None = None
        self._own: str | None = None  # the model this residency is loading (not trimmed after)
        self._tasks: set[asyncio.Task[None]] = set()
        self.loads = 0
        self.load_failures = 0
        self.evictions = 0
        self._metrics = _ResidencyMetrics(metrics) if metrics is not None else None
        for model in registry.all_versions():  # what was loaded before (a forked worker's preload)
            if model.ready:
                self._on_change("loaded", model)
        registry.listeners.append(self._on_change)

    # -- the data plane's two calls ---------------------------------------------------
    def touch(self, target: Target) -> ModelVersion | None:
        """The ready version ``target`` names, marked most recently used; None
        when its model is in the repository but not loaded (then :meth:`load`)."""
        try:
            model = self._resolve(target)
        except (ModelNotFound, ModelNotReady):
            name = target.name
            if name in self._loading:
                return None  # being loaded: wait for it
            if self.registry.has(name) or not self.loadable(name):
                raise  # no such model, version or label, or its load failed
            return None
        try:  # noqa: SIM105 (contextlib.suppress costs ~0.3 us a call here)
            self._recent.move_to_end(model.name)
        except KeyError:
            pass
        return model

    async def load(self, target: Target) -> ModelVersion:
        """Load the model ``target`` names (one load, however many requests
        ask at once) and answer its ready version."""
        name = target.name
        for _ in range(MAX_TRIES):
            task = self._loading.get(name)
            if task is None:
                task = asyncio.get_running_loop().create_task(self._load(name))
                self._loading[name] = task
                task.add_done_callback(self._loaded)
            # the load goes on for the other requests if this one's client leaves
            await asyncio.shield(task)
            model = self.touch(target)
            if model is not None:
                return model
        raise Overloaded(
            f"model {name!r} was unloaded again before its request could run: more models are asked for at "
            f"once than the budget holds ({self._budget()}); retry, or raise the budget"
        )

    def _loaded(self, task: asyncio.Task[None]) -> None:
        for name, running in list(self._loading.items()):
            if running is task:
                del self._loading[name]

    # -- the catalog: what can be loaded --------------------------------------------
    def loadable(self, name: str) -> bool:
        """Whether ``name`` is in the repository and not unloaded through the API."""
        return name in self.catalog() and name not in self.sources.unloaded

    def catalog(self) -> dict[str, list[ModelSettings]]:
        """Every version of every model the sources offer, by name (read once;
        :meth:`refresh` after the sources change)."""
        if self._catalog is None:
            catalog: dict[str, list[ModelSettings]] = {}
            for settings in self.sources.desired():
                catalog.setdefault(settings.name, []).append(settings)
            self._catalog = catalog
        return self._catalog

    def refresh(self) -> None:
        """Read the sources again on the next lookup (a sync or load change)."""
        self._catalog = None

    def resident(self, desired: list[ModelSettings]) -> list[ModelSettings]:
        """The part of ``desired`` whose models are loaded now (what a sync
        change reloads: the others load on their next request)."""
        return [s for s in desired if self.registry.has(s.name)]

    # -- loading, within the budget ------------------------------------------------------
    async def _load(self, name: str) -> None:
        async with self._lock:
            if self.registry.has(name) or not self.loadable(name):
                return  # loaded (or failed) while this waited, or unloaded through the API
            found = self.catalog()[name]
            need = sum(estimate_bytes(s) for s in found)
            if self.max_bytes is not None and need > self.max_bytes:
                self.load_failures += 1
                if self._metrics is not None:
                    self._metrics.loads.labels("failed").inc()
                raise ModelLoadError(
                    f"model {name!r} needs about {_mb(need)} (the size of its files), more than the whole "
                    f"max_loaded_bytes budget ({_mb(self.max_bytes)}): raise --max-loaded-memory"
                )
            await self._make_room(1, need, keep=name)
            self._own = name
            try:
                loaded = [await self.registry.load(s) for s in found]
            finally:
                self._own = None
            for model in loaded:  # one model that fails on a request does not make the server unready
                model.required = False
            ok = any(m.ready for m in loaded)
            if ok:
                self.loads += 1
            else:
                self.load_failures += 1
            if self._metrics is not None:
                self._metrics.loads.labels("ok" if ok else "failed").inc()
            if ok and self._relabel is not None:
                await self._relabel(name, found)

    async def _make_room(self, models: int, need: int, keep: str | None) -> None:
        """Unload least recently used idle models until ``models`` more models
        of ``need`` more bytes fit; wait for a busy one when none is idle."""
        deadline = time.monotonic() + self.busy_wait
        while self._over(models, need):
            victim = self._victim(keep, idle=True)
            if victim is not None:
                await self._evict(victim)
                continue
            busy = self._victim(keep, idle=False)
            if busy is None:
                log.warning("Over the model budget (%s) with no model that can be unloaded", self._budget())
                return
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0:
                    raise TimeoutError
                await asyncio.wait_for(self._idle(busy), remaining)
            except TimeoutError:
                raise Overloaded(
                    f"every loaded model is busy and the budget ({self._budget()}) is full; retry later, "
                    "or raise --max-loaded-models / --max-loaded-memory"
                ) from None

    def _over(self, models: int, need: int) -> bool:
        if self.max_models is not None and len(self._recent) + models > self.max_models:
            return True
        return self.max_bytes is not None and self.loaded_bytes + need > self.max_bytes

    def _victim(self, keep: str | None, *, idle: bool) -> str | None:
        """The least recently used model that may be unloaded (idle ones only,
        or busy ones only): loaded from the repository, so it can load again."""
        for name in self._recent:
            if name == keep or name in self._loading or not self.loadable(name):
                continue
            if self._busy(name) != idle:
                return name
        return None

    def _busy(self, name: str) -> bool:
        versions = self.registry.select(name) if self.registry.has(name) else []
        return any(m.busy for m in versions)

    async def _idle(self, name: str) -> None:
        while self.registry.has(name) and self._busy(name):
            for m in self.registry.select(name):
                await m.idle()

    async def _evict(self, name: str) -> None:
        log.debug("Unloading model %r, the least recently used (budget %s)", name, self._budget())
        await self.registry.unload(name)
        self._recent.pop(name, None)  # also when the registry had it no more
        self.evictions += 1
        if self._metrics is not None:
            self._metrics.evictions.inc()

    async def trim(self) -> None:
        """Unload least recently used idle models until within the budget
        (after a load this residency did not make: a repository load call)."""
        async with self._lock:
            deadline = time.monotonic() + self.busy_wait
            while self._over(0, 0) and time.monotonic() < deadline:
                victim = self._victim(None, idle=True)
                if victim is None:
                    return
                await self._evict(victim)

    # -- what the registry tells ---------------------------------------------------------
    def _on_change(self, event: str, model: ModelVersion) -> None:
        key = (model.name, model.version)
        if event == "loaded":
            size = estimate_bytes(model.settings)  # a stat or two, once per load
            self.loaded_bytes += size - self._bytes.get(key, 0)
            self._bytes[key] = size
            self._recent[model.name] = None
            self._recent.move_to_end(model.name)
            if self._own != model.name and self._over(0, 0):
                task = asyncio.get_running_loop().create_task(self.trim())
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        elif event == "unloaded":
            self.loaded_bytes -= self._bytes.pop(key, 0)
            if not self.registry.has(model.name):
                self._recent.pop(model.name, None)
        else:
            return
        if self._metrics is not None:
            self._metrics.loaded.set(len(self._recent))
            self._metrics.loaded_bytes.set(self.loaded_bytes)

    # -- reporting ---------------------------------------------------------------------
    def report(self) -> dict[str, int | None]:
        """This worker's numbers (the dashboard sums them over the workers)."""
        return {
            "loaded": len(self._recent),
            "loaded_bytes": self.loaded_bytes,
            "loads": self.loads,
            "load_failures": self.load_failures,
            "evictions": self.evictions,
            "max_loaded_models": self.max_models,
            "max_loaded_bytes": self.max_bytes,
        }

    def recently_used(self) -> list[str]:
        """The loaded models, least recently used first."""
        return list(self._recent)

    def _budget(self) -> str:
        parts = []
        if self.max_models is not None:
            parts.append(f"{self.max_models} models")
        if self.max_bytes is not None:
            parts.append(_mb(self.max_bytes))
        return " and ".join(parts) or "none"


class _ResidencyMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.loads = Counter(
            "servekit_model_loads", "Models loaded on a request (lazy loading), by result", ("result",),
            registry=registry,
        )
        self.evictions = Counter(
            "servekit_model_evictions", "Models unloaded to stay within the budget (least recently used)",
            registry=registry,
        )
        # summed over the live workers in multiprocess mode (each keeps its own budget)
        self.loaded = Gauge(
            "servekit_loaded_models", "Models loaded (summed over the workers)", registry=registry,
            multiprocess_mode="livesum",
        )
        self.loaded_bytes = Gauge(
            "servekit_loaded_model_bytes", "Estimated bytes of the loaded models (their files' sizes)",
            registry=registry, multiprocess_mode="livesum",
        )


def estimate_bytes(settings: ModelSettings) -> int:
    """The size of the files a model loads from: its ``uri`` (a file, or a
    folder's files), else its settings folder's (at most :data:`MAX_FILES` files)."""
    base = Path(settings.source_dir) if settings.source_dir else None
    uri = settings.parameters.uri
    path = Path(uri) if uri else base
    if path is not None and not path.is_absolute() and base is not None:
        path = base / path
    if path is None:
        return 0
    try:
        if path.is_file():
            return path.stat().st_size
        total, count = 0, 0
        for folder, _, files in os.walk(path):
            for file in files:
                count += 1
                if count > MAX_FILES:
                    return total
                try:
                    total += os.stat(os.path.join(folder, file)).st_size
                except OSError:
                    continue
        return total
    except OSError:
        return 0


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def attach(ctx: ServerContext) -> Residency | None:
    """Give the worker's data plane a residency when models load lazily
    (nothing otherwise: the data plane's path is then unchanged)."""
    if not lazy(ctx.settings):
        return None
    from servekit.repository.reconcile import reconciler

    async def relabel(name: str, found: list[ModelSettings]) -> None:
        await reconciler(ctx).relabel(ctx.sources.labels(found), only={name})

    residency = Residency(
        ctx.registry, ctx.sources, ctx.settings, ctx.dataplane.resolve, relabel=relabel,
        metrics=ctx.metrics.registry,
    )
    try:
        residency.catalog()  # read now, not on the first request
    except ServekitError as exc:
        log.error("Could not read the model repository: %s", exc.message)
    ctx.dataplane.residency = residency
    ctx.reports.reporters["residency"] = residency.report
    return residency


__all__ = ["Residency", "attach", "estimate_bytes", "lazy", "loads_at_startup"]
