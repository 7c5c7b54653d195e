"""Fuzzing every decoder of a request body, in process: V2 JSON and binary,
V2 gRPC, TF Serving REST and gRPC, Seldon and the TorchServe-style JSON body.

Whatever a client sends, decoding (and running the decoded request on a
tabular model, and encoding an echo of it) either works or raises a
:class:`~servekit.errors.ServekitError` whose status is below 500 and whose
message says something; any other exception is a bug (it would be a 500 or
gRPC UNKNOWN/INTERNAL).

Inputs are "almost valid" most of the time (so decoding gets past the first
check) and garbage the rest of the time: wrong types, huge and negative
dimensions, more than 32 dimensions, lists nested 1,000 deep, integers past
int64/uint64, truncated and corrupted protobuf bytes.

``SERVEKIT_FUZZ_EXAMPLES`` sets the number of examples per test (``make fuzz``);
``make test`` runs a few hundred in all.
"""

from __future__ import annotations

import base64
import copy
import gzip
import json
import math
import os
import struct
import warnings
import zlib
from collections.abc import Callable
from typing import Any, TypeVar

import joblib
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from servekit.config import ModelParameters, ModelSettings
from servekit.errors import ServekitError
from servekit.fronts.seldon import api as seldon
from servekit.fronts.tfserving import codec as tf_codec
from servekit.fronts.tfserving import grpc_codec as tf_grpc_codec
from servekit.fronts.torchserve.api import numeric_request
from servekit.protocols import grpc_errors, json_numbers, v2_codec, v2_grpc_codec
from servekit.protocols.generated import grpc_predict_v2_pb2 as v2pb
from servekit.protocols.generated.tfserving import tensorflow_pb2 as tfpb
from servekit.protocols.generated.tfserving import tensorflow_serving_pb2 as tfspb
from servekit.runtimes import create_runtime
from servekit.runtimes.base import Runtime
from servekit.tensors import DATATYPES, InferenceRequest, InferenceResponse, RequestedOutput, Tensor

T = TypeVar("T")


def examples(default: int) -> int:
    """Examples per test: ``SERVEKIT_FUZZ_EXAMPLES`` when set, else ``default``."""
    value = os.environ.get("SERVEKIT_FUZZ_EXAMPLES", "")
    return int(value) if value.strip() else default


FUZZ = settings(
    max_examples=examples(40),
    deadline=None,  # never a timed assertion
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


# -- the property ------------------------------------------------------------------
def client_error(exc: ServekitError) -> None:
    assert exc.status < 500, f"{type(exc).__name__} ({exc.status}): {exc.message}"
    assert isinstance(exc.message, str) and exc.message.strip(), "an error needs a message"
    assert "Traceback" not in exc.message


def attempt(call: Callable[..., T], *args: Any) -> T | None:
    """``call(*args)``; None when it refused with a client error. Any other
    exception fails the test (hypothesis then shrinks the input)."""
    try:
        return call(*args)
    except ServekitError as exc:
        client_error(exc)
        return None


# -- JSON text, including nesting deeper than Python's json module can write ---------
class Nested:
    """``value`` inside ``depth`` lists, written as text (no recursion)."""

    def __init__(self, depth: int, value: Any) -> None:
        self.depth, self.value = depth, value

    def __repr__(self) -> str:
        return f"Nested({self.depth}, {self.value!r})"


def dump(value: Any) -> str:
    if isinstance(value, Nested):
        return "[" * value.depth + dump(value.value) + "]" * value.depth
    if isinstance(value, list):
        return "[" + ",".join(dump(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(str(k))}:{dump(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)  # big integers too: JSON has no limit, orjson has


def one_in(draw: st.DrawFn, n: int) -> bool:
    """True about once in ``n`` draws; shrinks to False (the valid choice)."""
    return bool(draw(st.sampled_from(range(n))) == n - 1)


EDGE_INTS = [0, 1, -1, 2**31, 2**32, 2**53 + 1, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1,
             2**64 - 1, 2**64, -(2**64), 10**30, 10**400]
EDGE_FLOATS = [0.0, -0.0, 0.5, 1e308, -1e308, 5e-324, 65504.0, 65520.0, 3.5e38, 1e-45]
numbers = st.one_of(
    st.integers(-20, 20),
    st.sampled_from(EDGE_INTS),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(EDGE_FLOATS),
)
texts = st.text(max_size=8)
scalars = st.one_of(numbers, st.booleans(), st.none(), texts)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=16,
)
# lists nested past 32 (numpy's iterators), 64 (numpy's arrays), 254 (orjson's writer),
# Python's recursion limit, and orjson's reader (1024)
deep = st.builds(
    Nested,
    st.sampled_from([33, 40, 64, 65, 300, 1000, 1100]),
    st.sampled_from(["a", 1, 1.5, True, None, {"b64": "YQ=="}, {"a": 1}, []]).map(copy.deepcopy),
)
# values a tensor cannot hold, or that numpy reads unexpectedly
hostile = st.one_of(
    deep,
    st.lists(st.sampled_from(EDGE_INTS + EDGE_FLOATS), min_size=1, max_size=4),
    st.sampled_from([[[1], [1, 2]], [[1, 2], [3, [4]]], [["a"], "b"], [1, "a"], [1, None], [{"a": 1}],
                     [[]], [], {}, "a", 1, None, [2**63, -1], [2**64, 1]]).map(copy.deepcopy),
)
anything = st.one_of(json_values, hostile)


def nest(flat: list[Any], shape: list[int]) -> Any:
    """``flat`` as nested lists of ``shape`` (flat when it does not fit)."""
    if len(shape) <= 1 or not all(0 <= d <= 3 for d in shape) or math.prod(shape) != len(flat):
        return flat
    step = len(flat) // shape[0] if shape[0] else 0
    return [nest(flat[i * step:(i + 1) * step], shape[1:]) for i in range(shape[0])]


@st.composite
def leaves_for(draw: st.DrawFn, datatype: str, count: int) -> list[Any]:
    """``count`` values that fit ``datatype`` (mostly), as JSON carries them."""
    if datatype == "BYTES":
        element: st.SearchStrategy[Any] = texts
    elif datatype == "BOOL":
        element = st.booleans()
    elif datatype.startswith("FP"):
        element = st.floats(-1e4, 1e4, width=32) | st.integers(-5, 5)
    else:
        element = st.integers(0, 100)
    if one_in(draw, 10):
        element = scalars
    count = max(count, 0)
    return draw(st.lists(element, min_size=count, max_size=count))


# mostly what models take: 0 and 1 are the interesting sizes
small_dims = st.lists(st.sampled_from([1, 2, 0, 3, 4]), max_size=3)
odd_dims = st.one_of(
    st.lists(st.sampled_from([0, 1, 2, 2**31, 2**62, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -1]),
             max_size=5),
    st.integers(30, 70).map(lambda n: [0] + [1] * n),
    st.integers(30, 70).map(lambda n: [1] * n),
)


def elements(shape: list[int]) -> int:
    """How many values a generated shape takes (0 for the odd ones)."""
    return math.prod(shape) if len(shape) < 8 and all(0 <= d <= 4 for d in shape) else 0


# -- V2 JSON and binary -------------------------------------------------------------
@st.composite
def v2_input(draw: st.DrawFn, shape: list[int]) -> tuple[dict[str, Any], bytes | None]:
    """One entry of ``inputs`` (mostly valid; one thing wrong at a time) and,
    for the binary extension, its bytes."""
    datatype = draw(st.sampled_from(["FP64", "FP32", "INT64", *DATATYPES]))
    if one_in(draw, 8):
        shape = draw(odd_dims)
    count = elements(shape)
    entry: dict[str, Any] = {"name": draw(st.sampled_from(["x", "y", "input-0"]) | texts),
                             "shape": shape, "datatype": datatype}
    binary: bytes | None = None
    if one_in(draw, 6):  # Triton's binary extension
        if datatype == "BYTES":
            items = draw(st.lists(st.binary(max_size=6), min_size=count, max_size=count))
            binary = b"".join(struct.pack("<I", len(item)) + item for item in items)
        else:
            size = count * v2_codec.dtype_of(datatype).itemsize
            binary = draw(st.binary(min_size=size, max_size=size))
        if one_in(draw, 6):
            binary = draw(st.binary(max_size=40))
        entry["parameters"] = {"binary_data_size": draw(anything) if one_in(draw, 6) else len(binary)}
    else:
        flat = draw(leaves_for(datatype, count + (draw(st.sampled_from([1, -1])) if one_in(draw, 10) else 0)))
        entry["data"] = nest(flat, shape) if draw(st.booleans()) else flat
    if one_in(draw, 5):  # one thing wrong
        key = draw(st.sampled_from(["name", "shape", "datatype", "data", "data", "data", "parameters", None]))
        if key is None:
            entry.pop(draw(st.sampled_from(sorted(entry))))
        elif key == "datatype":
            entry[key] = draw(st.sampled_from(["fp32", "", "FP8", "STRING", "BF16"]) | anything)
        else:
            entry[key] = draw(hostile if key == "data" else anything)
    return entry, binary


# Triton's timeout (µs), but none that could pass while the request runs (a 504 is
# the right answer then): none, 0 or less, at least 100 s, or not a number
timeouts = st.one_of(st.integers(-(2**70), 0), st.integers(10**8, 2**70), st.floats(max_value=0),
                     st.floats(min_value=1e8), st.booleans(), st.none(), texts)


@st.composite
def v2_body(draw: st.DrawFn) -> tuple[bytes, dict[str, str]]:
    """(body, headers) of a V2 infer request."""
    if one_in(draw, 40):
        return draw(st.binary(max_size=64)), {}
    if one_in(draw, 40):
        return dump(draw(anything)).encode(), {}
    shape = draw(small_dims)
    pairs = [draw(v2_input(shape if i == 0 or draw(st.booleans()) else draw(small_dims)))
             for i in range(draw(st.sampled_from([1, 2, 1, 3])))]
    document: dict[str, Any] = {"inputs": [entry for entry, _ in pairs]}
    if one_in(draw, 4):
        names = st.sampled_from(["predict", "predict_proba", "nope"]) | texts
        outputs = st.lists(st.fixed_dictionaries({"name": names}, optional={
            "parameters": st.fixed_dictionaries({}, optional={"binary_data": st.booleans()})}), max_size=3)
        document["outputs"] = draw(anything if one_in(draw, 8) else outputs)
    if one_in(draw, 10):
        document["id"] = draw(anything | texts)
    if one_in(draw, 10):
        document["parameters"] = draw(anything if one_in(draw, 4) else st.fixed_dictionaries({}, optional={
            "binary_data_output": st.booleans(), "timeout": timeouts}))
    if one_in(draw, 30):
        document[draw(st.sampled_from(["inputs", "outputs"]))] = draw(anything)
    if one_in(draw, 4):  # large enough for the C parser of numeric data (json_numbers)
        document["padding"] = "x" * json_numbers.MIN_BODY
    header = dump(document).encode()
    headers: dict[str, str] = {}
    body = header
    binaries = [b for _, b in pairs if b is not None]
    if binaries or one_in(draw, 30):
        body = header + b"".join(binaries)
        length: Any = len(header)
        if one_in(draw, 6):
            length = draw(st.integers(-5, len(body) + 5) | st.sampled_from(["", "x", "1e3", "+7", "0x7", str(2**64)]))
        headers[v2_codec.HEADER_LENGTH] = str(length)
    if one_in(draw, 8):
        encoding = draw(st.sampled_from(["gzip", "deflate", "br", "identity"]))
        headers["content-encoding"] = encoding
        if encoding == "gzip":
            body = draw(st.binary(max_size=30)) if one_in(draw, 3) else gzip.compress(body)
        elif encoding == "deflate":
            body = zlib.compress(body)
            if one_in(draw, 3):
                body = body[: draw(st.integers(0, len(body)))]
    return body, headers


# a real tabular runtime (iris, 4 features) to run what decodes
@pytest.fixture(scope="module")
def iris_runtime(tmp_path_factory: pytest.TempPathFactory) -> Runtime:
    folder = tmp_path_factory.mktemp("fuzz-iris")
    X, y = load_iris(return_X_y=True)
    joblib.dump(LogisticRegression(max_iter=300).fit(X, y), folder / "model.joblib")
    model_settings = ModelSettings(
        name="iris", parameters=ModelParameters(uri="model.joblib", version="1"), source_dir=str(folder)
    )
    runtime = create_runtime(model_settings)
    runtime.load()
    return runtime


def run_and_echo(runtime: Runtime, request: InferenceRequest) -> InferenceResponse:
    """Run the decoded request on the model (client errors allowed), and answer
    it with an echo of its inputs, which every encoder must be able to write."""
    with warnings.catch_warnings():
        # numbers near float64's limits overflow inside the model: a warning in a
        # server (inf/NaN in the answer), not an error of the decoder under test
        warnings.simplefilter("ignore", RuntimeWarning)
        attempt(runtime.predict, request)
    return InferenceResponse("echo", [Tensor(t.name, t.data, t.datatype) for t in request.inputs],
                             model_version="1", id=request.id)


@FUZZ
@given(body=v2_body())
def test_v2_rest_decoder(iris_runtime: Runtime, body: tuple[bytes, dict[str, str]]) -> None:
    data, headers = body
    request = attempt(v2_codec.decode_request, data, headers, 1 << 20)
    if request is not None:
        echo = run_and_echo(iris_runtime, request)
        attempt(v2_codec.encode_response, echo, request)


# -- V2 gRPC ------------------------------------------------------------------------
CONTENT_FIELDS = {
    "bool_contents": st.booleans(),
    "int_contents": st.integers(-(2**31), 2**31 - 1),
    "int64_contents": st.integers(-(2**63), 2**63 - 1),
    "uint_contents": st.integers(0, 2**32 - 1),
    "uint64_contents": st.integers(0, 2**64 - 1),
    "fp32_contents": st.floats(width=32),
    "fp64_contents": st.floats(),
    "bytes_contents": st.binary(max_size=6),
}


@st.composite
def infer_parameters(draw: st.DrawFn, target: Any) -> None:
    for key in draw(st.lists(st.sampled_from(["timeout", "binary_data_output", "x"]), max_size=2)):
        kind, value = draw(st.sampled_from([
            ("bool_param", st.booleans()), ("int64_param", st.integers(-(2**63), 2**63 - 1)),
            ("uint64_param", st.integers(0, 2**64 - 1)), ("double_param", st.floats()),
            ("string_param", texts),
        ]))
        setattr(target[key], kind, draw(value))


def mutate(draw: st.DrawFn, data: bytes) -> bytes:
    """The serialized message, or (one time in four) it truncated, corrupted,
    extended or replaced."""
    how = draw(st.sampled_from(range(16)))
    if how == 0:
        return draw(st.binary(max_size=64))
    if how == 1 and data:
        return data[: draw(st.integers(0, len(data) - 1))]
    if how == 2 and data:
        position = draw(st.integers(0, len(data) - 1))
        return data[:position] + bytes([draw(st.integers(0, 255))]) + data[position + 1:]
    if how == 3:
        return data + draw(st.binary(min_size=1, max_size=12))
    return data


@st.composite
def v2_grpc_request(draw: st.DrawFn) -> bytes:
    message = v2pb.ModelInferRequest(model_name="iris", id=draw(texts))
    raw = one_in(draw, 3)
    first = draw(small_dims)
    int64 = odd_dims.map(lambda dims: [max(min(d, 2**63 - 1), -(2**63)) for d in dims])
    for i in range(draw(st.sampled_from([1, 2, 1, 3, 0]))):
        datatype = draw(st.sampled_from(["FP32", "FP64", "INT64", *DATATYPES]))
        if one_in(draw, 15):
            datatype = draw(st.sampled_from(["fp32", "", "FP8", "BF16"]) | texts)
        shape = first if i == 0 or draw(st.booleans()) else draw(small_dims)
        if one_in(draw, 8):
            shape = draw(int64)
        entry = message.inputs.add(name=draw(st.sampled_from(["x", "y"]) | texts),
                                   datatype=datatype, shape=shape)
        if one_in(draw, 5):
            draw(infer_parameters(entry.parameters))
        count = elements(shape) + (draw(st.sampled_from([1, -1])) if one_in(draw, 10) else 0)
        if raw:
            size = max(count, 0) * (8 if datatype not in DATATYPES or datatype == "BYTES"
                                    else v2_codec.dtype_of(datatype).itemsize)
            message.raw_input_contents.append(
                draw(st.binary(max_size=20) if one_in(draw, 8) else st.binary(min_size=size, max_size=size)))
        elif not one_in(draw, 15):
            field = v2_grpc_codec.CONTENTS_FIELD.get(datatype) or draw(st.sampled_from(list(CONTENT_FIELDS)))
            if one_in(draw, 10):
                field = draw(st.sampled_from(list(CONTENT_FIELDS)))
            size = max(count, 0)
            getattr(entry.contents, field).extend(
                draw(st.lists(CONTENT_FIELDS[field], min_size=size, max_size=size)))
    if raw and one_in(draw, 10):
        message.raw_input_contents.append(b"")
    for _ in range(draw(st.sampled_from([0, 0, 1, 2]))):
        output = message.outputs.add(name=draw(st.sampled_from(["predict", "predict_proba", "x"])))
        draw(infer_parameters(output.parameters))
    if one_in(draw, 4):
        draw(infer_parameters(message.parameters))
    return mutate(draw, message.SerializeToString())


@FUZZ
@given(data=v2_grpc_request())
def test_v2_grpc_decoder(iris_runtime: Runtime, data: bytes) -> None:
    split = attempt(v2_grpc_codec.split_request, data)
    if split is None:
        return
    decoded = attempt(v2_grpc_codec.decode_request, *split)
    if decoded is not None:
        request, raw = decoded
        echo = run_and_echo(iris_runtime, request)
        attempt(v2_grpc_codec.encode_response, echo, raw)


MESSAGES = [v2pb.ModelMetadataRequest, v2pb.ServerLiveRequest, v2pb.RepositoryIndexRequest,
            v2pb.RepositoryModelLoadRequest, tfspb.GetModelStatusRequest, tfspb.ClassificationRequest,
            tfspb.RegressionRequest, tfspb.GetModelMetadataRequest, tfspb.ReloadConfigRequest]


@FUZZ
@given(message_class=st.sampled_from(MESSAGES), data=st.binary(max_size=48))
def test_grpc_deserializer_never_raises(message_class: Any, data: bytes) -> None:
    """What non-raw gRPC methods are registered with: a message, or a
    MalformedMessage that their :func:`rpc` wrapper answers INVALID_ARGUMENT."""
    parsed = grpc_errors.deserializer(message_class)(data)
    if isinstance(parsed, grpc_errors.MalformedMessage):
        assert message_class.DESCRIPTOR.full_name in parsed.message
    else:
        assert isinstance(parsed, message_class)


# -- TF Serving REST ----------------------------------------------------------------
@st.composite
def tf_value(draw: st.DrawFn) -> Any:
    """An ``instances``/``inputs`` value: numbers, strings or b64 in (nearly) rectangular lists."""
    if one_in(draw, 6):
        return draw(hostile if draw(st.booleans()) else anything)
    shape = draw(small_dims)
    count = math.prod(shape)
    kind = draw(st.sampled_from(["FP32", "INT64", "BYTES", "b64", "BOOL"]))
    if kind == "b64":
        b64 = st.binary(max_size=6).map(lambda b: {"b64": base64.b64encode(b).decode()})
        if one_in(draw, 4):
            b64 = st.one_of(st.fixed_dictionaries({"b64": texts}), st.dictionaries(texts, scalars, max_size=2))
        leaves = draw(st.lists(b64, min_size=count, max_size=count))
    else:
        leaves = draw(leaves_for(kind, count + (draw(st.sampled_from([1, -1])) if one_in(draw, 10) else 0)))
    return nest(leaves, shape)


@st.composite
def tf_body(draw: st.DrawFn) -> bytes:
    if one_in(draw, 30):
        return draw(st.binary(max_size=64))
    document: dict[str, Any] = {}
    form = draw(st.sampled_from(["instances", "instances-named", "inputs", "inputs-named"]))
    if one_in(draw, 15):
        form = draw(st.sampled_from(["both", "none"]))
    if form in ("instances", "both"):
        document["instances"] = draw(tf_value())
    if form == "instances-named":
        rows = draw(st.integers(0, 3))
        names = draw(st.lists(st.sampled_from(["a", "b", "b64"]), min_size=1, max_size=2, unique=True))
        document["instances"] = [{n: draw(tf_value()) for n in names} for _ in range(rows)]
    if form in ("inputs", "both"):
        document["inputs"] = draw(tf_value())
    if form == "inputs-named":
        document["inputs"] = draw(st.dictionaries(st.sampled_from(["a", "b", "b64"]), tf_value(), max_size=2))
    if one_in(draw, 10):
        document["signature_name"] = draw(anything | texts)
    if one_in(draw, 20):
        document = draw(anything)
    return dump(document).encode()


@FUZZ
@given(body=tf_body())
def test_tfserving_rest_predict_decoder(iris_runtime: Runtime, body: bytes) -> None:
    decoded = attempt(tf_codec.decode_predict, body)
    if decoded is not None:
        request, rows = decoded
        echo = run_and_echo(iris_runtime, request)
        attempt(tf_codec.encode_predict, echo, rows)


@st.composite
def tf_examples_body(draw: st.DrawFn) -> bytes:
    features = st.dictionaries(st.sampled_from(["a", "b", "c"]), tf_value() | scalars, max_size=3)
    document: dict[str, Any] = {"examples": draw(st.lists(features, max_size=3) | anything)}
    if draw(st.booleans()):
        document["context"] = draw(features | anything)
    return dump(document).encode()


@FUZZ
@given(body=tf_examples_body(), inputs=st.sampled_from([["inputs"], ["a", "b"], ["a"]]))
def test_tfserving_rest_examples_decoder(iris_runtime: Runtime, body: bytes, inputs: list[str]) -> None:
    decoded = attempt(tf_codec.decode_examples, body)
    if decoded is not None:
        request = attempt(tf_codec.examples_request, *decoded[:1], inputs, decoded[1])
        if request is not None:
            run_and_echo(iris_runtime, request)


# -- TF Serving gRPC ----------------------------------------------------------------
TYPED_FIELDS = {
    "float_val": st.floats(width=32), "double_val": st.floats(),
    "half_val": st.integers(-(2**31), 2**31 - 1), "int_val": st.integers(-(2**31), 2**31 - 1),
    "int64_val": st.integers(-(2**63), 2**63 - 1), "uint32_val": st.integers(0, 2**32 - 1),
    "uint64_val": st.integers(0, 2**64 - 1), "bool_val": st.booleans(),
    "string_val": st.binary(max_size=6),
}


@st.composite
def tensor_proto(draw: st.DrawFn, out: Any) -> None:
    out.dtype = draw(st.sampled_from([tfpb.DT_FLOAT, tfpb.DT_DOUBLE, tfpb.DT_INT64, *tf_grpc_codec.DTYPES]))
    if one_in(draw, 12):
        out.dtype = draw(st.sampled_from([0, 8, 14, 18, 23, 1000]))
    shape = draw(small_dims)
    if one_in(draw, 8):
        shape = draw(odd_dims.map(lambda dims: [max(min(d, 2**63 - 1), -(2**63)) for d in dims]))
    for size in shape:
        out.tensor_shape.dim.add(size=size)
    out.tensor_shape.unknown_rank = one_in(draw, 20)
    count = elements(shape)
    known = tf_grpc_codec.DTYPES.get(out.dtype)
    mode = draw(st.sampled_from(["typed", "content", "typed", "none", "typed"]))
    if mode == "content":
        size = count * (known[0].itemsize if known else 4)
        out.tensor_content = draw(st.binary(max_size=20) if one_in(draw, 6) else st.binary(min_size=size, max_size=size))
    elif mode == "typed":
        field = known[1] if known else "float_val"
        if one_in(draw, 6):
            field = draw(st.sampled_from(list(TYPED_FIELDS)))
        size = draw(st.sampled_from([count, 1, 0, count + 1])) if one_in(draw, 4) else count
        getattr(out, field).extend(draw(st.lists(TYPED_FIELDS[field], min_size=size, max_size=size)))


@st.composite
def tf_predict_request(draw: st.DrawFn) -> bytes:
    message = tfspb.PredictRequest()
    message.model_spec.name = "iris"
    for name in draw(st.lists(st.sampled_from(["x", "inputs", "y"]) | texts, min_size=1, max_size=3, unique=True)):
        draw(tensor_proto(message.inputs[name]))
    if one_in(draw, 4):
        message.output_filter.extend(draw(st.lists(st.sampled_from(["predict", "predict_proba", "x"]), max_size=2)))
    return mutate(draw, message.SerializeToString())


@FUZZ
@given(data=tf_predict_request())
def test_tfserving_grpc_predict_decoder(iris_runtime: Runtime, data: bytes) -> None:
    split = attempt(tf_grpc_codec.split_predict, data)
    if split is None:
        return
    message, given_inputs = split
    tensors = []
    for key, proto, content in given_inputs:
        array = attempt(tf_grpc_codec.decode_tensor, proto, key, content)
        if array is None:
            return
        tensor = attempt(Tensor, key, array)
        if tensor is None:
            return
        tensors.append(tensor)
    if not tensors:
        return
    request = attempt(lambda: InferenceRequest(
        inputs=tensors, outputs=[RequestedOutput(n) for n in message.output_filter] or None))
    if request is not None:
        echo = run_and_echo(iris_runtime, request)
        attempt(tf_grpc_codec.encode_predict, message.model_spec, echo.outputs)


@st.composite
def tf_example(draw: st.DrawFn, out: Any) -> None:
    for name in draw(st.lists(st.sampled_from(["a", "b", "c"]), max_size=3, unique=True)):
        feature = out.features.feature[name]
        kind = draw(st.sampled_from(["float_list", "int64_list", "bytes_list", None]))
        if kind is None:
            continue
        element = {"float_list": st.floats(width=32), "int64_list": st.integers(-(2**63), 2**63 - 1),
                   "bytes_list": st.binary(max_size=4)}[kind]
        getattr(feature, kind).value.extend(draw(st.lists(element, max_size=3)))


@st.composite
def tf_classify_request(draw: st.DrawFn) -> bytes:
    message = tfspb.ClassificationRequest()
    message.model_spec.name = "iris"
    kind = draw(st.sampled_from(["example_list", "example_list_with_context", None]))
    if kind is not None:
        listed = getattr(message.input, kind)
        listed.SetInParent()
        for _ in range(draw(st.integers(0, 3))):
            draw(tf_example(listed.examples.add()))
        if kind == "example_list_with_context":
            draw(tf_example(listed.context))
    return mutate(draw, message.SerializeToString())


@FUZZ
@given(data=tf_classify_request(), inputs=st.sampled_from([["inputs"], ["a", "b"]]))
def test_tfserving_grpc_examples_decoder(iris_runtime: Runtime, data: bytes, inputs: list[str]) -> None:
    message = grpc_errors.deserializer(tfspb.ClassificationRequest)(data)
    if isinstance(message, grpc_errors.MalformedMessage):
        return
    found = attempt(tf_grpc_codec.examples, message.input)
    if found is not None:
        request = attempt(tf_codec.examples_request, found, inputs, {})
        if request is not None:
            run_and_echo(iris_runtime, request)


# -- Seldon -------------------------------------------------------------------------
@st.composite
def seldon_body(draw: st.DrawFn) -> bytes:
    form = draw(st.sampled_from(["ndarray", "tensor", "ndarray", "strData", "jsonData", "binData", "other"]))
    if form == "ndarray":
        data: dict[str, Any] = {"ndarray": draw(tf_value())}
        if draw(st.booleans()):
            data["names"] = draw(anything if one_in(draw, 5) else st.lists(texts, max_size=4))
        document: Any = {"data": data}
    elif form == "tensor":
        shape = draw(small_dims)
        values = draw(leaves_for("FP64", math.prod(shape) + (1 if one_in(draw, 10) else 0)))
        spec: dict[str, Any] = {"shape": draw(odd_dims | anything) if one_in(draw, 5) else shape,
                                "values": draw(anything) if one_in(draw, 5) else values}
        document = {"data": {"tensor": spec}}
    elif form == "binData":
        document = {"binData": draw(st.binary(max_size=8).map(lambda b: base64.b64encode(b).decode())
                                    | anything)}
    elif form == "other":
        document = draw(anything)
    else:
        document = {form: draw(anything)}
    if isinstance(document, dict) and one_in(draw, 5):
        document["meta"] = draw(st.fixed_dictionaries({"puid": texts}) | anything)
    return dump(document).encode()


@FUZZ
@given(body=seldon_body())
def test_seldon_decoder(iris_runtime: Runtime, body: bytes) -> None:
    document = attempt(v2_codec.loads, body)
    if document is None:
        return
    decoded = attempt(seldon.decode, document)
    if decoded is not None:
        request, form = decoded
        echo = run_and_echo(iris_runtime, request)
        attempt(seldon.encode, echo, form, "puid")


# -- TorchServe-style JSON (a model without a handler) -------------------------------
@st.composite
def torchserve_body(draw: st.DrawFn) -> bytes:
    if one_in(draw, 20):
        return draw(st.binary(max_size=40))
    value = draw(tf_value())
    key = draw(st.sampled_from([None, "data", "instances", "inputs", "other"]))
    return dump(value if key is None else {key: value}).encode()


@FUZZ
@given(body=torchserve_body())
def test_torchserve_numeric_request(iris_runtime: Runtime, body: bytes) -> None:
    request = attempt(numeric_request, body)
    if request is not None:
        run_and_echo(iris_runtime, request)


# -- found by fuzzing or in issue 10: each input gives a client error -------------------
def v2_document(data: Any, shape: list[int], datatype: str = "FP32", **extra: Any) -> dict[str, Any]:
    return {"inputs": [{"name": "x", "shape": shape, "datatype": datatype, "data": data}], **extra}


@pytest.mark.parametrize("document", [
    # more than 32 dimensions / deeper than numpy's iterators go
    v2_document(Nested(40, "a"), [1], "BYTES"),
    v2_document([], [0] + [1] * 40),
    v2_document(Nested(40, 1), [1], "INT32"),
    # zero elements, yet no array can have the shape
    v2_document([], [0, 2**62, 2**62]),
    v2_document([], [0, 2**63]),
    # an id that is no string (str() of a deep list recurses)
    v2_document([1], [1], id=Nested(1000, 1)),
    # BYTES elements that are JSON objects
    v2_document([{"a": Nested(900, 1)}], [1], "BYTES"),
    # integers past int64 where int64 is declared (read as floats by orjson)
    v2_document([2**63, -1], [2], "INT64"),
    # the same output twice
    v2_document([1, 2, 3, 4], [1, 4], outputs=[{"name": "predict"}, {"name": "predict"}]),
])
def test_v2_regressions(document: dict[str, Any]) -> None:
    with pytest.raises(ServekitError) as caught:
        v2_codec.decode_request(dump(document).encode(), {})
    client_error(caught.value)
    assert caught.value.status == 400


@pytest.mark.parametrize("size", [Nested(1000, 1), True, -1, "8", 9])
def test_v2_binary_data_size_that_is_no_size(size: Any) -> None:
    """A deep list as binary_data_size: repr() in the message recursed (found by make fuzz)."""
    header = dump({"inputs": [{"name": "x", "shape": [1], "datatype": "FP64",
                               "parameters": {"binary_data_size": size}}]}).encode()
    with pytest.raises(ServekitError, match="binary_data_size") as caught:
        v2_codec.decode_request(header + bytes(8), {v2_codec.HEADER_LENGTH: str(len(header))})
    client_error(caught.value)
    assert caught.value.status == 400
    assert len(caught.value.message) < 200


def test_v2_integers_past_int64_are_named_as_such() -> None:
    body = b'{"inputs":[{"name":"x","shape":[2],"datatype":"INT64","data":[9223372036854775808,-1]}]}'
    with pytest.raises(ServekitError, match="outside the range of INT64"):
        v2_codec.decode_request(body, {})


@pytest.mark.parametrize("document", [
    {"instances": Nested(1000, "a")},  # RecursionError before
    {"inputs": {"x": Nested(1000, "a")}},
    {"instances": Nested(1000, 1)},
    {"instances": [Nested(40, 1.5)]},
])
def test_tfserving_rest_regressions(document: dict[str, Any]) -> None:
    with pytest.raises(ServekitError, match="32") as caught:
        tf_codec.decode_predict(dump(document).encode())
    assert caught.value.status == 400


@pytest.mark.parametrize("document", [
    {"data": {"ndarray": Nested(300, 1)}},  # ragged/deep: orjson cannot write it back
    {"data": {"ndarray": Nested(40, "a")}},
    {"jsonData": Nested(300, 1)},
    {"data": {"tensor": {"shape": [2], "values": [1, "a"]}}},
    {"data": {"tensor": {"shape": [2], "values": [[1], [2, 3]]}}},
    {"data": {"tensor": {"shape": [0, 2**62, 2**62], "values": []}}},
    {"data": {"names": [Nested(900, 1)], "ndarray": [[1, 2]]}},
])
def test_seldon_regressions(document: dict[str, Any]) -> None:
    with pytest.raises(ServekitError) as caught:
        seldon.decode(v2_codec.loads(dump(document).encode()))
    client_error(caught.value)
    assert caught.value.status == 400


def test_tfserving_grpc_regressions() -> None:
    def proto(dtype: int, shape: list[int], **values: Any) -> Any:
        out = tfpb.TensorProto(dtype=dtype, **values)
        for size in shape:
            out.tensor_shape.dim.add(size=size)
        return out

    cases = [
        proto(tfpb.DT_INT8, [1], int_val=[300]),  # numpy: OverflowError
        proto(tfpb.DT_UINT8, [1], int_val=[-1]),
        proto(tfpb.DT_HALF, [1], half_val=[70000]),
        proto(tfpb.DT_FLOAT, [0, 2**62, 2**62]),  # zero elements, impossible shape
        proto(tfpb.DT_FLOAT, [1] * 40, float_val=[1.0]),
        proto(tfpb.DT_FLOAT, [2**20, 2**20], float_val=[1.0]),  # one value filling 4 TiB
    ]
    for case in cases:
        with pytest.raises(ServekitError) as caught:
            tf_grpc_codec.decode_tensor(case, "x")
        client_error(caught.value)
        assert caught.value.status == 400


def test_tabular_regressions(iris_runtime: Runtime) -> None:
    cases = [
        [Tensor("x", np.array(1.0))],  # shape []
        [Tensor("x", np.zeros((0, 2))), Tensor("y", np.array(1.0))],
    ]
    for inputs in cases:
        with pytest.raises(ServekitError, match=r"shape \[\]") as caught:
            iris_runtime.predict(InferenceRequest(inputs=inputs))
        assert caught.value.status == 400
    # two inputs of 0 rows make a table of 0 rows (numpy cannot infer -1 there)
    empty = [Tensor("x", np.zeros((0, 2))), Tensor("y", np.zeros((0, 1, 2)))]
    features = iris_runtime.features(InferenceRequest(inputs=empty))  # type: ignore[attr-defined]
    assert features.shape == (0, 4)


def test_grpc_deserializer_names_the_message() -> None:
    parsed = grpc_errors.deserializer(v2pb.ModelMetadataRequest)(b"\xff\xff\xff")
    assert isinstance(parsed, grpc_errors.MalformedMessage)
    assert parsed.message.startswith("the request is not a valid inference.ModelMetadataRequest message")
    ok = grpc_errors.deserializer(v2pb.ModelMetadataRequest)(v2pb.ModelMetadataRequest(name="m").SerializeToString())
    assert ok == v2pb.ModelMetadataRequest(name="m")


def test_fuzz_json_text_writer() -> None:
    """The helper that writes bodies: deep nesting as text, integers of any size."""
    assert dump({"a": [Nested(2, 1), 2**70]}) == '{"a":[[[1]],1180591620717411303424]}'
    assert nest([1, 2, 3, 4], [2, 2]) == [[1, 2], [3, 4]]
