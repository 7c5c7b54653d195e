"""Every worker's report, gathered on demand: how one worker answers with
numbers summed over all workers (the dashboard's statistics).

Each worker process keeps its own counters (its data plane's calls, its
batchers' statistics); a browser's request reaches one worker, chosen by the
kernel (SO_REUSEPORT). To answer for the whole server, that worker asks the
supervisor over the control channel it already has (the socket pair that
relays changes), the supervisor asks every live worker, and answers with
whatever came back within :data:`GATHER_SECONDS`::

    worker A                supervisor                   every worker (A too)
      "gather <id>" ──────►  "collect <id>" ─────────────►
                             ◄──────────── "report <id> <JSON>"
      ◄── "gathered <id> {"workers": N, "missing": [...], "reports": [...]}"

Why this channel and not shared memory or a file per worker:

- it is on demand: nothing is written while nobody looks, and a report is
  made from the worker's live counters at the moment it is asked for;
- it is bounded: a report is a few numbers per served model (fixed-size
  histograms, a bounded ring of recent errors), one gathering is in flight
  per worker at a time (callers share it, see :meth:`Reports.gather`), and a
  worker that does not answer within :data:`GATHER_SECONDS` (stuck, dying) is
  named in ``missing`` instead of holding the answer;
- it is robust: a worker that dies is dropped from the gatherings waiting on
  it (:meth:`ReportRelay.forget`); its replacement starts its counters at
  zero, which readers of cumulative counters treat as a restart (a counter
  that went down);
- it needs no new files, locks or cleanup, and no format shared through the
  file system (prometheus_client's multiprocess files do that for /metrics,
  but hold only its own metric types).

With one worker there is no supervisor: :meth:`Reports.gather` answers this
worker's report alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

GATHER_SECONDS = 1.0  # the supervisor answers with what came back by then
WAIT_SECONDS = 3.0  # a worker gives up on the supervisor after this (then answers alone)
FRESH_SECONDS = 0.25  # a gathering this recent answers further callers (a burst of page loads)

Reporter = Callable[[], Any]
_sequence = itertools.count(1)


@dataclass
class Gathered:
    """Every worker's report: ``reports`` of the workers that answered (each
    with its ``worker`` index and ``pid``), how many ``workers`` the server
    runs, and the indices of those that did not answer in time."""

    reports: list[dict[str, Any]]
    workers: int = 1
    missing: list[int] = field(default_factory=list)
    # why these are not every worker's reports, when the supervisor could not be asked
    note: str = ""


class Reports:
    """One worker's side: what it reports (``reporters``, by name) and how it
    gathers every worker's reports."""

    def __init__(self, index: int = 0) -> None:
        self.index = index
        self.reporters: dict[str, Reporter] = {}
        self.started = time.time()
        self._send: Callable[[bytes], None] | None = None
        self._waiting: dict[str, asyncio.Future[Gathered]] = {}
        self._current: asyncio.Future[Gathered] | None = None
        self._last: tuple[float, Gathered] | None = None

    def connect(self, send: Callable[[bytes], None]) -> None:
        """Gather through the supervisor, sending control lines with ``send``."""
        self._send = send

    def local(self) -> dict[str, Any]:
        """This worker's report: its index, pid, start time and each reporter's part."""
        out: dict[str, Any] = {"worker": self.index, "pid": os.getpid(), "started": self.started}
        for name, reporter in self.reporters.items():
            out[name] = reporter()
        return out

    async def gather(self) -> Gathered:
        """Every worker's report (only this one's without a supervisor). Callers
        at the same time share one gathering; one that ended under
        :data:`FRESH_SECONDS` ago answers again."""
        if self._send is None:
            return Gathered([self.local()])
        now = time.monotonic()
        if self._last is not None and now - self._last[0] < FRESH_SECONDS:
            return self._last[1]
        if self._current is None or self._current.done():
            self._current = asyncio.ensure_future(self._gather())
        return await asyncio.shield(self._current)

    async def _gather(self) -> Gathered:
        assert self._send is not None
        request_id = f"{os.getpid()}-{next(_sequence)}"
        future: asyncio.Future[Gathered] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        try:
            self._send(b"gather " + request_id.encode() + b"\n")
            gathered = await asyncio.wait_for(future, WAIT_SECONDS)
        except (OSError, TimeoutError) as exc:  # no supervisor to ask: this worker alone
            reason = "did not answer in time" if isinstance(exc, TimeoutError) else f"is unreachable ({exc})"
            gathered = Gathered([self.local()], workers=0, note=f"the supervisor {reason}: worker {self.index} only")
        finally:
            self._waiting.pop(request_id, None)
        self._last = (time.monotonic(), gathered)
        return gathered

    def on_collect(self, rest: bytes) -> None:
        """The supervisor asks for this worker's report (``collect <id>``)."""
        if self._send is None:
            return
        request_id = rest.split(b" ", 1)[0]
        try:
            body = orjson.dumps(self.local())
        except Exception as exc:  # a reporter failed: say so rather than leave the gathering waiting
            body = orjson.dumps({"worker": self.index, "pid": os.getpid(), "error": f"{type(exc).__name__}"})
        with contextlib.suppress(OSError):  # the supervisor is gone; this worker is stopping
            self._send(b"report " + request_id + b" " + body + b"\n")

    def on_gathered(self, rest: bytes) -> None:
        """The supervisor's answer (``gathered <id> <JSON>``)."""
        request_id, _, body = rest.partition(b" ")
        future = self._waiting.get(request_id.decode("ascii", "replace"))
        if future is None or future.done():
            return
        data = orjson.loads(body)
        future.set_result(Gathered(
            [r for r in data.get("reports", []) if isinstance(r, dict)],
            int(data.get("workers", 0)),
            [int(i) for i in data.get("missing", [])],
        ))


@dataclass
class _Gathering:
    origin: socket.socket
    deadline: float
    waiting: dict[socket.socket, int]  # control socket -> worker index
    reports: list[bytes] = field(default_factory=list)
    answered: set[int] = field(default_factory=set)


class ReportRelay:
    """The supervisor's side: asks every worker, answers the one that asked."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.pending: dict[bytes, _Gathering] = {}

    def ask(self, origin: socket.socket, rest: bytes, workers: dict[socket.socket, int]) -> None:
        """``gather <id>`` from ``origin``: ``collect <id>`` to every worker."""
        request_id = rest.split(b" ", 1)[0][:64]
        if not request_id or request_id in self.pending:
            return
        gathering = self.pending[request_id] = _Gathering(origin, time.monotonic() + GATHER_SECONDS, {})
        for control, index in workers.items():
            try:
                control.sendall(b"collect " + request_id + b"\n")
                gathering.waiting[control] = index
            except OSError:  # a dying worker: named as missing
                pass
        self._settle(request_id)

    def answer(self, source: socket.socket, rest: bytes) -> None:
        """``report <id> <JSON>`` from a worker."""
        request_id, _, body = rest.partition(b" ")
        gathering = self.pending.get(request_id)
        if gathering is None or source not in gathering.waiting:
            return  # late (already answered) or unasked
        gathering.answered.add(gathering.waiting.pop(source))
        if body:
            gathering.reports.append(body)
        self._settle(request_id)

    def expire(self) -> None:
        """Answer the gatherings whose time is up with what they have."""
        now = time.monotonic()
        for request_id, gathering in list(self.pending.items()):
            if now >= gathering.deadline:
                self._settle(request_id, force=True)

    def forget(self, control: socket.socket) -> None:
        """A worker died: no gathering waits for it, and none answers it."""
        for request_id, gathering in list(self.pending.items()):
            if gathering.origin is control:
                del self.pending[request_id]
            elif control in gathering.waiting:
                del gathering.waiting[control]
                self._settle(request_id)

    def _settle(self, request_id: bytes, force: bool = False) -> None:
        gathering = self.pending[request_id]
        if gathering.waiting and not force:
            return
        del self.pending[request_id]
        missing = sorted(set(range(self.workers)) - gathering.answered)
        body = (
            b'{"workers":' + str(self.workers).encode()
            + b',"missing":' + orjson.dumps(missing)
            + b',"reports":[' + b",".join(gathering.reports) + b"]}"
        )
        with contextlib.suppress(OSError):  # the worker that asked died meanwhile
            gathering.origin.sendall(b"gathered " + request_id + b" " + body + b"\n")


__all__ = ["GATHER_SECONDS", "Gathered", "ReportRelay", "Reporter", "Reports"]
