"""Running the five seed articles (../shared/seeds/) as a reader would: their
commands through bash with only the server's name changed, their client code as
scripts, their curl lines through the real curl.

Ports: the articles hard-code 8080, 8501, 9000, 9001…; every test here listens on
free ports instead, given to servekit through its ``SERVEKIT_*_PORT`` variables
(so that a command line stays as the article wrote it) or, where the article's
own command line or client code names the port, by rewriting only that number
(each such place says so in a comment).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests
from servers import free_port

BIN = Path(sys.executable).parent  # `servekit`, `torch-model-archiver` and `python` as a reader's shell finds them


def shell_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, **(extra or {})}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def sh(command: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 240,
       check: bool = True) -> subprocess.CompletedProcess[str]:
    """One of the article's shell lines, run by bash in ``cwd``."""
    done = subprocess.run(["bash", "-c", command], cwd=cwd, env=shell_env(env), capture_output=True,
                          text=True, timeout=timeout)
    if check:
        assert done.returncode == 0, f"{command!r} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


def python_script(path: Path, env: dict[str, str] | None = None, timeout: float = 240) -> str:
    """``python path`` in the script's folder (as the article runs its train.py/test.py); its stdout."""
    return sh(f"python {path.name}", cwd=path.parent, env=env, timeout=timeout).stdout


class Ports:
    """Free ports for every listener servekit may open, and the variables that set them."""

    def __init__(self) -> None:
        self.http, self.grpc, self.metrics = free_port(), free_port(), free_port()
        self.management, self.rest_api, self.tf_grpc = free_port(), free_port(), free_port()

    def env(self) -> dict[str, str]:
        return {
            "SERVEKIT_HTTP_PORT": str(self.http),
            "SERVEKIT_GRPC_PORT": str(self.grpc),
            "SERVEKIT_METRICS_PORT": str(self.metrics),
            "SERVEKIT_MANAGEMENT_PORT": str(self.management),
            "SERVEKIT_REST_API_PORT": str(self.rest_api),
            "SERVEKIT_PORT": str(self.tf_grpc),
            # one worker process: this machine has two cores shared by every test
            "SERVEKIT_PARALLEL_WORKERS": "1",
        }


class ArticleServer:
    """A server command line of an article, started by bash in ``cwd`` and
    stopped with SIGTERM to its process group; ready once it logged
    ``servekit ready`` and ``ready_url`` answers."""

    def __init__(self, command: str, cwd: Path, ready_url: str, env: dict[str, str] | None = None) -> None:
        self.command, self.cwd, self.ready_url = command, cwd, ready_url
        self.env = env or {}
        self.proc: subprocess.Popen[str] | None = None
        fd, name = tempfile.mkstemp(prefix="servekit-article-", suffix=".log")
        os.close(fd)
        self.log_path = Path(name)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def start(self, timeout: float = 120) -> ArticleServer:
        with self.log_path.open("w") as log:
            self.proc = subprocess.Popen(["bash", "-c", self.command], cwd=self.cwd,
                                         env=shell_env(self.env), stdout=log, stderr=subprocess.STDOUT,
                                         text=True, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.command!r} exited {self.proc.returncode}:\n{self.log()}")
            if "servekit ready" in self.log():
                try:
                    if requests.get(self.ready_url, timeout=2).status_code < 500:
                        return self
                except requests.RequestException:
                    pass
            time.sleep(0.1)
        self.stop()
        raise AssertionError(f"{self.command!r} did not become ready:\n{self.log()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def __enter__(self) -> ArticleServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
