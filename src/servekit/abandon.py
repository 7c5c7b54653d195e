"""Work for a client that left is dropped before it runs.

The HTTP server gives each request a :class:`Watch` (in :data:`WATCH`, a
context variable of the request's task). When the client closes its side of the
connection while the request still waits in a model's queue, the wait ends at
once with :class:`Abandoned` and the request never runs; a request that starts
at once (an idle model) or is already running is not interrupted. This is
HAProxy's ``abortonclose``: a client that only half-closes (``nc -N``) is still
answered when the model is idle, and not when the request would have to queue;
``abort_on_close: false`` keeps every request of such clients. gRPC needs no
watch: a cancelled call cancels its handler, and the batcher drops its entry.
"""

from __future__ import annotations

import asyncio
from contextvars import ContextVar
from typing import Any

from servekit.errors import Overloaded


class Abandoned(Overloaded):
    """The client closed the connection while its request waited to start (503)."""


class Watch:
    __slots__ = ("closed", "waiter")

    def __init__(self) -> None:
        self.closed = False
        self.waiter: asyncio.Future[Any] | None = None  # the queue entry the request waits on

    def close(self) -> None:
        self.closed = True
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(gone())


def gone() -> Abandoned:
    return Abandoned("the client closed the connection while the request waited in the model's queue; it was not run")


WATCH: ContextVar[Watch | None] = ContextVar("servekit_request_watch", default=None)
