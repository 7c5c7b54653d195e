"""Where a synchronous predict runs: inline on the event loop once the median of
the model's last calls is under the inline limit, in a thread otherwise. One
slow call (a preempted one) does not move a fast model onto threads; a model
that has become slow moves within a few calls."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from servekit.config import ModelSettings
from servekit.invoker import Invoker
from servekit.runtimes.base import Runtime
from servekit.tensors import InferenceRequest, InferenceResponse

LIMIT = 0.05  # seconds: a no-op is far below, SLOW far above
SLOW = 0.3  # one such call would lift a moving average (0.2 weight) over LIMIT


class Recording(Runtime):
    """Sleeps ``pause`` seconds and notes the thread each call ran in."""

    pause = 0.0

    def __init__(self) -> None:
        super().__init__(ModelSettings(name="r"))
        self.threads: list[int] = []

    def predict(self, request: InferenceRequest) -> InferenceResponse:
        self.threads.append(threading.get_ident())
        time.sleep(self.pause)
        return InferenceResponse(model_name="r", outputs=[])


def test_inline_once_fast_and_robust_to_one_slow_call() -> None:
    async def scenario() -> list[bool]:
        runtime = Recording()
        invoker = Invoker(runtime, ThreadPoolExecutor(1), LIMIT)
        loop_thread = threading.get_ident()
        request = InferenceRequest(inputs=[])
        where = []

        async def call(pause: float) -> None:
            runtime.pause = pause
            await invoker(request)
            where.append(runtime.threads[-1] == loop_thread)

        await call(0.0)  # the first call: always a thread
        for _ in range(3):
            await call(0.0)  # fast: inline from the second call on
        await call(SLOW)  # one slow call, inline
        await call(0.0)  # still inline: the median of the last calls is fast
        for _ in range(6):
            await call(SLOW)  # slow again and again: over half the window slow
        await call(0.0)  # so this one goes to a thread
        return where

    where = asyncio.run(scenario())
    assert where[:7] == [False] + [True] * 6
    assert where[-1] is False


class WaitsInThreads(Runtime):
    """Fast on the loop; in a thread, each call first waits ``wait`` seconds
    (what a busy event loop holding the GIL does to a threaded call)."""

    def __init__(self, wait: float) -> None:
        super().__init__(ModelSettings(name="w"))
        self.wait = wait
        self.loop_thread = threading.get_ident()
        self.inline: list[bool] = []

    def predict(self, request: InferenceRequest) -> InferenceResponse:
        on_loop = threading.get_ident() == self.loop_thread
        if not on_loop:
            time.sleep(self.wait)
        self.inline.append(on_loop)
        return InferenceResponse(model_name="w", outputs=[])


class Probing(Invoker):
    PROBE_EVERY = 4


PROBED_LIMIT = 0.01  # seconds


def test_a_model_slow_only_in_threads_is_probed_on_the_loop_and_kept_there() -> None:
    runtime = WaitsInThreads(3 * PROBED_LIMIT)  # under PROBE_FACTOR times the limit: probed

    async def scenario() -> None:
        invoker = Probing(runtime, ThreadPoolExecutor(1), PROBED_LIMIT)
        for _ in range(8):
            await invoker(InferenceRequest(inputs=[]))

    asyncio.run(scenario())
    # threaded until the probe (the 4th threaded call), inline from it on
    assert runtime.inline == [False] * 3 + [True] * 5


def test_a_model_far_over_the_limit_is_never_probed() -> None:
    runtime = WaitsInThreads(Invoker.PROBE_FACTOR * PROBED_LIMIT * 1.5)

    async def scenario() -> None:
        invoker = Probing(runtime, ThreadPoolExecutor(1), PROBED_LIMIT)
        for _ in range(5):
            await invoker(InferenceRequest(inputs=[]))

    asyncio.run(scenario())
    assert runtime.inline == [False] * 5
