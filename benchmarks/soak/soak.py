"""Soak run: a real servekit server with 2 workers under mixed load, live
changes and worker kills for a fixed time, then a kill -9 of its supervisor.

    .venv/bin/python benchmarks/soak/soak.py [--seconds 180] [--kill-every 30]

Everything is local: models are trained offline from iris into a temporary
folder (benchmarks/soak/models.py), the server listens on free 127.0.0.1
ports, and all traffic goes there. While it runs, at once:

- load (benchmarks/soak/clients.py, in 4 spawned processes): V2 REST JSON and
  binary tensors, V2 gRPC (tritonclient), TF Serving REST (labels, versions,
  latest), /predict and /predict/<name> (Flask form), Seldon's form on
  /predict and /api/v1.0/predictions; slow clients (a body, sometimes the
  head, sent in pieces), a stalled client (half a body: 408 expected) and
  clients that send and leave before the answer;
- changes: V2 repository unload/load of iris-lr (REST and gRPC in turn), edits
  of the TF Serving config file (labels flipped, an entry added and removed,
  now and then a broken file first), version folders dropped into and removed
  from a base path (including a rollback: the newest removed);
- a worker (a child of the supervisor) stopped and killed with SIGKILL every
  ``--kill-every`` seconds, worker 0 (the one that polls the sources) and the
  others in turn; a kill of worker 0 is followed at once by a config edit and
  a quiet period (no other change, which would carry it anyway).

Every answer is checked against the model's own prediction, and against the
timeline of changes: a request sent after a repository call answered must see
its effect on every worker; ``--change-grace`` seconds after a config edit or
folder change, TF Serving answers must follow it. A request that fails at the
connection level is explained by a kill only when its connection was held by
(or queued at) the killed worker when it was killed (read from /proc/net/tcp
while the worker was stopped), or was opened while it was stopped and reset at
the kill; gRPC calls, whose connections the client does not show, within a
budget per gRPC connection the worker held.

Then two checks: kill -9 of the supervisor (are its workers gone within
seconds?), and, on a fresh server, a hung worker (stopped) killed while a
change relayed to it is still unread (must the supervisor survive it?).

Exit status 1 on: a lost request (no answer, refused, reset) not explained by
a kill; any 5xx; a wrong answer; a change not seen where it must be; a worker
not replaced; the server dying; PSS of the server's process tree growing more
than ``--max-memory-growth`` over the warmed-up start. Workers that outlive a
killed supervisor are reported (a known bug) and fail the run only with
``--fail-on-orphans``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import multiprocessing
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import clients
import procfs
from clients import CONNECTION_ERRORS, Http, Record
from models import ROWS, Expected, config_text, make_all, write_version

LOAD_GROUPS = ("v2", "grpc", "tfs-predict", "edge")
READY_LINE = "servekit ready with"


# -- ports and the server process ----------------------------------------------------------
_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A free 127.0.0.1 port below the ephemeral range (as tests/servers.py picks them)."""
    low, high = 20000, 32000
    with contextlib.suppress(OSError, ValueError, IndexError):
        high = min(high, int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0]) - 1)
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


class Server:
    """``servekit serve`` of the soak's repository plus TF Serving's config file."""

    def __init__(self, root: Path, workers: int, log_name: str = "server.log") -> None:
        self.root = root
        self.workers = workers
        self.ports = {name: free_port() for name in ("http", "grpc", "metrics", "tf_rest", "tf_grpc")}
        self.log_path = root / log_name
        self.command = [
            sys.executable, "-m", "servekit", "serve", str(root / "repo"),
            "--http-port", str(self.ports["http"]), "--grpc-port", str(self.ports["grpc"]),
            "--metrics-port", str(self.ports["metrics"]),
            f"--rest_api_port={self.ports['tf_rest']}", f"--port={self.ports['tf_grpc']}",
            "--parallel-workers", str(workers),
            f"--model_config_file={root / 'models.conf'}", "--model_config_file_poll_wait_seconds=1",
            "--file_system_poll_wait_seconds=1", "--default-model", "iris-rf",
        ]
        self.proc: subprocess.Popen[bytes] | None = None
        self.seen_workers: set[int] = set()  # every worker pid ever seen: cleaned up at the end

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def ready_count(self) -> int:
        return self.log().count(READY_LINE)

    def start(self, timeout: float = 120.0) -> float:
        started = time.monotonic()
        with self.log_path.open("wb") as log:
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            self.proc = subprocess.Popen(self.command, cwd=self.root, stdout=log, stderr=subprocess.STDOUT,
                                         env=env, start_new_session=True)
        for _ in range(int(timeout / 0.1)):
            if self.proc.poll() is not None:
                raise RuntimeError(f"servekit exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            if self.ready_count() and http_status(self.ports["http"], "GET", "/v2/health/ready") == "200" \
                    and http_status(self.ports["tf_rest"], "GET", "/v1/models/tf-static") == "200":
                self.workers_now()
                return time.monotonic() - started
            time.sleep(0.1)
        raise RuntimeError(f"servekit was not ready after {timeout:.0f} s:\n{self.log()[-4000:]}")

    def workers_now(self) -> list[int]:
        pids = procfs.children(self.pid)
        self.seen_workers.update(pids)
        return pids

    def tree(self) -> list[int]:
        return procfs.tree(self.pid)

    def cleanup(self) -> None:
        """Stop everything this run started: the supervisor (and its process group while
        it leads it) and any worker seen that is still in its group."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=15)
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        for pid in self.seen_workers:  # only ours: a pid may have been reused since
            if procfs.alive(pid) and procfs.process_group(pid) == self.proc.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)


def http_status(port: int, method: str, path: str, body: bytes | None = None, timeout: float = 5.0,
                headers: dict[str, str] | None = None) -> str:
    h = Http(port, timeout)
    try:
        return h.call(method, path, body, headers)[2]
    finally:
        h.close()


# -- the timeline of kills and changes ---------------------------------------------------
@dataclass
class Kill:
    index: int
    pid: int
    t_stop: float
    t_kill: float
    connections: set[tuple[int, int]]  # (server port, client port) held or queued at the kill
    grpc_connections: int
    t_snapshot: float = 0.0
    logged_index: int | None = None
    t_ready: float | None = None
    new_pid: int | None = None
    grpc_budget: int = 0  # failed gRPC calls a kill may explain: 2 per gRPC connection it held
    reconnect_budget: int = 0  # and calls failed fast while such a channel backs off
    explained: collections.Counter[str] = field(default_factory=collections.Counter)


@dataclass
class RepoCall:
    action: str  # load | unload
    transport: str  # rest | grpc
    t_start: float
    t_done: float
    status: str
    loaded_after: bool | None  # None: the call failed, the state is unknown until the next one


@dataclass
class Timeline:
    t0: float = 0.0
    kills: list[Kill] = field(default_factory=list)
    repo: list[RepoCall] = field(default_factory=list)
    config: list[tuple[float, tuple[bool, bool]]] = field(default_factory=list)  # good writes
    broken_configs: list[float] = field(default_factory=list)
    folders: list[tuple[float, str, int, tuple[int, ...]]] = field(default_factory=list)  # t, action, version, after
    visible: dict[str, list[float]] = field(default_factory=lambda: collections.defaultdict(list))
    problems: list[str] = field(default_factory=list)  # failures found by the changers themselves
    records: list[Record] = field(default_factory=list)  # the changers' own calls and checks
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, record: Record) -> None:
        with self.lock:
            self.records.append(record)

    def problem(self, text: str) -> None:
        with self.lock:
            self.problems.append(f"[{time.monotonic() - self.t0:6.1f} s] {text}")


INITIAL_CONFIG = (False, True)  # (labels flipped, tf-toggle listed), as models.make_all writes it
INITIAL_FOLDERS = (1, 2)


def served_versions(folders: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(sorted(folders)[-2:])  # tf-rolling's policy: latest 2


# -- the soak run -------------------------------------------------------------------------
class Soak:
    def __init__(self, args: argparse.Namespace, root: Path, server: Server) -> None:
        self.args = args
        self.root = root
        self.server = server
        self.ports = server.ports
        self.server_ports = set(server.ports.values())
        self.timeline = Timeline()
        self.stop = threading.Event()
        self.config_lock = threading.Lock()
        self.quiet_until = 0.0  # config and folder changers wait until then
        self.server_died: float | None = None
        self.connections: list[tuple[float, dict[int, int]]] = []  # per worker, sampled
        self.config_edits = 0
        self.index_of: dict[int, int] = {}  # worker pid -> index
        self.memory: list[tuple[float, list[procfs.ProcessMemory]]] = []
        self.expected = Expected(root)
        self.rng = random.Random(args.seed)

    # -- helpers --------------------------------------------------------------------------
    def now(self) -> float:
        return time.monotonic() - self.timeline.t0

    def say(self, text: str) -> None:
        print(f"[{self.now():6.1f} s] {text}", flush=True)

    def sample_memory(self) -> list[procfs.ProcessMemory]:
        at = self.now()
        sample = procfs.memory(self.server.tree())
        self.memory.append((at, sample))
        held = {pid: len(procfs.connections_of(pid, self.server_ports)[0]) for pid in self.server.workers_now()}
        self.connections.append((at, held))
        return sample

    def fresh_checks(self, what: str, n: int, probe: Any) -> list[Any]:
        """``n`` answers on fresh connections (so both workers are asked)."""
        return [probe(what) for _ in range(n)]

    # -- the worker killer ----------------------------------------------------------------
    def assign_indexes(self) -> None:
        pids = self.server.workers_now()
        if not self.index_of:  # forked in index order
            self.index_of = {pid: i for i, pid in enumerate(sorted(pids))}

    def kill_worker(self, index: int) -> None:
        """SIGSTOP, read its connections, SIGKILL, wait for the replacement."""
        self.assign_indexes()
        live = self.server.workers_now()
        pid = next((p for p, i in self.index_of.items() if i == index and p in live), None)
        if pid is None:
            self.timeline.problem(f"no live worker with index {index} to kill (workers {live})")
            return
        ready_before = self.server.ready_count()
        t_stop = time.monotonic()
        os.kill(pid, signal.SIGSTOP)
        time.sleep(0.05)  # the other worker drains its accept queue; new connections queue at the stopped one
        t_snapshot = time.monotonic()
        held, queued = procfs.connections_of(pid, self.server_ports)
        t_kill = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        connections = held | queued
        grpc = sum(1 for port, _ in connections if port == self.ports["grpc"])
        kill = Kill(index, pid, t_stop, t_kill, connections, grpc, t_snapshot=t_snapshot, grpc_budget=2 * grpc,
                    reconnect_budget=30 * grpc)
        self.timeline.kills.append(kill)
        self.say(f"killed worker {index} (pid {pid}): {len(held)} connections held, {len(queued)} queued, "
                 f"{grpc} of them gRPC (stopped {t_kill - t_stop:.2f} s, snapshot {t_kill - t_snapshot:.3f} s)")
        edit = None
        if index == 0:
            # a source change while the poller is down, then a quiet period: no other change
            # (a repository call or a folder change makes the poller send the whole state
            # anyway), so only the poller's own view of the sources can carry this one
            self.quiet_until = time.monotonic() + self.args.change_grace + 10
            edit = self.config_edit(" (right after killing worker 0, the poller)", toggle_only=True)
        for _ in range(600):
            if self.server.ready_count() > ready_before:
                kill.t_ready = time.monotonic()
                break
            if self.server.proc is not None and self.server.proc.poll() is not None:
                break
            time.sleep(0.1)
        match = re.search(rf"Worker (\d+) \(pid {pid}\) died", self.server.log())
        kill.logged_index = int(match.group(1)) if match else None
        new = [p for p in self.server.workers_now() if p not in self.index_of]
        if len(new) == 1:
            kill.new_pid = new[0]
            self.index_of[new[0]] = kill.logged_index if kill.logged_index is not None else index
        self.index_of.pop(pid, None)
        if kill.t_ready is None:
            self.timeline.problem(f"worker {index} (pid {pid}) was not replaced within 60 s")
        else:
            self.say(f"worker {index} replaced by pid {kill.new_pid}, serving after {kill.t_ready - t_kill:.2f} s")
        if kill.logged_index is not None and kill.logged_index != index:
            self.say(f"(the supervisor calls pid {pid} worker {kill.logged_index})")
        if edit is not None and self.server.proc is not None and self.server.proc.poll() is None:
            self.wait_visible("config edit right after a kill of worker 0 seen after", edit[1], self.probe_config,
                              edit[0])

    def killer(self) -> None:
        every = self.args.kill_every
        if every <= 0:
            return
        end = self.timeline.t0 + self.args.seconds - 10
        kills = sum(1 for n in range(10_000) if self.timeline.t0 + every * (n + 0.5) <= end)
        for n in range(kills):
            when = self.timeline.t0 + every * (n + 0.5)
            if self.stop.wait(max(0.0, when - time.monotonic())):
                return
            if self.server.proc is not None and self.server.proc.poll() is not None:
                return
            self.kill_worker(n % self.args.workers)

    # -- V2 repository: unload/load of iris-lr -----------------------------------------
    def repo_call(self, action: str, transport: str) -> RepoCall:
        started = time.monotonic()
        if transport == "rest":
            h = Http(self.ports["http"], 120.0)
            call = h.call("POST", f"/v2/repository/models/iris-lr/{action}", b"{}")
            h.close()
            status, detail = call[2], call[3][:160].decode(errors="replace") if call[2] != "200" else ""
            self.timeline.add((call[0], call[1], "repo-rest", f"iris-lr:{action}", status, detail,
                               h.port, h.client_port, h.connected_at))
        else:
            import tritonclient.grpc as grpcclient
            from tritonclient.utils import InferenceServerException

            client = grpcclient.InferenceServerClient(f"127.0.0.1:{self.ports['grpc']}")
            try:
                (client.load_model if action == "load" else client.unload_model)("iris-lr", client_timeout=120)
                status, detail = "200", ""
            except InferenceServerException as exc:
                status, detail = clients.grpc_status(exc), (exc.message() or "")[:160]
            finally:
                client.close()
            self.timeline.add((started, time.monotonic(), "repo-grpc", f"iris-lr:{action}", status, detail,
                               self.ports["grpc"], 0, 0.0))
        done = time.monotonic()
        ok = status == "200"
        record = RepoCall(action, transport, started, done, status, (action == "load") if ok else None)
        self.timeline.repo.append(record)
        if not ok:
            self.say(f"repository {action} over {transport}: {status} {detail}")
        return record

    def probe_iris_lr(self, _: str, record: bool = True) -> str:
        h = Http(self.ports["http"], 30.0)
        rows = [0, 60, 120]
        body = json.dumps({"inputs": [{"name": "predict", "shape": [3, 4], "datatype": "FP64",
                                       "data": ROWS[rows].ravel().tolist()}]}).encode()
        call = h.call("POST", "/v2/models/iris-lr/infer", body, {"Content-Type": "application/json"})
        h.close()
        detail = ""
        if call[2] == "200":
            detail = clients.compare(json.loads(call[3])["outputs"][0]["data"], self.expected.classes["iris-lr"][rows])
        if record:
            self.timeline.add((call[0], call[1], "check", "iris-lr", call[2], detail, h.port, h.client_port,
                               h.connected_at))
        return call[2]

    def repository_changer(self) -> None:
        interval = self.args.repo_every
        for n in range(100_000):
            if self.stop.wait(interval * self.rng.uniform(0.7, 1.3)) or not self.wait_quiet():
                return
            action = "unload" if n % 2 == 0 else "load"
            transport = "rest" if (n // 2) % 2 == 0 else "grpc"
            call = self.repo_call(action, transport)
            self.timeline.visible[f"repository {action} ({transport}) answered after"].append(
                call.t_done - call.t_start)
            if call.loaded_after is None:
                continue
            self.fresh_checks("iris-lr", 6, self.probe_iris_lr)

    # -- TF Serving: config file edits ------------------------------------------------------
    def probe_config(self, _: str) -> tuple[bool, bool] | None:
        """(labels flipped, tf-toggle served) as one fresh connection sees it."""
        port = self.ports["tf_rest"]
        rows = [5, 55, 105]
        body = json.dumps({"instances": ROWS[rows].tolist()}).encode()
        seen: list[str] = []
        for target, path in (("tf-static@stable", "/v1/models/tf-static/labels/stable:predict"),
                             ("tf-toggle", "/v1/models/tf-toggle:predict")):
            h = Http(port, 30.0)
            call = h.call("POST", path, body, {"Content-Type": "application/json"})
            h.close()
            detail = ""
            if call[2] == "200":
                version = self.expected.which_version(rows, json.loads(call[3])["predictions"], range(1, 200))
                detail = f"v{version}" if version is not None else "wrong"
            self.timeline.add((call[0], call[1], "check", target, call[2], detail, port, h.client_port,
                               h.connected_at))
            seen.append(detail if call[2] == "200" else call[2])
        if seen[0] not in ("v1", "v2") or seen[1] not in ("v1", "404"):
            return None
        return seen[0] == "v2", seen[1] == "v1"

    def wait_visible(self, what: str, want: Any, probe: Any, since: float, timeout: float = 30.0) -> None:
        """Until 6 probes in a row on fresh connections see ``want``."""
        streak = 0
        for _ in range(int(timeout / 0.05)):
            if self.stop.is_set() and time.monotonic() - since > 5:
                return
            streak = streak + 1 if probe(what) == want else 0
            if streak >= 6:
                took = time.monotonic() - since
                self.timeline.visible[what].append(took)
                if took > self.args.change_grace:
                    self.timeline.problem(f"{what}: {want} seen on every worker only after {took:.1f} s "
                                          f"(grace {self.args.change_grace:.0f} s)")
                return
            if time.monotonic() - since > timeout:
                break
            time.sleep(0.05)
        self.timeline.problem(f"{what}: {want} not seen on every worker within {timeout:.0f} s")

    def config_edit(self, why: str = "", toggle_only: bool = False) -> tuple[float, tuple[bool, bool]]:
        """Write the next config state in place (as an editor does): labels flipped and
        tf-toggle added or removed in turn; when it was written."""
        with self.config_lock:
            flipped, toggle = self.timeline.config[-1][1] if self.timeline.config else INITIAL_CONFIG
            if toggle_only or self.config_edits % 2:
                state = (flipped, not toggle)
            else:
                state = (not flipped, toggle)
            self.config_edits += 1
            (self.root / "models.conf").write_text(config_text(self.root, flipped=state[0], toggle=state[1]))
            written = time.monotonic()
            self.timeline.config.append((written, state))
        self.say(f"config edit: labels {'flipped' if state[0] else 'as written'}, tf-toggle "
                 f"{'listed' if state[1] else 'removed'}{why}")
        return written, state

    def wait_quiet(self) -> bool:
        """Wait out a quiet period (after a kill of worker 0); False once the run stops."""
        return not self.stop.wait(max(0.0, self.quiet_until - time.monotonic()))

    def config_changer(self) -> None:
        for n in range(100_000):
            if self.stop.wait(self.args.config_every * self.rng.uniform(0.8, 1.2)) or not self.wait_quiet():
                return
            if n % 4 == 3:  # a broken file first: the served models must stay as they are
                with self.config_lock:
                    (self.root / "models.conf").write_text("model_config_list { config { name: 'tf-static' base_path: ")
                    self.timeline.broken_configs.append(time.monotonic())
                self.say("config edit: a broken file (for 3 s)")
                if self.stop.wait(3.0):
                    return
            written, state = self.config_edit()
            self.wait_visible("config edit seen after", state, self.probe_config, written)

    # -- TF Serving: version folders ------------------------------------------------------
    def probe_rolling(self, _: str) -> tuple[int, ...] | None:
        h = Http(self.ports["tf_rest"], 30.0)
        call = h.call("GET", "/v1/models/tf-rolling")
        h.close()
        versions: tuple[int, ...] | None = None
        if call[2] == "200":
            statuses = json.loads(call[3])["model_version_status"]
            versions = tuple(sorted(int(s["version"]) for s in statuses if s.get("state") == "AVAILABLE"))
        self.timeline.add((call[0], call[1], "check", "tf-rolling:status", call[2],
                           ",".join(map(str, versions or ())), h.port, h.client_port, h.connected_at))
        return versions

    def folder_changer(self) -> None:
        base = self.root / "tfs" / "rolling"
        folders = list(INITIAL_FOLDERS)
        newest = max(folders)
        for n in range(100_000):
            if self.stop.wait(self.args.folder_every * self.rng.uniform(0.8, 1.2)) or not self.wait_quiet():
                return
            action = ("add", "remove-oldest", "add", "rollback")[n % 4]
            if action != "add" and len(folders) <= 2:
                action = "add"
            if action == "add":
                newest += 1
                version = newest
                write_version(base, version)
                folders.append(version)
            elif action == "remove-oldest":
                version = min(folders)
                shutil.rmtree(base / str(version))
                folders.remove(version)
            else:
                version = max(folders)
                shutil.rmtree(base / str(version))
                folders.remove(version)
            changed = time.monotonic()
            self.timeline.folders.append((changed, action, version, tuple(sorted(folders))))
            want = served_versions(tuple(folders))
            self.say(f"version folder {action} {version}: folders {sorted(folders)}, served should be {list(want)}")
            self.wait_visible("version folder change seen after", want, self.probe_rolling, changed)

    # -- memory -----------------------------------------------------------------------
    def memory_sampler(self) -> None:
        for _ in range(100_000):
            if self.stop.wait(5.0):
                return
            self.sample_memory()

    # -- the run --------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        args = self.args
        self.timeline.t0 = time.monotonic()
        ready_memory = self.sample_memory()
        self.assign_indexes()
        out_dir = self.root / "records"
        out_dir.mkdir()
        cfg = {"root": str(self.root), "seed": args.seed, "ports": self.ports, "scale": args.clients}
        context = multiprocessing.get_context("spawn")
        ended_early, go, ready = context.Event(), context.Event(), context.Queue()
        shared_deadline = context.Value("d", 0.0)
        processes = [context.Process(target=clients.run_group,
                                     args=(kind, cfg, str(out_dir / f"{kind}.pickle"),
                                           (ready, go, shared_deadline), ended_early),
                                     name=f"soak-{kind}") for kind in LOAD_GROUPS]
        for process in processes:
            process.start()
        import queue

        for _ in LOAD_GROUPS:  # every load process has imported its libraries
            try:
                ready.get(timeout=180)
            except queue.Empty:
                go.set()
                raise RuntimeError("the load processes did not start within 180 s") from None
        self.timeline.t0 = time.monotonic()  # the run starts now
        deadline = self.timeline.t0 + args.seconds
        shared_deadline.value = deadline
        go.set()
        warm_at = self.timeline.t0 + min(10.0, 0.1 * args.seconds)  # before the first kill
        threads = [threading.Thread(target=target, name=target.__name__, daemon=True) for target in
                   (self.killer, self.repository_changer, self.config_changer, self.folder_changer,
                    self.memory_sampler)]
        for thread in threads:
            thread.start()
        self.say(f"load running for {args.seconds:.0f} s (server pid {self.server.pid}, workers "
                 f"{self.server.workers_now()}, ports {self.ports})")
        time.sleep(max(0.0, warm_at - time.monotonic()))
        warm_memory = self.sample_memory()
        for _ in range(100_000):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            if self.server.proc is not None and self.server.proc.poll() is not None:
                self.server_died = self.now()
                self.timeline.problem(f"the supervisor exited with {self.server.proc.returncode} during the run; "
                                      "the server is gone (its last traceback is below)")
                self.say("the supervisor died: stopping the run")
                ended_early.set()
                break
            time.sleep(min(1.0, remaining))
        self.stop.set()
        for thread in threads:
            thread.join(timeout=90)
            if thread.is_alive():
                self.timeline.problem(f"changer thread {thread.name} did not finish")
        hung: list[str] = []
        crashes: list[str] = []
        records: list[Record] = list(self.timeline.records)
        for process, kind in zip(processes, LOAD_GROUPS, strict=True):
            process.join(timeout=max(0.0, deadline - time.monotonic()) + clients.TIMEOUT + 120)
            if process.is_alive():
                process.kill()
                process.join(timeout=10)
                hung.append(kind)
                continue
            path = out_dir / f"{kind}.pickle"
            if not path.exists():
                crashes.append(f"load process {kind} exited with {process.exitcode} and no records")
                continue
            import pickle

            result = pickle.loads(path.read_bytes())
            records.extend(result["records"])
            crashes.extend(result["crashes"])
            hung.extend(f"{kind}/{name}" for name in result["hung"])
        self.say("load stopped; final checks")
        time.sleep(3.0)  # connections the clients closed are closed by the server too
        if self.server_died is None:
            end_memory = self.sample_memory()
            sockets = procfs.server_socket_states(self.server.tree(), self.server_ports)
            final = self.final_checks()
            supervisor = self.kill_supervisor()
        else:
            end_memory = next((s for _, s in reversed(self.memory) if s), warm_memory)  # the last before it died
            sockets, final = {}, {}
            survivors: list[int] = []
            for _ in range(100):  # do its workers follow it?
                survivors = [p for p in self.server.seen_workers
                             if procfs.alive(p) and procfs.process_group(p) == self.server.pid]
                if not survivors:
                    break
                time.sleep(0.1)
            supervisor = {"orphans": survivors, "gone_after": None,
                          "skipped": "the supervisor had died already; "
                                     + (f"workers {survivors} outlived it" if survivors else "its workers exited too")}
        return {"records": records, "crashes": crashes, "hung": hung, "ready_memory": ready_memory,
                "warm_memory": warm_memory, "end_memory": end_memory, "sockets": sockets, "final": final,
                "supervisor": supervisor}

    def final_checks(self) -> dict[str, str]:
        out = {}
        body = json.dumps({"inputs": [{"name": "predict", "shape": [1, 4], "datatype": "FP64",
                                       "data": ROWS[0].tolist()}]}).encode()
        for _ in range(4):
            out["V2 iris-rf"] = http_status(self.ports["http"], "POST", "/v2/models/iris-rf/infer", body)
            out["TF Serving tf-static"] = http_status(self.ports["tf_rest"], "GET", "/v1/models/tf-static")
            out["metrics"] = http_status(self.ports["metrics"], "GET", "/metrics")
        return out

    def kill_supervisor(self) -> dict[str, Any]:
        """kill -9 of the supervisor: are its workers gone within seconds?"""
        workers = self.server.workers_now()
        self.say(f"kill -9 of the supervisor (pid {self.server.pid}); workers {workers}")
        assert self.server.proc is not None
        killed = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.server.pid, signal.SIGKILL)
        self.server.proc.wait(timeout=10)
        gone_after = None
        for _ in range(100):
            if not any(procfs.alive(p) for p in workers):
                gone_after = time.monotonic() - killed
                break
            time.sleep(0.1)
        result: dict[str, Any] = {"workers": workers, "gone_after": gone_after}
        orphans = [p for p in workers if procfs.alive(p)]
        result["orphans"] = orphans
        if orphans:
            self.say(f"workers {orphans} still alive {time.monotonic() - killed:.0f} s after the supervisor died")
            result["orphan_ppids"] = {p: int((procfs.stat_fields(p) or ["", "0"])[1]) for p in orphans}
            result["health"] = [http_status(self.ports["http"], "GET", "/v2/health/live") for _ in range(4)]
            body = json.dumps({"inputs": [{"name": "predict", "shape": [1, 4], "datatype": "FP64",
                                           "data": ROWS[0].tolist()}]}).encode()
            result["infer"] = [http_status(self.ports["http"], "POST", "/v2/models/iris-rf/infer", body)
                               for _ in range(4)]
            h = Http(self.ports["http"], 15.0)
            started = time.monotonic()
            call = h.call("POST", "/v2/repository/models/iris-lr/unload", b"{}")
            h.close()
            result["unload"] = (call[2], call[3][:200].decode(errors="replace"), round(time.monotonic() - started, 2))
            result["after_unload"] = [self.probe_iris_lr("x", record=False) for _ in range(6)]
            with socket.socket() as sock:
                result["port_still_taken"] = sock.connect_ex(("127.0.0.1", self.ports["http"])) == 0
        return result


# -- last phase: a hung worker killed with a change pending for it ----------------------------
def hung_worker_check(root: Path, workers: int) -> dict[str, Any]:
    """A fresh server (no load): stop worker 1, edit the config so that worker 0's poller
    applies it and the supervisor relays it to the stopped worker, kill -9 that worker
    with the change unread in its control socket. The supervisor must survive, replace
    the worker, and the change must be served by every worker."""
    server = Server(root, workers, log_name="server-hung-worker.log")
    result: dict[str, Any] = {"log": server.log_path}
    config = root / "models.conf"
    config.write_text(config_text(root, flipped=False, toggle=True))  # the soak may have left a broken one
    try:
        server.start()
        victim = server.workers_now()[1]  # forked second: not the poller
        changed_before = server.log().count("Model config file")
        ready_before = server.ready_count()
        os.kill(victim, signal.SIGSTOP)
        listed = True
        config.write_text(config_text(root, flipped=False, toggle=False))
        for _ in range(200):  # worker 0's poller has applied it (then the supervisor relays it)
            if server.log().count("Model config file") > changed_before:
                break
            time.sleep(0.05)
        time.sleep(1.0)
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        for _ in range(150):
            if server.ready_count() > ready_before or (server.proc is not None and server.proc.poll() is not None):
                break
            time.sleep(0.1)
        alive = server.proc is not None and server.proc.poll() is None
        result["supervisor_survived"] = alive
        result["replaced_after"] = round(time.monotonic() - killed, 2) if server.ready_count() > ready_before else None
        if alive:
            want = "404" if listed else "200"
            seen: list[str] = []
            for _ in range(100):
                seen = [http_status(server.ports["tf_rest"], "GET", "/v1/models/tf-toggle") for _ in range(6)]
                if all(status == want for status in seen):
                    break
                time.sleep(0.1)
            result["change"] = f"tf-toggle {'removed' if listed else 'added'}: 6 fresh connections answer {seen}"
            result["change_seen"] = all(status == want for status in seen)
        else:
            result["traceback"] = (tracebacks(server.log()) or ["(no traceback in the log)"])[-1]
            time.sleep(2.0)
            result["workers_left"] = [p for p in server.seen_workers
                                      if procfs.alive(p) and procfs.process_group(p) == server.pid]
    except RuntimeError as exc:
        result["error"] = str(exc)[:2000]
    finally:
        server.cleanup()
    return result


# -- judging the records ---------------------------------------------------------------
def explain_by_kill(record: Record, kills: list[Kill]) -> str | None:
    """Why a connection-level failure happened, if a kill explains it."""
    t0, t1, proto, _, status, _, server_port, client_port, connected_at = record
    if status == "grpc-unavailable" and "failed to connect" in record[5]:
        for kill in kills:
            # a channel that lost its connection reconnects at once; that attempt can land in the
            # dying worker's accept queue, and the channel then fails calls fast for its backoff (~1 s)
            if kill.t_kill <= t1 <= kill.t_kill + 2.5 and kill.reconnect_budget > 0:
                kill.reconnect_budget -= 1
                why = "gRPC reconnect to the killed worker failed (calls fail fast for the channel's backoff)"
                kill.explained[why] += 1
                return why
        return None
    if status == "grpc-unavailable" or (proto.endswith("grpc") and status in CONNECTION_ERRORS):
        for kill in kills:
            if t0 < kill.t_kill + 2.0 and kill.t_stop <= t1 <= kill.t_kill + 10.0 and kill.grpc_budget > 0:
                kill.grpc_budget -= 1
                kill.explained["gRPC call at the killed worker"] += 1
                return "gRPC call at the killed worker"
        return None
    if status not in CONNECTION_ERRORS or not client_port:
        return None
    for kill in kills:
        if kill.t_snapshot <= connected_at <= kill.t_kill + 0.2 and kill.t_kill <= t1 < kill.t_kill + 1.0:
            # connected after the snapshot, to the stopped worker's accept queue, reset at the kill
            why = "connected while the worker was stopped, reset at the kill"
            kill.explained[why] += 1
            return why
        if (server_port, client_port) not in kill.connections or connected_at > kill.t_kill + 0.5:
            continue
        if t0 < kill.t_kill and t1 >= kill.t_stop:
            why = "in flight at the killed worker"
        elif kill.t_kill <= t0 < kill.t_kill + 60:
            why = "sent on a kept-alive connection to the killed worker"
        else:
            continue
        kill.explained[why] += 1
        return why
    return None


def settled(events: list[tuple[float, Any]], initial: Any, t: float, grace: float) -> tuple[bool, Any]:
    """(True, state) if no event happened in the ``grace`` seconds up to ``t``."""
    state = initial
    for when, value in events:
        if when <= t - grace:
            state = value
        elif when <= t:
            return False, None
    return True, state


def repo_state(calls: list[RepoCall], t0: float, t1: float) -> bool | None:
    """Whether iris-lr is loaded everywhere for the whole of [t0, t1]; None if not one known state."""
    def at(t: float) -> bool | None:
        state: bool | None = True
        for call in calls:
            if t < call.t_start:
                return state
            if call.loaded_after is None:
                state = None
            elif t < call.t_done:
                return None
            else:
                state = call.loaded_after
        return state
    if any(t0 <= call.t_start <= t1 for call in calls):
        return None
    first, last = at(t0), at(t1)
    return first if first == last else None


def judge(record: Record, timeline: Timeline, grace: float) -> str | None:
    """None if the record is as it should be, else what is wrong with it."""
    t0, t1, proto, target, status, detail, *_ = record
    if status == "abandoned":
        return None
    if detail.startswith("wrong"):
        return f"wrong answer ({detail[:100]})"
    if proto == "stalled" and status not in CONNECTION_ERRORS:
        return None if status == "408" else f"stalled body answered {status} instead of 408"
    if status in CONNECTION_ERRORS or status in ("grpc-unavailable", "timeout", "refused") or \
            status.startswith(("other:", "grpc-")):
        why = f"{status} {detail[:80]}".strip()
        return f"lost: {why}"
    if status == "503" and "LOADING" in detail:
        return None  # a model whose only version is still loading is "not ready" (V2, Triton): 503
    if status.startswith("5"):
        return f"{status} {detail[:100]}".strip()
    if proto.startswith("repo-"):
        return None if status == "200" else f"repository call answered {status} {detail[:100]}"
    if target == "iris-lr":
        state = repo_state(timeline.repo, t0, t1)
        if status not in ("200", "404"):
            return f"unexpected {status}"
        if state is True and status == "404":
            return "404 although the last repository call (answered before this request) loaded iris-lr"
        if state is False and status == "200":
            return "200 although the last repository call (answered before this request) unloaded iris-lr"
        return None
    if target == "iris-rf":
        return None if status == "200" else f"unexpected {status}"
    config_ok, config = settled(timeline.config, INITIAL_CONFIG, t0, grace)
    folder_events = [(t, after) for t, _, _, after in timeline.folders]
    folders_ok, folders = settled(folder_events, INITIAL_FOLDERS, t0, grace)
    if target.startswith("tf-static/"):
        want = f"v{target.split('/')[1]}"
        return None if status == "200" and detail == want else f"{status} {detail} (want 200 {want})"
    if target.startswith("tf-static@"):
        if status != "200":
            return f"unexpected {status}"
        if config_ok:
            flipped = config[0]
            stable, canary = (2, 1) if flipped else (1, 2)
            want = f"v{stable if target.endswith('stable') else canary}"
            if detail != want:
                return f"label answered by {detail}, want {want} ({grace:.0f} s after the last config edit)"
        return None
    if target == "tf-toggle":
        if status not in ("200", "404"):
            return f"unexpected {status}"
        if config_ok and (status == "200") != config[1]:
            return (f"{status} although the config {'lists' if config[1] else 'no longer lists'} tf-toggle "
                    f"(edited more than {grace:.0f} s before)")
        return None
    if target.startswith("tf-rolling"):
        served = served_versions(folders) if folders_ok else None
        if target == "tf-rolling:status":
            if status != "200":
                return f"status answered {status}"
            if served is not None and detail != ",".join(map(str, served)):
                return f"status lists versions {detail}, want {list(served)} ({grace:.0f} s after the last folder change)"
            return None
        if target == "tf-rolling@latest":
            if status != "200":
                return f"latest answered {status}"
            if served is not None and detail != f"v{max(served)}":
                return f"latest answered by {detail}, want v{max(served)}"
            return None
        version = int(target.split("/")[1])
        if status not in ("200", "404"):
            return f"unexpected {status}"
        if served is not None and (status == "200") != (version in served):
            return f"version {version} answered {status} while served versions are {list(served)}"
        return None
    return None if status == "200" else f"unexpected {status}"


# -- the report ------------------------------------------------------------------------
def circumstances(record: Record, timeline: Timeline) -> str:
    """When a failed request ran, relative to the kills and changes around it."""
    t0, t1, _, _, _, _, server_port, client_port, connected_at = record
    parts = [f"at {t0 - timeline.t0:.2f}-{t1 - timeline.t0:.2f} s"]
    if client_port:
        parts.append(f"connection {server_port}<-{client_port}")
    for kill in timeline.kills:
        if kill.t_stop - 10 < t1 and t0 < kill.t_kill + 10:
            held = (server_port, client_port) in kill.connections
            parts.append(f"kill of worker {kill.index} at {kill.t_kill - timeline.t0:.2f} s "
                         f"(stopped {kill.t_stop - timeline.t0:.2f} s; connection "
                         f"{'held by it' if held else 'not seen at it'}"
                         + (f", opened at {connected_at - timeline.t0:.2f} s" if connected_at else "") + ")")
    for call in timeline.repo:
        if call.t_start - 2 < t1 and t0 < call.t_done + 2:
            parts.append(f"repository {call.action} over {call.transport} {call.t_start - timeline.t0:.2f}-"
                         f"{call.t_done - timeline.t0:.2f} s ({call.status})")
    for when, state in timeline.config:
        if when - 2 < t1 and t0 < when + 15:
            parts.append(f"config edit {state} at {when - timeline.t0:.2f} s")
    for when, action, version, _ in timeline.folders:
        if when - 2 < t1 and t0 < when + 15:
            parts.append(f"folder {action} {version} at {when - timeline.t0:.2f} s")
    return "; ".join(parts)


def normalise(line: str) -> str:
    line = re.sub(r"^\S+ \S+ \[\S+\] ", "", line)
    line = re.sub(r"\b(pid )?\d+(\.\d+)?\b", "N", line)
    return re.sub(r"'[0-9a-f-]{16,}'", "'ID'", line)[:150]


def log_summary(text: str) -> collections.Counter[str]:
    counts: collections.Counter[str] = collections.Counter()
    for line in text.splitlines():
        if " WARNING - " in line or " ERROR - " in line or " CRITICAL - " in line or line.startswith("Traceback"):
            counts[normalise(line)] += 1
    return counts


def git_state() -> str:
    """The commit of the servekit being run, and whether its src/ had uncommitted changes."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"], cwd=root, capture_output=True,
                               text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown commit"
    return f"{commit or 'unknown commit'}{' with uncommitted changes in src/' if dirty else ''}"


def tracebacks(text: str) -> list[str]:
    """The distinct tracebacks in a log (each up to its exception line)."""
    found: list[str] = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("Traceback"):
            block = [line]
            for follow in lines[i + 1:i + 80]:
                block.append(follow)
                if follow and not follow.startswith((" ", "\t")):
                    break
            trace = "\n".join(block)
            if trace not in found:
                found.append(trace)
    return found


def pss(sample: list[procfs.ProcessMemory]) -> float:
    return sum(p.pss_mb for p in sample)


def report(soak: Soak, result: dict[str, Any], args: argparse.Namespace, ready_s: float) -> tuple[str, list[str]]:
    timeline = soak.timeline
    records: list[Record] = sorted(result["records"], key=lambda r: r[0])
    lines: list[str] = []
    failures: list[str] = []
    out = lines.append

    by_proto: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    explained: collections.Counter[str] = collections.Counter()
    explained_by_proto: collections.Counter[str] = collections.Counter()
    bad: dict[str, list[Record]] = collections.defaultdict(list)
    died_at = None if soak.server_died is None else timeline.t0 + soak.server_died - 2.0
    for record in records:
        by_proto[record[2]][record[4]] += 1
        if died_at is not None and record[1] >= died_at and record[4] not in ("200", "404", "abandoned"):
            bad[f"(all protocols) {record[4]} once the server had died"].append(record)
            continue
        why = judge(record, timeline, args.change_grace)
        if why is None:
            continue
        if why.startswith("lost"):
            because = explain_by_kill(record, timeline.kills)
            if because is not None:
                explained[because] += 1
                explained_by_proto[record[2]] += 1
                continue
        bad[f"{record[2]} {record[3]}: {why}"].append(record)

    total = sum(sum(c.values()) for c in by_proto.values())
    out(f"servekit soak: {args.seconds:.0f} s, {args.workers} workers, server ready in {ready_s:.1f} s, "
        f"kill every {args.kill_every:.0f} s, change grace {args.change_grace:.0f} s; servekit at {git_state()}")
    if soak.server_died is not None:
        out(f"THE SERVER DIED at {soak.server_died:.1f} s (the supervisor exited); the run stopped there")
    out("")
    out(f"requests sent: {total:,} ({total / args.seconds:,.0f}/s)")
    statuses = sorted({s for c in by_proto.values() for s in c}, key=lambda s: (not s.isdigit(), s))
    width = max(len(p) for p in by_proto) if by_proto else 8
    out(f"  {'protocol':<{width}} {'sent':>8} " + " ".join(f"{s:>10}" for s in statuses))
    for proto in sorted(by_proto):
        counts = by_proto[proto]
        out(f"  {proto:<{width}} {sum(counts.values()):>8} " + " ".join(f"{counts.get(s, 0) or '':>10}" for s in statuses))
    all_statuses: collections.Counter[str] = collections.Counter()
    for counts in by_proto.values():
        all_statuses.update(counts)
    out("answers by status: " + ", ".join(f"{s}: {n:,}" for s, n in sorted(all_statuses.items())))
    out("")
    out(f"failures explained by a killed worker: {sum(explained.values())}")
    for why, n in explained.most_common():
        out(f"  {n:6}  {why}")
    if explained_by_proto:
        out("  by protocol: " + ", ".join(f"{p} {n}" for p, n in explained_by_proto.most_common()))
    n_bad = sum(len(v) for v in bad.values())
    out(f"failures not explained by a kill: {n_bad}")
    for key, found in sorted(bad.items(), key=lambda kv: -len(kv[1])):
        out(f"  {len(found):6}  {key}")
        for record in found[:3]:
            out(f"            {circumstances(record, timeline)}")
    if n_bad:
        failures.append(f"{n_bad} failed or wrong requests not explained by a kill")
    out("")

    out(f"worker kills: {len(timeline.kills)}")
    for kill in timeline.kills:
        ready = f"{kill.t_ready - kill.t_kill:.2f} s" if kill.t_ready else "NOT REPLACED"
        out(f"  {kill.t_kill - timeline.t0:6.1f} s  worker {kill.index} pid {kill.pid} "
            f"(supervisor: worker {kill.logged_index}): {len(kill.connections)} connections "
            f"({kill.grpc_connections} gRPC), replacement pid {kill.new_pid} serving after {ready}; "
            f"explained {dict(kill.explained) or 0}")
    out("")
    out("changes:")
    repo_by = collections.Counter(f"{c.action} over {c.transport}: {c.status}" for c in timeline.repo)
    out(f"  V2 repository calls: {len(timeline.repo)} (" + ", ".join(f"{k} x{n}" for k, n in sorted(repo_by.items())) + ")")
    out(f"  config edits: {len(timeline.config)} good, {len(timeline.broken_configs)} broken-then-fixed")
    folder_actions = collections.Counter(a for _, a, _, _ in timeline.folders)
    out(f"  version folders: {dict(folder_actions)}; last folders "
        f"{list(timeline.folders[-1][3]) if timeline.folders else list(INITIAL_FOLDERS)}")
    for what, times in sorted(timeline.visible.items()):
        if times:
            out(f"  {what}: median {sorted(times)[len(times) // 2]:.2f} s, max {max(times):.2f} s (n={len(times)})")
    for problem in timeline.problems:
        out(f"  PROBLEM {problem}")
    failures.extend(timeline.problems)
    out("")

    ready, warm, end = result["ready_memory"], result["warm_memory"], result["end_memory"]
    peak = max((pss(s) for _, s in soak.memory), default=0.0)
    growth = pss(end) / pss(warm) - 1 if pss(warm) else 0.0
    out(f"memory (PSS of the server's process tree, MB): at ready {pss(ready):.1f} ({len(ready)} processes), "
        f"warmed up {pss(warm):.1f}, {'end' if soak.server_died is None else 'last before it died'} {pss(end):.1f} ({growth:+.1%} vs warmed up, bound "
        f"{args.max_memory_growth:+.0%}), peak {peak:.1f}")
    sup = soak.server.pid

    def describe(sample: list[procfs.ProcessMemory]) -> str:
        return ", ".join(f"{'supervisor' if p.pid == sup else 'worker ' + str(p.pid)} {p.pss_mb:.1f} MB/{p.fds} fds"
                         for p in sample)
    out(f"  at ready: {describe(ready)}")
    out(f"  at end:   {describe(end)}")
    if growth > args.max_memory_growth:
        failures.append(f"memory grew {growth:+.1%} (bound {args.max_memory_growth:+.0%})")
    spread = [f"{at:.0f}s:" + "/".join(str(n) for _, n in sorted(held.items())) for at, held in soak.connections]
    out(f"client connections per worker, every 5 s: {' '.join(spread)}")
    out(f"connections the server held 3 s after the load stopped: {result['sockets'] or 'none'}")
    if result["sockets"].get("CLOSE_WAIT"):
        out("  (CLOSE_WAIT: the client closed and the server never did)")
    out(f"final checks: {result['final']}")
    for what, status in result["final"].items():
        if status != "200":
            failures.append(f"final check {what} answered {status}")
    out("")

    sup_result = result["supervisor"]
    if sup_result["orphans"]:
        out(f"KNOWN BUG: kill -9 of the supervisor left its workers {sup_result['orphans']} running "
            f"(parents now {sup_result.get('orphan_ppids')}); 10 s later they still answer: "
            f"health {sup_result.get('health')}, infer {sup_result.get('infer')}; "
            f"the port is still taken: {sup_result.get('port_still_taken')}")
        out(f"  V2 repository unload on an orphan: {sup_result.get('unload')}; "
            f"iris-lr on 6 fresh connections afterwards: {sup_result.get('after_unload')}")
        if args.fail_on_orphans:
            failures.append("workers outlived the supervisor")
    elif sup_result.get("skipped"):
        out(f"kill -9 of the supervisor: not done ({sup_result['skipped']})")
    else:
        out(f"kill -9 of the supervisor: its workers were gone after {sup_result['gone_after']:.2f} s")
    hung = result.get("hung_worker")
    if hung is not None:
        if "error" in hung:
            out(f"hung worker check: could not run: {hung['error']}")
            failures.append("hung worker check could not run")
        elif not hung["supervisor_survived"]:
            out("hung worker check: KILLING A STOPPED WORKER THAT HAD A RELAYED CHANGE UNREAD KILLED THE SUPERVISOR; "
                f"the whole server is gone (workers left: {hung.get('workers_left')}); see {hung['log']}:")
            out("  " + hung["traceback"].replace("\n", "\n  "))
            failures.append("a killed worker with a change pending for it took the supervisor down")
        else:
            out(f"hung worker check: the supervisor survived; replacement serving after {hung['replaced_after']} s; "
                f"{hung['change']}")
            if hung["replaced_after"] is None:
                failures.append("hung worker check: the worker was not replaced")
            if not hung["change_seen"]:
                failures.append("hung worker check: the change was not served by every worker")
    out("")
    for crash in result["crashes"]:
        failures.append(f"client crashed: {crash.strip().splitlines()[-1]}")
        out(f"CLIENT CRASH: {crash}")
    for name in result["hung"]:
        failures.append(f"client {name} did not finish")
    warnings = log_summary(soak.server.log())
    out(f"server log: {sum(warnings.values())} warnings/errors")
    for line, n in warnings.most_common(25):
        out(f"  {n:6}  {line}")
    for trace in tracebacks(soak.server.log())[:3]:
        out("  " + trace.replace("\n", "\n  "))
    out("")
    out("RESULT: " + ("PASS" if not failures else "FAIL\n  - " + "\n  - ".join(failures)))
    return "\n".join(lines), failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=180.0, help="how long the load runs (default 180)")
    parser.add_argument("--kill-every", type=float, default=30.0, help="seconds between worker kills (0: none)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--clients", type=float, default=1.0, help="scale the number of client threads")
    parser.add_argument("--repo-every", type=float, default=5.0, help="seconds between V2 repository calls")
    parser.add_argument("--config-every", type=float, default=15.0, help="seconds between config edits")
    parser.add_argument("--folder-every", type=float, default=12.0, help="seconds between version folder changes")
    parser.add_argument("--change-grace", type=float, default=10.0,
                        help="seconds after a config/folder change before answers must follow it")
    parser.add_argument("--max-memory-growth", type=float, default=0.5, help="fail above this PSS growth (0.5: +50%%)")
    parser.add_argument("--no-hung-worker-check", dest="hung_worker_check", action="store_false",
                        help="skip the last phase (a fresh server whose stopped worker is killed with a "
                             "relayed change unread)")
    parser.add_argument("--fail-on-orphans", action="store_true",
                        help="fail when workers outlive a killed supervisor (a known bug today)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (models, server log, report)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.workers < 2:
        parser.error("--workers must be at least 2 (the run kills workers)")

    root = Path(tempfile.mkdtemp(prefix="servekit-soak-"))
    print(f"work folder {root}; training the models offline", flush=True)
    make_all(root)
    server = Server(root, args.workers)
    failures = ["did not finish"]
    try:
        ready_s = server.start()
        soak = Soak(args, root, server)
        result = soak.run()
        server.cleanup()
        if args.hung_worker_check:
            print("hung worker check: a fresh server, a stopped worker killed with a relayed change unread",
                  flush=True)
            result["hung_worker"] = hung_worker_check(root, args.workers)
        text, failures = report(soak, result, args, ready_s)
        (root / "report.txt").write_text(text + "\n")
        print("\n" + text, flush=True)
    finally:
        server.cleanup()
        if failures and not args.keep:
            print(f"work folder kept for inspection: {root} (server.log, report.txt)")
        elif not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"work folder kept: {root}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
