"""TF Serving's REST API against a real servekit, on the first article's
models (Keras regressions saved as versions 1 and 2) and its cfg2.conf: labels,
the columnar and named input forms, metadata, errors, Keras files and b64
strings, two workers. The articles' own command lines and curl calls are in
tests/articles/test_article_001.py and test_article_002.py (23.5)."""

from __future__ import annotations

import base64
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from tfserving_support import (
    ARTICLE_INSTANCES,
    BODY,
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


def test_cfg2_labels(cfg2_server: TFServer, models: ArticleModels) -> None:
    for label, version in (("production", 1), ("test", 2)):
        url = f"{cfg2_server.rest}/v1/models/{NAME}/labels/{label}:predict"
        got = predictions(requests.post(url, data=BODY, headers={"Content-Type": "application/json"}))
        np.testing.assert_allclose(got, models.expected[version], atol=1e-5)
        status = requests.get(f"{cfg2_server.rest}/v1/models/{NAME}/labels/{label}").json()
        assert [s["version"] for s in status["model_version_status"]] == [str(version)]


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
