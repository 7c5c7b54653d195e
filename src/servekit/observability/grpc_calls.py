"""A gRPC call's request id (``x-request-id`` metadata in, trailing metadata
out) and, with tracing on, its span (parent from ``traceparent`` metadata).
Used by :func:`servekit.protocols.grpc_errors.rpc`, which wraps every unary
method of servekit's gRPC services."""

from __future__ import annotations

import time
from typing import Any

from servekit.observability import tracing
from servekit.observability.request_id import METADATA, REQUEST_ID, from_metadata, new_id
from servekit.observability.tracing import Traced

_TRACE_KEYS = frozenset(("traceparent", "tracestate", "baggage"))


def begin(context: Any, name: str) -> Traced | None:
    """Bind the call's request id (InvalidInput for one that is not 1-128
    printable ASCII characters) and start its span when tracing is on."""
    tracer = tracing.ACTIVE
    carrier: dict[str, str] = {}
    given = False
    for key, value in context.invocation_metadata() or ():
        if key == METADATA:
            if isinstance(value, bytes):
                value = value.decode("latin-1")
            REQUEST_ID.set(from_metadata(value))
            given = True
        elif tracer is not None and key in _TRACE_KEYS and isinstance(value, str):
            carrier[key] = value
    if not given and REQUEST_ID.get() is not None:
        REQUEST_ID.set(None)
    if tracer is None:
        return None
    return tracer.begin(name, carrier, time.time_ns(), {"rpc.system": "grpc", "rpc.method": name})


def end(context: Any, traced: Traced | None, error: str | None = None) -> None:
    """Send the request id as trailing metadata; end the span."""
    request_id = REQUEST_ID.get()
    if request_id is None:
        request_id = new_id()
        REQUEST_ID.set(request_id)
    context.set_trailing_metadata(((METADATA, request_id),))
    if traced is not None and tracing.ACTIVE is not None:
        tracing.ACTIVE.end(traced, time.time_ns(), error=error)


__all__ = ["begin", "end"]
