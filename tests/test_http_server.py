"""servekit's HTTP/1.1 server on a real socket: keep-alive, pipelining,
100-continue, chunked bodies, the body limit, HEAD, HTTP/1.0, bad requests."""

from __future__ import annotations

import hashlib
import socket
import subprocess
from collections.abc import Iterator

import orjson
import pytest
import requests
from servers import serve_in_thread

from servekit.server.app import App
from servekit.server.http import Request, Response, Router, json_response, route

LIMIT = 1_000_000


async def alignment(request: Request) -> Response:
    """Where the bytes after a binary-tensor JSON header start, modulo 64."""
    import numpy as np

    raw = await request.raw_body()
    header = int(request.headers["inference-header-content-length"])
    return json_response({"offset": np.frombuffer(raw, np.uint8)[header:].ctypes.data % 64})


async def echo(request: Request) -> Response:
    body = await request.body()
    return json_response({
        "method": request.method,
        "path": request.path,
        "query": request.query,
        "length": len(body),
        "sha": hashlib.sha256(body).hexdigest(),
    })


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    router = Router([
        route("POST", "/echo/{name:path}", echo),
        route("GET", "/echo/{name:path}", echo),
        route("POST", "/alignment", alignment),
    ])
    yield from serve_in_thread(App({}, router, max_body=LIMIT), LIMIT)


def exchange(port: int, raw: bytes, responses: int = 1, head_only: bool = False) -> list[tuple[bytes, bytes]]:
    """Send raw bytes; read ``responses`` complete responses as (head, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(raw)
        data = b""
        out: list[tuple[bytes, bytes]] = []
        while len(out) < responses:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            while b"\r\n\r\n" in data:
                head, rest = data.split(b"\r\n\r\n", 1)
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length" and not head_only:
                        length = int(value)
                if head.startswith(b"HTTP/1.1 100"):
                    out.append((head, b""))
                    data = rest
                    continue
                if len(rest) < length:
                    break
                out.append((head, rest[:length]))
                data = rest[length:]
        return out


def test_keep_alive_and_pipelining(port: int) -> None:
    one = b"POST /echo/a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
    two = b"GET /echo/b%20c?x=1 HTTP/1.1\r\nHost: x\r\n\r\n"
    [(head1, body1), (head2, body2)] = exchange(port, one + two, responses=2)
    assert head1.startswith(b"HTTP/1.1 200") and head2.startswith(b"HTTP/1.1 200")
    first, second = orjson.loads(body1), orjson.loads(body2)
    assert first == {"method": "POST", "path": "/echo/a", "query": {}, "length": 5,
                     "sha": hashlib.sha256(b"hello").hexdigest()}
    assert second["path"] == "/echo/b c" and second["query"] == {"x": "1"} and second["length"] == 0


def test_large_body_in_many_pieces(port: int) -> None:
    payload = bytes(range(256)) * 3000  # 768 KB
    with requests.Session() as session:
        for _ in range(3):  # on one keep-alive connection
            r = session.post(f"http://127.0.0.1:{port}/echo/big", data=payload)
            assert r.json()["sha"] == hashlib.sha256(payload).hexdigest()


def test_expect_100_continue_with_curl(port: int, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "upload.bin"
    path.write_bytes(b"z" * 200_000)
    out = subprocess.run(
        ["curl", "-s", "-v", "-T", str(path), f"http://127.0.0.1:{port}/echo/upload", "-X", "POST"],
        capture_output=True, text=True, timeout=30,
    )
    assert "HTTP/1.1 100 Continue" in out.stderr
    assert orjson.loads(out.stdout)["length"] == 200_000


def test_chunked_body(port: int) -> None:
    raw = (b"POST /echo/c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    [(head, body)] = exchange(port, raw)
    assert head.startswith(b"HTTP/1.1 200")
    assert orjson.loads(body)["sha"] == hashlib.sha256(b"hello world").hexdigest()
    # the chunked framing says where the message ends: the connection stays open
    assert b"connection: close" not in head.lower()


def test_body_over_the_limit_is_refused_unread(port: int) -> None:
    raw = b"POST /echo/x HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (LIMIT + 1)
    [(head, body)] = exchange(port, raw)  # the body is never sent: no hang
    assert head.startswith(b"HTTP/1.1 413")
    assert "exceeds the limit of 1000000 bytes" in orjson.loads(body)["error"]
    assert b"connection: close" in head.lower()


def test_head_http10_and_malformed(port: int) -> None:
    [(head, body)] = exchange(port, b"HEAD /echo/h HTTP/1.1\r\nHost: x\r\n\r\n", head_only=True)
    assert head.startswith(b"HTTP/1.1 200") and body == b"" and b"content-length" in head.lower()
    [(head, body)] = exchange(port, b"GET /echo/old HTTP/1.0\r\n\r\n")
    assert orjson.loads(body)["path"] == "/echo/old" and b"connection: close" in head.lower()
    [(head, body)] = exchange(port, b"NOT A REQUEST\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400") and b"malformed" in body
    # the server still serves
    assert requests.get(f"http://127.0.0.1:{port}/echo/after").json()["path"] == "/echo/after"


@pytest.mark.parametrize("header", [1, 7, 13, 100])
def test_binary_tensors_arrive_aligned(port: int, header: int) -> None:
    body = b"{" * header + bytes(500_000)
    r = requests.post(f"http://127.0.0.1:{port}/alignment", data=body,
                      headers={"Inference-Header-Content-Length": str(header)})
    assert r.json() == {"offset": 0}


def test_heads_seen_before_are_answered_from_their_kept_parse(port: int) -> None:
    """A head sent again (same bytes) is not parsed again: its kept parse is
    used, and gives what the parse gave; heads refused are never kept, and
    what is kept stays bounded."""
    from servekit.server import http_server

    http_server._HEADS.clear()
    head = b"POST /echo/kept HTTP/1.1\r\nHost: x\r\nX-Mark: 1\r\nContent-Length: 5\r\n\r\n"
    answers = exchange(port, (head + b"hello") * 3 + head + b"world", responses=4)
    bodies = [orjson.loads(body) for _, body in answers]
    assert [b["path"] for b in bodies] == ["/echo/kept"] * 4
    assert [b["sha"] for b in bodies] == [hashlib.sha256(b"hello").hexdigest()] * 3 + [
        hashlib.sha256(b"world").hexdigest()]
    kept = http_server._HEADS[head]
    assert (kept.method, kept.url, kept.version, kept.framing) == (b"POST", b"/echo/kept", "1.1", (5, None, None))
    # it is the kept parse that answers (one planted under those bytes shows it)
    planted = kept.copy()
    planted.url = b"/echo/planted"
    http_server._HEADS[head] = planted
    [(_, body)] = exchange(port, head + b"hello")
    assert orjson.loads(body)["path"] == "/echo/planted"
    http_server._HEADS.clear()
    # the same head on HTTP/1.0 is another head: it closes, as its own parse says
    [(closing, _)] = exchange(port, head.replace(b"HTTP/1.1", b"HTTP/1.0") + b"hello")
    assert b"connection: close" in closing.lower()
    # refused heads are refused every time and never kept
    for bad in (b"POST /echo/x HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\n",
                b"CONNECT x:443 HTTP/1.1\r\nHost: x\r\n\r\n"):
        for _ in range(2):
            [(refused, _)] = exchange(port, bad)
            assert refused.startswith((b"HTTP/1.1 400", b"HTTP/1.1 405")), refused
        assert bad not in http_server._HEADS
    # heads over the size kept are parsed each time; the number kept is bounded
    long = b"GET /echo/l HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 1100 + b"\r\n\r\n"
    assert orjson.loads(exchange(port, long * 2, responses=2)[1][1])["path"] == "/echo/l"
    assert long not in http_server._HEADS
    many = b"".join(b"GET /echo/n%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(300))
    answered = exchange(port, many, responses=300)
    assert [orjson.loads(body)["path"] for _, body in answered] == [f"/echo/n{i}" for i in range(300)]
    assert 0 < len(http_server._HEADS) <= http_server._HEADS_KEPT
