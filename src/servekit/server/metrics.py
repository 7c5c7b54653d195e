"""Prometheus metrics: requests, failures and latency per model and version."""

from __future__ import annotations

import os
import shutil
import tempfile
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
        # families a front exposes in its peer's style (TorchServe's Java client:
        # no _total added, a comma after the last label): family name -> exposed
        # name and label order (multiprocess mode sorts labels by name)
        self.java_style: dict[str, tuple[str, tuple[str, ...]]] = {}

    def observe(self, model: str, version: str, protocol: str, seconds: float) -> None:
        key = (model, version, protocol)
        children = self._children.get(key)
        if children is None:
            children = (self.requests.labels(*key), self.latency.labels(*key))
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def failure(self, model: str, version: str, protocol: str, status: int) -> None:
        self.requests.labels(model, version, protocol).inc()
        self.failures.labels(model, version, protocol, str(status)).inc()

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
