"""TorchServe's metrics on the metrics port, beside servekit's own: what its
clients and dashboards read (TorchServe's ``metrics.yaml`` and metrics docs).

- ``Requests2XX``, ``Requests4XX``, ``Requests5XX`` (counters; ``Level``,
  ``Hostname``): every answer of the TorchServe inference and management APIs
  by its status class;
- ``ts_inference_requests_total``, ``ts_inference_latency_microseconds``,
  ``ts_queue_latency_microseconds`` (counters; ``model_name``,
  ``model_version`` - ``default`` when the call named none - and ``hostname``).

They are written as TorchServe's Java client writes them (``Requests2XX{Level=
"Host",Hostname="h",} 8.0``: no ``_total`` added, a comma after the last
label), which TorchServe's own tests match.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter

from servekit.registry import ModelVersion
from servekit.server.http import ErrorEncoder, Handler, Request, Response, Route
from servekit.server.metrics import Metrics

HELP = "Torchserve prometheus counter metric with unit: "


@dataclass
class TorchServeMetrics:
    hostname: str
    by_class: dict[int, Any]
    requests: Any
    latency: Any
    queue: Any
    # queue time (ns) already counted per model version: the batcher's running total
    # is carried over by differences, so concurrent calls never count it twice
    queued_ns: dict[tuple[str, str], int] = field(default_factory=dict)

    def answered(self, status: int) -> None:
        counter = self.by_class.get(status // 100)
        if counter is not None:
            counter.inc()

    def inference(self, name: str, version: str | None, seconds: float, model: ModelVersion | None) -> None:
        labels = (name, version or "default", self.hostname)
        self.requests.labels(*labels).inc()
        self.latency.labels(*labels).inc(seconds * 1e6)
        if model is not None:
            key = (model.name, model.version)
            total = model.stats.queue_ns
            counted = self.queued_ns.get(key, 0)
            # a request that ran at once waited 0 µs: the series exists from the first call
            self.queue.labels(*labels).inc(max(0, total - counted) / 1000)
            self.queued_ns[key] = max(total, counted)


_MADE: dict[int, TorchServeMetrics] = {}


def torchserve_metrics(metrics: Metrics) -> TorchServeMetrics:
    """TorchServe's families in ``metrics`` (made once per Metrics)."""
    made = _MADE.get(id(metrics))
    if made is not None:
        return made
    registry = metrics.registry
    by_class = {
        k: Counter(f"Requests{k}XX", HELP + "Count", ("Level", "Hostname"), registry=registry) for k in (2, 4, 5)
    }
    per_model = ("model_name", "model_version", "hostname")
    made = TorchServeMetrics(
        hostname=socket.gethostname(),
        by_class={k: c.labels("Host", socket.gethostname()) for k, c in by_class.items()},
        requests=Counter("ts_inference_requests_total", HELP + "Count", per_model, registry=registry),
        latency=Counter("ts_inference_latency_microseconds", HELP + "Microseconds", per_model, registry=registry),
        queue=Counter("ts_queue_latency_microseconds", HELP + "Microseconds", per_model, registry=registry),
    )
    metrics.java_style.update({f"Requests{k}XX": (f"Requests{k}XX", ("Level", "Hostname")) for k in (2, 4, 5)})
    metrics.java_style.update({
        "ts_inference_requests": ("ts_inference_requests_total", per_model),
        "ts_inference_latency_microseconds": ("ts_inference_latency_microseconds", per_model),
        "ts_queue_latency_microseconds": ("ts_queue_latency_microseconds", per_model),
    })
    _MADE[id(metrics)] = made
    return made


def counted(routes: list[Route], on_error: ErrorEncoder, counters: TorchServeMetrics) -> list[Route]:
    """The routes, each answer counted in Requests2XX/4XX/5XX."""

    def wrap(handler: Handler) -> Handler:
        async def run(request: Request) -> Response:
            response = await handler(request)
            counters.answered(response.status)
            return response

        return run

    return [Route(r.method, r.pattern, wrap(r.handler), counting_errors(on_error, counters), r.path) for r in routes]


def counting_errors(on_error: ErrorEncoder, counters: TorchServeMetrics) -> ErrorEncoder:
    def encode(exc: Any) -> Response:
        response = on_error(exc)
        counters.answered(response.status)
        return response

    return encode
