"""Typed models: validation with field names, predict / predict_batch / predict_gen, async."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import BaseModel

from servekit import AsyncModel, Model
from servekit.errors import ConfigError, InvalidInput
from servekit.library import ItemValidationError, ReturnValueError


class Review(BaseModel):
    text: str
    stars: int


class Verdict(BaseModel):
    good: bool
    words: int


class Judge(Model[Review, Verdict]):
    CONFIGURATIONS = {"judge": {}}

    def _load(self) -> None:
        self.batches: list[int] = []

    def _predict_batch(self, items: list[Review]) -> list[Verdict]:
        self.batches.append(len(items))
        return [Verdict(good=r.stars >= 3, words=len(r.text.split())) for r in items]


class Upper(Model[str, str]):
    def _predict(self, item: str, suffix: str = "") -> str:
        return item.upper() + suffix


class Liar(Model[str, int]):
    def _predict(self, item: str) -> int:
        return "not a number"  # type: ignore[return-value]


def test_predict_validates_and_converts_dicts() -> None:
    judge = Judge()
    assert judge.predict({"text": "fine movie", "stars": "4"}) == Verdict(good=True, words=2)
    assert judge.batches == [1]


def test_invalid_input_names_the_field() -> None:
    judge = Judge()
    with pytest.raises(ItemValidationError) as info:
        judge.predict({"text": "x", "stars": "many"})
    assert "field 'stars'" in info.value.message
    assert "valid integer" in info.value.message
    assert isinstance(info.value, InvalidInput) and info.value.status == 400
    with pytest.raises(ItemValidationError, match="field 'text': Field required"):
        judge.predict({"stars": 1})
    assert judge.batches == []  # nothing reached _predict_batch


def test_invalid_output_is_reported() -> None:
    with pytest.raises(ReturnValueError, match="does not fit its output type"):
        Liar().predict("a")


def test_predict_batch_in_chunks_and_generator() -> None:
    judge = Judge()
    items = [{"text": "a " * i, "stars": i % 5} for i in range(10)]
    out = judge.predict_batch(items, batch_size=4)
    assert [v.words for v in out] == list(range(10))
    assert judge.batches == [4, 4, 2]
    judge.batches.clear()
    consumed = []

    def source():  # a generator is pulled lazily, batch by batch
        for item in items:
            consumed.append(item)
            yield item

    gen = judge.predict_gen(source(), batch_size=3)
    first = next(gen)
    assert first.words == 0 and len(consumed) == 3
    assert [v.words for v in gen] == list(range(1, 10))
    assert judge.batches == [3, 3, 3, 1]


def test_item_model_gets_keyword_arguments() -> None:
    upper = Upper()
    assert upper.configuration_key == "upper"  # from the class name without CONFIGURATIONS
    assert upper.predict("ab", suffix="!") == "AB!"
    assert upper.predict_batch(["a", "b"]) == ["A", "B"]


def test_class_without_predict_is_refused() -> None:
    class Empty(Model[str, str]):
        pass

    with pytest.raises(ConfigError, match="neither _predict nor _predict_batch"):
        Empty()


def test_unknown_configuration_field_is_refused() -> None:
    class Bad(Model[str, str]):
        CONFIGURATIONS = {"bad": {"assets": "x"}}

        def _predict(self, item: str) -> str:
            return item

    with pytest.raises(ConfigError, match="CONFIGURATIONS"):
        Bad()


class Echo(AsyncModel[str, list[str]]):
    CONFIGURATIONS = {"echo": {}}

    async def _predict(self, item: str) -> list[str]:
        await asyncio.sleep(0)
        return item.split()


def test_async_model() -> None:
    echo = Echo()

    async def main() -> tuple[list[str], list[list[str]], list[list[str]]]:
        one = await echo.predict("a b")
        many = await echo.predict_batch(["x", "y z"], batch_size=1)
        gen = [v async for v in echo.predict_gen(["p q", "r"], batch_size=1)]
        return one, many, gen

    assert asyncio.run(main()) == (["a", "b"], [["x"], ["y", "z"]], [["p", "q"], ["r"]])
    with pytest.raises(ItemValidationError):
        asyncio.run(echo.predict(3))  # type: ignore[arg-type]


def test_signature_and_schema() -> None:
    signature = Judge.signature()
    assert signature.describe() == "Review -> Verdict"
    assert signature.input_schema()["required"] == ["text", "stars"]
    assert Upper.signature().describe() == "str -> str"
