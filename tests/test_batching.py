"""The adaptive batcher: merged results equal unbatched ones, incompatible
requests never share a batch, the queue is bounded, timeouts apply."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from servekit.batching import AdaptiveBatcher
from servekit.errors import InvalidInput, Overloaded, RequestTimedOut
from servekit.tensors import InferenceRequest, InferenceResponse, RequestedOutput, Tensor

IRIS = load_iris()
MODEL = LogisticRegression(max_iter=500).fit(IRIS.data, IRIS.target)


class Recorder:
    """Runs the real model and records the batch sizes it was called with."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.calls: list[int] = []
        self.gate = gate

    async def __call__(self, request: InferenceRequest) -> InferenceResponse:
        self.calls.append(request.inputs[0].data.shape[0])
        # like the registry's thread hand-off: the event loop runs while the model does
        await asyncio.get_running_loop().run_in_executor(
            None, self.gate.wait if self.gate is not None else time.sleep, 5 if self.gate else 0.001
        )
        x = request.inputs[0].data
        if x.shape[1] != 4:
            raise InvalidInput(f"expects 4 features, got {x.shape[1]}")
        names = request.output_names or ["predict"]
        outputs = [Tensor(n, np.asarray(getattr(MODEL, n)(x))) for n in names]
        return InferenceResponse("iris", outputs, "1", request.id)


def request(rows: np.ndarray, outputs: list[str] | None = None, **params: object) -> InferenceRequest:
    return InferenceRequest(
        inputs=[Tensor("x", rows)],
        outputs=None if outputs is None else [RequestedOutput(n) for n in outputs],
        parameters=dict(params),
    )


async def burst(batcher: AdaptiveBatcher, requests: list[InferenceRequest]) -> list[InferenceResponse | BaseException]:
    return await asyncio.gather(*(batcher.submit(r) for r in requests), return_exceptions=True)


def test_concurrent_mixed_requests_match_unbatched() -> None:
    rng = np.random.default_rng(3)
    recorder = Recorder()
    batcher = AdaptiveBatcher(recorder, batchable=True)
    chunks = [IRIS.data[rng.integers(0, 150, rng.integers(1, 6))] for _ in range(60)]
    outputs = [None, ["predict_proba"], ["predict", "predict_proba"]]
    requests = [request(c, outputs[i % 3]) for i, c in enumerate(chunks)]
    results = asyncio.run(burst(batcher, requests))
    for req, result in zip(requests, results, strict=True):
        assert isinstance(result, InferenceResponse)
        x = req.inputs[0].data
        for tensor in result.outputs:
            expected = getattr(MODEL, tensor.name)(x)
            if tensor.name == "predict":
                np.testing.assert_array_equal(tensor.data, expected)
            else:  # BLAS may sum in another order for another batch size
                np.testing.assert_allclose(tensor.data, expected, rtol=1e-12, atol=1e-15)
        assert [t.name for t in result.outputs] == (req.output_names or ["predict"])
    # the first request ran at once on its own (a lone request never waits); those
    # queued behind it were merged: one call per kind of requested outputs
    assert recorder.calls[0] == len(chunks[0])
    assert len(recorder.calls) == 4
    assert sum(recorder.calls) == sum(len(c) for c in chunks)


def test_incompatible_requests_never_share_a_batch() -> None:
    gate = threading.Event()
    recorder = Recorder(gate)
    batcher = AdaptiveBatcher(recorder, batchable=True)

    async def scenario() -> list[InferenceResponse | BaseException]:
        first = asyncio.ensure_future(batcher.submit(request(IRIS.data[:1])))
        await asyncio.sleep(0.05)  # the model is now busy with the first request
        queued = [
            request(IRIS.data[1:3]),
            request(IRIS.data[3:4], ["predict_proba"]),
            request(np.zeros((2, 3))),  # another feature count: its own batch, its own error
            request(IRIS.data[4:6]),
            request(IRIS.data[6:7], None, custom="x"),  # other parameters
        ]
        pending = [asyncio.ensure_future(batcher.submit(r)) for r in queued]
        await asyncio.sleep(0.05)
        gate.set()
        return await asyncio.gather(first, *pending, return_exceptions=True)

    results = asyncio.run(scenario())
    assert recorder.calls == [1, 4, 1, 2, 1]  # [first], [1:3 + 4:6], proba, bad shape, params
    assert isinstance(results[3], InvalidInput)
    np.testing.assert_array_equal(results[4].outputs[0].data, MODEL.predict(IRIS.data[4:6]))  # type: ignore[union-attr]
    np.testing.assert_allclose(results[2].outputs[0].data, MODEL.predict_proba(IRIS.data[3:4]))  # type: ignore[union-attr]


def test_max_batch_size_and_oversized_request() -> None:
    gate = threading.Event()
    recorder = Recorder(gate)
    batcher = AdaptiveBatcher(recorder, batchable=True, max_batch_size=4)

    async def scenario() -> list[InferenceResponse | BaseException]:
        first = asyncio.ensure_future(batcher.submit(request(IRIS.data[:1])))
        await asyncio.sleep(0.05)
        pending = [asyncio.ensure_future(batcher.submit(request(IRIS.data[i : i + 2]))) for i in range(0, 6, 2)]
        pending.append(asyncio.ensure_future(batcher.submit(request(IRIS.data[:10]))))
        await asyncio.sleep(0.05)
        gate.set()
        return await asyncio.gather(first, *pending)

    results = asyncio.run(scenario())
    assert recorder.calls == [1, 4, 2, 10]
    np.testing.assert_array_equal(results[-1].outputs[0].data, MODEL.predict(IRIS.data[:10]))  # type: ignore[union-attr]


def test_bounded_queue_answers_overloaded() -> None:
    gate = threading.Event()
    batcher = AdaptiveBatcher(Recorder(gate), batchable=True, max_queue_size=3)

    async def scenario() -> list[InferenceResponse | BaseException]:
        tasks = [asyncio.ensure_future(batcher.submit(request(IRIS.data[:1]))) for _ in range(6)]
        await asyncio.sleep(0.05)
        gate.set()
        return await asyncio.gather(*tasks, return_exceptions=True)

    results = asyncio.run(scenario())
    # one runs, three wait in the queue, the other two are turned away at once
    overloaded = [r for r in results if isinstance(r, Overloaded)]
    assert len(overloaded) == 2
    assert "queued (the limit)" in overloaded[0].message
    assert sum(isinstance(r, InferenceResponse) for r in results) == 4


def test_request_timeout_in_queue() -> None:
    gate = threading.Event()
    batcher = AdaptiveBatcher(Recorder(gate), batchable=True)

    async def scenario() -> list[InferenceResponse | BaseException]:
        first = asyncio.ensure_future(batcher.submit(request(IRIS.data[:1])))
        await asyncio.sleep(0.02)
        late_request = request(IRIS.data[:1])
        late_request.deadline = time.monotonic() + 0.02
        late = asyncio.ensure_future(batcher.submit(late_request))
        result = await asyncio.gather(late, return_exceptions=True)
        gate.set()
        return [*result, await first]

    late, first = asyncio.run(scenario())
    assert isinstance(late, RequestTimedOut) and "timed out" in late.message
    assert isinstance(first, InferenceResponse)


def test_unbatchable_runtime_runs_one_at_a_time() -> None:
    recorder = Recorder()
    batcher = AdaptiveBatcher(recorder, batchable=False)
    results = asyncio.run(burst(batcher, [request(IRIS.data[i : i + 2]) for i in range(10)]))
    assert recorder.calls == [2] * 10
    assert all(isinstance(r, InferenceResponse) for r in results)


@pytest.mark.parametrize("vectors", [False, True])
def test_one_dimensional_inputs_merge_only_for_a_runtime_of_vectors(vectors: bool) -> None:
    """A list of strings (shape [n]) is rows for a text runtime (``vectors``);
    elsewhere a 1-D input may be one instance, and is never merged."""
    calls: list[list[bytes]] = []

    async def upper(req: InferenceRequest) -> InferenceResponse:
        texts = list(req.inputs[0].data)
        calls.append(texts)
        await asyncio.sleep(0.01)
        out = np.array([t.upper() for t in texts], dtype=object)
        return InferenceResponse("text", [Tensor("out", out, "BYTES")], None, req.id)

    batcher = AdaptiveBatcher(upper, batchable=True, vectors=vectors)
    texts = [[b"a", b"b"], [b"c"], [b"d", b"e", b"f"], [b"g"]]
    requests = [InferenceRequest([Tensor("x", np.array(t, dtype=object), "BYTES")]) for t in texts]
    results = asyncio.run(burst(batcher, requests))
    for sent, result in zip(texts, results, strict=True):
        assert isinstance(result, InferenceResponse)
        assert list(result.outputs[0].data) == [t.upper() for t in sent]
    # the first runs alone at once; the three queued behind it run as one call, or one by one
    assert calls == ([texts[0], texts[1] + texts[2] + texts[3]] if vectors else texts)


@pytest.mark.parametrize("wait", [0.03])
def test_max_batch_time_waits_for_a_fuller_batch(wait: float) -> None:
    recorder = Recorder()
    batcher = AdaptiveBatcher(recorder, batchable=True, max_batch_size=8, max_batch_time=wait)

    async def scenario() -> None:
        tasks = []
        for i in range(4):
            tasks.append(asyncio.ensure_future(batcher.submit(request(IRIS.data[i : i + 1]))))
            await asyncio.sleep(0.002)
        await asyncio.gather(*tasks)

    asyncio.run(scenario())
    assert recorder.calls == [4]


def test_a_request_that_waits_the_queue_time_gets_503_and_never_runs() -> None:
    gate = threading.Event()
    recorder = Recorder(gate)
    batcher = AdaptiveBatcher(recorder, batchable=False, max_queue_time=0.05, name="iris")

    async def scenario() -> list[InferenceResponse | BaseException]:
        first = asyncio.ensure_future(batcher.submit(request(IRIS.data[:1])))
        await asyncio.sleep(0.01)
        waiting = [asyncio.ensure_future(batcher.submit(request(IRIS.data[i : i + 1]))) for i in range(3)]
        results = await asyncio.gather(*waiting, return_exceptions=True)  # the model is still busy
        gate.set()
        return [*results, await first]

    *late, first = asyncio.run(scenario())
    assert isinstance(first, InferenceResponse)
    assert all(isinstance(r, Overloaded) for r in late), late
    assert "waited 0.05 s in the queue" in late[0].message and late[0].retry_after == 1
    assert recorder.calls == [1]  # only the first request ever ran


def test_a_cancelled_waiter_is_dropped_before_it_runs() -> None:
    gate = threading.Event()
    recorder = Recorder(gate)
    batcher = AdaptiveBatcher(recorder, batchable=False, name="iris")

    async def scenario() -> None:
        first = asyncio.ensure_future(batcher.submit(request(IRIS.data[:1])))
        await asyncio.sleep(0.01)
        abandoned = asyncio.ensure_future(batcher.submit(request(IRIS.data[1:3])))
        await asyncio.sleep(0.01)
        abandoned.cancel()
        kept = asyncio.ensure_future(batcher.submit(request(IRIS.data[3:6])))
        await asyncio.sleep(0.01)
        gate.set()
        await first
        assert (await kept).outputs[0].data.shape == (3,)

    asyncio.run(scenario())
    assert recorder.calls == [1, 3]  # the abandoned 2-row request never ran
