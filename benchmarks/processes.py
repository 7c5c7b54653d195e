"""Starting and stopping the servers under test, waiting for readiness, and
measuring the memory of a whole process tree from /proc."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Memory:
    """Memory of a process and all its descendants, in MB."""

    rss_mb: float
    pss_mb: float | None  # proportional share: fair to forked workers sharing pages
    processes: int


@dataclass
class Server:
    """One server under test, started as its own process group."""

    name: str
    command: list[str]
    cwd: Path
    log_path: Path
    http_port: int
    models: list[str]
    env: dict[str, str] = field(default_factory=dict)
    ready_paths: list[str] | None = None  # GET paths that answer 200 when ready; V2's by default
    proc: subprocess.Popen[bytes] | None = None
    ready_s: float | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, timeout: float = 180.0) -> float:
        """Start the server; return the seconds until every model answers ready."""
        wait_port_free(self.http_port)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            started = time.perf_counter()
            self.proc = subprocess.Popen(self.command, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT,
                                         env={**os.environ, **self.env}, start_new_session=True)
        paths = self.ready_paths or ["/v2/health/ready", *(f"/v2/models/{m}/ready" for m in self.models)]
        deadline = started + timeout
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; log:\n{self.log_tail()}")
            if all(http_ok(self.url + p) for p in paths):
                self.ready_s = time.perf_counter() - started
                return self.ready_s
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} was not ready after {timeout:.0f} s; log:\n{self.log_tail()}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def memory(self) -> Memory:
        assert self.proc is not None
        return tree_memory(self.proc.pid)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        # some servers start helpers in sessions of their own (Ray's daemons, Triton's binary):
        # remember the whole tree and end whatever of it outlives the process group
        tree = descendants(self.proc.pid)[1:]
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        # forked workers may outlive their parent for a moment
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        for pid in tree:
            while _running(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _running(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return bool(answer.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def wait_port_free(port: int, timeout: float = 30.0) -> None:
    """Wait until nothing accepts connections on the port (the last server is gone)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) != 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"port {port} is still in use; stop whatever listens there")


def _running(pid: int) -> bool:
    """True while ``pid`` is a live process (not gone, not a zombie waiting for its parent)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # the command name may hold spaces and parentheses: split after the last ')'
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo.extend(children.get(current, []))
    return out


def tree_memory(pid: int) -> Memory:
    rss = pss = 0
    has_pss = True
    count = 0
    for p in descendants(pid):
        try:
            rollup = Path(f"/proc/{p}/smaps_rollup").read_text()
        except OSError:
            has_pss = False
            try:
                status = Path(f"/proc/{p}/status").read_text()
            except OSError:
                continue
            rss += _kb(status, "VmRSS:")
            count += 1
            continue
        rss += _kb(rollup, "Rss:")
        pss += _kb(rollup, "Pss:")
        count += 1
    return Memory(round(rss / 1024, 1), round(pss / 1024, 1) if has_pss else None, count)


def _kb(text: str, key: str) -> int:
    for line in text.splitlines():
        if line.startswith(key):
            return int(line.split()[1])
    return 0


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class CpuSample:
    """CPU seconds so far: the whole machine (busy), one process tree, and us with our children."""

    machine_s: float
    tree_s: float
    ours_s: float

    @staticmethod
    def take(pid: int) -> CpuSample:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        # user nice system idle iowait irq softirq steal: everything but idle and iowait is busy
        values = [int(v) for v in fields[:8]]
        busy = sum(values) - values[3] - values[4]
        tree = 0
        for p in descendants(pid):
            try:
                stat = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            tree += int(stat[11]) + int(stat[12])  # utime, stime
        me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        ours = me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime
        return CpuSample(busy / CLOCK_TICKS, tree / CLOCK_TICKS, ours)


def other_load(before: CpuSample, after: CpuSample, seconds: float) -> float:
    """Cores used by processes that are neither the server nor the load generator:
    the noise other work on the machine added to a measurement."""
    other = (after.machine_s - before.machine_s) - (after.tree_s - before.tree_s) - (after.ours_s - before.ours_s)
    return round(max(0.0, other) / seconds, 2)
