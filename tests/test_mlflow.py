"""MLflow models served from a repository folder: native flavours and pyfunc give
the answers ``mlflow.pyfunc.load_model(...).predict`` gives in process, the
signature is the V2 metadata and checks requests, ``/invocations`` answers every
input form as MLflow's own scoring server does (run beside it on a free port),
and ``runs:/`` / ``models:/`` URIs come from a real ``mlflow server``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from servers import ServerProcess, free_port

with warnings.catch_warnings():  # MLflow warns about its own type hints on import
    warnings.simplefilter("ignore")
    pytest.importorskip("mlflow")
    import mlflow
    import mlflow.lightgbm
    import mlflow.onnx
    import mlflow.pyfunc
    import mlflow.pytorch
    import mlflow.sklearn
    import mlflow.xgboost
pd = pytest.importorskip("pandas")
torch = pytest.importorskip("torch")

# MLflow's own warnings (type hints, pip requirements it cannot infer offline, pickled formats)
pytestmark = [
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

from sklearn.datasets import load_diabetes, load_iris  # noqa: E402
from sklearn.linear_model import LinearRegression, LogisticRegression  # noqa: E402

COLUMNS = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.0, 3.0, 5.0, 2.0], [6.3, 2.9, 4.5, 1.5]]


# a pyfunc model that answers a table (each row's sum, and "big" or "small"),
# saved as MLflow's "models from code": the file travels inside the model
SCALER = """
import mlflow
import numpy as np
import pandas as pd


class Scaler(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        total = model_input.sum(axis=1)
        return pd.DataFrame({"total": total, "label": np.where(total > 10, "big", "small")})


mlflow.models.set_model(Scaler())
"""


def scaler_answer(frame: Any) -> Any:
    total = frame.sum(axis=1)
    return pd.DataFrame({"total": total, "label": np.where(total > 10, "big", "small")})


def torch_net() -> Any:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))


def onnx_graph() -> Any:
    """y = relu(x @ W): x float32 [N, 3], y [N, 2]."""
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(np.array([[1, -2], [0.5, 1], [-1, 3]], dtype=np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Relu", ["xw"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])], [weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def _iris() -> tuple[Any, Any]:
    frame = load_iris(as_frame=True)
    return frame.data, frame.target


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository as a user lays it out: MLflow model folders saved by MLflow, and
    one model-settings.json that serves the same sklearn model through pyfunc."""
    import xgboost as xgb
    from mlflow.models import infer_signature

    root = tmp_path_factory.mktemp("mlflow-repo")
    X, y = _iris()
    clf = LogisticRegression(max_iter=500).fit(X, y)
    mlflow.sklearn.save_model(clf, root / "iris-sklearn", signature=infer_signature(X, clf.predict(X)))
    # the same model, served through mlflow.pyfunc (settings name the flavour)
    (root / "iris-pyfunc").mkdir()
    shutil.copytree(root / "iris-sklearn", root / "iris-pyfunc" / "model")
    (root / "iris-pyfunc" / "model-settings.json").write_text(json.dumps({
        "name": "iris-pyfunc",
        "implementation": "mlserver_mlflow.MLflowRuntime",
        "parameters": {"uri": "./model", "extra": {"mlflow_flavour": "python_function"}},
    }))
    booster = xgb.XGBClassifier(n_estimators=8, max_depth=3).fit(X, y)
    mlflow.xgboost.save_model(booster, root / "iris-xgboost", signature=infer_signature(X, booster.predict(X)))
    # a tensor signature (a model fitted on an array), saved as a pickle
    dx, dy = load_diabetes(return_X_y=True)
    reg = LinearRegression().fit(dx, dy)
    mlflow.sklearn.save_model(
        reg, root / "diabetes", serialization_format="cloudpickle",
        signature=infer_signature(dx.astype(np.float64), reg.predict(dx)),
    )
    import lightgbm as lgb

    gbm = lgb.LGBMClassifier(n_estimators=8, num_leaves=7, verbose=-1).fit(X, y)
    mlflow.lightgbm.save_model(gbm, root / "iris-lightgbm", signature=infer_signature(X, gbm.predict(X)))
    # an ONNX graph (no signature: the graph's own inputs and outputs), natively and through pyfunc
    mlflow.onnx.save_model(onnx_graph(), root / "onnx-native")
    (root / "onnx-pyfunc").mkdir()
    shutil.copytree(root / "onnx-native", root / "onnx-pyfunc" / "model")
    (root / "onnx-pyfunc" / "model-settings.json").write_text(json.dumps({
        "name": "onnx-pyfunc", "parameters": {"uri": "./model", "extra": {"mlflow_flavour": "python_function"}},
    }))
    # a PyTorch network (MLflow 3 saves it as a torch.export program), natively and through pyfunc
    net = torch_net()
    example = np.random.default_rng(0).random((5, 4)).astype(np.float32)
    answer = net(torch.from_numpy(example)).detach().numpy()
    mlflow.pytorch.save_model(net, root / "torch-native", signature=infer_signature(example, answer),
                              input_example=example)
    (root / "torch-pyfunc").mkdir()
    shutil.copytree(root / "torch-native", root / "torch-pyfunc" / "model")
    (root / "torch-pyfunc" / "model-settings.json").write_text(json.dumps({
        "name": "torch-pyfunc", "parameters": {"uri": "./model", "extra": {"mlflow_flavour": "python_function"}},
    }))
    source = tmp_path_factory.mktemp("code") / "scaler.py"
    source.write_text(SCALER)
    mlflow.pyfunc.save_model(root / "scaler", python_model=str(source), signature=infer_signature(X, scaler_answer(X)))
    return root


@pytest.fixture(scope="module")
def server(repository: Path) -> Iterator[ServerProcess]:
    with ServerProcess(["serve", str(repository), "--default-model", "iris-sklearn"]) as proc:
        yield proc


def v2(server: ServerProcess, model: str, body: dict[str, Any]) -> requests.Response:
    return requests.post(f"{server.url}/v2/models/{model}/infer", json=body, timeout=30)


def columns_request(rows: list[list[float]]) -> dict[str, Any]:
    """MLServer's pandas codec: one input per column."""
    data = np.asarray(rows)
    return {
        "parameters": {"content_type": "pd"},
        "inputs": [
            {"name": name, "shape": [len(rows), 1], "datatype": "FP64", "data": data[:, i].tolist()}
            for i, name in enumerate(COLUMNS)
        ],
    }


def in_process(folder: Path, data: Any) -> Any:
    return mlflow.pyfunc.load_model(str(folder)).predict(data)


# -- V2: metadata and answers -----------------------------------------------------------
def test_column_signature_is_the_v2_metadata(server: ServerProcess) -> None:
    meta = requests.get(f"{server.url}/v2/models/iris-sklearn", timeout=10).json()
    assert [(i["name"], i["datatype"], i["shape"]) for i in meta["inputs"]] == [(c, "FP64", [-1]) for c in COLUMNS]
    assert meta["outputs"] == [{"name": "predict", "datatype": "INT64", "shape": [-1]}]
    assert meta["parameters"] == {"content_type": "pd"}
    assert meta["platform"] == "mlflow/sklearn"
    pyfunc = requests.get(f"{server.url}/v2/models/iris-pyfunc", timeout=10).json()
    assert pyfunc["platform"] == "mlflow/python_function"
    assert pyfunc["inputs"] == meta["inputs"] and pyfunc["outputs"] == meta["outputs"]


def test_tensor_signature_is_the_v2_metadata(server: ServerProcess) -> None:
    meta = requests.get(f"{server.url}/v2/models/diabetes", timeout=10).json()
    assert meta["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 10]}]
    assert meta["outputs"] == [{"name": "predict", "datatype": "FP64", "shape": [-1]}]
    assert "parameters" not in meta or meta["parameters"].get("content_type") != "pd"


@pytest.mark.parametrize("model", ["iris-sklearn", "iris-pyfunc", "iris-xgboost", "iris-lightgbm"])
def test_v2_answers_equal_mlflow_in_process(server: ServerProcess, repository: Path, model: str) -> None:
    folder = repository / model / ("model" if model == "iris-pyfunc" else "")
    expected = np.asarray(in_process(folder, pd.DataFrame(ROWS, columns=COLUMNS)))
    for body in (columns_request(ROWS),
                 {"inputs": [{"name": "x", "shape": [3, 4], "datatype": "FP64", "data": ROWS}]}):
        reply = v2(server, model, body)
        assert reply.status_code == 200, reply.text
        (output,) = reply.json()["outputs"]
        assert output["name"] == "predict" and output["datatype"] == "INT64"
        assert output["shape"] == [3, 1]
        assert output["data"] == expected.tolist()


def test_native_and_pyfunc_answer_the_same(server: ServerProcess) -> None:
    rng = np.random.default_rng(7)
    rows = (rng.random((40, 4)) * [4, 2, 6, 2.5] + [4, 2, 1, 0.1]).round(2).tolist()
    native = v2(server, "iris-sklearn", columns_request(rows)).json()
    pyfunc = v2(server, "iris-pyfunc", columns_request(rows)).json()
    assert native["outputs"] == pyfunc["outputs"]
    assert len(native["outputs"][0]["data"]) == 40


def test_onnx_natively_and_through_pyfunc(server: ServerProcess, repository: Path) -> None:
    x = np.array([[1, 2, 3], [-1, 0.5, 2], [0, 0, 0]], dtype=np.float32)
    expected = in_process(repository / "onnx-native", x)["y"]
    meta = requests.get(f"{server.url}/v2/models/onnx-native", timeout=10).json()
    assert meta["platform"] == "mlflow/onnx"
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}]
    assert meta["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [-1, 2]}]
    body = {"inputs": [{"name": "x", "shape": [3, 3], "datatype": "FP32", "data": x.tolist()}]}
    native, pyfunc = v2(server, "onnx-native", body).json(), v2(server, "onnx-pyfunc", body).json()
    assert native["outputs"][0]["name"] == pyfunc["outputs"][0]["name"] == "y"
    assert native["outputs"][0]["shape"] == pyfunc["outputs"][0]["shape"] == [3, 2]
    assert native["outputs"][0]["data"] == pyfunc["outputs"][0]["data"] == expected.reshape(-1).tolist()


def test_pytorch_natively_and_through_pyfunc(server: ServerProcess, repository: Path) -> None:
    x = np.random.default_rng(1).random((3, 4)).astype(np.float32)
    expected = in_process(repository / "torch-native", x)
    meta = requests.get(f"{server.url}/v2/models/torch-native", timeout=10).json()
    assert meta["platform"] == "mlflow/pytorch"
    assert meta["inputs"] == [{"name": "input-0", "datatype": "FP32", "shape": [-1, 4]}]
    assert meta["outputs"] == [{"name": "predict", "datatype": "FP32", "shape": [-1, 3]}]
    body = {"inputs": [{"name": "input-0", "shape": [3, 4], "datatype": "FP32", "data": x.tolist()}]}
    native, pyfunc = v2(server, "torch-native", body).json(), v2(server, "torch-pyfunc", body).json()
    assert native["outputs"] == pyfunc["outputs"]
    assert native["outputs"][0]["name"] == "predict" and native["outputs"][0]["shape"] == [3, 3]
    np.testing.assert_allclose(native["outputs"][0]["data"], expected.reshape(-1), rtol=1e-6)


def test_tensor_model_answers_as_in_process(server: ServerProcess, repository: Path) -> None:
    dx, _ = load_diabetes(return_X_y=True)
    expected = in_process(repository / "diabetes", dx[:5])
    reply = v2(server, "diabetes", {"inputs": [{"name": "input-0", "shape": [5, 10], "datatype": "FP64",
                                                "data": dx[:5].tolist()}]})
    assert reply.status_code == 200, reply.text
    np.testing.assert_allclose(reply.json()["outputs"][0]["data"], expected, rtol=1e-9)


def test_pyfunc_table_answer_is_one_output_per_column(server: ServerProcess, repository: Path) -> None:
    expected = in_process(repository / "scaler", pd.DataFrame(ROWS, columns=COLUMNS))
    reply = v2(server, "scaler", columns_request(ROWS))
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["parameters"] == {"content_type": "pd"}
    outputs = {o["name"]: o for o in body["outputs"]}
    np.testing.assert_allclose(outputs["total"]["data"], expected["total"].to_numpy())
    assert outputs["label"]["datatype"] == "BYTES"
    assert outputs["label"]["data"] == expected["label"].tolist()


# -- V2: requests checked against the signature -----------------------------------------
@pytest.mark.parametrize("model", ["iris-sklearn", "iris-pyfunc"])
def test_wrong_requests_are_refused_with_the_signature(server: ServerProcess, model: str) -> None:
    one = columns_request(ROWS)
    one["inputs"][0]["name"] = "sepal size"
    reply = v2(server, model, one)
    assert reply.status_code == 400
    message = reply.json()["error"]
    assert "missing 'sepal length (cm)'" in message and "unknown 'sepal size'" in message

    strings = columns_request(ROWS)
    strings["inputs"][1] = {"name": COLUMNS[1], "shape": [3], "datatype": "BYTES", "data": ["a", "b", "c"]}
    reply = v2(server, model, strings)
    assert reply.status_code == 400
    assert "column 'sepal width (cm)'" in reply.json()["error"] and "double (FP64)" in reply.json()["error"]

    wide = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [[1, 2, 3]]}]}
    reply = v2(server, model, wide)
    assert reply.status_code == 400
    assert "one tensor of shape [rows, 4]" in reply.json()["error"]
    # and it still serves
    assert v2(server, model, columns_request(ROWS)).status_code == 200


def test_tensor_shape_and_type_are_checked(server: ServerProcess) -> None:
    reply = v2(server, "diabetes", {"inputs": [{"name": "input-0", "shape": [1, 3], "datatype": "FP64",
                                                "data": [[1, 2, 3]]}]})
    assert reply.status_code == 400
    assert "takes shape [-1, 10]" in reply.json()["error"] and "got [1, 3]" in reply.json()["error"]
    reply = v2(server, "diabetes", {"inputs": [{"name": "input-0", "shape": [1, 1], "datatype": "BYTES",
                                                "data": [["x"]]}]})
    assert reply.status_code == 400 and "not strings" in reply.json()["error"]


# -- MLflow's scoring protocol, compared with MLflow's own server ------------------------------
class MLflowScoring:
    """MLflow's own scoring app (what ``mlflow models serve`` runs) on a free port."""

    def __init__(self, folder: Path) -> None:
        import uvicorn
        from mlflow.pyfunc import scoring_server

        app = scoring_server.init(mlflow.pyfunc.load_model(str(folder)))
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("MLflow's scoring server did not start")
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def reference(repository: Path) -> Iterator[dict[str, MLflowScoring]]:
    servers = {name: MLflowScoring(repository / name) for name in ("iris-sklearn", "iris-xgboost", "scaler", "diabetes")}
    yield servers
    for each in servers.values():
        each.stop()


def _records(rows: list[list[float]]) -> list[dict[str, float]]:
    return [dict(zip(COLUMNS, row, strict=True)) for row in rows]


JSON_FORMS: dict[str, Any] = {
    "dataframe_split": {"dataframe_split": {"columns": COLUMNS, "data": ROWS}},
    "dataframe_split_index": {"dataframe_split": {"index": [4, 5, 6], "columns": COLUMNS, "data": ROWS}},
    "dataframe_records": {"dataframe_records": _records(ROWS)},
    "instances_records": {"instances": _records(ROWS)},
    "inputs_columns": {"inputs": {c: [r[i] for r in ROWS] for i, c in enumerate(COLUMNS)}},
    "inputs_records": {"inputs": _records(ROWS)},
}


def both(server: ServerProcess, ref: MLflowScoring, body: bytes, content_type: str) -> tuple[Any, Any]:
    ours = requests.post(f"{server.url}/invocations", data=body, headers={"Content-Type": content_type}, timeout=30)
    theirs = requests.post(f"{ref.url}/invocations", data=body, headers={"Content-Type": content_type}, timeout=30)
    return ours, theirs


@pytest.fixture(scope="module")
def alone(repository: Path) -> Iterator[dict[str, ServerProcess]]:
    """servekit serving one MLflow model folder each (so /invocations needs no default_model)."""
    servers: dict[str, ServerProcess] = {}
    try:
        for model in ("iris-xgboost", "scaler", "diabetes"):
            servers[model] = ServerProcess(["serve", str(repository / model)]).start()
        yield servers
    finally:
        for each in servers.values():
            each.stop()


def scoring(model: str, server: ServerProcess, alone: dict[str, ServerProcess]) -> ServerProcess:
    return server if model == "iris-sklearn" else alone[model]


@pytest.mark.parametrize("form", sorted(JSON_FORMS))
@pytest.mark.parametrize("model", ["iris-sklearn", "iris-xgboost", "scaler"])
def test_invocations_json_forms_answer_as_mlflow(
    server: ServerProcess, alone: dict[str, ServerProcess], reference: dict[str, MLflowScoring],
    form: str, model: str,
) -> None:
    ours, theirs = both(scoring(model, server, alone), reference[model], json.dumps(JSON_FORMS[form]).encode(),
                        "application/json")
    assert theirs.status_code == 200, theirs.text
    assert ours.status_code == 200, ours.text
    assert ours.headers["content-type"].startswith("application/json")
    assert _close(ours.json(), theirs.json()), (ours.json(), theirs.json())


@pytest.mark.parametrize("model", ["iris-sklearn", "iris-xgboost", "scaler"])
def test_invocations_csv_answers_as_mlflow(
    server: ServerProcess, alone: dict[str, ServerProcess], reference: dict[str, MLflowScoring], model: str
) -> None:
    body = pd.DataFrame(ROWS, columns=COLUMNS).to_csv(index=False).encode()
    for content_type in ("text/csv", "text/csv; charset=utf-8"):
        ours, theirs = both(scoring(model, server, alone), reference[model], body, content_type)
        assert theirs.status_code == 200 and ours.status_code == 200, (ours.text, theirs.text)
        assert _close(ours.json(), theirs.json()), (ours.json(), theirs.json())


@pytest.mark.parametrize("key", ["instances", "inputs"])
def test_invocations_tensor_forms_answer_as_mlflow(
    alone: dict[str, ServerProcess], reference: dict[str, MLflowScoring], key: str
) -> None:
    dx, _ = load_diabetes(return_X_y=True)
    body = json.dumps({key: dx[:4].tolist()}).encode()
    ours, theirs = both(alone["diabetes"], reference["diabetes"], body, "application/json")
    assert theirs.status_code == 200 and ours.status_code == 200, (ours.text, theirs.text)
    assert _close(ours.json(), theirs.json())
    split = json.dumps({"dataframe_split": {"data": dx[:2].tolist()}}).encode()
    ours, theirs = both(alone["diabetes"], reference["diabetes"], split, "application/json")
    assert theirs.status_code == 200 and ours.status_code == 200, (ours.text, theirs.text)
    assert _close(ours.json(), theirs.json())


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b'{"dataframe_split": {"columns": [], "data": []}, "instances": []}', "application/json", 400),
        (b'{"rows": [[1, 2, 3, 4]]}', "application/json", 400),
        (b"[[1, 2, 3, 4]]", "application/json", 400),
        (b"{not json", "application/json", 400),
        (json.dumps({"dataframe_split": {"columns": COLUMNS, "data": [[None, 3.0, 5.0, 2.0]]}}).encode(),
         "application/json", 400),
        (json.dumps({"dataframe_records": [{c: "x" for c in COLUMNS}]}).encode(), "application/json", 400),
        (b'{"instances": [[1, 2, 3, 4]]}', "text/plain", 415),
        (b'{"instances": [[1, 2, 3, 4]]}', "application/json; charset=latin-1", 415),
    ],
)
def test_invocations_errors_as_mlflow(
    server: ServerProcess, reference: dict[str, MLflowScoring], body: bytes, content_type: str, status: int
) -> None:
    ours, theirs = both(server, reference["iris-sklearn"], body, content_type)
    assert theirs.status_code == status and ours.status_code == status, (ours.text, theirs.text)
    if status == 400:
        assert ours.json()["error_code"] == theirs.json()["error_code"] == "BAD_REQUEST"
        assert ours.json()["message"]
    else:
        assert ours.headers["content-type"].startswith("text/plain")
        assert ours.text


def test_invocations_checks_the_signature(server: ServerProcess) -> None:
    body = {"dataframe_split": {"columns": ["sepal length (cm)", "colour"], "data": [[5.1, 3.0]]}}
    reply = requests.post(f"{server.url}/invocations", json=body, timeout=10)
    assert reply.status_code == 400
    error = reply.json()
    assert error["error_code"] == "BAD_REQUEST"
    assert "unknown 'colour'" in error["message"] and "missing 'sepal width (cm)'" in error["message"]
    gap = {"dataframe_split": {"columns": COLUMNS, "data": [ROWS[0], [None, 3.0, 5.0, 2.0]]}}
    reply = requests.post(f"{server.url}/invocations", json=gap, timeout=10)
    assert reply.status_code == 400
    assert "column 'sepal length (cm)'" in reply.json()["message"] and "row 1 has no value" in reply.json()["message"]
    strings = {"dataframe_records": [{c: "x" for c in COLUMNS}]}
    reply = requests.post(f"{server.url}/invocations", json=strings, timeout=10)
    assert reply.status_code == 400 and "double (FP64)" in reply.json()["message"]
    assert requests.post(f"{server.url}/invocations", json=JSON_FORMS["dataframe_split"], timeout=10).json() == {
        "predictions": v2(server, "iris-sklearn", columns_request(ROWS)).json()["outputs"][0]["data"]
    }


def test_concurrent_requests_are_answered_each_their_own(
    server: ServerProcess, alone: dict[str, ServerProcess], repository: Path
) -> None:
    """Requests that arrive together are merged by the batcher and split back: each
    client gets the answer to its own rows, tables (pyfunc) as well as vectors (native)."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(3)
    bodies = [(rng.random((1 + i % 3, 4)) * [4, 2, 6, 2.5] + [4, 2, 1, 0.1]).round(2).tolist() for i in range(24)]
    scaler = mlflow.pyfunc.load_model(str(repository / "scaler"))
    iris = mlflow.pyfunc.load_model(str(repository / "iris-sklearn"))

    def call(rows: list[list[float]]) -> tuple[Any, Any]:
        body = {"dataframe_split": {"columns": COLUMNS, "data": rows}}
        table = requests.post(f"{alone['scaler'].url}/invocations", json=body, timeout=30).json()
        labels = requests.post(f"{server.url}/invocations", json=body, timeout=30).json()
        return table, labels

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(call, bodies))
    for rows, (table, labels) in zip(bodies, answers, strict=True):
        frame = pd.DataFrame(rows, columns=COLUMNS)
        expected = scaler.predict(frame)
        assert [r["label"] for r in table["predictions"]] == expected["label"].tolist()
        np.testing.assert_allclose([r["total"] for r in table["predictions"]], expected["total"])
        assert labels["predictions"] == iris.predict(frame).tolist()


def test_health_and_version_as_mlflow(server: ServerProcess, reference: dict[str, MLflowScoring]) -> None:
    ref = reference["iris-sklearn"]
    for path in ("/health", "/version"):
        ours = requests.get(server.url + path, timeout=10)
        theirs = requests.get(ref.url + path, timeout=10)
        assert ours.status_code == theirs.status_code == 200
        assert ours.text == theirs.text
    assert requests.get(server.url + "/ping", timeout=10).status_code == 200


def test_invocations_needs_one_model_among_several(repository: Path) -> None:
    with ServerProcess(["serve", str(repository)]) as several:
        reply = requests.post(f"{several.url}/invocations", json=JSON_FORMS["dataframe_split"], timeout=10)
        assert reply.status_code == 400
        error = reply.json()
        assert error["error_code"] == "BAD_REQUEST"
        assert "iris-sklearn" in error["message"] and "default_model" in error["message"]
        assert requests.get(f"{several.url}/v2/models/iris-xgboost/ready", timeout=10).status_code == 200


# -- runs:/ and models:/ from a tracking server ----------------------------------------------
@pytest.fixture(scope="module")
def tracking(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``mlflow server`` on 127.0.0.1 with a SQLite store and a file artifact root."""
    folder = tmp_path_factory.mktemp("tracking")
    port = free_port()
    log = (folder / "server.log").open("w")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{folder}/mlflow.db",
         "--default-artifact-root", f"file:{folder}/artifacts", "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError("mlflow server exited: " + (folder / "server.log").read_text()[-2000:])
            try:
                if requests.get(url + "/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("mlflow server did not start: " + (folder / "server.log").read_text()[-2000:])
            time.sleep(0.2)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def test_runs_and_models_uris_come_from_the_tracking_server(
    tracking: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.models import infer_signature

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking)
    X, y = _iris()
    clf = LogisticRegression(max_iter=500, C=0.3).fit(X, y)
    with mlflow.start_run() as run:
        mlflow.sklearn.log_model(clf, name="model", signature=infer_signature(X, clf.predict(X)),
                                 registered_model_name="iris-registered")
    mlflow.MlflowClient().set_registered_model_alias("iris-registered", "champion", "1")
    repo = tmp_path / "repo"
    uris = {
        "from-run": {"uri": f"runs:/{run.info.run_id}/model"},
        "from-registry": {"uri": "models:/iris-registered/1"},
        "from-alias": {"uri": "models:/iris-registered@champion", "extra": {"tracking_uri": tracking}},
    }
    for name, parameters in uris.items():
        (repo / name).mkdir(parents=True)
        settings = {"name": name, "parameters": parameters}
        if name == "from-registry":
            settings["implementation"] = "mlserver_mlflow.MLflowRuntime"
        (repo / name / "model-settings.json").write_text(json.dumps(settings))
    expected = clf.predict(pd.DataFrame(ROWS, columns=COLUMNS)).tolist()
    with ServerProcess(["serve", str(repo)], cwd=tmp_path) as server:
        for name in uris:
            reply = v2(server, name, columns_request(ROWS))
            assert reply.status_code == 200, (name, reply.text)
            assert reply.json()["outputs"][0]["data"] == expected
            meta = requests.get(f"{server.url}/v2/models/{name}", timeout=10).json()
            assert [i["name"] for i in meta["inputs"]] == COLUMNS

    # without a tracking server configured, only the model that names its own loads
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    with ServerProcess(["serve", str(repo)], cwd=tmp_path) as server:
        assert v2(server, "from-alias", columns_request(ROWS)).json()["outputs"][0]["data"] == expected
        index = requests.post(f"{server.url}/v2/repository/index", json={}, timeout=10).json()
        reasons = {m["name"]: m.get("reason", "") for m in index}
        assert "set MLFLOW_TRACKING_URI" in reasons["from-run"]
        assert "runs:/" in reasons["from-run"] and "set MLFLOW_TRACKING_URI" in reasons["from-registry"]
    # and the server made no MLflow store of its own where it ran
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo"]


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) or isinstance(b, float):
        return bool(np.isclose(a, b, rtol=1e-9))
    return bool(a == b)
