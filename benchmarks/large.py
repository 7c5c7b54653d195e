"""Large requests: the whole 10,000x784 FP64 test set in one request, over V2
JSON, Triton's binary tensor extension (a JSON header, then the raw bytes; its
length in ``Inference-Header-Content-Length``) and V2 gRPC ``ModelInfer`` with
``raw_input_contents``, against any server that speaks them (servekit, Triton
through PyTriton, KServe, MLServer).

The requests are encoded once with servekit's own load generator
(:mod:`servekit.loadgen`), so every server gets the same bytes. The load is a
small closed loop of its own: N clients (each its own keep-alive HTTP
connection, or its own grpc.aio channel) each send the request again as soon
as the last answer arrives, until the duration is over; every request sent is
awaited and counted, so the server's CPU seconds over the window divide by
exactly the requests it served. ``check`` sends the request once and compares
every answered label with the model's own ``predict`` in this process.
"""

from __future__ import annotations

import asyncio
import copy
import http.client
import importlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from servekit.loadgen import GRPC_MODULES, Target, grpc_send
from servekit.tensors import Tensor

TRANSPORTS = ("json", "binary", "grpc")
INPUT_NAME = "predict"  # the models' input name on every server (the suite's V2 bodies use it)
NUMPY_OF_V2 = {"INT64": np.int64, "INT32": np.int32, "FP64": np.float64, "FP32": np.float32,
               "UINT8": np.uint8, "INT8": np.int8, "INT16": np.int16, "BOOL": np.bool_}


@dataclass
class Request:
    """One 10,000-row request of a transport, encoded for one server."""

    transport: str
    target: Target

    @property
    def body_bytes(self) -> int:
        return self.target.body_bytes


def request(transport: str, url: str, grpc_target: str, model: str, rows: np.ndarray,
            json_file: Path) -> Request:
    """The request of ``transport`` for ``model`` (the server's own model name):
    JSON is the suite's file as it is (nested lists), binary and gRPC carry the
    array's bytes."""
    tensors = [Tensor(INPUT_NAME, np.ascontiguousarray(rows, dtype=np.float64), "FP64")]
    raw_json = json_file.read_bytes() if transport == "json" else None
    return Request(transport, Target(url, model, "", transport, tensors, raw_json, grpc_target))


# -- correctness --------------------------------------------------------------------------
def check(req: Request, want: np.ndarray, timeout: float = 600.0) -> dict[str, Any]:
    """Send the request once; every label in the answer must equal ``want`` (the
    model's own predictions of the same rows). Raises RuntimeError if not."""
    started = time.perf_counter()
    labels = _grpc_labels(req, timeout) if req.transport == "grpc" else _http_labels(req, timeout)
    seconds = time.perf_counter() - started
    if labels.shape != want.shape:
        raise RuntimeError(f"{req.transport}: {labels.size} labels came back for {want.size} rows")
    wrong = np.flatnonzero(labels != want)
    if wrong.size:
        first = int(wrong[0])
        raise RuntimeError(f"{req.transport}: {wrong.size} of {want.size} labels differ from the model's own "
                           f"predict (row {first}: {labels[first]} against {want[first]})")
    return {"rows": int(want.size), "agree": True, "first_request_s": round(seconds, 3)}


def _http_labels(req: Request, timeout: float) -> np.ndarray:
    target = req.target
    head, _, body = target.raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    path = lines[0].split(" ")[1]
    headers = dict(line.split(": ", 1) for line in lines[1:] if not line.startswith(("Host:", "Content-Length:")))
    conn = http.client.HTTPConnection(target.host, target.port, timeout=timeout)
    try:
        conn.request("POST", path, body=body, headers=headers)
        answer = conn.getresponse()
        data = answer.read()
        if answer.status != 200:
            raise RuntimeError(f"{req.transport}: HTTP {answer.status}: {data[:300].decode(errors='replace')}")
        header_length = answer.getheader("Inference-Header-Content-Length")
    finally:
        conn.close()
    if header_length is None:  # a JSON answer
        output = json.loads(data)["outputs"][0]
        return _flat(np.asarray(output["data"]))
    size = int(header_length)
    document = json.loads(data[:size])
    offset = size
    for output in document["outputs"]:
        binary = (output.get("parameters") or {}).get("binary_data_size")
        if binary is None:  # this output came as JSON
            return _flat(np.asarray(output["data"]))
        raw = data[offset:offset + int(binary)]
        return np.frombuffer(raw, dtype=NUMPY_OF_V2[output["datatype"]]).astype(np.float64)
    raise RuntimeError(f"{req.transport}: the answer has no outputs: {document}")


def _grpc_labels(req: Request, timeout: float) -> np.ndarray:
    import grpc

    pb2: Any = None
    for module in GRPC_MODULES:
        try:
            pb2 = importlib.import_module(module)
            break
        except ImportError:
            continue
    assert pb2 is not None
    target = req.target
    options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    with grpc.insecure_channel(target.grpc_target, options=options) as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                                   response_deserializer=pb2.ModelInferResponse.FromString)
        try:
            answer = call(target.raw, timeout=timeout)
        except grpc.RpcError as exc:
            raise RuntimeError(f"grpc: {exc.code().name}: {exc.details()}") from exc
    output = answer.outputs[0]
    if answer.raw_output_contents:
        return np.frombuffer(answer.raw_output_contents[0], dtype=NUMPY_OF_V2[output.datatype]).astype(np.float64)
    contents = output.contents
    for field in ("int64_contents", "int_contents", "fp64_contents", "fp32_contents", "uint_contents",
                  "uint64_contents", "bool_contents"):
        values = getattr(contents, field)
        if len(values):
            return np.asarray(values, dtype=np.float64)
    raise RuntimeError(f"grpc: the answer's output {output.name} carries no values")


def _flat(values: np.ndarray) -> np.ndarray:
    return values.reshape(-1).astype(np.float64)


# -- load ---------------------------------------------------------------------------------
async def _load(target: Target, connections: int, seconds: float) -> dict[str, Any]:
    latencies: list[float] = []
    errors: list[str] = []
    started = time.perf_counter()
    deadline = started + seconds

    # each client its own connection: over gRPC its own channel, as each HTTP client has its own
    # socket, so a server with several processes can spread them
    targets = [copy.copy(target) for _ in range(connections)]

    async def client(mine: Target) -> None:
        send = await (_grpc_sender(mine) if mine.protocol == "grpc" else mine.sender())
        while time.perf_counter() < deadline:
            began = time.perf_counter()
            error = await send()
            if error is None:
                latencies.append(time.perf_counter() - began)
            else:
                errors.append(error)
                await asyncio.sleep(0.05)

    try:
        await asyncio.gather(*(client(mine) for mine in targets))
    finally:
        for mine in targets:
            await mine.close()
    elapsed = time.perf_counter() - started
    ms = np.asarray(latencies) * 1000
    p50, p99 = (float(np.percentile(ms, 50)), float(np.percentile(ms, 99))) if ms.size else (None, None)
    return {"connections": connections, "requests": int(ms.size), "errors": len(errors),
            "first_error": errors[0][:300] if errors else None, "elapsed_s": round(elapsed, 3),
            "rps": round(ms.size / elapsed, 3) if elapsed > 0 else 0.0,
            "p50_ms": None if p50 is None else round(p50, 1), "p99_ms": None if p99 is None else round(p99, 1)}


async def _grpc_sender(target: Target) -> Callable[[], Awaitable[str | None]]:
    """One grpc.aio channel of its own (a local subchannel pool: gRPC shares one connection between
    channels to the same address otherwise), sending the serialized request, not parsing the answer."""
    import grpc

    channel = grpc.aio.insecure_channel(target.grpc_target, options=[
        ("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1),
        ("grpc.use_local_subchannel_pool", 1)])
    target._channel = channel  # closed by Target.close
    return grpc_send(channel, target.raw)


def load(req: Request, connections: int, seconds: float) -> dict[str, Any]:
    """``connections`` clients sending the request back to back for ``seconds``;
    requests still on their way at the end are waited for and counted."""
    return asyncio.run(_load(req.target, connections, seconds))
