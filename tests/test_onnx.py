"""ONNX models through onnxruntime, over V2 REST and TF Serving's REST API."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import requests
from servers import ServerProcess
from tfserving_support import TFServer

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

W = np.array([[1.0, -2.0], [0.5, 0.25], [-1.0, 3.0]], dtype=np.float32)
B = np.array([0.1, -0.2], dtype=np.float32)


def linear_model(path: Path) -> None:
    """x[N,3] -> scores = x @ W + b, positive = relu(scores), best = argmax(scores)."""
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "B"], ["scores"]),
            helper.make_node("Relu", ["scores"], ["positive"]),
            helper.make_node("ArgMax", ["scores"], ["best"], axis=1, keepdims=0),
        ],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
        [
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 2]),
            helper.make_tensor_value_info("positive", TensorProto.FLOAT, ["batch", 2]),
            helper.make_tensor_value_info("best", TensorProto.INT64, ["batch"]),
        ],
        initializer=[numpy_helper.from_array(W, "W"), numpy_helper.from_array(B, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


X = np.array([[1.0, 2.0, 3.0], [-1.0, 0.5, 0.0]], dtype=np.float32)
SCORES = X @ W + B


def test_v2_rest_outputs_from_the_graph(tmp_path: Path) -> None:
    linear_model(tmp_path / "linear" / "model.onnx")
    with ServerProcess(["serve", str(tmp_path)]) as server:
        meta = requests.get(f"{server.url}/v2/models/linear").json()
        assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}]
        assert [(o["name"], o["datatype"], o["shape"]) for o in meta["outputs"]] == [
            ("scores", "FP32", [-1, 2]), ("positive", "FP32", [-1, 2]), ("best", "INT64", [-1]),
        ]
        body = {"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP64", "data": X.ravel().tolist()}]}
        outputs = requests.post(f"{server.url}/v2/models/linear/infer", json=body).json()["outputs"]
        by_name = {o["name"]: o for o in outputs}
        np.testing.assert_allclose(np.reshape(by_name["scores"]["data"], (2, 2)), SCORES, rtol=1e-6)
        np.testing.assert_allclose(np.reshape(by_name["positive"]["data"], (2, 2)), np.maximum(SCORES, 0))
        assert by_name["best"]["data"] == SCORES.argmax(axis=1).tolist()
        body["outputs"] = [{"name": "best"}]
        outputs = requests.post(f"{server.url}/v2/models/linear/infer", json=body).json()["outputs"]
        assert [(o["name"], o["data"]) for o in outputs] == [("best", SCORES.argmax(axis=1).tolist())]
        body["outputs"] = [{"name": "nope"}]
        response = requests.post(f"{server.url}/v2/models/linear/infer", json=body)
        assert response.status_code == 400
        assert "no output 'nope'; available: scores, positive, best" in response.json()["error"]
        bad = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1.0, 2.0]}]}
        response = requests.post(f"{server.url}/v2/models/linear/infer", json=bad)
        assert response.status_code == 400
        assert "needs shape [-1, 3]" in response.json()["error"]


def test_tf_serving_api_on_a_versioned_onnx_model(tmp_path: Path) -> None:
    linear_model(tmp_path / "linear" / "1" / "model.onnx")
    with TFServer(["--model_name=linear", f"--model_base_path={tmp_path / 'linear'}"]) as server:
        response = requests.post(f"{server.rest}/v1/models/linear:predict",
                                 json={"instances": X.tolist()})
        rows = response.json()["predictions"]
        assert [r["best"] for r in rows] == SCORES.argmax(axis=1).tolist()
        np.testing.assert_allclose([r["scores"] for r in rows], SCORES, rtol=1e-6)
        response = requests.post(f"{server.rest}/v1/models/linear:predict", json={"inputs": {"x": X.tolist()}})
        np.testing.assert_allclose(response.json()["outputs"]["positive"], np.maximum(SCORES, 0), rtol=1e-6)
        meta = requests.get(f"{server.rest}/v1/models/linear/metadata").json()
        signature = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
        assert signature["inputs"]["x"]["dtype"] == "DT_FLOAT"
        assert signature["outputs"]["best"]["dtype"] == "DT_INT64"
