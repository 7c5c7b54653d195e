"""The library's typing is checked: mypy over a small user package."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

GOOD = '''
from pydantic import BaseModel
from servekit import AsyncModel, Model, ModelLibrary


class Item(BaseModel):
    text: str


class Lengths(Model[Item, list[int]]):
    CONFIGURATIONS = {"lengths": {}}

    def _predict(self, item: Item) -> list[int]:
        return [len(w) for w in item.text.split()]


class Total(Model[str, int]):
    CONFIGURATIONS = {"total": {"model_dependencies": {"lengths"}}}

    def _load(self) -> None:
        self.lengths = self.model_dependencies.typed("lengths", Lengths)

    def _predict_batch(self, items: list[str]) -> list[int]:
        return [sum(v) for v in self.lengths.predict_batch([Item(text=t) for t in items])]


class Shout(AsyncModel[str, str]):
    async def _predict(self, item: str) -> str:
        return item.upper()


def use() -> int:
    library = ModelLibrary([Lengths, Total])
    total: int = library.get("total", Total).predict("a bb")
    counts: list[list[int]] = library.get("lengths", Lengths).predict_batch([Item(text="x")], batch_size=2)
    return total + len(counts)


async def use_async() -> str:
    return await Shout().predict("hi")
'''

BAD = '''
from servekit import Model


class Upper(Model[str, str]):
    def _predict(self, item: str) -> str:
        return item.upper()


result: int = Upper().predict("a")
Upper().predict(3)
'''


def _mypy(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--follow-imports=silent",
         "--cache-dir", str(folder / ".mypy_cache"), str(folder / "pkg")],
        capture_output=True, text=True, timeout=240,
    )


def test_typed_user_package_passes_mypy_and_mistakes_are_caught(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "models.py").write_text(GOOD)
    done = _mypy(tmp_path)
    assert done.returncode == 0, done.stdout
    (pkg / "wrong.py").write_text(BAD)
    done = _mypy(tmp_path)
    assert done.returncode == 1
    assert 'Incompatible types in assignment (expression has type "str", variable has type "int")' in done.stdout
    assert 'Argument 1 to "predict" of "Model" has incompatible type "int"; expected "str"' in done.stdout
