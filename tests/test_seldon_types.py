"""Seldon's service types ROUTER, COMBINER, TRANSFORMER and OUTPUT_TRANSFORMER:
the router and combiner of Seldon's documentation (EpsilonGreedy,
ImageNetCombiner, kept as written in conformance/seldon/) served by
``servekit microservice``, answering as the class does in process and as
``seldon-core-microservice`` does (when conformance/seldon's venv is there),
their errors in Seldon's ``{"status": …}`` form, the other protocols running
the type's method, the ``*_raw`` methods, and a graph with a Router and a
Combiner node."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import requests
from servers import ROOT, ServerProcess, free_port

from servekit.config import ModelParameters, ModelSettings
from servekit.errors import ServekitError
from servekit.fronts.seldon.api import error_response
from servekit.runtimes.seldon_class import adapt_seldon_class
from servekit.tensors import InferenceRequest, Tensor

CLASSES = ROOT / "conformance" / "seldon"
PEER = CLASSES / ".work" / "venv" / "bin" / "seldon-core-microservice"
ROUTER_PARAMETERS = json.dumps([{"name": "n_branches", "value": "3", "type": "INT"},
                                {"name": "epsilon", "value": "0.0", "type": "FLOAT"},
                                {"name": "best_branch", "value": "2", "type": "INT"}])
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
FLAT = [v for row in ROWS for v in row]


def load_class(name: str) -> Any:
    """The class as Seldon's docs wrote it, imported here to call in process."""
    spec = importlib.util.spec_from_file_location(f"seldon_docs_{name}", CLASSES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module: ModuleType = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)


def form(message: Any) -> dict[str, str]:
    """SeldonClient's way of posting a message: form-encoded json=<message>."""
    return {"json": json.dumps(message)}


def assert_seldon_error(answer: requests.Response, status: int, text: str) -> None:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert list(body) == ["status"], body
    assert body["status"]["status"] == 1 and body["status"]["code"] == -1
    assert body["status"]["reason"] == ("MICROSERVICE_BAD_DATA" if status < 500 else body["status"]["reason"])
    assert text in body["status"]["info"], body


@pytest.fixture(scope="module")
def classes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("seldon-types")
    for name in ("EpsilonGreedy", "ImageNetCombiner", "Scaler", "RawNode", "Doubler"):
        shutil.copy(CLASSES / f"{name}.py", folder / f"{name}.py")
    return folder


@pytest.fixture(scope="module")
def router(classes: Path) -> Iterator[ServerProcess]:
    args = ["microservice", "EpsilonGreedy", "--service-type", "ROUTER", "--parameters", ROUTER_PARAMETERS]
    with ServerProcess(args, cwd=classes) as server:
        yield server


@pytest.fixture(scope="module")
def combiner(classes: Path) -> Iterator[ServerProcess]:
    with ServerProcess(["microservice", "ImageNetCombiner", "--service-type", "COMBINER"], cwd=classes) as server:
        yield server


def test_router_from_seldons_docs_answers_as_the_class(router: ServerProcess) -> None:
    mine = load_class("EpsilonGreedy")(n_branches=3, epsilon=0.0, best_branch=2)
    expected = mine.route(np.array(ROWS), [])
    assert expected == 2
    answer = requests.post(f"{router.url}/route", data=form({"data": {"ndarray": ROWS}}), timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"data": {"names": ["t:0"], "ndarray": [[expected]]}, "meta": {}}
    # a tensor message gets a tensor; meta.puid comes back; GET ?json= as Seldon's tests send it
    tensor = {"meta": {"puid": "p-7"}, "data": {"names": ["a", "b", "c", "d"],
                                                "tensor": {"shape": [2, 4], "values": FLAT}}}
    answer = requests.get(f"{router.url}/route", params=form(tensor), timeout=10)
    assert answer.json() == {"data": {"names": ["t:0"], "tensor": {"shape": [1, 1], "values": [expected]}},
                             "meta": {"puid": "p-7"}}
    # feedback reaches send_feedback with this node's routing (response.meta.routing["0"])
    feedback = {"request": {"data": {"ndarray": ROWS}}, "response": {"meta": {"routing": {"0": 2}}}, "reward": 1.0}
    answer = requests.post(f"{router.url}/send-feedback", data=form(feedback), timeout=10)
    assert answer.status_code == 200 and answer.json()["data"]["ndarray"] == [], answer.text
    mine.send_feedback(np.array(ROWS), [], 1.0, None, routing=2)
    assert mine.branch_values == [0, 0, 1.0]
    # V2 runs the ROUTER's method: the same index
    v2 = {"inputs": [{"name": "x", "datatype": "FP64", "shape": [2, 4], "data": FLAT}]}
    out = requests.post(f"{router.url}/v2/models/EpsilonGreedy/infer", json=v2, timeout=10).json()["outputs"][0]
    assert out["shape"] == [1, 1] and out["data"] == [expected]
    # a ROUTER has no predict: Seldon's wrapper answers an empty message
    empty = requests.post(f"{router.url}/predict", json={"data": {"ndarray": ROWS}}, timeout=10)
    assert empty.json() == {"data": {"names": [], "ndarray": []}, "meta": {}}


def test_router_bad_input_in_seldons_form(router: ServerProcess) -> None:
    for body, text in (
        ({"foo": 1}, "send data.ndarray, data.tensor, strData, jsonData or binData"),
        ({"data": {"tensor": {"shape": [3], "values": [1, 2]}}}, "do not fit shape"),
        ({"binData": "***"}, "base64"),
    ):
        assert_seldon_error(requests.post(f"{router.url}/route", json=body, timeout=10), 400, text)
    assert_seldon_error(requests.post(f"{router.url}/route", data=b"{oops", timeout=10), 400, "not valid JSON")
    # a feedback without a routing: EpsilonGreedy indexes its lists with None
    feedback = {"request": {"data": {"ndarray": ROWS}}, "reward": 1.0}
    assert_seldon_error(requests.post(f"{router.url}/send-feedback", json=feedback, timeout=10), 400,
                        "EpsilonGreedy.send_feedback rejected the input: TypeError")
    # aggregate on a ROUTER class: Seldon's "Aggregate not defined"
    assert_seldon_error(requests.post(f"{router.url}/aggregate", json={"seldonMessages": [{"strData": "x"}]},
                                      timeout=10), 400, "Aggregate not defined")
    # still serving
    assert requests.post(f"{router.url}/route", json={"strData": "x"}, timeout=10).json()["data"]["tensor"] == {
        "shape": [1, 1], "values": [2]}


def test_combiner_from_seldons_docs_answers_as_the_class(combiner: ServerProcess) -> None:
    first, second = [[0.1, 0.7, 0.2]], [[0.3, 0.3, 0.4]]
    expected = load_class("ImageNetCombiner")().aggregate([np.array(first), np.array(second)], [[], []])
    messages = {"seldonMessages": [{"data": {"ndarray": first}}, {"data": {"names": ["a", "b", "c"], "ndarray": second}}]}
    answer = requests.post(f"{combiner.url}/aggregate", data=form(messages), timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"data": {"names": ["t:0", "t:1", "t:2"], "ndarray": expected.tolist()}, "meta": {}}
    # a bare list of messages, as a GET ?json=; tensors answer as a tensor (the first message's form)
    tensors = [{"data": {"tensor": {"shape": [1, 3], "values": first[0]}}}, {"data": {"ndarray": second}}]
    answer = requests.get(f"{combiner.url}/aggregate", params=form(tensors), timeout=10).json()
    assert answer["data"]["tensor"] == {"shape": [1, 3], "values": expected.reshape(-1).tolist()}
    # meta of every message merged: tags (later wins), metrics, requestPath; puid of the first
    tagged = {"seldonMessages": [
        {"meta": {"puid": "one", "tags": {"a": 1, "both": 1}, "requestPath": {"m1": "img:1"},
                  "metrics": [{"key": "g", "type": "GAUGE", "value": 3}]}, "data": {"ndarray": first}},
        {"meta": {"tags": {"both": 2}, "requestPath": {"m2": "img:2"}}, "data": {"ndarray": second}}]}
    answer = requests.post(f"{combiner.url}/aggregate", json=tagged, timeout=10).json()
    assert answer["meta"] == {"tags": {"a": 1, "both": 2}, "metrics": [{"key": "g", "type": "GAUGE", "value": 3}],
                              "puid": "one", "requestPath": {"m1": "img:1", "m2": "img:2"}}
    # V2: one input per child, aggregated
    v2 = {"inputs": [{"name": "a", "datatype": "FP64", "shape": [1, 3], "data": first[0]},
                     {"name": "b", "datatype": "FP64", "shape": [1, 3], "data": second[0]}]}
    out = requests.post(f"{combiner.url}/v2/models/ImageNetCombiner/infer", json=v2, timeout=10).json()["outputs"][0]
    assert out["shape"] == [1, 3] and out["data"] == pytest.approx(expected.reshape(-1).tolist())


def test_combiner_bad_input_in_seldons_form(combiner: ServerProcess) -> None:
    url = f"{combiner.url}/aggregate"
    for body, text in (
        ({"wrong": []}, 'aggregate takes {"seldonMessages": [message, ...]}'),
        ({"seldonMessages": {"data": {"ndarray": [1]}}}, 'aggregate takes {"seldonMessages"'),
        ({"seldonMessages": []}, "seldonMessages is empty"),
        ({"seldonMessages": [{"data": {"ndarray": [1]}}, {"data2": {}}]}, "seldonMessages[1]: send data.ndarray"),
        ({"seldonMessages": [{"strData": "x"}] * 1001}, "1001 messages; aggregate takes at most 1000"),
        # the class's own failure (one message: Xs[1] does not exist)
        ({"seldonMessages": [{"data": {"ndarray": [1]}}]}, "ImageNetCombiner.aggregate rejected the input: IndexError"),
    ):
        assert_seldon_error(requests.post(url, json=body, timeout=10), 400, text)
    assert_seldon_error(requests.post(f"{combiner.url}/route", json={"data": {"ndarray": [1]}}, timeout=10), 400,
                        "Route not defined")
    ok = requests.post(url, json={"seldonMessages": [{"data": {"ndarray": [[1, 2]]}}] * 2}, timeout=10)
    assert ok.status_code == 200 and ok.json()["data"]["ndarray"] == [[1.0, 2.0]]


def test_transformer_types_pick_the_method_other_protocols_run(classes: Path) -> None:
    v2 = {"inputs": [{"name": "x", "datatype": "FP64", "shape": [1, 2], "data": [10.0, 25.0]}]}
    for service_type, expected in (("TRANSFORMER", [1.0, 2.5]), ("OUTPUT_TRANSFORMER", [100.0, 250.0])):
        with ServerProcess(["microservice", "Scaler", "--service-type", service_type], cwd=classes) as server:
            out = requests.post(f"{server.url}/v2/models/Scaler/infer", json=v2, timeout=10).json()["outputs"][0]
            assert out["data"] == expected, service_type
            # Seldon's routes run their own method whatever the type; meta reaches methods taking meta=
            message = {"meta": {"puid": "q", "tags": {"t": 1}}, "data": {"ndarray": [[10, 20]]}}
            answer = requests.post(f"{server.url}/transform-input", json=message, timeout=10).json()
            assert answer == {"data": {"names": ["low", "mid", "high", "top"], "ndarray": [[1.0, 2.0]]},
                              "meta": {"tags": {"t": 1}, "puid": "q"}}
            answer = requests.post(f"{server.url}/transform-output", json={"meta": {"puid": "z"}, "jsonData": {"v": 1}},
                                   timeout=10).json()
            assert answer == {"jsonData": {"output": {"v": 1}, "puid": "z"}, "meta": {"puid": "z"}}


def test_raw_methods_answer_their_messages(classes: Path) -> None:
    with ServerProcess(["microservice", "RawNode"], cwd=classes) as server:
        answer = requests.post(f"{server.url}/route", json={"data": {"ndarray": [[1], [2], [3]]}}, timeout=10)
        assert answer.json() == {"data": {"names": ["route"], "ndarray": [[1]]}, "meta": {"tags": {"raw": "route"}}}
        answer = requests.post(f"{server.url}/aggregate", json=[{"strData": "a"}, {"jsonData": {}}], timeout=10)
        assert answer.json() == {"jsonData": {"count": 2, "kinds": [["strData"], ["jsonData"]]}}
        answer = requests.post(f"{server.url}/predict", json={"strData": "x"}, timeout=10)
        assert answer.status_code == 422 and answer.json()["status"]["reason"] == "RAW_REFUSED"
        # through V2 the raw method gets a message made of the tensors, and its answer comes back as one
        v2 = {"inputs": [{"name": "x", "datatype": "INT64", "shape": [1, 1], "data": [7]}]}
        out = requests.post(f"{server.url}/v2/models/RawNode/infer", json=v2, timeout=10).json()["outputs"][0]
        assert out["data"] == [7] and out["shape"] == [1, 1]


def runtime_for(source: str, name: str, tmp_path: Path, service_type: str = "MODEL") -> Any:
    (tmp_path / f"{name}.py").write_text(source)
    sys.path.insert(0, str(tmp_path))
    try:
        module = importlib.import_module(name)
    finally:
        sys.path.remove(str(tmp_path))
    runtime_class = adapt_seldon_class(getattr(module, name))
    assert runtime_class is not None
    settings = ModelSettings(name=name, parameters=ModelParameters(extra={"seldon_service_type": service_type}))
    runtime = runtime_class(settings)
    runtime.load()
    return runtime


SELDON_COMPONENT = '''
import numpy as np


class SeldonNotImplementedError(Exception):  # as seldon_core.user_model names it
    status_code = 400


class SeldonResponse:  # seldon_core.user_model.SeldonResponse's shape
    def __init__(self, data, tags=None, metrics=None):
        self.data, self.tags, self.metrics = data, tags or {}, metrics or []


class Component:
    """SeldonComponent's defaults raise SeldonNotImplementedError: they count as missing."""

    def predict(self, X, names, meta=None):
        return SeldonResponse(np.asarray(X) + 1, tags={"run": meta.get("puid") if meta else None},
                              metrics=[{"type": "GAUGE", "key": "rows", "value": len(X)}])

    def transform_input(self, X, names, meta=None):
        raise SeldonNotImplementedError("transform_input is not implemented")

    def route(self, X, names):
        return np.int64(1)  # not a Python int: Seldon refuses it

    def tags(self):
        return {"static": "tag", "run": "overridden"}

    def metrics(self):
        return [{"type": "NOPE", "key": "bad", "value": 1}] if getattr(self, "bad", False) else []

    def class_names(self):
        raise SeldonNotImplementedError("class_names is not implemented")
'''


def test_seldon_component_conventions(tmp_path: Path) -> None:
    runtime = runtime_for(SELDON_COMPONENT, "Component", tmp_path)
    rows = Tensor("x", np.array([[1.0, 2.0]]))
    answer = runtime.predict(InferenceRequest([rows], parameters={"meta": {"puid": "m1"}}))
    assert answer.outputs[0].data.tolist() == [[2.0, 3.0]]
    # SeldonResponse's tags win over tags(); its metrics follow metrics()
    assert answer.parameters["meta"] == {"tags": {"static": "tag", "run": "m1"},
                                         "metrics": [{"type": "GAUGE", "key": "rows", "value": 1}]}
    assert "names" not in answer.parameters  # class_names not implemented: the front names t:0, t:1
    # a transform raising SeldonNotImplementedError passes the data through
    through = runtime.predict(InferenceRequest([rows], parameters={"seldon_method": "transform_input"}))
    assert through.outputs[0].data.tolist() == [[1.0, 2.0]]
    with pytest.raises(ServekitError, match=r"Routing response must be int but got 1 \(int64\)") as routed:
        runtime.predict(InferenceRequest([rows], parameters={"seldon_method": "route"}))
    assert routed.value.status == 400
    runtime.user.bad = True
    with pytest.raises(ServekitError, match="Bad metric created during request") as bad:
        runtime.predict(InferenceRequest([rows]))
    answer_body = json.loads(error_response(bad.value).body)
    assert bad.value.status == 500 and answer_body["status"]["reason"] == "MICROSERVICE_BAD_METRIC"


def test_microservice_refuses_what_it_cannot_serve(tmp_path: Path) -> None:
    shutil.copy(CLASSES / "ImageNetCombiner.py", tmp_path / "ImageNetCombiner.py")
    for args, text in (
        (["Nope"], "cannot serve 'Nope.Nope': cannot import 'Nope': No module named 'Nope'; servekit microservice "
                   "MyModel serves class MyModel of MyModel.py in the current folder"),
        (["ImageNetCombiner.Nope"], "module 'ImageNetCombiner' has no 'Nope'"),
        (["ImageNetCombiner", "--service-type", "ROUTER"], "is served as a ROUTER but has no route()"),
        (["ImageNetCombiner", "--service-type", "SPLITTER"], "invalid choice: 'SPLITTER'"),
    ):
        done = subprocess.run([sys.executable, "-m", "servekit", "microservice", *args, "--http-port",
                               str(free_port())], cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, done.stderr
        assert text in done.stderr and "Traceback" not in done.stderr, done.stderr
        assert "ready" not in done.stderr


@pytest.mark.skipif(not PEER.exists(), reason="seldon-core-microservice runs in conformance/seldon's venv "
                                              "(python3 conformance/seldon/run makes it)")
def test_answers_equal_seldon_core_microservice(classes: Path) -> None:
    calls = {
        "EpsilonGreedy": (["--service-type", "ROUTER", "--parameters", ROUTER_PARAMETERS], [
            ("/route", {"data": {"ndarray": ROWS}}),
            ("/route", {"meta": {"puid": "x", "tags": {"in": 1}}, "data": {"tensor": {"shape": [1, 2], "values": [1, 2]}}}),
            ("/route", {"strData": "s"}),
            ("/predict", {"data": {"ndarray": ROWS}}),
            ("/send-feedback", {"request": {"data": {"ndarray": ROWS}}, "response": {"meta": {"routing": {"0": 1}}},
                                "reward": 1.0}),
            ("/send-feedback", {"request": {"data": {"tensor": {"shape": [1, 2], "values": [1, 2]}}},
                                "response": {"meta": {"routing": {"0": 2}}}, "reward": 0.0}),
            ("/aggregate", {"seldonMessages": [{"strData": "x"}]}),
        ]),
        "ImageNetCombiner": (["--service-type", "COMBINER"], [
            ("/aggregate", {"seldonMessages": [{"data": {"ndarray": [[1, 2]]}}, {"data": {"ndarray": [[3, 5]]}}]}),
            ("/aggregate", [{"data": {"tensor": {"shape": [2], "values": [1, 2]}}}, {"data": {"ndarray": [3, 5]}}]),
            ("/aggregate", {"seldonMessages": [{"meta": {"tags": {"a": 1}}, "data": {"ndarray": [1]}},
                                               {"meta": {"tags": {"a": 2}, "requestPath": {"n": "i"}},
                                                "data": {"ndarray": [2]}}]}),
            ("/aggregate", {"wrong": []}),
            ("/route", {"data": {"ndarray": [1]}}),
        ]),
    }

    def answers(command: list[str], cls: str, flags: list[str]) -> list[tuple[int, Any]]:
        port = free_port()
        ports = ["--http-port", str(port), "--grpc-port", str(free_port()), "--metrics-port", str(free_port())]
        process = subprocess.Popen([*command, cls, *flags, *ports], cwd=classes, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            for _ in range(300):
                try:
                    if requests.get(f"http://127.0.0.1:{port}/health/ping", timeout=1).status_code == 200:
                        break
                except requests.RequestException:
                    pass
                if process.poll() is not None:
                    raise RuntimeError(f"{command[0]} exited with {process.returncode}")
                time.sleep(0.1)
            out = []
            for path, message in calls[cls][1]:
                answer = requests.post(f"http://127.0.0.1:{port}{path}", data=form(message), timeout=10)
                body = answer.json()
                if "status" in body:  # errors: same status and reason, their own texts
                    body = {k: v for k, v in body["status"].items() if k != "info"}
                out.append((answer.status_code, body))
            return out
        finally:
            os.killpg(process.pid, signal.SIGTERM)  # its own group: gunicorn's workers too
            process.wait(timeout=20)

    for cls, (flags, _) in calls.items():
        theirs = answers([str(PEER)], cls, flags)
        mine = answers([sys.executable, "-m", "servekit", "microservice"], cls, flags)
        assert mine == theirs, cls


def seldon_entry(root: Path, name: str, cls: str, service_type: str = "MODEL", **init: Any) -> None:
    folder = root / name
    folder.mkdir()
    shutil.copy(CLASSES / f"{cls}.py", folder / f"{cls}.py")
    extra = {"seldon_service_type": service_type, "init_parameters": init}
    settings = {"name": name, "implementation": f"{cls}.{cls}", "parameters": {"extra": extra}}
    (folder / "model-settings.json").write_text(json.dumps(settings))


def graph_entry(root: Path, name: str, nodes: dict[str, Any]) -> None:
    (root / name).mkdir()
    settings = {"name": name, "implementation": "graph", "graph": {"nodes": nodes}}
    (root / name / "model-settings.json").write_text(json.dumps(settings))


@pytest.fixture(scope="module")
def graphs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("seldon-graphs")
    seldon_entry(root, "router", "EpsilonGreedy", "ROUTER", n_branches=2, epsilon=0.0, best_branch=1)
    seldon_entry(root, "router3", "EpsilonGreedy", "ROUTER", n_branches=3, epsilon=0.0, best_branch=2)
    seldon_entry(root, "combiner", "ImageNetCombiner", "COMBINER")
    seldon_entry(root, "double", "Doubler", factor=2.0)
    seldon_entry(root, "triple", "Doubler", factor=3.0)
    seldon_entry(root, "scaler", "Scaler", "TRANSFORMER")
    # Seldon's graph: a router whose second child is a combiner of two models
    graph_entry(root, "routed", {
        "root": {"routerType": "Router", "serviceName": "router",
                 "steps": [{"serviceName": "double"}, {"nodeName": "both"}]},
        "both": {"routerType": "Combiner", "serviceName": "combiner",
                 "steps": [{"serviceName": "double"}, {"serviceName": "triple"}]},
    })
    # the router picks child 2 of 2: the graph fails naming the node
    graph_entry(root, "misrouted", {"root": {"routerType": "Router", "serviceName": "router3",
                                             "steps": [{"serviceName": "double"}, {"serviceName": "triple"}]}})
    # input transformer -> model -> output transformer
    graph_entry(root, "transformed", {
        "root": {"routerType": "OutputTransformer", "serviceName": "scaler", "steps": [{"nodeName": "pre"}]},
        "pre": {"routerType": "Transformer", "serviceName": "scaler", "steps": [{"serviceName": "double"}]},
    })
    with ServerProcess(["serve", str(root)]) as server:
        yield server


def v2(url: str, model: str, rows: list[list[float]]) -> requests.Response:
    body = {"inputs": [{"name": "x", "datatype": "FP64", "shape": [len(rows), len(rows[0])],
                        "data": [v for row in rows for v in row]}]}
    return requests.post(f"{url}/v2/models/{model}/infer", json=body, timeout=10)


def test_graph_with_router_and_combiner_nodes(graphs: ServerProcess) -> None:
    rows = [[1.0, 2.0, 3.0]]
    # by hand, in process: the router picks a child, the combiner averages both models
    router = load_class("EpsilonGreedy")(n_branches=2, epsilon=0.0, best_branch=1)
    double, triple = load_class("Doubler")(factor=2.0), load_class("Doubler")(factor=3.0)
    X = np.array(rows)
    assert router.route(X, []) == 1
    expected = load_class("ImageNetCombiner")().aggregate([double.predict(X), triple.predict(X)], [[], []])
    answer = v2(graphs.url, "routed", rows)
    assert answer.status_code == 200, answer.text
    out = answer.json()["outputs"][0]
    assert out["shape"] == list(expected.shape) and out["data"] == pytest.approx(expected.reshape(-1).tolist())
    # each node's model was called through the data plane: its own counts, under protocol "graph"
    metrics = requests.get(f"http://127.0.0.1:{graphs.metrics_port}/metrics", timeout=10).text
    for model in ("router", "combiner", "double", "triple"):
        assert any(f'model="{model}"' in line and 'protocol="graph"' in line for line in metrics.splitlines()), model


def test_graph_with_transformer_nodes(graphs: ServerProcess) -> None:
    scaler, double = load_class("Scaler")(), load_class("Doubler")(factor=2.0)
    X = np.array([[10.0, 20.0]])
    expected = scaler.transform_output(double.predict(scaler.transform_input(X, [])), [])
    out = v2(graphs.url, "transformed", X.tolist()).json()["outputs"][0]
    assert out["data"] == expected.reshape(-1).tolist() == [20.0, 40.0]


def test_graph_router_out_of_range_names_the_node(graphs: ServerProcess) -> None:
    answer = v2(graphs.url, "misrouted", [[1.0, 2.0]])
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert "graph 'misrouted' router node 'root'" in error and "chose child 2, but the node has 2" in error
    assert v2(graphs.url, "routed", [[1.0, 2.0]]).status_code == 200  # still serving
