"""Typed models: ``Model[InputT, OutputT]`` and ``AsyncModel[InputT, OutputT]``.

A model implements ``_load`` (optional) and one of ``_predict(item)`` or
``_predict_batch(items)``; callers use ``predict``, ``predict_batch`` and
``predict_gen``. Every item is validated against ``InputT`` and every result
against ``OutputT`` with pydantic. ``CONFIGURATIONS`` names the model and
declares its asset, the models it depends on and its settings;
``TEST_CASES`` documents and tests it::

    class Tokenizer(Model[str, list[str]]):
        CONFIGURATIONS = {"tokenizer": {}}
        TEST_CASES = [{"item": "Hello World", "result": ["hello", "world"]}]

        def _predict(self, item: str) -> list[str]:
            return item.lower().split()
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel as PydanticModel
from pydantic import ConfigDict, field_validator

from servekit.errors import ConfigError
from servekit.library._signature import Signature
from servekit.library.prediction_cache import PredictionCache, cache_key
from servekit.library.profiler import active_profiler

InputT = TypeVar("InputT")
OutputT = TypeVar("OutputT")
M = TypeVar("M")


class ModelConfiguration(PydanticModel):
    """One entry of ``CONFIGURATIONS``."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    asset: str | None = None
    # local name -> configuration key of the dependency
    model_dependencies: dict[str, str] = {}
    model_settings: dict[str, Any] = {}

    @field_validator("model_dependencies", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        if isinstance(value, (set, list, tuple, frozenset)):
            return {str(v): str(v) for v in value}
        return value


class ModelDependencies(dict[str, Any]):
    """The models a model depends on, by the local name it gave them."""

    def typed(self, name: str, model_type: type[M]) -> M:
        """The dependency ``name``, checked to be a ``model_type`` (for static typing)."""
        model = self[name]
        if not isinstance(model, model_type):
            raise TypeError(f"dependency {name!r} is a {type(model).__name__}, not {model_type.__name__}")
        return model


def default_key(cls: type) -> str:
    """``SentimentClassifier`` -> ``sentiment_classifier`` for classes without CONFIGURATIONS."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", cls.__name__).lower()


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class ModelBase(Generic[InputT, OutputT]):
    """What sync and async models share: configuration, assets, dependencies,
    validation, caching and profiling."""

    CONFIGURATIONS: ClassVar[dict[str, dict[str, Any]]] = {}
    TEST_CASES: ClassVar[list[dict[str, Any]] | dict[str, Any]] = []

    def __init__(
        self,
        *,
        configuration_key: str | None = None,
        asset_path: str = "",
        model_dependencies: Mapping[str, ModelBase[Any, Any]] | None = None,
        model_settings: dict[str, Any] | None = None,
        cache: PredictionCache | None = None,
        version: str = "",
    ) -> None:
        self.configuration_key = configuration_key or self.default_configuration_key()
        config = self.configuration(self.configuration_key)
        self.model_settings: dict[str, Any] = {**config.model_settings, **(model_settings or {})}
        self.asset_spec = config.asset
        self.version = version or str(self.model_settings.get("version", ""))
        missing = set(config.model_dependencies) - set(model_dependencies or {})
        if missing:
            raise ConfigError(
                f"model {self.configuration_key!r} needs the models {sorted(missing)}; "
                "build it with servekit.ModelLibrary (or servekit.load_model) so they are loaded"
            )
        self.model_dependencies = ModelDependencies(model_dependencies or {})
        if config.asset and not asset_path:
            from servekit.library.assets import AssetsManager

            asset_path = str(AssetsManager.from_env().fetch(config.asset))
        self.asset_path = asset_path
        if cache is None and self.model_settings.get("cache_predictions"):
            from servekit.library.prediction_cache import make_cache
            from servekit.library.settings import LibrarySettings

            cache = make_cache(LibrarySettings.from_env())
        self.cache = cache if self.model_settings.get("cache_predictions") else None
        self.profiler: Any = None
        self.load_seconds = 0.0
        self.load_memory = 0
        self.loaded = False
        self.load()

    # -- class-level description --------------------------------------------
    @classmethod
    def signature(cls) -> Signature:
        cached = cls.__dict__.get("_servekit_signature")
        if not isinstance(cached, Signature):
            cached = Signature.of(cls, (ModelBase,))
            setattr(cls, "_servekit_signature", cached)  # noqa: B010 - per-class cache
        return cached

    @classmethod
    def default_configuration_key(cls) -> str:
        return next(iter(cls.CONFIGURATIONS), default_key(cls))

    @classmethod
    def configuration(cls, key: str) -> ModelConfiguration:
        if not cls.CONFIGURATIONS:
            return ModelConfiguration()
        if key not in cls.CONFIGURATIONS:
            raise ConfigError(
                f"{cls.__name__} has no configuration {key!r} (it has {sorted(cls.CONFIGURATIONS)})"
            )
        try:
            return ModelConfiguration.model_validate(cls.CONFIGURATIONS[key] or {})
        except Exception as exc:
            raise ConfigError(f"{cls.__name__}.CONFIGURATIONS[{key!r}] is invalid: {exc}") from None

    @classmethod
    def test_cases(cls) -> list[dict[str, Any]]:
        """``TEST_CASES`` as a list of ``{"item", "result", "keyword_args"}``."""
        cases = cls.TEST_CASES
        if isinstance(cases, dict):  # modelkit's older {"cases": [...]} form
            cases = list(cases.get("cases", []))
        return [
            {"item": c["item"], "result": c["result"], "keyword_args": c.get("keyword_args", {})}
            for c in cases
        ]

    @classmethod
    def implements_batch(cls) -> bool:
        return any("_predict_batch" in k.__dict__ for k in cls.__mro__ if k not in _BASES)

    @classmethod
    def implements_item(cls) -> bool:
        return any("_predict" in k.__dict__ for k in cls.__mro__ if k not in _BASES)

    # -- loading ----------------------------------------------------------------
    def _load(self) -> None:
        """Load what the model needs (``self.asset_path``, dependencies …)."""

    def load(self) -> None:
        if not (self.implements_batch() or self.implements_item()):
            raise ConfigError(f"{type(self).__name__} implements neither _predict nor _predict_batch")
        memory = _rss_bytes()
        started = time.perf_counter()
        self._load()
        self.load_seconds = time.perf_counter() - started
        self.load_memory = max(0, _rss_bytes() - memory)
        self.loaded = True

    def close(self) -> None:
        """Release resources; override if ``_load`` opened any."""

    # -- shared prediction steps ---------------------------------------------
    def _profiling(self) -> AbstractContextManager[None]:
        profiler = active_profiler(self)
        return profiler.profile(self.configuration_key) if profiler is not None else nullcontext()

    def _lookup(
        self, items: Sequence[Any], kwargs: dict[str, Any]
    ) -> tuple[list[Any], list[Any], list[int], list[str]]:
        """(validated items, results with cache hits filled, indexes to compute, keys)."""
        signature = self.signature()
        validated = [signature.validate_input(item, self.configuration_key) for item in items]
        results: list[Any] = [None] * len(validated)
        if self.cache is None:
            return validated, results, list(range(len(validated))), []
        keys = [
            cache_key(self.configuration_key, self.version, signature.input_key(v, kwargs))
            for v in validated
        ]
        missing = []
        for i, raw in enumerate(self.cache.get_many(keys)):
            if raw is None:
                missing.append(i)
            else:
                results[i] = signature.load_output(raw)
        return validated, results, missing, keys

    def _store(self, results: list[Any], indexes: list[int], outputs: list[Any], keys: list[str]) -> None:
        signature = self.signature()
        if len(outputs) != len(indexes):
            raise ConfigError(
                f"model {self.configuration_key!r}: _predict_batch returned {len(outputs)} "
                f"results for {len(indexes)} items"
            )
        fresh: dict[str, bytes] = {}
        for i, value in zip(indexes, outputs, strict=True):
            checked = signature.validate_output(value, self.configuration_key)
            results[i] = checked
            if self.cache is not None:
                fresh[keys[i]] = signature.dump_output(checked)
        if fresh and self.cache is not None:
            self.cache.set_many(fresh)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.configuration_key,
            "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "signature": self.signature().describe(),
            "dependencies": {k: v.configuration_key for k, v in self.model_dependencies.items()},
            "asset": self.asset_spec,
            "asset_path": self.asset_path,
            "load_seconds": self.load_seconds,
            "load_memory_bytes": self.load_memory,
            "cache": type(self.cache).__name__ if self.cache is not None else None,
            "async": isinstance(self, AsyncModel),
        }

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.configuration_key!r} {self.signature().describe()}>"


def _chunks(indexes: list[int], size: int | None) -> Iterator[list[int]]:
    if not size or size <= 0:
        size = max(1, len(indexes))
    for start in range(0, len(indexes), size):
        yield indexes[start : start + size]


class Model(ModelBase[InputT, OutputT]):
    """A synchronous typed model."""

    # overrides may add keyword arguments: predict(item, **kwargs) passes them on
    def _predict(self, item: InputT) -> OutputT:
        raise NotImplementedError

    def _predict_batch(self, items: list[InputT]) -> list[OutputT]:
        raise NotImplementedError

    def _compute(self, items: list[Any], kwargs: dict[str, Any]) -> list[Any]:
        this: Any = self
        if self.implements_batch():
            return list(this._predict_batch(items, **kwargs))
        return [this._predict(item, **kwargs) for item in items]

    def predict(self, item: InputT, **kwargs: Any) -> OutputT:
        """One prediction (validated in and out, cached when configured)."""
        return self.predict_batch([item], **kwargs)[0]

    def predict_batch(
        self, items: Iterable[InputT], batch_size: int | None = None, **kwargs: Any
    ) -> list[OutputT]:
        """Predictions for ``items``, computed ``batch_size`` at a time (only cache misses)."""
        with self._profiling():
            validated, results, missing, keys = self._lookup(list(items), kwargs)
            for chunk in _chunks(missing, batch_size):
                outputs = self._compute([validated[i] for i in chunk], kwargs)
                self._store(results, chunk, outputs, keys)
            return results

    def predict_gen(
        self, items: Iterable[InputT], batch_size: int | None = None, **kwargs: Any
    ) -> Iterator[OutputT]:
        """Predictions as a generator, pulling ``batch_size`` items at a time."""
        size = batch_size or 64
        chunk: list[InputT] = []
        for item in items:
            chunk.append(item)
            if len(chunk) >= size:
                yield from self.predict_batch(chunk, **kwargs)
                chunk = []
        if chunk:
            yield from self.predict_batch(chunk, **kwargs)

    def __call__(self, item: InputT, **kwargs: Any) -> OutputT:
        return self.predict(item, **kwargs)


class AsyncModel(ModelBase[InputT, OutputT]):
    """A typed model whose ``_predict`` / ``_predict_batch`` are coroutines."""

    async def _predict(self, item: InputT) -> OutputT:
        raise NotImplementedError

    async def _predict_batch(self, items: list[InputT]) -> list[OutputT]:
        raise NotImplementedError

    async def _compute(self, items: list[Any], kwargs: dict[str, Any]) -> list[Any]:
        this: Any = self
        if self.implements_batch():
            return list(await this._predict_batch(items, **kwargs))
        return [await this._predict(item, **kwargs) for item in items]

    async def predict(self, item: InputT, **kwargs: Any) -> OutputT:
        return (await self.predict_batch([item], **kwargs))[0]

    async def predict_batch(
        self, items: Iterable[InputT], batch_size: int | None = None, **kwargs: Any
    ) -> list[OutputT]:
        with self._profiling():
            validated, results, missing, keys = self._lookup(list(items), kwargs)
            for chunk in _chunks(missing, batch_size):
                outputs = await self._compute([validated[i] for i in chunk], kwargs)
                self._store(results, chunk, outputs, keys)
            return results

    async def predict_gen(
        self, items: Iterable[InputT], batch_size: int | None = None, **kwargs: Any
    ) -> AsyncIterator[OutputT]:
        size = batch_size or 64
        chunk: list[InputT] = []
        for item in items:
            chunk.append(item)
            if len(chunk) >= size:
                for value in await self.predict_batch(chunk, **kwargs):
                    yield value
                chunk = []
        if chunk:
            for value in await self.predict_batch(chunk, **kwargs):
                yield value


_BASES = (ModelBase, Model, AsyncModel, Generic, object)
