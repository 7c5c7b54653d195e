"""The express path: a request answered in the HTTP server's callback by its
route's synchronous handler (App.express), and the data plane's synchronous
step (DataPlane.express, AdaptiveBatcher.run_now) behind V2 REST's infer. It
must answer exactly what the awaited path answers, count what it counts, and
step aside (having done nothing) for every call it does not cover."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from servers import serve_in_thread

from servekit.config import ModelParameters, ModelSettings, ServerSettings
from servekit.dataplane import DataPlane, ModelFailed, Target
from servekit.errors import InvalidInput, Overloaded
from servekit.library.prediction_cache import LRUCache
from servekit.registry import Registry
from servekit.server.app import App
from servekit.server.http import Request, Response, Router, json_response, route
from servekit.server.http_server import _response_head, ok_json_head
from servekit.server.metrics import Metrics
from servekit.tensors import InferenceRequest, InferenceResponse, Tensor

HERE = str(Path(__file__).resolve().parent)
LIMIT = 1_000_000


# -- the HTTP server and the App ------------------------------------------------
async def awaited(request: Request) -> Response:
    body = await request.body()
    return json_response({"name": request.path_params.get("name"), "express": False, "length": len(body)})


def express(params: dict[str, str], headers: list[tuple[bytes, bytes]], body: bytes) -> Response | None:
    name = params["name"]
    if name.startswith("slow"):
        return None  # not for the express path: the awaited handler answers
    if name == "busy":
        raise Overloaded("busy, come back", retry_after=3)
    if name == "broken":
        raise KeyError("secret detail")
    if name == "split":  # a header that would split the response: refused
        return Response(b"{}", headers=[(b"x-echo", b"a\r\nset-cookie: b")])
    return json_response({"name": name, "express": True, "length": len(body)})


def router() -> Router:
    return Router([route("POST", "/fast/{name}", awaited, express=express), route("POST", "/plain/{name}", awaited)])


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    yield from serve_in_thread(App({}, router(), max_body=LIMIT), LIMIT)


@pytest.fixture(scope="module")
def logged_port() -> Iterator[int]:
    yield from serve_in_thread(App({}, router(), max_body=LIMIT, access_log=True), LIMIT)


def post(path: str, body: bytes = b"{}", headers: bytes = b"") -> bytes:
    return b"POST %s HTTP/1.1\r\nHost: x\r\n%sContent-Length: %d\r\n\r\n%s" % (path.encode(), headers, len(body), body)


def exchange(port: int, raw: bytes, responses: int = 1) -> tuple[list[tuple[bytes, dict[str, Any]]], bool]:
    """Send raw bytes; read ``responses`` answers as (head, JSON body); and
    whether the server closed the connection after them."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(raw)
        data = b""
        out: list[tuple[bytes, dict[str, Any]]] = []
        closed = False
        while True:
            while b"\r\n\r\n" in data:
                head, rest = data.split(b"\r\n\r\n", 1)
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                if len(rest) < length:
                    break
                out.append((head, orjson.loads(rest[:length])))
                data = rest[length:]
            if len(out) >= responses:
                sock.settimeout(0.5)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                closed = True
                break
            data += chunk
        return out, closed


def header(head: bytes, name: bytes) -> bytes | None:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b": ")
        if key.lower() == name:
            return value
    return None


def test_a_route_with_an_express_handler_answers_in_the_callback(port: int) -> None:
    [(head, body)], closed = exchange(port, post("/fast/a", b"12345"))
    assert head.startswith(b"HTTP/1.1 200") and body == {"name": "a", "express": True, "length": 5}
    assert not closed
    assert len(header(head, b"x-request-id") or b"") == 36  # one made for it, as for every answer
    # the client's id is kept
    [(head, _)], _ = exchange(port, post("/fast/a", headers=b"X-Request-ID: abc-1\r\n"))
    assert header(head, b"x-request-id") == b"abc-1"


def test_what_express_does_not_take_goes_to_the_awaited_handler(port: int) -> None:
    answers = {}
    for path in ["/fast/slow", "/plain/a", "/fast/a?x=1", "/fast/%61"]:
        [(head, body)], _ = exchange(port, post(path))
        assert head.startswith(b"HTTP/1.1 200")
        answers[path] = body["express"], body["name"]
    assert answers == {"/fast/slow": (False, "slow"), "/plain/a": (False, "a"), "/fast/a?x=1": (False, "a"),
                       "/fast/%61": (False, "a")}
    # an invalid client id is refused by the awaited path, in the route's format
    [(head, body)], _ = exchange(port, post("/fast/a", headers=b"X-Request-ID: a b\r\n"))
    assert head.startswith(b"HTTP/1.1 400") and "X-Request-ID" in body["error"]


def test_pipelined_requests_mixing_both_paths_are_answered_in_order(port: int) -> None:
    names = [f"slow{i}" if i % 7 == 3 else f"n{i}" for i in range(600)]
    raw = b"".join(post(f"/fast/{name}", b"x" * (i % 5)) for i, name in enumerate(names))
    answers, closed = exchange(port, raw, len(names))
    assert [body["name"] for _, body in answers] == names
    assert [body["express"] for _, body in answers] == [not name.startswith("slow") for name in names]
    assert [body["length"] for _, body in answers] == [i % 5 for i in range(600)]
    assert not closed


def test_a_long_pipeline_gives_other_connections_their_turn(port: int) -> None:
    """At most 32 pipelined requests are answered in one callback; the next
    goes to a task (the event loop runs other connections meanwhile)."""
    raw = b"".join(post(f"/fast/p{i}") for i in range(200))
    answers, _ = exchange(port, raw, 200)
    assert [body["name"] for _, body in answers] == [f"p{i}" for i in range(200)]
    runs = "".join("x" if body["express"] else "." for _, body in answers).split(".")
    assert max(len(run) for run in runs) <= 32 and len(runs) > 1


def test_connection_close_and_http10_close_after_an_express_answer(port: int) -> None:
    [(head, body)], closed = exchange(port, post("/fast/a", headers=b"Connection: close\r\n"))
    assert body["express"] and b"connection: close" in head.lower() and closed
    raw = b"POST /fast/b HTTP/1.0\r\nContent-Length: 2\r\n\r\n{}"
    [(head, body)], closed = exchange(port, raw)
    assert head.startswith(b"HTTP/1.1 200") and body["name"] == "b" and closed


def test_a_plain_json_answers_ready_head_is_the_head_the_general_path_writes() -> None:
    """App.express gives a 200 JSON answer's head ready made (ok_json_head):
    the very bytes _response_head makes of its headers, open or closing."""

    class Connection:
        keep_alive = True

    ids = [b"0" * 36, b"abc-1", b"!~" * 64]
    for request_id in ids:
        headers = [(b"content-length", b"17"), (b"content-type", b"application/json"), (b"x-request-id", request_id)]
        for keep_alive, end in [(True, b"\r\n"), (False, b"connection: close\r\n\r\n")]:
            Connection.keep_alive = keep_alive
            ready = ok_json_head(17, request_id)
            assert ready is not None and ready + end == _response_head(Connection, 200, headers)  # type: ignore[arg-type]
    # an id that is not a header value: no ready head (the general path refuses it)
    for bad in [b"", b"a b", b"a\r\nset-cookie: x", b"a\0", b"x" * 129, "é".encode()]:
        assert ok_json_head(17, bad) is None


def test_errors_of_an_express_handler_are_answered_in_the_routes_format(port: int) -> None:
    [(head, body)], _ = exchange(port, post("/fast/busy"))
    assert head.startswith(b"HTTP/1.1 503") and header(head, b"retry-after") == b"3"
    assert body == {"error": "busy, come back"}
    answers, closed = exchange(port, post("/fast/broken") + post("/fast/a"), 2)
    (head, body), (_, after) = answers
    assert head.startswith(b"HTTP/1.1 500") and body == {"error": "internal error while handling the request: KeyError"}
    assert "secret" not in str(body) and after["express"] and not closed  # and it keeps serving


def test_an_express_answer_that_would_split_the_response_is_refused(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(post("/fast/split"))
        data = b""
        while b"\r\n\r\n" not in data or not data.endswith(b"response"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    assert data.startswith(b"HTTP/1.1 500") and b"set-cookie" not in data.lower()
    [(head, body)], _ = exchange(port, post("/fast/a"))
    assert head.startswith(b"HTTP/1.1 200") and body["express"]  # and it keeps serving


def test_no_express_answers_with_access_logging(logged_port: int) -> None:
    [(head, body)], _ = exchange(logged_port, post("/fast/a"))
    assert head.startswith(b"HTTP/1.1 200") and body == {"name": "a", "express": False, "length": 2}


# -- the data plane ------------------------------------------------------------------
def settings(name: str = "double", implementation: str = "plugin_runtimes.Doubler", **extra: Any) -> ModelSettings:
    return ModelSettings(name=name, implementation=implementation, source_dir=HERE,
                         parameters=ModelParameters(version="1", extra=extra))


def body(value: float = 1.0, **parameters: Any) -> bytes:
    document: dict[str, Any] = {"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP64", "data": [value]}]}
    if parameters:
        document["parameters"] = parameters
    return orjson.dumps(document)


def decode(raw: bytes) -> InferenceRequest:
    document = orjson.loads(raw)
    if "inputs" not in document:
        raise InvalidInput("no inputs")
    entry = document["inputs"][0]
    return InferenceRequest([Tensor(entry["name"], np.array(entry["data"], np.float64).reshape(entry["shape"]))],
                            parameters=document.get("parameters") or {}, id=document.get("id"))


def encode(response: InferenceResponse, request: InferenceRequest) -> list[float]:
    values: list[float] = response.outputs[0].data.ravel().tolist()
    return values


def count(dataplane: DataPlane, name: str = "double", what: str = "servekit_model_requests_total") -> float:
    return dataplane.metrics.registry.get_sample_value(what, {"model": name, "version": "1", "protocol": "t"}) or 0.0


async def plane(*models: ModelSettings) -> DataPlane:
    # a call runs inline once one took less than a minute: whatever this machine's speed, a
    # model is inline after its first call (which runs in a thread)
    registry = Registry(ServerSettings(inline_predict_ms=60_000))
    for model in models:
        await registry.load(model)
    return DataPlane(registry, Metrics(), cache_factory=LRUCache)


def test_the_data_planes_express_step_answers_and_counts_like_serve() -> None:
    async def scenario() -> None:
        dataplane = await plane(settings())
        model = dataplane.resolve(Target("double"))
        assert model.batcher is not None
        stats = model.batcher.stats
        # a model's first call runs in a thread (its cost is not known yet): not express
        assert dataplane.express(Target("double"), decode, body(2.0), encode, protocol="t") is None
        assert count(dataplane) == 0 and stats.inference_count == 0
        assert await dataplane.serve(Target("double"), decode(body(2.0)), lambda r: encode(r, None),  # type: ignore[arg-type]
                                     protocol="t") == [4.0]
        for value in range(5):
            assert dataplane.express(Target("double"), decode, body(value), encode, protocol="t") == [2.0 * value]
        assert count(dataplane) == 6
        assert stats.success_count == 6 and stats.execution_count == 6 and stats.batch_sizes == {1: 6}
        assert model.runtime.calls == 6  # type: ignore[union-attr]

    asyncio.run(scenario())


def test_the_express_step_steps_aside_having_done_nothing() -> None:
    async def scenario() -> None:
        dataplane = await plane(settings(), settings("cached", cache_predictions=True))
        for name in ("double", "cached"):
            await dataplane.serve(Target(name), decode(body()), lambda r: r, protocol="t")  # warm: inline from now
        model = dataplane.resolve(Target("double"))
        assert model.batcher is not None
        before = model.batcher.stats.inference_count, count(dataplane)
        refused = {
            "timeout parameter": dataplane.express(Target("double"), decode, body(timeout=5_000_000), encode,
                                                   protocol="t"),
            "bad body": dataplane.express(Target("double"), decode, b'{"x": 1}', encode, protocol="t"),
            "unknown model": dataplane.express(Target("nobody"), decode, body(), encode, protocol="t"),
            "unknown version": dataplane.express(Target("double", "7"), decode, body(), encode, protocol="t"),
            "cached model": dataplane.express(Target("cached"), decode, body(), encode, protocol="t"),
        }
        assert refused == dict.fromkeys(refused)
        dataplane.observers.append(lambda call: None)
        assert dataplane.express(Target("double"), decode, body(), encode, protocol="t") is None
        dataplane.observers.clear()
        model.batcher._direct = True  # a call of it is running: a new one must queue
        assert dataplane.express(Target("double"), decode, body(), encode, protocol="t") is None
        model.batcher._direct = False
        assert (model.batcher.stats.inference_count, count(dataplane)) == before
        assert count(dataplane, "(unknown)", "servekit_model_request_failures_total") == 0
        assert dataplane.express(Target("double"), decode, body(3.0), encode, protocol="t") == [6.0]

    asyncio.run(scenario())


def test_a_call_that_will_queue_is_not_decoded_by_the_express_step() -> None:
    """Steps aside before decoding when the model would not run the call at
    once: so the awaited path is the only one to decode it."""
    decoded: list[bytes] = []

    def counting(raw: bytes) -> InferenceRequest:
        decoded.append(raw)
        return decode(raw)

    async def scenario() -> None:
        dataplane = await plane(settings(), settings("windowed"))
        for name in ("double", "windowed"):
            await dataplane.serve(Target(name), decode(body()), lambda r: r, protocol="t")
        windowed = dataplane.resolve(Target("windowed")).batcher
        assert windowed is not None
        windowed.max_batch_time = 0.01  # waits for a batch to fill: never run at once
        assert dataplane.express(Target("windowed"), counting, body(), encode, protocol="t") is None
        model = dataplane.resolve(Target("double"))
        assert model.batcher is not None
        model.batcher._direct = True  # busy
        assert dataplane.express(Target("double"), counting, body(), encode, protocol="t") is None
        model.batcher._direct = False
        invoker: Any = model.batcher._inline
        invoker.recent = invoker.inline_limit * 2  # slow: runs in a thread
        assert dataplane.express(Target("double"), counting, body(), encode, protocol="t") is None
        assert decoded == []
        invoker.recent = 0.0
        assert dataplane.express(Target("double"), counting, body(2.0), encode, protocol="t") == [4.0]
        assert len(decoded) == 1

    asyncio.run(scenario())


def test_a_model_raising_on_the_express_step_is_counted_and_answered_as_serve_does() -> None:
    async def scenario() -> None:
        dataplane = await plane(settings("flaky", "plugin_runtimes.Doubler"))
        model = dataplane.resolve(Target("flaky"))
        await dataplane.serve(Target("flaky"), decode(body()), lambda r: r, protocol="t")
        runtime: Any = model.runtime

        def fail(request: InferenceRequest) -> InferenceResponse:
            raise ValueError("bad weights")

        runtime.predict = fail
        with pytest.raises(ModelFailed) as failure:
            dataplane.express(Target("flaky"), decode, orjson.dumps(
                {"id": "r-9", "inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1]}]}),
                encode, protocol="t")
        assert failure.value.message == ("model 'flaky' raised ValueError: bad weights (request id r-9; the "
                                         "traceback is in the server log)")
        failures = dataplane.metrics.registry.get_sample_value(
            "servekit_model_request_failures_total", {"model": "flaky", "version": "1", "protocol": "t",
                                                      "status": "500"})
        assert failures == 1
        assert model.batcher is not None and model.batcher.stats.fail_count == 1

    asyncio.run(scenario())
