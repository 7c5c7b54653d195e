"""Starting real ``servekit`` processes on free ports for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
SERVEKIT = [sys.executable, "-m", "servekit"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """``servekit serve ARGS`` on free ports; ``url`` is the main HTTP address."""

    def __init__(self, args: list[str], *, workers: int = 1, env: dict[str, str] | None = None,
                 cwd: str | Path | None = None, ready_path: str = "/v2/health/live",
                 extra_ports: dict[str, int] | None = None) -> None:
        self.http_port = free_port()
        self.grpc_port = free_port()
        self.metrics_port = free_port()
        self.ports: dict[str, int] = dict(extra_ports or {})
        self.args = [
            *args,
            "--http-port", str(self.http_port),
            "--grpc-port", str(self.grpc_port),
            "--metrics-port", str(self.metrics_port),
            "--parallel-workers", str(workers),
        ]
        self.env = {**os.environ, **(env or {})}
        self.cwd = cwd
        self.ready_path = ready_path
        self.proc: subprocess.Popen[str] | None = None
        self.log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, timeout: float = 90.0) -> ServerProcess:
        import tempfile

        fd, name = tempfile.mkstemp(prefix="servekit-", suffix=".log")
        log = os.fdopen(fd, "w")
        self.log_path = Path(name)
        self.proc = subprocess.Popen(
            [*SERVEKIT, *self.args], stdout=log, stderr=subprocess.STDOUT, text=True,
            env=self.env, cwd=self.cwd, start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"servekit exited with {self.proc.returncode}:\n{self.log()}")
            if "servekit ready" in self.log():
                try:
                    if requests.get(self.url + self.ready_path, timeout=2).status_code < 500:
                        return self
                except requests.RequestException:
                    pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"servekit did not become ready:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
