"""V2 (Open Inference Protocol) JSON encoding, with Triton's binary tensor
extension both ways and optional gzip/deflate bodies.

Numeric tensors never become Python lists on the way in when they arrive as
binary (``np.frombuffer`` on the body) and never on the way out (numpy arrays
go straight into orjson).
"""

from __future__ import annotations

import math
import struct
import zlib
from typing import Any

import numpy as np
import orjson

from servekit.errors import InvalidInput, PayloadTooLarge
from servekit.protocols import json_numbers
from servekit.tensors import (
    MAX_DIMS,
    InferenceRequest,
    InferenceResponse,
    RequestedOutput,
    Tensor,
    as_bytes_array,
    check_shape,
    dtype_of,
    nesting_depth,
)

HEADER_LENGTH = "inference-header-content-length"
_INT_KINDS = "iu"
_ACCEPTED_KINDS = {
    "b": "b",
    "i": "biu",
    "u": "biu",
    "f": "biuf",
}


# -- bodies -------------------------------------------------------------------
# the largest body a compressed request may inflate to when the caller passes no
# limit: the default of ServerSettings.max_request_size
DEFAULT_MAX_DECOMPRESSED = 512 * 1024 * 1024


def decompress(
    body: bytes | bytearray | memoryview, encoding: str | None, limit: int = DEFAULT_MAX_DECOMPRESSED
) -> bytes | bytearray | memoryview:
    """``body`` decoded from its Content-Encoding (gzip or deflate). Inflating
    stops as soon as the output would exceed ``limit`` bytes (the server's
    max_request_size): a small compressed body cannot expand into gigabytes."""
    if not encoding or encoding == "identity":
        return body
    if encoding == "gzip":
        wbits = 16 + zlib.MAX_WBITS
    elif encoding == "deflate":
        wbits = zlib.MAX_WBITS
    else:
        raise InvalidInput(f"unsupported Content-Encoding {encoding!r}; use gzip or deflate")
    inflater = zlib.decompressobj(wbits)
    try:
        # zlib grows its output as it inflates and stops at max_length, so memory
        # follows the output and never passes limit + 1 bytes
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InvalidInput(f"body is not valid {encoding} data: {exc}") from None
    if len(out) > limit:
        raise _inflated_too_large(encoding, limit)
    if not inflater.eof:  # all input consumed below the limit, yet no end of stream
        raise InvalidInput(f"body is not valid {encoding} data: incomplete or truncated stream")
    return out


def _inflated_too_large(encoding: str, limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"request body decompressed ({encoding}) exceeds the limit of {limit} bytes; send a smaller "
        "request or raise max_request_size / --max-request-size"
    )


def compress(body: bytes, accept_encoding: str | None) -> tuple[bytes, str | None]:
    """Compress large responses when the client accepts gzip or deflate."""
    if not accept_encoding or len(body) < 1024:
        return body, None
    accepted = {part.split(";")[0].strip() for part in accept_encoding.split(",")}
    if "gzip" in accepted:
        compressor = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        return compressor.compress(body) + compressor.flush(), "gzip"
    if "deflate" in accepted:
        return zlib.compress(body, 1), "deflate"
    return body, None


def loads(body: bytes | bytearray | memoryview) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"request body is not valid JSON: {exc}") from None


# -- requests -----------------------------------------------------------------
def decode_request(
    body: bytes | bytearray | memoryview, headers: dict[str, str], max_body: int = DEFAULT_MAX_DECOMPRESSED
) -> InferenceRequest:
    """A V2 infer request from a JSON body, or JSON header + binary tensors; a
    compressed body may inflate to at most ``max_body`` bytes."""
    body = decompress(body, headers.get("content-encoding"), max_body)
    header_length = headers.get(HEADER_LENGTH)
    binary: memoryview | None = None
    if header_length is not None:
        try:
            split = int(header_length)
        except ValueError:
            raise InvalidInput(f"{HEADER_LENGTH} must be an integer, got {header_length!r}") from None
        if not 0 <= split <= len(body):
            raise InvalidInput(
                f"{HEADER_LENGTH} is {split} but the body has only {len(body)} bytes"
            )
        view = memoryview(body)
        document = loads(view[:split])
        binary = view[split:]
    else:
        # the commonest request, decoded whole in C
        plain_input = json_numbers.plain_input(body)
        if plain_input is not None:
            name, data, datatype, request_id = plain_input
            return InferenceRequest([Tensor(name, data, datatype, {})], None, request_id or None, {})
        # large numeric data arrays straight into numpy; None: the ordinary path
        document = json_numbers.loads_request(body)
        if document is None:
            document = loads(body)
        plain = _plain_request(document) if type(document) is dict else None
        if plain is not None:
            return plain
    return request_from_dict(document, binary)


# datatypes whose arrays json_numbers makes in the tensor's own dtype (nothing to cast)
_PLAIN_DTYPES = {"FP64": np.dtype(np.float64), "INT64": np.dtype(np.int64), "BOOL": np.dtype(np.bool_)}


def _plain_request(document: dict[str, Any]) -> InferenceRequest | None:
    """What :func:`request_from_dict` makes of the commonest request, made
    directly: one input of exactly name, shape, datatype and data (numbers
    whose array, as json_numbers or ``np.asarray`` makes it, has the
    datatype's own dtype and as many elements as the shape), and at most an
    ``id`` beside it. None for anything else, which request_from_dict then
    decodes (and refuses with its messages)."""
    size = len(document)
    if size > 2 or (size == 2 and "id" not in document):
        return None
    inputs = document.get("inputs")
    if type(inputs) is not list or len(inputs) != 1:
        return None
    entry = inputs[0]
    if type(entry) is not dict or len(entry) != 4:
        return None
    name = entry.get("name")
    shape = entry.get("shape")
    datatype: Any = entry.get("datatype")
    data = entry.get("data")
    dtype = _PLAIN_DTYPES.get(datatype) if type(datatype) is str else None
    if type(data) is list and dtype is not None:  # parsed by orjson (a small body)
        try:
            data = np.asarray(data)
        except ValueError:  # ragged
            return None
    if (
        dtype is None
        or type(name) is not str
        or type(shape) is not list
        or type(data) is not np.ndarray
        or data.dtype != dtype
        or not 0 < len(shape) <= MAX_DIMS
        or data.size == 0
        or data.ndim > MAX_DIMS
    ):
        return None
    for dim in shape:
        if type(dim) is not int or dim <= 0:
            return None
    if math.prod(shape) != data.size:
        return None
    request_id = document.get("id")
    if request_id is not None and type(request_id) is not str:
        return None
    return InferenceRequest([Tensor(name, data.reshape(shape), datatype, {})], None, request_id or None, {})


def request_from_dict(document: Any, binary: memoryview | None = None) -> InferenceRequest:
    if not isinstance(document, dict):
        raise InvalidInput("request body must be a JSON object with an 'inputs' list")
    inputs = document.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInput("request needs a non-empty 'inputs' list")
    offset = 0
    tensors = []
    for i, entry in enumerate(inputs):
        tensor, used = decode_input(entry, i, binary, offset)
        offset += used
        tensors.append(tensor)
    if binary is not None and offset != len(binary):
        raise InvalidInput(
            f"binary tensor data is {len(binary)} bytes but the inputs' binary_data_size "
            f"add up to {offset}"
        )
    outputs = None
    raw_outputs = document.get("outputs")
    if raw_outputs is not None:
        if not isinstance(raw_outputs, list):
            raise InvalidInput("'outputs' must be a list of {\"name\": …} objects")
        outputs = []
        for entry in raw_outputs:
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                raise InvalidInput("each entry of 'outputs' needs a string 'name'")
            outputs.append(RequestedOutput(entry["name"], _parameters(entry, "output")))
    return InferenceRequest(
        inputs=tensors,
        outputs=outputs,
        id=_request_id(document.get("id")),
        parameters=_parameters(document, "request"),
    )


def _request_id(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # lenient: a number is taken as its text
    raise InvalidInput("'id' must be a string")


def _parameters(entry: dict[str, Any], what: str) -> dict[str, Any]:
    value = entry.get("parameters")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(f"{what} 'parameters' must be a JSON object")
    return value


def decode_input(
    entry: Any,
    index: int,
    binary: memoryview | None,
    offset: int,
) -> tuple[Tensor, int]:
    """One input tensor and how many binary bytes it used."""
    if not isinstance(entry, dict):
        raise InvalidInput(f"inputs[{index}] must be an object with name, shape, datatype, data")
    name = entry.get("name")
    if not isinstance(name, str):
        raise InvalidInput(f"inputs[{index}] needs a string 'name'")
    shape = _shape(entry.get("shape"), name)
    datatype = entry.get("datatype")
    if not isinstance(datatype, str):
        raise InvalidInput(f"input {name!r} needs a 'datatype' such as FP32, INT64 or BYTES")
    datatype = datatype.upper()
    dtype = dtype_of(datatype)
    parameters = _parameters(entry, f"input {name!r}")
    count = math.prod(shape)
    size = parameters.get("binary_data_size")
    if size is not None:
        if binary is None:
            raise InvalidInput(
                f"input {name!r} has binary_data_size but the request has no "
                f"{HEADER_LENGTH} header"
            )
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            # never the value itself: repr() of a deeply nested list recurses
            raise InvalidInput(
                f"input {name!r}: binary_data_size must be a number of bytes, not "
                f"{type(size).__name__ if not isinstance(size, int) else size}"
            )
        if offset + size > len(binary):
            raise InvalidInput(
                f"input {name!r}: binary_data_size {size} runs past the body "
                f"({len(binary) - offset} bytes are left)"
            )
        chunk = binary[offset : offset + size]
        data = tensor_from_bytes(chunk, datatype, dtype, count, name)
        parameters = {k: v for k, v in parameters.items() if k != "binary_data_size"}
        return Tensor(name, data.reshape(shape), datatype, parameters), size
    if "data" not in entry:
        raise InvalidInput(f"input {name!r} has no 'data'")
    data = _from_json(entry["data"], datatype, name)
    if data.size != count:
        raise InvalidInput(
            f"input {name!r} has shape {shape} ({count} elements) but its data holds "
            f"{data.size} elements"
        )
    if datatype == "BYTES":
        return Tensor(name, data.reshape(shape), datatype, parameters), 0
    data = _cast(data, dtype, datatype, name)
    return Tensor(name, data.reshape(shape), datatype, parameters), 0


def _shape(value: Any, name: str) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value
    ):
        raise InvalidInput(f"input {name!r} needs 'shape' as a list of non-negative integers")
    return check_shape(list(value), name)


def _from_json(raw: Any, datatype: str, name: str) -> np.ndarray:
    if datatype == "BYTES":
        if isinstance(raw, (str, bytes)):
            raw = [raw]
        nesting_depth(raw, name)
        try:
            array = np.array(raw, dtype=object)
        except ValueError as exc:
            raise InvalidInput(f"input {name!r}: data is ragged ({exc})") from None
        for value in array.flat:
            if isinstance(value, list):
                raise InvalidInput(f"input {name!r}: nested lists must all have the same length")
            if isinstance(value, dict):
                raise InvalidInput(
                    f"input {name!r} is BYTES: its data must be strings, not JSON objects"
                )
        return as_bytes_array(array)
    if isinstance(raw, np.ndarray):  # parsed by json_numbers: already np.asarray's result
        return _within_dims(raw, name)
    if not isinstance(raw, list):
        raw = [raw]
    try:
        array = _within_dims(np.asarray(raw), name)
    except ValueError as exc:
        raise InvalidInput(f"input {name!r}: data is ragged or mixed ({exc})") from None
    if datatype == "UINT64" and array.dtype.kind in "fO" and _whole_numbers(array):
        # integers past int64's range came out as floats or objects: convert exactly
        try:
            array = np.array(raw, dtype=np.uint64)
        except (OverflowError, ValueError, TypeError):
            raise InvalidInput(f"input {name!r} has values outside the range of UINT64") from None
    return array


def _within_dims(array: np.ndarray, name: str) -> np.ndarray:
    if array.ndim > MAX_DIMS:
        raise InvalidInput(
            f"input {name!r}: data nests lists {array.ndim} levels deep; a tensor has at most "
            f"{MAX_DIMS} dimensions (or send flat data with 'shape')"
        )
    return array


def _whole_numbers(array: np.ndarray) -> bool:
    try:
        as_float = array.astype(np.float64)
    except (TypeError, ValueError):
        return False
    return bool(np.all(np.isfinite(as_float)) and np.all(as_float == np.floor(as_float)))


def _cast(array: np.ndarray, dtype: np.dtype[Any], datatype: str, name: str) -> np.ndarray:
    if array.dtype == dtype:
        return array
    kind = array.dtype.kind
    target = dtype.kind
    if array.size and kind not in _ACCEPTED_KINDS.get(target, ""):
        if target in _INT_KINDS and kind == "f" and _beyond_int64(array):
            # orjson reads integers past uint64 (and mixes of negatives with integers
            # past int64) as floats: say what is wrong with them
            info = np.iinfo(dtype)
            raise InvalidInput(
                f"input {name!r} has values outside the range of {datatype} ({info.min}…{info.max})"
            )
        got = {"f": "fractional numbers", "U": "strings", "O": "mixed values or nulls", "b": "booleans"}
        raise InvalidInput(
            f"input {name!r} is declared {datatype} but its data holds "
            f"{got.get(kind, array.dtype.name)}; send {datatype} values or change 'datatype'"
        )
    if target in _INT_KINDS and kind in _INT_KINDS and array.size:
        info = np.iinfo(dtype)
        if array.min() < info.min or array.max() > info.max:
            raise InvalidInput(
                f"input {name!r} has values outside the range of {datatype} ({info.min}…{info.max})"
            )
    if target == "f" and array.size:
        try:
            with np.errstate(over="raise"):
                return array.astype(dtype)
        except FloatingPointError:
            limit = float(np.finfo(dtype).max)
            raise InvalidInput(
                f"input {name!r} has values outside the range of {datatype} (±{limit:g}); "
                "send smaller values or a wider 'datatype'"
            ) from None
    return array.astype(dtype)


def _beyond_int64(array: np.ndarray) -> bool:
    with np.errstate(invalid="ignore"):
        return bool(np.any(np.abs(array) >= 2.0**63))


def tensor_from_bytes(
    chunk: memoryview,
    datatype: str,
    dtype: np.dtype[Any],
    count: int,
    name: str,
    source: str = "binary_data_size gives",
) -> np.ndarray:
    """A tensor viewing raw little-endian bytes (no copy), or BYTES elements;
    ``source`` names where the size came from in the error message."""
    if datatype == "BYTES":
        return deserialize_bytes(chunk, count, name)
    expected = count * dtype.itemsize
    if len(chunk) != expected:
        raise InvalidInput(
            f"input {name!r}: {count} {datatype} elements need {expected} bytes, "
            f"{source} {len(chunk)}"
        )
    array = np.frombuffer(chunk, dtype=dtype.newbyteorder("<"))
    # numpy and BLAS copy misaligned data inside every call, slowly: copy it once
    return array if array.flags.aligned else array.copy()


def deserialize_bytes(chunk: memoryview | bytes, count: int | None, name: str) -> np.ndarray:
    """BYTES elements, each a 4-byte little-endian length followed by the bytes."""
    items: list[bytes] = []
    position = 0
    raw = bytes(chunk)
    while position < len(raw):
        if position + 4 > len(raw):
            raise InvalidInput(f"input {name!r}: truncated BYTES length prefix")
        (length,) = struct.unpack_from("<I", raw, position)
        position += 4
        if position + length > len(raw):
            raise InvalidInput(f"input {name!r}: BYTES element runs past its binary data")
        items.append(raw[position : position + length])
        position += length
    if count is not None and len(items) != count:
        raise InvalidInput(f"input {name!r}: shape needs {count} BYTES elements, binary data has {len(items)}")
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


def serialize_bytes(array: np.ndarray) -> bytes:
    parts = []
    for value in array.reshape(-1):
        data = value if isinstance(value, bytes) else str(value).encode("utf-8")
        parts.append(struct.pack("<I", len(data)))
        parts.append(data)
    return b"".join(parts)


# -- responses ----------------------------------------------------------------
def tensor_bytes(tensor: Tensor) -> bytes:
    """Raw little-endian bytes of a tensor (length-prefixed for BYTES)."""
    if tensor.datatype == "BYTES":
        return serialize_bytes(tensor.data)
    dtype = dtype_of(tensor.datatype).newbyteorder("<")
    return np.ascontiguousarray(tensor.data, dtype=dtype).tobytes()


def json_data(tensor: Tensor) -> Any:
    """A flat array orjson can write without building Python objects."""
    data = tensor.data.reshape(-1)
    if tensor.datatype == "BYTES":
        return [_text(v) for v in data]
    if data.dtype == np.float16:
        data = data.astype(np.float32)
    if not data.flags.c_contiguous or data.dtype.byteorder == ">":
        data = np.ascontiguousarray(data, dtype=data.dtype.newbyteorder("="))
    return data


def _text(value: Any) -> Any:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value.decode("latin-1")
    return value if isinstance(value, (str, int, float, bool)) or value is None else str(value)


def wire_shape(tensor: Tensor) -> list[int]:
    """The shape a V2 answer gives an output: a vector (or scalar) marked
    ``content_type: np`` is a column, ``[N, 1]``, as MLServer's NumpyCodec
    answers it (and its ``decode_output`` reshapes to)."""
    shape = list(tensor.data.shape)
    if len(shape) < 2 and tensor.parameters.get("content_type") == "np":
        shape.append(1)
    return shape


def encode_response(
    response: InferenceResponse, request: InferenceRequest | None = None
) -> tuple[bytes, int | None]:
    """(body, JSON header length when binary outputs follow it, else None)."""
    binary_default = bool(request and request.parameters.get("binary_data_output"))
    wanted: dict[str, dict[str, Any]] = {}
    if request is not None and request.outputs:
        wanted = {o.name: o.parameters for o in request.outputs}
    outputs = []
    chunks: list[bytes] = []
    for tensor in response.outputs:
        if not wanted.get(tensor.name, {}).get("binary_data", binary_default):
            outputs.append(_json_entry(tensor))
            continue
        raw = tensor_bytes(tensor)
        chunks.append(raw)
        outputs.append({
            "name": tensor.name,
            "shape": wire_shape(tensor),
            "datatype": tensor.datatype,
            "parameters": {**tensor.parameters, "binary_data_size": len(raw)},
        })
    header = _document(response.model_name, response.model_version, response.id, response.parameters, outputs)
    if not chunks:
        return header, None
    return header + b"".join(chunks), len(header)


def encode_output(model_name: str, model_version: str | None, request_id: str | None, tensor: Tensor) -> bytes:
    """What :func:`encode_response` writes for an answer of the one output
    ``tensor`` and no parameters, to a request that asks for no outputs and no
    binary data (the data plane's plain lane)."""
    return _document(model_name, model_version, request_id, None, [_json_entry(tensor)])


def _json_entry(tensor: Tensor) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": tensor.name, "shape": wire_shape(tensor), "datatype": tensor.datatype}
    if tensor.parameters:
        entry["parameters"] = tensor.parameters
    entry["data"] = json_data(tensor)
    return entry


def _document(
    model_name: str, model_version: str | None, request_id: str | None, parameters: dict[str, Any] | None,
    outputs: list[dict[str, Any]],
) -> bytes:
    # model_version and parameters are left out when there are none: the Open
    # Inference Protocol's schema has them as a string and an object, never null
    document: dict[str, Any] = {"model_name": model_name}
    if model_version is not None:
        document["model_version"] = model_version
    document["id"] = request_id
    if parameters:
        document["parameters"] = parameters
    document["outputs"] = outputs
    return orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)
