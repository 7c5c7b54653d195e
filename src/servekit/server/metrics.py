"""Prometheus metrics: requests, failures and latency per model and version."""

from __future__ import annotations

import mmap
import os
import shutil
import tempfile
import weakref
from bisect import bisect_left
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    """Per-model counters. With several worker processes, prometheus_client's
    multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``) adds them up across workers."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ("model", "version", "protocol")
        self.requests = Counter(
            "servekit_model_requests", "Inference requests", labels, registry=self.registry
        )
        self.failures = Counter(
            "servekit_model_request_failures",
            "Inference requests that ended in an error",
            (*labels, "status"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "servekit_model_request_duration_seconds",
            "Time from request received to response ready",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.change_failures = Counter(
            "servekit_change_failures",
            "Changes to the served models that a worker could not apply (unknown kinds included)",
            ("kind",),
            registry=self.registry,
        )
        self._children: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        # per (model, version, protocol): where its counts live in the shared files
        # (see _Slots), or None where the values are not file-backed
        self._slots: dict[tuple[str, str, str], _Slots | None] = {}
        self._maps = _Maps()
        _INSTANCES.add(self)
        # families a front exposes in its peer's style (TorchServe's Java client:
        # no _total added, a comma after the last label): family name -> exposed
        # name and label order (multiprocess mode sorts labels by name)
        self.java_style: dict[str, tuple[str, tuple[str, ...]]] = {}

    def observe(self, model: str, version: str, protocol: str, seconds: float) -> None:
        """One answered call (the data plane's hot path)."""
        key = (model, version, protocol)
        slots = self._slots_of(key)
        if slots is not None:
            # three adds in the shared file, as prometheus_client's own inc()
            # writes them (one aligned 8-byte store each), without its lock,
            # fork check, struct packing and Python loop over the buckets
            view = slots.view
            view[slots.requests] += 1.0
            view = slots.latency_view
            view[slots.total] += seconds
            bucket = slots.buckets[bisect_left(LATENCY_BUCKETS, seconds)]
            view[bucket] += 1.0
            return
        children = self._children[key]
        children[0].inc()
        children[1].observe(seconds)

    def failure(self, model: str, version: str, protocol: str, status: int) -> None:
        key = (model, version, protocol)
        slots = self._slots_of(key)
        if slots is not None:
            slots.view[slots.requests] += 1.0  # the same value observe() adds to
        else:
            self._children[key][0].inc()
        self.failures.labels(model, version, protocol, str(status)).inc()

    def _slots_of(self, key: tuple[str, str, str]) -> _Slots | None:
        try:
            return self._slots[key]
        except KeyError:
            return self._slots_for(key)

    def _slots_for(self, key: tuple[str, str, str]) -> _Slots | None:
        children = self._children.get(key)
        if children is None:
            children = (self.requests.labels(*key), self.latency.labels(*key))
            self._children[key] = children
        slots = _Slots.of(children[0], children[1], self._maps)
        self._slots[key] = slots
        return slots

    def _forked(self) -> None:
        # a child's values live in files of its own pid, made on their next use
        self._slots.clear()
        self._maps = _Maps()

    def render(self) -> bytes:
        registry = self.registry
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        if not self.java_style:
            return generate_latest(registry)
        families = list(registry.collect())
        plain = _Families([f for f in families if f.name not in self.java_style])
        styled = [f for f in families if f.name in self.java_style]
        return generate_latest(plain) + b"".join(_java_text(f, *self.java_style[f.name]) for f in styled)


class _Maps:
    """Writable maps of prometheus_client's per-process files (by file name),
    made by servekit: prometheus_client closes and remaps its own when a file
    grows or the process forks, so views of those would break."""

    def __init__(self) -> None:
        self.views: dict[str, memoryview[float]] = {}

    def view(self, filename: str, position: int) -> memoryview[float] | None:
        """A float64 view of the file that reaches ``position`` (bytes)."""
        view = self.views.get(filename)
        if view is None or position + 8 > len(view) * 8:
            with open(filename, "r+b") as file:
                size = os.fstat(file.fileno()).st_size
                if position + 8 > size or size % 8:
                    return None
                mapped = mmap.mmap(file.fileno(), size)
            view = self.views[filename] = memoryview(mapped).cast("d")  # earlier views stay valid
        return view


class _Slots:
    """Where one label set's request count, latency sum and latency buckets
    live in the multiprocess files: float64 indexes into views of them. The
    data plane adds to them directly; prometheus_client's own value objects
    for them are never written again (their cached value would be stale), so
    every write of these counters goes through :class:`Metrics`."""

    __slots__ = ("buckets", "latency_view", "requests", "total", "view")

    def __init__(self, view: memoryview[float], requests: int, latency_view: memoryview[float], total: int,
                 buckets: tuple[int, ...]) -> None:
        self.view = view
        self.requests = requests
        self.latency_view = latency_view
        self.total = total
        self.buckets = buckets

    @classmethod
    def of(cls, counter: Any, histogram: Any, maps: _Maps) -> _Slots | None:
        """None unless the values are prometheus_client's file-backed ones (its
        multiprocess mode) laid out as this code expects; then the API is used."""
        try:
            counter_file, counter_at = _place(counter._value)
            latency = [_place(value) for value in (histogram._sum, *histogram._buckets)]
        except (AttributeError, TypeError, LookupError):
            return None
        if len(latency) != 1 + len(LATENCY_BUCKETS) + 1 or len({file for file, _ in latency}) != 1:
            return None
        view = maps.view(counter_file, counter_at)
        latency_view = maps.view(latency[0][0], max(at for _, at in latency))
        if view is None or latency_view is None:
            return None
        # the counts so far (written through the API) are already in the files
        return cls(view, counter_at // 8, latency_view, latency[0][1] // 8, tuple(at // 8 for _, at in latency[1:]))


def _place(value: Any) -> tuple[str, int]:
    """(file name, byte offset) of one file-backed value; LookupError for any other."""
    if not getattr(value, "_multiprocess", False):
        raise LookupError("not a file-backed value")
    value.get()  # makes its file for this process if it forked since
    file = value._file
    position = int(file._positions[value._key])
    if position % 8:
        raise LookupError("not 8-byte aligned")
    return str(file._fname), position


_INSTANCES: weakref.WeakSet[Metrics] = weakref.WeakSet()


def _after_fork() -> None:
    for metrics in list(_INSTANCES):
        metrics._forked()


os.register_at_fork(after_in_child=_after_fork)


class _Families:
    """Collected families, as something ``generate_latest`` can render."""

    def __init__(self, families: list[Any]) -> None:
        self.families = families

    def collect(self) -> list[Any]:
        return self.families


def _java_text(family: Any, name: str, order: tuple[str, ...]) -> bytes:
    """A counter family as TorchServe's metrics port writes it:
    ``Name{a="x",b="y",} 3.0`` (the value of its ``_total`` samples)."""
    lines = [f"# HELP {name} {family.documentation}", f"# TYPE {name} {family.type}"]
    for sample in family.samples:
        if family.type == "counter" and not sample.name.endswith("_total"):
            continue  # _created
        labels = "".join(f'{k}="{_escape(sample.labels[k])}",' for k in order if k in sample.labels)
        lines.append(f"{name}{{{labels}}} {float(sample.value)!r}")
    return ("\n".join(lines) + "\n").encode()


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def share_across_processes() -> str | None:
    """Switch to prometheus_client's multiprocess mode before workers fork, so
    ``/metrics`` on any worker reports the sum over all of them. Returns the
    folder servekit made for it, or None when the user's
    ``PROMETHEUS_MULTIPROC_DIR`` is used (servekit never deletes that one)."""
    made = None
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        made = tempfile.mkdtemp(prefix="servekit-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = made
    # the value class is chosen when prometheus_client is imported; choose again
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
    return made


def remove_shared(made: str | None) -> None:
    """Delete the folder :func:`share_across_processes` made, if it made one."""
    if made is not None:
        shutil.rmtree(made, ignore_errors=True)
