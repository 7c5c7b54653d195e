"""The JSON number fast path: large numeric ``data`` arrays decode exactly as
orjson + ``np.asarray`` would, errors keep their messages, and a real server
answers such requests as before."""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import orjson
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from servers import ServerProcess
from sklearn.linear_model import LogisticRegression

from servekit.errors import InvalidInput
from servekit.protocols import json_numbers, v2_codec
from servekit.tensors import InferenceRequest

# Without a C compiler servekit installs without the extension; with one, a
# missing extension is a build problem these tests should show.
pytestmark = pytest.mark.skipif(
    not json_numbers.available() and not (shutil.which("cc") or shutil.which("gcc")),
    reason="no C compiler, so servekit._numbers was not built",
)


def test_the_extension_is_built() -> None:
    assert json_numbers.available(), "`pip install -e .` did not build servekit._numbers"

DATATYPES = [
    "FP64", "FP32", "FP16", "INT8", "INT16", "INT32", "INT64",
    "UINT8", "UINT16", "UINT32", "UINT64", "BOOL",
]
# request-level padding that lifts small requests over the fast path's threshold
PAD = {"pad": "x" * json_numbers.MIN_BODY}


def ordinary(body: bytes) -> InferenceRequest:
    """The path every body took before the fast path: orjson, then np.asarray."""
    return v2_codec.request_from_dict(v2_codec.loads(body))


def outcome(decode: Callable[[bytes], InferenceRequest], body: bytes) -> Any:
    try:
        # both paths cast the same way (FP32 overflow warns in both)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            request = decode(body)
    except InvalidInput as exc:
        return ("error", str(exc))
    return [
        # an object array's bytes are pointers: compare its values instead
        (t.name, t.datatype, t.data.dtype.str, t.data.shape,
         t.data.tolist() if t.data.dtype == object else t.data.tobytes(), t.parameters)
        for t in request.inputs
    ]


def fast(body: bytes) -> InferenceRequest:
    return v2_codec.decode_request(body, {})


def assert_same(body: bytes) -> None:
    assert outcome(fast, body) == outcome(ordinary, body)


def took_fast_path(body: bytes) -> bool:
    return json_numbers.loads_request(body) is not None


def request_body(inputs: list[dict[str, Any]], dumps: Callable[[Any], bytes] = orjson.dumps) -> bytes:
    return dumps({"id": "r1", "parameters": PAD, "inputs": inputs})


def nest(flat: list[Any], shape: list[int]) -> list[Any]:
    if len(shape) <= 1:
        return flat
    step = len(flat) // shape[0]
    return [nest(flat[i * step : (i + 1) * step], shape[1:]) for i in range(shape[0])]


# -- property: equivalence with the ordinary path ---------------------------
finite_floats = st.floats(allow_nan=False, allow_infinity=False)
int64s = st.integers(-(2**63), 2**63 - 1)
scalars = {
    "float": finite_floats,
    "small float": st.floats(-1e3, 1e3, allow_nan=False).map(lambda f: round(f, 3)),
    "whole float": st.integers(0, 255).map(float),
    "int": int64s,
    "pixel": st.integers(0, 255),
    "bool": st.booleans(),
    "mixed": st.one_of(finite_floats, int64s, st.booleans()),
}
serialisers: dict[str, Callable[[Any], bytes]] = {
    "orjson": orjson.dumps,
    "json": lambda d: json.dumps(d).encode(),
    "json-indent": lambda d: json.dumps(d, indent=1).encode(),
}


@st.composite
def numeric_inputs(draw: st.DrawFn) -> list[dict[str, Any]]:
    inputs = []
    for i in range(draw(st.integers(1, 3))):
        shape = draw(st.lists(st.integers(1, 4), min_size=1, max_size=3))
        size = int(np.prod(shape))
        values = draw(st.lists(draw(st.sampled_from(list(scalars.values()))), min_size=size, max_size=size))
        data = nest(values, shape) if draw(st.booleans()) else values
        inputs.append({"name": f"in{i}", "shape": shape, "datatype": draw(st.sampled_from(DATATYPES)), "data": data})
    return inputs


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(inputs=numeric_inputs(), serialiser=st.sampled_from(list(serialisers)))
def test_numeric_requests_decode_exactly_as_before(inputs: list[dict[str, Any]], serialiser: str) -> None:
    body = request_body(inputs, serialisers[serialiser])
    # UINT64 with float text goes the ordinary way (exact integers beyond int64)
    assert took_fast_path(body) or any(i["datatype"] == "UINT64" for i in inputs)
    assert_same(body)


@settings(max_examples=300, deadline=None)
@given(values=st.lists(finite_floats, min_size=1, max_size=50))
def test_floats_are_correctly_rounded(values: list[float]) -> None:
    body = orjson.dumps(values)
    out = np.empty(len(body) // 2 + 1)
    parsed = json_numbers._numbers.parse_array(body, 0, out)  # type: ignore[union-attr]
    assert parsed is not None
    assert out[: len(values)].tobytes() == np.asarray(values, dtype=np.float64).tobytes()


@settings(max_examples=300, deadline=None)
@given(
    digits=st.text("0123456789", min_size=1, max_size=25),
    point=st.integers(0, 25),
    exponent=st.integers(-330, 310),
    negative=st.booleans(),
)
def test_decimal_text_matches_orjson(digits: str, point: int, exponent: int, negative: bool) -> None:
    """Arbitrary decimal strings, not only what a serialiser writes."""
    digits = digits.lstrip("0") or "0"
    whole, fraction = digits[: point or None], digits[point:] if point else ""
    token = ("-" if negative else "") + whole + (f".{fraction}" if fraction else "") + f"e{exponent}"
    assert_same(request_body([{"name": "x", "shape": [1], "datatype": "FP64", "data": []}])
                .replace(b'"data":[]', b'"data":[' + token.encode() + b"]"))


@settings(max_examples=300, deadline=None)
@given(
    significand=st.integers(2**52, 2**53 - 1),
    scale=st.integers(1, 11),
    nudge=st.sampled_from([-1, 0, 1]),
    split=st.integers(0, 19),
)
def test_values_at_and_beside_midpoints_between_doubles(
    significand: int, scale: int, nudge: int, split: int
) -> None:
    """Decimal values exactly halfway between two doubles, and one unit off,
    written with up to 19 digits: where double rounding would go wrong."""
    midpoint = (2 * significand + 1) << (scale - 1)
    text = str(midpoint + nudge)
    split = min(split, len(text) - 1)
    token = f"{text[: len(text) - split]}.{text[len(text) - split :]}e{split}" if split else f"{text}.0"
    body = request_body([{"name": "x", "shape": [2], "datatype": "FP64", "data": [token, 0.5]}])
    body = body.replace(f'"{token}"'.encode(), token.encode())
    assert took_fast_path(body)
    assert_same(body)


MUTATION_BASE = orjson.dumps({
    "id": "m", "parameters": PAD,
    "inputs": [
        {"name": "a", "shape": [2, 3], "datatype": "FP32", "data": [[1, -2.5, 3e-05], [4, 5, 6]]},
        {"name": "b", "shape": [3], "datatype": "INT64", "parameters": {"k": "[\\\"]"}, "data": [7, 8, 9]},
    ],
})
ARRAYS_AT = MUTATION_BASE.index(b'"inputs"')


@settings(max_examples=500, deadline=None)
@given(
    position=st.integers(ARRAYS_AT, len(MUTATION_BASE) - 1),
    replacement=st.sampled_from([b"", b",", b"]", b"[", b"}", b"{", b'"', b"\\", b"-", b".", b"e",
                                 b"0", b"1", b" ", b"null", b"true", b"9" * 20, b"x"]),
    keep=st.booleans(),
)
def test_mutated_bodies_decode_or_fail_exactly_as_before(position: int, replacement: bytes, keep: bool) -> None:
    """One byte replaced by, or added before, a structural or numeric token:
    the result (values or error message) never differs from the ordinary path."""
    tail = MUTATION_BASE[position:] if keep else MUTATION_BASE[position + 1 :]
    assert_same(MUTATION_BASE[:position] + replacement + tail)


# -- targeted cases ----------------------------------------------------------
EDGE_TOKENS = [
    "-0.0", "-0", "0", "0.0", "1e-05", "1E5", "1e+05", "-1.5E-3", "5e-324", "2.2250738585072014e-308",
    "1.7976931348623157e308", "9007199254740993", "9007199254740993.0", "9007199254740995.0",
    "0.1", "0.30000000000000004", "123456789012345678", "1234567890123456789",
    "9223372036854775807", "-9223372036854775808", "0.000001234567890123456789",
    "100000000000000000000000", "1.00000000000000000000001", "1e-400", "4.35",
    "8.41e21", "1.448997445238699", "7.3177701707893310e15", "2.4703282292062328e-324",
]


@pytest.mark.parametrize("token", EDGE_TOKENS)
@pytest.mark.parametrize("datatype", ["FP64", "FP32", "INT64"])
def test_edge_tokens(token: str, datatype: str) -> None:
    for data in (f"[{token}]", f"[1.5, {token}]", f"[1, {token}]", f"[[{token}, {token}], [2, 3]]"):
        shape = [4] if data.count(",") == 3 else [data.count(",") + 1]
        body = request_body([{"name": "x", "shape": shape, "datatype": datatype, "data": 0}])
        assert_same(body.replace(b'"data":0', f'"data":{data}'.encode()))


def test_the_seed_request_shape_decodes_exactly() -> None:
    """The article's X_test.values.tolist(): pixel values written as floats."""
    rng = np.random.default_rng(3)
    for values in (rng.integers(0, 256, (500, 784)).astype(np.float64), rng.random((500, 784)),
                   rng.integers(0, 256, (500, 784))):
        body = orjson.dumps({"inputs": [{"name": "predict", "shape": [500, 784], "datatype": "FP64",
                                         "data": values.tolist()}]})
        assert took_fast_path(body)
        data = fast(body).inputs[0].data
        assert data.dtype == np.float64 and data.shape == (500, 784)
        assert data.tobytes() == values.astype(np.float64).tobytes()
        assert data.flags.writeable


def big(data: str, datatype: str = "FP32", shape: list[int] | None = None) -> bytes:
    body = request_body([{"name": "x", "shape": shape or [3], "datatype": datatype, "data": 0}])
    return body.replace(b'"data":0', f'"data":{data}'.encode())


@pytest.mark.parametrize(
    ("data", "datatype", "shape", "message"),
    [
        ("[1, 2]", "FP32", [3], "has shape [3] (3 elements) but its data holds 2 elements"),
        ('[1, "a", 3]', "FP32", [3], "is declared FP32 but its data holds strings"),
        ("[1, null, 3]", "FP32", [3], "is declared FP32 but its data holds mixed values or nulls"),
        ("[1.5, 2, 3]", "INT32", [3], "is declared INT32 but its data holds fractional numbers"),
        ("[1, 2, 300]", "UINT8", [3], "has values outside the range of UINT8"),
        ("[1, 2, 3]", "BOOL", [3], "is declared BOOL but its data holds int64"),
        ("[[1, 2], [3]]", "FP32", [3], "data is ragged or mixed"),
        ("[1, 2, 3,]", "FP32", [3], "request body is not valid JSON"),
        ("[1, 2, 1e400]", "FP64", [3], "request body is not valid JSON"),
        ("[1, 2, 01]", "FP64", [3], "request body is not valid JSON"),
        ("[1, 2, NaN]", "FP64", [3], "request body is not valid JSON"),
        ("[1, 2, 18446744073709551615]", "UINT64", [3], None),
        ("[1, 2, -9223372036854775809]", "FP64", [3], None),
        ("[[], []]", "FP32", [0], None),
        ("[]", "FP32", [0], None),
        ("[true, false, true]", "BOOL", [3], None),
        ("[true, 2, 3]", "INT8", [3], None),
        ('["a", "b", "c"]', "BYTES", [3], None),
        ("[1, 2, 3]", "BYTES", [3], None),
    ],
)
def test_errors_and_unusual_data_keep_the_ordinary_behaviour(
    data: str, datatype: str, shape: list[int], message: str | None
) -> None:
    body = big(data, datatype, shape)
    assert_same(body)
    result = outcome(fast, body)
    if message is None:
        assert result[0] != "error"
    else:
        assert result[0] == "error" and message in result[1]


def test_keys_that_orjson_reads_differently_fall_back() -> None:
    base = big("[1, 2, 3]")
    for body in (
        base.replace(b'"data":[1, 2, 3]', b'"data":[1, 2, 3],"data":[4, 5, 6]'),  # orjson keeps the last
        base.replace(b'"data":[1, 2, 3]', b'"d\\u0061ta":[1, 2, 3]'),
        base.replace(b'"inputs":', b'"inputs":[],"inputs":'),
        base.replace(b'"inputs":', b'"\\u0069nputs":'),
    ):
        assert not took_fast_path(body)
        assert_same(body)
    duplicate = base.replace(b'"data":[1, 2, 3]', b'"data":[1, 2, 3],"data":[4, 5, 6]')
    assert fast(duplicate).inputs[0].data.tolist() == [4, 5, 6]


def test_strings_around_the_arrays_are_left_to_orjson() -> None:
    tricky = {"note": 'has "data": [1, 2] and \\" and ] } inside', "list": [1, {"data": [9]}]}
    body = orjson.dumps({
        "id": 'x"]}', "parameters": {**PAD, **tricky},
        "inputs": [
            {"name": 'a"b', "parameters": tricky, "shape": [2, 2], "datatype": "FP64", "data": [[1, 2.5], [3, 4]]},
            {"name": "s", "shape": [1], "datatype": "BYTES", "data": ["[1, 2]"]},
        ],
        "outputs": [{"name": "data", "parameters": {"data": [1]}}],
    })
    assert_same(body)
    request = fast(body)
    assert request.inputs[0].data.tolist() == [[1.0, 2.5], [3.0, 4.0]]
    assert request.inputs[0].parameters == tricky and request.id == 'x"]}'
    assert request.outputs is not None and request.outputs[0].parameters == {"data": [1]}


def test_invalid_json_outside_the_arrays_is_still_rejected() -> None:
    body = big("[1, 2, 3]")
    for broken in (body[:-1], body + b"x", body.replace(b'"id":', b'"id" '), body.replace(b"{", b"[", 1)):
        with pytest.raises(InvalidInput, match=r"not valid JSON|JSON object"):
            fast(broken)


def test_small_bodies_and_binary_requests_skip_the_fast_path() -> None:
    small = orjson.dumps({"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1, 2]}]})
    assert not took_fast_path(small)
    assert fast(small).inputs[0].data.tolist() == [1.0, 2.0]
    header = orjson.dumps({"parameters": PAD, "inputs": [
        {"name": "x", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 8}}]})
    raw = np.array([1.5, 2.5], dtype="<f4").tobytes()
    request = v2_codec.decode_request(header + raw, {v2_codec.HEADER_LENGTH: str(len(header))})
    assert request.inputs[0].data.tolist() == [1.5, 2.5]


def test_without_the_extension_the_ordinary_path_decodes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(json_numbers, "_numbers", None)
    body = big("[1, 2, 3]")
    assert not took_fast_path(body)
    assert fast(body).inputs[0].data.tolist() == [1.0, 2.0, 3.0]


# -- a real server -----------------------------------------------------------
@pytest.fixture(scope="module")
def linear_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Any]]:
    root: Path = tmp_path_factory.mktemp("models")
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, (300, 784)).astype(np.float64)
    y = (X[:, :392].sum(axis=1) > X[:, 392:].sum(axis=1)).astype(int)
    model = LogisticRegression(max_iter=200).fit(X / 255, y)
    (root / "linear").mkdir()
    joblib.dump(model, root / "linear" / "model.joblib")
    (root / "linear" / "model-settings.json").write_text(json.dumps({
        "name": "linear", "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib"},
    }))
    with ServerProcess(["serve", str(root)]) as server:
        yield server, model


def test_server_answers_large_json_requests_exactly(linear_server: tuple[ServerProcess, Any]) -> None:
    server, model = linear_server
    rng = np.random.default_rng(1)
    for values in (rng.integers(0, 256, (2000, 784)).astype(np.float64) / 255, rng.random((2000, 784))):
        body = orjson.dumps({"inputs": [{"name": "predict", "shape": [2000, 784], "datatype": "FP64",
                                         "data": values.tolist()}]})
        assert took_fast_path(body)
        answer = requests.post(f"{server.url}/v2/models/linear/infer", data=body, timeout=60)
        assert answer.status_code == 200, answer.text
        outputs = answer.json()["outputs"]
        assert outputs[0]["shape"] == [2000, 1]
        assert outputs[0]["data"] == model.predict(values).tolist()


def test_server_keeps_its_error_messages_for_large_bodies(linear_server: tuple[ServerProcess, Any]) -> None:
    server, _ = linear_server
    rows = np.random.default_rng(2).random((100, 784)).tolist()
    cases = {
        "has shape [101, 784] (79184 elements) but its data holds 78400 elements": {"shape": [101, 784]},
        "is declared FP64 but its data holds strings": {"data": [*rows[:-1], ["a"] * 784]},
    }
    for message, change in cases.items():
        request = {"name": "predict", "shape": [100, 784], "datatype": "FP64", "data": rows, **change}
        answer = requests.post(f"{server.url}/v2/models/linear/infer",
                               data=orjson.dumps({"inputs": [request]}), timeout=60)
        assert answer.status_code == 400
        assert message in answer.json()["error"]
    truncated = orjson.dumps({"inputs": [{"name": "predict", "shape": [100, 784], "datatype": "FP64",
                                          "data": rows}]})[:-3]
    answer = requests.post(f"{server.url}/v2/models/linear/infer", data=truncated, timeout=60)
    assert answer.status_code == 400 and "not valid JSON" in answer.json()["error"]
    assert requests.get(f"{server.url}/v2/health/ready", timeout=10).status_code == 200


# -- the plain request: one input, built without request_from_dict -------------
def whole(decode: Callable[[bytes], InferenceRequest], body: bytes) -> Any:
    """outcome() and what it leaves out: the id, parameters and outputs."""
    result = outcome(decode, body)
    if isinstance(result, tuple):
        return result
    request = decode(body)
    outputs = None if request.outputs is None else [(o.name, o.parameters) for o in request.outputs]
    return result, request.id, request.parameters, outputs, request.deadline


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    datatype=st.sampled_from([*DATATYPES, "fp64", "Int64", "BYTES"]),
    values=st.sampled_from(["pixel", "small float", "bool", "int", "mixed", "strings", "ragged"]),
    count=st.sampled_from([4, 300]),  # a body orjson parses alone, and one json_numbers parses
    shape=st.sampled_from(["rows", "flat", "wrong", "zero", "negative", "not a list", "scalar"]),
    request_id=st.sampled_from(["absent", "r-1", "", None, 7, 1.5, ["x"], True]),
    extra=st.sampled_from([None, ("parameters", {}), ("parameters", {"content_type": "np"}),
                           ("outputs", [{"name": "predict"}]), ("top", "parameters")]),
    seed=st.integers(0, 2**16),
)
def test_plain_requests_decode_exactly_as_the_general_path(
    datatype: str, values: str, count: int, shape: str, request_id: Any, extra: Any, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    data: list[Any] = {
        "pixel": rng.integers(0, 256, count).tolist(),
        "small float": np.round(rng.normal(0, 100, count), 3).tolist(),
        "bool": rng.integers(0, 2, count).astype(bool).tolist(),
        "int": rng.integers(-(2**62), 2**62, count).tolist(),
        "mixed": [1.5, True] * (count // 2),
        "strings": ["a"] * count,
        "ragged": [[1.0], [2.0, 3.0]] * (count // 4),
    }[values]
    half = count // 2
    shapes: dict[str, Any] = {"rows": [2, half], "flat": [count], "wrong": [1, half], "zero": [0, count],
                              "negative": [-1, count], "not a list": str(count), "scalar": count}
    nested = shape == "rows" and values != "ragged"
    entry: dict[str, Any] = {"name": "x", "shape": shapes[shape], "datatype": datatype,
                             "data": nest(data, [2, half]) if nested else data}
    document: dict[str, Any] = {"inputs": [entry]}
    if request_id != "absent":
        document["id"] = request_id
    if extra is not None and extra[0] == "top":
        document["parameters"] = {"binary_data_output": False}
    elif extra is not None:
        entry[extra[0]] = extra[1]
    body = orjson.dumps(document)
    assert (len(body) >= json_numbers.MIN_BODY) == (count == 300)
    assert whole(fast, body) == whole(ordinary, body)


COMMONEST = [("FP64", list(range(256)) * 3), ("FP64", [p / 7 for p in list(range(256)) * 3]),
             ("INT64", list(range(256)) * 3), ("BOOL", [p % 2 == 0 for p in range(768)]),
             ("FP64", [5.1, 3.5, 1.4, 0.2]), ("INT64", [1, 2, 3, 4]), ("BOOL", [True, False, True, True])]


def commonest_requests() -> Any:
    for datatype, data in COMMONEST:
        size = len(data)
        yield {"inputs": [{"name": "a", "shape": [1, size], "datatype": datatype, "data": data}]}
        yield {"id": "q", "inputs": [{"name": "a", "shape": [size], "datatype": datatype, "data": data}]}


def assert_decoded(request: InferenceRequest, document: dict[str, Any]) -> None:
    entry = document["inputs"][0]
    assert request.inputs[0].data.tolist() == np.asarray(entry["data"]).reshape(entry["shape"]).tolist()
    assert request.inputs[0].data.flags.writeable  # as the general path's arrays: runtimes may write
    assert request.id == document.get("id") and request.parameters == {} and request.outputs is None


@pytest.mark.skipif(not json_numbers.available(), reason="the C extension was not built")
def test_the_commonest_requests_are_decoded_whole_in_c(monkeypatch: pytest.MonkeyPatch) -> None:
    taken = []
    whole_in_c = json_numbers.plain_input
    monkeypatch.setattr(json_numbers, "plain_input", lambda body: taken.append(whole_in_c(body)) or taken[-1])
    monkeypatch.setattr(v2_codec, "_plain_request", lambda document: pytest.fail("decoded twice"))
    for document in commonest_requests():
        request = v2_codec.decode_request(orjson.dumps(document), {})
        assert taken[-1] is not None and request.inputs[0].data is taken[-1][1]
        assert_decoded(request, document)
    assert len(taken) == 14


def test_without_the_extension_the_commonest_requests_take_the_plain_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(json_numbers, "_numbers", None)
    taken = []
    plain = v2_codec._plain_request
    monkeypatch.setattr(v2_codec, "_plain_request", lambda document: taken.append(plain(document)) or taken[-1])
    for document in commonest_requests():
        request = v2_codec.decode_request(orjson.dumps(document), {})
        entry = document["inputs"][0]
        # orjson's whole numbers are int64: for FP64 they are cast the general way
        assert (taken[-1] is request) == (np.asarray(entry["data"]).dtype != np.int64 or entry["datatype"] == "INT64")
        assert_decoded(request, document)
    assert len(taken) == 14


def json_text(value: Any, space: str) -> str:
    """``value`` as JSON text with ``space`` around every structural character."""
    if isinstance(value, dict):
        return "{" + space + ("," + space).join(
            f"{json_text(k, space)}{space}:{space}{json_text(v, space)}" for k, v in value.items()) + space + "}"
    if isinstance(value, list):
        return "[" + space + ("," + space).join(json_text(v, space) for v in value) + space + "]"
    if isinstance(value, Raw):
        return value.text
    return orjson.dumps(value).decode()


class Raw:
    """JSON text put into a document as it is (escapes, odd strings)."""

    def __init__(self, text: str) -> None:
        self.text = text


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    datatype=st.sampled_from(["FP64", "FP32", "INT64", "BOOL", "fp32", "INT32", "UINT8"]),
    values=st.sampled_from(["pixel", "float", "huge float", "bool", "int", "big int", "mixed", "bool and int"]),
    count=st.sampled_from([1, 4, 300]),
    order=st.permutations(["name", "shape", "datatype", "data"]),
    id_first=st.booleans(),
    request_id=st.sampled_from(["absent", "r-1", "", None, Raw('"\\u00e9"'), Raw('"a\\nb"'), "é"]),
    name=st.sampled_from(["x", "é", Raw('"a\\"b"'), Raw('"\\u0041"'), Raw('"tab\\t"'), ""]),
    space=st.sampled_from(["", " ", "\n\t ", "\r\n"]),
    oddity=st.sampled_from([None, "duplicate name", "duplicate data", "duplicate id", "duplicate inputs",
                            "trailing", "trailing space", "nul", "second input", "bom", "flat data",
                            "shape float", "shape zero", "shape huge", "no name", "no data"]),
    seed=st.integers(0, 2**16),
)
def test_whole_bodies_decode_in_c_exactly_as_the_general_path(
    datatype: str, values: str, count: int, order: list[str], id_first: bool, request_id: Any, name: Any,
    space: str, oddity: str | None, seed: int,
) -> None:
    rng = np.random.default_rng(seed)
    data: list[Any] = {
        "pixel": rng.integers(0, 256, count).tolist(),
        "float": rng.normal(0, 100, count).tolist(),
        "huge float": [1e39] * count,  # past float32
        "bool": rng.integers(0, 2, count).astype(bool).tolist(),
        "int": rng.integers(-(2**31), 2**31, count).tolist(),
        "big int": rng.integers(-(2**62), 2**62, count).tolist(),  # rounded by float casts
        "mixed": [2**60 + 1, 0.5] * (count // 2) + [3] * (count % 2),
        "bool and int": [True, 7] * (count // 2) + [False] * (count % 2),
    }[values]
    shape: Any = [count] if oddity == "flat data" else [1, count]
    shape = {"shape float": [1.0, count], "shape zero": [0, count], "shape huge": [2**40, 2**40, count]}.get(
        oddity or "", shape)
    fields: dict[str, Any] = {"name": name, "shape": shape, "datatype": datatype,
                              "data": data if oddity == "flat data" else [data]}
    entry = {key: fields[key] for key in order if (oddity or "") != f"no {key}"}
    inputs: list[Any] = [entry, entry] if oddity == "second input" else [entry]
    document: dict[str, Any] = {}
    if id_first and request_id != "absent":
        document["id"] = request_id
    document["inputs"] = inputs
    if not id_first and request_id != "absent":
        document["id"] = request_id
    text = json_text(document, space)
    duplicate = {"duplicate name": ('"name"', '"name":"y","name"'), "duplicate data": ('"data"', '"data":[1],"data"'),
                 "duplicate id": ('"inputs"', '"id":"z","id":"w","inputs"'),
                 "duplicate inputs": ('"inputs"', '"inputs":[],"inputs"')}.get(oddity or "")
    if duplicate is not None:
        text = text.replace(*duplicate, 1)
    text += {"trailing": "x", "trailing space": " \n", "nul": "\0"}.get(oddity or "", "")
    body = ("\ufeff" if oddity == "bom" else "").encode() + text.encode()
    assert whole(fast, body) == whole(ordinary, body)


@pytest.mark.skipif(not json_numbers.available(), reason="the C extension was not built")
def test_what_the_whole_decode_takes_and_leaves() -> None:
    def taken(text: str) -> bool:
        return json_numbers.plain_input(text.encode()) is not None

    entry = '"name":"x","shape":[2],"datatype":"{}","data":{}'
    assert taken('{"inputs":[{' + entry.format("FP64", "[1,2]") + '}]}')
    assert taken(' {"id" : null , "inputs":[ {' + entry.format("FP32", "[1.5,2]") + '} ] }\n')
    assert taken('{"inputs":[{' + entry.format("BOOL", "[true,false]") + '}],"id":"r"}')
    assert taken('{"inputs":[{' + entry.format("INT64", "[[1],[2]]") + '}]}')
    for other in ['{"inputs":[{' + entry.format("INT64", "[1.5,2]") + '}]}',  # the general path's error
                  '{"inputs":[{' + entry.format("BOOL", "[1,0]") + '}]}',
                  '{"inputs":[{' + entry.format("FP32", "[1e39,0]") + '}]}',
                  '{"inputs":[{' + entry.format("FP64", "[1,2,3]") + '}]}',
                  '{"inputs":[{' + entry.format("FP16", "[1,2]") + '}]}',
                  '{"inputs":[{' + entry.format("FP64", "[1,2]") + ',"parameters":{}}]}',
                  '{"inputs":[{' + entry.format("FP64", "[1,2]") + '}],"outputs":[]}',
                  '{"inputs":[{' + entry.format("FP64", "[1,2]") + '}],"id":7}',
                  '{"inputs":[{' + entry.format("FP64", '["1",2]') + '}]}',
                  '{"inputs":[{' + entry.format("FP64", "[1,2]") + '}]',
                  '[{' + entry.format("FP64", "[1,2]") + '}]',
                  *('{"inputs":[{' + entry.replace("[2]", shape).format("FP64", "[1,2]") + '}]}'
                    for shape in ["[02]", "[2.0]", "[2e0]", "[-2]", "[]", "[1,3]", "[" + "9" * 19 + "]"])]:
        assert not taken(other), other
    assert json_numbers.plain_input(memoryview(b'{"inputs":[]}')) is None


# -- runs of whole numbers (int_run: one 8-byte load per number) ---------------
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    numbers=st.lists(st.one_of(st.integers(0, 9_999_999), st.integers(10_000_000, 10**12),
                               st.integers(-1000, -1), st.sampled_from(["0", "00", "01", "007", "1.5", "2e3", "-0"])),
                     min_size=1, max_size=40),
    separators=st.lists(st.sampled_from([",", ", ", ",  ", ",\n", " ,", ",\t", ",\r", ",\x0c", ",\x01"]),
                        min_size=1, max_size=4),
    rows=st.sampled_from([1, 2]),
    datatype=st.sampled_from(["FP64", "INT64", "FP32"]),
    pad=st.integers(0, 9),
)
def test_runs_of_whole_numbers_decode_as_the_general_path(numbers: list[Any], separators: list[str], rows: int,
                                                          datatype: str, pad: int) -> None:
    """Whole numbers of every length, leading zeros, signs, a float inside a
    run, separators with any whitespace, rows and the end of the body within
    8 bytes of the last number: text built by hand, decoded as orjson decodes
    it (or refused alike)."""
    texts = [str(n) for n in numbers] * rows
    data = "".join(text + (separators[i % len(separators)] if i < len(texts) - 1 else "")
                   for i, text in enumerate(texts))
    if rows == 2:
        cut = len(numbers)
        pieces = texts[:cut], texts[cut:]
        data = "],[".join(", ".join(piece) for piece in pieces)
        data = f"[[{data}]]"
        shape = [2, len(numbers)]
    else:
        data = f"[{data}]"
        shape = [len(numbers)]
    entry = f'{{"name":"x","shape":{orjson.dumps(shape).decode()},"datatype":"{datatype}","data":{data}}}'
    body = f'{{"inputs":[{entry}]}}{" " * pad}'.encode()
    assert whole(fast, body) == whole(ordinary, body)
    padded = body[:-1 - pad] + b',"pad":"' + b"x" * json_numbers.MIN_BODY + b'"}'  # a body the array parser reads
    assert outcome(fast, padded) == outcome(ordinary, padded)


# -- int_run's 64-byte windows (int_run_wide: the text of a window checked at once) --
DEFECTS = ["0", "00", "01", "0007", "12345678", "123456789", "1.5", "-3", "2e3", "true", "null", '"7"', "[1]", "1 "]
SEPARATORS_OF_DEFECTS = [",  ", " ,", ",\t", ",\n", ",,", ",\r\n", ", ,"]


def check_run(texts: list[str], separators: list[str], lead: str = "") -> np.ndarray | None:
    """The run's body decodes as orjson decodes it, or is refused alike, by
    both C readers (the general decode's, on a body long enough for it, and the
    plain lane's); the plain lane's array, or None when it did not take it."""
    data = lead + "".join(text + (separators[i] if i < len(texts) - 1 else "") for i, text in enumerate(texts))
    entry = f'{{"name":"x","shape":[{len(texts)}],"datatype":"INT64","data":[{data}]}}'
    body = f'{{"inputs":[{entry}]}}'.encode()
    padded = body[:-1] + b',"pad":"' + b"x" * json_numbers.MIN_BODY + b'"}'
    expected = outcome(ordinary, padded)
    assert outcome(fast, padded) == expected
    found = json_numbers.plain_input(body)
    if found is None:
        return None
    array = found[1]
    assert not isinstance(expected, tuple)  # taken only when the general path decodes it
    assert array.dtype == np.int64 and array.tolist() == ordinary(body).inputs[0].data.tolist()
    return array


def test_a_defect_anywhere_in_a_long_run_decodes_as_the_general_path() -> None:
    """A long run of small numbers (many windows) with one defect (a leading
    zero, 8 or 9 digits, a float, a sign, another token, a separator other than
    ', ' or ',') at every third place and two alignments: each body decodes as
    orjson decodes it, or is refused alike; without one, the plain lane takes it."""
    base = [str((i * 37) % 1000) for i in range(120)]
    for lead in ["", " "]:
        array = check_run(base, [", "] * 119, lead)
        assert array is not None and array.tolist() == [int(t) for t in base]
        for at in range(0, 120, 3):
            for defect in DEFECTS:
                check_run([*base[:at], defect, *base[at + 1:]], [", " if i % 5 else "," for i in range(119)], lead)
            for separator in SEPARATORS_OF_DEFECTS:
                separators = [","] * 119
                separators[min(at, 118)] = separator
                check_run(base, separators, lead)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    numbers=st.lists(st.one_of(st.integers(0, 999), st.integers(0, 99_999_999), st.sampled_from(DEFECTS)),
                     min_size=20, max_size=200),
    spaced=st.lists(st.booleans(), min_size=1, max_size=7),
    lead=st.sampled_from(["", " ", "\n"]),
)
def test_long_runs_of_small_numbers_decode_as_the_general_path(numbers: list[Any], spaced: list[bool],
                                                                  lead: str) -> None:
    texts = [str(n) for n in numbers]
    array = check_run(texts, [", " if spaced[i % len(spaced)] else "," for i in range(len(texts) - 1)], lead)
    if all(isinstance(n, int) for n in numbers):
        assert array is not None and array.tolist() == numbers
