"""The one internal request/response type: named tensors backed by numpy arrays.

Every protocol decodes into :class:`InferenceRequest` and encodes
:class:`InferenceResponse`; every runtime consumes and produces them.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from servekit.errors import InvalidInput

# V2 datatype name -> numpy dtype. BYTES tensors are object arrays of ``bytes``.
DATATYPE_TO_DTYPE: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(np.object_),
}
DATATYPES = tuple(DATATYPE_TO_DTYPE)

#: The most dimensions a tensor may have: numpy's iterators (``.flat``, ``nditer``,
#: most ufuncs) stop at 32 even where an array may have up to 64.
MAX_DIMS = 32
#: The largest product of a shape's non-zero dimensions: numpy refuses shapes whose
#: elements times itemsize pass 2**63 even when another dimension is 0.
MAX_ELEMENTS = 2**59
_KIND_TO_DATATYPE = {dt.str: name for name, dt in DATATYPE_TO_DTYPE.items() if name != "BYTES"}
# the common case, a native-order dtype, in one lookup
_NATIVE_DATATYPES = {dt: name for name, dt in DATATYPE_TO_DTYPE.items() if name != "BYTES"}


def datatype_of(array: np.ndarray) -> str:
    """The V2 datatype name for a numpy array (strings and objects are BYTES)."""
    dtype = array.dtype
    name = _NATIVE_DATATYPES.get(dtype)
    if name is not None:
        return name
    if dtype.kind in ("O", "U", "S"):
        return "BYTES"
    name = _KIND_TO_DATATYPE.get(dtype.newbyteorder("=").str)
    if name is None:
        raise InvalidInput(f"cannot express numpy dtype {dtype} as a V2 datatype")
    return name


def dtype_of(datatype: str) -> np.dtype[Any]:
    """The numpy dtype for a V2 datatype name, or InvalidInput naming the valid ones."""
    try:
        return DATATYPE_TO_DTYPE[datatype.upper()]
    except (KeyError, AttributeError):
        raise InvalidInput(
            f"unknown datatype {datatype!r}; expected one of {', '.join(DATATYPES)}"
        ) from None


def check_shape(shape: list[int], name: str) -> list[int]:
    """``shape`` when a tensor can have it, else InvalidInput naming the input:
    at most :data:`MAX_DIMS` dimensions, each >= 0, and (zeros aside) not
    multiplying to more than :data:`MAX_ELEMENTS`."""
    if len(shape) > MAX_DIMS:
        raise InvalidInput(
            f"input {name!r} has {len(shape)} dimensions; servekit takes tensors of at most "
            f"{MAX_DIMS} dimensions"
        )
    size = 1
    for dim in shape:
        if dim < 0:
            raise InvalidInput(f"input {name!r} has shape {shape}; every dimension must be >= 0")
        if dim:
            size *= dim
    if size > MAX_ELEMENTS:
        raise InvalidInput(
            f"input {name!r} has shape {shape}, larger than any tensor can be (its non-zero "
            f"dimensions multiply to more than 2**59); send the tensor's real shape"
        )
    return shape


def nesting_depth(value: Any, name: str, limit: int = MAX_DIMS) -> int:
    """How deeply lists nest in ``value`` (0 for a scalar), found level by level
    without recursion; InvalidInput once it passes ``limit``."""
    depth = 0
    level = [value] if isinstance(value, list) else []
    while level:
        depth += 1
        if depth > limit:
            raise InvalidInput(
                f"input {name!r} nests lists more than {limit} levels deep; a tensor has at "
                f"most {limit} dimensions"
            )
        level = [item for items in level for item in items if isinstance(item, list)]
    return depth


def as_bytes_array(array: np.ndarray) -> np.ndarray:
    """Normalise a str/bytes array into an object array of ``bytes`` (BYTES tensors)."""
    if array.dtype.kind == "O" and all(isinstance(v, bytes) for v in array.flat):
        return array
    out = np.empty(array.shape, dtype=object)
    flat_out = out.reshape(-1)
    for i, value in enumerate(array.flat):
        if isinstance(value, bytes):
            flat_out[i] = value
        elif isinstance(value, str):
            flat_out[i] = value.encode("utf-8")
        else:
            flat_out[i] = str(value).encode("utf-8")
    return out


@dataclass(slots=True)
class Tensor:
    """A named tensor. ``data`` holds the values with their real shape."""

    name: str
    data: np.ndarray
    datatype: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.datatype:
            self.datatype = datatype_of(self.data)
        if getattr(self.data, "ndim", 0) > MAX_DIMS:
            raise InvalidInput(
                f"tensor {self.name!r} has {self.data.ndim} dimensions; servekit takes tensors "
                f"of at most {MAX_DIMS} dimensions"
            )

    @property
    def shape(self) -> list[int]:
        return list(self.data.shape)

    @property
    def content_type(self) -> str | None:
        value = self.parameters.get("content_type")
        return value if isinstance(value, str) else None


@dataclass(slots=True)
class RequestedOutput:
    """An entry of the request's ``outputs``: a name plus per-output parameters."""

    name: str
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class InferenceRequest:
    inputs: list[Tensor]
    outputs: list[RequestedOutput] | None = None
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    # time.monotonic() after which nobody waits for the answer (set by the data plane)
    deadline: float | None = None
    # set by the batcher when it runs the request: nanoseconds it waited in the
    # queue, and how many requests ran merged in that call (what traces report)
    queue_ns: int = 0
    batch_size: int = 1

    def __post_init__(self) -> None:
        if self.outputs is not None and len(self.outputs) > 1:
            names = [o.name for o in self.outputs]
            if len(set(names)) != len(names):
                twice = ", ".join(repr(n) for n in sorted({n for n in names if names.count(n) > 1}))
                raise InvalidInput(
                    f"the request asks for output {twice} more than once; name each output once"
                )

    def input(self, name: str) -> Tensor:
        for tensor in self.inputs:
            if tensor.name == name:
                return tensor
        names = ", ".join(t.name for t in self.inputs) or "none"
        raise InvalidInput(f"input {name!r} is missing from the request (inputs given: {names})")

    @property
    def output_names(self) -> list[str] | None:
        return None if self.outputs is None else [o.name for o in self.outputs]

    def ensure_id(self) -> str:
        if not self.id:
            # a version-4 UUID from the fast PRNG: ids need uniqueness, not secrecy
            self.id = str(uuid.UUID(int=random.getrandbits(128), version=4))
        return self.id


@dataclass(slots=True)
class InferenceResponse:
    model_name: str
    outputs: list[Tensor]
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)

    def output(self, name: str) -> Tensor:
        for tensor in self.outputs:
            if tensor.name == name:
                return tensor
        raise KeyError(name)


@dataclass(slots=True)
class TensorSpec:
    """Metadata of one input or output: ``-1`` marks a variable dimension."""

    name: str
    datatype: str
    shape: list[int]
    parameters: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "datatype": self.datatype, "shape": self.shape}
        if self.parameters:
            out["parameters"] = self.parameters
        return out


@dataclass(slots=True)
class ModelMetadata:
    name: str
    platform: str
    versions: list[str]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    parameters: dict[str, Any] = field(default_factory=dict)
