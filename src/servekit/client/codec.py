"""numpy arrays to and from V2 requests and answers: JSON, JSON with Triton's
binary tensors, and gRPC messages. Client-side: refusals are
:class:`servekit.client.errors.InvalidInput` raised before anything is sent."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from servekit.client.errors import InvalidInput, ServerError
from servekit.tensors import DATATYPE_TO_DTYPE

HEADER_LENGTH = "Inference-Header-Content-Length"
_DTYPE_TO_DATATYPE = {dt.str: name for name, dt in DATATYPE_TO_DTYPE.items() if name != "BYTES"}


@dataclass
class InferResult:
    """A V2 answer: ``outputs`` by name as numpy arrays (BYTES as object arrays
    of ``bytes``), and what else the server said."""

    model_name: str
    model_version: str | None
    id: str | None
    outputs: dict[str, np.ndarray]
    parameters: dict[str, Any] = field(default_factory=dict)
    datatypes: dict[str, str] = field(default_factory=dict)
    output_parameters: dict[str, dict[str, Any]] = field(default_factory=dict)


# -- inputs -------------------------------------------------------------------
def as_array(value: Any, name: str) -> np.ndarray:
    """``value`` as an array a V2 tensor can carry (str and bytes as objects)."""
    if isinstance(value, np.ndarray):
        array = value
    elif isinstance(value, (str, bytes)):
        array = np.array([value], dtype=object)
    else:
        try:
            array = np.asarray(value)
        except ValueError as exc:
            raise InvalidInput(f"input {name!r}: data is ragged ({exc})") from None
    if array.dtype.kind in "US":
        array = array.astype(object)
    return array


def datatype_of(array: np.ndarray, name: str) -> str:
    """The V2 datatype of an array: numpy's own, objects (str, bytes) as BYTES."""
    if array.dtype.kind == "O":
        return "BYTES"
    found = _DTYPE_TO_DATATYPE.get(array.dtype.newbyteorder("=").str)
    if found is None:
        raise InvalidInput(
            f"input {name!r}: numpy dtype {array.dtype} has no V2 datatype; use bool, "
            "(u)int8-64, float16/32/64, or str/bytes objects"
        )
    return found


def cast_to(array: np.ndarray, datatype: str, name: str) -> np.ndarray:
    """A Python-built array (lists) as the datatype the model declared."""
    if datatype == "BYTES" or datatype not in DATATYPE_TO_DTYPE:
        return array
    try:
        return array.astype(DATATYPE_TO_DTYPE[datatype])
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"input {name!r}: data does not fit the model's datatype {datatype} ({exc})") from None


def bytes_items(array: np.ndarray, name: str) -> list[bytes]:
    out = []
    for value in array.reshape(-1):
        if isinstance(value, bytes):
            out.append(value)
        elif isinstance(value, str):
            out.append(value.encode("utf-8"))
        elif isinstance(value, np.bytes_ | np.str_):
            out.append(value.tobytes() if isinstance(value, np.bytes_) else str(value).encode("utf-8"))
        else:
            raise InvalidInput(
                f"input {name!r}: an object array must hold str or bytes, found {type(value).__name__}"
            )
    return out


def raw_bytes(array: np.ndarray, datatype: str, name: str) -> bytes:
    """Little-endian bytes; BYTES elements each after a 4-byte length."""
    if datatype == "BYTES":
        parts = []
        for item in bytes_items(array, name):
            parts.append(struct.pack("<I", len(item)))
            parts.append(item)
        return b"".join(parts)
    dtype = DATATYPE_TO_DTYPE[datatype].newbyteorder("<")
    return np.ascontiguousarray(array, dtype=dtype).tobytes()


def from_raw(chunk: bytes | memoryview, datatype: str, shape: list[int], name: str) -> np.ndarray:
    count = int(np.prod(shape)) if shape else 1
    if datatype == "BYTES":
        items: list[bytes] = []
        raw, position = bytes(chunk), 0
        while position < len(raw):
            if position + 4 > len(raw):
                raise ServerError(f"output {name!r}: truncated BYTES length prefix in the answer")
            (length,) = struct.unpack_from("<I", raw, position)
            position += 4
            items.append(raw[position : position + length])
            position += length
        out = np.empty(len(items), dtype=object)
        out[:] = items
        return _reshape(out, shape, name)
    dtype = _dtype(datatype, name).newbyteorder("<")
    if len(chunk) != count * dtype.itemsize:
        raise ServerError(
            f"output {name!r}: shape {shape} of {datatype} needs {count * dtype.itemsize} bytes, "
            f"the answer has {len(chunk)}"
        )
    return _reshape(np.frombuffer(chunk, dtype=dtype).astype(dtype.newbyteorder("=")), shape, name)


def _dtype(datatype: str, name: str) -> np.dtype[Any]:
    try:
        return DATATYPE_TO_DTYPE[datatype]
    except KeyError:
        raise ServerError(f"output {name!r} has unknown datatype {datatype!r}") from None


def _reshape(array: np.ndarray, shape: list[int], name: str) -> np.ndarray:
    try:
        return array.reshape(shape)
    except ValueError:
        raise ServerError(f"output {name!r}: {array.size} values do not fill shape {shape}") from None


def _json_data(array: np.ndarray, datatype: str, name: str) -> Any:
    if datatype == "BYTES":
        return [item.decode("utf-8") for item in bytes_items(array, name)]
    return np.ascontiguousarray(array.reshape(-1), dtype=array.dtype.newbyteorder("="))


def _utf8(array: np.ndarray, name: str) -> bool:
    try:
        for item in bytes_items(array, name):
            item.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# -- REST -------------------------------------------------------------------------
def rest_request(
    inputs: dict[str, np.ndarray],
    *,
    binary: bool,
    outputs: list[str] | None = None,
    parameters: dict[str, Any] | None = None,
    request_id: str | None = None,
) -> tuple[bytes, dict[str, str]]:
    """(body, headers) of a V2 infer request. With ``binary`` every tensor
    travels as raw bytes after the JSON header (Triton's extension) and the
    answer is asked for the same way; otherwise JSON, except a BYTES input that
    is not UTF-8 text, which JSON cannot carry: it goes binary, and the answer
    is asked for in binary too."""
    entries = []
    chunks: list[bytes] = []
    for name, array in inputs.items():
        datatype = datatype_of(array, name)
        entry: dict[str, Any] = {"name": name, "shape": list(array.shape), "datatype": datatype}
        if binary or (datatype == "BYTES" and not _utf8(array, name)):
            raw = raw_bytes(array, datatype, name)
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = _json_data(array, datatype, name)
        entries.append(entry)
    document: dict[str, Any] = {}
    if request_id is not None:
        document["id"] = request_id
    all_parameters = dict(parameters or {})
    if binary or chunks:
        # bytes JSON could not carry in: the echoed or derived answer may hold them too
        all_parameters["binary_data_output"] = True
    if all_parameters:
        document["parameters"] = all_parameters
    document["inputs"] = entries
    if outputs is not None:
        document["outputs"] = [
            {"name": n, **({"parameters": {"binary_data": True}} if binary else {})} for n in outputs
        ]
    header = orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return header, {"Content-Type": "application/json"}
    return header + b"".join(chunks), {
        "Content-Type": "application/octet-stream",
        HEADER_LENGTH: str(len(header)),
    }


def rest_response(body: bytes, header_length: str | None) -> InferResult:
    """The answer to a V2 infer request, JSON or JSON + binary outputs."""
    binary = b""
    if header_length is not None:
        try:
            split = int(header_length)
        except ValueError:
            raise ServerError(f"the answer's {HEADER_LENGTH} is not a number: {header_length!r}") from None
        binary, body = body[split:], body[:split]
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ServerError(f"the answer is not JSON: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("outputs"), list):
        raise ServerError(f"the answer has no 'outputs' list: {str(document)[:200]}")
    result = InferResult(
        model_name=str(document.get("model_name", "")),
        model_version=_optional_str(document.get("model_version")),
        id=_optional_str(document.get("id")),
        outputs={},
        parameters=document.get("parameters") or {},
    )
    offset = 0
    for entry in document["outputs"]:
        name, datatype = str(entry.get("name")), str(entry.get("datatype", "")).upper()
        shape = [int(d) for d in entry.get("shape", [])]
        params = dict(entry.get("parameters") or {})
        size = params.pop("binary_data_size", None)
        if size is not None:
            chunk = binary[offset : offset + int(size)]
            offset += int(size)
            array = from_raw(chunk, datatype, shape, name)
        else:
            array = _from_json(entry.get("data"), datatype, shape, name)
        result.outputs[name] = array
        result.datatypes[name] = datatype
        result.output_parameters[name] = params
    return result


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _from_json(data: Any, datatype: str, shape: list[int], name: str) -> np.ndarray:
    if data is None:
        raise ServerError(f"output {name!r} has neither data nor binary_data_size")
    if datatype == "BYTES":
        flat = np.asarray(data, dtype=object).reshape(-1)
        out = np.empty(flat.size, dtype=object)
        out[:] = [v.encode("utf-8") if isinstance(v, str) else v for v in flat]
        return _reshape(out, shape, name)
    array = np.asarray(data, dtype=_dtype(datatype, name))
    return _reshape(array, shape, name)


# -- gRPC -------------------------------------------------------------------------
# datatype -> the InferTensorContents field that carries it (FP16 has none: raw only)
CONTENTS_FIELD: dict[str, str] = {
    "BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
    "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents",
    "UINT64": "uint64_contents", "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents",
}


def parameters_to_proto(values: dict[str, Any], target: Any) -> None:
    """Fill a map<string, InferParameter>; other values travel as JSON strings."""
    for key, value in values.items():
        if value is None:
            continue
        param = target[key]
        if isinstance(value, bool | np.bool_):
            param.bool_param = bool(value)
        elif isinstance(value, int | np.integer):
            if value > 2**63 - 1:
                param.uint64_param = int(value)
            else:
                param.int64_param = int(value)
        elif isinstance(value, float | np.floating):
            param.double_param = float(value)
        elif isinstance(value, str):
            param.string_param = value
        else:
            param.string_param = orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode()


def parameters_from_proto(params: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in params.items():
        choice = value.WhichOneof("parameter_choice")
        out[key] = getattr(value, choice) if choice else None
    return out


def grpc_request(
    model: str,
    version: str | None,
    inputs: dict[str, np.ndarray],
    *,
    outputs: list[str] | None = None,
    parameters: dict[str, Any] | None = None,
    request_id: str | None = None,
) -> Any:
    """A ModelInferRequest with every tensor in ``raw_input_contents`` (the
    one form that carries every datatype, FP16 included)."""
    from servekit.protocols.generated import grpc_predict_v2_pb2 as pb

    message = pb.ModelInferRequest(model_name=model, model_version=version or "", id=request_id or "")
    if parameters:
        parameters_to_proto(parameters, message.parameters)
    for name, array in inputs.items():
        datatype = datatype_of(array, name)
        message.inputs.add(name=name, datatype=datatype, shape=list(array.shape))
        message.raw_input_contents.append(raw_bytes(array, datatype, name))
    for name in outputs or []:
        message.outputs.add(name=name)
    return message


def grpc_response(message: Any) -> InferResult:
    result = InferResult(
        model_name=message.model_name,
        model_version=message.model_version or None,
        id=message.id or None,
        outputs={},
        parameters=parameters_from_proto(message.parameters),
    )
    raw = list(message.raw_output_contents)
    for index, output in enumerate(message.outputs):
        name, datatype, shape = output.name, output.datatype.upper(), list(output.shape)
        if raw:
            if index >= len(raw):
                raise ServerError(f"output {name!r} has no raw_output_contents entry")
            array = from_raw(raw[index], datatype, shape, name)
        else:
            field_name = CONTENTS_FIELD.get(datatype)
            if field_name is None:
                raise ServerError(f"output {name!r} ({datatype}) came without raw_output_contents")
            values = list(getattr(output.contents, field_name))
            if datatype == "BYTES":
                array = np.empty(len(values), dtype=object)
                array[:] = values
                array = _reshape(array, shape, name)
            else:
                array = _reshape(np.asarray(values, dtype=_dtype(datatype, name)), shape, name)
        result.outputs[name] = array
        result.datatypes[name] = datatype
        result.output_parameters[name] = parameters_from_proto(output.parameters)
    return result


def grpc_metadata(message: Any) -> dict[str, Any]:
    """A ModelMetadataResponse in the REST form."""

    def tensors(entries: Any) -> list[dict[str, Any]]:
        return [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in entries]

    return {
        "name": message.name,
        "versions": list(message.versions),
        "platform": message.platform,
        "inputs": tensors(message.inputs),
        "outputs": tensors(message.outputs),
    }


__all__ = [
    "HEADER_LENGTH",
    "InferResult",
    "as_array",
    "cast_to",
    "datatype_of",
    "grpc_metadata",
    "grpc_request",
    "grpc_response",
    "rest_request",
    "rest_response",
]
