"""The first and third articles' TF Serving commands against a real servekit:
the article's layout (Keras regression models saved as versions 1 and 2),
``cfg1.conf`` / ``cfg2.conf``, and their curl requests."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from tfserving_support import (
    ARTICLE_INSTANCES,
    BODY,
    CFG1,
    CFG2,
    NAME,
    ArticleModels,
    TFServer,
    article_models,
    predictions,
)

pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def models() -> ArticleModels:
    return article_models()


def config_file(folder: Path, text: str, base: Path, name: str = "cfg.conf") -> Path:
    path = folder / name
    path.write_text(text.replace("/myProject/saved_models", str(base)))
    return path


@pytest.fixture(scope="module")
def cfg2_server(models: ArticleModels, tmp_path_factory: pytest.TempPathFactory) -> Any:
    project = tmp_path_factory.mktemp("myProject")
    base = models.base_path(project)
    cfg = config_file(project, CFG2, base, "cfg2.conf")
    with TFServer(["--allow_version_labels_for_unavailable_models", f"--model_config_file={cfg}"]) as server:
        yield server


def test_cfg1_serves_all_versions(models: ArticleModels, tmp_path: Path) -> None:
    base = models.base_path(tmp_path)
    cfg = config_file(tmp_path, CFG1, base, "cfg1.conf")
    args = ["--allow_version_labels_for_unavailable_models", f"--model_config_file={cfg}"]
    with TFServer(args) as server:
        status = requests.get(f"{server.rest}/v1/models/{NAME}").json()
        assert status == {
            "model_version_status": [
                {"version": v, "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
                for v in ("2", "1")
            ]
        }
        for version in (1, 2):
            url = f"{server.rest}/v1/models/{NAME}/versions/{version}:predict"
            got = predictions(requests.post(url, data=BODY, headers={"Content-Type": "application/json"}))
            np.testing.assert_allclose(got, models.expected[version], atol=1e-5)
        # no version: the latest
        got = predictions(requests.post(f"{server.rest}/v1/models/{NAME}:predict", data=BODY))
        np.testing.assert_allclose(got, models.expected[2], atol=1e-5)


def test_cfg2_labels(cfg2_server: TFServer, models: ArticleModels) -> None:
    for label, version in (("production", 1), ("test", 2)):
        url = f"{cfg2_server.rest}/v1/models/{NAME}/labels/{label}:predict"
        got = predictions(requests.post(url, data=BODY, headers={"Content-Type": "application/json"}))
        np.testing.assert_allclose(got, models.expected[version], atol=1e-5)
        status = requests.get(f"{cfg2_server.rest}/v1/models/{NAME}/labels/{label}").json()
        assert [s["version"] for s in status["model_version_status"]] == [str(version)]


def test_real_curl_as_the_article_writes_it(cfg2_server: TFServer, models: ArticleModels) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    port = cfg2_server.rest_port
    out = subprocess.run(
        ["curl", "-s", "-X", "GET", f"http:/localhost:{port}/v1/models/{NAME}"],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout
    assert [s["state"] for s in json.loads(out)["model_version_status"]] == ["AVAILABLE"] * 2
    out = subprocess.run(
        ["curl", "-s", "-X", "POST", f"http://localhost:{port}/v1/models/{NAME}/labels/production:predict",
         "-H", "Content-Type: application/json", "-d", "{\"instances\":[[1.0], [2.0], [5.0]]}"],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout
    np.testing.assert_allclose(json.loads(out)["predictions"], models.expected[1], atol=1e-5)


def test_columnar_format_and_named_inputs(cfg2_server: TFServer, models: ArticleModels) -> None:
    url = f"{cfg2_server.rest}/v1/models/{NAME}/versions/2:predict"
    response = requests.post(url, json={"inputs": ARTICLE_INSTANCES})
    np.testing.assert_allclose(response.json()["outputs"], models.expected[2], atol=1e-5)
    meta = requests.get(f"{cfg2_server.rest}/v1/models/{NAME}/versions/2/metadata").json()
    (input_name,) = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]
    response = requests.post(url, json={"inputs": {input_name: ARTICLE_INSTANCES}})
    np.testing.assert_allclose(response.json()["outputs"], models.expected[2], atol=1e-5)
    rows = [{input_name: row} for row in ARTICLE_INSTANCES]
    response = requests.post(url, json={"instances": rows, "signature_name": "serving_default"})
    np.testing.assert_allclose(predictions(response), models.expected[2], atol=1e-5)


def test_metadata(cfg2_server: TFServer) -> None:
    meta = requests.get(f"{cfg2_server.rest}/v1/models/{NAME}/labels/test/metadata").json()
    assert meta["model_spec"] == {"name": NAME, "signature_name": "", "version": "2"}
    signature = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["method_name"] == "tensorflow/serving/predict"
    ((_, tensor),) = signature["inputs"].items()
    assert tensor["dtype"] == "DT_FLOAT"
    assert tensor["tensor_shape"] == {
        "dim": [{"size": "-1", "name": ""}, {"size": "1", "name": ""}],
        "unknown_rank": False,
    }
    assert tensor["name"].startswith("serving_default_")


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        (f"/v1/models/{NAME}:predict", "{not json", 400, "not valid JSON"),
        (f"/v1/models/{NAME}:predict", '{"instances": [[1.0]], "inputs": [[1.0]]}', 400, "exactly one of"),
        (f"/v1/models/{NAME}:predict", '{"instances": [[1.0], [2.0, 3.0]]}', 400, "ragged"),
        (f"/v1/models/{NAME}:predict", '{"instances": [["a"]]}', 400, "not strings"),
        (f"/v1/models/{NAME}:predict", '{"instances": [[1.0, 2.0]]}', 400, "rejected the input"),
        (f"/v1/models/{NAME}:predict", '{"instances": [[1.0]], "signature_name": "nope"}', 400,
         "no signature 'nope'"),
        (f"/v1/models/{NAME}/versions/7:predict", BODY, 404, f"Servable not found for request: Specific({NAME}, 7)"),
        (f"/v1/models/{NAME}/labels/canary:predict", BODY, 404, "no label 'canary'"),
        ("/v1/models/other:predict", BODY, 404, "not found"),
        (f"/v1/models/{NAME}:explain", BODY, 400, "unknown method"),
    ],
)
def test_errors_are_tf_serving_json(cfg2_server: TFServer, path: str, body: str, status: int,
                                    message: str) -> None:
    response = requests.post(cfg2_server.rest + path, data=body)
    assert response.status_code == status
    assert list(response.json()) == ["error"]
    assert message in response.json()["error"]


def test_same_model_through_v2(cfg2_server: TFServer, models: ArticleModels) -> None:
    body = {"inputs": [{"name": "x", "shape": [3, 1], "datatype": "FP32", "data": [1.0, 2.0, 5.0]}]}
    response = requests.post(f"{cfg2_server.url}/v2/models/{NAME}/versions/1/infer", json=body)
    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    assert output["shape"] == [3, 1] and output["datatype"] == "FP32"
    np.testing.assert_allclose(np.reshape(output["data"], (3, 1)), models.expected[1], atol=1e-5)


def test_model_base_path_serves_only_the_latest(models: ArticleModels, tmp_path: Path) -> None:
    base = models.base_path(tmp_path)
    with TFServer([f"--model_name={NAME}", f"--model_base_path={base}"]) as server:
        status = requests.get(f"{server.rest}/v1/models/{NAME}").json()
        assert [s["version"] for s in status["model_version_status"]] == ["2"]
        got = predictions(requests.post(f"{server.rest}/v1/models/{NAME}:predict", data=BODY))
        np.testing.assert_allclose(got, models.expected[2], atol=1e-5)


def test_docker_layout_from_model_name_env(tmp_path: Path) -> None:
    """Article 23.5: a SavedModel mounted at /models/saved_model/1, MODEL_NAME=saved_model."""
    import keras

    inputs = keras.Input(shape=(10,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    model.export(str(tmp_path / "models" / "saved_model" / "1"), verbose=False)
    features = [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]]
    expected = model.predict(np.array(features, dtype="float32"), verbose=0)
    env = {"MODEL_NAME": "saved_model", "MODEL_BASE_PATH": str(tmp_path / "models")}
    with TFServer([], env=env, cwd=tmp_path) as server:
        status = requests.get(f"{server.rest}/v1/models/saved_model").json()
        assert status == {
            "model_version_status": [
                {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
            ]
        }
        meta = requests.get(f"{server.rest}/v1/models/saved_model/metadata").json()
        signature = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
        ((_, tensor),) = signature["inputs"].items()
        assert [d["size"] for d in tensor["tensor_shape"]["dim"]] == ["-1", "10"]
        # curl -X POST …/v1/models/saved_model:predict -d '{"inputs":[[1,2,…,10]]}' (no content type)
        response = requests.post(
            f"{server.rest}/v1/models/saved_model:predict",
            data='{"inputs":[[1,2,3,4,5,6,7,8,9,10]]}',
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        np.testing.assert_allclose(response.json()["outputs"], expected, atol=1e-5)


def test_keras_file_and_b64_strings(models: ArticleModels, tmp_path: Path) -> None:
    import keras
    import tensorflow as tf

    base = tmp_path / "keras_model"
    (base / "1").mkdir(parents=True)
    shutil.copy(models.keras_file, base / "1" / "model.keras")

    class Echo(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
        def serve(self, text: Any) -> dict[str, Any]:
            return {"length": tf.strings.length(text), "upper_bytes": tf.strings.upper(text)}

    echo = Echo()
    tf.saved_model.save(echo, str(tmp_path / "echo" / "1"), signatures={"serving_default": echo.serve})
    del keras
    cfg = tmp_path / "models.yaml"
    cfg.write_text(
        f"model_config_list:\n"
        f"  - {{name: keras_model, base_path: {base}}}\n"
        f"  - {{name: echo, base_path: {tmp_path / 'echo'}}}\n"
    )
    with TFServer([f"--model_config_file={cfg}"]) as server:
        got = predictions(requests.post(f"{server.rest}/v1/models/keras_model:predict", data=BODY))
        np.testing.assert_allclose(got, models.expected[2], atol=1e-5)
        raw = b"\xffbinary"
        body = {"instances": [{"b64": base64.b64encode(raw).decode()}, "abc"]}
        response = requests.post(f"{server.rest}/v1/models/echo:predict", json=body)
        assert response.json() == {
            "predictions": [
                {"length": 7, "upper_bytes": {"b64": base64.b64encode(b"\xffBINARY").decode()}},
                {"length": 3, "upper_bytes": {"b64": base64.b64encode(b"ABC").decode()}},
            ]
        }


def test_parallel_workers_load_tensorflow_after_fork(models: ArticleModels, tmp_path: Path) -> None:
    """TF's thread pools do not survive fork: each worker loads the model itself."""
    base = models.base_path(tmp_path)
    cfg = config_file(tmp_path, CFG2, base, "cfg2.conf")
    with TFServer([f"--model_config_file={cfg}"], workers=2) as server:
        url = f"{server.rest}/v1/models/{NAME}/labels/test:predict"
        for _ in range(8):  # new connections spread over both workers
            got = predictions(requests.post(url, data=BODY))
            np.testing.assert_allclose(got, models.expected[2], atol=1e-5)
