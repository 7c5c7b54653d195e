"""Starting real ``servekit`` processes on free ports for end-to-end tests."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
SERVEKIT = [sys.executable, "-m", "servekit"]


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port nobody listens on, never the same twice in a session, and below
    the kernel's ephemeral range so that clients' outgoing connections cannot
    take it between this call and the server binding it."""
    low, high = 20000, 32000
    try:
        low_ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
        high = min(high, low_ephemeral - 1)
    except (OSError, ValueError, IndexError):
        pass
    for _ in range(1000):
        port = random.randint(low, high)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError("no free port found")


class ServerProcess:
    """``servekit serve ARGS`` on free ports; ``url`` is the main HTTP address
    (``scheme="https"`` for a TLS server, whose readiness is checked with
    ``verify``: a CA file, or False; and ``cert``, a client certificate and key)."""

    def __init__(self, args: list[str], *, workers: int = 1, env: dict[str, str] | None = None,
                 cwd: str | Path | None = None, ready_path: str = "/v2/health/live",
                 extra_ports: dict[str, int] | None = None, scheme: str = "http",
                 verify: str | bool = True, cert: tuple[str, str] | None = None,
                 prefix: list[str] | None = None) -> None:
        self.prefix = prefix or []  # a command the server runs under (strace ...)
        self.scheme = scheme
        self.verify = verify
        self.cert = cert
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
        return f"{self.scheme}://127.0.0.1:{self.http_port}"

    def start(self, timeout: float = 90.0) -> ServerProcess:
        import tempfile

        fd, name = tempfile.mkstemp(prefix="servekit-", suffix=".log")
        log = os.fdopen(fd, "w")
        self.log_path = Path(name)
        self.proc = subprocess.Popen(
            [*self.prefix, *SERVEKIT, *self.args], stdout=log, stderr=subprocess.STDOUT, text=True,
            env=self.env, cwd=self.cwd, start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"servekit exited with {self.proc.returncode}:\n{self.log()}")
            if "servekit ready" in self.log():
                try:
                    if requests.get(self.url + self.ready_path, timeout=2, verify=self.verify,
                                    cert=self.cert).status_code < 500:
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


def serve_in_thread(app: Any, max_body: int) -> Iterator[int]:
    """servekit's HTTP server with ``app``, in this process on a thread of its
    own, on a free port (yielded) until the generator is closed."""
    from servekit.server.http_server import HttpServer

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.setblocking(False)
    started = threading.Event()
    holder: dict[str, HttpServer] = {}
    loop = asyncio.new_event_loop()

    async def main() -> None:
        holder["server"] = HttpServer(app, max_body=max_body)
        started.set()
        await holder["server"].serve([sock])

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    started.wait(5)
    yield sock.getsockname()[1]
    loop.call_soon_threadsafe(holder["server"].stop)
    thread.join(10)
