"""Moving the registry to what the sources want, live.

One pass: load every new or changed version while the old ones keep serving,
point the labels at the new versions, then unload what is no longer wanted -
so no request fails during a switch. Worker 0 re-reads the sources every
``poll_interval`` seconds and, when what they want changed, makes one
``repository.sync`` change that every worker applies; a source that fails
keeps the models served. The repository's load and unload calls are changes
too (:data:`LOAD`, :data:`UNLOAD`), applied here in every worker.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from servekit.config import ModelSettings
from servekit.errors import InvalidInput, ModelLoadError, ModelNotFound, ServekitError
from servekit.names import check_name
from servekit.registry import Registry
from servekit.repository.sources import ModelSources
from servekit.server.lifecycle import Change, ServerContext, Skin, Stop
from servekit.traffic.management import apply_declared

log = logging.getLogger("servekit.repository")


class Reconciler:
    def __init__(
        self, registry: Registry, sources: ModelSources, *, allow_unavailable_labels: bool = False
    ) -> None:
        self.registry = registry
        self.sources = sources
        self.allow_unavailable_labels = allow_unavailable_labels
        self._reported: set[str] = set()

    async def run(
        self, desired: list[ModelSettings] | None = None, labels: dict[str, dict[str, str]] | None = None
    ) -> None:
        """One pass to ``desired`` (default: what the sources want now): load
        new, relabel, unload old."""
        if desired is None:
            desired = self.sources.wanted()
        if labels is None:
            labels = self.sources.labels(desired)
        names = {s.name for s in desired}
        serving = [m.settings for m in self.registry.all_versions() if m.ready and m.name in names]
        # desired comes last so a changed version replaces the kept one
        await self.registry.apply([*serving, *desired], retry_failed=False)
        await self.relabel(labels)
        await self.registry.apply(desired, retry_failed=False)
        await apply_declared(self.registry, desired)  # traffic and shadow the files declare

    async def relabel(self, labels: dict[str, dict[str, str]], only: set[str] | None = None) -> None:
        """Set each model's labels (of the models in ``only``, if given); a label
        may only name a ready version unless allowed."""
        registry = self.registry
        for name in registry.names():
            if only is not None and name not in only:
                continue
            current = registry.labels(name)
            result: dict[str, str] = {}
            for label, version in labels.get(name, {}).items():
                model = registry.find(name, version)
                if self.allow_unavailable_labels or (model is not None and model.ready):
                    result[label] = version
                    continue
                previous = current.get(label)
                self._report(
                    f"label {label!r} of model {name!r} names version {version}, which is not "
                    "available; "
                    + (f"it stays on version {previous}" if previous else "it is not set")
                    + " (start with --allow_version_labels_for_unavailable_models to allow this)"
                )
                if previous is not None:
                    result[label] = previous
            if result != current:
                log.info("Model %r labels: %s", name, result or "none")
                await registry.set_labels(name, result)

    def _report(self, message: str) -> None:
        if message not in self._reported:
            self._reported.add(message)
            log.error("%s", message)


def desired_state(sources: ModelSources) -> dict[str, Any]:
    """What the sources want now (versions with their settings, labels), as the
    arguments of a :data:`SYNC` change: every worker applies exactly this, so
    a version folder that worker 0 saw settle is loaded everywhere."""
    desired = sources.read()
    return {
        "desired": [s.model_dump(mode="json") for s in desired],
        "labels": sources.read_labels(desired),
    }


async def poll(ctx: ServerContext, interval: float) -> None:
    """Re-read the sources every ``interval`` seconds; when what they want
    changed (a version folder appeared or went, a config file changed), make
    one change that every worker applies. Only worker 0 polls."""
    # None: the first pass always sends what it reads, so a worker 0 that
    # replaces a dead one tells the others of a change the dead one never sent
    last: dict[str, Any] | None = None
    while True:
        await asyncio.sleep(interval)
        try:
            now = desired_state(ctx.sources)
            if now != last:
                last = now
                await ctx.change(Change(SYNC, now), wait=False)
        except ServekitError as exc:
            log.error("Model sources failed; keeping the models served: %s", exc.message)
        except Exception:
            log.exception("Model sources failed; keeping the models served")


def reconciler(ctx: ServerContext) -> Reconciler:
    return Reconciler(
        ctx.registry,
        ctx.sources,
        allow_unavailable_labels=ctx.settings.allow_version_labels_for_unavailable_models,
    )


async def start(ctx: ServerContext) -> Stop | None:
    """Apply labels to what was loaded, then (worker 0) poll if a source asks to."""
    try:
        await reconciler(ctx).relabel(ctx.sources.labels(ctx.sources.wanted()))
        await apply_declared(ctx.registry, ctx.sources.wanted())
    except ServekitError as exc:
        log.error("Could not apply version labels or traffic: %s", exc.message)
    interval = ctx.sources.poll_interval()
    if interval <= 0 or ctx.index != 0:
        return None
    task = asyncio.get_running_loop().create_task(poll(ctx, interval))

    async def stop() -> None:
        task.cancel()

    return stop


# -- the changes of the model repository -----------------------------------------
LOAD = "repository.load"  # {"name"}: load every version of a model from the sources
UNLOAD = "repository.unload"  # {"name"}: unload every version, keep it unloaded
SYNC = "repository.sync"  # {"desired", "labels"}: move to what the sources want now


def _name(change: Change) -> str:
    name = change.args.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidInput(f"change {change.kind} needs a model name")
    return check_name(name)


async def apply_load(ctx: ServerContext, change: Change) -> None:
    name = _name(change)
    ctx.sources.unloaded.discard(name)
    if ctx.dataplane.residency is not None:
        ctx.dataplane.residency.refresh()  # the model may be new in the repository
    found = await ctx.sources.find(name)
    if not found:
        raise ModelNotFound(f"no model named {name!r} in the model repository")
    loaded = [await ctx.registry.load(settings) for settings in found]
    failed = [m for m in loaded if not m.ready]
    if failed:
        raise ModelLoadError(f"model {name!r} failed to load: {failed[0].reason}")
    await reconciler(ctx).relabel(ctx.sources.labels(found), only={name})
    await apply_declared(ctx.registry, found, only={name})


async def apply_unload(ctx: ServerContext, change: Change) -> None:
    name = _name(change)
    ctx.sources.unloaded.add(name)
    if ctx.registry.has(name):
        await ctx.registry.unload(name)


async def apply_sync(ctx: ServerContext, change: Change) -> None:
    rows, labels = change.args.get("desired"), change.args.get("labels")
    if not isinstance(rows, list) or not isinstance(labels, dict):
        raise InvalidInput(f"change {SYNC} needs the desired versions and labels")
    ctx.sources.pin(
        [ModelSettings.model_validate(row) for row in rows],
        {str(k): {str(a): str(b) for a, b in dict(v).items()} for k, v in labels.items()},
    )
    residency = ctx.dataplane.residency
    if residency is None:
        await reconciler(ctx).run()
    else:  # lazy loading: reload only the models loaded now; the others load on their next request
        residency.refresh()
        await reconciler(ctx).run(residency.resident(ctx.sources.wanted()))


SKIN = Skin(
    name="repository",
    start=start,
    changes={LOAD: apply_load, UNLOAD: apply_unload, SYNC: apply_sync},
)
