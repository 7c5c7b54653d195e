"""The registry on its own (no server): versions, states, labels, the default
version, read-only queries and locked changes."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import plugin_runtimes
import pytest

from servekit.config import ModelParameters, ModelSettings, ServerSettings
from servekit.errors import ModelNotFound, ModelNotReady
from servekit.registry import ModelState, Registry
from servekit.tensors import InferenceRequest, Tensor

HERE = str(Path(__file__).resolve().parent)


def settings(name: str = "double", version: str | None = "1", cls: str = "Doubler") -> ModelSettings:
    return ModelSettings(name=name, implementation=f"plugin_runtimes.{cls}", source_dir=HERE,
                         parameters=ModelParameters(version=version))


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def request(*values: float) -> InferenceRequest:
    return InferenceRequest([Tensor("x", np.array([values]))])


def test_resolve_default_version_label_and_errors() -> None:
    async def scenario() -> None:
        registry = Registry(ServerSettings())
        await registry.load(settings(version="1"))
        await registry.load(settings(version="2"))
        assert registry.names() == ["double"]
        assert registry.version_names("double") == ["1", "2"]
        assert registry.resolve("double").version == "2"  # the newest
        await registry.set_default("double", "1")
        assert registry.resolve("double").version == "1"
        assert registry.default_version("double") == "1"
        await registry.set_labels("double", {"stable": "2"})
        assert registry.resolve("double", label="stable").version == "2"
        assert registry.labels("double") == {"stable": "2"}
        registry.labels("double")["stable"] = "1"  # a copy: the registry is unchanged
        assert registry.labels("double") == {"stable": "2"}
        with pytest.raises(ModelNotFound, match="has no label 'canary'"):
            registry.resolve("double", label="canary")
        with pytest.raises(ModelNotFound, match=r"has no version '9' \(versions: 1, 2\)"):
            registry.resolve("double", "9")
        with pytest.raises(ModelNotFound, match=r"model 'other' not found \(models served: double\)"):
            registry.resolve("other")
        assert [m.version for m in registry.select("double")] == ["2", "1"]
        assert [m.version for m in registry.select("double", label="stable")] == ["2"]

    run(scenario())


def test_unload_of_a_missing_version_is_not_found() -> None:
    async def scenario() -> None:
        registry = Registry(ServerSettings())
        await registry.load(settings(version="1"))
        with pytest.raises(ModelNotFound, match="has no version '7'"):
            await registry.unload("double", "7")
        assert registry.has("double", "1")

    run(scenario())


def test_unloading_the_default_version_falls_back_to_the_newest() -> None:
    async def scenario() -> None:
        registry = Registry(ServerSettings())
        await registry.load(settings(version="1"))
        await registry.load(settings(version="2"))
        await registry.set_default("double", "1")
        await registry.unload("double", "1")
        assert registry.default_version("double") is None
        assert registry.resolve("double").version == "2"

    run(scenario())


def test_a_failed_load_is_reported_and_does_not_replace_a_ready_version() -> None:
    async def scenario() -> None:
        registry = Registry(ServerSettings())
        failed = await registry.load(settings(name="broken", cls="Broken"))
        assert failed.state is ModelState.UNAVAILABLE
        assert failed.reason == "RuntimeError: weights missing"
        with pytest.raises(ModelNotReady, match="weights missing"):
            registry.resolve("broken")
        assert registry.not_ready_reason() == "models not ready: broken:1 UNAVAILABLE"
        ready = await registry.load(settings())
        again = await registry.load(settings().model_copy(update={"implementation": "plugin_runtimes.Broken"}))
        assert not again.ready and registry.resolve("double") is ready

    run(scenario())


def test_runtimes_are_created_and_loaded_off_the_event_loop() -> None:
    plugin_runtimes.LOADED_IN.clear()

    async def scenario() -> None:
        registry = Registry(ServerSettings())
        await registry.load(settings())

    run(scenario())
    assert len(plugin_runtimes.LOADED_IN) == 2
    assert all(name.startswith("servekit") for name in plugin_runtimes.LOADED_IN), plugin_runtimes.LOADED_IN


def test_submit_runs_the_version_and_counts_it() -> None:
    async def scenario() -> None:
        registry = Registry(ServerSettings())
        model = await registry.load(settings())
        response = await registry.submit(model, request(1.0, 2.5))
        assert response.outputs[0].data.tolist() == [[2.0, 5.0]]
        assert model.stats.inference_count == 1 and model.stats.success_count == 1
        assert model.metadata().name == "double"

    run(scenario())


def test_apply_moves_to_the_desired_versions() -> None:
    async def scenario() -> None:
        registry = Registry(ServerSettings())
        await registry.apply([settings(version="1"), settings(version="2")])
        await registry.apply([settings(version="2"), settings(version="3")])
        assert registry.version_names("double") == ["2", "3"]

    run(scenario())


def test_the_executor_follows_the_settings() -> None:
    small = Registry(ServerSettings(parallel_workers=1, threads_per_worker=1))
    large = Registry(ServerSettings(parallel_workers=1, threads_per_worker=8))
    assert small.executor._max_workers == 4
    assert large.executor._max_workers == 16
