"""How the data plane's prediction cache keys and stores a response, for any
model (framework models too) whose settings say ``"parameters": {"extra":
{"cache_predictions": true}}``; the cache is LRU or Redis per the
``SERVEKIT_CACHE_*`` settings (see :mod:`servekit.dataplane`).

The key is the model name and version plus a hash of the request's tensors
(name, datatype, shape and raw bytes), requested outputs and parameters, so a
request repeated over any protocol is answered from the cache.
"""

from __future__ import annotations

import hashlib
import struct

import numpy as np
import orjson

from servekit.tensors import InferenceRequest, InferenceResponse, Tensor, dtype_of


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


def decode_response(
    raw: bytes, model_name: str, model_version: str, request: InferenceRequest
) -> InferenceResponse:
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
    return InferenceResponse(
        model_name=model_name, model_version=model_version or None, id=request.id, outputs=outputs,
        parameters=dict(parameters),
    )
