"""The first seed article's flow, and the whole V2 REST protocol, against a real process."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pandas as pd
import pytest
import requests
from servers import ServerProcess


def article_request(X_test: pd.DataFrame) -> dict[str, object]:
    # exactly the article's request: shape from the DataFrame, FP64, nested lists of ints
    return {
        "inputs": [
            {
                "name": "predict",
                "shape": X_test.shape,
                "datatype": "FP64",
                "data": X_test.values.tolist(),
            }
        ]
    }


def test_article_single_row_sklearn(server: ServerProcess, test_set: tuple[pd.DataFrame, pd.Series]) -> None:
    X, _ = test_set
    X_test = X[0:1]
    endpoint = f"{server.url}/v2/models/fashion-sklearn/versions/v1/infer"
    response = requests.post(endpoint, json=article_request(X_test))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_name"] == "fashion-sklearn"
    assert body["model_version"] == "v1"
    assert isinstance(body["id"], str) and len(body["id"]) == 36
    assert "parameters" not in body  # none: left out, never null
    [output] = body["outputs"]
    assert output["name"] == "predict"
    assert output["shape"] == [1, 1]  # a column, as MLServer answers
    assert output["datatype"] == "INT64"
    assert output["parameters"] == {"content_type": "np"}  # MLServer's NumpyCodec
    assert len(output["data"]) == 1 and isinstance(output["data"][0], int)


def test_article_whole_test_set_accuracy(server: ServerProcess, repository, test_set) -> None:
    import joblib
    import xgboost as xgb

    X_test, y_test = test_set
    request = article_request(X_test)
    expected = {
        "fashion-sklearn": joblib.load(repository / "sklearn" / "Fashion_MNIST.joblib").predict(X_test.values),
        "fashion-xgboost": xgb.Booster(model_file=str(repository / "xgboost" / "Fashion_MNIST.json"))
        .predict(xgb.DMatrix(X_test.values)).astype(int),
    }
    for model_name in ("fashion-xgboost", "fashion-sklearn"):
        endpoint = f"{server.url}/v2/models/{model_name}/versions/v1/infer"
        response = requests.post(endpoint, json=request)
        predictions = json.loads(response.text)["outputs"][0]["data"]
        assert len(predictions) == len(y_test)
        assert predictions == expected[model_name].tolist()
        correct = sum(1 for i, p in enumerate(predictions) if y_test[i] == p)
        assert correct / len(y_test) > 0.9


def test_multi_model_discovery_and_index(server: ServerProcess) -> None:
    index = requests.post(f"{server.url}/v2/repository/index", json={}).json()
    states = {(row["name"], row["version"]): row["state"] for row in index}
    assert states[("fashion-sklearn", "v1")] == "READY"
    assert states[("fashion-xgboost", "v1")] == "READY"
    assert states[("logistic", "1")] == "READY"
    assert states[("logistic", "2")] == "READY"
    assert states[("bare-forest", "")] == "READY"
    broken = next(row for row in index if row["name"] == "broken")
    assert broken["state"] == "UNAVAILABLE"
    assert "Fashion" not in broken["reason"] and "model.joblib" in broken["reason"]
    ready_only = requests.post(f"{server.url}/v2/repository/index", json={"ready": True}).json()
    assert all(row["state"] == "READY" for row in ready_only)
    assert "broken" not in {row["name"] for row in ready_only}
    assert "Could not load model 'broken'" in server.log()
    assert "Loaded model 'fashion-sklearn' version v1 in" in server.log()


def test_versions_newest_by_default(server: ServerProcess, repository, test_set) -> None:
    import joblib

    X, _ = test_set
    body = {"inputs": [{"name": "x", "shape": [5, 784], "datatype": "FP32", "data": (X.values[:5] / 255).ravel().tolist()}],
            "outputs": [{"name": "predict_proba"}]}
    answers = {}
    for version in ("1", "2"):
        r = requests.post(f"{server.url}/v2/models/logistic/versions/{version}/infer", json=body)
        assert r.status_code == 200, r.text
        answers[version] = np.array(r.json()["outputs"][0]["data"]).reshape(5, 10)
        model = joblib.load(repository / "logistic" / version / "model.joblib")
        np.testing.assert_allclose(answers[version], model.predict_proba((X.values[:5] / 255).astype(np.float32)), rtol=1e-6)
    assert not np.allclose(answers["1"], answers["2"])
    default = requests.post(f"{server.url}/v2/models/logistic/infer", json=body).json()
    assert default["model_version"] == "2"
    np.testing.assert_allclose(np.array(default["outputs"][0]["data"]).reshape(5, 10), answers["2"])
    meta = requests.get(f"{server.url}/v2/models/logistic").json()
    assert meta["versions"] == ["1", "2"]
    assert meta["platform"] == "sklearn"
    assert meta["inputs"][0]["shape"] == [-1, 784]
    outputs = {o["name"]: o for o in meta["outputs"]}
    assert outputs["predict_proba"]["shape"] == [-1, 10]
    assert outputs["predict"]["datatype"] == "INT64"


def test_health_and_server_metadata(server: ServerProcess) -> None:
    assert requests.get(f"{server.url}/v2/health/live").json() == {"live": True}
    # the broken model keeps the server from being fully ready, with the reason
    ready = requests.get(f"{server.url}/v2/health/ready")
    assert ready.status_code == 503 and "broken" in ready.json()["error"]
    meta = requests.get(f"{server.url}/v2").json()
    assert meta["name"] == "servekit"
    assert "binary_tensor_data" in meta["extensions"]
    r = requests.get(f"{server.url}/v2/models/fashion-sklearn/versions/v1/ready")
    assert r.status_code == 200 and r.json()["ready"] is True
    r = requests.get(f"{server.url}/v2/models/broken/ready")
    assert r.status_code == 503 and "UNAVAILABLE" in r.json()["error"]


@pytest.mark.parametrize(
    ("path", "body", "status", "fragment"),
    [
        ("/v2/models/nope/infer", {"inputs": []}, 404, "model 'nope' not found"),
        ("/v2/models/logistic/versions/9/infer", None, 404, "no version '9'"),
        ("/v2/models/logistic/infer", b"{not json", 400, "not valid JSON"),
        ("/v2/models/logistic/infer", {"inputs": [{"name": "x", "shape": [1, 784], "datatype": "FP99", "data": [0] * 784}]}, 400, "unknown datatype 'FP99'"),
        ("/v2/models/logistic/infer", {"inputs": [{"name": "x", "shape": [2, 784], "datatype": "FP32", "data": [0] * 784}]}, 400, "shape [2, 784] (1568 elements) but its data holds 784"),
        ("/v2/models/logistic/infer", {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}, 400, "expects 784 features per row, got 3"),
        ("/v2/models/logistic/infer", {"inputs": [{"name": "x", "shape": [1, 784], "datatype": "FP32", "data": [0] * 784}], "outputs": [{"name": "embedding"}]}, 400, "no output 'embedding'; available: predict"),
        ("/v2/models/logistic/infer", {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "INT64", "data": [1.5, 2]}]}, 400, "declared INT64 but its data holds fractional numbers"),
        ("/v2/models/logistic/infer", {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": ["a", "b"]}]}, 400, "holds strings"),
        ("/v2/models/logistic/infer", {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "UINT8", "data": [1, 300]}]}, 400, "outside the range of UINT8"),
        ("/v2/models/logistic/infer", {"inputs": "x"}, 400, "non-empty 'inputs' list"),
        ("/v2/models/bare-forest/infer", {"inputs": [{"name": "x", "shape": [1, 784], "datatype": "FP64", "data": [0] * 784}], "outputs": [{"name": "predict_proba"}]}, 400, "no output 'predict_proba'"),
        ("/v2/models/broken/infer", {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}, 503, "no ready version"),
    ],
)
def test_errors(server: ServerProcess, path: str, body: object, status: int, fragment: str) -> None:
    if body is None:
        body = {"inputs": [{"name": "x", "shape": [1, 784], "datatype": "FP32", "data": [0] * 784}]}
    if isinstance(body, bytes):
        r = requests.post(server.url + path, data=body)
    else:
        r = requests.post(server.url + path, json=body)
    assert r.status_code == status, r.text
    assert fragment in r.json()["error"], r.json()
    assert "Traceback" not in r.text
    # and the server keeps serving
    assert requests.get(f"{server.url}/v2/health/live").status_code == 200


def test_payload_too_large_refused_before_reading(server: ServerProcess) -> None:
    big = b"0" * (9 * 1024 * 1024)
    r = requests.post(f"{server.url}/v2/models/logistic/infer", data=big)
    assert r.status_code == 413
    assert "exceeds the limit" in r.json()["error"]


def test_request_id_parameters_and_outputs(server: ServerProcess) -> None:
    body = {
        "id": "my-request-7",
        "parameters": {"custom": "value"},
        "inputs": [{"name": "x", "shape": [2, 784], "datatype": "FP64", "data": [[0.1] * 784, [0.9] * 784]}],
        "outputs": [{"name": "predict"}, {"name": "predict_proba"}],
    }
    r = requests.post(f"{server.url}/v2/models/logistic/versions/1/infer", json=body).json()
    assert r["id"] == "my-request-7"
    assert [o["name"] for o in r["outputs"]] == ["predict", "predict_proba"]
    assert r["outputs"][0]["shape"] == [2, 1] and r["outputs"][1]["shape"] == [2, 10]
    assert r["outputs"][1]["datatype"] == "FP64"
    assert abs(sum(r["outputs"][1]["data"][:10]) - 1.0) < 1e-9


def test_gzip_request_and_response(server: ServerProcess) -> None:
    body = json.dumps({"inputs": [{"name": "x", "shape": [60, 784], "datatype": "FP32", "data": [0.5] * (60 * 784)}],
                       "outputs": [{"name": "predict_proba"}]}).encode()
    r = requests.post(
        f"{server.url}/v2/models/logistic/infer",
        data=gzip.compress(body),
        headers={"Content-Encoding": "gzip", "Accept-Encoding": "gzip"},
    )
    assert r.status_code == 200, r.text
    assert r.headers["Content-Encoding"] == "gzip"
    assert r.json()["outputs"][0]["shape"] == [60, 10]


def test_repository_unload_and_load(server: ServerProcess) -> None:
    body = {"inputs": [{"name": "x", "shape": [1, 784], "datatype": "FP64", "data": [0] * 784}]}
    r = requests.post(f"{server.url}/v2/repository/models/fashion-xgboost/unload")
    assert r.status_code == 200 and r.json()["state"] == "UNLOADED"
    r = requests.post(f"{server.url}/v2/models/fashion-xgboost/infer", json=body)
    assert r.status_code == 404 and "not found" in r.json()["error"]
    index = requests.post(f"{server.url}/v2/repository/index", json={}).json()
    assert {"name": "fashion-xgboost", "version": "v1", "state": "UNAVAILABLE", "reason": "unloaded"} in index
    r = requests.post(f"{server.url}/v2/repository/models/fashion-xgboost/load")
    assert r.status_code == 200 and r.json()["versions"] == ["v1"]
    r = requests.post(f"{server.url}/v2/models/fashion-xgboost/infer", json=body)
    assert r.status_code == 200 and r.json()["outputs"][0]["datatype"] == "INT64"
    r = requests.post(f"{server.url}/v2/repository/models/unknown-model/load")
    assert r.status_code == 404 and "no model named 'unknown-model'" in r.json()["error"]


def test_metrics(server: ServerProcess) -> None:
    body = {"inputs": [{"name": "x", "shape": [1, 784], "datatype": "FP64", "data": [0] * 784}]}
    requests.post(f"{server.url}/v2/models/logistic/versions/1/infer", json=body)
    requests.post(f"{server.url}/v2/models/logistic/versions/1/infer", json={"inputs": 1})
    text = requests.get(f"http://127.0.0.1:{server.metrics_port}/metrics").text
    assert 'servekit_model_requests_total{model="logistic",protocol="v2",version="1"}' in text
    assert 'servekit_model_request_failures_total{model="logistic",protocol="v2",status="400",version="1"}' in text
    assert "servekit_model_request_duration_seconds_bucket" in text


def test_statistics_extension(server: ServerProcess) -> None:
    body = {"inputs": [{"name": "x", "shape": [1, 784], "datatype": "FP64", "data": [0] * 784}]}
    for _ in range(3):
        requests.post(f"{server.url}/v2/models/fashion-sklearn/infer", json=body)
    stats = requests.get(f"{server.url}/v2/models/fashion-sklearn/stats").json()["model_stats"][0]
    assert stats["name"] == "fashion-sklearn" and stats["version"] == "v1"
    assert stats["inference_count"] >= 3
    assert stats["inference_stats"]["success"]["count"] >= 3
    assert stats["inference_stats"]["compute_infer"]["ns"] > 0


def test_access_log_behind_a_flag(repository, server: ServerProcess) -> None:  # type: ignore[no-untyped-def]
    body = {"inputs": [{"name": "x", "shape": [1, 784], "datatype": "FP64", "data": [0] * 784}]}
    with ServerProcess(["serve", str(repository), "--access-log", "--no-enable-grpc"]) as proc:
        r = requests.post(f"{proc.url}/v2/models/logistic/versions/1/infer", json=body)
        assert r.status_code == 200
        requests.get(f"{proc.url}/v2/models/nope")
        requests.get(f"{proc.url}/v2/models/x%0AFAKE%20LINE")
        import time

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and "FAKE LINE" not in proc.log():
            time.sleep(0.1)
        log = proc.log()
    assert '"POST /v2/models/logistic/versions/1/infer" 200' in log
    assert '"GET /v2/models/nope" 404' in log
    # a newline in the path stays inside its own line, escaped
    assert '"GET /v2/models/x\\nFAKE LINE" 404' in log
    assert not any(line.startswith("FAKE") for line in log.splitlines())
    assert '"POST /v2/models' not in server.log()  # off by default
