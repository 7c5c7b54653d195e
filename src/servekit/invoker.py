"""How one loaded model version is called: the one place that decides whether
``predict`` runs on the event loop or in a thread.

- A runtime with an async ``predict`` (``is_async``) is awaited on the loop.
- A synchronous ``predict`` runs in the registry's thread pool, except when the
  median of the model's last eight calls took less than ``inline_limit`` seconds and the request
  is small (at most :attr:`Invoker.INLINE_MAX_ROWS` rows): then handing the
  call to a thread would cost more than the call itself holds the loop, and it
  runs inline. The first call of a model always runs in a thread.
- A call in a thread also waits for the GIL, which the busy event loop holds
  for up to a switch interval: a fast model measured there can look slow for
  as long as the load lasts. So every :attr:`Invoker.PROBE_EVERY`-th threaded
  call of a model whose median is under :attr:`Invoker.PROBE_FACTOR` times the
  limit runs inline instead, measured without those waits; when it is under
  the limit, the threaded history is dropped and the model runs inline.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from typing import TypeVar

from servekit.runtimes.base import Runtime
from servekit.tensors import InferenceRequest, InferenceResponse

A = TypeVar("A")
R = TypeVar("R")


class Invoker:
    """Calls one runtime's ``predict``, inline or in ``executor`` (see module doc)."""

    INLINE_MAX_ROWS = 64
    PROBE_EVERY = 16
    PROBE_FACTOR = 20.0

    def __init__(self, runtime: Runtime, executor: Executor, inline_limit: float) -> None:
        self.runtime = runtime
        self.executor = executor
        self.inline_limit = inline_limit
        self.durations: deque[float] = deque(maxlen=8)  # seconds of the last calls
        # their median: a call the OS preempted (or that waited for the GIL)
        # only looks longer, and one such call must not move a fast model onto
        # threads, where every call costs a hand-off (nor one fast call a slow
        # model onto the loop)
        self.recent: float | None = None
        self.threaded = 0  # calls run in a thread (every PROBE_EVERY-th may be a probe)

    def timed(self, request: InferenceRequest) -> InferenceResponse:
        return self.timed_call(self.runtime.predict, request)

    def timed_call(self, call: Callable[[A], R], argument: A) -> R:
        """``call(argument)``, one of the runtime's synchronous calls, timed as a call of the model."""
        started = time.perf_counter()
        try:
            return call(argument)
        finally:
            self._note(time.perf_counter() - started)

    def _note(self, took: float) -> None:
        durations = self.durations
        durations.append(took)
        self.recent = sorted(durations)[len(durations) // 2]

    def runs_inline(self, request: InferenceRequest) -> bool:
        return self._rows_inline(_rows(request) if request.inputs else 0)

    def _rows_inline(self, rows: int) -> bool:
        recent = self.recent
        return recent is not None and recent < self.inline_limit and rows <= self.INLINE_MAX_ROWS

    def may_inline(self) -> bool:
        """Whether a small enough request would run on the loop now (before
        there is a request to ask :meth:`fits_inline` about)."""
        recent = self.recent
        return recent is not None and recent < self.inline_limit and not self.runtime.is_async

    def fits_inline(self, request: InferenceRequest) -> bool:
        """Whether a call would run on the loop: :meth:`runs_inline` for a
        synchronous ``predict`` (what :meth:`__call__` would do, without it)."""
        return not self.runtime.is_async and self.runs_inline(request)

    def fits_rows(self, rows: int) -> bool:
        """:meth:`fits_inline` for a call on ``rows`` rows that is not a request
        (the runtime's ``plain_output``)."""
        return not self.runtime.is_async and self._rows_inline(rows)

    async def __call__(self, request: InferenceRequest) -> InferenceResponse:
        if self.runtime.is_async:
            result: InferenceResponse = await self.runtime.predict(request)  # type: ignore[misc]
            return result
        if self.runs_inline(request):
            return self.timed(request)
        if self._probe_due(request):
            return self._probe(request)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self.timed, request)

    def _probe_due(self, request: InferenceRequest) -> bool:
        self.threaded += 1
        recent = self.recent
        return (
            self.threaded % self.PROBE_EVERY == 0
            and recent is not None
            and recent < self.PROBE_FACTOR * self.inline_limit
            and (not request.inputs or _rows(request) <= self.INLINE_MAX_ROWS)
        )

    def _probe(self, request: InferenceRequest) -> InferenceResponse:
        """One call on the loop, of a model that runs in threads: when it takes
        less than the limit there, the waits of its threaded calls were not its
        own, and it runs inline from now on (see the module doc)."""
        started = time.perf_counter()
        try:
            return self.runtime.predict(request)
        finally:
            took = time.perf_counter() - started
            if took < self.inline_limit:
                self.durations.clear()
            self._note(took)


def _rows(request: InferenceRequest) -> int:
    shape = request.inputs[0].data.shape
    return shape[0] if shape else 1
