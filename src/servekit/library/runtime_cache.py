"""The prediction cache offered to every runtime (framework models too), for
V2 requests: a model whose settings say ``"parameters": {"extra":
{"cache_predictions": true}}`` answers a request it has seen before from the
cache (LRU or Redis, per the ``SERVEKIT_CACHE_*`` settings).

The key is the model name and version plus a hash of the request's tensors
(name, datatype, shape and raw bytes), requested outputs and parameters. The
adaptive batcher may merge concurrent requests first; a merged batch is cached
as one entry, so hits are for requests repeated while the model is not busy.
"""

from __future__ import annotations

import hashlib
import struct
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from servekit.library.prediction_cache import PredictionCache, cache_key, make_cache
from servekit.library.settings import LibrarySettings
from servekit.runtimes.base import Runtime
from servekit.server.runner import WORKER_HOOKS
from servekit.tensors import InferenceRequest, InferenceResponse, Tensor, dtype_of

if TYPE_CHECKING:
    from servekit.registry import ModelVersion
    from servekit.server.runner import Worker


def _raw(tensor: Tensor) -> bytes:
    if tensor.datatype == "BYTES":
        return b"".join(struct.pack("<I", len(v)) + v for v in _as_bytes(tensor.data))
    return np.ascontiguousarray(tensor.data, dtype=dtype_of(tensor.datatype).newbyteorder("<")).tobytes()


def _as_bytes(data: np.ndarray) -> list[bytes]:
    return [v if isinstance(v, bytes) else str(v).encode() for v in data.reshape(-1)]


def request_hash(request: InferenceRequest) -> str:
    digest = hashlib.sha256()
    for tensor in request.inputs:
        header = [tensor.name, tensor.datatype, list(tensor.data.shape), tensor.parameters]
        digest.update(orjson.dumps(header, option=orjson.OPT_SORT_KEYS))
        digest.update(_raw(tensor))
    outputs = None if request.outputs is None else [[o.name, o.parameters] for o in request.outputs]
    parameters = {k: v for k, v in request.parameters.items() if k not in ("timeout", "headers")}
    digest.update(orjson.dumps([outputs, parameters], option=orjson.OPT_SORT_KEYS))
    return digest.hexdigest()


def encode_response(response: InferenceResponse) -> bytes:
    header = [[t.name, t.datatype, list(t.data.shape), t.parameters] for t in response.outputs]
    head = orjson.dumps([header, response.parameters], option=orjson.OPT_SERIALIZE_NUMPY)
    chunks = [_raw(t) for t in response.outputs]
    sizes = struct.pack(f"<{len(chunks)}Q", *(len(c) for c in chunks))
    return struct.pack("<I", len(head)) + head + sizes + b"".join(chunks)


def decode_response(raw: bytes, runtime: Runtime, request: InferenceRequest) -> InferenceResponse:
    (head_length,) = struct.unpack_from("<I", raw)
    header, parameters = orjson.loads(raw[4 : 4 + head_length])
    offset = 4 + head_length
    sizes = struct.unpack_from(f"<{len(header)}Q", raw, offset)
    offset += 8 * len(header)
    outputs = []
    for (name, datatype, shape, tensor_parameters), size in zip(header, sizes, strict=True):
        chunk = raw[offset : offset + size]
        offset += size
        if datatype == "BYTES":
            from servekit.protocols.v2_codec import deserialize_bytes

            data = deserialize_bytes(chunk, None, name).reshape(shape)
        else:
            data = np.frombuffer(chunk, dtype=dtype_of(datatype).newbyteorder("<")).reshape(shape)
        outputs.append(Tensor(name, data, datatype, tensor_parameters))
    return runtime.response(request, outputs, **parameters)


def cache_runtime(runtime: Runtime, cache: PredictionCache) -> None:
    """Serve ``runtime``'s repeated requests from ``cache``."""
    if getattr(runtime, "_servekit_cached", False) or runtime.is_async:
        return
    original = runtime.predict

    def predict(request: InferenceRequest) -> InferenceResponse:
        key = cache_key(runtime.name, runtime.version or "", request_hash(request))
        hit = cache.get_many([key])[0]
        if hit is not None:
            return decode_response(hit, runtime, request)
        response = original(request)
        cache.set_many({key: encode_response(response)})
        return response

    runtime.predict = predict  # type: ignore[method-assign]
    runtime._servekit_cached = True  # type: ignore[attr-defined]


async def install(worker: Worker) -> None:
    """Worker hook: wrap the models that opt in, now and whenever one loads."""
    registry = worker.registry
    if registry is None:
        return
    state: dict[str, PredictionCache] = {}

    def wrap(model: ModelVersion) -> None:
        runtime = model.runtime
        if runtime is None or not model.settings.parameters.extra.get("cache_predictions"):
            return
        if "cache" not in state:
            state["cache"] = make_cache(LibrarySettings.from_env())
        cache_runtime(runtime, state["cache"])

    for model in registry.all_versions():
        wrap(model)

    def on_event(event: str, model: Any) -> None:
        if event == "loaded":
            wrap(model)

    registry.listeners.append(on_event)


WORKER_HOOKS.append(install)
