"""The load generator behind ``servekit bench``: requests encoded once (V2
JSON, Triton's binary tensor extension, V2 gRPC with ``raw_input_contents``)
and the clients that send them.

HTTP goes over keep-alive sockets from raw asyncio protocols parsed by
httptools; the closed loop is driven from the parser's callbacks, so the
client spends its time on the socket rather than in Python objects.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import importlib
import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import httptools
import numpy as np
import orjson

from servekit.errors import ConfigError
from servekit.protocols import v2_codec
from servekit.tensors import Tensor, dtype_of

GRPC_METHOD = "/inference.GRPCInferenceService/ModelInfer"
# message classes for V2 gRPC: servekit's own generated module, else tritonclient's
GRPC_MODULES = ("servekit.protocols.generated.grpc_predict_v2_pb2", "tritonclient.grpc.service_pb2")


# -- the request, encoded once --------------------------------------------------
def random_tensor(name: str, shape: list[int], datatype: str, rng: np.random.Generator) -> Tensor:
    """A tensor of random values of the given V2 datatype."""
    dtype = dtype_of(datatype)
    if datatype == "BYTES":
        data: np.ndarray = np.array([f"s{v}".encode() for v in rng.integers(0, 10**6, shape).reshape(-1)],
                                    dtype=object).reshape(shape)
    elif datatype == "BOOL":
        data = rng.integers(0, 2, shape).astype(bool)
    elif dtype.kind in "iu":
        data = rng.integers(0, 100, shape).astype(dtype)
    else:
        data = rng.random(shape).astype(dtype)
    return Tensor(name, data, datatype)


def load_input_file(path: Path) -> tuple[list[Tensor], bytes | None]:
    """Tensors from a V2 request JSON file (also its exact bytes) or an ``.npy`` array."""
    if path.suffix == ".npy":
        return [Tensor("input-0", np.load(path, allow_pickle=False))], None
    raw = path.read_bytes()
    return v2_codec.request_from_dict(v2_codec.loads(raw)).inputs, raw


def json_body(tensors: list[Tensor]) -> bytes:
    inputs = [
        {"name": t.name, "shape": t.shape, "datatype": t.datatype, "data": v2_codec.json_data(t)}
        for t in tensors
    ]
    return orjson.dumps({"inputs": inputs}, option=orjson.OPT_SERIALIZE_NUMPY)


def binary_body(tensors: list[Tensor]) -> tuple[bytes, int]:
    """Triton's binary tensor extension: JSON header, then each input's raw bytes."""
    raws = [v2_codec.tensor_bytes(t) for t in tensors]
    inputs = [
        {"name": t.name, "shape": t.shape, "datatype": t.datatype,
         "parameters": {"binary_data_size": len(raw)}}
        for t, raw in zip(tensors, raws, strict=True)
    ]
    header = orjson.dumps({"inputs": inputs, "parameters": {"binary_data_output": True}})
    return header + b"".join(raws), len(header)


def grpc_body(tensors: list[Tensor], model: str, version: str) -> bytes:
    """A serialized ``ModelInferRequest`` carrying ``raw_input_contents``."""
    pb2 = None
    for module in GRPC_MODULES:
        try:
            pb2 = importlib.import_module(module)
            break
        except ImportError:
            continue
    if pb2 is None:
        raise ConfigError("--protocol grpc needs servekit's V2 gRPC stubs or tritonclient[grpc]")
    message = pb2.ModelInferRequest(model_name=model, model_version=version)
    for t in tensors:
        message.inputs.add(name=t.name, datatype=t.datatype, shape=t.shape)
        message.raw_input_contents.append(v2_codec.tensor_bytes(t))
    return bytes(message.SerializeToString())


def http_request(host: str, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    """The whole HTTP/1.1 request, headers and body, ready to write to a socket."""
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


# -- clients ------------------------------------------------------------------------
class HttpConnection(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.error_body = b""
        self.keep_alive = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, hence the cast
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._finish(exc)

    def on_body(self, body: bytes) -> None:
        # only error bodies are kept (to report); success bodies are dropped unread
        if self.parser.get_status_code() >= 400 and len(self.error_body) < 1000:
            self.error_body += body

    def on_message_complete(self) -> None:
        self.keep_alive = self.parser.should_keep_alive()
        self._finish((self.parser.get_status_code(), self.error_body))

    def connection_lost(self, exc: Exception | None) -> None:
        self.keep_alive = False
        self._finish(ConnectionError(f"server closed the connection ({exc or 'EOF'})"))

    def _finish(self, outcome: tuple[int, bytes] | Exception) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            if isinstance(outcome, Exception):
                waiter.set_exception(outcome)
            else:
                waiter.set_result(outcome)

    async def send(self, raw: bytes) -> tuple[int, bytes]:
        assert self.transport is not None
        self.error_body = b""
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return await self.waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


Send = Callable[[], Awaitable[str | None]]  # one request; None on success, else the error


def grpc_send(channel: Any, raw: bytes) -> Send:
    """Sends ``raw`` (a serialized ModelInferRequest) on ``channel``: bytes in,
    bytes out, the request serialized once and the answer not parsed."""
    import grpc

    call = channel.unary_unary(GRPC_METHOD)

    async def send() -> str | None:
        try:
            await call(raw)
        except grpc.aio.AioRpcError as exc:
            return f"gRPC {exc.code().name}: {exc.details()}"
        return None

    return send


class Target:
    """Where the load goes and how one request is made; ``sender()`` gives one client."""

    def __init__(self, url: str, model: str, version: str, protocol: str, tensors: list[Tensor],
                 raw_json: bytes | None, grpc_url: str | None,
                 raw_body: tuple[str, bytes, str] | None = None) -> None:
        """``raw_body``: (path, body, content type) posted as given, for servers
        with their own format (``protocol`` "raw"; no statistics are asked)."""
        parts = urlsplit(url if "//" in url else "http://" + url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.base = f"http://{self.host}:{self.port}"
        self.model, self.version, self.protocol = model, version, protocol
        path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
        netloc = f"{self.host}:{self.port}"
        self.grpc_target = grpc_url or f"{self.host}:{self.port + 1}"
        self.raw = b""
        if raw_body is not None:
            raw_path, body, content_type = raw_body
            self.raw = http_request(netloc, raw_path, body, {"Content-Type": content_type})
        elif protocol == "json":
            body = raw_json if raw_json is not None else json_body(tensors)
            self.raw = http_request(netloc, path, body, {"Content-Type": "application/json"})
        elif protocol == "binary":
            body, header_length = binary_body(tensors)
            self.raw = http_request(netloc, path, body, {
                "Content-Type": "application/octet-stream",
                "Inference-Header-Content-Length": str(header_length)})
        else:
            self.raw = grpc_body(tensors, model, version)
        self.body_bytes = len(self.raw)
        self._channel: Any = None
        self._stats_conn: http.client.HTTPConnection | None = None

    async def sender(self) -> Send:
        if self.protocol == "grpc":
            return await self._grpc_sender()
        loop = asyncio.get_running_loop()
        state: dict[str, HttpConnection] = {}

        async def send() -> str | None:
            conn = state.get("c")
            if conn is None or not conn.keep_alive:
                if conn is not None:
                    conn.close()
                try:
                    _, conn = await loop.create_connection(HttpConnection, self.host, self.port)
                except OSError as exc:
                    await asyncio.sleep(0.05)  # a refused connect returns at once: do not spin
                    return f"cannot connect to {self.base}: {exc}"
                state["c"] = conn
            try:
                status, body = await conn.send(self.raw)
            except (ConnectionError, httptools.HttpParserError) as exc:
                conn.keep_alive = False
                return str(exc)
            if status >= 400:
                return f"HTTP {status}: {body.decode('utf-8', 'replace')[:300]}"
            return None

        return send

    async def _grpc_sender(self) -> Send:
        import grpc

        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(self.grpc_target, options=[
                ("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)])
        return grpc_send(self._channel, self.raw)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
        if self._stats_conn is not None:
            self._stats_conn.close()
            self._stats_conn = None

    def server_stats(self) -> dict[str, int] | None:
        """Summed V2 statistics counters of the model, or None if the server has none.

        Asked over one kept-alive connection: with several server processes
        sharing the port, a connection stays with one of them, so the counters
        of two calls come from the same process and their difference means
        something (a reconnect may land elsewhere; ``summarize`` drops
        differences that go backwards)."""
        if self.protocol == "raw":
            return None
        path = f"/v2/models/{self.model}" + (f"/versions/{self.version}" if self.version else "") + "/stats"
        for _ in range(2):
            if self._stats_conn is None:
                self._stats_conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
            try:
                self._stats_conn.request("GET", path)
                answer = self._stats_conn.getresponse()
                body = answer.read()
                break
            except (OSError, http.client.HTTPException):
                self._stats_conn.close()
                self._stats_conn = None
        else:
            return None
        if answer.status != 200:
            return None
        try:
            totals = {"inference": 0, "execution": 0, "queue_ns": 0, "compute_ns": 0}
            for entry in json.loads(body)["model_stats"]:
                stats = entry["inference_stats"]
                totals["inference"] += int(entry["inference_count"])
                totals["execution"] += int(entry["execution_count"])
                totals["queue_ns"] += int(stats["queue"]["ns"])
                totals["compute_ns"] += int(stats["compute_infer"]["ns"])
            return totals
        except (ValueError, KeyError, TypeError):
            return None


# -- the load -----------------------------------------------------------------------
class Recorder:
    """Latencies of one level, plus the progress line."""

    def __init__(self, label: str, duration: float, limit: int | None, progress: bool) -> None:
        self.label, self.duration, self.limit, self.progress = label, duration, limit, progress
        self.latencies: list[int] = []
        self.errors = 0
        self.first_error: str | None = None
        self.recording = False
        self.started = 0.0

    def record(self, began_ns: int, error: str | None) -> None:
        if not self.recording:
            return
        if error is None:
            self.latencies.append(time.perf_counter_ns() - began_ns)
        else:
            self.errors += 1
            self.first_error = self.first_error or error

    @property
    def full(self) -> bool:
        return self.limit is not None and len(self.latencies) + self.errors >= self.limit

    async def show(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            if self.progress and self.recording:
                elapsed = time.perf_counter() - self.started
                done = min(1.0, elapsed / self.duration) if self.duration else 0.0
                count = len(self.latencies)
                bar = "#" * int(done * 30)
                sys.stderr.write(f"\r{self.label:>14} [{bar:<30}] {elapsed:5.1f}s {count:8d} ok "
                                 f"{count / max(elapsed, 1e-9):9.1f} req/s {self.errors:6d} errors")
                sys.stderr.flush()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.25)
        if self.progress:
            sys.stderr.write("\n")


class LoopConnection(asyncio.Protocol):
    """A closed loop on one HTTP connection, driven from the parser's callbacks:
    each answer is recorded and the next request written at once, with no
    future or task switch per request, so the client stays cheap next to wrk."""

    def __init__(self, raw: bytes, recorder: Recorder, stop: asyncio.Event) -> None:
        self.raw, self.recorder, self.stop = raw, recorder, stop
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()
        self.began = 0
        self.in_flight = False
        self.error_body = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's do not subclass it
        self.send()

    def send(self) -> None:
        assert self.transport is not None
        self.error_body = b""
        self.in_flight = True
        self.began = time.perf_counter_ns()
        self.transport.write(self.raw)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.finish(f"bad HTTP answer: {exc}")

    def on_body(self, body: bytes) -> None:
        if self.parser.get_status_code() >= 400 and len(self.error_body) < 1000:
            self.error_body += body

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        self.in_flight = False
        error = None
        if status >= 400:
            error = f"HTTP {status}: {self.error_body.decode('utf-8', 'replace')[:300]}"
        self.recorder.record(self.began, error)
        if self.recorder.full:
            self.stop.set()
        if self.stop.is_set() or not self.parser.should_keep_alive():
            self.finish(None)
        else:
            self.send()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.in_flight:
            self.recorder.record(self.began, f"server closed the connection ({exc or 'EOF'})")
        self.finish(None)

    def finish(self, error: str | None) -> None:
        if error is not None:
            self.recorder.record(self.began, error)
        if self.transport is not None:
            self.transport.close()
        if not self.closed.done():
            self.closed.set_result(None)


async def closed_loop(target: Target, recorder: Recorder, concurrency: int, stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()

    async def http_client() -> None:
        while not stop.is_set():  # a new connection whenever the server closes one
            try:
                _, conn = await loop.create_connection(
                    lambda: LoopConnection(target.raw, recorder, stop), target.host, target.port)
            except OSError as exc:
                recorder.record(time.perf_counter_ns(), f"cannot connect to {target.base}: {exc}")
                await asyncio.sleep(0.05)  # a refused connect returns at once: do not spin
                continue
            try:
                await conn.closed
            finally:
                conn.finish(None)  # also when cancelled: do not leave the socket open

    async def client() -> None:
        send = await target.sender()
        while not stop.is_set():
            began = time.perf_counter_ns()
            recorder.record(began, await send())
            if recorder.full:
                stop.set()

    one = client if target.protocol == "grpc" else http_client
    await asyncio.gather(*(one() for _ in range(concurrency)))


async def open_loop(target: Target, recorder: Recorder, rate: float, max_inflight: int,
                    stop: asyncio.Event) -> None:
    idle: list[Send] = []
    inflight: set[asyncio.Task[None]] = set()
    slots = asyncio.Semaphore(max_inflight)

    async def one(scheduled_ns: int) -> None:
        try:
            send = idle.pop() if idle else await target.sender()
            error = await send()
            idle.append(send)
        finally:
            slots.release()
        recorder.record(scheduled_ns, error)
        if recorder.full:
            stop.set()

    start = time.perf_counter_ns()
    i = 0
    while not stop.is_set():
        due = start + int(i * 1e9 / rate)
        delay = (due - time.perf_counter_ns()) / 1e9
        if delay > 0:
            await asyncio.sleep(delay)
        await slots.acquire()
        task = asyncio.create_task(one(due))
        inflight.add(task)
        task.add_done_callback(inflight.discard)
        i += 1
    if inflight:
        await asyncio.wait(inflight)


__all__ = ["LoopConnection", "Recorder", "Target", "closed_loop", "load_input_file", "open_loop",
           "random_tensor"]
