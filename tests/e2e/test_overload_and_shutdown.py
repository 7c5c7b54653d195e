"""Overload and shutdown: a request that waits the queue time gets 503 with
Retry-After and never runs; SIGTERM lets requests in flight finish (or
answers them after the drain time); workers never outlive their supervisor."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from servers import ServerProcess

SLEEPER = '''
import time
import numpy as np
from servekit.runtimes.base import Runtime


class Sleeper(Runtime):
    """Sleeps the seconds it is given, then answers them."""

    def predict(self, request):
        seconds = float(request.inputs[0].data.reshape(-1)[0])
        time.sleep(seconds)
        return self.response(request, [self.tensor(seconds)])

    @staticmethod
    def tensor(seconds):
        from servekit.tensors import Tensor
        return Tensor("slept", np.array([seconds]))
'''


@pytest.fixture(scope="module")
def slow_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("slow")
    (root / "slow").mkdir()
    (root / "slow" / "sleeper.py").write_text(SLEEPER)
    (root / "slow" / "model-settings.json").write_text(json.dumps(
        {"name": "slow", "implementation": "sleeper.Sleeper", "parameters": {"version": "1"}}))
    return root


def sleep_body(seconds: float) -> dict[str, Any]:
    return {"inputs": [{"name": "s", "shape": [1], "datatype": "FP64", "data": [seconds]}]}


def test_overload_answers_503_with_retry_after_within_the_queue_time(slow_repository: Path) -> None:
    args = ["serve", str(slow_repository), "--no-enable-grpc", "--max-queue-time", "0.3"]
    with ServerProcess(args) as proc:
        url = f"{proc.url}/v2/models/slow/infer"
        results: list[requests.Response] = []

        def call(seconds: float) -> None:
            results.append(requests.post(url, json=sleep_body(seconds), timeout=60))

        first = threading.Thread(target=call, args=(2.0,))
        first.start()
        time.sleep(0.3)  # let the 2 s request start
        queued = [threading.Thread(target=call, args=(0.0,)) for _ in range(4)]
        for thread in queued:
            thread.start()
        for thread in queued:
            thread.join()
        overloaded = [r for r in results if r.status_code == 503]
        assert len(overloaded) == 4, [r.text for r in results]
        assert all(r.headers["retry-after"] == "1" for r in overloaded)
        assert all("waited 0.3 s in the queue" in r.json()["error"] for r in overloaded)
        first.join()
        assert results[-1].status_code == 200 and results[-1].json()["outputs"][0]["data"] == [2.0]
        stats = requests.get(f"{proc.url}/v2/models/slow/stats", timeout=10).json()["model_stats"][0]
        assert stats["execution_count"] == 1  # the refused requests never ran


def raw_infer(port: int, seconds: float) -> socket.socket:
    """A V2 request sent on a raw socket whose sending side is then closed (``nc -N``)."""
    body = json.dumps(sleep_body(seconds)).encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(b"POST /v2/models/slow/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    sock.shutdown(socket.SHUT_WR)
    return sock


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    sock.close()
    return b"".join(chunks)


def executions(proc: ServerProcess) -> int:
    stats = requests.get(f"{proc.url}/v2/models/slow/stats", timeout=10).json()["model_stats"][0]
    return int(stats["execution_count"])


def test_work_for_clients_that_left_is_dropped_before_it_runs(slow_repository: Path) -> None:
    """Clients that give up while their request waits in the queue (a client
    timeout closes the socket; a half-close too) cost no model time."""
    with ServerProcess(["serve", str(slow_repository), "--no-enable-grpc"]) as proc:
        # an idle model still answers a half-closed client
        assert b'"data":[0.0]' in read_all(raw_infer(proc.http_port, 0.0)).replace(b" ", b"")
        first = threading.Thread(target=lambda: requests.post(
            f"{proc.url}/v2/models/slow/infer", json=sleep_body(1.5), timeout=60))
        first.start()
        time.sleep(0.3)
        for _ in range(4):  # each gives up after 0.2 s and closes its connection
            with pytest.raises(requests.exceptions.ReadTimeout):
                requests.post(f"{proc.url}/v2/models/slow/infer", json=sleep_body(0.5), timeout=0.2)
        answer = read_all(raw_infer(proc.http_port, 0.5))  # queued behind the first, then half-closed
        assert answer.startswith(b"HTTP/1.1 503 "), answer
        assert b"closed the connection while the request waited" in answer
        first.join()
        assert executions(proc) == 2  # the idle half-closed one and the first; none of the five left


def test_abort_on_close_off_answers_half_closed_clients_in_the_queue(slow_repository: Path) -> None:
    args = ["serve", str(slow_repository), "--no-enable-grpc", "--no-abort-on-close"]
    with ServerProcess(args) as proc:
        first = threading.Thread(target=lambda: requests.post(
            f"{proc.url}/v2/models/slow/infer", json=sleep_body(1.0), timeout=60))
        first.start()
        time.sleep(0.3)
        answer = read_all(raw_infer(proc.http_port, 0.25))
        first.join()
        assert answer.startswith(b"HTTP/1.1 200 ") and b"0.25" in answer, answer
        assert executions(proc) == 2


def sigterm_during(repository: Path, sleep: float, drain: float) -> tuple[requests.Response, int]:
    """(the answer to a ``sleep``-second request that was in flight at SIGTERM,
    the server's exit code), with ``drain_seconds`` = ``drain``."""
    proc = ServerProcess(["serve", str(repository), "--no-enable-grpc", "--drain-seconds", str(drain)])
    with proc:
        assert proc.proc is not None
        result: list[requests.Response] = []
        thread = threading.Thread(target=lambda: result.append(
            requests.post(f"{proc.url}/v2/models/slow/infer", json=sleep_body(sleep), timeout=60)))
        thread.start()
        time.sleep(0.5)
        os.kill(proc.proc.pid, signal.SIGTERM)
        thread.join()
        return result[0], proc.proc.wait(timeout=30)


def test_sigterm_lets_requests_in_flight_finish(slow_repository: Path) -> None:
    answer, code = sigterm_during(slow_repository, sleep=1.5, drain=10)
    assert answer.status_code == 200 and answer.json()["outputs"][0]["data"] == [1.5]
    assert code == 0


def test_requests_still_running_after_the_drain_time_get_an_answer(slow_repository: Path) -> None:
    answer, _ = sigterm_during(slow_repository, sleep=5, drain=0.5)
    assert answer.status_code == 503
    assert "shut down before the request was answered" in answer.text


def running(pid: int) -> bool:
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False


def test_workers_do_not_outlive_a_killed_supervisor(slow_repository: Path) -> None:
    proc = ServerProcess(["serve", str(slow_repository), "--no-enable-grpc"], workers=2)
    with proc:
        assert proc.proc is not None
        pid = proc.proc.pid
        workers = [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        assert len(workers) == 2
        os.kill(pid, signal.SIGKILL)
        proc.proc.wait(timeout=10)
        deadline = time.monotonic() + 30
        alive = workers
        while alive and time.monotonic() < deadline:
            alive = [w for w in workers if running(w)]
            time.sleep(0.1)
        assert alive == [], f"workers {alive} outlived their supervisor"


def test_connections_over_the_limit_are_refused_with_503(slow_repository: Path) -> None:
    import socket

    with ServerProcess(["serve", str(slow_repository), "--no-enable-grpc", "--max-connections", "3"]) as proc:
        idle = [socket.create_connection(("127.0.0.1", proc.http_port), timeout=10) for _ in range(3)]
        try:
            time.sleep(0.2)  # the server has accepted all three
            with socket.create_connection(("127.0.0.1", proc.http_port), timeout=10) as extra:
                answer = extra.recv(4096)
            assert answer.startswith(b"HTTP/1.1 503") and b"too many connections" in answer
        finally:
            for sock in idle:
                sock.close()
        # once they are gone, the server serves again
        deadline = time.monotonic() + 10
        while True:
            try:
                live = requests.get(f"{proc.url}/v2/health/live", timeout=10)
                if live.status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "the server did not serve after the idle connections closed"
            time.sleep(0.1)
        assert live.json() == {"live": True}
