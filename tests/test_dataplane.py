"""The data plane on its own (no server): resolution, one deadline, the
prediction cache, metrics with the same labels on success and failure, and
observers with spans."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from servekit.config import ModelParameters, ModelSettings, ServerSettings
from servekit.dataplane import (
    MAX_TIMEOUT_SECONDS,
    DataPlane,
    InferenceCall,
    ModelFailed,
    Target,
    _deadline,
    header_timeout,
)
from servekit.errors import InvalidInput, ModelNotFound, RequestTimedOut
from servekit.library.prediction_cache import LRUCache
from servekit.registry import ModelVersion, Registry
from servekit.server.metrics import Metrics
from servekit.tensors import InferenceRequest, Tensor

HERE = str(Path(__file__).resolve().parent)


def settings(version: str = "1", **extra: Any) -> ModelSettings:
    return ModelSettings(name="double", implementation="plugin_runtimes.Doubler", source_dir=HERE,
                         parameters=ModelParameters(version=version, extra=extra))


def request(value: float = 1.0, **parameters: Any) -> InferenceRequest:
    return InferenceRequest([Tensor("x", np.array([[value]]))], parameters=parameters)


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    value = metrics.registry.get_sample_value(name, labels)
    return value


async def plane(*versions: ModelSettings) -> tuple[DataPlane, Registry]:
    registry = Registry(ServerSettings())
    for s in versions:
        await registry.load(s)
    return DataPlane(registry, Metrics(), cache_factory=LRUCache), registry


def test_success_and_failure_carry_the_resolved_version() -> None:
    async def scenario() -> DataPlane:
        dataplane, _ = await plane(settings("1"), settings("2"))
        response = await dataplane.infer(Target("double"), request(3.0), protocol="test")
        assert response.outputs[0].data.tolist() == [[6.0]] and response.id

        def bad(model: ModelVersion) -> InferenceRequest:
            raise InvalidInput("no")

        with pytest.raises(InvalidInput):
            await dataplane.infer(Target("double"), bad, protocol="test")
        with pytest.raises(ModelNotFound):
            await dataplane.infer(Target("double", "9"), request(), protocol="test")
        with pytest.raises(ModelNotFound):
            await dataplane.infer(Target("nobody"), request(), protocol="test")
        return dataplane

    metrics = asyncio.run(scenario()).metrics
    assert sample(metrics, "servekit_model_requests_total", model="double", version="2", protocol="test") == 2
    assert sample(metrics, "servekit_model_request_failures_total", model="double", version="2",
                  protocol="test", status="400") == 1
    # a version that does not exist is the requested one; a name nobody serves is one label
    assert sample(metrics, "servekit_model_request_failures_total", model="double", version="9",
                  protocol="test", status="404") == 1
    assert sample(metrics, "servekit_model_request_failures_total", model="(unknown)", version="",
                  protocol="test", status="404") == 1


def test_one_deadline_from_the_parameter_and_the_protocol() -> None:
    now = time.monotonic()
    from_parameter = _deadline(request(timeout=2_000_000), None)  # µs
    assert from_parameter is not None and 1.5 < from_parameter - now < 2.5
    earlier = _deadline(request(timeout=2_000_000), 0.5)
    assert earlier is not None and earlier - now < 1.0
    assert _deadline(request(), None) is None
    bounded = _deadline(request(), 10**12)
    assert bounded is not None and bounded - now <= MAX_TIMEOUT_SECONDS + 1
    assert _deadline(request(timeout="soon"), None) is None


def test_a_passed_deadline_is_never_run() -> None:
    async def scenario() -> int:
        dataplane, registry = await plane(settings())
        with pytest.raises(RequestTimedOut):
            await dataplane.infer(Target("double"), request(), protocol="test", timeout=0.0)
        runtime: Any = registry.resolve("double").runtime
        return int(runtime.calls)

    assert asyncio.run(scenario()) == 0


def test_header_timeouts() -> None:
    assert header_timeout({"x-request-timeout": "1.5"}) == 1.5
    assert header_timeout({"x-request-timeout": "soon"}) is None
    assert header_timeout({"grpc-timeout": "250m"}) == 0.25
    assert header_timeout({"grpc-timeout": "9999999999999S"}) is None
    assert header_timeout({}) is None


def test_the_cache_answers_repeated_requests_for_models_that_opt_in() -> None:
    async def scenario() -> tuple[int, list[bool], list[list[list[float]]]]:
        dataplane, registry = await plane(settings(cache_predictions=True))
        calls: list[InferenceCall] = []
        dataplane.observers.append(calls.append)
        answers = []
        for value in (1.0, 1.0, 2.0, 1.0):
            response = await dataplane.infer(Target("double"), request(value), protocol="test")
            answers.append(response.outputs[0].data.tolist())
        runtime: Any = registry.resolve("double").runtime
        return runtime.calls, [c.cached for c in calls], answers

    runs, cached, answers = asyncio.run(scenario())
    assert runs == 2
    assert cached == [False, True, False, True]
    assert answers == [[[2.0]], [[2.0]], [[4.0]], [[2.0]]]


def test_observers_see_every_call_with_its_spans() -> None:
    async def scenario() -> list[InferenceCall]:
        dataplane, _ = await plane(settings())
        calls: list[InferenceCall] = []
        dataplane.observers.append(calls.append)
        encoded = await dataplane.serve(Target("double"), request(2.0), lambda r: r.outputs[0].data.sum(),
                                        protocol="test")
        assert encoded == 4.0
        with pytest.raises(ModelNotFound):
            await dataplane.infer(Target("double", "3"), request(), protocol="test")
        return calls

    ok, failed = asyncio.run(scenario())
    assert set(ok.spans) == {"decode", "infer", "encode"} and ok.error is None
    assert ok.model is not None and ok.model.version == "1" and ok.response is not None
    assert isinstance(failed.error, ModelNotFound) and failed.model is None


def test_a_model_that_raises_answers_its_error_and_the_request_id() -> None:
    async def scenario() -> tuple[ModelFailed, DataPlane]:
        dataplane, _ = await plane(ModelSettings(
            name="raiser", implementation="plugin_runtimes.Raiser", source_dir=HERE,
            parameters=ModelParameters(version="3")))
        with pytest.raises(ModelFailed) as failure:
            await dataplane.infer(Target("raiser"), InferenceRequest([Tensor("x", np.zeros((1, 9)))], id="req-7"),
                                  protocol="test")
        return failure.value, dataplane

    error, dataplane = asyncio.run(scenario())
    assert error.status == 500
    assert error.message == (
        "model 'raiser' raised RuntimeError: mat1 and mat2 shapes cannot be multiplied (1x9 and 10x16) "
        "(request id req-7; the traceback is in the server log)"
    )
    assert sample(dataplane.metrics, "servekit_model_request_failures_total", model="raiser", version="3",
                  protocol="test", status="500") == 1


def test_an_unexpected_decoding_error_is_not_blamed_on_the_model() -> None:
    def decode(model: ModelVersion) -> InferenceRequest:
        raise TypeError("unhashable type: 'list'")

    async def scenario() -> ModelFailed:
        dataplane, _ = await plane(settings())
        with pytest.raises(ModelFailed) as failure:
            await dataplane.infer(Target("double"), decode, protocol="test")
        return failure.value

    error = asyncio.run(scenario())
    assert error.message.startswith(
        "decoding the request for model 'double' failed with TypeError: unhashable type: 'list'")
