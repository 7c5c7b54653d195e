"""Payload logging: each sampled inference of the models that opt in, as a
pair of CloudEvents in KServe's payload logger format, sent to a file or an
HTTP sink without slowing or failing the inference.

A model opts in with ``payload_logging`` in its settings (``{"sink": URL,
"mode": "all" | "request" | "response", "sample_rate": 0.1, …}``), or every
model through the server's ``payload_logging`` (a model's ``false`` keeps it
out). Each worker's :class:`PayloadLogger` (a skin's start and stop work)
follows the registry: every ready version that logs gets a :class:`Watcher`
in the data plane's ``watchers`` (observers of one version's calls), so the
calls of other versions build nothing and pay one test of a dict.

A watcher decides once per inference whether it is sampled (both of its
events are kept or neither), and queues the finished call for its sink:
no encoding and no I/O on the inference's path (:mod:`.sinks` does both in
its own task). Events: :mod:`.events`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import TYPE_CHECKING

from prometheus_client import Counter

from servekit.config import ModelSettings, PayloadLogging
from servekit.payloads.events import Attributes, size_of
from servekit.payloads.sinks import Counters, Pending, Sink, label, make_sink
from servekit.server.lifecycle import ServerContext, Skin, Stop

if TYPE_CHECKING:
    from servekit.dataplane import InferenceCall
    from servekit.registry import ModelVersion

log = logging.getLogger("servekit.payloads")

STOP_SECONDS = 5.0  # at most, for the sinks to deliver what is queued when the worker stops
# the options that belong to a sink, not to a model (the first model naming the sink sets them)
SINK_OPTIONS = ("max_bytes", "max_files", "format", "batch_size", "timeout", "queue_size", "queue_bytes",
                "flush_seconds")


class Watcher:
    """One version's observer: samples each finished call and queues it."""

    __slots__ = ("attributes", "events", "failed", "rate", "sink")

    def __init__(self, attributes: Attributes, sink: Sink, rate: float) -> None:
        self.attributes = attributes
        self.sink = sink
        self.rate = rate
        self.events = int(attributes.request) + int(attributes.response)
        self.failed = False

    def __call__(self, call: InferenceCall) -> None:
        if self.rate < 1.0 and random.random() >= self.rate:
            return
        try:
            sink = self.sink
            if sink.events + self.events > sink.max_events:  # full: nothing more to build
                sink.counters.drop("queue_full", self.events)
                return
            sink.offer(Pending(self.attributes, call, time.time(), self.events, size_of(call)))
        except Exception:  # never the inference's problem; said once, with its traceback
            if not self.failed:
                self.failed = True
                log.exception("Payload logging of %s failed", self.attributes.name)


class PayloadLogger:
    """The payload logging of one worker: its sinks (one per URL) and the
    watchers of the versions that log."""

    def __init__(self, ctx: ServerContext) -> None:
        self.settings = ctx.settings
        self.registry = ctx.registry
        self.watchers = ctx.dataplane.watchers
        self.sinks: dict[str, Sink] = {}
        registry = ctx.metrics.registry
        self.sent = Counter("servekit_payload_events_sent", "Payload logging events delivered to their sink",
                            ("sink",), registry=registry)
        self.dropped = Counter(
            "servekit_payload_events_dropped",
            "Payload logging events dropped (queue_full, unreachable, rejected, write_failed, unencodable, "
            "failed, stopped)",
            ("sink", "reason"), registry=registry,
        )
        host = self.settings.host
        self.source = f"http://{f'[{host}]' if ':' in host else host}:{self.settings.http_port}/"

    def start(self) -> None:
        if self.settings.payload_logging is not None:
            self.sink(self.settings.payload_logging)
        for model in self.registry.all_versions():
            if model.ready:
                self.follow(model)
        self.registry.listeners.append(self.changed)

    async def stop(self) -> None:
        if self.changed in self.registry.listeners:
            self.registry.listeners.remove(self.changed)
        self.watchers.clear()
        await asyncio.gather(*(sink.stop(STOP_SECONDS) for sink in self.sinks.values()))

    def options(self, settings: ModelSettings) -> PayloadLogging | None:
        """How a model logs: its own settings, else the server's; None: not at all."""
        own = settings.payload_logging
        if own is False:
            return None
        return own or self.settings.payload_logging

    def follow(self, model: ModelVersion) -> None:
        options = self.options(model.settings)
        if options is None:
            return
        attributes = Attributes(
            source=options.source or self.source, name=model.name, namespace=options.namespace,
            component=options.component, endpoint=model.version,
            request=options.mode in ("all", "request"), response=options.mode in ("all", "response"),
        )
        self.watchers[model] = Watcher(attributes, self.sink(options), options.sample_rate)

    def changed(self, event: str, model: ModelVersion) -> None:
        """The registry's listener: watch a version once it is loaded, forget the
        versions it no longer serves (unloaded, or replaced by a reload)."""
        if event == "loaded":
            self.follow(model)
        served = {id(each) for each in self.registry.all_versions() if each.ready}
        for gone in [each for each in self.watchers if id(each) not in served]:
            del self.watchers[gone]

    def sink(self, options: PayloadLogging) -> Sink:
        """The sink of this URL, made and started on first use."""
        sink = self.sinks.get(options.sink)
        if sink is not None:
            if any(getattr(sink.options, name) != getattr(options, name) for name in SINK_OPTIONS):
                log.warning("Payload sink %s is shared: it keeps the options it was first given (%s)",
                            sink.label, ", ".join(SINK_OPTIONS))
            return sink
        counters = Counters(self.sent, self.dropped, label(options.sink))
        sink = self.sinks[options.sink] = make_sink(options.sink, options, counters)
        sink.start()
        log.info("Payload logging to %s", sink.label)
        return sink


async def _start(ctx: ServerContext) -> Stop:
    logger = PayloadLogger(ctx)
    logger.start()
    return logger.stop


# a worker-wide service: no routes; start follows the registry, stop flushes the sinks
SKIN = Skin(name="payload-logging", start=_start)


__all__ = ["SKIN", "PayloadLogger", "Watcher"]
