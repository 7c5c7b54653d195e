"""Where payload events go: a file of JSON lines, or an HTTP endpoint.

A sink is shared by every model that names it (one per URL and worker). An
inference only appends to its queue (:meth:`Sink.offer`: no I/O, no
encoding, no waiting); one task per sink takes batches off it, encodes them
on the event loop (yielding every millisecond) and delivers them:

- :class:`FileSink`: one structured CloudEvent per line, appended by a
  thread of its own under an ``flock`` on ``PATH.lock`` (the workers of one
  server share the file). A file that would grow past ``max_bytes`` is
  renamed ``PATH.1`` (``PATH.1`` to ``PATH.2`` … up to ``max_files``, the
  oldest removed) and a new one started; a worker finding that another one
  rotated reopens the path.
- :class:`HttpSink`: binary-mode CloudEvents (one POST per event, as KServe's
  logger sends them) or ``application/cloudevents-batch+json`` batches, over
  one kept-alive connection (a batch's POSTs pipelined), each batch's
  exchange bounded by ``timeout``. An
  unreachable sink drops the batch in hand and waits (0.1 s doubling to 10 s)
  before it tries again; meanwhile the queue fills and further events are
  dropped at the door.

Nothing is ever retried in a loop or kept beyond the queue's bounds; every
event is counted once, as sent or as dropped with a reason, in
``servekit_payload_events_sent_total{sink}`` and
``servekit_payload_events_dropped_total{sink,reason}`` (``queue_full``,
``unreachable``, ``rejected``: the sink answered other than 2xx,
``write_failed``, ``unencodable``, ``failed``: a bug in the sink, logged
with its traceback, ``stopped``: still queued when the worker stopped).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import ssl
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import httptools

from servekit.payloads.events import Attributes, Event, pair

if TYPE_CHECKING:
    from servekit.config import PayloadLogging
    from servekit.dataplane import InferenceCall

log = logging.getLogger("servekit.payloads")

BATCH_JSON = "application/cloudevents-batch+json"
ENCODE_SLICE = 0.001  # seconds of encoding before the sink's task lets requests run
COMPLAIN_EVERY = 60.0  # seconds between two warnings about the same sink
BACKOFF_FIRST, BACKOFF_MAX = 0.1, 10.0
MAX_LABEL = 200


@dataclass(slots=True)
class Pending:
    """One sampled inference waiting for its sink: ``events`` 1 or 2, ``size``
    about the bytes it holds on to, ``ended`` seconds since the epoch."""

    attributes: Attributes
    call: InferenceCall
    ended: float
    events: int
    size: int


class Counters:
    """One sink's children of the sent and dropped counters."""

    def __init__(self, sent: Any, dropped: Any, label: str) -> None:
        self.sent = sent.labels(label)
        self._dropped_family = dropped
        self._label = label
        self._dropped: dict[str, Any] = {}

    def drop(self, reason: str, count: int) -> None:
        child = self._dropped.get(reason)
        if child is None:
            child = self._dropped[reason] = self._dropped_family.labels(self._label, reason)
        child.inc(count)


def label(url: str) -> str:
    """How metrics and logs name a sink: its path, or its URL without user,
    password or query."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        return unquote(parts.path)[:MAX_LABEL]
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path or '/'}"[:MAX_LABEL]


class Sink:
    """A bounded queue of sampled inferences and the task that delivers them."""

    def __init__(self, url: str, options: PayloadLogging, counters: Counters) -> None:
        self.url = url
        self.label = label(url)
        self.options = options
        self.counters = counters
        self.batch_size = options.batch_size
        self.flush_seconds = options.flush_seconds
        self.max_events = options.queue_size
        self.max_bytes = options.queue_bytes
        self.queue: deque[Pending] = deque()
        self.events = 0  # events queued
        self.bytes = 0
        self._inflight = 0  # events taken off the queue, not yet counted
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._complained = -COMPLAIN_EVERY
        self._quiet = 0  # failures since the last warning

    # -- the inference's side: never waits, never raises ---------------------
    def offer(self, item: Pending) -> None:
        """Queue one inference's events, or count them dropped if the queue is full."""
        if self.events + item.events > self.max_events or self.bytes + item.size > self.max_bytes:
            self.counters.drop("queue_full", item.events)
            return
        if self._stopping.is_set():
            self.counters.drop("stopped", item.events)
            return
        self.queue.append(item)
        self.events += item.events
        self.bytes += item.size
        if self.events == item.events or self.events >= self.batch_size:
            self._wake.set()

    # -- the sink's task -------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"payload sink {self.label}")

    async def _run(self) -> None:
        while True:
            if not self.queue:
                if self._stopping.is_set():
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            if self.events < self.batch_size and self.flush_seconds > 0 and not self._stopping.is_set():
                self._wake.clear()  # a part batch waits a little for more
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.flush_seconds):
                        await self._wake.wait()
            batch = self._take()
            try:
                await self.deliver(batch)
            except asyncio.CancelledError:
                self.lost("stopped", self._inflight)
                raise
            except Exception as exc:  # a bug here must not stop the sink
                log.exception("Payload sink %s failed", self.label)
                self.lost("failed", self._inflight)
                self.complain(f"failed: {type(exc).__name__}")

    def _take(self) -> list[Pending]:
        batch: list[Pending] = []
        count = 0
        while self.queue and count < self.batch_size:
            item = self.queue.popleft()
            batch.append(item)
            count += item.events
            self.bytes -= item.size
        self.events -= count
        self._inflight = count
        return batch

    async def encode(self, batch: list[Pending]) -> list[Event]:
        """The batch's events, encoded on the loop a slice at a time."""
        out: list[Event] = []
        until = time.perf_counter() + ENCODE_SLICE
        for item in batch:
            try:
                out.extend(pair(item.attributes, item.call, item.ended))
            except Exception as exc:
                self.lost("unencodable", item.events)
                self.complain(f"could not encode an event: {type(exc).__name__}: {exc}"[:300])
            if time.perf_counter() > until:
                await asyncio.sleep(0)
                until = time.perf_counter() + ENCODE_SLICE
        return out

    async def deliver(self, batch: list[Pending]) -> None:
        raise NotImplementedError

    def sent(self, count: int) -> None:
        self._inflight -= count
        self.counters.sent.inc(count)

    def lost(self, reason: str, count: int) -> None:
        if count > 0:
            self._inflight -= count
            self.counters.drop(reason, count)

    def complain(self, what: str) -> None:
        """A warning about this sink, at most one a minute (saying how many were kept quiet)."""
        now = time.monotonic()
        if now - self._complained < COMPLAIN_EVERY:
            self._quiet += 1
            return
        more = f" ({self._quiet} more problems since the last warning)" if self._quiet else ""
        log.warning("Payload sink %s: %s%s", self.label, what, more)
        self._complained = now
        self._quiet = 0

    async def pause(self, seconds: float) -> None:
        """Wait ``seconds``, or less if the worker stops."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopping.wait()

    async def stop(self, seconds: float) -> None:
        """Deliver what is queued within ``seconds``; count the rest dropped."""
        self._stopping.set()
        self._wake.set()
        task = self._task
        if task is not None:
            done, _ = await asyncio.wait({task}, timeout=seconds)
            if not done:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.events:
            self.counters.drop("stopped", self.events)
        self.queue.clear()
        self.events = self.bytes = 0
        await self.close()

    async def close(self) -> None:
        pass


class FileSink(Sink):
    """JSON lines, one structured CloudEvent each, rotated by size."""

    def __init__(self, url: str, options: PayloadLogging, counters: Counters) -> None:
        super().__init__(url, options, counters)
        self.path = unquote(urlsplit(url).path)
        self.max_file_bytes = options.max_bytes
        self.max_files = options.max_files
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="servekit-payloads")
        self._fd: int | None = None
        self._identity: tuple[int, int] | None = None
        self._lock: int | None = None

    def start(self) -> None:
        super().start()
        folder = os.path.dirname(self.path)
        if not os.access(folder, os.W_OK | os.X_OK):  # said now, not at the first event
            why = "does not exist" if not os.path.isdir(folder) else "is not writable"
            self.complain(f"{folder} {why}: payload events will be dropped until it is")

    async def deliver(self, batch: list[Pending]) -> None:
        events = await self.encode(batch)
        lines = [event.structured() + b"\n" for event in events]
        if not lines:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._write, lines)
        except OSError as exc:
            self.lost("write_failed", len(lines))
            self.complain(f"cannot write {self.path}: {exc.strerror or exc}")
            await asyncio.get_running_loop().run_in_executor(self._executor, self._forget)  # open anew next time
            await self.pause(BACKOFF_FIRST)
            return
        self.sent(len(lines))

    # -- in the sink's thread --------------------------------------------------
    def _write(self, lines: list[bytes]) -> None:
        if self._lock is None:
            self._lock = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        try:
            size = self._size()
            chunk: list[bytes] = []
            for line in lines:
                if size > 0 and size + len(line) > self.max_file_bytes:
                    self._append(b"".join(chunk))
                    chunk = []
                    self._rotate()
                    size = 0
                chunk.append(line)
                size += len(line)
            self._append(b"".join(chunk))
        finally:
            fcntl.flock(self._lock, fcntl.LOCK_UN)

    def _size(self) -> int:
        """The current file's size; (re)opened first if it is not the file at the path
        (never opened, or renamed by another worker's rotation)."""
        try:
            st = os.stat(self.path)
            identity: tuple[int, int] | None = (st.st_dev, st.st_ino)
        except FileNotFoundError:
            identity = None
        if self._fd is None or identity != self._identity:
            self._open()
        assert self._fd is not None
        return os.fstat(self._fd).st_size

    def _open(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        st = os.fstat(self._fd)
        self._identity = (st.st_dev, st.st_ino)

    def _append(self, data: bytes) -> None:
        assert self._fd is not None
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    def _rotate(self) -> None:
        if self.max_files == 0:
            os.unlink(self.path)
        else:
            for index in range(self.max_files - 1, 0, -1):
                older = f"{self.path}.{index}"
                if os.path.exists(older):
                    os.replace(older, f"{self.path}.{index + 1}")
            os.replace(self.path, f"{self.path}.1")
        self._open()

    def _forget(self) -> None:
        for fd in (self._fd, self._lock):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._fd = self._lock = None
        self._identity = None

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._forget)
        self._executor.shutdown(wait=False)


class _Replies:
    """httptools' callbacks for the responses to pipelined requests, in order
    (their bodies are read and dropped)."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.keep_alive = True  # the last response's
        self.in_message = False  # a response's head is read, its end not yet
        self.parser = httptools.HttpResponseParser(self)

    def on_headers_complete(self) -> None:
        self.in_message = True
        # asked now: once a message is complete the parser no longer knows
        self.status = int(self.parser.get_status_code())
        self.keep_alive = bool(self.parser.should_keep_alive())

    def on_message_complete(self) -> None:
        self.in_message = False
        self.statuses.append(self.status)

    def ended(self) -> None:
        """The connection ended: a response whose body runs to the end is complete."""
        if self.in_message:
            self.on_message_complete()
        self.keep_alive = False


# what an exchange with an HTTP sink can fail with (ssl.SSLError is an OSError)
SEND_ERRORS = (OSError, TimeoutError, EOFError, httptools.HttpParserError)


class HttpSink(Sink):
    """CloudEvents over HTTP/1.1: binary mode, one POST per event (KServe's), or
    structured batches (``format: batch``). The POSTs of a batch are
    pipelined on one kept-alive connection: written at once, answered in
    order; those a closing connection left unanswered go again on a new one."""

    def __init__(self, url: str, options: PayloadLogging, counters: Counters) -> None:
        super().__init__(url, options, counters)
        parts = urlsplit(url)
        self.host = parts.hostname or ""
        secure = parts.scheme == "https"
        self.port = parts.port or (443 if secure else 80)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host = f"[{self.host}]" if ":" in self.host else self.host
        host_header = host if parts.port is None else f"{host}:{parts.port}"
        self.head = f"POST {target} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: servekit\r\n"
        self.tls = ssl.create_default_context() if secure else None
        self.batched = options.format == "batch"
        self.timeout = options.timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._failures = 0
        self._fresh = False  # the connection has not carried an exchange yet

    def message(self, headers: list[tuple[str, str]], body: bytes) -> bytes:
        """One POST, head and body."""
        lines = "".join(f"{name}: {value}\r\n" for name, value in headers)
        return f"{self.head}Content-Length: {len(body)}\r\n{lines}\r\n".encode("latin-1") + body

    async def deliver(self, batch: list[Pending]) -> None:
        if self._writer is None:  # connect first: nothing is encoded for a sink that is down
            try:
                async with asyncio.timeout(self.timeout):
                    await self._connect()
            except SEND_ERRORS as exc:
                self.lost("unreachable", self._inflight)
                self.complain(f"cannot connect: {type(exc).__name__}: {exc}"[:300])
                await self._back_off()
                return
        events = await self.encode(batch)
        if not events:
            return
        pending: list[tuple[bytes, int]]  # (message, events in it)
        if self.batched:
            body = b"[" + b",".join(event.structured() for event in events) + b"]"
            pending = [(self.message([("content-type", BATCH_JSON)], body), len(events))]
        else:
            pending = [(self.message(event.headers(), event.data or b""), 1) for event in events]
        retried = False
        while pending:
            reused = self._writer is not None and not self._fresh
            statuses: list[int] = []  # of the answered messages, even when the exchange then fails
            try:
                await self._pipeline([message for message, _ in pending], statuses)
            except SEND_ERRORS as exc:
                failure = f"{type(exc).__name__}: {exc}"
            else:
                failure = "the sink closed the connection before answering"
            for (_, count), status in zip(pending, statuses, strict=False):
                if 200 <= status < 300:
                    self.sent(count)
                else:
                    self.lost("rejected", count)
                    self.complain(f"answered {status} to an event")
            pending = pending[len(statuses):]
            if pending and not statuses:
                if reused and not retried:  # a kept-alive connection the sink had closed: once more
                    retried = True
                    continue
                self.lost("unreachable", sum(count for _, count in pending))
                self.complain(f"cannot deliver events: {failure}"[:300])
                await self._back_off()
                return
        self._failures = 0

    async def _back_off(self) -> None:
        self._failures += 1
        if self._stopping.is_set():
            return  # stopping: what is left is counted, not retried
        await self.pause(min(BACKOFF_FIRST * 2 ** (self._failures - 1), BACKOFF_MAX))

    async def _pipeline(self, messages: list[bytes], statuses: list[int]) -> None:
        """Send ``messages`` at once and read the answers: ``statuses`` gets those
        of the answered ones, in order (fewer than sent when the sink closed the
        connection or the time ran out)."""
        try:
            async with asyncio.timeout(self.timeout):
                if self._writer is None:
                    await self._connect()
                assert self._reader is not None and self._writer is not None
                self._writer.write(b"".join(messages))
                await self._writer.drain()
                replies = _Replies(statuses)
                while len(replies.statuses) < len(messages) and replies.keep_alive:
                    data = await self._reader.read(1 << 16)
                    if not data:
                        replies.ended()
                        break
                    replies.parser.feed_data(data)
                self._fresh = False
                del statuses[len(messages):]  # answers nobody asked for
                if len(statuses) < len(messages) or not replies.keep_alive:
                    self._disconnect()
        except BaseException:
            self._disconnect()
            raise

    async def _connect(self) -> None:
        try:
            self._reader, self._writer = await asyncio.open_connection(
                self.host, self.port, ssl=self.tls, limit=1 << 16)
            self._fresh = True
        except BaseException:
            self._disconnect()
            raise

    def _disconnect(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None

    async def close(self) -> None:
        self._disconnect()


def make_sink(url: str, options: PayloadLogging, counters: Counters) -> Sink:
    return FileSink(url, options, counters) if url.startswith("file:") else HttpSink(url, options, counters)


__all__ = ["Counters", "FileSink", "HttpSink", "Pending", "Sink", "label", "make_sink"]
