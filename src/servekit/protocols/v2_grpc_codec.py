"""V2 gRPC messages to and from servekit's request/response types.

Inputs arrive either as typed ``contents`` (one repeated field per datatype
family) or as ``raw_input_contents``: little-endian bytes per input. The raw
entries are cut out of the received message at the wire level, before
protobuf parses the rest, so each becomes a numpy array with
``np.frombuffer`` over the bytes gRPC received: no copy at all. Raw outputs
are written the same way, straight after the serialized rest of the response.

A request that used raw inputs is answered with ``raw_output_contents``, as
Triton does; one with typed contents gets typed contents back (or raw
contents if an output has no typed field, such as FP16).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import orjson

from servekit.errors import InvalidInput
from servekit.protocols.generated import grpc_predict_v2_pb2 as pb
from servekit.protocols.protowire import length_delimited, read_varint
from servekit.protocols.v2_codec import serialize_bytes, tensor_from_bytes, wire_shape
from servekit.tensors import (
    InferenceRequest,
    InferenceResponse,
    RequestedOutput,
    Tensor,
    as_bytes_array,
    check_shape,
    dtype_of,
)

# field numbers and wire types of the protocol (see grpc_predict_v2.proto)
_LENGTH_DELIMITED = 2
RAW_INPUT_CONTENTS = 7  # ModelInferRequest.raw_input_contents
RAW_OUTPUT_CONTENTS = 6  # ModelInferResponse.raw_output_contents
STREAM_INFER_RESPONSE = 2  # ModelStreamInferResponse.infer_response

# datatype -> the InferTensorContents field that carries it
CONTENTS_FIELD: dict[str, str] = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
# numpy dtype each contents field holds, for datatypes carried in a wider field
_FIELD_DTYPE = {"int_contents": np.int32, "uint_contents": np.uint32}
_INT64_MAX = 2**63 - 1


# -- parameters ---------------------------------------------------------------
def parameters_from_proto(params: Any) -> dict[str, Any]:
    """A map<string, InferParameter> as a plain dict."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        choice = value.WhichOneof("parameter_choice")
        out[key] = getattr(value, choice) if choice else None
    return out


def parameters_to_proto(values: dict[str, Any], target: Any) -> None:
    """Fill a map<string, InferParameter>; lists and dicts travel as JSON strings."""
    for key, value in values.items():
        if value is None:
            continue
        param = target[key]
        if isinstance(value, (bool, np.bool_)):
            param.bool_param = bool(value)
        elif isinstance(value, (int, np.integer)):
            if value > _INT64_MAX:
                param.uint64_param = int(value)
            else:
                param.int64_param = int(value)
        elif isinstance(value, (float, np.floating)):
            param.double_param = float(value)
        elif isinstance(value, str):
            param.string_param = value
        elif isinstance(value, bytes):
            param.string_param = value.decode("utf-8", "replace")
        else:
            param.string_param = orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode()


# -- wire format (see servekit.protocols.protowire) ------------------------------
def split_request(data: bytes) -> tuple[pb.ModelInferRequest, list[memoryview]]:
    """Parse a serialized ModelInferRequest, leaving raw_input_contents as views
    of ``data``. Only top-level fields are walked, a handful per request."""
    view = memoryview(data)
    rest: list[memoryview] = []
    raw: list[memoryview] = []
    position, size = 0, len(data)
    while position < size:
        start = position
        key, position = read_varint(data, position, "ModelInferRequest")
        wire = key & 7
        if wire == 0:
            _, position = read_varint(data, position, "ModelInferRequest")
        elif wire == 1:
            position += 8
        elif wire == 5:
            position += 4
        elif wire == _LENGTH_DELIMITED:
            length, position = read_varint(data, position, "ModelInferRequest")
            if key >> 3 == RAW_INPUT_CONTENTS:
                raw.append(view[position : position + length])
                position += length
                continue
            position += length
        else:
            raise InvalidInput("the request is not a valid ModelInferRequest message")
        rest.append(view[start:position])
    if position > size:
        raise InvalidInput("the request message is truncated")
    try:
        message = pb.ModelInferRequest.FromString(b"".join(rest))
    except Exception as exc:  # protobuf's DecodeError, without importing its internals
        raise InvalidInput(f"the request is not a valid ModelInferRequest message: {exc}") from None
    return message, raw


# -- requests -----------------------------------------------------------------
def decode_request(
    message: pb.ModelInferRequest, raw: list[memoryview] | None = None
) -> tuple[InferenceRequest, bool]:
    """The request, and whether its inputs came as raw bytes. ``raw`` holds the
    raw_input_contents cut out by :func:`split_request` (else the message's own)."""
    inputs = message.inputs
    if not inputs:
        raise InvalidInput("request needs at least one entry in 'inputs'")
    if raw is None:
        raw = [memoryview(chunk) for chunk in message.raw_input_contents]
    if raw and len(raw) != len(inputs):
        raise InvalidInput(
            f"raw_input_contents has {len(raw)} entries but the request has {len(inputs)} "
            "inputs; send one entry per input, in the order of 'inputs'"
        )
    tensors = []
    for index, entry in enumerate(inputs):
        name = entry.name
        if not name:
            raise InvalidInput(f"inputs[{index}] needs a name")
        datatype = entry.datatype.upper()
        if not datatype:
            raise InvalidInput(f"input {name!r} needs a datatype such as FP32, INT64 or BYTES")
        dtype = dtype_of(datatype)
        shape = check_shape(list(entry.shape), name)
        count = math.prod(shape)
        parameters = parameters_from_proto(entry.parameters)
        if raw:
            if entry.HasField("contents"):
                raise InvalidInput(
                    f"input {name!r} has typed contents but the request also has "
                    "raw_input_contents; use one or the other for all inputs"
                )
            data = tensor_from_bytes(
                raw[index], datatype, dtype, count, name, "its raw_input_contents entry has"
            )
        else:
            data = _from_contents(entry.contents, datatype, dtype, count, name)
        tensors.append(Tensor(name, data.reshape(shape), datatype, parameters))
    outputs = None
    if message.outputs:
        outputs = [
            RequestedOutput(o.name, parameters_from_proto(o.parameters)) for o in message.outputs
        ]
    request = InferenceRequest(
        inputs=tensors,
        outputs=outputs,
        id=message.id or None,
        parameters=parameters_from_proto(message.parameters),
    )
    return request, bool(raw)


def _from_contents(
    contents: Any, datatype: str, dtype: np.dtype[Any], count: int, name: str
) -> np.ndarray:
    field = CONTENTS_FIELD.get(datatype)
    if field is None:
        raise InvalidInput(
            f"input {name!r} is {datatype}, which has no typed contents field; "
            "send it in raw_input_contents"
        )
    used = [f.name for f, _ in contents.ListFields()]
    if used and used != [field]:
        raise InvalidInput(
            f"input {name!r} is {datatype} but its values are in {', '.join(used)}; "
            f"put them in contents.{field}"
        )
    values = getattr(contents, field)
    if len(values) != count:
        raise InvalidInput(
            f"input {name!r} has shape with {count} elements but contents.{field} "
            f"holds {len(values)}"
        )
    if datatype == "BYTES":
        array = np.empty(count, dtype=object)
        array[:] = list(values)
        return array
    wide = np.array(values, dtype=_FIELD_DTYPE.get(field, dtype))
    if wide.dtype == dtype:
        return wide
    info = np.iinfo(dtype)
    if wide.size and (wide.min() < info.min or wide.max() > info.max):
        raise InvalidInput(
            f"input {name!r} has values outside the range of {datatype} ({info.min}…{info.max})"
        )
    return wide.astype(dtype)


# -- responses ----------------------------------------------------------------
def encode_response(response: InferenceResponse, raw: bool) -> bytes:
    """The serialized ModelInferResponse; outputs as raw bytes when ``raw`` (or
    when an output has no typed contents field)."""
    message = pb.ModelInferResponse(
        model_name=response.model_name,
        model_version=response.model_version or "",
        id=response.id or "",
    )
    parameters_to_proto(response.parameters, message.parameters)
    raw = raw or any(t.datatype not in CONTENTS_FIELD for t in response.outputs)
    chunks: list[bytes | memoryview] = []
    for tensor in response.outputs:
        entry = message.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=wire_shape(tensor))
        parameters_to_proto(tensor.parameters, entry.parameters)
        if raw:
            chunks.extend(length_delimited(RAW_OUTPUT_CONTENTS, raw_bytes(tensor)))
        else:
            _fill_contents(entry.contents, tensor)
    # protobuf accepts fields in any order: the raw entries follow the rest
    return b"".join([message.SerializeToString(), *chunks])


def stream_response(infer_response: bytes | None = None, error: str = "") -> bytes:
    """A serialized ModelStreamInferResponse around an encoded response or an error."""
    head: bytes = pb.ModelStreamInferResponse(error_message=error).SerializeToString()
    if infer_response is None:
        return head
    return b"".join([head, *length_delimited(STREAM_INFER_RESPONSE, infer_response)])


def raw_bytes(tensor: Tensor) -> bytes | memoryview:
    """A tensor's little-endian bytes (length-prefixed for BYTES), as a view when
    the array already has that layout."""
    if tensor.datatype == "BYTES":
        return serialize_bytes(as_bytes_array(tensor.data))
    dtype = dtype_of(tensor.datatype).newbyteorder("<")
    data = np.ascontiguousarray(tensor.data, dtype=dtype)
    return data.reshape(-1).view(np.uint8).data


def _fill_contents(contents: Any, tensor: Tensor) -> None:
    field = getattr(contents, CONTENTS_FIELD[tensor.datatype])
    data = tensor.data.reshape(-1)
    if tensor.datatype == "BYTES":
        field.extend(as_bytes_array(data).tolist())
    else:
        # tolist() turns the whole array into Python scalars in one C loop
        field.extend(data.tolist())


__all__ = [
    "CONTENTS_FIELD",
    "decode_request",
    "encode_response",
    "parameters_from_proto",
    "split_request",
    "stream_response",
]
