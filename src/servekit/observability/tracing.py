"""OpenTelemetry traces of every request, exported with OTLP/HTTP.

Off unless an endpoint is configured (``--otlp-endpoint`` /
``otel_exporter_otlp_endpoint``, or the standard ``OTEL_EXPORTER_OTLP_ENDPOINT``
/ ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``); it needs the ``tracing`` extra
(``opentelemetry-sdk`` and the OTLP/HTTP exporter), which servekit runs
without. When it is off nothing here runs: the data plane has no observer,
the HTTP server takes no timestamps and the app makes no span.

Each request is one SERVER span (``{protocol} infer``, or ``{METHOD}`` for
requests that reach no model) whose parent is the client's W3C
``traceparent`` (and ``tracestate``), with up to six children in order:

* ``receive``: the request's bytes arriving, from the HTTP server;
* ``decode``: the protocol's body to tensors;
* ``queue``: waiting in the model's batcher (the batcher measures it);
* ``predict``: the model's call (or the prediction cache's answer);
* ``encode``: the answer to the protocol's body;
* ``send``: the answer written to the connection, from the HTTP server.

gRPC calls have the four in the middle. The request span carries the model,
its version, the protocol, the batch size (requests merged into the model's
call), the request id and the HTTP status; a failed call's span is an error
with the message the client got. The answer carries ``traceparent`` naming the
request span, and while the request is handled that span is OpenTelemetry's
current span, so instrumented outgoing calls made by a model carry it on.

The child spans are made when the request ends, from timestamps the data plane
takes anyway (its ``InferenceCall`` spans), placed back to back ending when
the data plane handed the answer over: a request costs no more while tracing
is off, and little when on.
"""

from __future__ import annotations

import logging
import os
import time
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from servekit.errors import ConfigError
from servekit.observability.request_id import REQUEST_ID

if TYPE_CHECKING:
    from servekit.config import ServerSettings
    from servekit.dataplane import InferenceCall

log = logging.getLogger("servekit.tracing")

EXTRA = "pip install 'servekit[tracing]'"
ENV_ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"
ENV_TRACES_ENDPOINT = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
TRACES_PATH = "/v1/traces"
PROPAGATED = (b"traceparent", b"tracestate", b"baggage")
# the scope key where servekit's HTTP server puts a request's (first byte, last
# byte) times in ns when tracing is on
RECEIVED = "servekit.received_ns"

# the worker's tracing, when it is on (read by the log formatter and gRPC calls)
ACTIVE: Tracing | None = None


@dataclass(slots=True)
class Traced:
    """One request being traced: its span, and the data plane's call once it ended."""

    span: Any
    token: object
    call: InferenceCall | None = None
    call_end_ns: int = 0


TRACE: ContextVar[Traced | None] = ContextVar("servekit_trace", default=None)


def endpoint(settings: ServerSettings) -> str | None:
    """Where spans go: the setting, else the environment; None: tracing is off."""
    return (settings.otel_exporter_otlp_endpoint or os.environ.get(ENV_TRACES_ENDPOINT)
            or os.environ.get(ENV_ENDPOINT) or None)


def check(settings: ServerSettings) -> None:
    """At start: a configured endpoint needs the extra. Given as a setting, its
    absence is an error; from the environment (which may be set for other
    programs), a warning and no tracing."""
    if endpoint(settings) is None or sdk_installed():
        return
    if settings.otel_exporter_otlp_endpoint:
        raise ConfigError(f"otel_exporter_otlp_endpoint / --otlp-endpoint needs OpenTelemetry: {EXTRA}")
    log.warning("%s is set but OpenTelemetry's SDK is not installed: requests are not traced (%s)",
                ENV_ENDPOINT, EXTRA)


def sdk_installed() -> bool:
    try:
        import opentelemetry.exporter.otlp.proto.http.trace_exporter
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError:
        return False
    return True


def setup(settings: ServerSettings) -> Tracing | None:
    """This worker's tracing (None when off), exporting with OTLP/HTTP in
    batches from a thread of its own. Called in each worker after the fork."""
    global ACTIVE
    url = endpoint(settings)
    if url is None or not sdk_installed():
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from servekit import __version__

    attributes: dict[str, Any] = {"service.version": __version__, "process.pid": os.getpid()}
    if not os.environ.get("OTEL_SERVICE_NAME"):
        attributes["service.name"] = settings.server_name
    provider = TracerProvider(resource=Resource.create(attributes))
    given = settings.otel_exporter_otlp_endpoint
    # the setting is a base URL as OTEL_EXPORTER_OTLP_ENDPOINT is; without it the
    # exporter reads the environment itself (endpoint, headers, certificates …)
    exporter = OTLPSpanExporter(endpoint=traces_url(given)) if given else OTLPSpanExporter()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    ACTIVE = Tracing(provider)
    log.info("Tracing requests to %s", traces_url(given) if given else url)
    return ACTIVE


def traces_url(base: str) -> str:
    base = base.rstrip("/")
    return base if base.endswith(TRACES_PATH) else base + TRACES_PATH


class Tracing:
    """Spans for requests, from ``provider`` (an OpenTelemetry TracerProvider)."""

    def __init__(self, provider: Any) -> None:
        from opentelemetry import context, propagate, trace
        from opentelemetry.trace import SpanKind, Status, StatusCode

        from servekit import __version__

        self.provider = provider
        self.tracer = provider.get_tracer("servekit", __version__)
        self._context = context
        self._propagate = propagate
        self._trace = trace
        self._server = SpanKind.SERVER
        self._error = StatusCode.ERROR
        self._status = Status
        if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
            trace.set_tracer_provider(provider)  # model code's spans join the request's trace

    # -- a request --------------------------------------------------------------
    def begin(self, name: str, carrier: dict[str, str], start_ns: int, attributes: dict[str, Any]) -> Traced:
        """Start a request's span (its parent from ``carrier``'s ``traceparent``)
        and make it current until :meth:`end`."""
        parent = self._propagate.extract(carrier) if carrier else None
        span = self.tracer.start_span(name, context=parent, kind=self._server, start_time=start_ns,
                                      attributes=attributes)
        token = self._context.attach(self._trace.set_span_in_context(span))
        traced = Traced(span, token)
        TRACE.set(traced)
        return traced

    def end(
        self, traced: Traced, end_ns: int, *, receive: tuple[int, int] | None = None,
        send: tuple[int, int] | None = None, status: int | None = None, error: str | None = None,
    ) -> None:
        """End a request's span: its children, attributes and status."""
        TRACE.set(None)
        self._context.detach(traced.token)  # type: ignore[arg-type]
        span = traced.span
        if receive is not None:
            self._child(span, "receive", *receive)
        call = traced.call
        if call is not None:
            if receive is not None:  # an HTTP request that reached a model: named by what it did
                span.update_name(f"{call.protocol} infer")
            self._call_spans(span, call, traced.call_end_ns)
            error = error or (call.error.message if call.error is not None else None)
        if send is not None:
            self._child(span, "send", *send)
        request_id = REQUEST_ID.get()
        if request_id:
            span.set_attribute("servekit.request_id", request_id)
        if status is not None:
            span.set_attribute("http.response.status_code", status)
        if error is not None or (status is not None and status >= 500):
            span.set_status(self._status(self._error, error))
        span.end(end_time=end_ns)

    def traceparent(self, traced: Traced) -> bytes:
        """The ``traceparent`` naming the request's span (for the answer)."""
        ctx = traced.span.get_span_context()
        return b"00-%032x-%016x-%02x" % (ctx.trace_id, ctx.span_id, int(ctx.trace_flags))

    def current_ids(self) -> tuple[str, str] | None:
        ctx = self._trace.get_current_span().get_span_context()
        if not ctx.is_valid:
            return None
        return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"

    def shutdown(self) -> None:
        """Export what is left (at the worker's end)."""
        self.provider.shutdown()

    # -- the data plane's observer ------------------------------------------------
    def __call__(self, call: InferenceCall) -> None:
        now = time.time_ns()
        traced = TRACE.get()
        if traced is not None and traced.call is None:
            traced.call, traced.call_end_ns = call, now  # its request's end makes the spans
            return
        # a call with no traced request around it (a message of a gRPC stream …): a span of its own
        span = self.tracer.start_span(f"{call.protocol} infer", kind=self._server,
                                      start_time=now - int(call.seconds * 1e9))
        self._call_spans(span, call, now)
        request_id = call.request.id if call.request is not None else None
        if request_id:
            span.set_attribute("servekit.request_id", request_id)
        if call.error is not None:
            span.set_status(self._status(self._error, call.error.message))
        span.end(end_time=now)

    def _call_spans(self, span: Any, call: InferenceCall, end_ns: int) -> None:
        """decode, queue, predict and encode, back to back ending at ``end_ns``,
        and the call's attributes on the request's span."""
        model = call.model
        span.set_attribute("servekit.protocol", call.protocol)
        span.set_attribute("servekit.model", model.name if model is not None else call.target.name)
        version = model.version if model is not None else call.target.version
        span.set_attribute("servekit.version", version or "")  # "" for a model without versions
        request = call.request
        spans = call.spans
        seconds = spans.get("infer")
        queue_ns = request.queue_ns if request is not None else 0
        if request is not None and seconds is not None:
            span.set_attribute("servekit.batch_size", request.batch_size)
        if call.cached:
            span.set_attribute("servekit.cached", True)
        steps: list[tuple[str, int]] = []
        if "decode" in spans:
            steps.append(("decode", int(spans["decode"] * 1e9)))
        if seconds is not None:
            infer_ns = int(seconds * 1e9)
            queue_ns = min(queue_ns, infer_ns)
            steps.append(("queue", queue_ns))
            steps.append(("predict", infer_ns - queue_ns))
        if "encode" in spans:
            steps.append(("encode", int(spans["encode"] * 1e9)))
        start = end_ns - sum(duration for _, duration in steps)
        for name, duration in steps:
            self._child(span, name, start, start + duration)
            start += duration

    def _child(self, parent: Any, name: str, start_ns: int, end_ns: int) -> None:
        context = self._trace.set_span_in_context(parent)
        self.tracer.start_span(name, context=context, start_time=start_ns).end(end_time=end_ns)


def outgoing_headers() -> list[tuple[str, str]]:
    """Headers for an HTTP call servekit makes while handling a request (an
    archive download …): the request id, and with tracing on the current
    span's ``traceparent``, so the callee's logs and spans join this request's."""
    out: list[tuple[str, str]] = []
    request_id = REQUEST_ID.get()
    if request_id:
        out.append(("X-Request-ID", request_id))
    if ACTIVE is not None:
        injected: dict[str, str] = {}
        ACTIVE._propagate.inject(injected)
        out.extend(injected.items())
    return out


def carrier(headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """The trace context headers of a request (``traceparent`` …), as text."""
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in headers if name in PROPAGATED}


__all__ = [
    "ACTIVE", "RECEIVED", "TRACE", "Traced", "Tracing", "carrier", "check", "endpoint", "outgoing_headers", "setup",
]
