"""The pytest plugin shipped with servekit runs models' TEST_CASES."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

MODELS = '''
from servekit import Model


class Reverse(Model[str, str]):
    CONFIGURATIONS = {"reverse": {}}
    TEST_CASES = [{"item": "abc", "result": "cba"}, {"item": "", "result": ""}]

    def _predict(self, item: str) -> str:
        return item[::-1]


class Broken(Model[str, int]):
    CONFIGURATIONS = {"broken": {}}
    TEST_CASES = [{"item": "abc", "result": 4}]

    def _predict(self, item: str) -> int:
        return len(item)
'''


def test_test_cases_become_tests(tmp_path: Path) -> None:
    (tmp_path / "mypkg").mkdir()
    (tmp_path / "mypkg" / "__init__.py").write_text(MODELS)
    (tmp_path / "test_nothing.py").write_text("def test_ok():\n    pass\n")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--servekit-models", "mypkg",
         "-o", "addopts=", "-rA"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    out = done.stdout
    lines = out.splitlines()
    for name, state in (("reverse[0]", "PASSED"), ("reverse[1]", "PASSED"), ("broken[0]", "FAILED")):
        assert any(line.startswith(state) and f"servekit::{name}" in line for line in lines), out
    assert "broken('abc') returned 3, expected 4" in out
    assert lines[-1].startswith("1 failed, 3 passed")
