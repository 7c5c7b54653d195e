"""Shadow calls: a share of a model's unpinned calls run again on its shadow
version, after the served answer is ready, and the two answers compared.

The shadow never touches the served call: it starts only once the served
answer is encoded (the data plane offers it last), runs as its own task with
no client deadline and no watch on the client's connection, and its errors
stay here. At most :data:`MAX_IN_FLIGHT` shadow calls run at once per worker;
one offered beyond that is dropped and counted. Per model, every outcome is
counted (``mirrored``, ``equal``, ``different``, ``failed``, ``dropped``, also
as ``servekit_shadow_requests_total{model, version, outcome}``) and the last
:data:`KEPT` differences and failures are kept for inspection.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from random import random
from typing import TYPE_CHECKING, Any

import numpy as np

from servekit.abandon import WATCH
from servekit.errors import ServekitError
from servekit.tensors import InferenceRequest, InferenceResponse

if TYPE_CHECKING:
    from prometheus_client import Counter

    from servekit.registry import ModelVersion, Registry
    from servekit.server.metrics import Metrics

log = logging.getLogger("servekit.traffic")

MAX_IN_FLIGHT = 64  # shadow calls running at once per worker; more are dropped
KEPT = 20  # differences and failures kept per model
OUTCOMES = ("mirrored", "equal", "different", "failed", "dropped")
RTOL, ATOL = 1e-5, 1e-8  # floating-point outputs within these are equal (numpy's allclose)
SHOWN_VALUES = 8  # values of an output shown in a difference
MAX_TEXT = 300


@dataclass
class ShadowStats:
    """One model's shadow counters in this worker, and its recent differences."""

    version: str = ""
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    recent: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=KEPT))

    def report(self) -> dict[str, Any]:
        return {"version": self.version, "counts": dict(self.counts), "recent": list(self.recent)}


class Mirror:
    """The data plane's shadow runner (one per worker)."""

    def __init__(self, registry: Registry, metrics: Metrics | None = None, limit: int = MAX_IN_FLIGHT) -> None:
        self.registry = registry
        self.metrics = metrics
        self.limit = limit
        self.in_flight = 0
        self.stats: dict[str, ShadowStats] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self._counter: Counter | None = None

    def offer(
        self, served: ModelVersion, request: InferenceRequest | None, response: InferenceResponse | None
    ) -> None:
        """Run ``request`` on the model's shadow too, if it has one and this call
        falls in its share. Never raises, never waits."""
        shadow = self.registry.shadows.get(served.name)
        if shadow is None or shadow.version == served.version or request is None or response is None:
            return
        if shadow.percent < 100.0 and random() * 100.0 >= shadow.percent:
            return
        stats = self._stats(served.name, shadow.version)
        if self.in_flight >= self.limit:
            self._count(served.name, stats, "dropped")
            return
        self._count(served.name, stats, "mirrored")
        self.in_flight += 1
        copy = InferenceRequest(
            inputs=request.inputs, outputs=request.outputs, id=request.id, parameters=dict(request.parameters)
        )
        try:
            task = asyncio.get_running_loop().create_task(self._run(served, shadow.version, copy, response, stats))
        except RuntimeError:  # no running loop (a synchronous caller): nothing to run it on
            self.in_flight -= 1
            self._count(served.name, stats, "dropped")
            return
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(
        self, served: ModelVersion, version: str, request: InferenceRequest, response: InferenceResponse,
        stats: ShadowStats,
    ) -> None:
        WATCH.set(None)  # the client closing its connection is no reason to drop the shadow call
        try:
            try:
                model = self.registry.resolve(served.name, version)
                answer = await self.registry.submit(model, request)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                reason = exc.message if isinstance(exc, ServekitError) else f"{type(exc).__name__}: {exc}"
                self._count(served.name, stats, "failed")
                stats.recent.append(_record("failed", served, version, request, _short(reason)))
                log.debug("Shadow call to %r version %s failed: %s", served.name, version, reason)
                return
            what = compare(response, answer)
            if what is None:
                self._count(served.name, stats, "equal")
            else:
                self._count(served.name, stats, "different")
                stats.recent.append(_record("different", served, version, request, what))
        finally:
            self.in_flight -= 1

    def _stats(self, name: str, version: str) -> ShadowStats:
        stats = self.stats.get(name)
        if stats is None or stats.version != version:  # a new shadow version starts from zero
            stats = self.stats[name] = ShadowStats(version)
        return stats

    def _count(self, name: str, stats: ShadowStats, outcome: str) -> None:
        stats.counts[outcome] += 1
        if self.metrics is None:
            return
        if self._counter is None:
            from prometheus_client import Counter

            self._counter = Counter(
                "servekit_shadow_requests",
                "Calls mirrored to a model's shadow version, by outcome (mirrored, equal, different, failed, dropped)",
                ("model", "version", "outcome"),
                registry=self.metrics.registry,
            )
        self._counter.labels(name, stats.version, outcome).inc()

    def report(self) -> dict[str, Any]:
        """This worker's shadow counters and recent differences, per model."""
        return {name: stats.report() for name, stats in self.stats.items()}

    async def idle(self) -> None:
        """Wait for the shadow calls running now (tests, shutdown)."""
        while self.tasks:
            await asyncio.gather(*list(self.tasks), return_exceptions=True)


def combine(reports: list[dict[str, Any]], name: str, version: str | None = None) -> dict[str, Any]:
    """One model's shadow counters summed over workers' reports (those of
    shadow ``version`` only, if given), and their recent differences, newest
    first (at most :data:`KEPT`)."""
    counts = dict.fromkeys(OUTCOMES, 0)
    recent: list[dict[str, Any]] = []
    versions: set[str] = set()
    for report in reports:
        mine = report.get(name) if isinstance(report, dict) else None
        if not isinstance(mine, dict) or (version is not None and mine.get("version") != version):
            continue
        versions.add(str(mine.get("version", "")))
        for outcome in OUTCOMES:
            value = mine.get("counts", {}).get(outcome, 0)
            counts[outcome] += value if isinstance(value, int) else 0
        recent.extend(r for r in mine.get("recent", []) if isinstance(r, dict))
    recent.sort(key=lambda r: float(r.get("time", 0)), reverse=True)
    return {"versions": sorted(versions), "counts": counts, "recent": recent[:KEPT]}


def compare(served: InferenceResponse, shadow: InferenceResponse) -> str | None:
    """None when the shadow's answer equals the served one (same outputs, shapes
    and values; floating point within :data:`RTOL`/:data:`ATOL`), else what differs."""
    mine = {t.name: t for t in served.outputs}
    theirs = {t.name: t for t in shadow.outputs}
    if set(mine) != set(theirs):
        return _short(f"outputs differ: served {sorted(mine)}, shadow {sorted(theirs)}")
    for name, tensor in mine.items():
        a, b = np.asarray(tensor.data), np.asarray(theirs[name].data)
        if a.shape != b.shape:
            return _short(f"output {name!r}: served shape {list(a.shape)}, shadow shape {list(b.shape)}")
        try:
            if a.dtype.kind in "fc" and b.dtype.kind in "fcuib":
                same = bool(np.allclose(a, b, rtol=RTOL, atol=ATOL, equal_nan=True))
            else:
                same = bool(np.array_equal(a, b))
        except (TypeError, ValueError):
            same = False
        if not same:
            return _short(f"output {name!r}: served {_values(a)}, shadow {_values(b)}")
    return None


def _values(array: np.ndarray) -> str:
    flat = array.ravel()
    shown = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in flat[:SHOWN_VALUES].tolist()]
    return repr(shown)[:-1] + (", …]" if flat.size > SHOWN_VALUES else "]")


def _record(kind: str, served: ModelVersion, version: str, request: InferenceRequest, what: str) -> dict[str, Any]:
    return {
        "time": time.time(),
        "kind": kind,
        "request_id": _short(request.id or "", 128),
        "served_version": served.version,
        "shadow_version": version,
        "what": what,
    }


def _short(text: str, limit: int = MAX_TEXT) -> str:
    """One line, control characters escaped, at most ``limit`` characters."""
    flat = " ".join(str(text).split())
    escaped = "".join(c if c.isprintable() else repr(c)[1:-1] for c in flat[: limit + 1])
    return escaped if len(escaped) <= limit else escaped[: limit - 1] + "…"


__all__ = ["KEPT", "MAX_IN_FLIGHT", "OUTCOMES", "Mirror", "ShadowStats", "combine", "compare"]
