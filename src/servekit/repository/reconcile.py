"""Moving the registry to what the sources want, live.

One pass: load every new or changed version while the old ones keep serving,
point the labels at the new versions, then unload what is no longer wanted -
so no request fails during a switch. A poller (a worker hook) repeats it every
``poll_interval`` seconds; a source that fails keeps the models served.
"""

from __future__ import annotations

import asyncio
import logging

from servekit.errors import ServekitError
from servekit.registry import Registry
from servekit.repository.sources import ModelSources

log = logging.getLogger("servekit.repository")


class Reconciler:
    def __init__(
        self, registry: Registry, sources: ModelSources, *, allow_unavailable_labels: bool = False
    ) -> None:
        self.registry = registry
        self.sources = sources
        self.allow_unavailable_labels = allow_unavailable_labels
        self._reported: set[str] = set()

    async def run(self) -> None:
        """One pass: load new, relabel, unload old."""
        desired = self.sources.wanted()
        names = {s.name for s in desired}
        serving = [m.settings for m in self.registry.all_versions() if m.ready and m.name in names]
        # desired comes last so a changed version replaces the kept one
        await self.registry.apply([*serving, *desired], retry_failed=False)
        self.relabel(self.sources.labels(desired))
        await self.registry.apply(desired, retry_failed=False)

    def relabel(self, labels: dict[str, dict[str, str]]) -> None:
        """Set each model's labels; a label may only name a ready version unless allowed."""
        for name, entry in list(self.registry.models.items()):
            result: dict[str, str] = {}
            for label, version in labels.get(name, {}).items():
                model = entry.versions.get(version)
                if self.allow_unavailable_labels or (model is not None and model.ready):
                    result[label] = version
                    continue
                previous = entry.labels.get(label)
                self._report(
                    f"label {label!r} of model {name!r} names version {version}, which is not "
                    "available; "
                    + (f"it stays on version {previous}" if previous else "it is not set")
                    + " (start with --allow_version_labels_for_unavailable_models to allow this)"
                )
                if previous is not None:
                    result[label] = previous
            if result != entry.labels:
                log.info("Model %r labels: %s", name, result or "none")
            self.registry.set_labels(name, result)

    def _report(self, message: str) -> None:
        if message not in self._reported:
            self._reported.add(message)
            log.error("%s", message)

    async def poll(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.run()
            except ServekitError as exc:
                log.error("Model sources failed; keeping the models served: %s", exc.message)
            except Exception:
                log.exception("Model sources failed; keeping the models served")


async def start_reconciler(worker: object) -> None:
    """Worker hook: apply labels to what was loaded, then poll if a source asks to."""
    from servekit.server.runner import Worker

    assert isinstance(worker, Worker) and worker.registry is not None
    reconciler = Reconciler(
        worker.registry,
        worker.sources,
        allow_unavailable_labels=worker.settings.allow_version_labels_for_unavailable_models,
    )
    try:
        reconciler.relabel(worker.sources.labels(worker.sources.wanted()))
    except ServekitError as exc:
        log.error("Could not apply version labels: %s", exc.message)
    interval = worker.sources.poll_interval()
    if interval > 0:
        task = asyncio.get_running_loop().create_task(reconciler.poll(interval))
        worker.tasks.append(task)


def install() -> None:
    """Register :func:`start_reconciler` as a worker hook (once)."""
    from servekit.server.runner import WORKER_HOOKS

    if start_reconciler not in WORKER_HOOKS:
        WORKER_HOOKS.append(start_reconciler)
