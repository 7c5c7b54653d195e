"""A private Ray cluster on this machine, for tests and benchmarks: ``ray
start --head --block`` on 127.0.0.1 only (Ray's single-machine mode), every
port a free one, its own temporary folder and its own token, so that it
meets no other Ray cluster of the machine. :meth:`LocalCluster.stop` signals
the process group it started (``ray stop`` would stop every Ray cluster of
the machine, other people's too).

    with LocalCluster(num_cpus=2) as cluster:
        subprocess.run([..., "servekit", "serve", "--engine", "ray", ...], env=cluster.env)
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

WORKER_PORTS = 64


def free_port() -> int:
    """A port nobody listens on, below the kernel's ephemeral range (where no
    outgoing connection takes it before Ray binds it)."""
    low, high = 20000, 32000
    with contextlib.suppress(OSError, ValueError, IndexError):
        high = min(high, int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0]) - 1)
    for _ in range(1000):
        port = random.randint(low, high - WORKER_PORTS)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


def _free_block(size: int) -> int:
    """The first of ``size`` consecutive ports nobody listens on now."""
    for _ in range(200):
        base = free_port()
        free = True
        for port in range(base + 1, base + size):
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    free = False
                    break
        if free:
            return base
    raise RuntimeError(f"no {size} consecutive free ports for Ray's workers")


class LocalCluster:
    """One Ray head node with ``num_cpus`` CPUs; :attr:`env` holds the
    variables a client process (``ray.init``, ``servekit serve --engine ray``)
    needs to reach it."""

    def __init__(self, num_cpus: int = 2, object_store_mb: int = 100, ray: str | None = None) -> None:
        self.num_cpus = num_cpus
        self.object_store_mb = object_store_mb
        self.ray = ray or str(Path(sys.executable).with_name("ray"))
        self.temp: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.metrics_port = 0
        self.env: dict[str, str] = {}

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 180.0) -> LocalCluster:
        self.temp = temp = Path(tempfile.mkdtemp(prefix="skray", dir="/tmp"))  # short: Ray's socket paths
        token = temp / "token"
        token.write_text(secrets.token_hex(32))
        token.chmod(0o600)
        # Ray refuses a port used twice: every single port outside the workers' block, none repeated
        workers = _free_block(WORKER_PORTS)
        taken = set(range(workers, workers + WORKER_PORTS))

        def pick() -> int:
            while True:
                port = free_port()
                if port not in taken:
                    taken.add(port)
                    return port

        self.port, self.metrics_port = pick(), pick()
        self.env = {
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # loopback addresses only, on Linux too
            "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token),  # not ~/.ray's shared token
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_ADDRESS": self.address,
        }
        flags: dict[str, int] = {
            "--port": self.port, "--node-manager-port": pick(), "--object-manager-port": pick(),
            "--ray-client-server-port": pick(), "--dashboard-agent-listen-port": pick(),
            "--dashboard-agent-grpc-port": pick(), "--runtime-env-agent-port": pick(),
            "--metrics-export-port": self.metrics_port, "--min-worker-port": workers,
            "--max-worker-port": workers + WORKER_PORTS - 1,
        }
        command = [
            self.ray, "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
            "--num-cpus", str(self.num_cpus), "--include-dashboard=false", "--disable-usage-stats",
            "--object-store-memory", str(self.object_store_mb << 20), "--temp-dir", str(temp),
            *(str(part) for pair in flags.items() for part in pair),
        ]
        log_path = temp / "ray-start.log"
        environment = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        environment.update({k: v for k, v in self.env.items() if k != "RAY_ADDRESS"})
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment,
                                            start_new_session=True)
        deadline = time.monotonic() + timeout
        while b"block forever" not in log_path.read_bytes():
            if self.process.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-3000:]
                self.stop()
                raise RuntimeError(f"ray start did not come up:\n{tail}")
            time.sleep(0.5)
        return self

    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self) -> None:
        """SIGTERM to the process group (``ray start --block`` stops what it
        started), SIGKILL to what is left after 30 s; the folder goes."""
        process = self.process
        if process is not None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=30)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                pass
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            self.process = None
        if self.temp is not None:
            shutil.rmtree(self.temp, ignore_errors=True)
            self.temp = None

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


__all__ = ["LocalCluster", "free_port"]
