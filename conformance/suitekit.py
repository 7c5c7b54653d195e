"""What the conformance suites' ``run`` scripts share: a pinned virtualenv
under the suite's ``.work/``, free ports, processes started and stopped by
their own ids, and the result file ``conformance/results/<suite>.json``."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

CONFORMANCE = Path(__file__).resolve().parent
ROOT = CONFORMANCE.parent
SERVEKIT = ROOT / ".venv" / "bin" / "servekit"
RESULTS = CONFORMANCE / "results"


def python() -> str:
    """The interpreter for the peers' virtualenvs (their pins want Python 3.11)."""
    return shutil.which("python3.11") or sys.executable


def venv(folder: Path, requirements: Path) -> Path:
    """``folder/.work/venv`` with exactly ``requirements`` installed (made
    again when the file changes); returns its ``bin`` folder."""
    work = folder / ".work"
    work.mkdir(exist_ok=True)
    (work / ".gitignore").write_text("*\n")
    target = work / "venv"
    stamp = target / "requirements.sha256"
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        return target / "bin"
    if target.exists():
        shutil.rmtree(target)
    subprocess.run([python(), "-m", "venv", str(target)], check=True)
    pip = [str(target / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "--no-deps", "-r", str(requirements)], check=True)
    stamp.write_text(digest)
    return target / "bin"


def free_port() -> int:
    for _ in range(1000):
        port = random.randint(20000, 32000)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


class Process:
    """A server started in its own process group, ready when ``ready_url``
    answers 200; stopped by its own id."""

    def __init__(self, command: list[str], *, cwd: Path, log: Path, ready_url: str,
                 env: dict[str, str] | None = None, timeout: float = 120.0) -> None:
        self.command, self.cwd, self.log_path, self.ready_url = command, cwd, log, ready_url
        self.env = {**os.environ, **(env or {})}
        self.timeout = timeout
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Process:
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(self.command, cwd=self.cwd, env=self.env, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.command[0]} exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.ready_url, timeout=2) as answer:
                    if answer.status == 200:
                        return self
            except (urllib.error.URLError, OSError):  # HTTPError too: not ready yet
                pass
            time.sleep(0.2)
        self.__exit__()
        raise RuntimeError(f"{' '.join(self.command)} did not become ready:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __exit__(self, *exc: Any) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def write_result(name: str, result: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("suite", "passed", "total", "peer_passed", "peer_total")}))
    return path
