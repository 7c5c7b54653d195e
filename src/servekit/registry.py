"""The registry: the only state. Per model name, its versions with their states,
labels and default version. Discovery produces a desired state; ``apply`` moves
the actual state to it, loading the new before unloading the old.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import re
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

from servekit.batching import AdaptiveBatcher, ModelStats
from servekit.config import ModelSettings, ServerSettings
from servekit.errors import ModelNotFound, ModelNotReady, ServekitError
from servekit.invoker import Invoker
from servekit.observability import progress
from servekit.repository.discovery import public_reason
from servekit.runtimes import create_runtime
from servekit.runtimes.base import Runtime
from servekit.tensors import InferenceRequest, InferenceResponse, ModelMetadata
from servekit.traffic.routing import NONE, Routing, Shadow

log = logging.getLogger("servekit.registry")


class ModelState(enum.Enum):
    LOADING = "LOADING"
    AVAILABLE = "READY"
    UNLOADING = "UNLOADING"
    UNAVAILABLE = "UNAVAILABLE"


@dataclass(eq=False)
class ModelVersion:
    settings: ModelSettings
    state: ModelState = ModelState.LOADING
    reason: str = ""
    runtime: Runtime | None = None
    batcher: AdaptiveBatcher | None = None
    load_seconds: float = 0.0
    # whether its failing to load makes the server not ready (not for a model loaded on a request)
    required: bool = True
    _metadata: ModelMetadata | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def version(self) -> str:
        return self.settings.parameters.version or ""

    @property
    def ready(self) -> bool:
        return self.state is ModelState.AVAILABLE

    @property
    def stats(self) -> ModelStats:
        """The statistics of its batcher (empty counters when not loaded)."""
        return self.batcher.stats if self.batcher is not None else ModelStats()

    @property
    def busy(self) -> bool:
        """Whether a request is queued or running on it (such a version is not unloaded to make room)."""
        return self.batcher is not None and self.batcher.busy()

    async def idle(self) -> None:
        """Wait until no request is queued or running on it."""
        if self.batcher is not None:
            await self.batcher.idle()

    def metadata(self) -> ModelMetadata:
        """The runtime's metadata, computed once per loaded version."""
        if self._metadata is None:
            if self.runtime is None:
                raise ModelNotReady(f"{described(self)} is {self.state.value}")
            self._metadata = self.runtime.metadata()
        return self._metadata


@dataclass
class ModelEntry:
    name: str
    versions: dict[str, ModelVersion] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    default_version: str | None = None
    # canary and shadow (servekit.traffic): the whole routing, and the split alone when it
    # sends a share anywhere (resolve's only extra check); what the model's files last
    # declared (a live change through the API lasts until the files declare something else)
    routing: Routing = NONE
    split: Routing | None = None
    declared: Routing | None = None
    # newest()'s answer, kept until the registry changes this entry (touch())
    _newest: ModelVersion | None = field(default=None, repr=False)

    def touch(self) -> None:
        """Forget the cached answer of :meth:`newest` (versions, states or default changed)."""
        self._newest = None

    def newest(self) -> ModelVersion | None:
        """The default version if it is ready, else the highest ready one."""
        cached = self._newest
        if cached is not None and cached.ready:
            return cached
        ready = [v for v in self.versions.values() if v.ready]
        if not ready:
            return None
        chosen = None
        if self.default_version is not None:
            for v in ready:
                if v.version == self.default_version:
                    chosen = v
        if chosen is None:
            chosen = max(ready, key=lambda v: version_sort_key(v.version))
        self._newest = chosen
        return chosen


def version_sort_key(version: str) -> tuple[Any, ...]:
    """Integers in numeric order, others naturally ("v2" < "v10")."""
    return tuple(
        (0, int(part)) if part.isdigit() else (1, part)
        for part in re.split(r"(\d+)", version)
        if part
    )


Listener = Callable[[str, ModelVersion], None]


class Registry:
    """Every served model version and its state. Read through the query
    methods (their results are views to read, never to change); change only
    through the async methods, which take the registry's lock."""

    def __init__(self, settings: ServerSettings, executor: ThreadPoolExecutor | None = None):
        self.settings = settings
        self.executor = executor or _default_executor(settings)
        self._models: dict[str, ModelEntry] = {}
        self._lock = asyncio.Lock()
        self.listeners: list[Listener] = []
        # model name -> its shadow, for the models that have one (the data plane's check)
        self.shadows: dict[str, Shadow] = {}

    # -- queries ----------------------------------------------------------
    def names(self) -> list[str]:
        """Names of the models with at least one version, sorted."""
        return sorted(n for n, e in self._models.items() if e.versions)

    def _entry(self, name: str) -> ModelEntry:
        entry = self._models.get(name)
        if entry is None or not entry.versions:
            known = ", ".join(self.names()) or "none"
            raise ModelNotFound(f"model {name!r} not found (models served: {known})")
        return entry

    def has(self, name: str, version: str | None = None) -> bool:
        entry = self._models.get(name)
        if entry is None or not entry.versions:
            return False
        return version is None or version in entry.versions

    def version_names(self, name: str) -> list[str]:
        """The versions of ``name`` in version order (raises when not served)."""
        return sorted(self._entry(name).versions, key=version_sort_key)

    def labels(self, name: str) -> dict[str, str]:
        entry = self._models.get(name)
        return dict(entry.labels) if entry else {}

    def default_version(self, name: str) -> str | None:
        entry = self._models.get(name)
        return entry.default_version if entry else None

    def routing(self, name: str) -> Routing:
        """The traffic split and shadow of ``name`` (raises when not served)."""
        return self._entry(name).routing

    def declared_routing(self, name: str) -> Routing | None:
        """What the model's settings files last declared (None: not read yet)."""
        entry = self._models.get(name)
        return entry.declared if entry else None

    def resolve(
        self, name: str, version: str | None = None, label: str | None = None, *, routed: bool = False
    ) -> ModelVersion:
        """The ready version asked for: explicit, by label, or the default/newest;
        ``routed`` (the data plane's calls): a call naming neither may go to
        another version by the model's traffic split."""
        entry = self._entry(name)
        version = _by_label(entry, label, version)
        if version is None or version == "":
            if routed and entry.split is not None:
                chosen = entry.split.pick(entry)
                if chosen is not None:
                    return chosen
            model = entry.newest()
            if model is None:
                raise ModelNotReady(_not_ready_message(entry))
            return model
        model = entry.versions.get(version)
        if model is None:
            known = ", ".join(v for v in sorted(entry.versions, key=version_sort_key) if v)
            raise ModelNotFound(
                f"model {name!r} has no version {version!r} "
                + (f"(versions: {known})" if known else "(it has no numbered versions; leave the version out)")
            )
        if not model.ready:
            raise ModelNotReady(
                f"{described(model)} is {model.state.value}"
                + (f": {model.reason}" if model.reason else "")
            )
        return model

    def select(
        self, name: str, version: str | None = None, label: str | None = None
    ) -> list[ModelVersion]:
        """The versions a status request names, in any state: the one asked for
        by version or label, or every version of the model, newest first."""
        entry = self._entry(name)
        version = _by_label(entry, label, version)
        if version:
            model = entry.versions.get(version)
            if model is None:
                raise ModelNotFound(f"model {name!r} has no version {version}")
            return [model]
        return sorted(entry.versions.values(), key=lambda m: version_sort_key(m.version), reverse=True)

    def current(self, name: str) -> ModelVersion:
        """The version a call without a version means: the default or newest
        ready one, else any (for describing a model that is not ready)."""
        entry = self._entry(name)
        return entry.newest() or next(iter(entry.versions.values()))

    def find(self, name: str, version: str | None = None) -> ModelVersion | None:
        entry = self._models.get(name)
        if entry is None:
            return None
        if version:
            return entry.versions.get(version)
        return entry.newest()

    def all_versions(self) -> list[ModelVersion]:
        return [v for e in self._models.values() for v in e.versions.values()]

    def ready(self) -> bool:
        return all(v.ready or not v.required for v in self.all_versions())

    def not_ready_reason(self) -> str | None:
        """Why the server is not ready (the models still loading or failed), or None."""
        waiting = [
            f"{v.name}:{v.version or '-'} {v.state.value}" for v in self.all_versions()
            if not v.ready and v.required
        ]
        return "models not ready: " + ", ".join(waiting) if waiting else None

    # -- inference ----------------------------------------------------------
    async def submit(self, model: ModelVersion, request: InferenceRequest) -> InferenceResponse:
        """Run a request on an already resolved version (the data plane's last step)."""
        batcher = model.batcher
        if batcher is None:
            raise ModelNotReady(f"{described(model)} is {model.state.value}")
        return await batcher.submit(request)

    # -- state changes ------------------------------------------------------
    # A change, once started, runs to its end even if the call that asked for it
    # is cancelled (its client went away): a half-made change would leave a
    # version LOADING for ever. Each public change is shielded for that.
    async def load(self, settings: ModelSettings) -> ModelVersion:
        """Load one version; replaces a loaded one only once the new is ready."""
        return await asyncio.shield(self._locked_load(settings))

    async def _locked_load(self, settings: ModelSettings) -> ModelVersion:
        async with self._lock:
            return await self._load(settings)

    async def unload(self, name: str, version: str | None = None) -> list[ModelVersion]:
        return await asyncio.shield(self._locked_unload(name, version))

    async def _locked_unload(self, name: str, version: str | None) -> list[ModelVersion]:
        async with self._lock:
            entry = self._entry(name)
            if version and version not in entry.versions:
                raise ModelNotFound(f"model {name!r} has no version {version!r}")
            targets = [entry.versions[version]] if version else list(entry.versions.values())
            for model in targets:
                await self._unload(model)
            return targets

    async def apply(
        self, desired: Iterable[ModelSettings], *, retry_failed: bool = True, show_progress: bool = False
    ) -> None:
        """Move to the desired set of versions: load new/changed, then unload the rest.

        ``retry_failed=False`` (used by pollers) leaves a version that failed to
        load alone until its settings change, instead of retrying it every pass.
        ``show_progress``: a bar of the loads on stderr when it is a terminal
        (loading at start, in the process that owns the terminal).
        """
        await asyncio.shield(self._locked_apply(list(desired), retry_failed, show_progress))

    async def _locked_apply(self, desired: list[ModelSettings], retry_failed: bool, show_progress: bool) -> None:
        async with self._lock:
            wanted = {(s.name, s.parameters.version or ""): s for s in desired}
            loads = []
            for (name, version), settings in wanted.items():
                current = self.find(name, version) if version else self._unversioned(name)
                retry = retry_failed and current is not None and not current.ready
                if current is None or not current.settings.same_model(settings) or retry:
                    loads.append(settings)
            shown = show_progress and bool(loads)
            bar = progress.bar("Loading models", len(loads), unit="models") if shown else nullcontext(progress.nothing)
            with bar as advance:

                async def load_in_turn(settings_list: list[ModelSettings]) -> None:
                    for settings in settings_list:
                        await self._load(settings)
                        advance(1)

                # a model in its own environment may first build it (minutes): it loads
                # alongside the others, which load in turn as before
                own = [s for s in loads if s.parameters.environment not in (None, False, "")]
                rest = [s for s in loads if s.parameters.environment in (None, False, "")]
                await asyncio.gather(load_in_turn(rest), *(load_in_turn([s]) for s in own))
            for model in self.all_versions():
                if (model.name, model.version) not in wanted:
                    await self._unload(model)

    async def set_labels(self, name: str, labels: dict[str, str]) -> None:
        """Replace the version labels of ``name`` (label -> version); no-op if not served."""
        async with self._lock:
            entry = self._models.get(name)
            if entry is not None:
                entry.labels = dict(labels)

    async def set_routing(self, name: str, routing: Routing, declared: Routing | None = None) -> None:
        """Make ``routing`` the traffic split and shadow of ``name`` (no-op if
        not served); ``declared``: what its files declare now, remembered."""
        async with self._lock:
            entry = self._models.get(name)
            if entry is None:
                return
            entry.routing = routing
            entry.split = routing if routing.steps else None
            if declared is not None:
                entry.declared = declared
            if routing.shadow is not None:
                self.shadows[name] = routing.shadow
            else:
                self.shadows.pop(name, None)

    async def set_default(self, name: str, version: str | None) -> None:
        """Make ``version`` the one calls without a version go to (None: the newest);
        a version this registry does not have leaves the default as it is."""
        async with self._lock:
            entry = self._models.get(name)
            if entry is not None and (version is None or version in entry.versions):
                entry.default_version = version
                entry.touch()

    def _unversioned(self, name: str) -> ModelVersion | None:
        entry = self._models.get(name)
        return entry.versions.get("") if entry else None

    async def _load(self, settings: ModelSettings) -> ModelVersion:
        entry = self._models.setdefault(settings.name, ModelEntry(settings.name))
        model = ModelVersion(settings=settings)
        previous = entry.versions.get(model.version)
        if previous is None or not previous.ready:
            entry.versions[model.version] = model
        self._notify("loading", model)
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        try:
            # creating a runtime imports its framework: off the loop, like loading it
            runtime = await loop.run_in_executor(self.executor, create_runtime, settings)
            await loop.run_in_executor(self.executor, runtime.load)
        except Exception as exc:
            message = exc.message if isinstance(exc, ServekitError) else f"{type(exc).__name__}: {exc}"
            model.state = ModelState.UNAVAILABLE
            entry.touch()
            # what clients see: one line, no traceback, no path outside the model's folder
            model.reason = public_reason(message, [settings.source_dir, self.settings.model_repository_root])
            if previous is not None and previous.ready:
                log.error("Could not reload %s (keeping the loaded one): %s", described(model), message)
            else:
                entry.versions[model.version] = model
                log.error("Could not load model %r: %s", settings.name, message)
            self._notify("failed", model)
            return model
        model.runtime = runtime
        model.batcher = self._batcher(settings, runtime)
        model.load_seconds = time.perf_counter() - started
        model.state = ModelState.AVAILABLE
        entry.versions[model.version] = model
        entry.touch()
        log.info("Loaded %s in %.2f s", described(model), model.load_seconds)
        self._notify("loaded", model)
        if previous is not None and previous is not model and previous.runtime is not None:
            await self._release(previous)
        return model

    def after_fork(self) -> None:
        """Make a registry loaded in a parent process usable in a forked child."""
        self.executor = _default_executor(self.settings)
        self._lock = asyncio.Lock()
        for model in self.all_versions():
            if model.batcher is not None and model.runtime is not None:
                model.batcher = self._batcher(model.settings, model.runtime)

    def _batcher(self, settings: ModelSettings, runtime: Runtime) -> AdaptiveBatcher:
        invoker = Invoker(runtime, self.executor, self.settings.inline_predict_ms / 1000)
        return AdaptiveBatcher(
            invoker,
            batchable=runtime.batch_axis == 0 and settings.adaptive_batching,
            max_batch_size=settings.max_batch_size,
            max_batch_time=settings.max_batch_time,
            max_queue_size=settings.max_queue_size or self.settings.max_queue_size,
            max_queue_time=(
                settings.max_queue_time if settings.max_queue_time is not None else self.settings.max_queue_time
            ),
            name=settings.name,
            concurrent=runtime.concurrent,
            vectors=runtime.batch_vectors,
            inline=invoker,
        )

    async def _unload(self, model: ModelVersion) -> None:
        entry = self._models.get(model.name)
        if entry is not None and entry.versions.get(model.version) is model:
            del entry.versions[model.version]
            entry.touch()
            if not entry.versions:
                del self._models[model.name]
                self.shadows.pop(model.name, None)
            elif entry.default_version == model.version:
                entry.default_version = None
        model.state = ModelState.UNLOADING
        if entry is not None:
            entry.touch()
        await self._release(model)
        log.info("Unloaded %s", described(model))
        self._notify("unloaded", model)

    async def _release(self, model: ModelVersion) -> None:
        if model.batcher is not None:
            await model.batcher.idle()
        runtime = model.runtime
        model.runtime = None
        if runtime is not None:
            loop = asyncio.get_running_loop()
            try:
                await loop.run_in_executor(self.executor, runtime.unload)
            except Exception:
                log.exception("Error while unloading model %r", model.name)

    def _notify(self, event: str, model: ModelVersion) -> None:
        for listener in self.listeners:
            listener(event, model)


def described(model: ModelVersion) -> str:
    """``model 'iris' version 2``, or ``model 'iris'`` for one without versions."""
    return f"model {model.name!r}" + (f" version {model.version}" if model.version else "")


def _by_label(entry: ModelEntry, label: str | None, version: str | None) -> str | None:
    if label is None:
        return version
    if label not in entry.labels:
        raise ModelNotFound(f"model {entry.name!r} has no label {label!r}")
    return entry.labels[label]


def _default_executor(settings: ServerSettings) -> ThreadPoolExecutor:
    """Threads for predictions and loads: one per BLAS/OpenMP thread of this
    worker, at least 4 (a load must not wait behind a long prediction)."""
    threads = settings.threads_per_worker or max(1, (os.cpu_count() or 1) // _workers(settings))
    return ThreadPoolExecutor(max_workers=max(4, threads * 2), thread_name_prefix="servekit")


def _workers(settings: ServerSettings) -> int:
    return settings.parallel_workers if settings.parallel_workers and settings.parallel_workers > 0 else (
        os.cpu_count() or 1
    )


def _not_ready_message(entry: ModelEntry) -> str:
    states = ", ".join(
        f"{v.version or '-'}: {v.state.value}" + (f" ({v.reason})" if v.reason else "")
        for v in entry.versions.values()
    )
    return f"model {entry.name!r} has no ready version ({states})"
