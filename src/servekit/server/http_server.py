"""servekit's HTTP/1.1 server: an asyncio buffered protocol speaking ASGI.

Why not uvicorn: a request body with a Content-Length is received straight
into one buffer of that size (``recv_into``), with no per-chunk Python
callbacks, copies or pause/resume round trips; a 60 MB binary tensor arrives
in about half the time, and small requests skip the per-request machinery the
application does not use (streaming bodies, lifespan, middleware). Headers
and chunked bodies are parsed by httptools, the parser uvicorn uses.

Supported: keep-alive and pipelined requests (answered in order), HTTP/1.0,
``Expect: 100-continue``, chunked request bodies, the body-size limit before
reading (the application answers 413 and the connection closes), idle
timeouts and graceful shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any, cast

import httptools

log = logging.getLogger("servekit.server")

ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]

_HEAD_LIMIT = 64 * 1024  # request line + headers
_BUFFER_SIZE = 16 * 1024
_ALIGNMENT = 64
_REASONS = {
    200: b"OK", 201: b"Created", 202: b"Accepted", 204: b"No Content", 400: b"Bad Request",
    401: b"Unauthorized", 403: b"Forbidden", 404: b"Not Found", 405: b"Method Not Allowed",
    408: b"Request Timeout", 409: b"Conflict", 413: b"Payload Too Large", 500: b"Internal Server Error",
    501: b"Not Implemented", 503: b"Service Unavailable", 504: b"Gateway Timeout", 507: b"Insufficient Storage",
}


class _Head:
    """httptools callbacks for one request's line and headers (and chunked body)."""

    __slots__ = ("chunks", "complete", "done", "headers", "url")

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.complete = False
        self.done = False
        self.chunks: list[bytes] = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self.complete = True

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        self.done = True


class HttpProtocol(asyncio.BufferedProtocol):
    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.app = server.app
        self.loop = server.loop
        self.transport: asyncio.Transport | None = None
        self.client: tuple[str, int] | None = None
        self.local: tuple[str, int] | None = None
        # unparsed bytes are buffer[start:filled]; the buffer is never resized in
        # place (the transport may still hold a view of it), only replaced
        self.buffer = bytearray(_BUFFER_SIZE)
        self.start = 0
        self.filled = 0
        self.body: bytearray | memoryview | None = None  # Content-Length body being received
        self.received = 0
        self.parser: httptools.HttpRequestParser | None = None
        self.head: _Head | None = None
        self.chunked = False
        self.busy = False  # a request is being handled
        self.closing = False
        self.keep_alive = True
        self.idle_timer: asyncio.TimerHandle | None = None

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
        self.server.connections.add(self)
        self._arm_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.closing = True
        if self.idle_timer is not None:
            self.idle_timer.cancel()

    def close(self) -> None:
        self.closing = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def shutdown(self) -> None:
        """Close now if idle, else after the response in progress."""
        self.keep_alive = False
        if not self.busy and self.body is None and self.filled == self.start:
            self.close()

    def _arm_idle(self) -> None:
        if self.idle_timer is not None:
            self.idle_timer.cancel()
        self.idle_timer = self.loop.call_later(self.server.keep_alive_timeout, self._on_idle)

    def _on_idle(self) -> None:
        if not self.busy and self.body is None:
            self.close()

    # -- receiving ------------------------------------------------------------
    def get_buffer(self, sizehint: int) -> memoryview:
        if self.body is not None:
            return memoryview(self.body)[self.received :]
        if len(self.buffer) - self.filled < 4096:
            pending = self.filled - self.start
            fresh = bytearray(max(_BUFFER_SIZE, 2 * pending + 4096))
            fresh[:pending] = self.buffer[self.start : self.filled]
            self.buffer, self.start, self.filled = fresh, 0, pending
        return memoryview(self.buffer)[self.filled :]

    def buffer_updated(self, nbytes: int) -> None:
        if self.body is not None:
            self.received += nbytes
            if self.received == len(self.body):
                self._body_complete()
            return
        self.filled += nbytes
        if not self.busy:
            self._parse()
        elif self.filled - self.start > _HEAD_LIMIT and self.transport is not None:
            self.transport.pause_reading()  # pipelined data waits for the response

    def eof_received(self) -> bool | None:
        self.keep_alive = False
        if not self.busy:
            self.close()
        return True

    def _parse(self) -> None:
        """Consume what the buffer holds: a head, a chunked body or a body's start."""
        while not self.busy and not self.closing and self.filled > self.start:
            if self.chunked:
                if not self._feed_chunked():
                    return
                continue
            end = self.buffer.find(b"\r\n\r\n", self.start, self.filled)
            if end < 0:
                if self.filled - self.start > _HEAD_LIMIT:
                    self._reject(431, b"request headers too large")
                return
            if not self._start_request(end + 4):
                return

    def _start_request(self, head_end: int) -> bool:
        head = _Head()
        parser = httptools.HttpRequestParser(head)
        try:
            parser.feed_data(bytes(self.buffer[self.start : head_end]))
        except httptools.HttpParserUpgrade:
            pass
        except httptools.HttpParserError as exc:
            self._reject(400, f"malformed HTTP request: {exc}".encode())
            return False
        if not head.complete:
            self._reject(400, b"malformed HTTP request")
            return False
        self.head, self.parser = head, parser
        self.keep_alive = parser.should_keep_alive()
        rest = self.buffer[head_end : self.filled]
        self._consume(head_end - self.start)
        length, chunked = _body_framing(head.headers)
        if chunked:
            # the parser reads the chunks; the connection closes after this request
            # so that bytes past the message never reach the wrong request
            self.chunked = True
            self.keep_alive = False
            self._continue_if_expected(head)
            return True
        if length is None or length == 0 or head.done:
            self._dispatch(b"")
            return True
        if length > self.server.max_body:
            # the application answers 413 from the Content-Length; the body stays unread
            self.keep_alive = False
            self._dispatch(b"")
            return False
        self._continue_if_expected(head)
        if len(rest) >= length:
            body = bytes(rest[:length])
            self._consume(length)
            self._dispatch(body)
            return True
        self.body = _body_buffer(length, head.headers)
        self.body[: len(rest)] = rest
        self.received = len(rest)
        self._consume(len(rest))
        return False

    def _continue_if_expected(self, head: _Head) -> None:
        for name, value in head.headers:
            if name == b"expect" and value.lower() == b"100-continue" and self.transport is not None:
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _feed_chunked(self) -> bool:
        assert self.parser is not None and self.head is not None
        data = bytes(self.buffer[self.start : self.filled])
        self._consume(self.filled - self.start)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._reject(400, f"malformed chunked body: {exc}".encode())
            return False
        size = sum(len(c) for c in self.head.chunks)
        if size > self.server.max_body:
            self.keep_alive = False
            self.chunked = False
            self._dispatch(b"", too_large=True)
            return False
        if not self.head.done:
            return False
        self.chunked = False
        self._dispatch(b"".join(self.head.chunks))
        return True

    def _consume(self, count: int) -> None:
        self.start += count
        if self.start >= self.filled:
            self.start = self.filled = 0

    def _body_complete(self) -> None:
        body = self.body
        self.body = None
        self.received = 0
        assert body is not None
        self._dispatch(body)

    def _reject(self, status: int, message: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(
                b"HTTP/1.1 %d %s\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n"
                b"connection: close\r\n\r\n%s" % (status, _REASONS.get(status, b""), len(message), message)
            )
        self.close()

    # -- handling ---------------------------------------------------------------
    def _dispatch(self, body: bytes | bytearray | memoryview, too_large: bool = False) -> None:
        head, parser = self.head, self.parser
        assert head is not None and parser is not None
        self.head = self.parser = None
        self.busy = True
        if self.idle_timer is not None:
            self.idle_timer.cancel()
        url = httptools.parse_url(head.url)
        raw_path = url.path or b"/"
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": parser.get_http_version(),
            "method": parser.get_method().decode("ascii"),
            "scheme": "http",
            "path": _unquote(raw_path),
            "raw_path": raw_path,
            "query_string": url.query or b"",
            "root_path": "",
            "headers": head.headers,
            "client": self.client,
            "server": self.local,
        }
        if too_large:
            scope["headers"] = [*head.headers, (b"content-length", str(self.server.max_body + 1).encode())]
        cycle = _Cycle(self, body, scope["method"] == "HEAD")
        task = self.loop.create_task(self._run(scope, cycle))
        self.server.tasks.add(task)
        task.add_done_callback(self.server.tasks.discard)

    async def _run(self, scope: dict[str, Any], cycle: _Cycle) -> None:
        try:
            await self.app(scope, cycle.receive, cycle.send)
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
        if not self.keep_alive or self.server.stopping:
            self.close()
            return
        if self.transport is not None:
            self.transport.resume_reading()
        self._arm_idle()
        if self.filled > self.start:
            self._parse()


class _Cycle:
    """One request/response: the ASGI ``receive`` and ``send`` callables."""

    __slots__ = ("body", "complete", "head_only", "headers_sent", "protocol", "read", "started")

    def __init__(self, protocol: HttpProtocol, body: bytes | bytearray | memoryview, head_only: bool) -> None:
        self.protocol = protocol
        self.body = body
        self.head_only = head_only
        self.read = False
        self.started = False
        self.complete = False
        self.headers_sent: bytes = b""

    async def receive(self) -> dict[str, Any]:
        if self.read:
            return {"type": "http.disconnect"}
        self.read = True
        return {"type": "http.request", "body": self.body, "more_body": False}

    async def send(self, message: dict[str, Any]) -> None:
        transport = self.protocol.transport
        kind = message["type"]
        if kind == "http.response.start":
            status = int(message["status"])
            lines = [b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Unknown"))]
            has_length = False
            for name, value in message.get("headers", ()):
                if name.lower() == b"content-length":
                    has_length = True
                lines.append(b"%s: %s\r\n" % (name, value))
            if not has_length:
                self.protocol.keep_alive = False  # the end of the body is the end of the connection
            if not self.protocol.keep_alive:
                lines.append(b"connection: close\r\n")
            lines.append(b"\r\n")
            self.headers_sent = b"".join(lines)
            self.started = True
            return
        if kind == "http.response.body":
            body = message.get("body", b"")
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

    def write_error(self, status: int, message: bytes) -> None:
        transport = self.protocol.transport
        if transport is not None and not transport.is_closing():
            transport.write(
                b"HTTP/1.1 %d %s\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n\r\n%s"
                % (status, _REASONS.get(status, b""), len(message), message)
            )
        self.complete = True


class HttpServer:
    """Serves an ASGI app on listening sockets until :meth:`stop`."""

    def __init__(self, app: ASGIApp, *, max_body: int, keep_alive_timeout: float = 30.0) -> None:
        self.app = app
        self.max_body = max_body
        self.keep_alive_timeout = keep_alive_timeout
        self.loop = asyncio.get_running_loop()
        self.connections: set[HttpProtocol] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.servers: list[asyncio.AbstractServer] = []
        self.stopping = False
        self._stopped = asyncio.Event()

    async def serve(self, sockets: list[socket.socket]) -> None:
        for sock in sockets:
            listener = await self.loop.create_server(lambda: HttpProtocol(self), sock=sock, backlog=2048)
            self.servers.append(listener)
        await self._stopped.wait()
        for each in self.servers:
            each.close()
        for connection in list(self.connections):
            connection.shutdown()
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=10)
        for connection in list(self.connections):
            connection.close()

    def stop(self) -> None:
        self.stopping = True
        self._stopped.set()


def _body_buffer(length: int, headers: list[tuple[bytes, bytes]]) -> bytearray | memoryview:
    """Where a body of ``length`` bytes is received. A request in Triton's binary
    tensor format gets its tensor bytes (after the JSON header) 64-byte aligned,
    so numpy and BLAS work on them in place instead of copying them to align."""
    for name, value in headers:
        if name == b"inference-header-content-length" and value.isdigit():
            header = int(value)
            if 0 < header < length:
                raw = bytearray(length + _ALIGNMENT)
                shift = -(_address_of(raw) + header) % _ALIGNMENT
                return memoryview(raw)[shift : shift + length]
    return bytearray(length)


def _address_of(buffer: bytearray) -> int:
    anchor = ctypes.c_char.from_buffer(buffer)
    try:
        return ctypes.addressof(anchor)
    finally:
        del anchor


def _body_framing(headers: list[tuple[bytes, bytes]]) -> tuple[int | None, bool]:
    length: int | None = None
    chunked = False
    for name, value in headers:
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                length = None
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    return length, chunked


def _unquote(path: bytes) -> str:
    from urllib.parse import unquote

    text = path.decode("latin-1")
    return unquote(text) if "%" in text else text


def _address(value: Any) -> tuple[str, int] | None:
    if isinstance(value, tuple) and len(value) >= 2:
        return str(value[0]), int(value[1])
    return None
