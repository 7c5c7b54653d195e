"""ModelLibrary: shared instances, dependency order, lazy/eager, clear start-up errors."""

from __future__ import annotations

import pytest

from servekit import Model, ModelLibrary, load_model
from servekit.errors import ConfigError

BUILT: list[str] = []


class Base(Model[str, str]):
    CONFIGURATIONS = {"base": {}}

    def _load(self) -> None:
        BUILT.append(self.configuration_key)

    def _predict(self, item: str) -> str:
        return item.strip()


class Left(Model[str, str]):
    CONFIGURATIONS = {"left": {"model_dependencies": {"base"}}}

    def _load(self) -> None:
        BUILT.append(self.configuration_key)
        self.base = self.model_dependencies.typed("base", Base)

    def _predict(self, item: str) -> str:
        return "<" + self.base.predict(item)


class Right(Model[str, str]):
    CONFIGURATIONS = {"right": {"model_dependencies": {"inner": "base"}}}  # renamed locally

    def _load(self) -> None:
        BUILT.append(self.configuration_key)

    def _predict(self, item: str) -> str:
        return self.model_dependencies["inner"].predict(item) + ">"


class Top(Model[str, str]):
    CONFIGURATIONS = {"top": {"model_dependencies": {"left", "right"}}}

    def _load(self) -> None:
        BUILT.append(self.configuration_key)

    def _predict(self, item: str) -> str:
        return self.model_dependencies["left"].predict(self.model_dependencies["right"].predict(item))


MODELS = [Base, Left, Right, Top]


@pytest.fixture(autouse=True)
def _reset() -> None:
    BUILT.clear()


def test_eager_builds_each_once_dependencies_first() -> None:
    library = ModelLibrary(MODELS, required_models=["top"])
    assert BUILT[0] == "base" and BUILT[-1] == "top"
    assert sorted(BUILT) == ["base", "left", "right", "top"]
    top = library.get("top", Top)
    assert top.predict("  x ") == "<x>"
    left, right = library.get("left"), library.get("right")
    assert left.model_dependencies["base"] is right.model_dependencies["inner"] is library.get("base")


def test_lazy_builds_on_first_get() -> None:
    library = ModelLibrary(MODELS, required_models=["top"], settings={"lazy_loading": True})
    assert BUILT == []
    assert library.get("left").predict("a") == "<a"
    assert BUILT == ["base", "left"]
    library.get("top")
    assert BUILT == ["base", "left", "right", "top"]


def test_missing_dependency_is_a_start_up_error() -> None:
    with pytest.raises(ConfigError, match="model 'left' depends on 'base', which is not defined"):
        ModelLibrary([Left], settings={"lazy_loading": True})
    with pytest.raises(ConfigError, match="model 'nope' is not defined"):
        ModelLibrary(MODELS, required_models=["nope"], settings={"lazy_loading": True})


def test_cycle_is_a_start_up_error() -> None:
    class A(Model[str, str]):
        CONFIGURATIONS = {"a": {"model_dependencies": {"b"}}}

        def _predict(self, item: str) -> str:
            return item

    class B(Model[str, str]):
        CONFIGURATIONS = {"b": {"model_dependencies": {"c"}}}

        def _predict(self, item: str) -> str:
            return item

    class C(Model[str, str]):
        CONFIGURATIONS = {"c": {"model_dependencies": {"a"}}}

        def _predict(self, item: str) -> str:
            return item

    with pytest.raises(ConfigError, match="model dependency cycle: a -> b -> c -> a"):
        ModelLibrary([A, B, C], settings={"lazy_loading": True})
    assert BUILT == []


def test_direct_instantiation_needs_a_library_for_dependencies() -> None:
    with pytest.raises(ConfigError, match=r"build it with servekit\.ModelLibrary"):
        Left()
    assert load_model("left", models=MODELS).predict("q") == "<q"


def test_duplicate_configuration_names() -> None:
    class Other(Model[str, str]):
        CONFIGURATIONS = {"base": {}}

        def _predict(self, item: str) -> str:
            return item

    with pytest.raises(ConfigError, match="defined by both"):
        ModelLibrary([Base, Other])


def test_models_found_in_a_package(sentiment_store: str, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SERVEKIT_STORAGE_URL", sentiment_store)
    monkeypatch.setenv("SERVEKIT_ASSETS_DIR", str(tmp_path))
    import sentiment

    library = ModelLibrary(sentiment)
    assert library.build_order.index("classifier") > library.build_order.index("vectorizer")
    result = library.get("classifier").predict("a superb, delightful masterpiece")
    assert result.label == "positive"
