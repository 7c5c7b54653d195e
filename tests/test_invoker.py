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
