"""CatBoost models served from a repository as a user lays it out: ``.cbm``
files (bare, or with MLServer's ``mlserver_catboost.CatboostModel``) and
pickled CatBoost objects, answering over V2 (REST and gRPC) exactly what
CatBoost answers in this process."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import catboost
import joblib
import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
from servers import ServerProcess
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris

from servekit.config import ModelParameters, ModelSettings
from servekit.runtimes import create_runtime
from servekit.runtimes.catboost import CatBoostModel

IRIS = load_iris()
CANCER = load_breast_cancer()
DIABETES = load_diabetes()
SMALL = {"iterations": 15, "depth": 4, "verbose": False, "random_seed": 0, "thread_count": 1,
         "allow_writing_files": False}


def _settings(folder: Path, **settings: Any) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model-settings.json").write_text(json.dumps(settings))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The repository, and each model as fitted in this process."""
    repo = tmp_path_factory.mktemp("catboost-repo")
    labels = np.array(["malignant", "benign"])[CANCER.target]  # string classes, as users often have
    cancer = catboost.CatBoostClassifier(**SMALL).fit(CANCER.data, labels)
    iris = catboost.CatBoostClassifier(**SMALL).fit(IRIS.data, IRIS.target)
    diabetes = catboost.CatBoostRegressor(**SMALL).fit(DIABETES.data, DIABETES.target)
    # a folder with only the model file: the suffix picks the runtime
    (repo / "iris").mkdir()
    iris.save_model(str(repo / "iris" / "model.cbm"))
    # MLServer's settings, unchanged
    _settings(repo / "cancer", name="cancer", implementation="mlserver_catboost.CatboostModel",
              parameters={"uri": "./model.cbm", "version": "v1"})
    cancer.save_model(str(repo / "cancer" / "model.cbm"))
    _settings(repo / "diabetes", name="diabetes", implementation="catboost")
    diabetes.save_model(str(repo / "diabetes" / "model.cbm"))
    # a pickled CatBoostClassifier that answers probabilities unless asked otherwise
    _settings(repo / "iris-proba", name="iris-proba", implementation="catboost",
              parameters={"uri": "./model.joblib", "extra": {"default_output": "predict_proba"}})
    joblib.dump(iris, repo / "iris-proba" / "model.joblib")
    # and one with nothing but the pickle: the scikit-learn runtime serves it through the same face
    (repo / "iris-joblib").mkdir()
    joblib.dump(iris, repo / "iris-joblib" / "model.joblib")
    return {"repo": repo, "cancer": cancer, "iris": iris, "diabetes": diabetes}


@pytest.fixture(scope="module")
def server(models: dict[str, Any]) -> Any:
    with ServerProcess(["serve", str(models["repo"])]) as running:
        yield running


def _v2(server: ServerProcess, name: str, x: np.ndarray, *outputs: str) -> dict[str, Any]:
    body: dict[str, Any] = {"inputs": [{"name": "input-0", "shape": list(x.shape), "datatype": "FP64",
                                        "data": x.ravel().tolist()}]}
    if outputs:
        body["outputs"] = [{"name": o} for o in outputs]
    response = requests.post(f"{server.url}/v2/models/{name}/infer", json=body, timeout=60)
    assert response.status_code == 200, response.text
    return {o["name"]: o for o in response.json()["outputs"]}


def test_every_model_is_ready(server: ServerProcess) -> None:
    index = requests.post(f"{server.url}/v2/repository/index", json={}, timeout=30).json()
    assert {row["name"]: row["state"] for row in index} == {
        "iris": "READY", "cancer": "READY", "diabetes": "READY", "iris-proba": "READY", "iris-joblib": "READY",
    }
    metadata = requests.get(f"{server.url}/v2/models/cancer", timeout=30).json()
    assert metadata["platform"] == "catboost"
    assert metadata["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 30]}]
    outputs = {o["name"]: o for o in metadata["outputs"]}
    assert outputs["predict"]["datatype"] == "BYTES" and outputs["predict_proba"]["shape"] == [-1, 2]


def test_cbm_classifier_with_string_classes(server: ServerProcess, models: dict[str, Any]) -> None:
    x = CANCER.data[:40]
    out = _v2(server, "cancer", x, "predict", "predict_proba")
    expected = models["cancer"].predict(x)
    assert out["predict"]["datatype"] == "BYTES"
    assert out["predict"]["data"] == [str(label) for label in expected]
    assert sorted(set(out["predict"]["data"])) == ["benign", "malignant"]
    proba = np.asarray(out["predict_proba"]["data"]).reshape(out["predict_proba"]["shape"])
    assert np.array_equal(proba, models["cancer"].predict_proba(x))


def test_bare_cbm_multiclass(server: ServerProcess, models: dict[str, Any]) -> None:
    x = IRIS.data[::7]
    out = _v2(server, "iris", x)  # predict by default
    assert out["predict"]["datatype"] == "INT64"
    assert out["predict"]["data"] == models["iris"].predict(x).ravel().tolist()
    proba = _v2(server, "iris", x, "predict_proba")["predict_proba"]
    assert np.array_equal(np.asarray(proba["data"]).reshape(proba["shape"]), models["iris"].predict_proba(x))


def test_cbm_regressor(server: ServerProcess, models: dict[str, Any]) -> None:
    x = DIABETES.data[:25]
    out = _v2(server, "diabetes", x)
    assert np.array_equal(np.asarray(out["predict"]["data"]), models["diabetes"].predict(x))
    response = requests.post(f"{server.url}/v2/models/diabetes/infer", timeout=30, json={
        "inputs": [{"name": "x", "shape": [1, 10], "datatype": "FP64", "data": [0.0] * 10}],
        "outputs": [{"name": "predict_proba"}]})
    assert response.status_code == 400
    assert response.json()["error"] == "model 'diabetes' has no output 'predict_proba'; available: predict"


def test_pickled_wrappers_and_default_output(server: ServerProcess, models: dict[str, Any]) -> None:
    x = IRIS.data[100:110]
    out = _v2(server, "iris-proba", x)
    assert list(out) == ["predict_proba"]
    assert np.array_equal(np.asarray(out["predict_proba"]["data"]).reshape(10, 3), models["iris"].predict_proba(x))
    bare = _v2(server, "iris-joblib", x)
    assert bare["predict"]["data"] == models["iris"].predict(x).ravel().tolist()


def test_grpc_answers_the_same(server: ServerProcess, models: dict[str, Any]) -> None:
    x = CANCER.data[:5]
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    tensor = grpcclient.InferInput("input-0", list(x.shape), "FP64")
    tensor.set_data_from_numpy(x)
    result = client.infer("cancer", [tensor], outputs=[grpcclient.InferRequestedOutput("predict_proba"),
                                                       grpcclient.InferRequestedOutput("predict")])
    assert np.array_equal(result.as_numpy("predict_proba"), models["cancer"].predict_proba(x))
    assert [v.decode() for v in result.as_numpy("predict").ravel()] == list(models["cancer"].predict(x))


def test_bad_input_is_the_clients_error_and_the_server_keeps_serving(server: ServerProcess) -> None:
    response = requests.post(f"{server.url}/v2/models/cancer/infer", timeout=30, json={
        "inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}]})
    assert response.status_code == 400
    assert response.json()["error"] == "model 'cancer' expects 30 features per row, got 3"
    assert _v2(server, "cancer", CANCER.data[:1])["predict"]["data"] in (["benign"], ["malignant"])


# -- in process: threads, versions, broken files ------------------------------------------------
def _runtime(path: Path, **extra: Any) -> Any:
    settings = ModelSettings(name="m", implementation="catboost",
                             parameters=ModelParameters(uri=path.name, extra=extra), source_dir=str(path.parent))
    runtime = create_runtime(settings)
    runtime.load()
    return runtime


def test_thread_count_from_settings_else_the_workers_share(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           models: dict[str, Any]) -> None:
    path = tmp_path / "model.cbm"
    models["iris"].save_model(str(path))
    assert isinstance(_runtime(path, thread_count=3).model, CatBoostModel)
    assert _runtime(path, thread_count=3).model.threads == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # what the server sets in each worker
    assert _runtime(path).model.threads == 2
    joblib.dump(models["iris"], tmp_path / "model.joblib")
    assert _runtime(tmp_path / "model.joblib").model.threads == 2


def test_another_catboost_version_is_named_in_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                        models: dict[str, Any]) -> None:
    model = models["iris"].copy()
    model.get_metadata()["catboost_version_info"] = "Summary: CatBoost release 1.0.6."
    model.save_model(str(tmp_path / "model.cbm"))
    with caplog.at_level(logging.WARNING, logger="servekit.runtimes"):
        _runtime(tmp_path / "model.cbm")
    assert f"saved with catboost 1.0.6 but catboost {catboost.__version__} is installed" in caplog.text
    caplog.clear()
    models["iris"].save_model(str(tmp_path / "same.cbm"))
    with caplog.at_level(logging.WARNING, logger="servekit.runtimes"):
        _runtime(tmp_path / "same.cbm")
    assert "saved with catboost" not in caplog.text


def test_a_file_that_is_not_catboost_is_a_load_error(tmp_path: Path) -> None:
    from servekit.errors import ModelLoadError

    (tmp_path / "model.cbm").write_bytes(b"not a model")
    with pytest.raises(ModelLoadError, match=r"cannot load model.cbm as a CatBoost model \(.cbm\)"):
        _runtime(tmp_path / "model.cbm")
