"""Several worker processes: a worker killed with SIGKILL is replaced while the
others keep serving, and repository changes reach every worker."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from servers import ServerProcess

BODY = {"inputs": [{"name": "x", "shape": [1, 784], "datatype": "FP64", "data": [0.2] * 784}]}


def workers_of(pid: int) -> set[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return {int(c) for c in children}


@pytest.fixture(scope="module")
def multi(repository: Path) -> Iterator[ServerProcess]:
    with ServerProcess(["serve", str(repository)], workers=2) as proc:
        yield proc


def test_two_workers_serve(multi: ServerProcess) -> None:
    assert multi.proc is not None
    assert len(workers_of(multi.proc.pid)) == 2
    assert "servekit ready with 2 workers" in multi.log()
    for _ in range(20):
        r = requests.post(f"{multi.url}/v2/models/logistic/infer", json=BODY)
        assert r.status_code == 200 and r.json()["model_version"] == "2"


def test_killed_worker_is_replaced(multi: ServerProcess) -> None:
    assert multi.proc is not None
    before = workers_of(multi.proc.pid)
    victim = sorted(before)[0]
    os.kill(victim, signal.SIGKILL)
    # the surviving worker keeps answering while the new one starts; only a
    # connection already queued on the dead worker's socket may be reset
    answered = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            r = requests.post(f"{multi.url}/v2/models/logistic/infer", json=BODY)
        except requests.ConnectionError:
            assert answered == 0, "a connection failed after the survivor had answered"
            continue
        assert r.status_code == 200, r.text
        answered += 1
        now = workers_of(multi.proc.pid)
        if len(now) == 2 and victim not in now and answered >= 20:
            break
        time.sleep(0.05)
    after = workers_of(multi.proc.pid)
    assert victim not in after and len(after) == 2
    assert f"(pid {victim}) died (signal 9); starting a new one" in multi.log()


def test_repository_changes_reach_every_worker(multi: ServerProcess) -> None:
    r = requests.post(f"{multi.url}/v2/repository/models/fashion-xgboost/unload")
    assert r.status_code == 200
    time.sleep(0.5)  # the supervisor relays the change to the sibling worker
    # fresh connections land on either worker; none may still serve the model
    for _ in range(20):
        r = requests.post(f"{multi.url}/v2/models/fashion-xgboost/infer", json=BODY, headers={"Connection": "close"})
        assert r.status_code == 404
    r = requests.post(f"{multi.url}/v2/repository/models/fashion-xgboost/load")
    assert r.status_code == 200
    time.sleep(1.0)
    for _ in range(20):
        r = requests.post(f"{multi.url}/v2/models/fashion-xgboost/infer", json=BODY, headers={"Connection": "close"})
        assert r.status_code == 200, r.text


def test_metrics_add_up_across_workers(multi: ServerProcess) -> None:
    for _ in range(10):
        requests.post(f"{multi.url}/v2/models/fashion-sklearn/infer", json=BODY, headers={"Connection": "close"})
    text = requests.get(f"http://127.0.0.1:{multi.metrics_port}/metrics").text
    line = next(
        row for row in text.splitlines()
        if row.startswith('servekit_model_requests_total{model="fashion-sklearn"')
    )
    assert float(line.rsplit(" ", 1)[1]) >= 10
