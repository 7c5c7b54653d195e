# ruff: noqa: RUF001  (the report's tables, as people read them: en dashes and multiplication signs)

"""The benchmark suite's open-loop and large-request parts (``benchmarks/suite.py``,
``benchmarks/large.py``, ``benchmarks/report.py``): the large-request client
against a real servekit over V2 JSON, binary and gRPC, its correctness check,
which configuration the open loop measures, how partial runs merge, and the
report's tables. No assertion depends on how fast anything is.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from servers import ServerProcess
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import large
import report
import suite


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("large-repo")
    iris = load_iris()
    forest = RandomForestClassifier(n_estimators=5, random_state=0).fit(iris.data, iris.target)
    (root / "iris").mkdir()
    joblib.dump(forest, root / "iris" / "model.joblib")
    (root / "iris" / "model-settings.json").write_text(json.dumps(
        {"name": "iris", "implementation": "mlserver_sklearn.SKLearnModel",
         "parameters": {"uri": "./model.joblib", "version": "v1"}}))
    (root / "request.json").write_text(json.dumps({"inputs": [
        {"name": "predict", "shape": list(iris.data.shape), "datatype": "FP64", "data": iris.data.tolist()}]}))
    return root


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[ServerProcess]:
    with ServerProcess(["serve", str(repo)], workers=1) as proc:
        yield proc


def expected(repo: Path) -> np.ndarray:
    forest = joblib.load(repo / "iris" / "model.joblib")
    return np.asarray(forest.predict(load_iris().data), dtype=np.float64)


def make(server: ServerProcess, repo: Path, transport: str) -> large.Request:
    return large.request(transport, server.url, f"127.0.0.1:{server.grpc_port}", "iris", load_iris().data,
                         repo / "request.json")


@pytest.mark.parametrize("transport", large.TRANSPORTS)
def test_every_label_is_checked_and_the_load_counts_every_request(server: ServerProcess, repo: Path,
                                                                  transport: str) -> None:
    req = make(server, repo, transport)
    want = expected(repo)
    checked = large.check(req, want)
    assert checked["rows"] == 150 and checked["agree"] is True

    wrong = want.copy()
    wrong[7] = (wrong[7] + 1) % 3
    with pytest.raises(RuntimeError, match=r"1 of 150 labels differ .*row 7"):
        large.check(req, wrong)

    result = large.load(req, 2, 0.3)
    assert result["errors"] == 0, result["first_error"]
    assert result["connections"] == 2 and result["requests"] >= 2  # each client sends at least once
    assert result["p50_ms"] <= result["p99_ms"]
    assert result["rps"] == pytest.approx(result["requests"] / result["elapsed_s"], rel=0.01)


def test_a_refused_request_is_a_failed_check(server: ServerProcess, repo: Path) -> None:
    req = large.request("json", server.url, f"127.0.0.1:{server.grpc_port}", "no-such-model",
                        load_iris().data, repo / "request.json")
    with pytest.raises(RuntimeError, match="HTTP 404"):
        large.check(req, expected(repo))
    result = large.load(req, 1, 0.2)
    assert result["requests"] == 0 and result["errors"] >= 1 and "HTTP 404" in result["first_error"]


def fake_suite(results: dict[str, Any]) -> suite.Suite:
    args = argparse.Namespace(work=Path("/nonexistent"), port=1, quick=True, seconds=1.0, open_seconds=None,
                              large_seconds=None)
    s = suite.Suite(args)
    s.results = results
    return s


def wrk(**rps: float) -> dict[str, Any]:
    return {"wrk": {model: {"16": {"rps": value, "errors": 0}, "64": {"rps": value / 2, "errors": 0}}
                    for model, value in rps.items()}}


def test_the_open_loop_measures_each_servers_best_configuration() -> None:
    configs = suite.CONFIGS + suite.PEER_CONFIGS
    results = {"mlserver": wrk(**{"iris-rf": 100, "fashion-logreg": 900}),
               "mlserver-pw0": wrk(**{"iris-rf": 150, "fashion-logreg": 1300}),
               "mlserver-batch": wrk(**{"iris-rf": 800}),
               "kserve": wrk(**{"iris-rf": 300, "fashion-logreg": 3000}),
               "kserve-w2": wrk(**{"iris-rf": 200, "fashion-logreg": 2000})}
    plan = fake_suite(results).open_plan(configs)
    assert plan["mlserver-batch"] == ["iris-rf"]  # batching serves iris only
    assert plan["mlserver-pw0"] == ["fashion-logreg"]
    assert plan["kserve"] == ["iris-rf", "fashion-logreg"]
    assert "kserve-w2" not in plan and "kserve-v1" not in plan
    # no closed-loop numbers: the documented defaults
    assert plan["pytriton-batch"] == ["iris-rf", "fashion-logreg"]
    assert plan["servekit"] == ["iris-rf", "fashion-logreg"]
    # floors and servekit's one-worker variant are no server's setting
    assert not {"bare-servekit-http", "bare-uvicorn", "servekit-1-worker"} & set(plan)


def test_parts_and_partial_runs() -> None:
    assert suite.parts_of("open, large") == {"open", "large"}
    with pytest.raises(argparse.ArgumentTypeError, match="closed, open, large"):
        suite.parts_of("closed,fast")
    old = {"run": "1", "wrk": {"x": 1}, "failure": "an old failure"}
    merged = suite.merge(old, {"run": "2", "open": {"iris-rf": {}}}, "2")
    assert merged["wrk"] == {"x": 1} and merged["open"] == {"iris-rf": {}} and "failure" not in merged
    twice = suite.merge({"run": "2", "failure": "closed failed"}, {"run": "2", "failure": "open failed"}, "2")
    assert twice["failure"] == "closed failed\nopen failed"


def open_cell(rate10: float | None, rate100: float | None, start: float = 10) -> dict[str, Any]:
    def bound(rate: float | None) -> dict[str, Any]:
        if rate is None:
            return {"rate": None, "start_rate": start}
        return {"rate": rate, "at_50": {"rate": rate / 2, "p99_ms": 1.5, "p999_ms": 2.5, "errors": 0},
                "at_90": {"rate": rate * 0.9, "p99_ms": 4.0, "p999_ms": 8.0, "errors": 0}}

    return {"10": bound(rate10), "100": bound(rate100), "client_cpu_max": 0.3}


def large_cell(rps: float, p99: float, cpu: float) -> dict[str, Any]:
    return {"rps": rps, "p50_ms": p99 / 2, "p99_ms": p99, "cpu_ms_per_request": cpu, "requests": 10, "errors": 0}


def test_the_report_tables_give_servekit_over_the_best_peer() -> None:
    results: dict[str, Any] = {
        "run": "r", "mode": "quick", "parts": ["open", "large"], "open_seconds": 1.0, "large_seconds": 3.0,
        "wrk_seconds": 3, "bench_seconds": 2,
        "machine": {"cpu": "x", "cores": 2, "memory_gb": 1, "kernel": "k", "python": "3.11",
                    "load_average_at_start": [1.0, 1.0, 1.0], "servekit_commit": "abc", "wrk": "wrk"},
        "configs": {
            "servekit": {"kind": "servekit", "run": "r",
                         "open": {"iris-rf": open_cell(5000, 9000)},
                         "large": {"json": {"body_bytes": 1, "1": large_cell(4.0, 300, 100)},
                                   "binary": {"body_bytes": 2, "1": large_cell(8.0, 150, 50)}}},
            "kserve-w2": {"kind": "peer", "peer": "kserve", "setting": "2 workers", "run": "r",
                          "open": {"iris-rf": open_cell(None, 300)}},
            "pytriton-batch": {"kind": "peer", "peer": "pytriton", "setting": "batching", "run": "r",
                               "open": {"iris-rf": open_cell(250, 2000)}},
            "pytriton": {"kind": "peer", "peer": "pytriton", "setting": "no batching", "run": "r",
                         "large": {"json": {"body_bytes": 1, "1": large_cell(1.0, 900, 400)},
                                   "binary": {"body_bytes": 2, "error": "correctness check: binary: HTTP 400"}}},
        }}
    text = report.render(results)
    lines = text.splitlines()
    assert any(line.startswith("| kserve-w2 | 2 workers | iris-rf | < 10 | – | – | 300 |") for line in lines)
    assert "| servekit | defaults (adaptive batching) | iris-rf | 5,000 | 1.50 / 2.50 | 4.00 / 8.00 | 9,000 |" in text
    assert "| iris-rf | p99 < 10 ms | 5,000 | 250 (pytriton-batch) | 20.0× | ≥ 10× | yes |" in text
    assert "| iris-rf | p99 < 100 ms | 9,000 | 2,000 (pytriton-batch) | 4.50× | – | – |" in text
    assert "| json | 1 | pytriton | 4.00 | 1.00 | 4.00× | 150 / 300 | 450 / 900 | 0.33× | 100 / 400 | 0.25× |" in text
    assert "| binary | 1 | pytriton | failed: correctness check: binary: HTTP 400 |" in text
    assert "pytriton 10,000x784 over binary**: correctness check: binary: HTTP 400" in text
    assert "parts measured: open, large" in text
    summary = report.Results(results)
    ten = next(e for e in summary.open_summary() if e["model"] == "iris-rf" and e["bound_ms"] == 10)
    assert ten == {"model": "iris-rf", "bound_ms": 10, "servekit": 5000, "best_peer": "pytriton-batch",
                   "best_peer_rate": 250.0, "ratio": 20.0, "peers_measured": True, "met": True}
    (json_row,) = summary.large_summary()  # the failed binary transport has no ratios
    assert json_row["transport"] == "json" and json_row["peer"] == "pytriton"
    assert (json_row["ratio_rps"], json_row["ratio_p99_ms"], json_row["ratio_cpu_ms_per_request"]) == (4.0, 0.333, 0.25)
