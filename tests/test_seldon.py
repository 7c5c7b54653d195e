"""Seldon Core's microservice API: the article's class and curl call, every
payload form, meta, errors in Seldon's format, and a class from a repository."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from servers import ServerProcess

MY_MODEL = '''
import logging

import numpy as np


class MyModel(object):
    def __init__(self):
        self.loaded = False
        logging.info("MyModel created")

    def load(self):
        self.loaded = True

    def predict(self, X, features_names=None):
        if isinstance(X, np.ndarray) and X.dtype.kind in "iuf" and X.size and X.max() > 1000:
            raise ValueError("values above 1000 are not supported")
        if isinstance(X, dict):
            return {"echo": X, "names": features_names or []}
        if isinstance(X, bytes):
            return X[::-1]
        return X
'''

IRIS_MODEL = '''
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression


class IrisModel:
    def __init__(self, C=1.0):
        data = load_iris()
        self.model = LogisticRegression(C=C, max_iter=500).fit(data.data, data.target)
        self.calls = 0

    def predict(self, X, features_names):
        self.calls += 1
        return self.model.predict_proba(X)

    def class_names(self):
        return ["setosa", "versicolor", "virginica"]

    def tags(self):
        return {"model": "iris"}

    def metrics(self):
        return [{"type": "COUNTER", "key": "calls", "value": self.calls}]
'''


@pytest.fixture(scope="module")
def microservice(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("seldon")
    (folder / "MyModel.py").write_text(MY_MODEL)
    with ServerProcess(["microservice", "MyModel", "--service-type", "MODEL"], cwd=folder) as server:
        yield server


def test_article_curl(microservice: ServerProcess) -> None:
    # curl -X POST http://127.0.0.1:9000/predict -H 'Content-Type: application/json'
    #     -d '{"data": {"ndarray":[[0, 0, 0, 0, 0, 0, 0, 0, 0]]}}'
    answer = requests.post(f"{microservice.url}/predict", headers={"Content-Type": "application/json"},
                           data='{"data": {"ndarray":[[0, 0, 0, 0, 0, 0, 0, 0, 0]]}}', timeout=10)
    assert answer.status_code == 200
    assert answer.json() == {
        "data": {"names": ["t:0", "t:1", "t:2", "t:3", "t:4", "t:5", "t:6", "t:7", "t:8"],
                 "ndarray": [[0, 0, 0, 0, 0, 0, 0, 0, 0]]},
        "meta": {},
    }
    assert list(answer.json()) == ["data", "meta"]


def test_payload_forms(microservice: ServerProcess) -> None:
    url = f"{microservice.url}/api/v1.0/predictions"
    tensor = requests.post(url, json={"data": {"names": ["a", "b"], "tensor": {"shape": [2, 2], "values": [1, 2, 3, 4.5]}}}, timeout=10).json()
    assert tensor == {"data": {"names": ["t:0", "t:1"], "tensor": {"shape": [2, 2], "values": [1.0, 2.0, 3.0, 4.5]}}, "meta": {}}
    strings = requests.post(url, json={"data": {"ndarray": [["a", "b"]]}}, timeout=10).json()
    assert strings["data"]["ndarray"] == [["a", "b"]]
    assert requests.post(url, json={"strData": "hello"}, timeout=10).json() == {"strData": "hello", "meta": {}}
    json_data = requests.post(url, json={"jsonData": {"x": [1, 2]}, "meta": {"puid": "abc"}}, timeout=10).json()
    assert json_data == {"jsonData": {"echo": {"x": [1, 2]}, "names": []}, "meta": {"puid": "abc"}}
    raw = base64.b64encode(b"\x00\x01binary").decode()
    binary = requests.post(url, json={"binData": raw}, timeout=10).json()
    assert base64.b64decode(binary["binData"]) == b"yranib\x01\x00"


def test_errors_use_seldon_status(microservice: ServerProcess) -> None:
    url = f"{microservice.url}/api/v1.0/predictions"
    for body, text in (
        ({"data": {}}, "data needs 'ndarray' or 'tensor'"),
        ({"data": {"tensor": {"shape": [3], "values": [1, 2]}}}, "do not fit shape"),
        ({"binData": "***"}, "base64"),
        ({"data": {"ndarray": [[5000]]}}, "values above 1000 are not supported"),
    ):
        answer = requests.post(url, json=body, timeout=10)
        assert answer.status_code == 400, answer.text
        status = answer.json()["status"]
        assert status["status"] == 1 and status["code"] == -1 and status["reason"] == "MICROSERVICE_BAD_DATA"
        assert text in status["info"]
    bad_json = requests.post(url, data=b"{oops", timeout=10)
    assert bad_json.status_code == 400 and "not valid JSON" in bad_json.json()["status"]["info"]
    # the service keeps answering
    assert requests.post(url, json={"strData": "still here"}, timeout=10).json()["strData"] == "still here"


def test_health_ping(microservice: ServerProcess) -> None:
    answer = requests.get(f"{microservice.url}/health/ping", timeout=10)
    assert answer.status_code == 200 and answer.text == "pong"


def test_class_from_repository_with_names_tags_metrics(tmp_path: Path) -> None:
    model = tmp_path / "iris-seldon"
    model.mkdir()
    (model / "IrisModel.py").write_text(IRIS_MODEL)
    (model / "model-settings.json").write_text(
        '{"name": "iris-seldon", "implementation": "IrisModel.IrisModel",'
        ' "parameters": {"extra": {"init_parameters": {"C": 2.0}}}}'
    )
    with ServerProcess(["serve", str(tmp_path)]) as server:
        body = {"data": {"names": ["sl", "sw", "pl", "pw"], "ndarray": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}}
        answer = requests.post(f"{server.url}/api/v1.0/predictions", json=body, timeout=10).json()
        assert answer["data"]["names"] == ["setosa", "versicolor", "virginica"]
        probabilities = answer["data"]["ndarray"]
        assert [row.index(max(row)) for row in probabilities] == [0, 2]
        assert answer["meta"] == {"tags": {"model": "iris"}, "metrics": [{"type": "COUNTER", "key": "calls", "value": 1}]}
        # the same model over V2
        v2 = {"inputs": [{"name": "X", "datatype": "FP64", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}]}
        out = requests.post(f"{server.url}/v2/models/iris-seldon/infer", json=v2, timeout=10).json()["outputs"][0]
        assert out["shape"] == [1, 3] and out["data"][0] == pytest.approx(probabilities[0][0])


FEEDBACK_MODEL = '''
import numpy as np


class Scorer:
    def __init__(self):
        self.rewards = []

    def predict(self, X, features_names=None):
        return np.asarray(X, dtype=float) * 10

    def transform_input(self, X, features_names=None):
        return np.asarray(X, dtype=float) + 1

    def send_feedback(self, features, feature_names, reward, truth, routing=None):
        self.rewards.append(reward)
        return {"rewards": self.rewards, "truth": None if truth is None else np.asarray(truth).tolist()}

    def health_status(self):
        return {"calls": len(self.rewards)}
'''


def test_seldon_client_form_encoding(microservice: ServerProcess) -> None:
    # SeldonClient.microservice() posts data={"json": json.dumps(message)}: form-encoded
    for path in ("/predict", "/api/v1.0/predictions"):
        answer = requests.post(f"{microservice.url}{path}", data={"json": '{"data": {"ndarray": [[1, 2]]}}'}, timeout=10)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"data": {"names": ["t:0", "t:1"], "ndarray": [[1, 2]]}, "meta": {}}
    # or ?json= on the query string (GET too, as Flask's wrapper reads request.args)
    answer = requests.get(f"{microservice.url}/predict", params={"json": '{"strData": "abc"}'}, timeout=10)
    assert answer.status_code == 200 and answer.json() == {"strData": "abc", "meta": {}}
    # a form without the json field, or with broken JSON in it: Seldon's status form, saying what to send
    for form, text in (({"x": "1"}, "no field 'json' (fields: x)"), ({"json": "{oops"}, "not valid JSON")):
        answer = requests.post(f"{microservice.url}/predict", data=form, timeout=10)
        assert answer.status_code == 400, answer.text
        status = answer.json()["status"]
        assert status["reason"] == "MICROSERVICE_BAD_DATA" and text in status["info"]


def test_predict_unknown_body_answers_seldon_status(microservice: ServerProcess) -> None:
    # the model is a Seldon class: /predict is Seldon's API whatever the body
    for body in (b'{"foo": 1}', b"[1, 2]", b"{oops"):
        answer = requests.post(f"{microservice.url}/predict", data=body,
                               headers={"Content-Type": "application/json"}, timeout=10)
        assert answer.status_code == 400, answer.text
        assert list(answer.json()) == ["status"]
        assert answer.json()["status"]["status"] == 1 and answer.json()["status"]["code"] == -1


def test_health_status_and_default_methods(microservice: ServerProcess) -> None:
    for path in ("/health/status", "/api/v1.0/health/status"):
        answer = requests.get(f"{microservice.url}{path}", timeout=10)
        assert answer.status_code == 200 and answer.json() == {"strData": "healthy", "meta": {}}
    # MyModel has no transform_input/transform_output/send_feedback: Seldon passes the message through
    message = {"data": {"names": ["a", "b"], "tensor": {"shape": [1, 2], "values": [1.5, 2.5]}}}
    for path in ("/transform-input", "/transform-output"):
        answer = requests.post(f"{microservice.url}{path}", data={"json": json.dumps(message)}, timeout=10)
        assert answer.status_code == 200, answer.text
        assert answer.json()["data"]["tensor"] == {"shape": [1, 2], "values": [1.5, 2.5]}
    feedback = {"request": {"data": {"ndarray": [[1, 2]]}}, "reward": 1.0}
    for path in ("/send-feedback", "/api/v1.0/feedback"):
        answer = requests.post(f"{microservice.url}{path}", json=feedback, timeout=10)
        assert answer.status_code == 200 and answer.json()["data"]["ndarray"] == []
    bad = requests.post(f"{microservice.url}/send-feedback", json={**feedback, "reward": "x"}, timeout=10)
    assert bad.status_code == 400 and "reward must be a number" in bad.json()["status"]["info"]


def test_class_methods_and_seldon_flags(tmp_path: Path) -> None:
    (tmp_path / "Scorer.py").write_text(FEEDBACK_MODEL)
    # seldon-core-microservice's own flags, as its deployments write them
    flags = ["--service-type", "MODEL", "--persistence", "0", "--log-level", "INFO", "--workers", "1",
             "--threads", "4", "--debug", "false", "--access-log", "--max-requests", "0", "--keepalive", "2",
             "--grpc-workers", "1", "--tracing", "0"]
    with ServerProcess(["microservice", "Scorer", *flags], cwd=tmp_path) as server:
        ignored = next(line for line in server.log().splitlines() if "flags with no meaning here" in line)
        assert all(flag in ignored for flag in ("--threads", "--max-requests", "--keepalive", "--grpc-workers"))
        # --access-log took effect (the line follows the answer the readiness check read: wait for it)
        deadline = time.monotonic() + 10
        while '"GET /v2/health/live" 200' not in server.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert '"GET /v2/health/live" 200' in server.log()
        transformed = requests.post(f"{server.url}/transform-input",
                                    data={"json": '{"data": {"ndarray": [[1, 2]]}}'}, timeout=10).json()
        assert transformed["data"]["ndarray"] == [[2.0, 3.0]]
        feedback = {"request": {"data": {"ndarray": [[1, 2]]}}, "reward": 0.5, "truth": {"data": {"ndarray": [[7]]}}}
        answer = requests.post(f"{server.url}/api/v1.0/feedback", json=feedback, timeout=10)
        assert answer.status_code == 200, answer.text
        assert answer.json()["jsonData"] == {"rewards": [0.5], "truth": [[7]]}
        status = requests.get(f"{server.url}/health/status", timeout=10).json()
        assert status == {"jsonData": {"calls": 1}, "meta": {}}


def test_service_type_without_its_method_is_refused(tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "Scorer.py").write_text(FEEDBACK_MODEL)
    done = subprocess.run([sys.executable, "-m", "servekit", "microservice", "Scorer", "--service-type", "ROUTER"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "Scorer" in done.stderr and "is served as a ROUTER but has no route()" in done.stderr
    assert "Traceback" not in done.stderr
