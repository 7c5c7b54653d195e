"""servekit's HTTP/1.1 server: an asyncio buffered protocol speaking ASGI.

Why not uvicorn: a request body with a Content-Length is received straight
into one buffer (``recv_into``), with no per-chunk Python callbacks, copies or
pause/resume round trips; a 60 MB binary tensor arrives in about half the
time, and small requests skip the per-request machinery the application does
not use (streaming bodies, lifespan, middleware). Request lines and headers
are parsed by httptools, the parser uvicorn uses; chunked bodies are decoded
here, so that a message ends exactly where its framing says.

Supported: keep-alive and pipelined requests (answered in order, one at a
time, reading paused while answers wait for the client), HTTP/1.0,
``Expect: 100-continue``, chunked request bodies, the body-size limit before
reading (the application answers 413 and the connection closes after a
lingering read), idle and request-body timeouts and graceful shutdown.

Defences, each against an attack on an earlier version:

* a body buffer grows with the bytes received (it starts at most at 1 MiB and
  doubles), so a Content-Length alone reserves nothing;
* a body must keep arriving: ``body_timeout`` seconds without a byte, or a
  mean rate under ``body_min_rate`` after the first ``body_timeout`` seconds,
  and the server answers 408 and closes;
* bytes after a chunked body's terminator start the next request;
* pipelined requests are parsed in place (no copy of the rest of the buffer
  per request); while a request is handled at most 64 KiB more are read, and
  while the client does not read its answers nothing is read at all;
* response heads with CR, LF or NUL in a header, or a status outside
  200..599, become a generic 500 (no response splitting);
* ``Connection: close`` closes after the answer whatever the method;
* errors that leave request bytes unread (413, 400 …) half-close and read
  and discard for up to ``linger_timeout`` seconds before closing, so the
  client sees the answer rather than a reset.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import ctypes
import logging
import os
import re
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast
from urllib.parse import unquote

import httptools

from servekit.abandon import WATCH, Watch
from servekit.observability.request_id import VALID_BYTES as REQUEST_ID_VALUE
from servekit.observability.tracing import RECEIVED
from servekit.server.balance import BalancedListener, Share
from servekit.server.http import BODY

log = logging.getLogger("servekit.server")

ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]
# an application's answer of a request in the protocol's callback: (method, path,
# headers, body, local address) -> (status, headers, body), or None; the headers
# may come ready as bytes, the status line and header lines of ok_json_head
Express = Callable[
    [str, str, list[tuple[bytes, bytes]], bytes, Any],
    tuple[int, list[tuple[bytes, bytes]] | bytes, bytes] | None,
]

_HEAD_LIMIT = 64 * 1024  # request line + headers (also chunked trailers)
# heads parsed before, by their bytes: clients send the same head again and
# again (same path, headers and length), and its parse is the same each time;
# heads up to this size are kept, up to this many (then all are forgotten)
_HEAD_KEPT_BYTES = 1024
_HEADS_KEPT = 256
_HEADS: dict[bytes, _Head] = {}
# pipelined requests answered in one callback by the application's express
# handler: the next goes to a task, so that other connections get their turn
_EXPRESS_RUN = 32
_BUFFER_SIZE = 16 * 1024
_PIPELINE_LIMIT = _HEAD_LIMIT  # unparsed bytes read ahead while a request is handled
_BUFFER_LIMIT = 2 * _HEAD_LIMIT + _BUFFER_SIZE  # the head buffer grows no larger (but always fits what it holds)
_BODY_PREALLOC = 1024 * 1024  # a body buffer starts at most this large and doubles as bytes arrive
_CHUNK_LINE_LIMIT = 4096  # a chunk-size line with its extensions
_LINGER_LIMIT = 64 * 1024 * 1024  # bytes read and discarded after an error answer
_ALIGNMENT = 64
_REASONS = {
    200: b"OK", 201: b"Created", 202: b"Accepted", 204: b"No Content", 400: b"Bad Request",
    401: b"Unauthorized", 403: b"Forbidden", 404: b"Not Found", 405: b"Method Not Allowed",
    408: b"Request Timeout", 409: b"Conflict", 413: b"Payload Too Large", 431: b"Request Header Fields Too Large",
    500: b"Internal Server Error", 501: b"Not Implemented", 503: b"Service Unavailable",
    504: b"Gateway Timeout", 507: b"Insufficient Storage",
}
_STATUS_LINES = {status: b"HTTP/1.1 %d %s\r\n" % (status, reason) for status, reason in _REASONS.items()}
_INVALID_RESPONSE = b"the server produced an invalid response"
_TOO_MANY_CONNECTIONS = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\nretry-after: 1\r\n"
    b"connection: close\r\ncontent-length: 52\r\n\r\nthis server has too many connections; retry shortly\n"
)
# chunk-size [ BWS ; chunk-ext ] with at most 16 hex digits (no overflow) and no control characters
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})(?:[ \t]*;[\t\x20-\x7e\x80-\xff]*)?")
_TRAILER_LINE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[\t\x20-\x7e\x80-\xff]*")
# chunked decoding states
_SIZE, _DATA, _DATA_END, _TRAILER = range(4)

_resize = ctypes.pythonapi.PyByteArray_Resize  # grows a bytearray without zero-filling the new part
_resize.argtypes = (ctypes.py_object, ctypes.c_ssize_t)
_resize.restype = ctypes.c_int


class _Head:
    """httptools callbacks for one request's line and headers; then its method,
    HTTP version and framing (Content-Length, Transfer-Encoding, Connection;
    None when the length is invalid)."""

    __slots__ = ("complete", "framing", "headers", "method", "url", "version")

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.complete = False
        self.method = b""
        self.version = ""
        self.framing: tuple[int | None, bytes | None, bytes | None] | None = None

    def copy(self) -> _Head:
        """Another request's head of the same bytes (a list of headers of its own)."""
        other = _Head()
        other.url, other.headers, other.complete = self.url, list(self.headers), True
        other.method, other.version, other.framing = self.method, self.version, self.framing
        return other

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self.complete = True


class _Chunked:
    """A chunked request body being decoded."""

    __slots__ = ("body", "remaining", "state", "trailers")

    def __init__(self) -> None:
        self.body = bytearray()
        self.state = _SIZE
        self.remaining = 0  # bytes of the current chunk still to come
        self.trailers = 0  # bytes of trailer fields so far


class HttpProtocol(asyncio.BufferedProtocol):
    def __init__(self, server: HttpServer, scheme: str = "http") -> None:
        self.server = server
        self.scheme = scheme  # "https" on a TLS listener (the transport decrypts; nothing else differs)
        self.cycle: _Cycle | None = None  # the request being answered
        self.app = server.app
        self.express = server.express
        self.loop = server.loop
        self.transport: asyncio.Transport | None = None
        self.client: tuple[str, int] | None = None
        self.local: tuple[str, int] | None = None
        # unparsed bytes are buffer[start:filled]; the buffer is never resized in
        # place (the transport may still hold a view of it), only replaced
        self.buffer = bytearray(_BUFFER_SIZE)
        self.view = memoryview(self.buffer)
        self.start = 0
        self.filled = 0
        self.scanned = 0  # buffer[start:scanned] holds no end of head and no bare LF
        # a Content-Length body being received: body[shift : shift + received] of
        # `length` bytes; the buffer holds `capacity` of them (plus _ALIGNMENT
        # bytes of slack when its binary tensors are aligned) and grows as they come
        self.body: bytearray | None = None
        self.length = 0
        self.received = 0
        self.capacity = 0
        self.shift = 0
        self.tensors = -1  # where a binary-tensor body's tensors start, else -1
        self.chunk: _Chunked | None = None  # a chunked body being decoded
        self.body_since = 0.0  # when the body began
        self.progress_at = 0.0  # when a byte of it last arrived
        self.head: _Head | None = None
        self.expressed = 0  # requests answered in this callback by express (see _EXPRESS_RUN)
        self.busy = False  # a request is being handled
        self.closing = False
        self.keep_alive = True
        self.eof = False  # the client will send nothing more
        self.reading = True
        self.write_paused = False
        self.unread_body = False  # the request's body is refused unread: linger before closing
        self.lingering = False
        self.linger_until = 0.0
        self.discarded = 0
        self.idle_since = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0.0

    # -- connection ---------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self.transport = cast(asyncio.Transport, transport)
        self.client = _address(transport.get_extra_info("peername"))
        self.local = _address(transport.get_extra_info("sockname"))
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if len(self.server.connections) >= self.server.max_connections:
            # over the limit: say so and close, rather than hold one more socket
            self.closing = True
            self.transport.write(_TOO_MANY_CONNECTIONS)
            self.transport.close()
            return
        self.server.connections.add(self)
        self.server.publish()
        self.idle_since = self.loop.time()
        self._schedule(self.idle_since + self.server.keep_alive_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.server.publish()
        self.closing = True
        if self.cycle is not None:
            self.cycle.watch.close()  # nobody can read its answer: if it still waits to run, it never does
        self.body = self.chunk = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def close(self) -> None:
        self.closing = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def shutdown(self) -> None:
        """Close now if idle, else after the response in progress."""
        self.keep_alive = False
        if not self.busy and self.body is None and self.chunk is None and self.filled == self.start:
            self.close()

    def pause_writing(self) -> None:
        # the client does not read its answers: answer no more and read no more until it does
        self.write_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if not self.busy and not self.closing and not self.lingering:
            self._parse()
        self._update_reading()
        self._close_if_finished()

    def _update_reading(self) -> None:
        want = self.lingering or (
            not self.write_paused and (not self.busy or self.filled - self.start < _PIPELINE_LIMIT)
        )
        if want != self.reading and not self.closing and self.transport is not None:
            self.reading = want
            if want:
                self.transport.resume_reading()
            else:
                self.transport.pause_reading()

    # -- timeouts: one timer, looked at lazily ------------------------------------
    def _schedule(self, when: float) -> None:
        """Make sure the timer fires no later than ``when``."""
        if self.timer is None or when < self.timer_at:
            if self.timer is not None:
                self.timer.cancel()
            self.timer = self.loop.call_at(when, self._on_timer)
            self.timer_at = when

    def _on_timer(self) -> None:
        self.timer = None
        if self.closing:
            return
        server = self.server
        now = self.loop.time()
        if self.lingering:
            deadline = self.linger_until
            if now >= deadline:
                self.close()
                return
        elif self.busy:
            deadline = now + server.keep_alive_timeout  # the application takes its time
        elif self.body is not None or self.chunk is not None:
            deadline = self._body_deadline()
            if now >= deadline:
                self._reject(408, b"the request body did not arrive in time; the connection is closed")
                return
        else:
            deadline = self.idle_since + server.keep_alive_timeout
            if now >= deadline:
                self.close()
                return
        self._schedule(deadline)

    def _body_deadline(self) -> float:
        """A body must make progress (a byte every ``body_timeout`` seconds) and,
        after ``body_timeout`` seconds, arrive at ``body_min_rate`` bytes/s."""
        server = self.server
        stalled = self.progress_at + server.body_timeout
        if server.body_min_rate <= 0:
            return stalled
        received = self.received if self.body is not None else len(self.chunk.body) if self.chunk else 0
        return min(stalled, self.body_since + server.body_timeout + received / server.body_min_rate)

    def _begin_body_timer(self) -> None:
        self.body_since = self.progress_at = self.loop.time()
        self._schedule(self.body_since + self.server.body_timeout)

    # -- receiving ------------------------------------------------------------
    def get_buffer(self, sizehint: int) -> memoryview:
        if self.body is not None:
            if self.received == self.capacity:
                self._grow_body()
            assert self.body is not None
            return memoryview(self.body)[self.shift + self.received : self.shift + self.capacity]
        if self.lingering:
            return self.view  # read and discarded
        if len(self.buffer) - self.filled < 4096:
            pending = self.filled - self.start
            size = max(_BUFFER_SIZE, min(2 * pending + 4096, _BUFFER_LIMIT), pending + 4096)
            fresh = bytearray(size)
            fresh[:pending] = self.view[self.start : self.filled]
            self.scanned = max(0, self.scanned - self.start)
            self.buffer, self.view, self.start, self.filled = fresh, memoryview(fresh), 0, pending
        return self.view[self.filled :]

    def buffer_updated(self, nbytes: int) -> None:
        if self.body is not None:
            self.received += nbytes
            self.progress_at = self.loop.time()
            if self.received == self.length:
                self._body_complete()
            return
        if self.lingering:
            self.discarded += nbytes
            if self.discarded > _LINGER_LIMIT:
                self.close()
            return
        self.filled += nbytes
        if self.chunk is not None:
            self.progress_at = self.loop.time()
        if not self.busy:
            self._parse()
        if self.busy and self.filled - self.start >= _PIPELINE_LIMIT:
            self._update_reading()  # pipelined data waits for the response

    def eof_received(self) -> bool | None:
        # the client sends nothing more (it may still read): the complete requests
        # it sent are answered, then the connection closes
        self.eof = True
        if self.cycle is not None and self.server.abort_on_close:
            self.cycle.watch.close()
        self._close_if_finished()
        return True

    def _close_if_finished(self) -> None:
        """After the client's EOF, close once nothing more can be answered (what
        is left unparsed when idle is an incomplete request)."""
        if self.eof and (self.lingering or (not self.busy and not self.write_paused)):
            self.close()

    def _parse(self) -> None:
        """Consume what the buffer holds: heads, chunked bodies or a body's start."""
        buffer = self.buffer
        self.expressed = 0
        while not self.busy and not self.closing and not self.write_paused and self.filled > self.start:
            if self.chunk is not None:
                if not self._feed_chunked():
                    return
                continue
            start, filled = self.start, self.filled
            end = buffer.find(b"\r\n\r\n", max(start, self.scanned - 3), filled)
            if end < 0:
                # a head must end in CRLF CRLF; one with a bare LF never would
                newline = buffer.find(b"\n", max(start, self.scanned), filled)
                while newline >= 0:
                    if newline == start or buffer[newline - 1] != 13:
                        self._reject(400, b"malformed HTTP request: lines must end with CRLF")
                        return
                    newline = buffer.find(b"\n", newline + 1, filled)
                self.scanned = filled
                if filled - start > _HEAD_LIMIT:
                    self._reject(431, b"request headers too large")
                return
            if not self._start_request(end + 4):
                return

    def _start_request(self, head_end: int) -> bool:
        """Parse the head ending at ``head_end``; dispatch the request or begin its body.
        True when the buffer is to be parsed further."""
        raw = self.view[self.start : head_end]
        key = bytes(raw) if head_end - self.start <= _HEAD_KEPT_BYTES else None
        known = _HEADS.get(key) if key is not None else None
        if known is not None:  # this very head was parsed before: its parse again
            head = known.copy()
        else:
            head = _Head()
            parser = httptools.HttpRequestParser(head)
            upgrade = False
            try:
                parser.feed_data(raw)
            except httptools.HttpParserUpgrade:
                upgrade = True  # CONNECT or Upgrade: answered as an ordinary request (or refused below)
            except httptools.HttpParserError as exc:
                self._reject(400, f"malformed HTTP request: {exc}".encode())
                return False
            if not head.complete:
                self._reject(400, b"malformed HTTP request")
                return False
            head.method = parser.get_method()
            head.version = parser.get_http_version()
            try:
                head.framing = _framing(head.headers)
            except ValueError:
                head.framing = None
            if key is not None and not upgrade and head.framing is not None:
                if len(_HEADS) >= _HEADS_KEPT:
                    _HEADS.clear()
                _HEADS[key] = head.copy()
        self._consume(head_end - self.start)
        if head.method == b"CONNECT":
            self._reject(405, b"CONNECT is not supported")
            return False
        if head.framing is None:
            self._reject(400, b"malformed HTTP request: invalid Content-Length")
            return False
        length, coding, connection = head.framing
        self.head = head
        if connection is None:
            self.keep_alive = head.version == "1.1"
        else:
            tokens = {token.strip() for token in connection.lower().split(b",")}
            self.keep_alive = b"close" not in tokens and (b"keep-alive" in tokens or head.version == "1.1")
        if coding is not None:
            if coding.strip(b" \t").lower() != b"chunked":
                self._reject(501, b"unsupported Transfer-Encoding; only chunked is")
                return False
            self.chunk = _Chunked()
            self._begin_body_timer()
            self._continue_if_expected(head)
            return True
        if not length:
            if self.express is not None and self._express(b""):
                return not self.closing
            self._dispatch(b"")
            return True
        if length > self.server.max_body:
            # the application answers 413 from the Content-Length; the body stays unread
            self.keep_alive = False
            self.unread_body = True
            self._dispatch(b"")
            return False
        available = self.filled - self.start
        if available >= length:
            body = bytes(self.view[self.start : self.start + length])
            self._consume(length)
            if self.express is not None and self._express(body):
                return not self.closing
            self._dispatch(body)
            return True
        self._continue_if_expected(head)
        self._begin_body(length, head.headers)
        return False

    def _continue_if_expected(self, head: _Head) -> None:
        for name, value in head.headers:
            if name == b"expect" and value.lower() == b"100-continue" and self.transport is not None:
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _begin_body(self, length: int, headers: list[tuple[bytes, bytes]]) -> None:
        """Receive a ``length``-byte body into a buffer that starts small and grows.
        A request in Triton's binary tensor format gets its tensor bytes (after the
        JSON header) 64-byte aligned, so numpy and BLAS work on them in place."""
        self.tensors = _tensors_offset(length, headers)
        self.length = length
        self.capacity = min(length, _BODY_PREALLOC)
        available = self.filled - self.start
        if self.tensors < 0:
            self.body = bytearray(self.capacity)
            self.shift = 0
        else:
            self.body = bytearray(self.capacity + _ALIGNMENT)
            self.shift = -(_address_of(self.body) + self.tensors) % _ALIGNMENT
        self.body[self.shift : self.shift + available] = self.view[self.start : self.filled]
        self.received = available
        self._consume(available)
        self._begin_body_timer()

    def _grow_body(self) -> None:
        """Double the body buffer (up to the body's length), keeping the alignment."""
        body = self.body
        assert body is not None
        capacity = min(self.length, 2 * self.capacity)
        slack = _ALIGNMENT if self.tensors >= 0 else 0
        try:
            _resize(body, capacity + slack)  # realloc: large buffers move without a copy
        except BufferError:  # a view of it is still held somewhere: grow into a new one
            fresh = bytearray(capacity + slack)
            shift = -(_address_of(fresh) + self.tensors) % _ALIGNMENT if slack else 0
            fresh[shift : shift + self.received] = memoryview(body)[self.shift : self.shift + self.received]
            self.body, self.shift = fresh, shift
        else:
            if slack:
                address = _address_of(body)
                shift = -(address + self.tensors) % _ALIGNMENT
                if shift != self.shift:
                    ctypes.memmove(address + shift, address + self.shift, self.received)
                    self.shift = shift
        self.capacity = capacity

    def _body_complete(self) -> None:
        body, shift, length = self.body, self.shift, self.length
        assert body is not None
        self.body = None
        self.received = self.capacity = 0
        if self.tensors < 0:
            self._dispatch(body)  # exactly `length` bytes
            return
        body[:shift] = bytes(shift)  # the slack was never written: zero it
        body[shift + length :] = bytes(len(body) - shift - length)
        self._dispatch(memoryview(body)[shift : shift + length])

    def _feed_chunked(self) -> bool:
        """Decode what the buffer holds of a chunked body; True once it is whole
        (and dispatched) with the bytes after it left for the next request."""
        chunk = self.chunk
        assert chunk is not None
        buffer, view = self.buffer, self.view
        start, filled = self.start, self.filled
        try:
            while start < filled:
                state = chunk.state
                if state == _DATA:
                    take = min(chunk.remaining, filled - start)
                    chunk.body += view[start : start + take]
                    start += take
                    chunk.remaining -= take
                    if not chunk.remaining:
                        chunk.state = _DATA_END
                elif state == _DATA_END:
                    if buffer[start] != 13 or (filled - start > 1 and buffer[start + 1] != 10):
                        self._reject(400, b"malformed chunked body: chunk data not followed by CRLF")
                        return False
                    if filled - start < 2:
                        return False
                    start += 2
                    chunk.state = _SIZE
                else:  # a chunk-size line or a trailer line
                    newline = buffer.find(b"\n", start, filled)
                    if newline < 0:
                        if filled - start > _CHUNK_LINE_LIMIT:
                            self._reject(400, b"malformed chunked body: line too long")
                            return False
                        return False
                    if newline == start or buffer[newline - 1] != 13:
                        self._reject(400, b"malformed chunked body: lines must end with CRLF")
                        return False
                    line = bytes(view[start : newline - 1])
                    start = newline + 1
                    if state == _SIZE:
                        match = _CHUNK_SIZE.fullmatch(line)
                        if match is None:
                            self._reject(400, b"malformed chunked body: invalid chunk size")
                            return False
                        size = int(match.group(1), 16)
                        if not size:
                            chunk.state = _TRAILER
                        elif len(chunk.body) + size > self.server.max_body:
                            start = filled
                            self._too_large()
                            return False
                        elif filled - start >= size + 2 and buffer[start + size] == 13 and buffer[start + size + 1] == 10:
                            chunk.body += view[start : start + size]  # the whole chunk is here: no state change
                            start += size + 2
                        else:
                            chunk.remaining = size
                            chunk.state = _DATA
                    elif line:
                        chunk.trailers += len(line) + 2
                        if chunk.trailers > _HEAD_LIMIT:
                            self._reject(431, b"chunked trailers too large")
                            return False
                        if _TRAILER_LINE.fullmatch(line) is None:
                            self._reject(400, b"malformed chunked body: invalid trailer field")
                            return False
                    else:  # the end of the message
                        self.chunk = None
                        self._consume(start - self.start)
                        start = self.start
                        self._dispatch(chunk.body)
                        return True
            return False
        finally:
            if self.chunk is chunk and not self.closing and not self.lingering:
                self._consume(start - self.start)

    def _too_large(self) -> None:
        """A chunked body past the limit: the application answers 413, the rest is discarded."""
        self.chunk = None
        self.keep_alive = False
        self.unread_body = True
        self.start = self.filled = self.scanned = 0
        self._dispatch(b"", too_large=True)

    def _consume(self, count: int) -> None:
        self.start += count
        if self.start >= self.filled:
            self.start = self.filled = self.scanned = 0

    def _reject(self, status: int, message: bytes) -> None:
        """Answer an error the request caused and close (after a lingering read)."""
        self.head = None
        self.body = self.chunk = None
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(
                b"HTTP/1.1 %d %s\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n"
                b"connection: close\r\n\r\n%s" % (status, _REASONS.get(status, b""), len(message), message)
            )
        self._linger()

    def _linger(self) -> None:
        """Half-close after the answer and discard what the client still sends
        (bounded in time and bytes): closing with unread bytes resets the
        connection, and a client still sending would lose the answer."""
        transport = self.transport
        if self.closing or transport is None or transport.is_closing() or self.eof or not transport.can_write_eof():
            self.close()
            return
        self.lingering = True
        self.keep_alive = False
        self.start = self.filled = self.scanned = 0
        transport.write_eof()
        self.linger_until = self.loop.time() + self.server.linger_timeout
        self._schedule(self.linger_until)
        self._update_reading()

    # -- handling ---------------------------------------------------------------
    def _dispatch(self, body: bytes | bytearray | memoryview, too_large: bool = False) -> None:
        head = self.head
        assert head is not None
        self.head = None
        try:
            url = httptools.parse_url(head.url)
        except httptools.HttpParserError:
            self._reject(400, b"malformed HTTP request: invalid request target")
            return
        self.busy = True
        raw_path = url.path or b"/"
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": head.version,
            "method": head.method.decode("ascii"),
            "scheme": self.scheme,
            "path": _unquote(raw_path),
            "raw_path": raw_path,
            "query_string": url.query or b"",
            "root_path": "",
            "headers": head.headers,
            "client": self.client,
            "server": self.local,
            BODY: body,
        }
        if too_large:
            scope["headers"] = [*head.headers, (b"content-length", str(self.server.max_body + 1).encode())]
        cycle = _Cycle(self, body, scope["method"] == "HEAD")
        if self.eof and self.server.abort_on_close:
            cycle.watch.closed = True  # pipelined before the client's EOF
        if self.server.stopping:  # draining: requests in flight finish, new ones are refused
            self.keep_alive = False
            cycle.write_error(503, b"the server is shutting down; retry shortly")
            self._request_done()
            return
        self.cycle = cycle
        # each request starts from the server's context, not from the task of
        # the request before it on this connection (which parses the next one)
        task = self.loop.create_task(self._run(scope, cycle), context=self.server.context.copy())
        self.server.tasks.add(task)
        task.add_done_callback(self.server.tasks.discard)

    def _express(self, body: bytes) -> bool:
        """Offer the request to the application's ``express`` (see
        ``servekit.server.app.App.express``): answered in this callback, with
        no scope, task or context of its own, when it gives an answer. Only
        plain paths (no query, no escapes) of a server that is not stopping."""
        head = self.head
        assert head is not None
        url = head.url
        if (
            self.server.stopping
            or self.expressed >= _EXPRESS_RUN
            or url[:1] != b"/"
            or url[1:2] == b"/"
            or b"?" in url
            or b"%" in url
            or b"#" in url
        ):
            return False
        if head.method != b"POST":
            return False
        assert self.express is not None
        answer = self.express("POST", url.decode("latin-1"), head.headers, body, self.local)
        if answer is None:
            return False
        self.head = None
        self.expressed += 1
        status, headers, payload = answer
        if isinstance(headers, bytes):  # ok_json_head's: only the end of the head is left
            response: bytes | None = headers + (_HEAD_END if self.keep_alive else _HEAD_END_CLOSE)
        else:
            response = _response_head(self, status, headers)
            if response is None:  # refused: the cycle's generic 500
                _Cycle(self, body, False).respond(status, headers, payload)
        if response is not None and self.transport is not None and not self.transport.is_closing():
            self.transport.write(response + payload)
            self.server.offer_core()
        if not self.keep_alive:
            self.close()
            return True
        self.idle_since = self.loop.time()
        self._schedule(self.idle_since + self.server.keep_alive_timeout)
        return True

    async def _run(self, scope: dict[str, Any], cycle: _Cycle) -> None:
        WATCH.set(cycle.watch)  # this task's own context
        try:
            await self.app(scope, cycle.receive, cycle)
        except Exception:
            log.exception("Unhandled error in the application")
        if not cycle.complete:
            if not cycle.started:
                cycle.write_error(500, b"the server could not produce a response")
            else:
                self.keep_alive = False
        self._request_done()

    def _request_done(self) -> None:
        self.busy = False
        self.cycle = None
        if self.closing:
            return
        if self.unread_body:
            self._linger()
            return
        if not self.keep_alive or self.server.stopping:
            self.close()
            return
        self.idle_since = self.loop.time()
        self._schedule(self.idle_since + self.server.keep_alive_timeout)
        if self.filled > self.start:
            self._parse()
        self._update_reading()
        self._close_if_finished()


class _Timed:
    """Takes the times of each request's receiving, for its trace: from the
    first byte of its head to the last of its body (time.time_ns()), put in the
    scope under ``servekit.received_ns``. Used only when tracing is on, so the
    untraced path pays nothing."""

    first_byte_ns = 0
    received_ns = 0

    def _parse(self: Any) -> None:
        if not self.first_byte_ns and self.filled > self.start:
            self.first_byte_ns = time.time_ns()
        super()._parse()  # type: ignore[misc]

    def _dispatch(self: Any, body: bytes | bytearray | memoryview, too_large: bool = False) -> None:
        self.received_ns = time.time_ns()
        super()._dispatch(body, too_large)  # type: ignore[misc]

    async def _run(self: Any, scope: dict[str, Any], cycle: _Cycle) -> None:
        scope[RECEIVED] = (self.first_byte_ns or self.received_ns, self.received_ns)
        self.first_byte_ns = 0
        await super()._run(scope, cycle)  # type: ignore[misc]


class TimedHttpProtocol(_Timed, HttpProtocol):
    pass


class TlsHttpProtocol(HttpProtocol):
    """On a TLS listener. TLS has no half-close: after the client's
    ``close_notify`` the transport closes whatever ``eof_received`` answers
    (asyncio and uvloop warn when it answers True), so it answers None."""

    def eof_received(self) -> None:
        super().eof_received()


class TimedTlsHttpProtocol(_Timed, TlsHttpProtocol):
    pass


_PLAIN_ON_TLS_MESSAGE = b"this port speaks HTTPS: call it with https://, not http://\n"
_PLAIN_ON_TLS = (
    b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\nconnection: close\r\n"
    b"content-length: %d\r\n\r\n%s" % (len(_PLAIN_ON_TLS_MESSAGE), _PLAIN_ON_TLS_MESSAGE)
)
_TLS_HANDSHAKE = b"\x16"  # the first byte of a TLS record carrying a handshake (the ClientHello)


class _TlsListener:
    """Accepts on a TLS socket. A connection whose first byte starts a TLS
    handshake is served by :class:`TlsHttpProtocol` over TLS; one that starts
    in plain text (``curl http://`` to an https port) is answered a plain 400
    saying to use https://, rather than dropped with no word. The first byte
    is peeked, not read, so the TLS layer sees the whole ClientHello. A client
    that sends nothing, or does not finish its handshake, is closed after
    ``keep_alive_timeout`` as an idle one would be."""

    def __init__(self, server: HttpServer, sock: socket.socket, context: ssl.SSLContext) -> None:
        self.server = server
        self.loop = server.loop
        self.sock = sock
        self.context = context
        self.timeout = max(1.0, server.keep_alive_timeout)
        self.waiting: dict[int, tuple[socket.socket, asyncio.TimerHandle]] = {}
        self.handshakes: set[asyncio.Task[None]] = set()
        self.accepting = self.loop.create_task(self._accept())

    async def _accept(self) -> None:
        while True:
            try:
                conn, _ = await self.loop.sock_accept(self.sock)
            except asyncio.CancelledError:
                raise
            except OSError as exc:  # out of file descriptors, …: wait, as asyncio's own accept loop does
                log.warning("Could not accept a TLS connection: %s", exc)
                await asyncio.sleep(0.1)
                continue
            conn.setblocking(False)
            fd = conn.fileno()
            self.waiting[fd] = (conn, self.loop.call_later(self.timeout, self._forget, fd))
            self.loop.add_reader(fd, self._first_byte, fd)

    def _forget(self, fd: int) -> socket.socket | None:
        entry = self.waiting.pop(fd, None)
        if entry is None:
            return None
        conn, timer = entry
        timer.cancel()
        self.loop.remove_reader(fd)
        return conn

    def _first_byte(self, fd: int) -> None:
        entry = self.waiting.get(fd)
        if entry is None:
            return
        try:
            first = entry[0].recv(1, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return  # not readable after all: keep waiting
        except OSError:
            first = b""
        conn = self._forget(fd)
        assert conn is not None
        if first == _TLS_HANDSHAKE:
            task = self.loop.create_task(self._handshake(conn))
            self.handshakes.add(task)
            task.add_done_callback(self.handshakes.discard)
        elif first:
            self._refuse_plain(conn)
        else:
            conn.close()  # closed before sending a byte

    async def _handshake(self, conn: socket.socket) -> None:
        try:
            await self.loop.connect_accepted_socket(
                lambda: self.server.tls_protocol(self.server, "https"), conn, ssl=self.context,
                ssl_handshake_timeout=self.timeout,
            )
        except (OSError, TimeoutError, ConnectionError):  # ssl.SSLError is an OSError
            conn.close()

    def _refuse_plain(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            conn.recv(_HEAD_LIMIT)  # what arrived of the request, so closing does not reset the answer away
            conn.send(_PLAIN_ON_TLS)
            conn.shutdown(socket.SHUT_WR)
        conn.close()

    def close(self) -> None:
        """Stop accepting (connections already served close with the server's)."""
        self.accepting.cancel()
        self.accepting.add_done_callback(lambda _: self.sock.close())
        for fd in list(self.waiting):
            conn = self._forget(fd)
            if conn is not None:
                conn.close()
        for task in self.handshakes:
            task.cancel()


_HEAD_END, _HEAD_END_CLOSE = b"\r\n", b"connection: close\r\n\r\n"


def _keep_core() -> None:
    """``HttpServer.offer_core`` without ``yield_after_answer``."""
_OK_JSON = _STATUS_LINES[200] + b"content-length: %d\r\ncontent-type: application/json\r\nx-request-id: %s\r\n"


def ok_json_head(length: int, request_id: bytes) -> bytes | None:
    """The head of a 200 JSON answer of ``length`` bytes with an X-Request-ID,
    but its end (which says whether the connection stays open): the bytes
    ``_response_head`` makes of the same status and headers, for an express
    answer. None when ``request_id`` is not 1 to 128 printable ASCII characters."""
    if REQUEST_ID_VALUE.fullmatch(request_id) is None:
        return None
    return _OK_JSON % (length, request_id)


def _response_head(protocol: HttpProtocol, status: int, headers: Any) -> bytes | None:
    """A response's head; None when it must not be sent (a status outside
    200..599, or a CR, LF or NUL in a header)."""
    lines = [_STATUS_LINES.get(status) or b"HTTP/1.1 %d Unknown\r\n" % status]
    has_length = False
    for name, value in headers:
        if name.lower() == b"content-length":
            has_length = True
        lines.append(b"%s: %s\r\n" % (name, value))
    if not has_length:
        protocol.keep_alive = False  # the end of the body is the end of the connection
    if not protocol.keep_alive:
        lines.append(b"connection: close\r\n")
    lines.append(b"\r\n")
    head = b"".join(lines)
    # every line ends in the CRLF added here: any other CR or LF (or a NUL)
    # came from a header and would split the response
    if not 200 <= status <= 599 or head.count(b"\n") != len(lines) or head.count(b"\r") != len(lines) or (
        b"\0" in head
    ):
        return None
    return head


class _Cycle:
    """One request/response: the ASGI ``receive`` and ``send`` callables."""

    __slots__ = ("body", "complete", "head_only", "headers_sent", "invalid", "protocol", "read", "started", "watch")

    def __init__(self, protocol: HttpProtocol, body: bytes | bytearray | memoryview, head_only: bool) -> None:
        self.protocol = protocol
        self.body = body
        self.head_only = head_only
        self.read = False
        self.started = False
        self.complete = False
        self.invalid = False  # the application's response head was refused: a 500 goes instead
        self.headers_sent: bytes = b""
        self.watch = Watch()

    async def receive(self) -> dict[str, Any]:
        if self.read:
            return {"type": "http.disconnect"}
        self.read = True
        return {"type": "http.request", "body": self.body, "more_body": False}

    async def send(self, message: dict[str, Any]) -> None:
        transport = self.protocol.transport
        kind = message["type"]
        if kind == "http.response.start":
            self.headers_sent = self._head(int(message["status"]), message.get("headers", ()))
            self.started = True
            return
        if kind == "http.response.body":
            body = b"" if self.invalid else message.get("body", b"")
            more = message.get("more_body", False)
            if transport is not None and not transport.is_closing():
                if self.headers_sent:
                    payload = self.headers_sent if self.head_only else self.headers_sent + body
                    self.headers_sent = b""
                    transport.write(payload)
                elif body and not self.head_only:
                    transport.write(body)
            if not more:
                self.complete = True
                self.protocol.server.offer_core()

    # the ASGI ``send`` callable is the cycle itself, so that servekit's own
    # responses can find ``respond``
    __call__ = send

    def respond(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        """A whole response in one write, for an application that has it all at
        once (servekit's ``Response``): what ``send``'s two messages do."""
        head = self._head(status, headers)
        self.started = self.complete = True
        transport = self.protocol.transport
        if transport is not None and not transport.is_closing():
            transport.write(head if self.head_only else head + (b"" if self.invalid else body))
            self.protocol.server.offer_core()

    def _head(self, status: int, headers: Any) -> bytes:
        head = _response_head(self.protocol, status, headers)
        return head if head is not None else self._refuse(status, headers)

    def _refuse(self, status: int, headers: Any) -> bytes:
        """The head of a generic 500 (body included) instead of an invalid response."""
        self.invalid = True
        server = self.protocol.server
        if not server.invalid_response_logged:
            server.invalid_response_logged = True
            log.error(
                "The application's response was refused and answered with 500: status %r, headers %r "
                "(a status must be 200..599; header names and values must not contain CR, LF or NUL); "
                "further such responses are logged at debug level", status, headers,
            )
        else:
            log.debug("Invalid response refused: status %r, headers %r", status, headers)
        return (
            b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n%s\r\n%s"
            % (
                len(_INVALID_RESPONSE),
                b"" if self.protocol.keep_alive else b"connection: close\r\n",
                b"" if self.head_only else _INVALID_RESPONSE,
            )
        )

    def write_error(self, status: int, message: bytes) -> None:
        transport = self.protocol.transport
        if transport is not None and not transport.is_closing():
            transport.write(
                b"HTTP/1.1 %d %s\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n%s\r\n%s"
                % (
                    status,
                    _REASONS.get(status, b""),
                    len(message),
                    b"" if self.protocol.keep_alive else b"connection: close\r\n",
                    b"" if self.head_only else message,
                )
            )
        self.complete = True


class HttpServer:
    """Serves an ASGI app on listening sockets until :meth:`stop`.

    ``keep_alive_timeout``: an idle connection (or one whose request head is
    still incomplete) closes after this many seconds. ``body_timeout`` and
    ``body_min_rate``: a request body that goes ``body_timeout`` seconds
    without a byte, or arrives slower than ``body_min_rate`` bytes/s on average
    once ``body_timeout`` seconds have passed, is answered 408 and the
    connection closed. ``linger_timeout``: after an error answer that leaves
    request bytes unread, how long what the client still sends is read and
    discarded before closing. ``drain_timeout``: after :meth:`stop`, how long
    requests in flight may take to finish; new requests on open connections are
    answered 503 meanwhile, and those still running at the end get a 503.
    ``max_connections``: a connection over this many open ones is answered 503
    and closed at once. ``abort_on_close``: when the client closes its side of
    the connection, its request is dropped if it still waits in a model's queue
    (see :mod:`servekit.abandon`). ``yield_after_answer``: after writing each
    answer the worker calls ``sched_yield``, so that a thread woken by the answer
    (the client, a sidecar) on the core this worker keeps busy runs now rather
    than at the scheduler's next tick, up to 4 ms later; without one waiting,
    the call returns at once.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body: int,
        keep_alive_timeout: float = 30.0,
        body_timeout: float = 30.0,
        body_min_rate: float = 4096.0,
        linger_timeout: float = 5.0,
        drain_timeout: float = 30.0,
        max_connections: int = 4096,
        abort_on_close: bool = True,
        yield_after_answer: bool = True,
        timestamps: bool = False,
        share: Share | None = None,
    ) -> None:
        self.app = app
        # called after each answer is written: os.sched_yield, where the platform has it
        self.offer_core: Callable[[], None] = (
            getattr(os, "sched_yield", _keep_core) if yield_after_answer else _keep_core
        )
        # requests the application answers in the protocol's callback (App.express)
        self.express: Express | None = (
            None if timestamps or not getattr(app, "expressed", False) else getattr(app, "express", None)
        )
        # with ``share`` (a worker of several), plain sockets are shared by the
        # workers and accepted from least connections first (servekit.server.balance)
        self.share = share
        self.accepting = 0  # accepted sockets whose protocol is not made yet
        # with ``timestamps`` (tracing on), requests carry the times they were received in
        self.protocol: type[HttpProtocol] = TimedHttpProtocol if timestamps else HttpProtocol
        self.tls_protocol: type[HttpProtocol] = TimedTlsHttpProtocol if timestamps else TlsHttpProtocol
        self.abort_on_close = abort_on_close
        self.context = contextvars.copy_context()  # what every request's task starts from
        self.max_connections = max_connections
        self.drain_timeout = drain_timeout
        self.max_body = max_body
        self.keep_alive_timeout = keep_alive_timeout
        self.body_timeout = body_timeout
        self.body_min_rate = body_min_rate
        self.linger_timeout = linger_timeout
        self.loop = asyncio.get_running_loop()
        self.connections: set[HttpProtocol] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.servers: list[asyncio.AbstractServer | _TlsListener | BalancedListener] = []
        self.stopping = False
        self.invalid_response_logged = False
        self._stopped = asyncio.Event()

    async def serve(self, sockets: list[socket.socket], tls: Sequence[ssl.SSLContext | None] = ()) -> None:
        """Serve until :meth:`stop`; ``tls`` holds, per socket, the context of
        a TLS listener (None or absent: plain HTTP)."""
        for index, sock in enumerate(sockets):
            context = tls[index] if index < len(tls) else None
            if context is None and self.share is not None:
                self.servers.append(BalancedListener(self, sock, self.share))
                self.publish()
            elif context is None:
                listener = await self.loop.create_server(lambda: self.protocol(self), sock=sock, backlog=2048)
                self.servers.append(listener)
            else:
                self.servers.append(_TlsListener(self, sock, context))
        await self._stopped.wait()
        for each in self.servers:
            each.close()
        for connection in list(self.connections):
            connection.shutdown()
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=self.drain_timeout)
        for connection in list(self.connections):
            cycle = connection.cycle
            if cycle is not None and not cycle.started:
                # still not answered after the drain time: say so rather than reset
                connection.keep_alive = False
                cycle.write_error(503, b"the server shut down before the request was answered; retry")
            connection.close()

    def stop(self) -> None:
        self.stopping = True
        self._stopped.set()

    def publish(self) -> None:
        """Tell the sibling workers how many connections this one holds (if it has any)."""
        if self.share is not None:
            self.share.publish(len(self.connections) + self.accepting)

    def adopt(self, conn: socket.socket) -> None:
        """Serve a connection accepted by a :class:`BalancedListener`."""
        conn.setblocking(False)
        self.accepting += 1
        self.publish()
        task = self.loop.create_task(self._adopt(conn))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _adopt(self, conn: socket.socket) -> None:
        try:
            await self.loop.connect_accepted_socket(lambda: self.protocol(self), conn)
        except (OSError, ConnectionError):  # reset before it was served
            conn.close()
        finally:
            self.accepting -= 1
            self.publish()


def _tensors_offset(length: int, headers: list[tuple[bytes, bytes]]) -> int:
    """Where a body in Triton's binary tensor format has its tensors, else -1."""
    for name, value in headers:
        if name == b"inference-header-content-length" and value.isdigit():
            header = int(value)
            if 0 < header < length:
                return header
    return -1


def _address_of(buffer: bytearray) -> int:
    anchor = ctypes.c_char.from_buffer(buffer)
    try:
        return ctypes.addressof(anchor)
    finally:
        del anchor


def _framing(headers: list[tuple[bytes, bytes]]) -> tuple[int | None, bytes | None, bytes | None]:
    """Content-Length, Transfer-Encoding and Connection (httptools has refused
    malformed, duplicate and conflicting lengths)."""
    length: int | None = None
    coding: bytes | None = None
    connection: bytes | None = None
    for name, value in headers:
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            coding = value if coding is None else coding + b"," + value
        elif name == b"connection":
            connection = value if connection is None else connection + b"," + value
    return length, coding, connection


def _unquote(path: bytes) -> str:
    text = path.decode("latin-1")
    return unquote(text) if "%" in text else text


def _address(value: Any) -> tuple[str, int] | None:
    if isinstance(value, tuple) and len(value) >= 2:
        return str(value[0]), int(value[1])
    return None
