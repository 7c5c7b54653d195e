"""Prediction caches: an in-process LRU by default, Redis when configured.

Values are the JSON encoding of validated outputs, so a cached prediction is
never an object a caller could mutate, and Redis entries are readable by any
process serving the same model version.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from servekit.errors import ConfigError
from servekit.library.settings import LibrarySettings


class PredictionCache:
    """Interface: bulk get and set of encoded predictions by key."""

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        raise NotImplementedError

    def set_many(self, values: dict[str, bytes]) -> None:
        raise NotImplementedError

    def clear(self) -> None:
        raise NotImplementedError


def cache_key(model: str, version: str, input_hash: str) -> str:
    return f"servekit:{model}:{version or '-'}:{input_hash}"


class LRUCache(PredictionCache):
    """Least-recently-used entries are dropped beyond ``max_size``."""

    def __init__(self, max_size: int = 4096) -> None:
        self.max_size = max_size
        self._data: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        out: list[bytes | None] = []
        with self._lock:
            for key in keys:
                value = self._data.get(key)
                if value is not None:
                    self._data.move_to_end(key)
                out.append(value)
        return out

    def set_many(self, values: dict[str, bytes]) -> None:
        with self._lock:
            for key, value in values.items():
                self._data[key] = value
                self._data.move_to_end(key)
            while len(self._data) > self.max_size:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


class RedisCache(PredictionCache):
    """Predictions shared by every process that talks to the same Redis."""

    def __init__(self, url: str, ttl: int | None = None) -> None:
        import redis

        self.url = url
        self.ttl = ttl
        self.client: Any = redis.Redis.from_url(url)

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        values = self.client.mget(list(keys))
        return [v if isinstance(v, bytes) else None for v in values]

    def set_many(self, values: dict[str, bytes]) -> None:
        if not values:
            return
        pipe = self.client.pipeline(transaction=False)
        for key, value in values.items():
            pipe.set(key, value, ex=self.ttl)
        pipe.execute()

    def clear(self) -> None:
        for key in self.client.scan_iter(match="servekit:*"):
            self.client.delete(key)


def make_cache(settings: LibrarySettings) -> PredictionCache:
    provider = settings.cache_provider.lower()
    if provider in ("lru", "memory", "cachetools", "native"):
        return LRUCache(settings.cache_max_size)
    if provider == "redis":
        return RedisCache(settings.cache_url or "redis://127.0.0.1:6379/0", settings.cache_ttl)
    raise ConfigError(f"unknown cache provider {settings.cache_provider!r}; use 'lru' or 'redis'")
