"""Prediction caching: in-process LRU and a real Redis; hits skip _predict."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from servekit import Model, ModelLibrary
from servekit.library import LibrarySettings, LRUCache, RedisCache


class Query(BaseModel):
    text: str
    limit: int = 3


class Counting(Model[Query, list[str]]):
    CONFIGURATIONS = {"counting": {"model_settings": {"cache_predictions": True}}}

    def _load(self) -> None:
        self.computed: list[str] = []

    def _predict_batch(self, items: list[Query]) -> list[list[str]]:
        self.computed.extend(q.text for q in items)
        return [q.text.split()[: q.limit] for q in items]


class Uncached(Model[str, str]):
    CONFIGURATIONS = {"uncached": {}}

    def _predict(self, item: str) -> str:
        return item


def _library(**settings: object) -> ModelLibrary:
    return ModelLibrary([Counting, Uncached], settings=LibrarySettings(**settings))  # type: ignore[arg-type]


@pytest.mark.parametrize("provider", ["lru", "redis"])
def test_hits_skip_predict_and_batches_compute_only_misses(provider: str, redis_url: str) -> None:
    library = _library(cache_provider=provider, cache_url=redis_url)
    library.cache.clear()
    model = library.get("counting", Counting)
    assert isinstance(model.cache, RedisCache if provider == "redis" else LRUCache)
    first = model.predict({"text": "a b c d"})
    assert first == ["a", "b", "c"] and model.computed == ["a b c d"]
    # same validated input (field order and defaults do not matter): a hit
    assert model.predict({"limit": 3, "text": "a b c d"}) == first
    assert model.computed == ["a b c d"]
    # a different value of any field is a different key
    assert model.predict({"text": "a b c d", "limit": 1}) == ["a"]
    assert len(model.computed) == 2
    model.computed.clear()
    out = model.predict_batch([{"text": "a b c d"}, {"text": "new one"}, {"text": "x"}, {"text": "new one"}])
    assert out == [["a", "b", "c"], ["new", "one"], ["x"], ["new", "one"]]
    assert model.computed == ["new one", "x", "new one"]  # only misses reached _predict_batch
    model.computed.clear()
    assert model.predict_batch([{"text": "x"}, {"text": "new one"}]) == [["x"], ["new", "one"]]
    assert model.computed == []
    assert library.get("uncached").cache is None


def test_redis_is_shared_between_libraries(redis_url: str) -> None:
    one = _library(cache_provider="redis", cache_url=redis_url)
    one.cache.clear()
    one.get("counting", Counting).predict({"text": "shared entry"})
    two = _library(cache_provider="redis", cache_url=redis_url)  # another process would do the same
    other = two.get("counting", Counting)
    assert other.predict({"text": "shared entry"}) == ["shared", "entry"]
    assert other.computed == []
    import redis

    keys = redis.Redis.from_url(redis_url).keys("servekit:counting:*")
    assert len(keys) == 1


def test_version_is_part_of_the_key() -> None:
    cache = LRUCache()
    a = Counting(model_settings={"version": "1"}, cache=cache)
    b = Counting(model_settings={"version": "2"}, cache=cache)
    a.predict({"text": "q"})
    b.predict({"text": "q"})
    assert a.computed == ["q"] and b.computed == ["q"]


def test_lru_evicts_least_recently_used() -> None:
    cache = LRUCache(max_size=2)
    cache.set_many({"a": b"1", "b": b"2"})
    assert cache.get_many(["a"]) == [b"1"]  # a is now the most recent
    cache.set_many({"c": b"3"})
    assert cache.get_many(["a", "b", "c"]) == [b"1", None, b"3"]
