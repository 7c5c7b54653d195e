"""Progress bars for long work: drawn on a terminal (a pseudo-terminal here,
``pty.openpty()``), nothing extra written anywhere else (a pipe, a file)."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import termios
import time
from pathlib import Path

import joblib
from servers import SERVEKIT, free_port
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")
BAR = "━"  # rich's bar


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SERVEKIT_", "OTEL_"))}
    env["SERVEKIT_ASSETS_DIR"] = str(tmp_path / "cache")
    env["SERVEKIT_STORAGE_URL"] = str(tmp_path / "store")
    (tmp_path / "store").mkdir(exist_ok=True)
    return env


def _files(tmp_path: Path) -> Path:
    folder = tmp_path / "payload"
    folder.mkdir(exist_ok=True)
    for index in range(3):
        (folder / f"part{index}.bin").write_bytes(os.urandom(300_000))
    (tmp_path / "handler.py").write_text("def handle(data, context):\n    return data\n")
    return folder


def _archive_args(tmp_path: Path, name: str) -> list[str]:
    folder = _files(tmp_path)
    return ["archive", "--model-name", name, "--handler", str(tmp_path / "handler.py"),
            "--serialized-file", str(folder / "part0.bin"), "--extra-files", str(folder),
            "--export-path", str(tmp_path / "out")]


def _in_terminal(args: list[str], env: dict[str, str], *, until: str | None = None,
                 timeout: float = 120.0) -> tuple[int | None, str]:
    """Run ``servekit ARGS`` with stdout and stderr on a pseudo-terminal of
    120 columns; (exit code, what it wrote, ANSI codes removed). With
    ``until``: stop it (SIGTERM) once that text appeared."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    process = subprocess.Popen([*SERVEKIT, *args], stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
                               env={**env, "TERM": "xterm-256color", "COLUMNS": "120"}, start_new_session=True)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the terminal's other side closed
                    break
                if not data:
                    break
                chunks.append(data)
                if until is not None and until in ANSI.sub("", b"".join(chunks).decode("utf-8", "replace")):
                    os.killpg(process.pid, signal.SIGTERM)
                    until = None
            elif process.poll() is not None:
                break
        code = process.wait(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        os.close(master)
    return code, ANSI.sub("", b"".join(chunks).decode("utf-8", "replace"))


def test_archive_is_silent_off_a_terminal(tmp_path: Path) -> None:
    done = subprocess.run([*SERVEKIT, *_archive_args(tmp_path, "quiet")], env=_env(tmp_path),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout == f"servekit: wrote {tmp_path / 'out' / 'quiet.mar'}\n"


def test_archive_draws_a_bar_on_a_terminal(tmp_path: Path) -> None:
    code, text = _in_terminal(_archive_args(tmp_path, "shown"), _env(tmp_path))
    assert code == 0, text
    assert "Writing shown.mar" in text and BAR in text
    # the extra folder's three files (the serialized file is one of them): all 900 kB written
    assert re.search(r"Writing shown\.mar\s+" + BAR + r"+\s+900\.0/900\.0 kB", text), text
    assert f"servekit: wrote {tmp_path / 'out' / 'shown.mar'}" in text
    # SERVEKIT_PROGRESS=0 turns bars off on a terminal too
    code, text = _in_terminal([*_archive_args(tmp_path, "off"), "--force"], {**_env(tmp_path), "SERVEKIT_PROGRESS": "0"})
    assert code == 0 and "Writing" not in text and BAR not in text, text


def test_assets_push_and_fetch(tmp_path: Path) -> None:
    env = _env(tmp_path)
    folder = _files(tmp_path)
    quiet = subprocess.run([*SERVEKIT, "assets", "push", str(folder), "data/quiet:1.0"], env=env,
                           capture_output=True, text=True, timeout=120)
    assert quiet.returncode == 0 and quiet.stderr == "" and quiet.stdout == "data/quiet:1.0\n", quiet.stderr
    fetched = subprocess.run([*SERVEKIT, "assets", "fetch", "data/quiet:1.0"], env=env,
                             capture_output=True, text=True, timeout=120)
    assert fetched.returncode == 0, fetched.stderr
    assert "Fetching" not in fetched.stderr and BAR not in fetched.stderr
    assert sorted(p.name for p in Path(fetched.stdout.strip()).iterdir()) == ["part0.bin", "part1.bin", "part2.bin"]

    code, text = _in_terminal(["assets", "push", str(folder), "data/shown:1.0"], env)
    assert code == 0 and "Pushing data/shown:1.0" in text and BAR in text and "900.0/900.0 kB" in text, text
    code, text = _in_terminal(["assets", "fetch", "data/shown:1.0"], env)
    assert code == 0 and "Fetching data/shown:1.0" in text and BAR in text and "900.0/900.0 kB" in text, text
    assert (tmp_path / "cache").is_dir()


def _repository(root: Path) -> Path:
    X, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=500).fit(X, y)
    for name in ("iris", "iris2"):
        (root / name).mkdir(parents=True)
        joblib.dump(model, root / name / "model.joblib")
    return root


def _serve_args(root: Path) -> list[str]:
    return ["serve", str(root), "--http-port", str(free_port()), "--grpc-port", str(free_port()),
            "--metrics-port", str(free_port()), "--parallel-workers", "1"]


def test_loading_models_at_start(tmp_path: Path) -> None:
    root = _repository(tmp_path / "repo")
    env = _env(tmp_path)
    _, text = _in_terminal(_serve_args(root), env, until="servekit ready")
    assert "servekit ready" in text, text
    assert "Loading models" in text and "2/2 models" in text and BAR in text, text
    # off a terminal: the log has no bar
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        process = subprocess.Popen([*SERVEKIT, *_serve_args(root)], stdout=out, stderr=subprocess.STDOUT, env=env,
                                   start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while "servekit ready" not in log.read_text() and time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()
            time.sleep(0.1)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    written = log.read_text()
    assert "servekit ready" in written
    assert "Loading models" not in written and BAR not in written and "\x1b[" not in written


def test_without_rich_nothing_is_drawn(tmp_path: Path) -> None:
    """The progress extra is optional: with rich hidden, a terminal gets no bar and the work is done."""
    hide = tmp_path / "hide" / "rich"
    hide.mkdir(parents=True)
    (hide / "__init__.py").write_text("raise ImportError('hidden by the test')\n")
    (hide / "progress.py").write_text("raise ImportError('hidden by the test')\n")
    env = {**_env(tmp_path), "PYTHONPATH": str(tmp_path / "hide") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    code, text = _in_terminal(_archive_args(tmp_path, "plain"), env)
    assert code == 0 and "Writing" not in text and BAR not in text, text
    assert (tmp_path / "out" / "plain.mar").is_file()
