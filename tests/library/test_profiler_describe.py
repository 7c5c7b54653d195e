"""Profiler (net time minus sub-models, sync and async), describe, and the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from servekit import AsyncModel, Model, ModelLibrary, SimpleProfiler
from servekit.library.profiler import ProfileRow

SENTIMENT = Path(__file__).resolve().parents[2] / "examples" / "sentiment"


class Leaf(Model[str, int]):
    CONFIGURATIONS = {"leaf": {}}

    def _predict(self, item: str) -> int:
        return len(item)


class Root(Model[str, int]):
    CONFIGURATIONS = {"root": {"model_dependencies": {"leaf"}}}

    def _predict(self, item: str) -> int:
        leaf = self.model_dependencies["leaf"]
        return sum(leaf.predict(w) for w in item.split())


class AsyncLeaf(AsyncModel[str, int]):
    CONFIGURATIONS = {"async_leaf": {}}

    async def _predict(self, item: str) -> int:
        await asyncio.sleep(0)
        return len(item)


class AsyncRoot(AsyncModel[str, int]):
    CONFIGURATIONS = {"async_root": {"model_dependencies": {"leaf": "async_leaf"}}}

    async def _predict(self, item: str) -> int:
        leaf = self.model_dependencies["leaf"]
        return sum(await asyncio.gather(*(leaf.predict(w) for w in item.split())))


def _rows(profiler: SimpleProfiler) -> dict[str, ProfileRow]:
    rows = profiler.summary()
    assert isinstance(rows, list)
    return {r.name: r for r in rows}


def test_net_time_excludes_sub_models() -> None:
    library = ModelLibrary([Leaf, Root])
    root = library.get("root")
    profiler = SimpleProfiler(root)
    assert root.predict("ab cde f") == 6
    root.predict_batch(["x y", "z"])
    rows = _rows(profiler)
    assert rows["root"].calls == 2 and rows["leaf"].calls == 6
    assert rows["root"].net_ns == rows["root"].total_ns - rows["leaf"].total_ns
    table = profiler.summary(print_table=True)
    assert isinstance(table, str) and "root" in table and "net ms" in table


def test_async_profiling_with_concurrent_sub_calls() -> None:
    library = ModelLibrary([AsyncLeaf, AsyncRoot])
    root = library.get("async_root")

    async def main() -> int:
        with SimpleProfiler() as profiler:
            result: int = await root.predict("aa bbb c")
        rows = _rows(profiler)
        assert rows["async_root"].calls == 1 and rows["async_leaf"].calls == 3
        assert rows["async_root"].net_ns <= rows["async_root"].total_ns
        return result

    assert asyncio.run(main()) == 6


def test_describe() -> None:
    library = ModelLibrary([Leaf, Root])
    described = library.describe()
    assert isinstance(described, dict)
    assert list(described) == ["leaf", "root"]
    assert described["root"]["signature"] == "str -> int"
    assert described["root"]["dependencies"] == {"leaf": "leaf"}
    assert described["root"]["load_seconds"] >= 0 and "load_memory_bytes" in described["root"]
    text = library.describe(print_table=True)
    assert isinstance(text, str) and "dependencies  leaf" in text


def _cli(args: list[str], env: dict[str, str], cwd: Path) -> str:
    done = subprocess.run([sys.executable, "-m", "servekit", *args], capture_output=True, text=True,
                          env={**os.environ, **env}, cwd=cwd, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_describe_and_time_commands(sentiment_store: str, tmp_path: Path) -> None:
    env = {"SERVEKIT_STORAGE_URL": sentiment_store, "SERVEKIT_ASSETS_DIR": str(tmp_path)}
    described = json.loads(_cli(["describe", "sentiment", "--json"], env, SENTIMENT))
    assert described["classifier"]["signature"] == "str -> MovieSentiment"
    assert described["classifier"]["dependencies"] == {"tokenizer": "tokenizer", "vectorizer": "vectorizer"}
    assert described["vectorizer"]["asset_path"].endswith("sentiment/vectorizer/1.0/vectorizer.json")
    # a model repository folder works too
    repository = _cli(["describe", str(SENTIMENT)], env, tmp_path)
    assert "classifier  (sentiment.classifier.Classifier)" in repository
    timed = _cli(["time", "classifier", '"a great movie"', "-n", "100", "--models", "sentiment"], env, SENTIMENT)
    assert timed.startswith("classifier: 100 calls") and "p99" in timed
