"""The framing between the server and a model's own process.

A message is a 12-byte prefix (``SKv1``, the header's length, the body's
length, big-endian), a JSON header and a body of raw tensor bytes::

    {"op": "predict", "id": …, "parameters": {…}, "outputs": [{"name", "parameters"}],
     "inputs": [{"name", "datatype", "shape", "parameters", "nbytes"}]}

Numeric tensors travel as their C-ordered bytes in the machine's byte order
(both ends are on the same machine); a BYTES tensor as each element's 4-byte
length and bytes. Nothing is pickled: the receiver checks every datatype,
shape and length against the body, and refuses a header larger than
:data:`MAX_HEADER` or a body larger than its bound.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable
from typing import Any

import numpy as np

from servekit.errors import InvalidInput
from servekit.tensors import (
    DATATYPE_TO_DTYPE,
    InferenceRequest,
    InferenceResponse,
    RequestedOutput,
    Tensor,
    as_bytes_array,
    check_shape,
)

MAGIC = b"SKv1"
PREFIX = struct.Struct(">4sII")
MAX_HEADER = 1 << 20
#: the largest body either side accepts unless told otherwise (bytes)
MAX_BODY = 1 << 30
MAX_TENSORS = 1024
_LENGTH = struct.Struct("<I")


class WireError(Exception):
    """A message that breaks the framing: the connection cannot be trusted after it."""


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


def dumps(header: dict[str, Any]) -> bytes:
    return json.dumps(header, default=_jsonable, separators=(",", ":")).encode()


def encode_tensors(tensors: Iterable[Tensor]) -> tuple[list[dict[str, Any]], list[memoryview]]:
    """Each tensor's header entry and its bytes."""
    heads: list[dict[str, Any]] = []
    parts: list[memoryview] = []
    for tensor in tensors:
        datatype = tensor.datatype.upper()
        if datatype == "BYTES":
            chunks: list[bytes] = []
            for item in as_bytes_array(np.asarray(tensor.data)).reshape(-1):
                chunks.append(_LENGTH.pack(len(item)))
                chunks.append(item)
            data = memoryview(b"".join(chunks))
        else:
            dtype = DATATYPE_TO_DTYPE.get(datatype)
            if dtype is None:
                raise InvalidInput(f"tensor {tensor.name!r} has datatype {datatype!r}, which is not a V2 datatype")
            array = np.ascontiguousarray(tensor.data, dtype=dtype.newbyteorder("="))
            data = array.reshape(-1).data.cast("B") if array.size else memoryview(b"")
        heads.append({
            "name": tensor.name, "datatype": datatype, "shape": list(np.shape(tensor.data)),
            "parameters": tensor.parameters, "nbytes": data.nbytes,
        })
        parts.append(data)
    return heads, parts


def decode_tensors(heads: Any, body: bytearray | bytes, offset: int = 0) -> tuple[list[Tensor], int]:
    """The tensors ``heads`` describe, read from ``body`` at ``offset``;
    WireError when anything disagrees with the body."""
    if not isinstance(heads, list) or len(heads) > MAX_TENSORS:
        raise WireError(f"tensors must be a list of at most {MAX_TENSORS} entries")
    out: list[Tensor] = []
    for head in heads:
        if not isinstance(head, dict):
            raise WireError("a tensor entry is not an object")
        name, datatype, shape, nbytes = head.get("name"), head.get("datatype"), head.get("shape"), head.get("nbytes")
        parameters = head.get("parameters") or {}
        if not isinstance(name, str) or len(name) > 1024 or not isinstance(datatype, str) \
                or datatype not in DATATYPE_TO_DTYPE or not isinstance(parameters, dict):
            raise WireError(f"a tensor entry has a bad name, datatype or parameters ({str(datatype)[:20]!r})")
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
            raise WireError(f"tensor {name[:64]!r} has a shape that is not a list of integers")
        if not isinstance(nbytes, int) or nbytes < 0 or offset + nbytes > len(body):
            raise WireError(f"tensor {name[:64]!r} claims more bytes than the message has")
        try:
            check_shape(shape, name)
        except InvalidInput as exc:
            raise WireError(exc.message) from None
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if datatype == "BYTES":
            data = _decode_bytes(name, memoryview(body)[offset : offset + nbytes], count).reshape(shape)
        else:
            dtype = DATATYPE_TO_DTYPE[datatype]
            if count * dtype.itemsize != nbytes:
                raise WireError(f"tensor {name[:64]!r}: shape {shape} of {datatype} is not {nbytes} bytes")
            data = np.frombuffer(body, dtype=dtype, count=count, offset=offset).reshape(shape)
        out.append(Tensor(name, data, datatype, dict(parameters)))
        offset += nbytes
    return out, offset


def _decode_bytes(name: str, view: memoryview, count: int) -> np.ndarray:
    out = np.empty(count, dtype=object)
    position = 0
    for i in range(count):
        if position + 4 > len(view):
            raise WireError(f"BYTES tensor {name[:64]!r} ends early")
        (length,) = _LENGTH.unpack_from(view, position)
        position += 4
        if position + length > len(view):
            raise WireError(f"BYTES tensor {name[:64]!r} ends early")
        out[i] = bytes(view[position : position + length])
        position += length
    if position != len(view):
        raise WireError(f"BYTES tensor {name[:64]!r} has bytes left over")
    return out


def frame(header: dict[str, Any], parts: list[memoryview] | None = None) -> list[bytes | memoryview]:
    """The pieces of one message, to be sent in order."""
    head = dumps(header)
    if len(head) > MAX_HEADER:
        raise InvalidInput(f"the request's parameters and names take {len(head)} bytes; at most {MAX_HEADER}")
    parts = parts or []
    return [PREFIX.pack(MAGIC, len(head), sum(p.nbytes for p in parts)), head, *parts]


def parse_prefix(prefix: bytes, max_body: int) -> tuple[int, int]:
    magic, head_len, body_len = PREFIX.unpack(prefix)
    if magic != MAGIC:
        raise WireError("the message does not start with the framing's marker")
    if head_len > MAX_HEADER:
        raise WireError(f"a header of {head_len} bytes is larger than {MAX_HEADER}")
    if body_len > max_body:
        raise WireError(f"a message of {body_len} bytes is larger than the bound of {max_body}")
    return head_len, body_len


def parse_header(raw: bytes) -> dict[str, Any]:
    try:
        header = json.loads(raw)
    except ValueError:
        raise WireError("the header is not JSON") from None
    if not isinstance(header, dict) or not isinstance(header.get("op"), str):
        raise WireError("the header is not an object with an 'op'")
    return header


# -- requests and responses -------------------------------------------------------
def request_message(request: InferenceRequest) -> list[bytes | memoryview]:
    heads, parts = encode_tensors(request.inputs)
    outputs = None if request.outputs is None else [
        {"name": o.name, "parameters": o.parameters} for o in request.outputs
    ]
    return frame({"op": "predict", "id": request.id, "parameters": request.parameters,
                  "outputs": outputs, "inputs": heads}, parts)


def parse_request(header: dict[str, Any], body: bytearray) -> InferenceRequest:
    inputs, _ = decode_tensors(header.get("inputs"), body)
    outputs = header.get("outputs")
    requested = None
    if isinstance(outputs, list):
        requested = [RequestedOutput(str(o.get("name", "")), dict(o.get("parameters") or {}))
                     for o in outputs if isinstance(o, dict)]
    parameters = header.get("parameters")
    return InferenceRequest(
        inputs=inputs, outputs=requested, id=header.get("id") if isinstance(header.get("id"), str) else None,
        parameters=parameters if isinstance(parameters, dict) else {},
    )


def response_message(response: InferenceResponse) -> list[bytes | memoryview]:
    heads, parts = encode_tensors(response.outputs)
    return frame({"op": "result", "model_name": response.model_name, "model_version": response.model_version,
                  "id": response.id, "parameters": response.parameters, "outputs": heads}, parts)


def parse_response(header: dict[str, Any], body: bytearray) -> InferenceResponse:
    outputs, _ = decode_tensors(header.get("outputs"), body)
    parameters = header.get("parameters")

    def text(key: str) -> str | None:
        value = header.get(key)
        return value[:1024] if isinstance(value, str) else None

    return InferenceResponse(
        model_name=text("model_name") or "", outputs=outputs, model_version=text("model_version"),
        id=text("id"), parameters=parameters if isinstance(parameters, dict) else {},
    )


# -- blocking socket helpers (the child, and the server while loading) ------------------
def send(sock: Any, pieces: list[bytes | memoryview]) -> None:
    for piece in pieces:
        sock.sendall(piece)


def receive(sock: Any, max_body: int = MAX_BODY) -> tuple[dict[str, Any], bytearray]:
    """One message; EOFError when the other end closed before it."""
    prefix = _exactly(sock, PREFIX.size, eof_ok=True)
    head_len, body_len = parse_prefix(bytes(prefix), max_body)
    header = parse_header(bytes(_exactly(sock, head_len)))
    return header, _exactly(sock, body_len)


def _exactly(sock: Any, size: int, eof_ok: bool = False) -> bytearray:
    buffer = bytearray(size)
    view = memoryview(buffer)
    got = 0
    while got < size:
        n = sock.recv_into(view[got:])
        if n == 0:
            if got == 0 and eof_ok:
                raise EOFError
            raise WireError("the connection closed in the middle of a message")
        got += n
    return buffer
