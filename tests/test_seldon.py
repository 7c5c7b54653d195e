"""Seldon Core's microservice API: the article's class and curl call, every
payload form, meta, errors in Seldon's format, and a class from a repository."""

from __future__ import annotations

import base64
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
