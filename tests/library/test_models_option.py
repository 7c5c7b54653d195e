"""``--models`` finds the user's code the way Python does (issue 11, item 4).

The real ``servekit`` and ``pytest`` console scripts run in temporary folders
with no PYTHONPATH: a module name is found in the current folder, a package
folder, a folder holding packages and a ``.py`` file work from anywhere, and
every mistake ends with one line naming what to give and a non-zero exit,
never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
SERVEKIT = str(BIN / "servekit")
PYTEST = str(BIN / "pytest")  # the console script: it does not put the current folder on sys.path

MODELS = '''
from servekit import Model

from .helpers import FACTOR


class Double(Model[int, int]):
    CONFIGURATIONS = {"double": {}}
    TEST_CASES = [{"item": 2, "result": 4}, {"item": -1, "result": -2}]

    def _predict(self, item: int) -> int:
        return item * FACTOR
'''

SINGLE = '''
from servekit import Model


class Shout(Model[str, str]):
    CONFIGURATIONS = {"shout": {}}
    TEST_CASES = [{"item": "hi", "result": "HI"}]

    def _predict(self, item: str) -> str:
        return item.upper()
'''


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SERVEKIT_", "MODELKIT_", "PYTEST_")) and k != "PYTHONPATH"}
    env["HOME"] = str(home)
    return env


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120, env=_env(cwd))


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    """tmp/src/shop (a package with a relative import), tmp/single.py, and broken code beside them."""
    shop = tmp_path / "src" / "shop"
    shop.mkdir(parents=True)
    (shop / "__init__.py").write_text("")
    (shop / "helpers.py").write_text("FACTOR = 2\n")
    (shop / "models.py").write_text(MODELS)
    (tmp_path / "single.py").write_text(SINGLE)
    return tmp_path


def assert_one_line_error(done: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert done.returncode != 0, done.stdout
    out = done.stdout + done.stderr
    assert "Traceback" not in out and "INTERNALERROR" not in out, out
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    for text in expected:
        assert text in lines[0], lines[0]


# -- the forms -------------------------------------------------------------------------
@pytest.mark.parametrize(("cwd", "models"), [
    ("src", "shop"),  # a module name in the current folder
    ("src", "shop.models"),  # a dotted module name
    (".", "src/shop"),  # a package folder
    (".", "src/shop/"),
    (".", "src"),  # a folder holding packages
    (".", "src/shop/models.py"),  # a .py file inside a package: its relative import works
    ("src/shop", "models.py"),
])
def test_time_takes_every_form(project: Path, cwd: str, models: str) -> None:
    done = run([SERVEKIT, "time", "double", "21", "-n", "3", "--models", models], project / cwd)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("double: 3 calls\n"), done.stdout


def test_time_absolute_package_folder_and_plain_file(project: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    done = run([SERVEKIT, "time", "double", "1", "-n", "2", "--models", str(project / "src" / "shop")], elsewhere)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("double: 2 calls")
    done = run([SERVEKIT, "time", "shout", '"x"', "-n", "2", "--models", str(project / "single.py")], elsewhere)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("shout: 2 calls")


def test_time_takes_a_class_path_from_the_current_folder(project: Path) -> None:
    done = run([SERVEKIT, "time", "shop.models.Double", "5", "-n", "2"], project / "src")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("double: 2 calls")


@pytest.mark.parametrize(("cwd", "target"), [("src", "shop"), (".", "src/shop"), (".", "src"), (".", "src/shop/models.py")])
def test_describe_takes_every_form(project: Path, cwd: str, target: str) -> None:
    done = run([SERVEKIT, "describe", target], project / cwd)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[:2] == ["double  (shop.models.Double)", "  signature     int -> int"]


def test_describe_single_file(project: Path) -> None:
    done = run([SERVEKIT, "describe", "single.py", "--json"], project)
    assert done.returncode == 0, done.stderr
    assert '"class": "single.Shout"' in done.stdout


# -- the mistakes ---------------------------------------------------------------------------
MISTAKES = [
    ("/nonexistent/models", ["'/nonexistent/models' does not exist;", "a package folder", ".py file"]),
    ("nope/", ["'nope/' does not exist (looked in ", "a module name"]),
    ("nope.py", ["'nope.py' does not exist"]),
    ("nosuch", ["no module named 'nosuch' in the current folder", "path/to/nosuch"]),
    ("nosuch.sub", ["no module named 'nosuch'"]),
    ("shop", ["no module named 'shop' in the current folder", "--models path/to/shop"]),  # it is in src/
    ("notes.txt", ["'notes.txt' is a file but not a .py file"]),
    ("empty", ["'empty' is a folder without __init__.py and holds no package"]),
    ("my-pkg", ["'my-pkg' is not a valid Python module name"]),
    ("syntax", ["importing 'syntax' failed: SyntaxError:", "syntax/__init__.py:2"]),
    ("raising", ["importing 'raising' failed: RuntimeError: needs a GPU", "raising/__init__.py:1"]),
    ("halfbroken", ["importing 'halfbroken.sub' failed: ZeroDivisionError", "halfbroken/sub.py:1"]),
    ("needsdep", ["importing 'needsdep' failed: ModuleNotFoundError: No module named 'not_installed_lib'"]),
    ("plain", ["'plain' (plain) defines no model class", "servekit.Model subclasses with CONFIGURATIONS"]),
    ("src/shop/helpers.py", ["(shop.helpers) defines no model class"]),
    ("a b", ["'a b' is neither an existing path nor a module name"]),
    ("", ["--models is empty"]),
]


@pytest.fixture()
def mistakes(project: Path) -> Path:
    (project / "notes.txt").write_text("not code\n")
    (project / "empty").mkdir()
    (project / "empty" / "script.py").write_text("print('hi')\n")
    for name, init in {"my-pkg": "", "syntax": "x = 1\ndef (:\n", "raising": "raise RuntimeError('needs a GPU')\n",
                       "halfbroken": "", "needsdep": "import not_installed_lib\n", "plain": "VALUE = 1\n"}.items():
        (project / name).mkdir()
        (project / name / "__init__.py").write_text(init)
    (project / "halfbroken" / "sub.py").write_text("1 / 0\n")
    return project


@pytest.mark.parametrize(("models", "expected"), MISTAKES, ids=[m or "empty-string" for m, _ in MISTAKES])
def test_time_mistakes_answer_one_line(mistakes: Path, models: str, expected: list[str]) -> None:
    done = run([SERVEKIT, "time", "double", "1", "--models", models], mistakes)
    assert_one_line_error(done, "servekit: ", *expected)


def test_time_class_path_mistakes(mistakes: Path) -> None:
    done = run([SERVEKIT, "time", "shop.models.Nope", "1"], mistakes / "src")
    assert_one_line_error(done, "module 'shop.models' has no class or module 'Nope'")
    done = run([SERVEKIT, "time", "double", "1"], mistakes / "src")
    assert_one_line_error(done, "give --models PACKAGE or a dotted class path as MODEL")
    done = run([SERVEKIT, "time", "triple", "1", "--models", "shop"], mistakes / "src")
    assert_one_line_error(done, "model 'triple' is not defined by any model class (known: double)")


def test_describe_mistakes_answer_one_line(mistakes: Path) -> None:
    done = run([SERVEKIT, "describe", "/nonexistent"], mistakes)
    assert_one_line_error(done, "servekit: '/nonexistent' does not exist; describe takes a module name")
    done = run([SERVEKIT, "describe", "nosuch"], mistakes)
    assert_one_line_error(done, "no module named 'nosuch' in the current folder", "describe path/to/nosuch")
    done = run([SERVEKIT, "describe", "raising"], mistakes)
    assert_one_line_error(done, "importing 'raising' failed: RuntimeError: needs a GPU")
    # a folder with neither model files nor packages
    done = run([SERVEKIT, "describe", "empty"], mistakes)
    assert_one_line_error(done, "no models in 'empty'", "model repository folder")


# -- the pytest plugin ------------------------------------------------------------------------
def _passed(done: subprocess.CompletedProcess[str]) -> list[str]:
    return sorted(line.split()[1] for line in done.stdout.splitlines() if line.startswith("PASSED "))


PYTEST_ARGS = ["-p", "no:cacheprovider", "-rA", "-q", "-o", "addopts="]


@pytest.mark.parametrize(("cwd", "models"), [
    ("src", "shop"), (".", "src/shop"), (".", "src"), (".", "src/shop/models.py"), ("src/shop", "models.py"),
])
def test_pytest_plugin_takes_every_form(project: Path, cwd: str, models: str) -> None:
    done = run([PYTEST, *PYTEST_ARGS, "--servekit-models", models], project / cwd)
    assert done.returncode == 0, done.stdout + done.stderr
    assert [p.rsplit("::", 2)[-2:] for p in _passed(done)] == [["servekit", "double[0]"], ["servekit", "double[1]"]]


def test_pytest_plugin_from_below_the_rootdir(project: Path) -> None:
    """The issue's case: pytest started inside examples/sentiment, whose rootdir
    (the repository's pyproject.toml) is two folders up."""
    (project / "pyproject.toml").write_text("[tool.pytest.ini_options]\nservekit_models = ['single.py']\n")
    done = run([PYTEST, *PYTEST_ARGS, "--servekit-models", "shop"], project / "src")
    assert done.returncode == 0, done.stdout + done.stderr
    names = [p.rsplit("::", 1)[-1] for p in _passed(done)]
    assert names == ["double[0]", "double[1]", "shout[0]"]  # the ini's entry is read from the rootdir


@pytest.mark.parametrize(("models", "expected"), [
    ("nosuch", "--servekit-models nosuch: no module named 'nosuch' in the current folder"),
    ("/nonexistent", "--servekit-models /nonexistent: '/nonexistent' does not exist;"),
    ("raising", "--servekit-models raising: importing 'raising' failed: RuntimeError: needs a GPU"),
    ("plain", "--servekit-models plain: 'plain' (plain) defines no model class"),
])
def test_pytest_plugin_mistakes_are_usage_errors(mistakes: Path, models: str, expected: str) -> None:
    done = run([PYTEST, *PYTEST_ARGS, "--servekit-models", models], mistakes)
    assert done.returncode == pytest.ExitCode.USAGE_ERROR, done.stdout + done.stderr
    out = done.stdout + done.stderr
    assert "Traceback" not in out and "INTERNALERROR" not in out, out
    assert f"ERROR: {expected}" in done.stderr, done.stderr


# -- servekit serve: an implementation found from the current folder ---------------------------
def test_serve_imports_an_implementation_from_the_current_folder(project: Path) -> None:
    """``servekit serve repo`` (the console script, which does not put the current
    folder on sys.path) imports ``"implementation": "single.Shout"`` from ``./single.py``."""
    import time

    import requests
    from servers import free_port

    model = project / "repo" / "shout"
    model.mkdir(parents=True)
    (model / "model-settings.json").write_text('{"name": "shout", "implementation": "single.Shout"}')
    http, grpc, metrics = free_port(), free_port(), free_port()
    log = project / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [SERVEKIT, "serve", "repo", "--http-port", str(http), "--grpc-port", str(grpc),
             "--metrics-port", str(metrics), "--parallel-workers", "1"],
            cwd=project, stdout=out, stderr=subprocess.STDOUT, env=_env(project), start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 90
        while "servekit ready" not in log.read_text() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "servekit ready" in log.read_text(), log.read_text()
        answer = requests.post(f"http://127.0.0.1:{http}/predict/shout", json="quiet", timeout=10)
        assert answer.status_code == 200, answer.text
        assert answer.json() == "QUIET"
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(20)
