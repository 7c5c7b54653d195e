"""V2 JSON and binary encoding of every datatype, both ways."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import orjson
import pytest

from servekit.errors import InvalidInput
from servekit.protocols import v2_codec
from servekit.tensors import DATATYPE_TO_DTYPE, InferenceResponse, Tensor

NUMERIC = [d for d in DATATYPE_TO_DTYPE if d not in ("BYTES",)]


def sample(datatype: str) -> np.ndarray:
    if datatype == "BOOL":
        return np.array([[True, False, True], [False, False, True]])
    dtype = DATATYPE_TO_DTYPE[datatype]
    if dtype.kind == "f":
        return np.array([[0.5, -1.25, 3.0], [1e-3, 2.5, -0.0]], dtype=dtype)
    low = 0 if dtype.kind == "u" else -3
    return np.array([[low, 1, 2], [3, 4, np.iinfo(dtype).max]], dtype=dtype)


@pytest.mark.parametrize("datatype", NUMERIC)
@pytest.mark.parametrize("nested", [True, False])
def test_json_input_each_datatype(datatype: str, nested: bool) -> None:
    array = sample(datatype)
    data = array.tolist() if nested else array.ravel().tolist()
    body = orjson.dumps({"inputs": [{"name": "x", "shape": [2, 3], "datatype": datatype, "data": data}]})
    request = v2_codec.decode_request(body, {})
    tensor = request.inputs[0]
    assert tensor.datatype == datatype
    assert tensor.data.dtype == DATATYPE_TO_DTYPE[datatype]
    np.testing.assert_array_equal(tensor.data, array)


@pytest.mark.parametrize("datatype", [*NUMERIC, "BYTES"])
def test_binary_input_and_output_each_datatype(datatype: str) -> None:
    if datatype == "BYTES":
        array = np.array([b"abc", b"", "é".encode(), b"\x00\xff"], dtype=object).reshape(2, 2)
        raw = b"".join(struct.pack("<I", len(v)) + v for v in array.ravel())
    else:
        array = sample(datatype)
        raw = array.astype(array.dtype.newbyteorder("<")).tobytes()
    header = orjson.dumps({
        "inputs": [{"name": "x", "shape": list(array.shape), "datatype": datatype,
                    "parameters": {"binary_data_size": len(raw)}}],
        "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
    })
    request = v2_codec.decode_request(header + raw, {"inference-header-content-length": str(len(header))})
    decoded = request.inputs[0].data
    assert decoded.shape == array.shape
    np.testing.assert_array_equal(decoded, array)
    if datatype != "BYTES":
        assert not decoded.flags.owndata  # a view on the body, not a copy

    response = InferenceResponse("m", [Tensor("y", decoded, datatype)], "1", "id-1")
    body, header_length = v2_codec.encode_response(response, request)
    assert header_length is not None
    out_header = orjson.loads(body[:header_length])
    assert out_header["outputs"][0]["parameters"]["binary_data_size"] == len(raw)
    assert body[header_length:] == raw


def test_json_output_of_every_datatype_is_flat() -> None:
    outputs = [Tensor(d.lower(), sample(d), d) for d in NUMERIC]
    outputs.append(Tensor("text", np.array([b"hello", b"w\xc3\xb6rld"], dtype=object), "BYTES"))
    body, header_length = v2_codec.encode_response(InferenceResponse("m", outputs, None, "x"))
    assert header_length is None
    document = orjson.loads(body)
    by_name = {o["name"]: o for o in document["outputs"]}
    for datatype in NUMERIC:
        out = by_name[datatype.lower()]
        assert out["shape"] == [2, 3] and out["datatype"] == datatype
        np.testing.assert_allclose(np.array(out["data"], dtype=np.float64), sample(datatype).ravel().astype(np.float64))
    assert by_name["text"]["data"] == ["hello", "wörld"]
    # no version and no parameters: left out, never null (the spec's schema has a string and an object)
    assert list(document) == ["model_name", "id", "outputs"]
    assert all("parameters" not in out for out in document["outputs"])


def test_bytes_from_json_strings() -> None:
    body = orjson.dumps({"inputs": [{"name": "t", "shape": [2], "datatype": "BYTES", "data": ["a", "bé"]}]})
    tensor = v2_codec.decode_request(body, {}).inputs[0]
    assert list(tensor.data) == [b"a", "bé".encode()]


def test_gzip_and_deflate_bodies() -> None:
    body = orjson.dumps({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.5]}]})
    for encoding, packed in (("gzip", gzip.compress(body)), ("deflate", __import__("zlib").compress(body))):
        request = v2_codec.decode_request(packed, {"content-encoding": encoding})
        assert request.inputs[0].data.tolist() == [1.5]
    with pytest.raises(InvalidInput, match="not valid gzip"):
        v2_codec.decode_request(b"nope", {"content-encoding": "gzip"})
    with pytest.raises(InvalidInput, match="unsupported Content-Encoding 'br'"):
        v2_codec.decode_request(body, {"content-encoding": "br"})


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"inputs": [{"name": "x", "shape": [-1], "datatype": "FP32", "data": [1]}]}, "non-negative integers"),
        ({"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [[1, 2], [3]]}]}, "ragged"),
        ({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32"}]}, "has no 'data'"),
        ({"inputs": [{"shape": [1], "datatype": "FP32", "data": [1]}]}, "needs a string 'name'"),
        ({"inputs": [{"name": "x", "shape": [1], "data": [1]}]}, "needs a 'datatype'"),
        ({"inputs": [{"name": "x", "shape": [1], "datatype": "BOOL", "data": [2.5]}]}, "declared BOOL"),
        ({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [None]}]}, "mixed values or nulls"),
        ({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}], "outputs": [{}]}, "string 'name'"),
        ({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}], "parameters": []}, "must be a JSON object"),
    ],
)
def test_malformed_requests(document: object, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        v2_codec.decode_request(orjson.dumps(document), {})


def test_numpy_content_type_outputs_are_columns_as_mlserver_answers() -> None:
    # MLServer's NumpyCodec answers a vector as [N, 1] with content_type np; other vectors keep their shape
    marked = Tensor("predict", np.array([0, 2], dtype=np.int64), parameters={"content_type": "np"})
    plain = Tensor("scores", np.array([0.5, 0.25]))
    matrix = Tensor("proba", np.array([[0.9, 0.1], [0.2, 0.8]]), parameters={"content_type": "np"})
    response = InferenceResponse(model_name="m", outputs=[marked, plain, matrix])
    body, _ = v2_codec.encode_response(response)
    outputs = {o["name"]: o for o in orjson.loads(body)["outputs"]}
    assert outputs["predict"] == {"name": "predict", "shape": [2, 1], "datatype": "INT64",
                                  "parameters": {"content_type": "np"}, "data": [0, 2]}
    assert outputs["scores"] == {"name": "scores", "shape": [2], "datatype": "FP64", "data": [0.5, 0.25]}
    assert outputs["proba"]["shape"] == [2, 2]
    # binary outputs say the same shape
    request = v2_codec.decode_request(
        b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1]}],'
        b' "parameters": {"binary_data_output": true}}', {})
    body, header = v2_codec.encode_response(response, request)
    assert header is not None
    assert orjson.loads(body[:header])["outputs"][0]["shape"] == [2, 1]
