"""``tensorflow.TensorProto`` <-> numpy, and tf.Example features <-> the
examples of classify/regress, for TF Serving's gRPC API.

``Predict`` requests are split at the wire level before protobuf parses
them: each input's ``tensor_content`` stays a view of the bytes gRPC
received and becomes an array with ``np.frombuffer``, without a copy. Typed
fields (``float_val`` …) are read with TensorFlow's rules (one value fills
the tensor, fewer values than elements repeat the last).

Replies carry numbers in the typed fields, as TF Serving does by default
(clients read ``outputs[…].float_val``), or in ``tensor_content`` with
``--enable_serialization_as_tensor_content`` (TF Serving's flag). The packed
``float_val``/``double_val``/``bool_val`` fields hold the same little-endian
bytes as ``tensor_content``, so they are written the same way, after the
serialized rest of the response: the output array is copied once, into the
reply. Integers are varints, written by protobuf.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from servekit.errors import InvalidInput
from servekit.protocols.generated.tfserving import tensorflow_pb2 as tfpb
from servekit.protocols.generated.tfserving import tensorflow_serving_pb2 as pb
from servekit.protocols.protowire import LENGTH_DELIMITED, fields, length_delimited, varint
from servekit.tensors import Tensor, as_bytes_array, check_shape

# field numbers (see tensorflow_serving.proto, tensorflow.proto)
PREDICT_INPUTS = 2  # PredictRequest.inputs (map entries)
PREDICT_OUTPUTS = 1  # PredictResponse.outputs
ENTRY_KEY, ENTRY_VALUE = 1, 2  # of a map entry
TENSOR_CONTENT = 4  # TensorProto.tensor_content
# dtypes whose packed typed field holds the array's little-endian bytes as they are
RAW_TYPED_FIELDS = {tfpb.DT_FLOAT: 5, tfpb.DT_DOUBLE: 6, tfpb.DT_BOOL: 11}  # float_val, double_val, bool_val

# DataType -> (numpy dtype, the typed field holding its values)
DTYPES: dict[int, tuple[np.dtype[Any], str]] = {
    tfpb.DT_FLOAT: (np.dtype("<f4"), "float_val"),
    tfpb.DT_DOUBLE: (np.dtype("<f8"), "double_val"),
    tfpb.DT_HALF: (np.dtype("<f2"), "half_val"),
    tfpb.DT_INT8: (np.dtype("i1"), "int_val"),
    tfpb.DT_INT16: (np.dtype("<i2"), "int_val"),
    tfpb.DT_INT32: (np.dtype("<i4"), "int_val"),
    tfpb.DT_INT64: (np.dtype("<i8"), "int64_val"),
    tfpb.DT_UINT8: (np.dtype("u1"), "int_val"),
    tfpb.DT_UINT16: (np.dtype("<u2"), "int_val"),
    tfpb.DT_UINT32: (np.dtype("<u4"), "uint32_val"),
    tfpb.DT_UINT64: (np.dtype("<u8"), "uint64_val"),
    tfpb.DT_BOOL: (np.dtype("?"), "bool_val"),
    tfpb.DT_STRING: (np.dtype(object), "string_val"),
}
# typed fields wider than the dtypes they carry: their values are range-checked
_NARROW_FIELDS = frozenset({"int_val", "half_val"})
# the most bytes a tensor filled from fewer typed values than elements may take,
# unless the caller says (the server passes its max_request_size: no more than a
# request could have sent in full)
MAX_FILL_BYTES = 512 * 1024 * 1024
_BY_KIND = {
    dtype.newbyteorder("=").str: code
    for code, (dtype, _) in DTYPES.items()
    if code != tfpb.DT_STRING
}


def dtype_name(code: int) -> str:
    try:
        return str(tfpb.DataType.Name(code))
    except ValueError:
        return str(code)


def split_predict(data: bytes) -> tuple[Any, list[tuple[str, Any, memoryview | None]]]:
    """A serialized PredictRequest as (the request without its inputs, and per
    input: its name, its TensorProto without tensor_content, and that content
    as a view of ``data``)."""
    view = memoryview(data)
    rest: list[memoryview] = []
    inputs = []
    for number, wire, whole, payload in fields(view, "PredictRequest"):
        if number == PREDICT_INPUTS and wire == LENGTH_DELIMITED:
            inputs.append(_split_input(payload))
        else:
            rest.append(whole)
    message = pb.PredictRequest()
    try:
        message.ParseFromString(b"".join(rest))
    except Exception as exc:  # protobuf's DecodeError, without importing its internals
        raise InvalidInput(f"the request is not a valid PredictRequest message: {exc}") from None
    return message, inputs


def _split_input(entry: memoryview) -> tuple[str, Any, memoryview | None]:
    key = b""
    parts: list[memoryview] = []
    content: memoryview | None = None
    for number, wire, _, payload in fields(entry, "PredictRequest"):
        if wire != LENGTH_DELIMITED:
            continue
        if number == ENTRY_KEY:
            key = bytes(payload)
        elif number == ENTRY_VALUE:
            for field, field_wire, whole, value in fields(payload, "TensorProto"):
                if field == TENSOR_CONTENT and field_wire == LENGTH_DELIMITED:
                    content = value if len(value) else None
                else:
                    parts.append(whole)
    try:
        name = key.decode("utf-8")
        proto = tfpb.TensorProto.FromString(b"".join(parts))
    except Exception as exc:
        raise InvalidInput(f"an input of the request is not a valid TensorProto: {exc}") from None
    return name, proto, content


def decode_tensor(
    proto: Any, name: str, content: bytes | memoryview | None = None, max_fill: int = MAX_FILL_BYTES
) -> np.ndarray:
    """A TensorProto as a numpy array (BYTES tensors are object arrays of bytes);
    ``content`` is its tensor_content when that was cut out by :func:`split_predict`."""
    known = DTYPES.get(proto.dtype)
    if known is None:
        supported = ", ".join(dtype_name(c) for c in DTYPES)
        raise InvalidInput(
            f"input {name!r} has dtype {dtype_name(proto.dtype)}, which servekit does not "
            f"serve; use one of {supported}"
        )
    dtype, field = known
    shape = _shape(proto, name)
    count = math.prod(shape)
    if content is None and proto.tensor_content:
        content = proto.tensor_content
    if content is not None:
        if proto.dtype == tfpb.DT_STRING:
            raise InvalidInput(f"input {name!r}: DT_STRING values go in string_val, not tensor_content")
        if len(content) != count * dtype.itemsize:
            raise InvalidInput(
                f"input {name!r}: tensor_content holds {len(content)} bytes, but shape {shape} "
                f"of {dtype_name(proto.dtype)} needs {count * dtype.itemsize}"
            )
        return np.frombuffer(content, dtype=dtype).reshape(shape)
    values = getattr(proto, field)
    if proto.dtype == tfpb.DT_STRING:
        array = np.empty(len(values), dtype=object)
        array[:] = list(values)
    elif field in _NARROW_FIELDS:
        # int32s carrying 8/16-bit integers, or float16 bit patterns (half_val)
        target = np.dtype(np.uint16) if proto.dtype == tfpb.DT_HALF else dtype
        wide = np.array(values, dtype=np.int64)
        info = np.iinfo(target)
        if wide.size and (wide.min() < info.min or wide.max() > info.max):
            raise InvalidInput(
                f"input {name!r} is {dtype_name(proto.dtype)} but {field} holds values outside "
                f"{info.min}…{info.max}"
            )
        array = wide.astype(target)
        if proto.dtype == tfpb.DT_HALF:
            array = array.view(np.float16)
    else:
        array = np.array(values, dtype=dtype)
    return _fill(array, shape, count, name, max_fill)


def _shape(proto: Any, name: str) -> list[int]:
    if proto.tensor_shape.unknown_rank:
        raise InvalidInput(f"input {name!r} has an unknown rank; send its tensor_shape")
    return check_shape([int(d.size) for d in proto.tensor_shape.dim], name)


def _fill(values: np.ndarray, shape: list[int], count: int, name: str, max_fill: int) -> np.ndarray:
    """TensorFlow's reading of typed fields: as many values as elements, or
    fewer (the last repeats; none gives zeros/empty strings)."""
    if values.size == count:
        return values.reshape(shape)
    if values.size > count:
        raise InvalidInput(
            f"input {name!r} has {values.size} values, more than its shape {shape} holds ({count})"
        )
    if count * values.dtype.itemsize > max_fill:
        raise InvalidInput(
            f"input {name!r} has {values.size} values for shape {shape} ({count} elements): "
            f"servekit repeats the last value to fill at most {max_fill / 2**20:g} MiB (max_request_size); "
            "send every value (tensor_content)"
        )
    if values.size == 0:
        if values.dtype == object:
            out = np.empty(count, dtype=object)
            out[:] = b""
            return out.reshape(shape)
        return np.zeros(shape, dtype=values.dtype)
    return np.pad(values, (0, count - values.size), mode="edge").reshape(shape)


def encode_predict(spec: Any, outputs: list[Tensor], tensor_content: bool = False) -> bytes:
    """A serialized PredictResponse: ``spec`` (a ModelSpec) and the outputs, their
    numbers in the typed fields (or ``tensor_content``), the raw bytes appended
    without passing through protobuf."""
    chunks: list[bytes | memoryview] = [pb.PredictResponse(model_spec=spec).SerializeToString()]
    for tensor in outputs:
        proto = tfpb.TensorProto()
        content = encode_tensor(tensor.data, proto)
        field = TENSOR_CONTENT
        if content is not None and not tensor_content:
            field = RAW_TYPED_FIELDS.get(proto.dtype, 0)
            if not field:  # integers: varints
                getattr(proto, DTYPES[proto.dtype][1]).extend(_typed_values(tensor.data, proto.dtype))
                content = None
        value = [proto.SerializeToString()]
        if content is not None and len(content):
            value += length_delimited(field, content)
        entry = [
            *length_delimited(ENTRY_KEY, tensor.name.encode("utf-8")),
            varint(ENTRY_VALUE << 3 | LENGTH_DELIMITED) + varint(sum(len(v) for v in value)),
            *value,
        ]
        chunks.append(varint(PREDICT_OUTPUTS << 3 | LENGTH_DELIMITED) + varint(sum(len(e) for e in entry)))
        chunks += entry
    return b"".join(chunks)


def encode_tensor(array: np.ndarray, out: Any) -> memoryview | None:
    """Describe an array in the TensorProto ``out`` (dtype, shape; strings and
    bytes in string_val) and return its tensor_content: the little-endian
    bytes of numbers, as a view when the array already has that layout."""
    for size in array.shape:
        out.tensor_shape.dim.add(size=size)
    if array.dtype.kind in "OUS":
        out.dtype = tfpb.DT_STRING
        out.string_val.extend(as_bytes_array(array).reshape(-1).tolist())
        return None
    code = _BY_KIND.get(array.dtype.newbyteorder("=").str)
    if code is None:
        raise InvalidInput(f"the model returned {array.dtype} values, which TF Serving cannot express")
    out.dtype = code
    data = np.ascontiguousarray(array, dtype=DTYPES[code][0])
    return data.reshape(-1).view(np.uint8).data


def _typed_values(array: np.ndarray, code: int) -> list[int]:
    """An integer (or float16) array's values for its varint typed field."""
    flat = np.ascontiguousarray(array).reshape(-1)
    if code == tfpb.DT_HALF:
        flat = flat.astype(np.float16).view(np.uint16)
    values: list[int] = flat.tolist()
    return values


def examples(input_message: Any) -> list[dict[str, Any]]:
    """A ``tensorflow.serving.Input`` as examples of feature -> value (a number,
    bytes, or a list of them), with the context's features merged in."""
    kind = input_message.WhichOneof("kind")
    if kind is None:
        raise InvalidInput("input needs example_list or example_list_with_context")
    listed = getattr(input_message, kind)
    context = _features(listed.context) if kind == "example_list_with_context" else {}
    out = []
    for i, example in enumerate(listed.examples):
        features = {**context, **_features(example)}
        if not features:
            raise InvalidInput(f"example {i} has no features")
        out.append(features)
    if not out:
        raise InvalidInput("input has no examples")
    return out


def _features(example: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, feature in sorted(example.features.feature.items()):
        kind = feature.WhichOneof("kind")
        if kind is None:
            raise InvalidInput(f"feature {name!r} has no values")
        values = list(getattr(feature, kind).value)
        out[name] = values[0] if len(values) == 1 else values
    return out


__all__ = [
    "DTYPES",
    "decode_tensor",
    "dtype_name",
    "encode_predict",
    "encode_tensor",
    "examples",
    "split_predict",
]
