"""Inference graphs (servekit.graphs): graphs of served sklearn models answer
what calling their nodes by hand answers, through V2 REST, V2 gRPC and KServe
V1; each node kind (Sequence with a map, conditions and soft steps, Switch,
Ensemble, Splitter, a graph inside a graph); metadata from the nodes; node
calls counted under protocol "graph" and traced as spans under the graph's
request; a failing node named in the error;
cycles (a node reaching itself, a graph calling itself, graphs calling each
other) refused; GJSON conditions read as GJSON reads them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import requests
import yaml
from servers import ServerProcess
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier

from servekit.graphs.conditions import parse_condition
from servekit.graphs.spec import GraphError, parse_graph

X, Y = load_iris(return_X_y=True)
ROWS = X[[0, 60, 120]]  # one of each class


def graph_entry(root: Path, name: str, nodes: dict[str, Any], *, as_yaml: bool = False) -> None:
    folder = root / name
    folder.mkdir()
    if as_yaml:  # a graph.yaml alone in its folder is a model too
        (folder / "graph.yaml").write_text(yaml.safe_dump({"nodes": nodes}))
        return
    settings = {"name": name, "implementation": "graph", "graph": {"nodes": nodes}}
    (folder / "model-settings.json").write_text(json.dumps(settings))


def sklearn_entry(root: Path, name: str, model: Any, output: str | None = None) -> None:
    folder = root / name
    folder.mkdir()
    joblib.dump(model, folder / "model.joblib")
    if output:
        settings = {"name": name, "parameters": {"uri": "model.joblib", "extra": {"default_output": output}}}
        (folder / "model-settings.json").write_text(json.dumps(settings))


SEQ = {"root": {"routerType": "Sequence", "steps": [
    {"serviceName": "scaler"},
    {"serviceName": "iris", "map": {"transform": "scaled"}},
]}}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root: Path = tmp_path_factory.mktemp("graphs")
    scaler = StandardScaler().fit(X)
    sklearn_entry(root, "scaler", scaler, "transform")
    sklearn_entry(root, "iris", LogisticRegression(max_iter=500).fit(scaler.transform(X), Y))
    sklearn_entry(root, "tree", DecisionTreeClassifier(random_state=0).fit(X, Y))
    sklearn_entry(root, "proba", LogisticRegression(max_iter=500).fit(X, Y), "predict_proba")
    # trained on five features: the graph's four-feature rows make it fail
    sklearn_entry(root, "five", LogisticRegression(max_iter=500).fit(np.hstack([X, X[:, :1]]), Y))
    graph_entry(root, "seq", SEQ)
    # a node that waits up to 2 s to merge up to 4 requests: concurrent graph calls reach it together
    sklearn_entry(root, "merging", DecisionTreeClassifier(random_state=0).fit(X, Y))
    (root / "merging" / "model-settings.json").write_text(json.dumps(
        {"name": "merging", "parameters": {"uri": "model.joblib"}, "max_batch_size": 4, "max_batch_time": 2.0}))
    graph_entry(root, "over-merging", {"root": {"routerType": "Sequence", "steps": [{"serviceName": "merging"}]}})
    graph_entry(root, "switch", {"root": {"routerType": "Switch", "steps": [
        {"serviceName": "tree", "condition": '[@this].#(parameters.route=="tree")'},
        {"serviceName": "seq"},  # a graph inside a graph
    ]}})
    graph_entry(root, "ensemble", {
        "root": {"routerType": "Ensemble", "steps": [{"nodeName": "chain", "name": "seq"}, {"serviceName": "tree"}]},
        "chain": SEQ["root"],
    }, as_yaml=True)
    graph_entry(root, "split", {"root": {"routerType": "Splitter", "steps": [
        {"serviceName": "tree", "weight": 50}, {"serviceName": "proba", "weight": 50}]}})
    graph_entry(root, "split100", {"root": {"routerType": "Splitter", "steps": [
        {"serviceName": "tree", "weight": 100}, {"serviceName": "proba", "weight": 0}]}})
    graph_entry(root, "gated", {"root": {"routerType": "Sequence", "steps": [
        {"serviceName": "tree"},
        # runs only when the tree said class 0; then it answers the original request
        {"serviceName": "proba", "condition": "predict.#(==0)", "data": "$request"},
    ]}})
    graph_entry(root, "broken", {"root": {"routerType": "Sequence", "steps": [
        {"serviceName": "tree"}, {"serviceName": "five", "name": "bad-step"}]}})
    graph_entry(root, "soft", {"root": {"routerType": "Sequence", "steps": [
        {"serviceName": "five", "dependency": "Soft"}, {"serviceName": "tree"}]}})
    graph_entry(root, "missing", {"root": {"routerType": "Sequence", "steps": [{"serviceName": "nobody"}]}})
    graph_entry(root, "selfish", {"root": {"routerType": "Sequence", "steps": [{"serviceName": "selfish"}]}})
    graph_entry(root, "loop", {
        "root": {"routerType": "Sequence", "steps": [{"nodeName": "again"}]},
        "again": {"routerType": "Sequence", "steps": [{"nodeName": "root"}]},
    })
    graph_entry(root, "ping", {"root": {"routerType": "Sequence", "steps": [{"serviceName": "pong"}]}})
    graph_entry(root, "pong", {"root": {"routerType": "Sequence", "steps": [{"serviceName": "ping"}]}})
    with ServerProcess(["serve", str(root)]) as process:
        yield process


def v2(server: ServerProcess, model: str, rows: np.ndarray, **extra: Any) -> requests.Response:
    body = {"inputs": [{"name": "x", "datatype": "FP64", "shape": list(rows.shape),
                        "data": rows.reshape(-1).tolist()}], **extra}
    return requests.post(f"{server.url}/v2/models/{model}/infer", json=body, timeout=30)


def outputs(response: requests.Response) -> dict[str, np.ndarray]:
    assert response.status_code == 200, response.text
    return {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in response.json()["outputs"]}


def by_hand(server: ServerProcess, rows: np.ndarray) -> np.ndarray:
    scaled = outputs(v2(server, "scaler", rows))["transform"]
    return outputs(v2(server, "iris", scaled))["predict"]


def test_a_sequence_answers_what_its_nodes_answer_in_turn(server: ServerProcess) -> None:
    expected = by_hand(server, ROWS)
    assert expected.reshape(-1).tolist() == [0, 1, 2]
    answer = v2(server, "seq", ROWS)
    assert answer.json()["model_name"] == "seq"
    assert np.array_equal(outputs(answer)["predict"], expected)


def test_a_graph_is_served_through_every_protocol(server: ServerProcess) -> None:
    import tritonclient.grpc as grpcclient

    expected = by_hand(server, ROWS).reshape(-1).tolist()
    v1 = requests.post(f"{server.url}/v1/models/seq:predict", json={"instances": ROWS.tolist()}, timeout=30)
    assert v1.status_code == 200 and v1.json() == {"predictions": expected}
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    tensor = grpcclient.InferInput("x", list(ROWS.shape), "FP64")
    tensor.set_data_from_numpy(ROWS)
    result = client.infer("seq", [tensor])
    assert result.as_numpy("predict").reshape(-1).tolist() == expected
    assert client.is_model_ready("seq")


def test_a_graphs_metadata_are_its_first_inputs_and_last_outputs(server: ServerProcess) -> None:
    graph = requests.get(f"{server.url}/v2/models/seq", timeout=10).json()
    scaler = requests.get(f"{server.url}/v2/models/scaler", timeout=10).json()
    iris = requests.get(f"{server.url}/v2/models/iris", timeout=10).json()
    assert graph["platform"] == "graph"
    assert graph["inputs"] == scaler["inputs"] and graph["outputs"] == iris["outputs"]
    ensemble = requests.get(f"{server.url}/v2/models/ensemble", timeout=10).json()
    tree = requests.get(f"{server.url}/v2/models/tree", timeout=10).json()
    names = [o["name"] for o in ensemble["outputs"]]
    assert names == [f"seq.{o['name']}" for o in iris["outputs"]] + [f"tree.{o['name']}" for o in tree["outputs"]]


def test_node_calls_are_counted_per_node_under_protocol_graph(server: ServerProcess) -> None:
    v2(server, "seq", ROWS)
    text = requests.get(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10).text
    for model in ("scaler", "iris"):
        line = next(x for x in text.splitlines()
                    if x.startswith("servekit_model_requests_total{") and f'model="{model}"' in x
                    and 'protocol="graph"' in x)
        assert float(line.split()[-1]) >= 1


def test_concurrent_graph_calls_run_side_by_side_and_their_nodes_merge_them(server: ServerProcess) -> None:
    import threading

    answers: dict[int, np.ndarray] = {}

    def call(i: int) -> None:
        answers[i] = outputs(v2(server, "over-merging", ROWS[i % 3 : i % 3 + 1]))["predict"]

    threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {i: a.reshape(-1).tolist() for i, a in answers.items()} == {0: [0], 1: [1], 2: [2], 3: [0]}
    stats = requests.get(f"{server.url}/v2/models/merging/stats", timeout=10).json()["model_stats"][0]
    # the graph did not serialise its calls: the node saw them together and ran them as one batch
    assert max(b["batch_size"] for b in stats["batch_stats"]) > 1, stats["batch_stats"]


def test_a_switch_picks_the_branch_whose_condition_holds(server: ServerProcess) -> None:
    tree = outputs(v2(server, "tree", ROWS))["predict"]
    routed = v2(server, "switch", ROWS, parameters={"route": "tree"})
    assert np.array_equal(outputs(routed)["predict"], tree)
    # no route: the last step, itself a graph
    assert np.array_equal(outputs(v2(server, "switch", ROWS))["predict"], by_hand(server, ROWS))


def test_an_ensemble_merges_every_steps_outputs_under_its_name(server: ServerProcess) -> None:
    merged = outputs(v2(server, "ensemble", ROWS))
    assert sorted(merged) == ["seq.predict", "tree.predict"]
    assert np.array_equal(merged["seq.predict"], by_hand(server, ROWS))
    assert np.array_equal(merged["tree.predict"], outputs(v2(server, "tree", ROWS))["predict"])
    # the outputs a client asks for, by their merged names
    picked = v2(server, "ensemble", ROWS, outputs=[{"name": "tree.predict"}])
    assert list(outputs(picked)) == ["tree.predict"]
    wrong = v2(server, "ensemble", ROWS, outputs=[{"name": "predict"}])
    assert wrong.status_code == 400 and "seq.predict" in wrong.json()["error"]


def test_a_splitter_sends_each_request_to_one_step_by_weight(server: ServerProcess) -> None:
    row = ROWS[:1]
    tree = outputs(v2(server, "tree", row))
    proba = outputs(v2(server, "proba", row))
    for _ in range(10):
        assert outputs(v2(server, "split100", row)).keys() == tree.keys()
    seen = set()
    for _ in range(60):  # both sides at 50 %: missing one has odds 2 in 2**60
        answer = outputs(v2(server, "split", row))
        name, values = next(iter(answer.items()))
        assert np.array_equal(values, {**tree, **proba}[name])
        seen.add(name)
    assert seen == {"predict", "predict_proba"}


def test_a_sequence_step_with_a_condition_runs_only_when_it_holds(server: ServerProcess) -> None:
    setosa, virginica = ROWS[:1], ROWS[2:]
    answered = outputs(v2(server, "gated", setosa))
    assert list(answered) == ["predict_proba"]
    assert np.allclose(answered["predict_proba"], outputs(v2(server, "proba", setosa))["predict_proba"])
    skipped = outputs(v2(server, "gated", virginica))
    assert list(skipped) == ["predict"] and skipped["predict"].reshape(-1).tolist() == [2]


def test_a_failing_node_fails_the_graph_with_its_name(server: ServerProcess) -> None:
    answer = v2(server, "broken", ROWS)
    assert answer.status_code in (400, 500)
    error = answer.json()["error"]
    assert error.startswith("graph 'broken' node 'root' step 'bad-step' (model 'five'):"), error
    assert "features" in error  # the node's own message follows
    # the same through KServe V1, in its error format, and the server goes on serving
    v1 = requests.post(f"{server.url}/v1/models/broken:predict", json={"instances": ROWS.tolist()}, timeout=30)
    assert v1.status_code == answer.status_code and "step 'bad-step'" in v1.json()["error"]
    missing = v2(server, "missing", ROWS)
    assert missing.status_code == 404 and "step 'nobody' (model 'nobody')" in missing.json()["error"]
    assert np.array_equal(outputs(v2(server, "seq", ROWS))["predict"], by_hand(server, ROWS))


def test_a_soft_step_that_fails_is_skipped(server: ServerProcess) -> None:
    assert np.array_equal(outputs(v2(server, "soft", ROWS))["predict"], outputs(v2(server, "tree", ROWS))["predict"])


def index(server: ServerProcess) -> dict[str, dict[str, Any]]:
    listed = requests.post(f"{server.url}/v2/repository/index", json={}, timeout=10).json()
    return {entry["name"]: entry for entry in listed}


def test_cycles_are_refused_with_the_path(server: ServerProcess) -> None:
    models = index(server)
    assert models["selfish"]["state"] == "UNAVAILABLE"
    assert "calls the graph itself" in models["selfish"]["reason"]
    assert models["loop"]["state"] == "UNAVAILABLE"
    assert "cycle: root -> again -> root" in models["loop"]["reason"]
    # graphs calling each other: both load, neither answers, each names the cycle
    for name, path in (("ping", "ping -> pong -> ping"), ("pong", "pong -> ping -> pong")):
        answer = v2(server, name, ROWS)
        assert answer.status_code == 500 and path in answer.json()["error"], answer.text


# -- the graph's form, checked without a server ------------------------------------------------
@pytest.mark.parametrize(("nodes", "message"), [
    ({"first": {"routerType": "Sequence", "steps": [{"serviceName": "a"}]}}, "no node named 'root'"),
    ({"root": {"routerType": "Splitter", "steps": [{"serviceName": "a", "weight": 60},
                                                     {"serviceName": "b", "weight": 30}]}}, "sum to 100"),
    ({"root": {"routerType": "Switch", "steps": [{"serviceName": "a"}, {"serviceName": "b"}]}}, "no condition"),
    ({"root": {"routerType": "Loop", "steps": [{"serviceName": "a"}]}}, "unknown routerType 'Loop'"),
    ({"root": {"routerType": "Sequence", "steps": [{"serviceUrl": "http://x"}]}}, "serviceUrl is not supported"),
    ({"root": {"routerType": "Sequence", "steps": [{"serviceName": "a", "nodeName": "b"}]}}, "exactly one"),
    ({"root": {"routerType": "Sequence", "steps": [{"serviceName": "a", "condition": "a.@reverse"}]}},
     "modifiers"),
    ({"root": {"routerType": "Sequence", "steps": [{"serviceName": "a", "dependancy": "Soft"}]}},
     "unknown keys dependancy"),
    ({"root": {"routerType": "Sequence", "steps": [{"serviceName": "a"}, {"serviceName": "a"}]}}, "unique"),
    ({"root": {"routerType": "Sequence", "steps": [{"serviceName": "a\nb"}]}}, "is not a name"),
    ({f"n{i}": {"routerType": "Sequence", "steps": []} for i in range(65)}, "the limit is 64"),
])
def test_a_wrong_graph_is_refused_saying_why(nodes: dict[str, Any], message: str) -> None:
    from servekit.graphs.kinds import node_kinds

    with pytest.raises(GraphError) as caught:
        parse_graph("g", {"nodes": nodes}, node_kinds())
    assert message in caught.value.message


@pytest.mark.parametrize(("path", "document", "holds"), [
    ("a.b", {"a": {"b": 0}}, True),
    ("a.c", {"a": {"b": 0}}, False),
    ("a.1", {"a": [5, 6]}, True),
    ("a.2", {"a": [5, 6]}, False),
    ("a.#(>5)", {"a": [5, 6]}, True),
    ("a.#(>6)", {"a": [5, 6]}, False),
    ("a.#(b==\"x\")", {"a": [{"b": "y"}, {"b": "x"}]}, True),
    ("a.#(b==x)", {"a": [{"b": "y"}]}, False),
    ("a.#(b%\"x*\")", {"a": [{"b": "xyz"}]}, True),
    ("a.#(b!%\"x*\")", {"a": [{"b": "xyz"}]}, False),
    ("a.#(c)", {"a": [{"b": 1}]}, False),
    ("a.#(c)", {"a": [{"b": 1}, {"c": None}]}, True),
    ("[@this].#(decision==ACCEPT)", {"decision": "ACCEPT"}, True),
    ("[@this].#(decision==ACCEPT)", {"decision": "REJECT"}, False),
    ("a\\.b", {"a.b": 1}, True),
    ("a*.c", {"abc": {"c": 1}}, True),
    ("a.#.b", {"a": [{"b": 1}]}, True),
    ("outputs.#(name==\"predict\").data.#(==2)", {"outputs": [{"name": "predict", "data": [1, 2]}]}, True),
])
def test_conditions_read_as_gjson_reads_them(path: str, document: Any, holds: bool) -> None:
    assert parse_condition(path).holds(document) is holds


def test_a_condition_finds_values() -> None:
    assert parse_condition("a.#").find({"a": [1, 2, 3]}) == 3
    assert parse_condition("a.#(b>1)#.b").find({"a": [{"b": 1}, {"b": 2}, {"b": 3}]}) == [2, 3]


def test_each_node_call_is_a_span_under_the_graphs_request(tmp_path: Path) -> None:
    import time

    from test_tracing import Receiver

    scaler = StandardScaler().fit(X)
    sklearn_entry(tmp_path, "scaler", scaler, "transform")
    sklearn_entry(tmp_path, "iris", LogisticRegression(max_iter=500).fit(scaler.transform(X), Y))
    graph_entry(tmp_path, "seq", SEQ)
    receiver = Receiver()
    try:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.port}", "OTEL_BSP_SCHEDULE_DELAY": "50"}
        with ServerProcess(["serve", str(tmp_path)], env=env) as process:
            body = {"inputs": [{"name": "x", "datatype": "FP64", "shape": [1, 4], "data": ROWS[0].tolist()}]}
            answer = requests.post(f"{process.url}/v2/models/seq/infer", json=body,
                                   headers={"X-Request-ID": "graph-trace-1"}, timeout=30)
            assert answer.status_code == 200
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                with receiver.lock:
                    spans = [s for s in receiver.spans if s.attributes.get("servekit.request_id") == "graph-trace-1"]
                if len(spans) >= 3:
                    break
                time.sleep(0.05)
    finally:
        receiver.close()
    request = next(s for s in spans if s.attributes.get("servekit.model") == "seq")
    nodes = sorted((s for s in spans if s.attributes.get("servekit.protocol") == "graph"), key=lambda s: s.start)
    assert [s.attributes["servekit.model"] for s in nodes] == ["scaler", "iris"]
    assert all(s.parent_id == request.span_id and s.trace_id == request.trace_id for s in nodes)
    assert request.start <= nodes[0].start and nodes[-1].end <= request.end


def test_conditions_see_small_tensors_only() -> None:
    from servekit.graphs.kinds import MAX_VIEW_ELEMENTS, GraphRun
    from servekit.graphs.spec import GraphSpec
    from servekit.tensors import InferenceRequest, Tensor

    small = InferenceRequest(inputs=[Tensor("x", np.array([[1.0, 2.0]])), Tensor("s", np.array([b"a"], dtype=object))],
                             parameters={"route": "b"})
    big = InferenceRequest(inputs=[Tensor("x", np.zeros(MAX_VIEW_ELEMENTS + 1))])
    run = GraphRun(GraphSpec("g", {}), small, None, {})  # type: ignore[arg-type]
    view = run.view(small)
    assert view["x"] == [[1.0, 2.0]] and view["s"] == ["a"] and view["instances"] == [[1.0, 2.0]]
    assert parse_condition("x.0.#(>1.5)").holds(view) and parse_condition("parameters.route").holds(view)
    large = run.view(big)
    assert "x" not in large and "instances" not in large and large["inputs"][0]["shape"] == [MAX_VIEW_ELEMENTS + 1]
