"""TorchServe workflows: archives made by TorchServe's own torch-workflow-archiver
(models made by torch-model-archiver), registered through /workflows on the
management port and served through /wfpredict, answering what calling each
node's model by hand in the DAG's order answers; the management API's
answers and errors as TorchServe's Postman collection expects them. The
server runs two workers: a registration answers once every worker serves it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import pytest
import requests
from servers import ServerProcess, free_port
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier

X, Y = load_iris(return_X_y=True)
ROWS = X[[0, 60, 120]].tolist()
NAMES = ["setosa", "versicolor", "virginica"]

# one handler for every .mar: what it runs follows from its serialized file's name
SKLEARN_HANDLER = '''
import json
import os

import joblib
import numpy as np

_model = None


def handle(data, context):
    global _model
    if data is None:
        return None
    serialized = context.manifest["model"]["serializedFile"]
    if _model is None:
        _model = joblib.load(os.path.join(context.system_properties["model_dir"], serialized))
    out = []
    for row in data:
        body = row.get("body") if row.get("body") is not None else row.get("data")
        rows = json.loads(body) if isinstance(body, (bytes, bytearray, str)) else body
        features = np.asarray(rows, dtype=float)
        if serialized.startswith("scaler"):
            out.append(_model.transform(features).tolist())
        elif serialized.startswith("proba"):
            out.append(_model.predict_proba(features).tolist())
        else:
            out.append(_model.predict(features).tolist())
    return out
'''

WORKFLOW_HANDLER = '''
import json

NAMES = ["setosa", "versicolor", "virginica"]


def _json(value):
    return json.loads(value) if isinstance(value, (bytes, bytearray, str)) else value


def pre(data, context):
    if data is None:  # TorchServe calls each function once with no data when it starts
        return None
    return [_json(row.get("body"))["instances"] for row in data]


def post(data, context):
    if data is None:
        return None
    return [{"classes": [NAMES[int(c)] for c in _json(row.get("body"))]} for row in data]


def agg(data, context):
    if data is None:
        return None
    # two parents: each one's answer under its name
    return [{"tree": _json(row["tree"]), "proba": _json(row["proba"])} for row in data]


def broken(data, context):
    if data is None:
        return None
    return ["not rows" for row in data]
'''


def archiver(tool: str, *args: str) -> None:
    subprocess.run([str(Path(sys.executable).with_name(tool)), *args], check=True, capture_output=True)


def make_mar(work: Path, store: Path, name: str, model: Any) -> None:
    joblib.dump(model, work / f"{name}.joblib")
    archiver("torch-model-archiver", "--model-name", name, "--version", "1.0", "--serialized-file",
             str(work / f"{name}.joblib"), "--handler", str(work / "sklearn_handler.py"),
             "--export-path", str(store), "--force")


def make_war(work: Path, store: Path, name: str, spec: dict[str, Any]) -> None:
    (work / f"{name}.yaml").write_text(json.dumps(spec))  # YAML is a superset of JSON
    archiver("torch-workflow-archiver", "--workflow-name", name, "--spec-file", str(work / f"{name}.yaml"),
             "--handler", str(work / "workflow_handler.py"), "--export-path", str(store), "--force")


SEQUENTIAL = {"models": {"min-workers": 1, "batch-size": 1, "scaler": {"url": "scaler.mar"},
                         "iris": {"url": "iris.mar", "batch-size": 4}},
              "dag": {"pre": ["scaler"], "scaler": ["iris"], "iris": ["post"]}}
PARALLEL = {"models": {"tree": {"url": "tree.mar"}, "proba": {"url": "proba.mar"}},
            "dag": {"pre": ["tree", "proba"], "tree": ["agg"], "proba": ["agg"]}}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    work: Path = tmp_path_factory.mktemp("workflows")
    store = work / "store"
    store.mkdir()
    (work / "sklearn_handler.py").write_text(SKLEARN_HANDLER)
    (work / "workflow_handler.py").write_text(WORKFLOW_HANDLER)
    scaler = StandardScaler().fit(X)
    make_mar(work, store, "scaler", scaler)
    make_mar(work, store, "iris", LogisticRegression(max_iter=500).fit(scaler.transform(X), Y))
    make_mar(work, store, "tree", DecisionTreeClassifier(random_state=0).fit(X, Y))
    make_mar(work, store, "proba", LogisticRegression(max_iter=500).fit(X, Y))
    make_war(work, store, "iris_wf", SEQUENTIAL)
    make_war(work, store, "parallel", PARALLEL)
    make_war(work, store, "two_starts", {"models": {"tree": {"url": "tree.mar"}},
                                         "dag": {"pre": ["tree"], "agg": ["tree"]}})
    make_war(work, store, "looped", {"models": {"tree": {"url": "tree.mar"}},
                                     "dag": {"pre": ["tree"], "tree": ["post"], "post": ["tree"]}})
    make_war(work, store, "unknown_fn", {"models": {"tree": {"url": "tree.mar"}},
                                         "dag": {"prepare": ["tree"]}})
    make_war(work, store, "failing", {"models": {"scaler": {"url": "scaler.mar"}, "retry-attempts": 0},
                                      "dag": {"broken": ["scaler"]}})
    management = free_port()
    process = ServerProcess(
        ["serve", "--model-store", str(store), "--management-port", str(management),
         "--disable-token-auth"], cwd=work, workers=2,  # a registration reaches every worker
        ready_path="/ping",
    )
    with process:
        yield {"url": process.url, "management": f"http://127.0.0.1:{management}", "models": (scaler,)}


def manage(server: dict[str, Any], method: str, path: str) -> requests.Response:
    return requests.request(method, f"{server['management']}/{path}", timeout=60)


def wfpredict(server: dict[str, Any], name: str, body: Any) -> requests.Response:
    return requests.post(f"{server['url']}/wfpredict/{name}", json=body, timeout=60)


def predict(server: dict[str, Any], model: str, body: bytes) -> bytes:
    answer = requests.post(f"{server['url']}/predictions/{model}", data=body,
                           headers={"Content-Type": "application/json"}, timeout=60)
    assert answer.status_code == 200, answer.text
    return answer.content


def assert_error(response: requests.Response, code: int, text: str) -> None:
    assert response.status_code == code, response.text
    body = response.json()
    assert body["code"] == code and text in body["message"], body


@pytest.fixture(scope="module")
def registered(server: dict[str, Any]) -> dict[str, Any]:
    for war in ("iris_wf.war", "parallel.war"):
        answer = manage(server, "POST", f"workflows?url={war}")
        assert answer.status_code == 200, answer.text
    return server


def test_registering_a_workflow_registers_its_nodes_as_torchserve_does(registered: dict[str, Any]) -> None:
    again = manage(registered, "POST", "workflows?url=iris_wf.war")
    assert_error(again, 500, "Workflow iris_wf is already registered.")
    models = {m["modelName"] for m in manage(registered, "GET", "models").json()["models"]}
    assert {"iris_wf__pre", "iris_wf__scaler", "iris_wf__iris", "iris_wf__post"} <= models
    listed = manage(registered, "GET", "workflows").json()
    assert listed == {"workflows": [{"workflowName": "iris_wf", "workflowUrl": "iris_wf.war"},
                                    {"workflowName": "parallel", "workflowUrl": "parallel.war"}]}
    assert manage(registered, "GET", "workflows?limit=1").json() == {
        "workflows": [{"workflowName": "iris_wf", "workflowUrl": "iris_wf.war"}], "nextPageToken": "1"}
    described = manage(registered, "GET", "workflows/iris_wf").json()
    assert described == [{"workflowName": "iris_wf", "workflowUrl": "iris_wf.war", "minWorkers": 1,
                          "maxWorkers": 1, "batchSize": 1, "maxBatchDelay": 50,
                          "workflowDag": "{pre=[scaler], scaler=[iris], iris=[post]}"}]


def test_a_sequential_workflow_answers_what_its_nodes_answer_in_turn(registered: dict[str, Any]) -> None:
    body = {"instances": ROWS}
    answer = wfpredict(registered, "iris_wf", body)
    assert answer.status_code == 200, answer.text
    step = predict(registered, "iris_wf__pre", json.dumps(body).encode())
    for node in ("scaler", "iris", "post"):
        step = predict(registered, f"iris_wf__{node}", step)
    assert answer.json() == json.loads(step) == {"classes": ["setosa", "versicolor", "virginica"]}


def test_a_parallel_workflow_joins_its_branches(registered: dict[str, Any]) -> None:
    answer = wfpredict(registered, "parallel", {"instances": ROWS})
    assert answer.status_code == 200, answer.text
    rows = predict(registered, "parallel__pre", json.dumps({"instances": ROWS}).encode())
    tree = json.loads(predict(registered, "parallel__tree", rows))
    proba = json.loads(predict(registered, "parallel__proba", rows))
    assert answer.json() == {"tree": tree, "proba": proba}
    assert tree == [0, 1, 2] and len(proba) == 3 and abs(sum(proba[0]) - 1) < 1e-9


def test_a_failing_node_fails_the_call_naming_it(server: dict[str, Any]) -> None:
    assert manage(server, "POST", "workflows?url=failing.war").status_code == 200
    answer = wfpredict(server, "failing", {"instances": ROWS})
    assert answer.status_code >= 400
    assert "node 'scaler' (model 'failing__scaler')" in answer.json()["message"], answer.text
    # and the server goes on serving
    assert requests.get(f"{server['url']}/ping", timeout=10).json() == {"status": "Healthy"}


@pytest.mark.parametrize(("query", "code", "text"), [
    ("workflows", 400, "Parameter url is required."),
    ("workflows?url=", 404, "url parameter is empty"),
    ("workflows?url=https://example.invalid/x.war", 400, "Failed to download workflow archive file"),
    ("workflows?url=does_not_exist.war", 404, "not found"),
    ("workflows?url=two_starts.war", 400, "DAG should have only one start node"),
    ("workflows?url=looped.war", 400, "Not a valid DAG"),
    ("workflows?url=unknown_fn.war", 400, "prepare is neither a model of the spec nor a function"),
    ("workflows?url=scaler.mar", 400, "has no readable WAR-INF/MANIFEST.json"),
])
def test_bad_registrations_are_refused_as_torchserve_refuses_them(
    server: dict[str, Any], query: str, code: int, text: str
) -> None:
    assert_error(manage(server, "POST", query), code, text)


def test_unknown_workflows_are_404(server: dict[str, Any]) -> None:
    assert_error(manage(server, "GET", "workflows/does_not_exist"), 404, "Workflow not found: does_not_exist")
    assert_error(manage(server, "DELETE", "workflows/does_not_exist"), 404, "Workflow not found")
    assert_error(wfpredict(server, "does_not_exist", {}), 404, "Workflow not found")
    # a model is no workflow
    assert_error(wfpredict(server, "scaler", {}), 404, "Workflow not found: scaler")


def test_unregistering_removes_the_workflow_and_its_nodes(server: dict[str, Any]) -> None:
    assert manage(server, "POST", "workflows?url=iris_wf.war&workflow_name=second").status_code == 200
    assert wfpredict(server, "second", {"instances": ROWS}).json() == {
        "classes": ["setosa", "versicolor", "virginica"]}
    gone = manage(server, "DELETE", "workflows/second")
    assert gone.status_code == 200 and gone.json() == {"status": 'Workflow "second" unregistered'}
    models = {m["modelName"] for m in manage(server, "GET", "models").json()["models"]}
    assert not any(m.startswith("second") for m in models)
    assert_error(wfpredict(server, "second", {"instances": ROWS}), 404, "Workflow not found: second")
