"""Connections spread over the workers by how many each holds.

With a listening socket per worker (SO_REUSEPORT) the kernel picks a worker
by a hash of the client's address and port: two kept-alive connections land
on one worker half of the time and leave the other core idle, and 64 of them
split 28/36 as often as 32/32, so one worker's queue is longer and its tail
latency with it. A proxy in front of the server (KServe's queue-proxy, an
Envoy sidecar) holds a few long-lived connections, which is where it hurts.

Instead the supervisor opens each HTTP socket once, before forking, and every
worker accepts from the one queue, least connections first: each worker
publishes how many connections it holds in memory shared across fork (one
64-bit slot per worker, -1 for a worker not serving now), and a worker that
holds more than a sibling leaves a waiting connection to it, looking again
every ``POLL_SECONDS``. Nothing waits on a sibling for long: if the
connection is still there after ``DEFER_SECONDS`` (the sibling is busy
running a long request), the worker takes it anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import mmap
import socket
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from servekit.server.http_server import HttpServer

log = logging.getLogger("servekit.server")

DEFER_SECONDS = 0.005  # how long a busier worker leaves a connection to a less busy sibling
POLL_SECONDS = 0.0005  # meanwhile it looks again this often (the counts change as siblings accept)
ACCEPT_BATCH = 16  # connections taken in one go (then the reader is called again)
_RESOURCE_ERRORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


class Loads:
    """The open connections of each worker, in memory shared across fork."""

    def __init__(self, workers: int) -> None:
        self._map = mmap.mmap(-1, 8 * max(workers, 1))  # anonymous and shared: children see writes
        self.slots = memoryview(self._map).cast("q")
        for index in range(workers):
            self.slots[index] = -1

    def absent(self, index: int) -> None:
        """A worker that died: not counted until its replacement serves."""
        self.slots[index] = -1

    def share(self, index: int) -> Share:
        return Share(self.slots, index)


class Share:
    """One worker's view of the loads: its own slot to write, the others to read."""

    def __init__(self, slots: memoryview, index: int) -> None:
        self.slots = slots
        self.index = index
        self.connections = 0

    def publish(self, connections: int) -> None:
        self.connections = connections
        self.slots[self.index] = connections

    def my_turn(self) -> bool:
        """Whether no serving sibling holds fewer connections than this worker
        (two workers can never both wait on the other: one holds fewer)."""
        mine = self.connections
        return not any(0 <= count < mine for count in self.slots)  # its own slot is never < mine


class BalancedListener:
    """Accepts on a socket shared by the workers when this worker's turn comes
    (see the module's doc); the accepted connections are served as
    ``loop.create_server`` would serve them."""

    def __init__(self, server: HttpServer, sock: socket.socket, share: Share) -> None:
        self.server = server
        self.loop = server.loop
        self.sock = sock
        self.share = share
        self.fd = sock.fileno()
        self.reading = False
        self.timer: asyncio.TimerHandle | None = None
        self.waiting_since: float | None = None  # when a connection was first left to a sibling
        self.closed = False
        self._read()

    def _read(self) -> None:
        if not self.reading and not self.closed:
            self.loop.add_reader(self.fd, self._readable)
            self.reading = True

    def _pause(self, seconds: float) -> None:
        """Stop reading for ``seconds``; then a connection still waiting calls
        ``_readable`` again."""
        if self.reading:
            self.loop.remove_reader(self.fd)
            self.reading = False
        if self.timer is None:
            self.timer = self.loop.call_later(seconds, self._resume)

    def _resume(self) -> None:
        self.timer = None
        self._read()

    def _readable(self) -> None:
        if self.share.my_turn():
            self.waiting_since = None
            self._accept(force=False)
            return
        # a sibling holds fewer: leave it the connection, and look again shortly
        now = self.loop.time()
        since = self.waiting_since
        if since is None or now - since > DEFER_SECONDS + 0.05:  # none, or left from an earlier wait
            self.waiting_since = since = now
        if now - since >= DEFER_SECONDS:  # the sibling is busy: take it
            self.waiting_since = None
            self._accept(force=True)
        else:
            self._pause(POLL_SECONDS)

    def _accept(self, force: bool) -> None:
        for taken in range(ACCEPT_BATCH):
            if (taken or not force) and not self.share.my_turn():
                return
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return  # a sibling took it
            except OSError as exc:
                if exc.errno in _RESOURCE_ERRORS:  # out of descriptors or memory: wait, as asyncio does
                    log.warning("Could not accept a connection: %s; retrying in 0.1 s", exc)
                    self._pause(0.1)
                    return
                continue  # ECONNABORTED and the like: that connection only
            self.server.adopt(conn)

    def close(self) -> None:
        """Stop accepting. The socket stays open: the other workers and the
        supervisor share it."""
        self.closed = True
        if self.reading:
            with contextlib.suppress(ValueError, OSError):
                self.loop.remove_reader(self.fd)
            self.reading = False
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
