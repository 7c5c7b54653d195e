"""With two workers, a change to what is served is in force on every worker
when the call that made it answers, and every protocol is measured.

Each check sends 40 requests on fresh connections (the kernel spreads them
over both workers) right after the call returns, with no waiting."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from servers import ServerProcess

CALLS = 40
FRESH = {"Connection": "close"}
ROW = [5.1, 3.5, 1.4, 0.2]
V2_BODY = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": ROW}]}


@pytest.fixture(scope="module")
def served(iris_repository: Path) -> Iterator[ServerProcess]:
    with ServerProcess(["serve", str(iris_repository)], workers=2) as proc:
        yield proc


def infer_statuses(url: str) -> list[int]:
    return [
        requests.post(f"{url}/v2/models/iris/infer", json=V2_BODY, headers=FRESH, timeout=30).status_code
        for _ in range(CALLS)
    ]


def test_repository_load_and_unload_are_in_force_everywhere_on_return(served: ServerProcess) -> None:
    url = served.url
    for _ in range(3):
        unloaded = requests.post(f"{url}/v2/repository/models/iris/unload", headers=FRESH, timeout=60)
        assert unloaded.status_code == 200, unloaded.text
        assert unloaded.json() == {"name": "iris", "versions": ["1"], "state": "UNLOADED"}
        assert infer_statuses(url) == [404] * CALLS
        index = requests.post(f"{url}/v2/repository/index", json={}, headers=FRESH, timeout=30).json()
        assert {"name": "iris", "version": "1", "state": "UNAVAILABLE", "reason": "unloaded"} in index

        loaded = requests.post(f"{url}/v2/repository/models/iris/load", headers=FRESH, timeout=60)
        assert loaded.status_code == 200, loaded.text
        assert loaded.json() == {"name": "iris", "versions": ["1"], "state": "READY"}
        assert infer_statuses(url) == [200] * CALLS


def test_loading_an_unknown_model_changes_nothing(served: ServerProcess) -> None:
    response = requests.post(f"{served.url}/v2/repository/models/nope/load", headers=FRESH, timeout=30)
    assert response.status_code == 404
    assert "no model named 'nope'" in response.json()["error"]
    assert infer_statuses(served.url) == [200] * CALLS


def samples(metrics: str, name: str) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of every sample of the metric ``name``."""
    pattern = re.compile(rf"^{name}\{{(?P<labels>[^}}]*)\}} (?P<value>\S+)$", re.MULTILINE)
    return [
        (dict(re.findall(r'(\w+)="([^"]*)"', found["labels"])), float(found["value"]))
        for found in pattern.finditer(metrics)
    ]


def counted(metrics: str, protocol: str, model: str = "iris", **extra: str) -> float:
    wanted = {"model": model, "protocol": protocol, **extra}
    metric = "servekit_model_request_failures_total" if "status" in extra else "servekit_model_requests_total"
    return sum(v for labels, v in samples(metrics, metric) if wanted.items() <= labels.items())


def test_every_protocol_is_counted(served: ServerProcess) -> None:
    metrics_url = f"http://127.0.0.1:{served.metrics_port}/metrics"
    before = requests.get(metrics_url, timeout=30).text
    for _ in range(20):
        flask = requests.post(f"{served.url}/predict/iris", json={"inputs": [ROW]}, headers=FRESH, timeout=30)
        assert flask.status_code == 200 and flask.json() == {"prediction": [0]}
        seldon = requests.post(f"{served.url}/predict", json={"data": {"ndarray": [ROW]}}, headers=FRESH,
                               timeout=30)
        assert seldon.status_code == 200 and seldon.json()["data"]["ndarray"] == [0]
    failed = requests.post(f"{served.url}/predict/iris", json={"wrong": 1}, headers=FRESH, timeout=30)
    assert failed.status_code == 400
    after = requests.get(metrics_url, timeout=30).text
    assert counted(after, "predict") - counted(before, "predict") == 21
    assert counted(after, "seldon") - counted(before, "seldon") == 20
    # a failure carries the resolved version, like a success
    assert counted(after, "predict", status="400", version="1") >= 1


def test_unknown_names_share_one_metrics_label(served: ServerProcess) -> None:
    for i in range(5):
        r = requests.post(f"{served.url}/v2/models/random{i}/infer", json=V2_BODY, headers=FRESH, timeout=30)
        assert r.status_code == 404 and "random" in r.json()["error"]
    metrics = requests.get(f"http://127.0.0.1:{served.metrics_port}/metrics", timeout=30).text
    assert "random0" not in metrics
    assert 'model="(unknown)"' in metrics


def test_a_header_deadline_that_passed_is_not_run(served: ServerProcess) -> None:
    response = requests.post(f"{served.url}/v2/models/iris/infer", json=V2_BODY,
                             headers={**FRESH, "X-Request-Timeout": "0.000000001"}, timeout=30)
    assert response.status_code == 504
    assert "timed out" in response.json()["error"]


def test_user_metrics_folder_is_kept(tmp_path: Path, served: ServerProcess) -> None:
    folder = tmp_path / "prom"
    folder.mkdir()
    repo = Path(served.args[1])
    with ServerProcess(["serve", str(repo)], workers=2, env={"PROMETHEUS_MULTIPROC_DIR": str(folder)}) as proc:
        assert requests.post(f"{proc.url}/v2/models/iris/infer", json=V2_BODY, timeout=30).status_code == 200
    assert folder.is_dir() and any(folder.iterdir())


def test_a_worker_killed_while_a_change_waits_for_it_does_not_take_the_server_down(
    served: ServerProcess,
) -> None:
    """The relayed change sits unread in the stopped worker's socket; killing it
    resets that socket under the supervisor, which must carry on."""
    import os
    import signal
    import threading
    import time
    from pathlib import Path

    assert served.proc is not None
    supervisor = served.proc.pid
    workers = sorted(int(p) for p in Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split())
    stopped = workers[1]
    os.kill(stopped, signal.SIGSTOP)
    answers: list[int] = []

    def unload() -> None:
        for _ in range(10):  # a connection that lands on the stopped worker fails once it is killed
            try:
                answers.append(requests.post(f"{served.url}/v2/repository/models/iris/unload",
                                             headers=FRESH, timeout=60).status_code)
                return
            except requests.ConnectionError:
                continue

    thread = threading.Thread(target=unload)
    thread.start()
    time.sleep(1.0)
    os.kill(stopped, signal.SIGKILL)
    thread.join()
    assert answers == [200]
    # the supervisor lives and replaces the worker; the replacement replays the unload
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        now = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
        if len(now) == 2 and str(stopped) not in now:
            break
        time.sleep(0.1)
    assert served.proc.poll() is None
    assert infer_statuses(served.url) == [404] * CALLS
    loaded = requests.post(f"{served.url}/v2/repository/models/iris/load", headers=FRESH, timeout=60)
    assert loaded.status_code == 200, loaded.text
    assert infer_statuses(served.url) == [200] * CALLS
