"""``servekit bench``: a load generator for any Open Inference Protocol V2 server.

Like Triton's perf_analyzer: it sweeps concurrency levels (closed loop, one
request in flight per connection) or holds a fixed request rate (open loop,
latency counted from the scheduled send time so a slow server cannot hide its
queue), over V2 JSON, Triton's binary tensor extension or V2 gRPC with
``raw_input_contents``. Request bodies are encoded once up front and written
to keep-alive sockets from a raw asyncio protocol parsed by httptools, so the
client spends its time on the socket rather than in Python objects.

When the server answers the statistics extension (``GET /v2/models/{m}/stats``,
as servekit and Triton do) each level also reports where the server spent the
time: queueing, computing, and the average batch. With several server worker
processes the statistics come from whichever worker answers, so they are a
sample, not a total.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import http.client
import importlib
import io
import json
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import httptools
import numpy as np
import orjson

from servekit.errors import ConfigError, ServekitError
from servekit.protocols import v2_codec
from servekit.tensors import Tensor, dtype_of

PROTOCOLS = ("json", "binary", "grpc")
FORMATS = ("table", "json", "csv")
GRPC_METHOD = "/inference.GRPCInferenceService/ModelInfer"
STRAGGLER_SECONDS = 30.0
# message classes for V2 gRPC: servekit's own generated module, else tritonclient's
GRPC_MODULES = ("servekit.protocols.generated.grpc_predict_v2_pb2", "tritonclient.grpc.service_pb2")


@dataclass
class LevelResult:
    """One measured level of a sweep (a concurrency or a request rate)."""

    protocol: str
    concurrency: int | None
    rate: float | None
    requests: int
    errors: int
    duration_s: float
    throughput: float
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    mean_ms: float | None
    max_ms: float | None
    server_queue_us: float | None = None
    server_compute_us: float | None = None
    server_batch: float | None = None
    client_cpu: float | None = None  # cores this client used: near 1.0 means it may be the limit
    first_error: str | None = None


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


class Target:
    """Where the load goes and how one request is made; ``sender()`` gives one client."""

    def __init__(self, url: str, model: str, version: str, protocol: str, tensors: list[Tensor],
                 raw_json: bytes | None, grpc_url: str | None) -> None:
        parts = urlsplit(url if "//" in url else "http://" + url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.base = f"http://{self.host}:{self.port}"
        self.model, self.version, self.protocol = model, version, protocol
        path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
        netloc = f"{self.host}:{self.port}"
        self.grpc_target = grpc_url or f"{self.host}:{self.port + 1}"
        self.raw = b""
        if protocol == "json":
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
        # bytes in, bytes out: the request is serialized once, the answer is not parsed
        call = self._channel.unary_unary(GRPC_METHOD)
        raw = self.raw

        async def send() -> str | None:
            try:
                await call(raw)
            except grpc.aio.AioRpcError as exc:
                return f"gRPC {exc.code().name}: {exc.details()}"
            return None

        return send

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


async def run_level(target: Target, *, concurrency: int | None, rate: float | None, duration: float,
                    warmup: float, limit: int | None, max_inflight: int, progress: bool) -> LevelResult:
    label = f"c={concurrency}" if concurrency is not None else f"rate={rate:g}/s"
    recorder = Recorder(label, duration, limit, progress)
    stop = asyncio.Event()
    if concurrency is not None:
        load = asyncio.create_task(closed_loop(target, recorder, concurrency, stop))
    else:
        assert rate is not None
        load = asyncio.create_task(open_loop(target, recorder, rate, max_inflight, stop))
    shown = asyncio.create_task(recorder.show(stop))
    if warmup > 0:
        await asyncio.wait([load], timeout=warmup)
    before = await asyncio.to_thread(target.server_stats)
    recorder.recording, recorder.started = True, time.perf_counter()
    cpu_started = time.process_time()
    await asyncio.wait([load], timeout=duration if limit is None else None)
    elapsed = time.perf_counter() - recorder.started
    cpu = time.process_time() - cpu_started
    recorder.recording = False
    stop.set()
    # answers still owed get a grace period; a server that hangs must not hang the client
    finished, _ = await asyncio.wait([load], timeout=STRAGGLER_SECONDS)
    if not finished:
        load.cancel()
        recorder.errors += 1
        recorder.first_error = recorder.first_error or (
            f"requests in flight got no answer {STRAGGLER_SECONDS:.0f} s after the level ended")
    await asyncio.gather(load, shown, return_exceptions=True)
    after = await asyncio.to_thread(target.server_stats)
    result = summarize(target.protocol, concurrency, rate, recorder, elapsed, before, after)
    result.client_cpu = round(cpu / elapsed, 2) if elapsed > 0 else None
    return result


def summarize(protocol: str, concurrency: int | None, rate: float | None, recorder: Recorder,
              elapsed: float, before: dict[str, int] | None, after: dict[str, int] | None) -> LevelResult:
    ms = np.asarray(recorder.latencies, dtype=np.float64) / 1e6
    pct = [round(float(v), 3) for v in np.percentile(ms, [50, 90, 99])] if ms.size else [None] * 3
    result = LevelResult(
        protocol=protocol, concurrency=concurrency, rate=rate, requests=int(ms.size),
        errors=recorder.errors, duration_s=round(elapsed, 3),
        throughput=round(ms.size / elapsed, 2) if elapsed > 0 else 0.0,
        p50_ms=pct[0], p90_ms=pct[1], p99_ms=pct[2],
        mean_ms=round(float(ms.mean()), 3) if ms.size else None,
        max_ms=round(float(ms.max()), 3) if ms.size else None,
        first_error=recorder.first_error,
    )
    if before is not None and after is not None:
        inferences = after["inference"] - before["inference"]
        executions = after["execution"] - before["execution"]
        queue, compute = after["queue_ns"] - before["queue_ns"], after["compute_ns"] - before["compute_ns"]
        if inferences > 0 and executions > 0 and queue >= 0 and compute >= 0:
            result.server_queue_us = round(queue / inferences / 1e3, 1)
            result.server_compute_us = round(compute / executions / 1e3, 1)
            result.server_batch = round(inferences / executions, 2)
    return result


async def sweep(target: Target, args: argparse.Namespace) -> list[LevelResult]:
    results = []
    levels: list[tuple[int | None, float | None]] = (
        [(None, r) for r in args.rate] if args.rate else [(c, None) for c in args.concurrency]
    )
    try:
        for concurrency, rate in levels:
            results.append(await run_level(
                target, concurrency=concurrency, rate=rate, duration=args.duration,
                warmup=args.warmup, limit=args.requests, max_inflight=args.max_inflight,
                progress=args.progress))
    finally:
        await target.close()
    return results


# -- output ---------------------------------------------------------------------------
COLUMNS = ["protocol", "concurrency", "rate", "requests", "errors", "throughput", "p50_ms",
           "p90_ms", "p99_ms", "mean_ms", "max_ms", "server_queue_us", "server_compute_us",
           "server_batch", "client_cpu"]


def render(results: list[LevelResult], fmt: str, meta: dict[str, Any]) -> str:
    """Results as an aligned table, a JSON document or CSV rows."""
    if fmt == "json":
        return json.dumps({**meta, "results": [asdict(r) for r in results]}, indent=2) + "\n"
    rows = [asdict(r) for r in results]
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=[*COLUMNS, "duration_s", "first_error"])
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue()
    header = ["level", "req/s", "p50 ms", "p90 ms", "p99 ms", "errors", "queue us", "compute us", "batch",
              "client cpu"]
    table = [header]
    for r in results:
        level = f"c={r.concurrency}" if r.concurrency is not None else f"{r.rate:g}/s"
        table.append([level, f"{r.throughput:.1f}", *(_num(v) for v in (r.p50_ms, r.p90_ms, r.p99_ms)),
                      str(r.errors), *(_num(v) for v in (r.server_queue_us, r.server_compute_us,
                                                          r.server_batch, r.client_cpu))])
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = [f"{meta['model']} over {meta['protocol']} ({meta['body_bytes']} bytes a request)"]
    lines += ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in table]
    lines += [f"first error: {r.first_error}" for r in results if r.first_error]
    return "\n".join(lines) + "\n"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


# -- the command ----------------------------------------------------------------------
def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("values must be positive integers")
    return values


def _float_list(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError("rates must be positive")
    return values


def configure(parser: argparse.ArgumentParser) -> None:
    """The ``servekit bench`` flags."""
    parser.description = "Drive load at a V2 inference server and report throughput and latency."
    parser.add_argument("model", help="model name")
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="server HTTP address")
    parser.add_argument("--grpc-url", default=None, help="host:port for gRPC (default: HTTP port + 1)")
    parser.add_argument("--model-version", default="", help="model version (default: the server's)")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="json")
    load = parser.add_mutually_exclusive_group()
    load.add_argument("--concurrency", type=_int_list, default=[1, 16, 64],
                      help="closed-loop levels, e.g. 1,16,64 (default)")
    load.add_argument("--rate", type=_float_list, default=None,
                      help="open-loop request rates per second, e.g. 100,500")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per level")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each level")
    parser.add_argument("--requests", type=int, default=None,
                        help="stop a level after this many requests instead of after --duration")
    parser.add_argument("--max-inflight", type=int, default=1024, help="cap on open-loop requests in flight")
    data = parser.add_argument_group("the request")
    data.add_argument("--input-file", type=Path, default=None,
                      help="a V2 request JSON file or an .npy array (instead of random data)")
    data.add_argument("--input-name", default=None, help="input name for random or .npy data")
    data.add_argument("--shape", type=_int_list, default=None, help="input shape for random data, e.g. 1,4")
    data.add_argument("--datatype", default="FP32", help="V2 datatype for random data (default FP32)")
    data.add_argument("--seed", type=int, default=0)
    out = parser.add_argument_group("output")
    out.add_argument("--format", choices=FORMATS, default="table")
    out.add_argument("--output", type=Path, default=None, help="write the results here (default: stdout)")
    out.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                     help="progress bar on stderr (default: when stderr is a terminal)")


def request_tensors(args: argparse.Namespace) -> tuple[list[Tensor], bytes | None]:
    if args.input_file is not None:
        if not args.input_file.is_file():
            raise ConfigError(f"--input-file {args.input_file} does not exist")
        tensors, raw = load_input_file(args.input_file)
        if args.input_name and len(tensors) == 1:
            tensors[0].name = args.input_name
        return tensors, raw
    if args.shape is None:
        raise ConfigError("give the input as --shape (with --datatype) or as --input-file")
    rng = np.random.default_rng(args.seed)
    return [random_tensor(args.input_name or "input-0", args.shape, args.datatype.upper(), rng)], None


def run(args: argparse.Namespace) -> int:
    """Run the sweep and print or write the results."""
    if args.progress is None:
        args.progress = sys.stderr.isatty()
    tensors, raw_json = request_tensors(args)
    target = Target(args.url, args.model, args.model_version, args.protocol, tensors, raw_json,
                    args.grpc_url)
    try:
        import uvloop

        results = uvloop.run(sweep(target, args))
    except ImportError:
        results = asyncio.run(sweep(target, args))
    meta = {"model": args.model, "url": target.base, "protocol": args.protocol,
            "body_bytes": target.body_bytes, "duration_s": args.duration}
    text = render(results, args.format, meta)
    if args.output is not None:
        args.output.write_text(text)
    else:
        sys.stdout.write(text)
    failed = all(r.requests == 0 for r in results)
    if failed:
        first = next((r.first_error for r in results if r.first_error), "no request succeeded")
        raise ServekitError(f"bench: no request succeeded: {first}")
    return 0


__all__ = ["LevelResult", "Target", "configure", "render", "run"]
