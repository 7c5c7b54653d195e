"""The dashboard's numbers: what one worker counts, and their sum over every
worker.

:class:`WorkerStats` is the data plane's tally (told of every call of every
protocol once, when it ends: an answered one by name, protocol and seconds,
which costs well under a microsecond; a failed one with its error) and keeps, per model name, cumulative counters:
calls, calls per protocol, failures per HTTP status and a latency histogram
with fixed, geometric buckets (:data:`LATENCY_BUCKETS` of them, each
:data:`GROWTH` times as wide as the one before, so a quantile read from it is
within ~12 % of the true one). Its :meth:`WorkerStats.report` adds what the
batchers keep (queue time, batch sizes) and the registry's states.

:func:`combine` sums the reports of every worker (gathered through the
supervisor, see :mod:`servekit.server.reports`). Counters stay cumulative:
the page takes differences between two reads for rates and windowed
quantiles, so the server keeps no history and any worker can answer any read.

Everything is bounded: models are those the registry serves (calls to unknown
names count under one ``(unknown)`` entry), statuses and protocols are few,
batch sizes go into power-of-two bins, and recent errors are a ring of
:data:`RECENT_ERRORS` with their messages cut to :data:`MESSAGE_CHARS`.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from servekit.dataplane import UNKNOWN_MODEL, InferenceCall, bounded
from servekit.registry import Registry

FIRST_BUCKET = 1e-5  # seconds: the first bucket holds everything up to 10 µs
GROWTH = 1.25
LATENCY_BUCKETS = 75  # the last one ends past 150 s and also holds everything slower
RECENT_ERRORS = 50
MESSAGE_CHARS = 300
NAME_CHARS = 128
MAX_MODELS = 1000  # entries per worker; calls to more names count under (unknown)


def latency_bucket(seconds: float) -> int:
    """The index of the histogram bucket ``seconds`` falls into: the first whose
    upper bound is at least ``seconds`` (one binary search, no logarithm)."""
    return min(LATENCY_BUCKETS - 1, bisect_left(_BOUNDS, seconds))


def bucket_bounds() -> list[float]:
    """Upper bound of each latency bucket, in seconds (the last one is open)."""
    return [FIRST_BUCKET * GROWTH**i for i in range(LATENCY_BUCKETS)]


_BOUNDS = bucket_bounds()


def batch_bin(size: int) -> int:
    """The power-of-two bin of a batch size: 1, 2, 4 (3-4), 8 (5-8), …"""
    return 1 if size <= 1 else 1 << (size - 1).bit_length()


@dataclass(slots=True)
class ModelCounters:
    """One model's counters in one worker (cumulative)."""

    requests: int = 0
    protocols: dict[str, int] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)
    latency: list[int] = field(default_factory=lambda: [0] * LATENCY_BUCKETS)


class WorkerStats:
    """The data plane's tally (:class:`servekit.dataplane.Tally`) of every
    call, per model; see the module."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.models: dict[str, ModelCounters] = {}
        self.errors: deque[dict[str, Any]] = deque(maxlen=RECENT_ERRORS)

    def _counters(self, name: str) -> ModelCounters:
        counters = self.models.get(name)
        if counters is None:
            if len(self.models) >= MAX_MODELS:
                name = UNKNOWN_MODEL
                counters = self.models.get(name)
            if counters is None:
                counters = self.models[name] = ModelCounters()
        return counters

    def ok(self, name: str, protocol: str, seconds: float) -> None:
        """A call that was answered (the data plane's hot path: a few dict updates)."""
        counters = self.models.get(name) or self._counters(name)
        counters.requests += 1
        protocols = counters.protocols
        protocols[protocol] = protocols.get(protocol, 0) + 1
        counters.latency[latency_bucket(seconds)] += 1

    def failed(self, call: InferenceCall) -> None:
        """A call that ended in an error: counted by status, kept in the ring."""
        name = call.model.name if call.model is not None else call.target.name
        if call.model is None and not self.registry.has(name):
            name = UNKNOWN_MODEL
        counters = self._counters(name)
        counters.requests += 1
        counters.protocols[call.protocol] = counters.protocols.get(call.protocol, 0) + 1
        counters.latency[latency_bucket(call.seconds)] += 1
        if call.error is None:
            return
        status = str(call.error.status)
        counters.statuses[status] = counters.statuses.get(status, 0) + 1
        self.errors.append({
            "time": time.time(),
            "model": bounded(call.target.name, NAME_CHARS),
            "version": bounded(call.model.version if call.model is not None else call.target.version or "",
                               NAME_CHARS),
            "protocol": call.protocol,
            "status": call.error.status,
            "message": bounded(call.error.message, MESSAGE_CHARS),
        })

    def report(self) -> dict[str, Any]:
        """This worker's part of the dashboard: counters per model, what its
        batchers measured, the states of its versions and its recent errors."""
        models: dict[str, Any] = {}
        for name, counters in self.models.items():
            models[name] = {
                "requests": counters.requests,
                "protocols": dict(counters.protocols),
                "statuses": dict(counters.statuses),
                "latency": list(counters.latency),
            }
        batching: dict[str, Any] = {}
        states: dict[str, dict[str, str]] = {}
        for model in self.registry.all_versions():
            states.setdefault(model.name, {})[model.version] = model.state.value
            stats = model.stats
            entry = batching.setdefault(model.name, {"queued": 0, "queue_ns": 0, "executions": 0, "batches": {}})
            entry["queued"] += stats.inference_count
            entry["queue_ns"] += stats.queue_ns
            entry["executions"] += stats.execution_count
            bins = entry["batches"]
            for size, count in stats.batch_sizes.items():
                key = str(batch_bin(size))
                bins[key] = bins.get(key, 0) + count
        # entries of models no longer served go (their plots went with them)
        for name in [n for n in self.models if n != UNKNOWN_MODEL and not self.registry.has(n)]:
            del self.models[name]
        return {"models": models, "batching": batching, "states": states, "errors": list(self.errors)}


def _add(into: dict[str, int], more: Any) -> None:
    if isinstance(more, dict):
        for key, value in more.items():
            if isinstance(value, int):
                into[str(key)] = into.get(str(key), 0) + value


def combine(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """The sum of every worker's dashboard report: per model the totals, and
    for each worker its own request count (to show where traffic went); the
    recent errors of all, newest first."""
    models: dict[str, dict[str, Any]] = {}
    states: dict[str, dict[str, dict[str, int]]] = {}
    errors: list[dict[str, Any]] = []
    for report in reports:
        part = report.get("dashboard")
        if not isinstance(part, dict):
            continue
        worker = str(report.get("worker", "?"))
        for name, counters in part.get("models", {}).items():
            total = models.setdefault(name, _empty())
            total["requests"] += int(counters.get("requests", 0))
            total["by_worker"][worker] = total["by_worker"].get(worker, 0) + int(counters.get("requests", 0))
            _add(total["protocols"], counters.get("protocols"))
            _add(total["statuses"], counters.get("statuses"))
            latency = counters.get("latency", [])
            if isinstance(latency, list) and len(latency) == LATENCY_BUCKETS:
                total["latency"] = [a + int(b) for a, b in zip(total["latency"], latency, strict=True)]
        for name, batching in part.get("batching", {}).items():
            total = models.setdefault(name, _empty())
            total["queued"] += int(batching.get("queued", 0))
            total["queue_ns"] += int(batching.get("queue_ns", 0))
            total["executions"] += int(batching.get("executions", 0))
            _add(total["batches"], batching.get("batches"))
        for name, versions in part.get("states", {}).items():
            for version, state in versions.items():
                counts = states.setdefault(name, {}).setdefault(version, {})
                counts[state] = counts.get(state, 0) + 1
        errors.extend(e for e in part.get("errors", []) if isinstance(e, dict))
    errors.sort(key=lambda e: e.get("time", 0), reverse=True)
    return {"models": models, "states": states, "errors": errors[:RECENT_ERRORS]}


def _empty() -> dict[str, Any]:
    return {
        "requests": 0, "by_worker": {}, "protocols": {}, "statuses": {}, "latency": [0] * LATENCY_BUCKETS,
        "queued": 0, "queue_ns": 0, "executions": 0, "batches": {},
    }


__all__ = ["LATENCY_BUCKETS", "WorkerStats", "batch_bin", "bucket_bounds", "combine", "latency_bucket"]
