"""Adaptive batching: merge requests that queue up while a model is busy.

A lone request never waits: when the model is idle it runs at once. Requests
arriving while it is busy queue up; when it frees, every compatible queued
request (same inputs, trailing shapes, dtypes, outputs and parameters), up
to ``max_batch_size`` rows, is merged with one ``np.concatenate`` per input
and run as one call; outputs are split back as views. So the batch size
follows the load. ``max_batch_time`` > 0 adds MLServer's behaviour: wait up to
that long for a batch to fill. The queue is bounded, and a request whose
``deadline`` (set by the data plane from the protocol's timeout) passes while
it waits is answered with a timeout and never run.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import numpy as np
import orjson

from servekit.abandon import WATCH, gone
from servekit.errors import Overloaded, RequestTimedOut, ServekitError
from servekit.observability.request_id import unbound_context
from servekit.tensors import InferenceRequest, InferenceResponse, Tensor

T = TypeVar("T")
Predict = Callable[[InferenceRequest], Awaitable[InferenceResponse]]


class Inline(Protocol):
    """How a model's call runs on the caller's frame (servekit.invoker.Invoker)."""

    def may_inline(self) -> bool: ...

    def fits_inline(self, request: InferenceRequest) -> bool: ...

    def timed(self, request: InferenceRequest) -> InferenceResponse: ...

    def fits_rows(self, rows: int) -> bool: ...

    def timed_call(self, call: Callable[[Any], Any], argument: Any) -> Any: ...

# a timer may fire this much before its time (the event loop's clock resolution)
_SLACK = 0.001
# request parameters that describe the transport, not the computation
TRANSPORT_PARAMETERS = frozenset({"binary_data_output", "timeout", "headers"})


@dataclass(slots=True)
class ModelStats:
    """Counters for the V2 statistics extension (durations in nanoseconds)."""

    inference_count: int = 0
    execution_count: int = 0
    success_count: int = 0
    success_ns: int = 0
    fail_count: int = 0
    fail_ns: int = 0
    queue_ns: int = 0
    compute_ns: int = 0
    last_inference_ms: int = 0
    batch_sizes: dict[int, int] = field(default_factory=dict)

    def started_one(self) -> int:
        """One request runs on its own (a batch of one); its start, for :meth:`ended_one`."""
        self.execution_count += 1
        self.batch_sizes[1] = self.batch_sizes.get(1, 0) + 1
        return time.perf_counter_ns()

    def ended_one(self, started: int, ok: bool) -> None:
        elapsed = time.perf_counter_ns() - started
        self.inference_count += 1
        if ok:
            self.success_count += 1
            self.success_ns += elapsed
            self.compute_ns += elapsed
            self.last_inference_ms = int(time.time() * 1000)
        else:
            self.fail_count += 1
            self.fail_ns += elapsed


@dataclass(slots=True)
class _Pending:
    request: InferenceRequest
    key: Any
    rows: int
    future: asyncio.Future[InferenceResponse]
    enqueued_ns: int
    deadline: float | None
    queue_deadline: float | None  # monotonic time after which it may no longer wait to start


class AdaptiveBatcher:
    """Serialises calls to one model version, merging queued requests."""

    def __init__(
        self,
        predict: Predict,
        *,
        batchable: bool,
        max_batch_size: int = 0,
        max_batch_time: float = 0.0,
        max_queue_size: int = 1024,
        max_queue_time: float = 0.0,
        name: str = "",
        concurrent: bool = False,
        vectors: bool = False,
        inline: Inline | None = None,
    ) -> None:
        self._predict = predict
        # the same model called synchronously, for run_now (None: never)
        self._inline = None if concurrent else inline
        self.batchable = batchable
        self.max_batch_size = max_batch_size
        self.max_batch_time = max_batch_time
        self.max_queue_size = max_queue_size
        self.max_queue_time = max_queue_time
        self.name = name
        self.stats = ModelStats()
        # inputs with fewer dimensions are never merged (1-D ones are rows only when
        # the runtime says so: ``vectors``, a list of strings)
        self._min_rank = 1 if vectors else 2
        self._queue: deque[_Pending] = deque()
        self._worker: asyncio.Task[None] | None = None
        self._direct = False  # a request is running in its caller's task
        self._wakeup: asyncio.Event | None = None
        self._sweeper: asyncio.TimerHandle | None = None  # see _sweep
        self._running = 0  # calls of a concurrent model in flight
        if concurrent:
            # a model whose calls run side by side (an inference graph: its nodes
            # have batchers of their own): no queue, no merging, no serialising
            self.submit = self._run_concurrently  # type: ignore[method-assign]

    async def idle(self) -> None:
        """Wait until every queued request has been answered."""
        while self._direct or self._running or (self._worker is not None and not self._worker.done()):
            if self._worker is not None and not self._worker.done():
                await asyncio.wait([self._worker])
            else:
                await asyncio.sleep(0.001)

    def _is_idle(self) -> bool:
        return not self._direct and not self._queue and (self._worker is None or self._worker.done())

    def busy(self) -> bool:
        """Whether a request is queued or running (a model with requests in flight is not unloaded)."""
        return self._running > 0 or not self._is_idle()

    def may_run_now(self) -> bool:
        """Whether :meth:`run_now` would run a small request without a deadline
        (asked before the request is decoded, so that one that will queue is
        decoded once)."""
        inline = self._inline
        return inline is not None and self.max_batch_time <= 0 and self._is_idle() and inline.may_inline()

    def run_now(self, request: InferenceRequest) -> InferenceResponse | None:
        """What :meth:`submit` does for a request it would run at once and
        inline (an idle model, no batching window, no deadline, a call the
        invoker keeps on the loop), done in the caller's frame without a
        coroutine; None, with nothing done, for any other request."""
        inline = self._inline
        if inline is None or request.deadline is not None or not inline.fits_inline(request):
            return None
        response: InferenceResponse | None = self._inline_now(inline.timed, request)
        return response

    def run_plain(self, call: Callable[[np.ndarray], T], features: np.ndarray) -> T | None:
        """:meth:`run_now` for the runtime's ``plain_output`` on a feature
        table (the data plane's plain lane): ``call(features)`` run and counted
        as a call of one request, or None, with nothing done, when it would
        not run at once and inline."""
        inline = self._inline
        if inline is None or not inline.fits_rows(len(features)):
            return None
        result: T | None = self._inline_now(inline.timed_call, call, features)
        return result

    def _inline_now(self, timed: Callable[..., Any], *arguments: Any) -> Any:
        """``timed(*arguments)``, counted in the statistics, when the model is
        idle and has no batching window; else None, with nothing done."""
        if self.max_batch_time > 0 or not self._is_idle():
            return None
        stats = self.stats
        started = stats.started_one()
        try:
            result = timed(*arguments)
        except BaseException:
            stats.ended_one(started, ok=False)
            raise
        stats.ended_one(started, ok=True)
        return result

    async def submit(self, request: InferenceRequest) -> InferenceResponse:
        deadline = request.deadline
        timeout = None if deadline is None else deadline - time.monotonic()
        if timeout is not None and timeout <= 0:
            raise RequestTimedOut(f"request to model {self.name!r} timed out before it was queued")
        if timeout is None and self._is_idle() and self.max_batch_time <= 0:
            return await self._run_direct(request)
        watch = WATCH.get()
        if watch is not None and watch.closed:
            raise gone()  # the client left: it would only wait to run for nobody
        if len(self._queue) >= self.max_queue_size:
            raise Overloaded(
                f"model {self.name!r} has {len(self._queue)} requests queued (the limit); "
                "retry later or add workers"
            )
        loop = asyncio.get_running_loop()
        key, rows = self._key(request)
        queue_time = self.max_queue_time
        pending = _Pending(
            request=request,
            key=key,
            rows=rows,
            future=loop.create_future(),
            enqueued_ns=time.perf_counter_ns(),
            deadline=deadline,
            queue_deadline=time.monotonic() + queue_time if queue_time > 0 else None,
        )
        self._queue.append(pending)
        if self._direct:
            pass  # the request running now starts the drain when it ends
        elif self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._drain(), context=unbound_context())
        elif self._wakeup is not None:
            self._wakeup.set()
        if pending.queue_deadline is not None and self._sweeper is None:
            self._sweeper = loop.call_later(queue_time, self._sweep)
        if watch is not None:
            watch.waiter = pending.future  # the client closing answers it at once; it never runs
        try:
            if timeout is None:
                return await pending.future
            return await asyncio.wait_for(asyncio.shield(pending.future), timeout)
        except TimeoutError:
            if pending in self._queue:
                self._queue.remove(pending)
            raise RequestTimedOut(
                f"request to model {self.name!r} timed out after {timeout:g} s"
            ) from None
        except asyncio.CancelledError:
            pending.future.cancel()  # nobody waits for it any more: it is dropped before it runs
            raise
        finally:
            if watch is not None:
                watch.waiter = None

    def _sweep(self) -> None:
        """Answer 503 (Retry-After) to the requests that waited the queue time
        without starting; they never run. One timer per model, set for the
        oldest queued request (the queue is in arrival order)."""
        self._sweeper = None
        now = time.monotonic() + _SLACK
        queue = self._queue
        while queue and (queue[0].future.done() or (
                queue[0].queue_deadline is not None and queue[0].queue_deadline <= now)):
            pending = queue.popleft()
            if not pending.future.done():
                pending.future.set_exception(self._queued_too_long())
        if queue and queue[0].queue_deadline is not None:
            delay = max(queue[0].queue_deadline - time.monotonic(), 0.0)
            self._sweeper = asyncio.get_running_loop().call_later(delay, self._sweep)

    def _queued_too_long(self) -> Overloaded:
        return Overloaded(
            f"request to model {self.name!r} waited {self.max_queue_time:g} s in the queue without "
            "starting (max_queue_time); the model is overloaded: retry later or add workers",
            retry_after=max(1, round(self.max_queue_time / 2)),
        )

    async def _run_concurrently(self, request: InferenceRequest) -> InferenceResponse:
        """A concurrent model's call: run now, in the caller's task, whatever else runs."""
        if request.deadline is not None and request.deadline <= time.monotonic():
            raise RequestTimedOut(f"request to model {self.name!r} timed out before it started")
        stats = self.stats
        started = stats.started_one()
        self._running += 1
        try:
            response = await self._predict(request)
        except BaseException:
            stats.ended_one(started, ok=False)
            raise
        finally:
            self._running -= 1
        stats.ended_one(started, ok=True)
        return response

    async def _run_direct(self, request: InferenceRequest) -> InferenceResponse:
        """An idle model runs a request in the caller's task: no queue entry, no
        future, no extra task. Requests arriving meanwhile queue up and are
        drained (and merged) once it ends."""
        self._direct = True
        stats = self.stats
        started = stats.started_one()
        try:
            response = await self._predict(request)
        except BaseException:
            stats.ended_one(started, ok=False)
            raise
        finally:
            self._direct = False
            if self._queue and (self._worker is None or self._worker.done()):
                self._worker = asyncio.get_running_loop().create_task(self._drain(), context=unbound_context())
        stats.ended_one(started, ok=True)
        return response

    def _key(self, request: InferenceRequest) -> tuple[Any, int]:
        """(compatibility key, rows); an unbatchable request gets a unique key."""
        if not self.batchable or not request.inputs:
            return object(), 0
        rows = -1
        parts = []
        for tensor in request.inputs:
            shape = tensor.data.shape
            if len(shape) < self._min_rank or (rows >= 0 and shape[0] != rows):
                return object(), 0
            rows = shape[0]
            parts.append((tensor.name, tensor.datatype, shape[1:], _params(tensor.parameters)))
        outputs = None
        if request.outputs is not None:
            outputs = tuple((o.name, _params(o.parameters)) for o in request.outputs)
        return (tuple(parts), outputs, _params(request.parameters)), rows

    async def _drain(self) -> None:
        while self._queue:
            if self.max_batch_time > 0 and self.batchable:
                await self._fill_window()
            batch = self._take_batch()
            if batch:
                await self._execute(batch)

    async def _fill_window(self) -> None:
        """MLServer's meaning of max_batch_time: wait for the batch to fill."""
        first = self._queue[0]
        deadline = first.enqueued_ns / 1e9 + self.max_batch_time
        self._wakeup = asyncio.Event()
        try:
            while self.max_batch_size <= 0 or self._rows_like(first) < self.max_batch_size:
                remaining = deadline - time.perf_counter_ns() / 1e9
                if remaining <= 0:
                    break
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
                except TimeoutError:
                    break
        finally:
            self._wakeup = None

    def _rows_like(self, first: _Pending) -> int:
        return sum(p.rows for p in self._queue if p.key == first.key)

    def _take_batch(self) -> list[_Pending]:
        now = time.monotonic()
        batch: list[_Pending] = []
        rest: deque[_Pending] = deque()
        rows = 0
        while self._queue:
            pending = self._queue.popleft()
            if pending.future.done():
                continue
            if pending.deadline is not None and pending.deadline < now:
                pending.future.set_exception(
                    RequestTimedOut(f"request to model {self.name!r} timed out in the queue")
                )
                continue
            if pending.queue_deadline is not None and pending.queue_deadline < now:
                pending.future.set_exception(self._queued_too_long())
                continue
            if not batch:
                batch.append(pending)
                rows = pending.rows
            elif pending.key == batch[0].key and (
                self.max_batch_size <= 0 or rows + pending.rows <= self.max_batch_size
            ):
                batch.append(pending)
                rows += pending.rows
            else:
                rest.append(pending)
        self._queue = rest
        return batch

    async def _execute(self, batch: list[_Pending]) -> None:
        start = time.perf_counter_ns()
        size = len(batch)
        for pending in batch:
            waited = start - pending.enqueued_ns
            self.stats.queue_ns += waited
            pending.request.queue_ns = waited
            pending.request.batch_size = size
        self.stats.execution_count += 1
        self.stats.batch_sizes[len(batch)] = self.stats.batch_sizes.get(len(batch), 0) + 1
        if len(batch) == 1:
            await self._run_one(batch[0], start)
            return
        merged = _merge([p.request for p in batch])
        try:
            response = await self._predict(merged)
            parts = _split(response, [p.rows for p in batch])
        except Exception:  # attribute the failure: run each request on its own
            for pending in batch:
                await self._run_one(pending, time.perf_counter_ns())
            return
        end = time.perf_counter_ns()
        self.stats.compute_ns += end - start
        for pending, outputs in zip(batch, parts, strict=True):
            result = InferenceResponse(
                model_name=response.model_name,
                model_version=response.model_version,
                id=pending.request.id,
                outputs=outputs,
                parameters=dict(response.parameters),
            )
            self._finish(pending, result, None, end)

    async def _run_one(self, pending: _Pending, start: int) -> None:
        try:
            response = await self._predict(pending.request)
        except Exception as exc:
            self._finish(pending, None, exc, time.perf_counter_ns())
            return
        end = time.perf_counter_ns()
        self.stats.compute_ns += end - start
        self._finish(pending, response, None, end)

    def _finish(
        self,
        pending: _Pending,
        response: InferenceResponse | None,
        error: BaseException | None,
        end: int,
    ) -> None:
        elapsed = end - pending.enqueued_ns
        self.stats.inference_count += 1
        self.stats.last_inference_ms = int(time.time() * 1000)
        if error is None:
            self.stats.success_count += 1
            self.stats.success_ns += elapsed
        else:
            self.stats.fail_count += 1
            self.stats.fail_ns += elapsed
        if pending.future.done():
            return
        if error is not None:
            pending.future.set_exception(error)
        else:
            assert response is not None
            pending.future.set_result(response)


def _merge(requests: list[InferenceRequest]) -> InferenceRequest:
    first = requests[0]
    inputs = [
        Tensor(
            name=tensor.name,
            data=np.concatenate([r.inputs[i].data for r in requests], axis=0),
            datatype=tensor.datatype,
            parameters=tensor.parameters,
        )
        for i, tensor in enumerate(first.inputs)
    ]
    return InferenceRequest(
        inputs=inputs, outputs=first.outputs, id=first.id, parameters=first.parameters,
        batch_size=len(requests),  # a runtime bounding one request's rows allows this many times as many
    )


def _split(response: InferenceResponse, rows: list[int]) -> list[list[Tensor]]:
    total = sum(rows)
    for tensor in response.outputs:
        if tensor.data.ndim == 0 or tensor.data.shape[0] != total:
            raise ServekitError(f"output {tensor.name!r} does not line up with the batch rows")
    parts: list[list[Tensor]] = [[] for _ in rows]
    for tensor in response.outputs:
        offset = 0
        for i, n in enumerate(rows):
            parts[i].append(
                Tensor(
                    name=tensor.name,
                    data=tensor.data[offset : offset + n],
                    datatype=tensor.datatype,
                    parameters=tensor.parameters,
                )
            )
            offset += n
    return parts


def _params(parameters: dict[str, Any]) -> bytes:
    if not parameters:
        return b""
    relevant = {k: v for k, v in parameters.items() if k not in TRANSPORT_PARAMETERS}
    return orjson.dumps(relevant, option=orjson.OPT_SORT_KEYS) if relevant else b""
