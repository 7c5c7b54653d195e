"""Attacks on servekit's HTTP/1.1 server, each reproduced against a real server
on 127.0.0.1 (on asyncio's loop and on uvloop, which production uses):
bodies that reserve memory or never finish, decompression bombs, request
smuggling after a chunked body, pipelining without reading, response
splitting, ignored ``Connection: close``, bare-LF heads, resets after 413 and
CONNECT; and the framing errors that were already refused stay refused."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import inspect
import logging
import select
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
import uvloop

from servekit.config import ServerSettings
from servekit.protocols import v2_codec
from servekit.server.app import App
from servekit.server.http import Request, Response, Router, json_response, route
from servekit.server.http_server import HttpProtocol, HttpServer

MiB = 1024 * 1024
BIG_LIMIT = 512 * MiB  # servekit's default max_request_size
SMALL_LIMIT = 1_000_000
INFLATE_LIMIT = 1_000_000
INVALID = b"the server produced an invalid response"


# -- the application ------------------------------------------------------------
async def echo(request: Request) -> Response:
    body = await request.body()
    return json_response({
        "method": request.method,
        "path": request.path,
        "query": request.query,
        "headers": sorted(request.headers),
        "length": len(body),
        "sha": hashlib.sha256(body).hexdigest(),
    })


async def alignment(request: Request) -> Response:
    import numpy as np

    raw = await request.raw_body()
    header = int(request.headers["inference-header-content-length"])
    return json_response({
        "offset": np.frombuffer(raw, np.uint8)[header:].ctypes.data % 64,
        "sha": hashlib.sha256(raw).hexdigest(),
    })


async def inflate(request: Request) -> Response:
    """What the V2 infer route does with a compressed body, with the limit passed."""
    raw = await request.raw_body()
    body = v2_codec.decompress(raw, request.headers.get("content-encoding"), INFLATE_LIMIT)
    return json_response({"length": len(body), "sha": hashlib.sha256(body).hexdigest()})


BAD_RESPONSES: dict[str, Callable[[], Response]] = {
    "value_crlf": lambda: Response(b"ok", headers=[(b"x-note", b"a\r\nset-cookie: evil=1")]),
    "value_lf": lambda: Response(b"ok", headers=[(b"x-note", b"a\nset-cookie: evil=1")]),
    "name_crlf": lambda: Response(b"ok", headers=[(b"set-cookie: evil=1\r\nx-note", b"a")]),
    "content_type_crlf": lambda: Response(b"ok", content_type=b"text/plain\r\nset-cookie: evil=1"),
    "value_nul": lambda: Response(b"ok", headers=[(b"x-note", b"a\0set-cookie: evil=1")]),
    "status_negative": lambda: Response(b"ok", status=-5),
    "status_huge": lambda: Response(b"ok", status=1000000),
    "status_600": lambda: Response(b"ok", status=600),
    "status_informational": lambda: Response(b"ok", status=101),
}


async def bad(request: Request) -> Response:
    return BAD_RESPONSES[request.query["case"]]()


async def fine(request: Request) -> Response:
    return Response(b"ok", status=299, content_type=b"text/plain", headers=[(b"x-note", b"a b\tc")])


async def big(request: Request) -> Response:
    return Response(b"x" * 2000)


ROUTER = Router([
    *(route(method, "/echo/{name:path}", echo) for method in ("GET", "POST", "DELETE", "PUT", "OPTIONS")),
    route("POST", "/alignment", alignment),
    route("POST", "/inflate", inflate),
    route("GET", "/bad", bad),
    route("GET", "/fine", fine),
    route("GET", "/big/{n}", big),
])


# -- servers ----------------------------------------------------------------------
@dataclass
class Running:
    port: int
    loop: asyncio.AbstractEventLoop
    server: HttpServer

    def call(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` run on the server's loop (its state is only read there)."""

        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(5)

    def connection(self, client: Client) -> HttpProtocol | None:
        address = client.sock.getsockname()[:2]
        return self.call(lambda: next((c for c in self.server.connections if c.client == address), None))


@contextlib.contextmanager
def serving(loop_kind: str, max_body: int, **options: float) -> Iterator[Running]:
    sock = socket.socket()
    # small kernel buffers (inherited by accepted sockets): what the server holds
    # back shows after a few hundred KB instead of the tens of MB autotuning allows
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.setblocking(False)
    app = App({}, ROUTER, max_body=max_body)
    loop = uvloop.new_event_loop() if loop_kind == "uvloop" else asyncio.new_event_loop()
    started = threading.Event()
    holder: dict[str, HttpServer] = {}

    async def main() -> None:
        holder["server"] = HttpServer(app, max_body=max_body, **options)
        started.set()
        await holder["server"].serve([sock])

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert started.wait(5)
    try:
        yield Running(sock.getsockname()[1], loop, holder["server"])
    finally:
        loop.call_soon_threadsafe(holder["server"].stop)
        thread.join(15)
        sock.close()


@pytest.fixture(scope="module", params=["asyncio", "uvloop"])
def loop_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def srv(loop_kind: str) -> Iterator[Running]:
    """The default limit and idle timeout; short body and linger timeouts."""
    with serving(loop_kind, BIG_LIMIT, body_timeout=2.0, body_min_rate=1000.0, linger_timeout=2.0) as running:
        yield running


@pytest.fixture(scope="module")
def small(loop_kind: str) -> Iterator[Running]:
    """A 1 MB body limit and a one-second idle timeout."""
    with serving(loop_kind, SMALL_LIMIT, keep_alive_timeout=1.0, body_timeout=1.0, linger_timeout=2.0) as running:
        yield running


# -- a raw client ---------------------------------------------------------------------
@dataclass
class Reply:
    status: int
    head: bytes
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


class Client:
    """One connection; sends raw bytes and reads responses one at a time."""

    def __init__(self, port: int, timeout: float = 10.0, buffers: int | None = None) -> None:
        self.sock = socket.socket()
        if buffers is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffers)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buffers)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.data = b""

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send(self, raw: bytes) -> None:
        self.sock.sendall(raw)

    def _more(self) -> None:
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise EOFError(f"connection closed; unread: {self.data[:200]!r}")
        self.data += chunk

    def reply(self, head_only: bool = False, interim: bool = False) -> Reply:
        while True:
            while b"\r\n\r\n" not in self.data:
                self._more()
            head, self.data = self.data.split(b"\r\n\r\n", 1)
            lines = head.split(b"\r\n")
            status = int(lines[0].split(b" ")[1])
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                headers[name.strip().lower().decode()] = value.strip().decode("latin-1")
            if 100 <= status < 200 and not interim:
                continue
            length = 0 if head_only else int(headers.get("content-length", "0"))
            while len(self.data) < length:
                self._more()
            body, self.data = self.data[:length], self.data[length:]
            return Reply(status, head, headers, body)

    def closed(self) -> bool:
        """Whether the server closes the connection (after what was read), within the timeout."""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.data += chunk
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def assert_still_serves(port: int) -> None:
    with Client(port) as client:
        client.send(b"GET /echo/alive HTTP/1.1\r\nHost: x\r\n\r\n")
        assert client.reply().json()["path"] == "/echo/alive"


# -- 1. bodies reserve what arrived, and must keep arriving ------------------------------------
def test_header_only_bodies_reserve_nothing_and_time_out(srv: Running) -> None:
    head = b"POST /echo/big HTTP/1.1\r\nHost: x\r\nContent-Length: 400000000\r\n\r\n"
    clients = [Client(srv.port) for _ in range(4)]
    try:
        for client in clients:
            client.send(head)
        connections = []
        for client in clients:
            wait_for(lambda c=client: (p := srv.connection(c)) is not None and p.body is not None)
            connections.append(srv.connection(client))
        held = srv.call(lambda: [len(p.body) for p in connections if p.body is not None])
        assert len(held) == 4 and max(held) <= MiB + 64  # not 400 MB each
        # the buffer follows the bytes that arrive
        clients[0].send(bytes(range(256)) * (3 * MiB // 256))
        wait_for(lambda: srv.call(lambda: connections[0].received) == 3 * MiB)
        received, capacity = srv.call(lambda: (connections[0].received, len(connections[0].body)))
        assert received == 3 * MiB and capacity <= 2 * received
        # no further byte: every one is answered 408 and closed, long before the 30 s idle timeout
        for client in clients:
            reply = client.reply()
            assert reply.status == 408
            assert reply.body == b"the request body did not arrive in time; the connection is closed"
            assert reply.headers["connection"] == "close"
            assert client.closed()
    finally:
        for client in clients:
            client.sock.close()
    assert_still_serves(srv.port)


def test_trickled_body_is_cut_off(srv: Running) -> None:
    """One byte every 0.25 s: each byte is in time, the body as a whole is not."""
    with Client(srv.port) as client:
        client.send(b"POST /echo/slow HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
        sent = 0
        while sent < 40 and not select.select([client.sock], [], [], 0.25)[0]:
            client.send(b"a")
            sent += 1
        assert sent < 40, "the trickled body was never cut off"
        reply = client.reply()
        assert reply.status == 408 and b"did not arrive in time" in reply.body
        assert client.closed()


def test_body_arriving_steadily_with_pauses_is_received(srv: Running) -> None:
    payload = bytes(range(256)) * 12
    with Client(srv.port) as client:
        client.send(b"POST /echo/steady HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(payload))
        for piece in (payload[:1000], payload[1000:2000], payload[2000:]):
            client.send(piece)
            time.sleep(0.3)
        reply = client.reply()
        assert reply.status == 200 and reply.json()["sha"] == sha(payload)


@pytest.mark.parametrize("size", [MiB - 1, MiB + 1, 3 * MiB + 7])
def test_growing_body_buffer_keeps_bytes_and_alignment(srv: Running, size: int) -> None:
    payload = bytes(range(251)) * (size // 251) + b"z" * (size % 251)
    for header in (None, 13):
        extra = b"" if header is None else b"Inference-Header-Content-Length: %d\r\n" % header
        path = b"/echo/grow" if header is None else b"/alignment"
        with Client(srv.port) as client:
            client.send(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n%s\r\n" % (path, size, extra))
            for start in range(0, size, 200_000):  # in pieces: the buffer grows between reads
                client.send(payload[start : start + 200_000])
            reply = client.reply().json()
        assert reply["sha"] == sha(payload)
        if header is not None:
            assert reply["offset"] == 0


# -- 2. compressed bodies are bounded too -------------------------------------------------
def _zeros_gzip(size: int) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(MiB)
    return b"".join(packer.compress(block) for _ in range(size // MiB)) + packer.flush()


def test_decompression_bomb_is_refused(srv: Running) -> None:
    bomb = _zeros_gzip(64 * MiB)
    assert len(bomb) < 100_000
    with Client(srv.port) as client:
        client.send(b"POST /inflate HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n"
                    % len(bomb) + bomb)
        reply = client.reply()
        assert reply.status == 413
        error = reply.json()["error"]
        assert "decompressed (gzip) exceeds the limit of 1000000 bytes" in error and "max_request_size" in error
        # bodies inside the limit, gzip or deflate, still inflate; broken ones are a 400
        payload = b"0123456789" * 50_000
        for encoding, packed in ((b"gzip", gzip.compress(payload)), (b"deflate", zlib.compress(payload))):
            client.send(b"POST /inflate HTTP/1.1\r\nHost: x\r\nContent-Encoding: %s\r\nContent-Length: %d\r\n\r\n"
                        % (encoding, len(packed)) + packed)
            assert client.reply().json() == {"length": len(payload), "sha": sha(payload)}
        broken = gzip.compress(payload)[:-20]
        client.send(b"POST /inflate HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n"
                    % len(broken) + broken)
        reply = client.reply()
        assert reply.status == 400 and "not valid gzip data" in reply.json()["error"]


def test_decompress_limit_defaults_to_max_request_size() -> None:
    """decode_request, which passes no limit, still stops at the default max_request_size."""
    limit = inspect.signature(v2_codec.decompress).parameters["limit"].default
    assert limit == ServerSettings().max_request_size


# -- 3. a chunked body ends where its framing says ------------------------------------------
SMUGGLE = (
    b"POST /echo/first HTTP/1.1\r\nHost: x\r\nX-First: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
    b"GET /echo/second?x=2 HTTP/1.1\r\nHost: x\r\nX-Second: 1\r\n\r\n"
    b"DELETE /echo/third HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
)


def _assert_three_separate(client: Client) -> None:
    first, second, third = (client.reply().json() for _ in range(3))
    assert first["method"] == "POST" and first["path"] == "/echo/first"
    assert first["sha"] == sha(b"hello world") and "x-second" not in first["headers"]
    assert "x-first" in first["headers"]
    assert second["method"] == "GET" and second["path"] == "/echo/second" and second["query"] == {"x": "2"}
    assert second["length"] == 0 and "x-second" in second["headers"] and "x-first" not in second["headers"]
    assert third["method"] == "DELETE" and third["path"] == "/echo/third" and third["sha"] == sha(b"abc")


def test_request_after_chunked_body_is_its_own_request(srv: Running) -> None:
    with Client(srv.port) as client:
        client.send(SMUGGLE)
        _assert_three_separate(client)
        # and the connection stays usable
        client.send(b"GET /echo/fourth HTTP/1.1\r\nHost: x\r\n\r\n")
        assert client.reply().json()["path"] == "/echo/fourth"


def test_chunked_body_split_anywhere(srv: Running) -> None:
    with Client(srv.port) as client:
        for start in range(0, len(SMUGGLE), 5):
            client.send(SMUGGLE[start : start + 5])
            time.sleep(0.002)
        _assert_three_separate(client)


def test_large_chunked_body_then_pipelined_request(srv: Running) -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB in 64 KiB chunks
    chunks = b"".join(b"%x\r\n%s\r\n" % (65536, payload[i : i + 65536]) for i in range(0, len(payload), 65536))
    with Client(srv.port) as client:
        client.send(b"PUT /echo/chunks HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks
                    + b"0\r\n\r\nGET /echo/next HTTP/1.1\r\nHost: x\r\n\r\n")
        first, second = client.reply().json(), client.reply().json()
        assert first["method"] == "PUT" and first["sha"] == sha(payload)
        assert second["method"] == "GET" and second["path"] == "/echo/next"


def test_chunked_body_over_the_limit(small: Running) -> None:
    with Client(small.port) as client:
        client.send(b"POST /echo/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n" % (2 * MiB))
        client.send(b"a" * (2 * MiB))  # still sending when the answer comes: no reset
        reply = client.reply()
        assert reply.status == 413 and "exceeds the limit of 1000000 bytes" in reply.json()["error"]
        client.sock.shutdown(socket.SHUT_WR)
        assert client.closed()


# -- 9. pipelining without reading is held back --------------------------------------------
def test_pipelined_client_that_never_reads_is_held_back(srv: Running) -> None:
    count = 8000
    requests = [b"GET /echo/%d HTTP/1.1\r\nHost: x\r\nX-Pad: %s\r\n\r\n" % (i, b"p" * 900) for i in range(count)]
    payload = b"".join(requests)
    with Client(srv.port, buffers=32 * 1024) as client:
        client.sock.setblocking(False)
        sent = 0
        while sent < len(payload):
            try:
                sent += client.sock.send(payload[sent : sent + 65536])
            except BlockingIOError:
                if not select.select([], [client.sock], [], 1.0)[1]:
                    break  # the server has stopped reading
        assert sent < len(payload) // 2, "the server read everything a client that never reads sent"
        connection = srv.connection(client)
        assert connection is not None
        read_buffer, write_buffer = srv.call(
            lambda: (len(connection.buffer), connection.transport.get_write_buffer_size())
        )
        assert read_buffer <= 256 * 1024 and write_buffer <= 256 * 1024
        # once the client reads, every request is answered, in order
        client.sock.setblocking(True)
        client.sock.settimeout(10)
        sender = threading.Thread(target=client.sock.sendall, args=(payload[sent:],))
        sender.start()
        for i in range(count):
            reply = client.reply()
            assert reply.status == 200 and reply.json()["path"] == f"/echo/{i}"
        sender.join(10)


def test_half_closed_client_gets_every_answer(srv: Running) -> None:
    """Pipelined requests then EOF (``nc -N``): all answered, then the server closes."""
    with Client(srv.port) as client:
        client.send(b"".join(b"GET /echo/%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(5))
                    + b"GET /echo/incomplete HTTP/1.1\r\n")
        client.sock.shutdown(socket.SHUT_WR)
        assert [client.reply().json()["path"] for _ in range(5)] == [f"/echo/{i}" for i in range(5)]
        assert client.closed() and client.data == b""


def test_hundred_pipelined_requests_in_order(srv: Running) -> None:
    with Client(srv.port) as client:
        client.send(b"".join(
            b"POST /echo/%d HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (i, i, b"b" * i)
            for i in range(100)
        ))
        for i in range(100):
            reply = client.reply().json()
            assert reply["path"] == f"/echo/{i}" and reply["length"] == i


# -- 11. no response splitting ------------------------------------------------------------
@pytest.mark.parametrize("case", sorted(BAD_RESPONSES))
def test_invalid_response_head_becomes_500(srv: Running, case: str) -> None:
    with Client(srv.port) as client:
        client.send(b"GET /bad?case=%s HTTP/1.1\r\nHost: x\r\n\r\n" % case.encode())
        reply = client.reply()
        assert reply.status == 500 and reply.body == INVALID
        assert b"evil" not in reply.head and b"set-cookie" not in reply.head.lower()
        client.send(b"HEAD /bad?case=%s HTTP/1.1\r\nHost: x\r\n\r\n" % case.encode())
        reply = client.reply(head_only=True)
        assert reply.status == 500 and reply.headers["content-length"] == str(len(INVALID))
        # nothing of the refused response follows: the next answer is the next request's
        client.send(b"GET /fine HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = client.reply()
        assert reply.status == 299 and reply.body == b"ok" and reply.headers["x-note"] == "a b\tc"
        assert client.data == b""


def test_invalid_response_logged_once(loop_kind: str, caplog: pytest.LogCaptureFixture) -> None:
    with (
        caplog.at_level(logging.DEBUG, "servekit.server"),
        serving(loop_kind, SMALL_LIMIT) as running,
        Client(running.port) as client,
    ):
        for _ in range(3):
            client.send(b"GET /bad?case=value_crlf HTTP/1.1\r\nHost: x\r\n\r\n")
            assert client.reply().status == 500
    errors = [r for r in caplog.records if r.name == "servekit.server" and r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "response was refused" in errors[0].getMessage()


# -- 13. Connection: close closes, whatever the request ---------------------------------------
@pytest.mark.parametrize("request_line", [
    b"GET /echo/c HTTP/1.1\r\n",
    b"HEAD /echo/c HTTP/1.1\r\n",
    b"DELETE /echo/c HTTP/1.1\r\n",
    b"OPTIONS /echo/c HTTP/1.1\r\n",
    b"POST /echo/c HTTP/1.1\r\nContent-Length: 0\r\n",
    b"POST /echo/c HTTP/1.1\r\n",
    b"POST /echo/c HTTP/1.1\r\nContent-Length: 2\r\n",
])
def test_connection_close_is_honoured(srv: Running, request_line: bytes) -> None:
    body = b"hi" if b"Content-Length: 2" in request_line else b""
    following = b"GET /echo/never HTTP/1.1\r\nHost: x\r\n\r\n"
    with Client(srv.port) as client:
        client.send(request_line + b"Host: x\r\nConnection: Keep-Alive, Close\r\n\r\n" + body + following)
        reply = client.reply(head_only=request_line.startswith(b"HEAD"))
        assert reply.status == 200 and reply.headers["connection"] == "close"
        if not request_line.startswith(b"HEAD"):
            assert reply.json()["path"] == "/echo/c" and reply.json()["length"] == len(body)
        assert client.closed() and client.data == b""  # the request after it is not answered


def test_http10_keep_alive_and_default_close(srv: Running) -> None:
    with Client(srv.port) as client:
        client.send(b"GET /echo/a HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /echo/b HTTP/1.0\r\n\r\n")
        first = client.reply()
        assert first.json()["path"] == "/echo/a" and "connection" not in first.headers
        second = client.reply()
        assert second.json()["path"] == "/echo/b" and second.headers["connection"] == "close"
        assert client.closed()


# -- also: bare LF, lingering after 413, CONNECT ---------------------------------------------
@pytest.mark.parametrize("raw", [
    b"GET /echo/x HTTP/1.1\nHost: x\n\n",
    b"GET /echo/x HTTP/1.1\r\nHost: x\n\r\n",
    b"GET /echo/x HTTP/1.1\r\nHost: x\r\n\n",
])
def test_bare_lf_head_is_refused(srv: Running, raw: bytes) -> None:
    with Client(srv.port) as client:
        client.send(raw)
        reply = client.reply()
        assert reply.status == 400 and b"CRLF" in reply.body and reply.headers["connection"] == "close"
        assert client.closed()


@pytest.mark.parametrize("expect", [False, True])
def test_body_over_the_limit_answered_without_reset(srv: Running, expect: bool) -> None:
    head = b"POST /echo/x HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n%s\r\n" % (
        BIG_LIMIT + 1, b"Expect: 100-continue\r\n" if expect else b"")
    with Client(srv.port) as client:
        client.send(head)
        client.send(b"a" * (4 * MiB))  # a client that sends its body anyway does not get EPIPE
        reply = client.reply(interim=True)
        assert reply.status == 413  # and no 100 Continue before it
        assert f"exceeds the limit of {BIG_LIMIT} bytes" in reply.json()["error"]
        assert reply.headers["connection"] == "close"
        client.sock.shutdown(socket.SHUT_WR)
        assert client.closed()


def test_linger_is_bounded(srv: Running) -> None:
    """A client that keeps sending after a 413 is closed after linger_timeout."""
    with Client(srv.port) as client:
        client.send(b"POST /echo/x HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (BIG_LIMIT + 1))
        assert client.reply().status == 413
        with pytest.raises((BrokenPipeError, ConnectionResetError)):
            for _ in range(400):  # at most 40 s
                client.send(b"a" * 1000)
                time.sleep(0.1)


@pytest.mark.parametrize(("raw", "status", "message"), [
    (b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 405, b"CONNECT is not supported"),
    (b"GET http://[::1 HTTP/1.1\r\nHost: x\r\n\r\n", 400, b"invalid request target"),
])
def test_connect_and_bad_targets_answered(
    srv: Running, caplog: pytest.LogCaptureFixture, raw: bytes, status: int, message: bytes
) -> None:
    with caplog.at_level(logging.ERROR), Client(srv.port) as client:
        client.send(raw)
        reply = client.reply()
        assert reply.status == status and message in reply.body
        assert client.closed()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert_still_serves(srv.port)


# -- what already held ---------------------------------------------------------------------
MALFORMED = {
    "cl_and_te": b"POST /echo/x HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te_xchunked": b"POST /echo/x HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    "te_chunked_identity": b"POST /echo/x HTTP/1.1\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
    "te_space_before_colon": b"POST /echo/x HTTP/1.1\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    "duplicate_cl": b"POST /echo/x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nab",
    "negative_cl": b"POST /echo/x HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
    "plus_cl": b"POST /echo/x HTTP/1.1\r\nContent-Length: +1\r\n\r\na",
    "overflowing_cl": b"POST /echo/x HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
    "obs_fold": b"GET /echo/x HTTP/1.1\r\nX-A: a\r\n b\r\n\r\n",
    "chunk_size_not_hex": b"POST /echo/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    "chunk_size_negative": b"POST /echo/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n",
    "chunk_size_0x": b"POST /echo/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
    "chunk_size_space": b"POST /echo/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n 5\r\nhello\r\n0\r\n\r\n",
    "chunk_size_overflow": b"POST /echo/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n%s\r\n" % (b"f" * 17),
    "chunk_without_crlf": b"POST /echo/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloX\r\n0\r\n\r\n",
    "chunk_bare_lf": b"POST /echo/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
    "chunk_trailer_fold": b"POST /echo/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n folded\r\n\r\n",
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_framing_is_refused(srv: Running, case: str) -> None:
    with Client(srv.port) as client:
        client.send(MALFORMED[case])
        reply = client.reply()
        assert reply.status == 400 and reply.body.startswith(b"malformed")
        assert reply.headers["connection"] == "close"
        assert client.closed()


def test_unsupported_transfer_coding(srv: Running) -> None:
    with Client(srv.port) as client:
        client.send(b"POST /echo/x HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n")
        reply = client.reply()
        assert reply.status == 501 and b"only chunked" in reply.body
        assert client.closed()


def test_head_over_64k_is_refused(srv: Running) -> None:
    with Client(srv.port) as client:
        client.send(b"GET /echo/x HTTP/1.1\r\n" + b"X-Pad: %s\r\n" % (b"p" * 1000) * 70)
        reply = client.reply()
        assert reply.status == 431 and reply.body == b"request headers too large"
        assert client.closed()


def test_header_slowloris_closed_at_idle_timeout(small: Running) -> None:
    with Client(small.port) as client:
        for byte in b"GET /echo/x HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"s" * 200:
            try:
                client.send(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
            if select.select([client.sock], [], [], 0.1)[0]:
                break
        else:
            pytest.fail("the slow head was never cut off")
        assert client.closed() and client.data == b""  # closed without an answer


def test_keep_alive_serves_many_requests(srv: Running) -> None:
    with Client(srv.port) as client:
        for i in range(50):
            client.send(b"POST /echo/%d HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc" % i)
            reply = client.reply()
            assert reply.json()["path"] == f"/echo/{i}" and "connection" not in reply.headers
