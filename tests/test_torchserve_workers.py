"""TorchServe mode with two worker processes sharing the ports: every
management change made through one worker reaches the other, a replacement for
a killed worker has every past change replayed, and an allowed URL is fetched
once. Each check makes many calls on fresh connections (``Connection: close``),
which the kernel spreads over both workers."""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from servers import ServerProcess, free_port
from test_torchserve_management import make_archive

from servekit.config import ServerSettings
from servekit.fronts.torchserve.mode import torchserve_settings
from servekit.server.runner import worker_count

CALLS = 40  # fresh connections per check: both workers answer some of them
FRESH = {"Connection": "close"}


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A plain HTTP server on 127.0.0.1 holding an archive; it counts its downloads."""
    folder = tmp_path_factory.mktemp("remote")
    fetched: list[str] = []

    class Counting(http.server.SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            fetched.append(self.path)
            super().do_GET()

        def log_message(self, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Counting, directory=str(folder)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield {"url": f"http://127.0.0.1:{httpd.server_address[1]}", "folder": folder, "fetched": fetched}
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, remote: dict[str, Any]) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("workers")
    store = root / "store"
    store.mkdir()
    make_archive(root, "echo", "1.0", store)
    (store / "echo-2.mar").write_bytes(make_archive(root, "echo", "2.0", root).read_bytes())
    make_archive(root, "startup", "1.0", store)
    make_archive(root, "fetched", "7.0", remote["folder"])
    management = free_port()
    process = ServerProcess(
        ["serve", "--model-store", str(store), "--models", "startup=startup.mar",
         "--management-port", str(management), "--disable-token-auth",
         "--allowed-urls", f"{remote['url'].replace('.', '[.]')}/.*"],
        workers=2, cwd=root, env={"SERVEKIT_ARCHIVE_CACHE": str(root / "cache")},
    )
    with process:
        assert process.proc is not None
        yield {"url": process.url, "mgmt": f"http://127.0.0.1:{management}", "pid": process.proc.pid,
               "log": process.log, "metrics": f"http://127.0.0.1:{process.metrics_port}/metrics"}


# -- calls on fresh connections ------------------------------------------------------
def manage(server: dict[str, Any], method: str, path: str) -> requests.Response:
    return requests.request(method, server["mgmt"] + path, headers=FRESH, timeout=60)


def predict(server: dict[str, Any], path: str) -> requests.Response:
    return requests.post(f"{server['url']}/predictions/{path}", data=b"x", headers=FRESH, timeout=30)


def workers(server: dict[str, Any]) -> set[int]:
    """The worker processes: the supervisor's children."""
    pid = server["pid"]
    return {int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def wait_until_every_worker(server: dict[str, Any], path: str,
                            holds: Callable[[list[dict[str, Any]]], bool], timeout: float = 60) -> None:
    """Describe ``path`` on fresh connections until every worker process has
    answered with a description for which ``holds`` is true (a description
    names the answering process in its ``workers``)."""
    deadline = time.monotonic() + timeout
    confirmed: set[int] = set()
    last: Any = None
    while time.monotonic() < deadline:
        response = manage(server, "GET", path)
        last = response.json()
        if response.status_code == 200 and holds(last):
            confirmed.update(w["pid"] for d in last for w in d["workers"])
            if workers(server) <= confirmed:
                return
        time.sleep(0.02)
    raise AssertionError(f"not every worker of {workers(server)} answered as expected ({confirmed} did); "
                         f"last answer {last}\n{server['log']()[-3000:]}")


def wait_until_workers_agree(server: dict[str, Any], path: str, timeout: float = 60) -> list[dict[str, Any]]:
    """Describe ``path`` on fresh connections until the last answer of every
    worker process is the same (apart from the process and its counters)."""
    deadline = time.monotonic() + timeout
    latest: dict[int, Any] = {}
    while time.monotonic() < deadline:
        described = manage(server, "GET", path).json()
        pids = {w["pid"] for d in described for w in d["workers"]}
        if len(pids) == 1:
            latest[pids.pop()] = described
        views = [json.dumps(versions(d)) for pid, d in latest.items() if pid in workers(server)]
        if len(views) == len(workers(server)) and len(set(views)) == 1:
            return described  # type: ignore[no-any-return]
        time.sleep(0.02)
    seen = {pid: versions(d) for pid, d in latest.items()}
    raise AssertionError(f"the workers do not agree on {path}: {seen}")


def wait_for_log(server: dict[str, Any], line: str, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while server["log"]().count(line) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"{line!r} logged fewer than {count} times:\n{server['log']()}")
        time.sleep(0.02)


def answers(server: dict[str, Any], path: str) -> list[tuple[int, str]]:
    """(status, body) of CALLS predictions, each on a fresh connection."""
    return [(r.status_code, r.text) for r in (predict(server, path) for _ in range(CALLS))]


def versions(described: list[dict[str, Any]]) -> list[tuple[str, bool, int]]:
    return [(d["modelVersion"], d["isDefault"], d["minWorkers"]) for d in described]


# -- the tests -------------------------------------------------------------------------
def test_torchserve_mode_defaults_to_one_worker_per_core() -> None:
    for flags in ({"models": ["m=m.mar"]}, {"model_store": "."}):
        args = argparse.Namespace(**flags)
        settings = torchserve_settings(ServerSettings(**{k: v for k, v in flags.items() if k != "models"}), args)
        assert settings.parallel_workers is None
        assert worker_count(settings) == (os.cpu_count() or 1)
    explicit = torchserve_settings(ServerSettings(parallel_workers=1), argparse.Namespace(parallel_workers=1,
                                                                                       models=["m=m.mar"]))
    assert worker_count(explicit) == 1


def test_changes_reach_every_worker_and_a_replacement(server: dict[str, Any]) -> None:
    assert len(workers(server)) == 2
    assert "servekit ready with 2 workers" in server["log"]()

    # register: the receiving worker answers once it serves the model; the other follows
    registered = manage(server, "POST", "/models?url=echo.mar&initial_workers=1&synchronous=true")
    assert registered.json() == {"status": 'Model "echo" Version: 1.0 registered with 1 initial workers'}
    wait_until_every_worker(server, "/models/echo", lambda d: versions(d) == [("1.0", True, 1)])
    assert answers(server, "echo") == [(200, "1.0")] * CALLS
    listed = {manage(server, "GET", "/models").text for _ in range(CALLS // 4)}
    assert [json.loads(text) for text in listed] == [{"models": [
        {"modelName": "echo", "modelUrl": "echo.mar"}, {"modelName": "startup", "modelUrl": "startup.mar"}]}]
    conflict = manage(server, "POST", "/models?url=echo.mar")
    assert conflict.status_code == 409 and "already registered" in conflict.json()["message"]

    # a second version, then make it the default
    second = manage(server, "POST", "/models?url=echo-2.mar&initial_workers=1")
    assert second.status_code == 200, second.text
    first_stays_default = [("1.0", True, 1), ("2.0", False, 1)]
    wait_until_every_worker(server, "/models/echo/all", lambda d: versions(d) == first_stays_default)
    assert answers(server, "echo") == [(200, "1.0")] * CALLS
    assert answers(server, "echo/2.0") == [(200, "2.0")] * CALLS
    assert manage(server, "PUT", "/models/echo/2.0/set-default").status_code == 200
    second_is_default = [("1.0", False, 1), ("2.0", True, 1)]
    wait_until_every_worker(server, "/models/echo/all", lambda d: versions(d) == second_is_default)
    assert answers(server, "echo") == [(200, "2.0")] * CALLS

    # scaling is a per-model count every worker applies: 0 stops serving it everywhere
    assert manage(server, "PUT", "/models/echo/1.0?min_worker=0").status_code == 202
    assert manage(server, "PUT", "/models/echo/1.0?min_worker=3&synchronous=true").status_code == 200
    scaled = [("1.0", False, 3), ("2.0", True, 1)]
    wait_until_every_worker(server, "/models/echo/all", lambda d: versions(d) == scaled)
    assert answers(server, "echo/1.0") == [(200, "1.0")] * CALLS

    # calls answered by different workers one right after the other: every worker ends
    # in the state of the last call, however late the earlier ones are relayed to it
    for count in range(1, 13):
        assert manage(server, "PUT", f"/models/echo/2.0?min_worker={count}").status_code == 202
    for version in ["1.0", "2.0"] * 6:
        assert manage(server, "PUT", f"/models/echo/{version}/set-default").status_code == 200
    last = [("1.0", False, 3), ("2.0", True, 12)]
    wait_until_every_worker(server, "/models/echo/all", lambda d: versions(d) == last)
    # and calls made at the same time leave every worker in the same state
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda n: manage(server, "PUT", f"/models/echo/2.0?min_worker={n}"), range(1, 25)))
    agreed = wait_until_workers_agree(server, "/models/echo/all")
    assert 1 <= versions(agreed)[1][2] <= 24
    assert manage(server, "PUT", "/models/echo/2.0?min_worker=1").status_code == 202
    wait_until_every_worker(server, "/models/echo/all", lambda d: versions(d) == scaled)

    # unregister a version
    assert manage(server, "DELETE", "/models/echo/1.0").json() == {"status": 'Model "echo" unregistered'}
    wait_until_every_worker(server, "/models/echo/all", lambda d: versions(d) == [("2.0", True, 1)])
    gone = answers(server, "echo/1.0")
    assert {status for status, _ in gone} == {404} and all("1.0" in text for _, text in gone)
    assert answers(server, "echo") == [(200, "2.0")] * CALLS

    # scale a startup model to 0 and register one more, to be replayed below
    assert manage(server, "PUT", "/models/startup?min_worker=0").status_code == 202
    assert manage(server, "POST", "/models?url=echo.mar&model_name=temporary").status_code == 200
    wait_for_log(server, "Loaded model 'temporary' version 1.0", 2)  # before another worker is asked
    assert manage(server, "DELETE", "/models/temporary").status_code == 200
    wait_for_log(server, "Unloaded model 'temporary' version 1.0", 2)

    # a worker killed with SIGKILL is replaced; the replacement has every change replayed
    old = workers(server)
    victim = min(old)
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while len(workers(server) - old) < 1 or victim in workers(server):
        assert time.monotonic() < deadline, server["log"]()
        time.sleep(0.05)
    replacement = (workers(server) - old).pop()
    wait_until_every_worker(server, "/models/echo/all", lambda d: versions(d) == [("2.0", True, 1)])
    described = [manage(server, "GET", "/models/echo/all").json() for _ in range(CALLS // 2)]
    assert replacement in {w["pid"] for d in described for w in d[0]["workers"]}
    assert answers(server, "echo") == [(200, "2.0")] * CALLS
    assert {r.status_code for r in (predict(server, "echo/1.0") for _ in range(CALLS))} == {404}
    assert {r.status_code for r in (predict(server, "temporary") for _ in range(CALLS))} == {404}
    startup = [predict(server, "startup") for _ in range(CALLS)]
    assert {r.status_code for r in startup} == {503} and all("0 workers" in r.text for r in startup)
    listed = {manage(server, "GET", "/models").text for _ in range(CALLS // 4)}
    assert [json.loads(text) for text in listed] == [{"models": [
        {"modelName": "echo", "modelUrl": "echo-2.mar"}, {"modelName": "startup", "modelUrl": "startup.mar"}]}]

    # unregister the whole model, then bring the startup model back
    assert manage(server, "DELETE", "/models/echo").status_code == 200
    wait_for_log(server, "Unloaded model 'echo' version 2.0", 2)
    assert {r.status_code for r in (predict(server, "echo") for _ in range(CALLS))} == {404}
    assert manage(server, "PUT", "/models/startup?min_worker=1").status_code == 202
    wait_until_every_worker(server, "/models/startup", lambda d: versions(d) == [("1.0", True, 1)])
    assert answers(server, "startup") == [(200, "1.0")] * CALLS


def test_an_allowed_url_is_downloaded_once(server: dict[str, Any], remote: dict[str, Any]) -> None:
    url = f"{remote['url']}/fetched.mar"
    registered = manage(server, "POST", f"/models?url={url}&initial_workers=1")
    assert registered.status_code == 200, registered.text
    wait_until_every_worker(server, "/models/fetched", lambda d: versions(d) == [("7.0", True, 1)])
    assert answers(server, "fetched") == [(200, "7.0")] * CALLS
    assert {manage(server, "GET", "/models/fetched").json()[0]["modelUrl"] for _ in range(10)} == {url}
    assert remote["fetched"] == ["/fetched.mar"]
    assert manage(server, "DELETE", "/models/fetched").status_code == 200


def test_every_change_is_in_force_on_every_worker_when_the_call_returns(server: dict[str, Any]) -> None:
    """No waiting: right after each call answers, every one of 40 predictions on
    fresh connections (both workers answer some) sees the change, in 3 rounds."""
    for round_ in range(3):
        name = f"synced{round_}"
        registered = manage(server, "POST", f"/models?url=echo.mar&model_name={name}&initial_workers=1")
        assert registered.status_code == 200, registered.text
        assert registered.json()["status"] == f'Model "{name}" Version: 1.0 registered with 1 initial workers'
        seen = answers(server, name)
        assert [status for status, _ in seen] == [200] * CALLS, seen

        scaled = manage(server, "PUT", f"/models/{name}?min_worker=0&synchronous=true")
        assert scaled.status_code == 200, scaled.text
        seen = answers(server, name)
        assert [status for status, _ in seen] == [503] * CALLS, seen
        assert all("scaled to 0 workers" in json.loads(body)["message"] for _, body in seen)
        assert {json.loads(body)["type"] for _, body in seen} == {"ServiceUnavailableException"}

        removed = manage(server, "DELETE", f"/models/{name}")
        assert removed.status_code == 200, removed.text
        seen = answers(server, name)
        assert [status for status, _ in seen] == [404] * CALLS, seen
        assert {json.loads(body)["type"] for _, body in seen} == {"ModelNotFoundException"}


def test_asynchronous_registration_answers_202_at_once(server: dict[str, Any]) -> None:
    response = manage(server, "POST", "/models?url=echo.mar&model_name=later&initial_workers=1&synchronous=false")
    assert response.status_code == 202, response.text
    assert response.json() == {"status": "Processing worker updates..."}
    wait_until_every_worker(server, "/models/later", lambda d: d[0]["status"] == "READY")
    assert [status for status, _ in answers(server, "later")] == [200] * CALLS
    assert manage(server, "DELETE", "/models/later").status_code == 200


def test_torchserve_metrics_add_up_over_the_workers(server: dict[str, Any]) -> None:
    """Both workers' answers are counted, and labels keep TorchServe's order
    (prometheus_client's multiprocess mode sorts them by name)."""
    import re

    def count(text: str, pattern: str) -> float:
        found = re.search(pattern, text)
        return float(found.group(1)) if found else 0.0

    requests_2xx = r'(?m)^Requests2XX\{Level="Host",Hostname="[^"]*",\} (\d+\.\d+)$'
    startup = r'(?m)^ts_inference_requests_total\{model_name="startup",model_version="default",hostname="[^"]*",\} (\S+)$'
    before = requests.get(server["metrics"], timeout=10).text
    assert manage(server, "PUT", "/models/startup?min_worker=1&synchronous=true").status_code == 200
    answered = [predict(server, "startup") for _ in range(CALLS)]
    assert {r.status_code for r in answered} == {200}
    after = requests.get(server["metrics"], timeout=10).text
    assert count(after, requests_2xx) - count(before, requests_2xx) == CALLS + 1, after
    assert count(after, startup) - count(before, startup) == CALLS, after
