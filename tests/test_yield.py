"""``yield_after_answer``: a worker calls sched_yield after writing each HTTP
answer, on the express path (V2 infer, answered in the protocol's callback)
and on the general one (an ASGI cycle), and never with
``--no-yield-after-answer``. Counted on a real server run under strace."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import joblib
import pytest
import requests
from servers import ServerProcess
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

pytestmark = pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")

ANSWERS = 40  # of each path


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("yield-repo")
    iris = load_iris()
    (root / "iris").mkdir()
    joblib.dump(LogisticRegression(max_iter=300).fit(iris.data, iris.target), root / "iris" / "model.joblib")
    (root / "iris" / "model-settings.json").write_text(json.dumps(
        {"name": "iris", "implementation": "mlserver_sklearn.SKLearnModel", "parameters": {"uri": "./model.joblib"}}))
    return root


def yields(trace: Path) -> int:
    return sum(1 for line in trace.read_text().splitlines() if "sched_yield(" in line)


def answered(repo: Path, tmp_path: Path, flags: list[str]) -> tuple[int, int]:
    """sched_yield calls of the server while it answers ANSWERS infer requests
    (express) and ANSWERS metadata requests (general path), with ``flags``."""
    trace = tmp_path / "trace"
    prefix = ["strace", "-f", "-qq", "--seccomp-bpf", "-e", "trace=sched_yield", "-o", str(trace)]
    with ServerProcess(["serve", str(repo), *flags], prefix=prefix) as server, requests.Session() as session:
        # settle: the first answers load what they import
        assert session.get(server.url + "/v2/models/iris").status_code == 200
        time.sleep(0.5)
        before = yields(trace)
        body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [5.1, 3.5, 1.4, 0.2]}]}
        for _ in range(ANSWERS):
            answer = session.post(server.url + "/v2/models/iris/infer", json=body)
            assert answer.json()["outputs"][0]["data"] == [0]
        after_infer = yields(trace)
        for _ in range(ANSWERS):
            assert session.get(server.url + "/v2/models/iris").json()["name"] == "iris"
        after_metadata = yields(trace)
    return after_infer - before, after_metadata - after_infer


def test_a_worker_yields_after_each_answer_on_both_paths(repo: Path, tmp_path: Path) -> None:
    infer, metadata = answered(repo, tmp_path, [])
    assert infer >= ANSWERS and metadata >= ANSWERS


def test_no_yield_after_answer_turns_it_off(repo: Path, tmp_path: Path) -> None:
    assert answered(repo, tmp_path, ["--no-yield-after-answer"]) == (0, 0)
