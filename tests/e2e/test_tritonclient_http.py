"""The official tritonclient HTTP client against servekit, JSON and binary tensors."""

from __future__ import annotations

import numpy as np
import pytest
import requests
import tritonclient.http as httpclient
from servers import ServerProcess
from tritonclient.utils import InferenceServerException


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(url=f"127.0.0.1:{server.http_port}")


def test_liveness_and_metadata(client: httpclient.InferenceServerClient) -> None:
    assert client.is_server_live()
    meta = client.get_server_metadata()
    assert meta["name"] == "servekit"
    model = client.get_model_metadata("logistic", "1")
    assert model["name"] == "logistic"
    assert model["inputs"][0]["shape"] == [-1, 784]
    assert client.is_model_ready("logistic", "2")
    assert not client.is_model_ready("broken")


@pytest.mark.parametrize("binary", [False, True])
def test_infer_matches_model(client: httpclient.InferenceServerClient, repository, test_set, binary: bool) -> None:
    import joblib

    X, _ = test_set
    x = (X.values[:7] / 255).astype(np.float32)
    inp = httpclient.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    outputs = [
        httpclient.InferRequestedOutput("predict", binary_data=binary),
        httpclient.InferRequestedOutput("predict_proba", binary_data=binary),
    ]
    result = client.infer("logistic", [inp], model_version="1", outputs=outputs, request_id="req-1")
    model = joblib.load(repository / "logistic" / "1" / "model.joblib")
    np.testing.assert_array_equal(result.as_numpy("predict"), model.predict(x).reshape(-1, 1))  # a column, as MLServer answers
    np.testing.assert_allclose(result.as_numpy("predict_proba"), model.predict_proba(x), rtol=1e-12)
    response = result.get_response()
    assert response["id"] == "req-1"
    assert response["model_version"] == "1"
    if binary:
        assert "binary_data_size" in response["outputs"][0]["parameters"]


def test_binary_input_fp64_whole_article_request(client: httpclient.InferenceServerClient, repository, test_set) -> None:
    import joblib

    X, _ = test_set
    inp = httpclient.InferInput("predict", list(X.shape), "FP64")
    inp.set_data_from_numpy(X.values.astype(np.float64), binary_data=True)
    result = client.infer("fashion-sklearn", [inp], model_version="v1")
    model = joblib.load(repository / "sklearn" / "Fashion_MNIST.joblib")
    np.testing.assert_array_equal(result.as_numpy("predict"), model.predict(X.values).reshape(-1, 1))


def test_binary_output_by_request_parameter(server: ServerProcess) -> None:
    body = b'{"inputs":[{"name":"x","shape":[2,784],"datatype":"FP32","data":' + str([0.5] * 1568).encode() + b'}],"parameters":{"binary_data_output":true}}'
    r = requests.post(f"{server.url}/v2/models/logistic/versions/1/infer", data=body)
    assert r.status_code == 200
    length = int(r.headers["Inference-Header-Content-Length"])
    import json

    header = json.loads(r.content[:length])
    [out] = header["outputs"]
    assert out["parameters"]["binary_data_size"] == 16 and "data" not in out
    labels = np.frombuffer(r.content[length:], dtype="<i8")
    assert labels.shape == (2,)


def test_bytes_tensor_binary_round_trip_errors(client: httpclient.InferenceServerClient) -> None:
    # a BYTES input to a numeric model is refused with a clear message, over binary too
    inp = httpclient.InferInput("x", [2], "BYTES")
    inp.set_data_from_numpy(np.array([b"ab", b"c"], dtype=object), binary_data=True)
    with pytest.raises(InferenceServerException, match="takes numeric features, not BYTES"):
        client.infer("logistic", [inp], model_version="1")


def test_bad_binary_size_is_400(server: ServerProcess) -> None:
    header = b'{"inputs":[{"name":"x","shape":[1,784],"datatype":"FP32","parameters":{"binary_data_size":3136}}]}'
    r = requests.post(
        f"{server.url}/v2/models/logistic/versions/1/infer",
        data=header + b"\x00" * 100,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert r.status_code == 400
    assert "binary_data_size 3136 runs past the body" in r.json()["error"]
