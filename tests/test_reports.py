"""Gathering every worker's report through the supervisor
(servekit.server.reports) over real socket pairs, and the dashboard's
counters and sums (servekit.server.dashboard.stats)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import orjson
import pytest

from servekit.config import ServerSettings
from servekit.dataplane import InferenceCall, Target
from servekit.errors import ModelNotFound
from servekit.registry import Registry
from servekit.server.dashboard.stats import (
    LATENCY_BUCKETS,
    MESSAGE_CHARS,
    RECENT_ERRORS,
    WorkerStats,
    batch_bin,
    bucket_bounds,
    combine,
    latency_bucket,
)
from servekit.server.reports import ReportRelay, Reports


@pytest.fixture
def pairs() -> Iterator[list[tuple[socket.socket, socket.socket]]]:
    """Two workers' control channels: (supervisor's end, worker's end)."""
    made = [socket.socketpair() for _ in range(2)]
    for _supervisor_end, worker_end in made:
        worker_end.settimeout(2)
    yield made
    for a, b in made:
        a.close()
        b.close()


def line(sock: socket.socket) -> bytes:
    """One control line (read a byte at a time: the next line stays unread)."""
    data = b""
    while not data.endswith(b"\n"):
        data += sock.recv(1)
    return data[:-1]


def gathered(sock: socket.socket, request_id: bytes) -> dict[str, object]:
    verb, got_id, body = line(sock).split(b" ", 2)
    assert (verb, got_id) == (b"gathered", request_id)
    return dict(orjson.loads(body))


def test_the_relay_answers_once_every_worker_reported(pairs: list[tuple[socket.socket, socket.socket]]) -> None:
    (s0, w0), (s1, w1) = pairs
    relay = ReportRelay(2)
    relay.ask(s0, b"g1", {s0: 0, s1: 1})
    assert line(w0) == b"collect g1" and line(w1) == b"collect g1"
    relay.answer(s1, b'g1 {"worker":1,"n":2}')
    relay.expire()  # not yet due: worker 0 has not answered
    assert b"g1" in relay.pending
    relay.answer(s0, b'g1 {"worker":0,"n":1}')
    answer = gathered(w0, b"g1")
    assert answer["workers"] == 2 and answer["missing"] == []
    assert sorted(r["n"] for r in answer["reports"]) == [1, 2]  # type: ignore[attr-defined]
    assert relay.pending == {}


def test_a_worker_that_does_not_answer_is_named_missing(pairs: list[tuple[socket.socket, socket.socket]]) -> None:
    (s0, w0), (s1, _w1) = pairs
    relay = ReportRelay(2)
    relay.ask(s0, b"g2", {s0: 0, s1: 1})
    assert line(w0) == b"collect g2"
    relay.answer(s0, b'g2 {"worker":0}')
    relay.pending[b"g2"].deadline = 0.0  # its time is up
    relay.expire()
    answer = gathered(w0, b"g2")
    assert answer["missing"] == [1] and answer["reports"] == [{"worker": 0}]
    relay.answer(s1, b'g2 {"worker":1}')  # late: dropped, nothing more is sent
    w0.settimeout(0.2)
    with pytest.raises(TimeoutError):
        w0.recv(100)


def test_a_worker_that_dies_is_not_waited_for(pairs: list[tuple[socket.socket, socket.socket]]) -> None:
    (s0, w0), (s1, _w1) = pairs
    relay = ReportRelay(2)
    relay.ask(s0, b"g3", {s0: 0, s1: 1})
    assert line(w0) == b"collect g3"
    relay.answer(s0, b'g3 {"worker":0}')
    relay.forget(s1)
    assert gathered(w0, b"g3")["missing"] == [1]
    # the asker dying drops its gathering
    relay.ask(s1, b"g4", {s0: 0, s1: 1})
    relay.forget(s1)
    assert relay.pending == {}


def test_reports_without_a_supervisor_are_this_workers() -> None:
    reports = Reports(3)
    reports.reporters["part"] = lambda: {"x": 1}
    answer = asyncio.run(reports.gather())
    assert answer.workers == 1 and answer.missing == []
    assert answer.reports[0]["worker"] == 3 and answer.reports[0]["part"] == {"x": 1}


def test_a_worker_answers_collect_and_reads_gathered(pairs: list[tuple[socket.socket, socket.socket]]) -> None:
    (s0, w0), _ = pairs
    reports = Reports(0)
    reports.reporters["part"] = lambda: [1, 2]
    reports.connect(w0.sendall)

    async def main() -> None:
        asking = asyncio.ensure_future(reports.gather())
        also = asyncio.ensure_future(reports.gather())  # a second caller shares the gathering
        await asyncio.sleep(0.05)
        verb, request_id = (await asyncio.to_thread(line, s0)).split(b" ")
        assert verb == b"gather"
        reports.on_collect(request_id)
        verb, got_id, body = (await asyncio.to_thread(line, s0)).split(b" ", 2)
        assert (verb, got_id) == (b"report", request_id)
        reports.on_gathered(request_id + b' {"workers":2,"missing":[1],"reports":[' + body + b"]}")
        first, second = await asyncio.gather(asking, also)
        assert first is second
        assert first.workers == 2 and first.missing == [1] and first.reports[0]["part"] == [1, 2]

    asyncio.run(main())


# -- the dashboard's counters ---------------------------------------------------------
def test_latency_buckets_are_ordered_and_bounded() -> None:
    bounds = bucket_bounds()
    assert len(bounds) == LATENCY_BUCKETS and bounds == sorted(bounds)
    for seconds in (0.0, 1e-6, 3e-4, 0.01, 0.5, 7.0, 1e9):
        index = latency_bucket(seconds)
        assert 0 <= index < LATENCY_BUCKETS
        assert seconds <= bounds[index] or index == LATENCY_BUCKETS - 1
        assert index == 0 or seconds > bounds[index - 1]
    assert [batch_bin(n) for n in (1, 2, 3, 4, 5, 8, 9, 1000)] == [1, 2, 4, 4, 8, 8, 16, 1024]


def test_calls_to_names_not_served_stay_bounded() -> None:
    stats = WorkerStats(Registry(ServerSettings()))
    for i in range(3 * RECENT_ERRORS):
        name = f"nope-{i}-" + "x" * 1000
        stats.failed(InferenceCall("v2", Target(name), error=ModelNotFound(f"model {name!r} not found"), seconds=0.001))
    report = stats.report()
    assert list(report["models"]) == ["(unknown)"]
    assert report["models"]["(unknown)"]["requests"] == 3 * RECENT_ERRORS
    assert report["models"]["(unknown)"]["statuses"] == {"404": 3 * RECENT_ERRORS}
    assert len(report["errors"]) == RECENT_ERRORS
    assert all(len(e["message"]) <= MESSAGE_CHARS for e in report["errors"])


def test_combine_sums_the_workers() -> None:
    def part(worker: int, requests: int, latency_at: int) -> dict[str, object]:
        latency = [0] * LATENCY_BUCKETS
        latency[latency_at] = requests
        return {"worker": worker, "dashboard": {
            "models": {"iris": {"requests": requests, "protocols": {"v2": requests}, "statuses": {"500": 1},
                                "latency": latency}},
            "batching": {"iris": {"queued": requests, "queue_ns": 1000, "executions": 2, "batches": {"1": 1, "4": 1}}},
            "states": {"iris": {"1": "READY"}},
            "errors": [{"time": float(worker), "message": f"w{worker}"}],
        }}

    total = combine([part(0, 3, 10), part(1, 5, 20)])
    iris = total["models"]["iris"]
    assert iris["requests"] == 8 and iris["by_worker"] == {"0": 3, "1": 5}
    assert iris["protocols"] == {"v2": 8} and iris["statuses"] == {"500": 2}
    assert iris["latency"][10] == 3 and iris["latency"][20] == 5 and sum(iris["latency"]) == 8
    assert iris["queued"] == 8 and iris["queue_ns"] == 2000 and iris["batches"] == {"1": 2, "4": 2}
    assert total["states"] == {"iris": {"1": {"READY": 2}}}
    assert [e["message"] for e in total["errors"]] == ["w1", "w0"]  # newest first


def test_a_silent_supervisor_leaves_this_workers_report_and_says_so(
    pairs: list[tuple[socket.socket, socket.socket]], monkeypatch: pytest.MonkeyPatch,
) -> None:
    import servekit.server.reports as reports_module

    monkeypatch.setattr(reports_module, "WAIT_SECONDS", 0.2)
    (_s0, w0), _ = pairs
    reports = Reports(1)
    reports.connect(w0.sendall)
    answer = asyncio.run(reports.gather())
    assert [r["worker"] for r in answer.reports] == [1]
    assert answer.note == "the supervisor did not answer in time: worker 1 only"
