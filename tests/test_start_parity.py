"""TorchServe parity at start and first-hour rough edges (issue 11, item 6):
``./config.properties`` is read as TorchServe reads it, ``/ping`` says
"Partial Healthy" / "Unhealthy" (TorchServe's bodies, status 200 as TorchServe
answers) when a model that should load did not, no log line or error prints an
empty version, errors name a model as clients call it, and an unversioned
model left beside new numbered versions stops being served."""

from __future__ import annotations

import json
import time
from pathlib import Path

import joblib
import pytest
import requests
from servers import ServerProcess, free_port
from sklearn.linear_model import LogisticRegression

from servekit.cli import main

HANDLER = '''
def handle(data, context):
    if data is None:
        return None
    return [context.manifest["model"]["modelName"] for _ in data]
'''


def make_archive(folder: Path, name: str, store: Path) -> Path:
    (folder / "name_handler.py").write_text(HANDLER)
    assert main(["archive", "--model-name", name, "--version", "1.0", "--handler",
                 str(folder / "name_handler.py"), "--export-path", str(store), "--force"]) == 0
    return store / f"{name}.mar"


def wait_for(check: object, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


# -- config.properties ------------------------------------------------------------------
def test_config_properties_in_the_current_folder_is_read(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    make_archive(tmp_path, "named", store)
    inference, management = free_port(), free_port()
    (tmp_path / "config.properties").write_text(
        f"inference_address=http://127.0.0.1:{inference}\n"
        f"management_address=http://127.0.0.1:{management}\n"
        f"model_store={store}\nload_models=named.mar\n")
    process = ServerProcess(["serve", "--ncs"], cwd=tmp_path)
    process.args = [a for a in process.args if a not in ("--http-port", str(process.http_port))]
    process.http_port = inference
    with process:
        answer = requests.post(f"http://127.0.0.1:{inference}/predictions/named", data=b"x", timeout=30)
        assert answer.status_code == 200 and answer.text == "named"
        assert requests.get(f"http://127.0.0.1:{inference}/ping", timeout=10).json() == {"status": "Healthy"}
        assert "Reading ./config.properties (no --ts-config given, as TorchServe does)" in process.log()


def test_a_stray_config_properties_does_not_turn_a_repository_into_torchserve(tmp_path: Path) -> None:
    (tmp_path / "config.properties").write_text("model_store=/nowhere\nload_models=all\n")
    (tmp_path / "iris").mkdir()
    joblib.dump(LogisticRegression().fit([[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1]), tmp_path / "iris" / "model.joblib")
    with ServerProcess(["serve", "."], cwd=tmp_path) as process:
        index = requests.post(f"{process.url}/v2/repository/index", json={}, timeout=30).json()
        assert [(row["name"], row["state"]) for row in index] == [("iris", "READY")]
        assert "config.properties" not in process.log()


# -- /ping -----------------------------------------------------------------------------------
def test_ping_is_partial_healthy_when_an_archive_named_at_start_is_missing(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    make_archive(tmp_path, "present", store)
    with ServerProcess(["serve", "--model-store", str(store), "--models", "present.mar", "gone=gone.mar",
                        "--management-port", str(free_port())], cwd=tmp_path, ready_path="/ping") as process:
        ping = requests.get(f"{process.url}/ping", timeout=10)
        assert ping.status_code == 200  # TorchServe answers its health in the body, always 200
        assert ping.json()["status"] == "Partial Healthy"
        assert ping.json()["reason"].startswith("gone: model archive gone.mar not found")
        assert requests.post(f"{process.url}/predictions/present", data=b"x", timeout=30).text == "present"


def test_ping_is_unhealthy_when_no_model_that_should_load_did(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    with ServerProcess(["serve", "--model-store", str(store), "--models", "gone.mar",
                        "--management-port", str(free_port())], cwd=tmp_path, ready_path="/ping") as process:
        body = requests.get(f"{process.url}/ping", timeout=10).json()
        assert body["status"] == "Unhealthy" and "gone.mar" in body["reason"]
        assert str(tmp_path) not in body["reason"]


# -- names and versions in messages -------------------------------------------------------------
LIBRARY_MODEL = '''
from servekit import Model


class Classifier(Model[int, int]):
    CONFIGURATIONS = {"classifier": {}}

    def _predict(self, item):
        return item * 2
'''


def test_a_library_model_is_named_as_clients_call_it(tmp_path: Path) -> None:
    (tmp_path / "sentiment").mkdir()
    (tmp_path / "sentiment" / "lib_model.py").write_text(LIBRARY_MODEL)
    (tmp_path / "sentiment" / "model-settings.json").write_text(json.dumps(
        {"name": "sentiment", "implementation": "lib_model.Classifier"}))
    with ServerProcess(["serve", str(tmp_path)]) as process:
        good = requests.post(f"{process.url}/predict/sentiment", json=21, timeout=30)
        assert good.status_code == 200 and good.json() == 42
        bad = requests.post(f"{process.url}/predict/sentiment", json="not a number", timeout=30)
        assert bad.status_code == 400
        assert bad.json()["error"].startswith("model 'sentiment': invalid input")
        assert "classifier" not in bad.json()["error"]


def test_no_message_prints_an_empty_version(tmp_path: Path) -> None:
    (tmp_path / "iris").mkdir()
    joblib.dump(LogisticRegression().fit([[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1]), tmp_path / "iris" / "model.joblib")
    with ServerProcess(["serve", str(tmp_path)]) as process:
        missing = requests.get(f"{process.url}/v2/models/iris/versions/9", timeout=10)
        log = process.log()
    assert missing.status_code == 404
    assert missing.json()["error"] == "model 'iris' has no version '9' (it has no numbered versions; leave the version out)"
    assert "Loaded model 'iris' in " in log
    assert "version -" not in log and "versions: )" not in log and "version  " not in log


# -- an unversioned model beside new numbered versions ---------------------------------------------
def test_numbered_versions_added_live_replace_the_unversioned_model(tmp_path: Path) -> None:
    model = LogisticRegression().fit([[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1])
    folder = tmp_path / "logistic"
    folder.mkdir()
    joblib.dump(model, folder / "model.joblib")
    (folder / "model-settings.json").write_text(json.dumps(
        {"name": "logistic", "implementation": "sklearn", "parameters": {"uri": "./model.joblib"}}))

    def index(process: ServerProcess) -> list[tuple[str, str, str]]:
        rows = requests.post(f"{process.url}/v2/repository/index", json={}, timeout=30).json()
        return sorted((row["name"], row["version"], row["state"]) for row in rows)

    with ServerProcess(["serve", str(tmp_path), "--poll-wait-seconds", "0.2"], workers=2) as process:
        assert index(process) == [("logistic", "", "READY")]
        for version in ("1", "2"):
            (folder / version).mkdir()
            joblib.dump(model, folder / version / "model.joblib")
            (folder / version / "model-settings.json").write_text(json.dumps(
                {"name": "logistic", "implementation": "sklearn",
                 "parameters": {"uri": "./model.joblib", "version": version}}))
        # every worker (asked several times: any may answer) ends with versions 1 and 2 only
        wait_for(lambda: all(index(process) == [("logistic", "1", "READY"), ("logistic", "2", "READY")]
                             for _ in range(6)))
        log = process.log()
    assert "Model 'logistic' has numbered versions; not serving its settings without a version" in log
    # said once by each process that reads the repository (2 workers), not at every 0.2 s poll
    assert 1 <= log.count("has numbered versions") <= 2


# -- models each worker loads ---------------------------------------------------------------------
def test_the_log_says_which_models_each_worker_loads_again(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from test_onnx import linear_model

    linear_model(tmp_path / "linear" / "model.onnx")
    (tmp_path / "iris").mkdir()
    joblib.dump(LogisticRegression().fit([[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1]), tmp_path / "iris" / "model.joblib")
    with ServerProcess(["serve", str(tmp_path)], workers=2) as process:
        body = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1.0, 2.0, 3.0]}]}
        answer = requests.post(f"{process.url}/v2/models/linear/infer", json=body, timeout=30)
        log = process.log()
    assert answer.status_code == 200
    assert ("Model 'linear': TensorFlow/onnxruntime cannot be shared across fork, so each of the 2 workers "
            "loads its own copy (memory and load time times 2)") in log
    assert "'iris'" not in log.split("cannot be shared across fork")[0].splitlines()[-1]
