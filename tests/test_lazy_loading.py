"""Lazy loading and the model budget (servekit.residency) on a real server:
models load on their first request (once, however many requests wait), the
least recently used idle model is unloaded past ``--max-loaded-models`` /
``--max-loaded-memory``, an unloaded model answers again, the repository
index says which are loaded, and a model that fails to load says why.

The models are a small runtime that writes each load, unload and prediction
to a log file (with the worker's pid): the loads and unloads are counted
from what the runtime itself did, not from the server's own account.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import requests
from servers import SERVEKIT, ServerProcess
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

RUNTIME = '''
import os, time
import numpy as np
from servekit.runtimes.base import Runtime
from servekit.tensors import Tensor


class Counting(Runtime):
    """Multiplies its input by ``factor``; logs what it does to ``log``."""

    def _log(self, what):
        with open(self.settings.parameters.extra["log"], "a") as f:
            f.write(f"{os.getpid()} {what} {self.name}\\n")

    def load(self):
        extra = self.settings.parameters.extra
        self._log("load")
        time.sleep(float(extra.get("load_seconds", 0)))
        if extra.get("fail"):
            raise RuntimeError("weights missing for this customer")
        self.factor = float(extra["factor"])

    def predict(self, request):
        time.sleep(float(self.settings.parameters.extra.get("predict_seconds", 0)))
        self._log("predicted")
        return self.response(request, [Tensor("y", np.asarray(request.inputs[0].data) * self.factor)])

    def unload(self):
        self._log("unload")
'''


def counting_repo(root: Path, names: list[str], **extra: Any) -> Path:
    """A repository of Counting models ``names``; model i multiplies by i + 2."""
    (root / "lazy_counting.py").write_text(textwrap.dedent(RUNTIME))
    repo = root / "repo"
    for i, name in enumerate(names):
        folder = repo / name
        folder.mkdir(parents=True)
        params = {"factor": i + 2, "log": str(root / "events.log"), **extra.get(name, {})}
        (folder / "model-settings.json").write_text(json.dumps({
            "name": name, "implementation": "lazy_counting.Counting", "parameters": {"extra": params},
        }))
    return repo


def factor(names: list[str], name: str) -> int:
    return names.index(name) + 2


def events(root: Path) -> list[tuple[int, str, str]]:
    path = root / "events.log"
    if not path.exists():
        return []
    return [(int(pid), what, name) for pid, what, name in (line.split() for line in path.read_text().splitlines())]


def server(root: Path, repo: Path, *flags: str, workers: int = 1) -> ServerProcess:
    return ServerProcess(["serve", str(repo), "--no-load-models-at-startup", "--inline-predict-ms", "0", *flags],
                         workers=workers, env={"PYTHONPATH": str(root)})


def infer(url: str, name: str, value: float) -> requests.Response:
    body = {"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP64", "data": [value]}]}
    return requests.post(f"{url}/v2/models/{name}/infer", json=body, timeout=60)


def answer(url: str, name: str, value: float) -> float:
    reply = infer(url, name, value)
    assert reply.status_code == 200, reply.text
    document = reply.json()
    assert document["model_name"] == name
    return float(document["outputs"][0]["data"][0])


def index(url: str) -> dict[str, tuple[str, str]]:
    rows = requests.post(f"{url}/v2/repository/index", json={}, timeout=10).json()
    return {row["name"]: (row["state"], row["reason"]) for row in rows}


def metric(srv: ServerProcess, name: str) -> float:
    text = requests.get(f"http://127.0.0.1:{srv.metrics_port}/metrics", timeout=10).text
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + " ")
              or line.startswith(name + "{")]
    return sum(values)


def test_concurrent_first_requests_wait_on_one_load(tmp_path: Path) -> None:
    names = ["alpha", "beta"]
    repo = counting_repo(tmp_path, names, alpha={"load_seconds": 1.0})
    with server(tmp_path, repo) as srv:
        assert index(srv.url) == {"alpha": ("UNAVAILABLE", "unloaded"), "beta": ("UNAVAILABLE", "unloaded")}
        assert events(tmp_path) == []  # nothing loaded at start
        results: list[float] = []
        errors: list[BaseException] = []

        def ask(i: int) -> None:
            try:
                results.append(answer(srv.url, "alpha", i) / i)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(1, 17)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert results == [2.0] * 16  # every one of the first requests answered, correctly
        loads = [e for e in events(tmp_path) if e[1] == "load"]
        assert [(what, name) for _, what, name in loads] == [("load", "alpha")]
        assert index(srv.url) == {"alpha": ("READY", ""), "beta": ("UNAVAILABLE", "unloaded")}
        ready = requests.post(f"{srv.url}/v2/repository/index", json={"ready": True}, timeout=10).json()
        assert [row["name"] for row in ready] == ["alpha"]
        assert metric(srv, "servekit_model_loads_total") == 1
        assert metric(srv, "servekit_loaded_models") == 1


def test_grpc_loads_on_the_first_request_and_the_index_says_so(tmp_path: Path) -> None:
    import tritonclient.grpc as grpcclient

    names = ["g0", "g1", "g2"]
    repo = counting_repo(tmp_path, names)
    srv = ServerProcess(["serve", str(repo), "--max-loaded-models", "2"], env={"PYTHONPATH": str(tmp_path)})
    with srv:
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{srv.grpc_port}")
        states = {m.name: (m.state, m.reason) for m in client.get_model_repository_index().models}
        assert states == {n: ("UNAVAILABLE", "unloaded") for n in names}
        for name in names:
            x = grpcclient.InferInput("x", [1, 2], "FP64")
            x.set_data_from_numpy(np.array([[1.0, -2.5]]))
            result = client.infer(name, [x])
            assert result.as_numpy("y").tolist() == [[factor(names, name), -2.5 * factor(names, name)]]
        states = {m.name: (m.state, m.reason) for m in client.get_model_repository_index().models}
        assert states == {"g0": ("UNAVAILABLE", "unloaded"), "g1": ("READY", ""), "g2": ("READY", "")}
        assert [n for _, w, n in events(tmp_path) if w == "load"] == names
        client.close()


def test_least_recently_used_model_is_unloaded(tmp_path: Path) -> None:
    names = [f"m{i}" for i in range(6)]
    repo = counting_repo(tmp_path, names)
    with server(tmp_path, repo, "--max-loaded-models", "3") as srv:
        for name in ["m0", "m1", "m2", "m0", "m3", "m4", "m5"]:
            assert answer(srv.url, name, 1.5) == 1.5 * factor(names, name)
        # m0 was used again before m3 came: m1, then m2, then m0 made room
        unloads = [name for _, what, name in events(tmp_path) if what == "unload"]
        assert unloads == ["m1", "m2", "m0"]
        states = index(srv.url)
        assert {n for n, (state, _) in states.items() if state == "READY"} == {"m3", "m4", "m5"}
        assert {n: s for n, s in states.items() if s[0] != "READY"} == {
            n: ("UNAVAILABLE", "unloaded") for n in ["m0", "m1", "m2"]}
        # an unloaded model answers again (and unloads the least recently used, m3)
        assert answer(srv.url, "m1", 4.0) == 4.0 * factor(names, "m1")
        assert [name for _, what, name in events(tmp_path) if what == "unload"] == ["m1", "m2", "m0", "m3"]
        assert [name for _, what, name in events(tmp_path) if what == "load"] == [*names, "m1"]
        assert metric(srv, "servekit_model_evictions_total") == 4
        assert metric(srv, "servekit_model_loads_total") == 7
        assert metric(srv, "servekit_loaded_models") == 3
        # the dashboard lists the unloaded models too
        state = requests.get(f"{srv.url}/ui/api/state", timeout=10)
        assert state.status_code == 200, state.text
        rows = {m["name"]: m for m in state.json()["models"]}
        assert set(rows) == set(names)
        assert {n: rows[n]["versions"][0]["state"] for n in names} == {
            "m0": "UNLOADED", "m1": "READY", "m2": "UNLOADED", "m3": "UNLOADED", "m4": "READY", "m5": "READY"}
        residency = state.json()["server"]["residency"]
        assert {k: residency[k] for k in ("loaded", "loads", "evictions", "load_failures", "max_loaded_models")} == {
            "loaded": 3, "loads": 7, "evictions": 4, "load_failures": 0, "max_loaded_models": 3}


def start_slow(root: Path, url: str, value: float, into: list[float]) -> threading.Thread:
    """A request to "slow" in a thread; returns once its model is loaded and it runs."""
    seen = len([e for e in events(root) if e[1:] == ("load", "slow")])
    thread = threading.Thread(target=lambda: into.append(answer(url, "slow", value)))
    thread.start()
    while len([e for e in events(root) if e[1:] == ("load", "slow")]) == seen:
        thread.join(0.05)
    thread.join(0.3)
    return thread


def test_a_model_with_requests_in_flight_is_not_unloaded(tmp_path: Path) -> None:
    names = ["slow", "a", "b"]
    repo = counting_repo(tmp_path, names, slow={"predict_seconds": 2.0})
    with server(tmp_path, repo, "--max-loaded-models", "2") as srv:
        slow: list[float] = []
        thread = start_slow(tmp_path, srv.url, 2.0, slow)
        assert answer(srv.url, "a", 1.0) == 3.0
        # "slow" is the least recently used but busy: the idle "a" makes room instead
        assert answer(srv.url, "b", 1.0) == 4.0
        assert [(w, n) for _, w, n in events(tmp_path) if w == "unload"] == [("unload", "a")]
        thread.join()
        assert slow == [4.0]
        assert index(srv.url)["slow"] == ("READY", "")


def test_a_load_waits_for_a_busy_model_when_none_is_idle(tmp_path: Path) -> None:
    names = ["slow", "other"]
    repo = counting_repo(tmp_path, names, slow={"predict_seconds": 1.5})
    with server(tmp_path, repo, "--max-loaded-models", "1") as srv:
        slow: list[float] = []
        thread = start_slow(tmp_path, srv.url, 2.0, slow)
        # "other" needs the only place, held by a model with a request running: it waits for it
        assert answer(srv.url, "other", 5.0) == 15.0
        thread.join()
        assert slow == [4.0]
        order = [(what, name) for _, what, name in events(tmp_path)]
        assert order.index(("predicted", "slow")) < order.index(("unload", "slow")) < order.index(("load", "other"))


def test_a_failing_lazy_load_answers_its_reason(tmp_path: Path) -> None:
    names = ["broken", "fine"]
    repo = counting_repo(tmp_path, names, broken={"fail": True})
    with server(tmp_path, repo, "--max-loaded-models", "2") as srv:
        for _ in range(2):
            reply = infer(srv.url, "broken", 1.0)
            assert reply.status_code == 503
            error = reply.json()["error"]
            assert "broken" in error and "weights missing for this customer" in error
        # tried once: the failure stays until a repository load call tries again
        assert [(w, n) for _, w, n in events(tmp_path) if w == "load"] == [("load", "broken")]
        state, reason = index(srv.url)["broken"]
        assert state == "UNAVAILABLE" and "weights missing for this customer" in reason
        assert answer(srv.url, "fine", 2.0) == 6.0  # the others keep serving
        # and the server stays ready: one broken model does not take it out of its load balancer
        assert requests.get(f"{srv.url}/v2/health/ready", timeout=10).status_code == 200
        assert metric(srv, 'servekit_model_loads_total{result="failed"}') == 1
        assert requests.post(f"{srv.url}/v2/repository/models/broken/load", timeout=30).status_code >= 400
        assert [(w, n) for _, w, n in events(tmp_path) if w == "load"].count(("load", "broken")) == 2


def test_byte_budget(tmp_path: Path) -> None:
    names = ["a", "b", "c", "huge"]
    repo = counting_repo(tmp_path, names)
    for name in names:  # each model's folder: its settings file and its weights
        size = 100_000 if name != "huge" else 1_000_000
        (repo / name / "weights.bin").write_bytes(b"\0" * size)
    with server(tmp_path, repo, "--max-loaded-memory", "250KB") as srv:
        for name in ["a", "b", "c", "a"]:
            assert answer(srv.url, name, 1.0) == factor(names, name)
        # two fit in 250 KB: c unloaded a, then a unloaded b
        assert [name for _, what, name in events(tmp_path) if what == "unload"] == ["a", "b"]
        reply = infer(srv.url, "huge", 1.0)
        assert reply.status_code == 500
        assert "more than the whole max_loaded_bytes budget" in reply.json()["error"]
        assert "huge" not in [name for _, what, name in events(tmp_path) if what == "load"]
        assert 200_000 < metric(srv, "servekit_loaded_model_bytes") <= 250_000


def test_two_workers_each_keep_their_own_budget(tmp_path: Path) -> None:
    names = [f"w{i}" for i in range(5)]
    repo = counting_repo(tmp_path, names)
    with server(tmp_path, repo, "--max-loaded-models", "2", workers=2) as srv:
        session = requests.Session()
        rng = np.random.default_rng(0)
        for value, i in enumerate(rng.integers(0, len(names), 120)):
            name = names[i]
            body = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [float(value)]}]}
            reply = session.post(f"{srv.url}/v2/models/{name}/infer", json=body, timeout=60)
            assert reply.status_code == 200, reply.text
            assert reply.json()["outputs"][0]["data"] == [value * factor(names, name)]
            if value % 10 == 0:
                session = requests.Session()  # new connections: both workers take requests
        # per worker, never more than 2 models loaded at once (from the runtimes' own log)
        loaded: dict[int, set[str]] = {}
        most: dict[int, int] = {}
        for pid, what, name in events(tmp_path):
            if what == "load":
                loaded.setdefault(pid, set()).add(name)
            elif what == "unload":
                loaded[pid].discard(name)
            most[pid] = max(most.get(pid, 0), len(loaded.get(pid, ())))
        assert max(most.values()) == 2
        assert metric(srv, "servekit_loaded_models") <= 4  # summed over the workers
        assert metric(srv, "servekit_model_evictions_total") > 0


def test_evicted_scikit_learn_models_answer_as_before(tmp_path: Path) -> None:
    x, y = load_iris(return_X_y=True)
    models: dict[str, Any] = {
        "logreg": LogisticRegression(max_iter=500).fit(x, y),
        "forest": RandomForestClassifier(n_estimators=5, random_state=0).fit(x, y),
        "small-forest": RandomForestClassifier(n_estimators=2, max_depth=2, random_state=1).fit(x, y),
    }
    repo = tmp_path / "repo"
    for name, model in models.items():
        (repo / name).mkdir(parents=True)
        joblib.dump(model, repo / name / "model.joblib")
        (repo / name / "model-settings.json").write_text(json.dumps({"name": name, "implementation": "sklearn"}))
    rows = x[[0, 60, 120, 149]]
    with ServerProcess(["serve", str(repo), "--max-loaded-models", "1"]) as srv:
        for _ in range(3):
            for name, model in models.items():
                body = {"inputs": [{"name": "x", "shape": list(rows.shape), "datatype": "FP64",
                                    "data": rows.ravel().tolist()}]}
                reply = requests.post(f"{srv.url}/v2/models/{name}/infer", json=body, timeout=60)
                assert reply.status_code == 200, reply.text
                assert reply.json()["outputs"][0]["data"] == model.predict(rows).tolist()
        assert metric(srv, "servekit_model_evictions_total") == 8
        assert sum(1 for s, _ in index(srv.url).values() if s == "READY") == 1


@pytest.mark.parametrize("flag, value, said", [
    ("--max-loaded-models", "0", "at least 1"),
    ("--max-loaded-memory", "lots", "is not a size"),
])
def test_a_budget_out_of_bounds_is_refused(tmp_path: Path, flag: str, value: str, said: str) -> None:
    done = subprocess.run([*SERVEKIT, "serve", str(tmp_path), flag, value], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode != 0
    assert said in done.stderr
    assert "Traceback" not in done.stderr


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
