"""pytest plugin (registered through the ``pytest11`` entry point): runs the
``TEST_CASES`` declared on model classes.

    pytest --servekit-models sentiment          # a module name, a package folder, a folder
                                                # holding packages or a .py file; or, in the ini file:
    [pytest]
    servekit_models = sentiment

Each case becomes a test ``servekit::<configuration>[<n>]`` that builds the
model with a ModelLibrary and checks ``predict(item, **keyword_args)`` equals
``result`` (validated against the output type). ``check_test_cases(model)``
does the same from any test.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

_MODULES = pytest.StashKey[list[Any]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("servekit")
    group.addoption("--servekit-models", action="append", default=[], metavar="PACKAGE",
                    help="run the TEST_CASES of the model classes in PACKAGE")
    parser.addini("servekit_models", "packages whose models' TEST_CASES are run", type="linelist")


def check_test_cases(model: Any) -> None:
    """Assert every TEST_CASE of ``model`` (a built Model) holds."""
    for case in type(model).test_cases():
        _check(model, case)


def _check(model: Any, case: dict[str, Any]) -> None:
    signature = type(model).signature()
    expected = signature.validate_output(case["result"], model.configuration_key)
    got = model.predict(case["item"], **case["keyword_args"])
    if hasattr(got, "__await__"):
        import asyncio

        got = asyncio.run(got)
    assert got == expected, f"{model.configuration_key}({case['item']!r}) returned {got!r}, expected {expected!r}"


class TestCaseItem(pytest.Item):
    def __init__(self, *, library: Any, key: str, case: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.library = library
        self.key = key
        self.case = case

    def runtest(self) -> None:
        _check(self.library.get(self.key), self.case)

    def reportinfo(self) -> tuple[str, int | None, str]:
        return "servekit", None, self.name


def _items(session: pytest.Session, modules: list[Any]) -> Iterator[TestCaseItem]:
    from servekit.library import LibrarySettings, ModelLibrary

    for module in modules:
        settings = LibrarySettings.from_env().model_copy(update={"lazy_loading": True})
        library = ModelLibrary(module, settings=settings)
        for key, (cls, _) in library.configurations.items():
            for n, case in enumerate(cls.test_cases()):
                yield TestCaseItem.from_parent(session, name=f"servekit::{key}[{n}]", library=library, key=key, case=case)


def _imported(config: pytest.Config) -> list[Any]:
    """What --servekit-models (from the folder pytest was started in) and the ini's
    servekit_models (from the ini file's folder) name, imported as ``servekit
    time --models`` does; a mistake is a usage error of one line."""
    from servekit.errors import ServekitError
    from servekit.library.sources import import_models, put_on_path

    wanted = [(str(target), config.invocation_params.dir, "--servekit-models")
              for target in config.getoption("servekit_models") or []]
    wanted += [(str(target), config.rootpath, "servekit_models (ini)")
               for target in config.getini("servekit_models") or []]
    modules: list[Any] = []
    if wanted:  # the packages usually live beside the tests: the rootdir is on sys.path as well
        put_on_path(config.rootpath)
    for target, base, option in wanted:
        try:
            modules.extend(import_models(target, base, option))
        except ServekitError as exc:
            raise pytest.UsageError(f"{option} {target}: {exc.message}") from None
    return modules


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_MODULES] = _imported(config)


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    modules = config.stash.get(_MODULES, [])
    if modules:
        items.extend(_items(session, modules))
