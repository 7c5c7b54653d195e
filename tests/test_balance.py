"""Connections spread over the workers by how many each holds
(servekit.server.balance): the shared counts, and a real 2-worker server
whose kept-alive connections split evenly, which the kernel's SO_REUSEPORT
hash did only by chance (two connections on one worker half of the time)."""

from __future__ import annotations

import http.client
import threading
from collections import Counter
from pathlib import Path

import pytest
from servers import ServerProcess

from servekit.server.balance import Loads


def test_a_worker_takes_a_connection_only_when_no_sibling_holds_fewer() -> None:
    loads = Loads(3)
    first, second, third = (loads.share(i) for i in range(3))
    # nobody serves yet: each counts as absent to the others
    first.publish(5)
    assert first.my_turn()
    second.publish(5)
    third.publish(4)
    assert not first.my_turn() and not second.my_turn() and third.my_turn()
    third.publish(5)
    assert first.my_turn() and second.my_turn() and third.my_turn()  # a tie: whoever is free first


def test_a_dead_worker_never_holds_the_others_back() -> None:
    loads = Loads(2)
    busy, idle = loads.share(0), loads.share(1)
    busy.publish(3)
    idle.publish(1)
    assert not busy.my_turn() and idle.my_turn()
    loads.absent(1)  # died: not counted until its replacement serves
    assert busy.my_turn()


def _worker_of(connection: http.client.HTTPConnection) -> str:
    """Which worker answered: request ids carry a per-process prefix."""
    connection.request("GET", "/v2/health/live")
    response = connection.getresponse()
    assert response.status == 200 and response.read() == b'{"live":true}'
    return response.headers["x-request-id"][:24]


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory) -> ServerProcess:
    repo: Path = tmp_path_factory.mktemp("empty-repo")
    with ServerProcess(["serve", str(repo)], workers=2) as server:
        yield server


def test_kept_alive_connections_split_evenly_over_the_workers(two_workers: ServerProcess) -> None:
    connections = []
    try:
        for _ in range(6):  # one after another, as a proxy opens its upstream connections
            connection = http.client.HTTPConnection("127.0.0.1", two_workers.http_port, timeout=10)
            connections.append((connection, _worker_of(connection)))
        workers = Counter(worker for _, worker in connections)
        assert sorted(workers.values()) == [3, 3], workers
        for connection, worker in connections:  # a connection stays with its worker
            assert _worker_of(connection) == worker
    finally:
        for connection, _ in connections:
            connection.close()


def test_connections_closed_after_each_request_are_all_answered(two_workers: ServerProcess) -> None:
    """Many short connections at once (as ``ab`` without -k sends them): the
    workers defer to each other and never both wait."""
    seen: list[str] = []
    failures: list[BaseException] = []

    def client() -> None:
        try:
            for _ in range(50):
                connection = http.client.HTTPConnection("127.0.0.1", two_workers.http_port, timeout=10)
                try:
                    seen.append(_worker_of(connection))
                finally:
                    connection.close()
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=client) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures[:3]
    assert len(seen) == 400
    assert len(set(seen)) == 2  # both workers took connections
