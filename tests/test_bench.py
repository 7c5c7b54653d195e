"""``servekit bench`` against a real servekit: it runs, counts and orders sanely.

These are not benchmarks: no assertion here depends on how fast anything is.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from servers import SERVEKIT, ServerProcess
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bench-repo")
    iris = load_iris()
    forest = RandomForestClassifier(n_estimators=5, random_state=0).fit(iris.data, iris.target)
    (root / "iris").mkdir()
    joblib.dump(forest, root / "iris" / "model.joblib")
    (root / "iris" / "model-settings.json").write_text(json.dumps(
        {"name": "iris", "implementation": "mlserver_sklearn.SKLearnModel",
         "parameters": {"uri": "./model.joblib", "version": "v1"}}))
    np.save(root / "rows.npy", iris.data[:3])
    (root / "request.json").write_text(json.dumps({"inputs": [
        {"name": "predict", "shape": [2, 4], "datatype": "FP64", "data": iris.data[:2].tolist()}]}))
    return root


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[ServerProcess]:
    with ServerProcess(["serve", str(repo)], workers=1) as proc:
        yield proc


def bench(server: ServerProcess, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        [*SERVEKIT, "bench", "--url", server.url, "--grpc-url", f"127.0.0.1:{server.grpc_port}",
         "--warmup", "0.2", "--no-progress", *args],
        capture_output=True, text=True, timeout=120,
    )
    if check:
        assert out.returncode == 0, out.stderr
    return out


def assert_sane(level: dict[str, Any]) -> None:
    assert level["requests"] > 0
    assert level["errors"] == 0, level["first_error"]
    assert level["throughput"] > 0
    assert 0 < level["p50_ms"] <= level["p90_ms"] <= level["p99_ms"] <= level["max_ms"]


def test_concurrency_sweep_reports_counts_percentiles_and_server_split(server: ServerProcess) -> None:
    out = bench(server, "iris", "--shape", "1,4", "--datatype", "FP64", "--input-name", "predict",
                "--concurrency", "1,4", "--duration", "1", "--format", "json")
    report = json.loads(out.stdout)
    assert report["model"] == "iris" and report["protocol"] == "json"
    levels = report["results"]
    assert [level["concurrency"] for level in levels] == [1, 4]
    for level in levels:
        assert_sane(level)
        # servekit answers the statistics extension, so the queue/compute split is there
        assert level["server_compute_us"] > 0
        assert level["server_queue_us"] >= 0
        assert level["server_batch"] >= 1


@pytest.mark.parametrize("protocol", ["binary", "grpc"])
def test_binary_and_grpc_requests_from_a_file(server: ServerProcess, repo: Path, protocol: str) -> None:
    if protocol == "grpc":
        import tritonclient.grpc as grpcclient

        try:
            grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}").is_server_live()
        except Exception as exc:  # the V2 gRPC service is another module's; say why we skip
            pytest.skip(f"servekit's V2 gRPC service is not answering: {exc}")
    out = bench(server, "iris", "--protocol", protocol, "--input-file", str(repo / "request.json"),
                "--concurrency", "2", "--duration", "1", "--format", "json")
    level = json.loads(out.stdout)["results"][0]
    assert level["protocol"] == protocol
    assert_sane(level)


def test_fixed_rate_from_npy_as_csv(server: ServerProcess, repo: Path) -> None:
    out = bench(server, "iris", "--input-file", str(repo / "rows.npy"), "--input-name", "predict",
                "--rate", "50", "--duration", "1", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert len(rows) == 1
    assert float(rows[0]["rate"]) == 50.0
    assert int(rows[0]["requests"]) > 0 and int(rows[0]["errors"]) == 0
    assert float(rows[0]["p50_ms"]) <= float(rows[0]["p99_ms"])


def test_fixed_request_count_and_table(server: ServerProcess) -> None:
    out = bench(server, "iris", "--shape", "3,4", "--datatype", "FP64", "--input-name", "predict",
                "--concurrency", "1", "--requests", "25", "--warmup", "0")
    lines = out.stdout.splitlines()
    assert lines[0].startswith("iris over json")
    assert lines[1].split()[:2] == ["level", "req/s"]
    assert lines[2].split()[0] == "c=1"


def test_errors_are_reported_not_hidden(server: ServerProcess) -> None:
    out = bench(server, "no-such-model", "--shape", "1,4", "--datatype", "FP64",
                "--concurrency", "1", "--duration", "0.5", check=False)
    assert out.returncode == 2
    assert "HTTP 404" in out.stderr and "no-such-model" in out.stderr
    # the server keeps serving afterwards
    bench(server, "iris", "--shape", "1,4", "--datatype", "FP64", "--input-name", "predict",
          "--concurrency", "1", "--requests", "5", "--warmup", "0")


def test_find_rate_searches_then_measures_half_and_nine_tenths(server: ServerProcess) -> None:
    """Open loop: doubling from the start rate while p99 stays under the bound
    (a bound no server misses here, and a --max-rate that ends the doubling),
    then the levels at 50 % and 90 % of the rate found."""
    out = bench(server, "iris", "--shape", "1,4", "--datatype", "FP64", "--input-name", "predict",
                "--find-rate", "100000", "--start-rate", "10", "--max-rate", "20", "--duration", "1",
                "--format", "json")
    report = json.loads(out.stdout)
    assert report["sustainable"]["100000"]["rate"] == 20.0
    levels = report["results"]
    assert [(level["rate"], level["phase"]) for level in levels] == [
        (10.0, "search p99<100000ms"), (20.0, "search p99<100000ms"),
        (10.0, "50% of 20/s"), (18.0, "90% of 20/s")]
    for level in levels:
        assert_sane(level)
        assert level["p99_ms"] <= level["p999_ms"] <= level["max_ms"]
    at_90 = report["sustainable"]["100000"]["at_90"]
    assert at_90["rate"] == 18.0 and at_90["p999_ms"] == levels[-1]["p999_ms"]


def test_find_rate_says_when_no_rate_is_sustained(server: ServerProcess) -> None:
    out = bench(server, "iris", "--shape", "1,4", "--datatype", "FP64", "--input-name", "predict",
                "--find-rate", "0.000001", "--start-rate", "10", "--duration", "0.5")
    assert "p99 < 1e-06 ms: not sustained even at the start rate" in out.stdout
    # a rate counts as not sustained after --tries failed measurements of it (default 2)
    for tries, levels in [(None, 2), ("3", 3), ("1", 1)]:
        out = bench(server, "iris", "--shape", "1,4", "--datatype", "FP64", "--input-name", "predict",
                    "--find-rate", "0.000001", "--start-rate", "10", "--duration", "0.3", "--warmup", "0",
                    "--format", "json", *(["--tries", tries] if tries else []))
        report = json.loads(out.stdout)
        assert report["sustainable"]["1e-06"]["rate"] is None
        assert [level["rate"] for level in report["results"]] == [10.0] * levels


def test_any_servers_own_format_from_a_body_file(server: ServerProcess, tmp_path: Path) -> None:
    """--body-file posts bytes as they are: here servekit's plain /predict form."""
    body = tmp_path / "rows.json"
    body.write_text(json.dumps({"inputs": [[5.1, 3.5, 1.4, 0.2]]}))
    out = bench(server, "iris", "--body-file", str(body), "--path", "/predict/iris",
                "--concurrency", "2", "--requests", "20", "--warmup", "0", "--format", "json")
    report = json.loads(out.stdout)
    assert report["protocol"] == "raw" and report["body_bytes"] > len(body.read_bytes())
    (level,) = report["results"]
    # (--requests stops a level after that many answers; a second connection may add one)
    assert level["requests"] >= 20 and level["errors"] == 0 and level["server_compute_us"] is None
    wrong = bench(server, "iris", "--body-file", str(body), "--path", "/predict/nope",
                  "--concurrency", "1", "--requests", "3", "--warmup", "0", check=False)
    assert wrong.returncode == 2 and "HTTP 404" in wrong.stderr
    split = bench(server, "iris", "--body-file", str(body), "--path", "/predict/iris HTTP/1.0\r\nX: y",
                  "--concurrency", "1", check=False)
    assert split.returncode == 2 and "--body-file needs --path" in split.stderr
