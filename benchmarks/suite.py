"""servekit against MLServer and the peers a team would weigh today (KServe,
Triton through PyTriton, BentoML, LitServe, Ray Serve), side by side on one
machine, in one run.

    python benchmarks/suite.py --mlserver benchmarks/.venv-mlserver/bin/mlserver [--quick]
        [--only NAMES] [--no-peers] [--parts closed,open,large | --only-open-loop]

(``benchmarks/run.sh`` installs everything and calls this.) Serves the models
made by ``train.py`` with each server configuration in turn on the same ports,
checks that each answers a known row as scikit-learn's own ``predict`` does,
drives identical load with wrk (and ``servekit bench`` on servekit and MLServer),
and writes ``results/latest.md`` (and the raw numbers to ``results/latest.json``).
``--only`` takes configuration names or a peer's name (all its configurations).

Three parts, each on by default (``--parts`` picks some; a partial run keeps the
other parts' numbers from ``results/latest.json``):

- ``closed``: wrk (and ``servekit bench``) closed loops, one-row requests, 1/16/64
  connections, on every configuration;
- ``open``: open loop (``servekit bench --find-rate``): for servekit and each
  peer in its best configuration (the highest closed-loop req/s of its
  configurations on that model), the highest constant rate served with p99
  under 10 ms and under 100 ms, and p99/p99.9 at 50 % and 90 % of it;
- ``large``: the 10,000x784 test set in one request over V2 JSON, binary and
  gRPC against the servers that take them (``large.py``), 1 and 4 connections.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import large
import numpy as np
from loads import bench, wrk
from peer_servers import PEER_TABLE, PEERS, Peer, kserve_v1_path
from peers import models as peer_models
from processes import CpuSample, Server, other_load
from report import Results, render
from sklearn.datasets import load_iris

HERE = Path(__file__).resolve().parent
MODELS = ["iris-rf", "fashion-logreg", "fashion-xgboost"]
CONNECTIONS = [1, 16, 64]
BIG_MODEL = "fashion-logreg"
CHECK_REQUESTS = 24  # concurrent requests of the correctness check, per model
PARTS = ("closed", "open", "large")
OPEN_MODELS = ("iris-rf", "fashion-logreg")
OPEN_BOUNDS_MS = (10.0, 100.0)
LARGE_CONNECTIONS = (1, 4)
OPEN_MIN_RATE = 10  # req/s: the lowest rate an open-loop search starts from
OPEN_DEFAULT_START = 100  # req/s: where a search starts without closed-loop numbers
OPEN_MAX_INFLIGHT = 256  # open-loop requests in flight at most (a server that falls behind drains it after a level)
# a server family's configuration for the open loop when no closed-loop numbers say which is best
# (the best of the last full run, December 2026): the first one that serves the model
OPEN_DEFAULTS = {"servekit": ("servekit",), "servekit-before": ("servekit-before",),
                 "mlserver": ("mlserver-batch", "mlserver-pw0"), "kserve": ("kserve-w2",),
                 "pytriton": ("pytriton-batch",), "bentoml": ("bentoml-batch",),
                 "litserve": ("litserve-batch",), "ray": ("ray-batch",)}


@dataclass
class Config:
    """One server configuration and what to measure on it."""

    name: str
    kind: str  # servekit | mlserver | bare (servekit's HTTP server) | bare-uvicorn | peer
    parallel_workers: int | None = None  # also a peer's process count (PEER_WORKERS), where it has one
    batching: bool = False  # MLServer adaptive batching on iris-rf; a peer's best batching setting
    models: tuple[str, ...] = tuple(MODELS)
    wrk: bool = True
    bench: bool = False
    large: tuple[str, ...] = ()  # transports of the 10,000-row request (the "large" part)
    before: bool = False  # servekit from --before-src (an older checkout), for before/after runs
    peer: str | None = None  # kind "peer": which one (peer_servers.PEER_TABLE)
    protocol: str = "v2"  # the request body: v2, v1 (KServe's) or rows (the peer's own JSON)
    setting: str = ""  # the setting, in words, for the report

    def selected(self, chosen: set[str] | None) -> bool:
        return chosen is None or self.name in chosen or (self.peer is not None and self.peer in chosen)

    @property
    def family(self) -> str | None:
        """The server this configuration is a setting of (the open loop measures each one's best),
        or None for floors and variants that are not a server's setting."""
        if self.kind == "peer":
            return self.peer
        if self.kind == "mlserver":
            return "mlserver"
        if self.kind == "servekit" and self.parallel_workers is None:
            return "servekit-before" if self.before else "servekit"
        return None


CONFIGS = [
    Config("servekit", "servekit", bench=True, large=large.TRANSPORTS),
    Config("mlserver", "mlserver", bench=True, large=("json", "grpc")),  # no binary extension: its issue #324
    Config("mlserver-pw0", "mlserver", parallel_workers=0),
    Config("mlserver-pw2", "mlserver", parallel_workers=2),
    Config("mlserver-batch", "mlserver", batching=True, models=("iris-rf",)),
    Config("bare-servekit-http", "bare"),
    Config("bare-uvicorn", "bare-uvicorn", models=("fashion-logreg",)),
    Config("servekit-1-worker", "servekit", parallel_workers=1, wrk=False),
]

_BATCH = f"batching: up to {peer_models.MAX_BATCH_SIZE} requests"
PEER_CONFIGS = [
    Config("kserve", "peer", peer="kserve", setting="V2 REST, 1 worker (default)", large=large.TRANSPORTS),
    Config("kserve-v1", "peer", peer="kserve", protocol="v1", setting="V1 REST, 1 worker (default)"),
    Config("kserve-w2", "peer", peer="kserve", parallel_workers=2,
           setting="V2 REST, 2 workers (no batching in KServe's Python server)"),
    # the large part needs no batching: the batching setting takes at most 32 rows a request
    Config("pytriton", "peer", peer="pytriton", setting="V2 REST, no batching", large=large.TRANSPORTS),
    Config("pytriton-batch", "peer", peer="pytriton", batching=True,
           setting=f"V2 REST, dynamic {_BATCH}, {peer_models.MAX_BATCH_DELAY_S * 1000:g} ms queue delay"),
    Config("bentoml", "peer", peer="bentoml", protocol="rows", setting="1 worker (default)"),
    Config("bentoml-batch", "peer", peer="bentoml", protocol="rows", batching=True,
           setting=f"batchable=True, adaptive {_BATCH}"),
    Config("litserve", "peer", peer="litserve", protocol="rows", setting="default (no batching)"),
    Config("litserve-batch", "peer", peer="litserve", protocol="rows", batching=True,
           setting=f"max_batch_size {peer_models.MAX_BATCH_SIZE}, "
                   f"batch_timeout {peer_models.MAX_BATCH_DELAY_S:g} s"),
    Config("ray", "peer", peer="ray", protocol="rows", setting="1 replica per model (default)"),
    Config("ray-batch", "peer", peer="ray", protocol="rows", batching=True,
           setting=f"@serve.batch max_batch_size {peer_models.MAX_BATCH_SIZE}, "
                   f"batch_wait_timeout_s {peer_models.MAX_BATCH_DELAY_S:g}"),
]


class Suite:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work: Path = args.work.resolve()
        self.repo = self.work / "repo"
        self.data = self.work / "data"
        self.raw = HERE / "results" / "raw"
        self.port = args.port
        self.seconds = 3.0 if args.quick else args.seconds
        self.bench_seconds = 2.0 if args.quick else 5.0
        # open loop: seconds measured and warmed up per offered rate, bisections after the first rate
        # not sustained (each bound's search starts from a rate the closed loop suggests)
        self.open_seconds = args.open_seconds or (1.0 if args.quick else 4.0)
        self.open_warmup = 0.5 if args.quick else 1.0
        self.open_steps = 1 if args.quick else 3
        self.large_seconds = args.large_seconds or (3.0 if args.quick else 10.0)
        self.results: dict[str, Any] = {}  # every configuration's numbers so far (for the open loop's start)

    def server(self, config: Config) -> Server:
        ports = ["--http-port", str(self.port), "--grpc-port", str(self.port + 1),
                 "--metrics-port", str(self.port + 2)]
        log = self.raw / f"{config.name}.log"
        models = list(config.models)
        if config.kind == "servekit":
            command = [sys.executable, "-m", "servekit", "serve", str(self.repo), *ports]
            if config.parallel_workers is not None:
                command += ["--parallel-workers", str(config.parallel_workers)]
            env = {"PYTHONPATH": str(Path(self.args.before_src).resolve())} if config.before else {}
            return Server(config.name, command, self.repo, log, self.port, models, env=env)
        if config.kind == "mlserver":
            mlserver = str(Path(self.args.mlserver).resolve())
            return Server(config.name, [mlserver, "start", str(self.repo)], self.repo, log,
                          self.port, models)
        if config.kind == "peer":
            peer = self.peer(config)
            env = {"PEER_REPO": str(self.repo), "PEER_PORT": str(self.port),
                   "PEER_BATCHING": "1" if config.batching else "0",
                   "PEER_WORKERS": str(config.parallel_workers or 1)}
            cwd = peer.script.parent
            return Server(config.name, peer.command(self.port), cwd, log, self.port, models, env=env,
                          ready_paths=peer.ready(models))
        if config.kind == "bare":
            command = [sys.executable, str(HERE / "bare_servekit.py"), str(self.port)]
            return Server(config.name, command, HERE, log, self.port, [])
        command = [sys.executable, "-m", "uvicorn", "bare_app:app", "--app-dir", str(HERE),
                   "--host", "127.0.0.1", "--port", str(self.port), "--workers", str(os.cpu_count() or 1),
                   "--http", "httptools", "--loop", "uvloop", "--no-access-log", "--log-level", "warning"]
        return Server(config.name, command, HERE, log, self.port, [])

    def peer(self, config: Config) -> Peer:
        assert config.peer is not None
        return PEER_TABLE[config.peer]

    def skip_reason(self, config: Config) -> str | None:
        """Why a peer cannot run here (its environment failed to install, or it cannot run on this
        machine), or None."""
        if config.kind != "peer":
            return None
        peer = self.peer(config)
        venv = peer.python.parent.parent
        for why in (HERE / "peers" / peer.name / "SKIP", venv / ".install-failed"):
            if why.is_file():
                return why.read_text().strip()
        if not peer.python.is_file():
            return f"{venv} is missing: run benchmarks/peers/install.sh {peer.name}"
        return None

    def model_path(self, config: Config, model: str) -> str:
        if config.kind.startswith("bare"):
            return "/infer"
        if config.kind == "peer":
            if config.protocol == "v1":
                return kserve_v1_path(model)
            return self.peer(config).path(model)
        return f"/v2/models/{model}/infer"

    def body_file(self, config: Config, model: str) -> Path:
        """The one-row request body of ``model`` in the format the configuration takes."""
        v2 = self.data / f"{model}.json"
        if config.kind != "peer" or config.protocol == "v2":
            return v2
        out = self.raw / "bodies" / f"{config.protocol}-{model}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(self.peer(config).body(json.loads(v2.read_bytes()), config.protocol))
        return out

    def check_predictions(self, server: Server, config: Config) -> dict[str, Any]:
        """Each model's one-row body must come back with the label scikit-learn's (or XGBoost's)
        own predict gives for that row in this process; then CHECK_REQUESTS requests of 1 to 3
        different rows at once (so that a batching server joins them) must each get their own
        rows' labels back. Raises RuntimeError if not."""
        out: dict[str, Any] = {}
        for model in config.models:
            predict = peer_models.load(model, self.repo)
            rows = np.asarray(json.loads((self.data / f"{model}.json").read_bytes())["inputs"][0]["data"],
                              dtype=np.float64)
            want = [float(x) for x in predict(rows)]
            got = self.ask(server, config, model, self.body_file(config, model).read_bytes())
            if got != want:
                raise RuntimeError(f"correctness check, {model}: the server answered {got}, "
                                   f"the model's own predict gives {want}")
            many = self.check_rows(model)
            expected = [float(x) for x in predict(many)]
            slices = [(i, i + 1 + i % 3) for i in range(CHECK_REQUESTS)]

            def one(bounds: tuple[int, int], model: str = model, many: np.ndarray = many) -> list[float]:
                part = many[bounds[0]:bounds[1]]
                v2 = {"inputs": [{"name": "predict", "shape": list(part.shape), "datatype": "FP64",
                                  "data": part.tolist()}]}
                body = json.dumps(v2).encode() if config.kind != "peer" else \
                    self.peer(config).body(v2, config.protocol)
                return self.ask(server, config, model, body)

            with ThreadPoolExecutor(max_workers=CHECK_REQUESTS) as pool:
                answers = list(pool.map(one, slices))
            for (lo, hi), labels in zip(slices, answers, strict=True):
                if labels != expected[lo:hi]:
                    raise RuntimeError(f"correctness check, {model}: rows {lo}-{hi - 1} sent together with "
                                       f"{CHECK_REQUESTS - 1} other requests came back as {labels}, "
                                       f"the model's own predict gives {expected[lo:hi]}")
            out[model] = {"label": want, "concurrent_requests": CHECK_REQUESTS}
        log("   correct: " + ", ".join(f"{m} -> {v['label']}" for m, v in out.items())
            + f"; and {CHECK_REQUESTS} concurrent requests of 1-3 rows per model")
        return out

    def ask(self, server: Server, config: Config, model: str, body: bytes) -> list[float]:
        """POST one body; the labels in the answer."""
        request = urllib.request.Request(server.url + self.model_path(config, model), data=body,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                document = json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"correctness check, {model}: HTTP {exc.code}: "
                               f"{exc.read()[:300].decode(errors='replace')}") from exc
        try:
            if config.kind == "peer":
                return self.peer(config).labels(document, config.protocol)
            return PEER_TABLE["kserve"].labels(document, "v2")
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise RuntimeError(f"correctness check, {model}: no labels in the answer "
                               f"{str(document)[:300]}") from exc

    def check_rows(self, model: str) -> np.ndarray:
        """Distinct test rows for the concurrent check: iris's own rows, or the 784-feature test set's."""
        count = CHECK_REQUESTS + 3
        if model == "iris-rf":
            return np.ascontiguousarray(load_iris().data[::5][:count])
        return np.ascontiguousarray(np.load(self.data / "test-10000x784.npy", mmap_mode="r")[:count])

    def write_settings(self, config: Config) -> None:
        """settings.json in MLServer's field names (servekit reads the same file)."""
        settings: dict[str, Any] = {"http_port": self.port, "grpc_port": self.port + 1,
                                    "metrics_port": self.port + 2,
                                    # the 10,000-row gRPC request is 63 MB; both must accept it
                                    "grpc_max_message_length": 256 * 1024 * 1024}
        if config.kind == "mlserver" and config.parallel_workers is not None:
            settings["parallel_workers"] = config.parallel_workers
        (self.repo / "settings.json").write_text(json.dumps(settings, indent=4) + "\n")
        iris = self.repo / "iris-rf" / "model-settings.json"
        document = json.loads(iris.read_text())
        for key in ("max_batch_size", "max_batch_time"):
            document.pop(key, None)
        if config.batching:
            document.update(max_batch_size=32, max_batch_time=0.005)
        iris.write_text(json.dumps(document, indent=4) + "\n")

    def run_config(self, config: Config, parts: set[str], open_models: list[str]) -> dict[str, Any] | None:
        """Start the configuration, check its answers, measure the parts asked for (``open_models``:
        the models the open loop measures on it), stop it. None when it has nothing to measure."""
        todo = {"closed"} & parts
        if "large" in parts and config.large:
            todo.add("large")
        if open_models:
            todo.add("open")
        if not todo and not self.args.check_only:
            return None
        self.write_settings(config)
        server = self.server(config)
        out: dict[str, Any] = {"kind": config.kind, "parallel_workers": config.parallel_workers,
                               "peer": config.peer, "protocol": config.protocol, "setting": config.setting,
                               "batching": config.batching}
        skipped = self.skip_reason(config)
        if skipped:
            log(f"== {config.name}: SKIPPED: {skipped}")
            out["skipped"] = skipped
            return out
        log(f"== {config.name}: starting ({', '.join(p for p in PARTS if p in todo) or 'check only'})")
        try:
            out["ready_s"] = round(server.start(), 2)
            time.sleep(1.0)  # let worker start-up settle before measuring idle memory
            out["memory_idle"] = asdict(server.memory())
            log(f"   ready in {out['ready_s']} s, {out['memory_idle']}")
            if not config.kind.startswith("bare"):
                out["correct"] = self.check_predictions(server, config)
            if self.args.check_only:
                return out
            if "closed" in todo and config.wrk:
                out["wrk"] = self.wrk_sweep(server, config)
            if "closed" in todo and config.bench:
                out["bench"] = self.bench_sweep(server, config)
            if "open" in todo:
                out["open"] = {}
                for model in open_models:
                    out["open"][model] = self.open_loop(server, config, model)
            if "large" in todo:
                out["large"] = self.large_requests(server, config)
            out["memory_after"] = asdict(server.memory())
            out["alive"] = server.alive()
        except (RuntimeError, OSError) as exc:
            out["failure"] = str(exc)
            log(f"   FAILED: {exc}")
        finally:
            if not server.alive() and "failure" not in out:
                out["failure"] = f"{config.name} died during the run; log:\n{server.log_tail()}"
            server.stop()
        out["log_tail"] = server.log_tail(15)
        return out

    def wrk_sweep(self, server: Server, config: Config) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for model in config.models:
            body = self.body_file(config, model)
            url = server.url + self.model_path(config, model)
            wrk(url, body, 16, 1.0)  # warm-up, not recorded
            out[model] = {}
            for connections in CONNECTIONS:
                assert server.proc is not None
                before, started = CpuSample.take(server.proc.pid), time.perf_counter()
                result = wrk(url, body, connections, self.seconds)
                after = CpuSample.take(server.proc.pid)
                result["other_cpu"] = other_load(before, after, time.perf_counter() - started)
                result["server_cpu"] = round((after.tree_s - before.tree_s) / (time.perf_counter() - started), 2)
                ok = result["requests"] - result["error_kinds"].get("status", 0)
                result["server_cpu_s"] = round(after.tree_s - before.tree_s, 3)
                result["cpu_ms_per_request"] = (round((after.tree_s - before.tree_s) / ok * 1000, 4)
                                                if ok > 0 else None)
                out[model][str(connections)] = result
                log(f"   wrk {model:16} c={connections:<3} {result['rps']:9.1f} req/s  "
                    f"p50 {result['p50_ms']:8.2f} ms  p99 {result['p99_ms']:8.2f} ms  errors {result['errors']}  "
                    f"cpu: server {result['server_cpu']} ({result['cpu_ms_per_request']} ms/req) "
                    f"other {result['other_cpu']}")
        return out

    def bench_sweep(self, server: Server, config: Config) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for model in config.models:
            report = bench(server.url, f"127.0.0.1:{self.port + 1}", model, [
                "--input-file", str(self.data / f"{model}.json"), "--concurrency",
                ",".join(map(str, CONNECTIONS)), "--duration", str(self.bench_seconds), "--warmup", "1"],
                timeout=120)
            out[model] = report
            for level in report.get("results", []):
                log(f"   bench {model:16} c={level['concurrency']:<3} {level['throughput']:9.1f} req/s  "
                    f"p50 {level['p50_ms']} ms  p99 {level['p99_ms']} ms  errors {level['errors']}")
            if "error" in report:
                log(f"   bench {model}: {report['error']}")
        return out

    def closed_rps(self, name: str, model: str) -> float | None:
        """The configuration's best closed-loop req/s on the model at 16 or 64 connections, from this
        run or the last one (None if never measured)."""
        levels = ((self.results.get(name) or {}).get("wrk") or {}).get(model) or {}
        values = [float(levels[c]["rps"]) for c in ("16", "64") if c in levels and not levels[c].get("errors")]
        return max(values) if values else None

    def open_plan(self, configs: list[Config]) -> dict[str, list[str]]:
        """Which models the open loop measures on which configuration: for each server (servekit,
        MLServer, each peer) and model, its configuration with the highest closed-loop req/s (this
        run's, else the last run's), else OPEN_DEFAULTS."""
        plan: dict[str, list[str]] = {}
        families: dict[str, list[Config]] = {}
        for config in configs:
            if config.family is not None:
                families.setdefault(config.family, []).append(config)
        for family, members in families.items():
            for model in OPEN_MODELS:
                serving = [c for c in members if model in c.models]
                scored = [(rps, c.name) for c in serving if (rps := self.closed_rps(c.name, model)) is not None]
                if scored:
                    name = max(scored)[1]
                else:
                    defaults = [n for n in OPEN_DEFAULTS.get(family, ()) if any(c.name == n for c in serving)]
                    if not defaults and not serving:
                        continue
                    name = defaults[0] if defaults else serving[0].name
                plan.setdefault(name, []).append(model)
        return plan

    def open_loop(self, server: Server, config: Config, model: str) -> dict[str, Any]:
        """``servekit bench --find-rate`` at the configuration's own request (body, path,
        content type): the highest constant rate served with p99 under each bound, and p99/p99.9
        at 50 % and 90 % of it. Each bound's search starts from a rate that should be sustained (a
        16th of the closed-loop req/s, or the rate the tighter bound found) and starts again 8x
        lower if even that is not."""
        started = time.perf_counter()
        closed = self.closed_rps(config.name, model)
        first = max(OPEN_MIN_RATE, round(closed / 16)) if closed else OPEN_DEFAULT_START
        out: dict[str, Any] = {"closed_rps": closed, "levels": 0, "client_cpu_max": None,
                               "seconds_per_level": self.open_seconds, "warmup_s": self.open_warmup,
                               "search_steps": self.open_steps}
        body, path = self.body_file(config, model), self.model_path(config, model)
        found: float | None = None
        for bound in OPEN_BOUNDS_MS:
            start = found or first
            tried: list[dict[str, Any]] = []
            while True:
                report = bench(server.url, f"127.0.0.1:{self.port + 1}", model, [
                    "--body-file", str(body), "--path", path, "--content-type", "application/json",
                    "--find-rate", f"{bound:g}", "--start-rate", f"{start:g}",
                    "--search-steps", str(self.open_steps), "--duration", str(self.open_seconds),
                    "--warmup", str(self.open_warmup), "--max-inflight", str(OPEN_MAX_INFLIGHT)], timeout=3600)
                levels = report.get("results") or []
                out["levels"] += len(levels)
                cpus = [lv["client_cpu"] for lv in levels if lv.get("client_cpu") is not None]
                if cpus:
                    out["client_cpu_max"] = max([*cpus, out["client_cpu_max"] or 0.0])
                entry = dict((report.get("sustainable") or {}).get(f"{bound:g}") or {})
                tried += [{k: lv.get(k) for k in ("phase", "rate", "throughput", "p99_ms", "p999_ms", "errors",
                                                  "first_error", "client_cpu")} for lv in levels]
                entry["levels"] = tried  # every rate tried, for reading a search afterwards
                if "error" in report:
                    entry["error"] = report["error"]
                if entry.get("rate") is not None or start <= OPEN_MIN_RATE or "error" in report:
                    break
                start = max(OPEN_MIN_RATE, round(start / 8))
            entry["start_rate"] = start
            out[f"{bound:g}"] = entry
            found = entry.get("rate") or found
            at = [entry.get(k) or {} for k in ("at_50", "at_90")]
            log(f"   open {model:16} p99<{bound:g}ms: {entry.get('rate')} req/s (from {start:g}/s); "
                + "; ".join(f"at {s}% p99 {a.get('p99_ms')} p99.9 {a.get('p999_ms')} ms"
                            for s, a in zip((50, 90), at, strict=True))
                + (f"  {entry['error']}" if "error" in entry else ""))
        out["seconds"] = round(time.perf_counter() - started, 1)
        return out

    def large_requests(self, server: Server, config: Config) -> dict[str, Any]:
        """The 10,000-row test set in one request over each transport the server takes: checked
        (every label against the model's own predict), then LARGE_CONNECTIONS clients for
        --large-seconds each, with the server's CPU per request."""
        assert server.proc is not None
        rows = np.load(self.data / "test-10000x784.npy")
        want = np.asarray(peer_models.load(BIG_MODEL, self.repo)(rows), dtype=np.float64).reshape(-1)
        name = self.peer(config).v2_name(BIG_MODEL) if config.kind == "peer" else BIG_MODEL
        out: dict[str, Any] = {}
        for transport in config.large:
            req = large.request(transport, server.url, f"127.0.0.1:{self.port + 1}", name, rows,
                                self.data / "test-10000x784.json")
            entry: dict[str, Any] = {"body_bytes": req.body_bytes}
            out[transport] = entry
            try:
                entry["check"] = large.check(req, want)
            except RuntimeError as exc:
                entry["error"] = f"correctness check: {exc}"
                log(f"   10000x784 {transport:6} FAILED {entry['error']}")
                continue
            for connections in LARGE_CONNECTIONS:
                before, started = CpuSample.take(server.proc.pid), time.perf_counter()
                result = large.load(req, connections, self.large_seconds)
                after = CpuSample.take(server.proc.pid)
                cpu = after.tree_s - before.tree_s
                result["server_cpu_s"] = round(cpu, 3)
                result["cpu_ms_per_request"] = round(cpu / result["requests"] * 1000, 1) if result["requests"] else None
                result["other_cpu"] = other_load(before, after, time.perf_counter() - started)
                entry[str(connections)] = result
                log(f"   10000x784 {transport:6} c={connections} {result['rps']:7.2f} req/s  p50 {result['p50_ms']} ms  "
                    f"p99 {result['p99_ms']} ms  cpu {result['cpu_ms_per_request']} ms/req  errors {result['errors']}"
                    + (f" ({result['first_error']})" if result["first_error"] else ""))
        return out


def log(text: str) -> None:
    print(text, flush=True)


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])

    def version(command: list[str]) -> str:
        try:
            out = subprocess.run(command, capture_output=True, text=True, timeout=30)
            return (out.stdout + out.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "?"

    return {
        "cpu": cpu, "cores": os.cpu_count(), "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(), "python": platform.python_version(),
        "load_average_at_start": os.getloadavg(),
        "servekit_commit": version(["git", "-C", str(HERE.parent), "rev-parse", "--short", "HEAD"])
        + (" + uncommitted changes in src/" if subprocess.run(
            ["git", "-C", str(HERE.parent), "status", "--porcelain", "src"],
            capture_output=True, text=True).stdout.strip() else ""),
        "wrk": " ".join(version(["wrk", "--version"]).split()[:2]),
    }


# the package that names each peer's version
PEER_PACKAGES = {"kserve": "kserve", "pytriton": "nvidia-pytriton", "bentoml": "bentoml",
                 "litserve": "litserve", "ray": "ray"}


def peer_environment(peer: Peer) -> dict[str, Any]:
    """The peer's version and what its environment cost to install (from install.sh's stamp)."""
    out: dict[str, Any] = {}
    stamp = peer.python.parent.parent / ".installed-stamp"
    if stamp.is_file():
        for line in stamp.read_text().splitlines():
            key, _, value = line.partition(" ")
            if key in ("seconds", "size_mb"):
                out[f"install_{key}"] = int(value)
    if peer.python.is_file():
        packages = [PEER_PACKAGES[peer.name], "scikit-learn", "xgboost", "numpy"]
        answer = subprocess.run(
            [str(peer.python), "-c", "import sys; from importlib.metadata import version as v; "
             "print(' '.join(v(p) for p in sys.argv[1:]))", *packages],
            capture_output=True, text=True, timeout=60)
        versions = answer.stdout.split()
        if len(versions) == len(packages):
            out.update(zip(["version", "scikit_learn", "xgboost", "numpy"], versions, strict=True))
    return out


def parts_of(text: str) -> set[str]:
    parts = {p.strip() for p in text.split(",") if p.strip()}
    unknown = parts - set(PARTS)
    if not parts or unknown:
        raise argparse.ArgumentTypeError(f"parts are {', '.join(PARTS)} (comma-separated), not {text!r}")
    return parts


def merge(old: dict[str, Any] | None, new: dict[str, Any], run: str) -> dict[str, Any]:
    """A configuration's numbers: this run's over the older ones (a partial run keeps the other
    parts' numbers); a failure or skip recorded by another run does not outlive it."""
    out = dict(old or {})
    if out.get("run") != run:
        for key in ("failure", "skipped"):
            out.pop(key, None)
    if out.get("failure") and new.get("failure"):
        new = {**new, "failure": f"{out['failure']}\n{new['failure']}"}
    out.update(new)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mlserver", required=True, help="the mlserver executable (its own venv)")
    parser.add_argument("--work", type=Path, default=HERE / "work", help="trained repository and data")
    parser.add_argument("--port", type=int, default=38080, help="HTTP port (gRPC +1, metrics +2)")
    parser.add_argument("--seconds", type=float, default=12.0, help="wrk run length")
    parser.add_argument("--quick", action="store_true", help="short runs (3 s wrk, 1 s open-loop levels, "
                        "3 s large-request points): a smoke run of the whole suite")
    parser.add_argument("--only", default=None, help="comma-separated configuration names")
    parser.add_argument("--no-peers", action="store_true",
                        help="leave out the peers (KServe, PyTriton, BentoML, LitServe, Ray Serve)")
    parser.add_argument("--parts", type=parts_of, default=set(PARTS),
                        help="which parts to run, comma-separated: closed (wrk and servekit bench, one-row "
                             "requests), open (open-loop sustainable rates), large (10,000x784 requests); "
                             "default all; the others' numbers are kept from results/latest.json")
    parser.add_argument("--only-open-loop", action="store_true", help="the same as --parts open")
    parser.add_argument("--open-seconds", type=float, default=None,
                        help="open loop: seconds measured per offered rate (default 4; 1 with --quick)")
    parser.add_argument("--large-seconds", type=float, default=None,
                        help="large requests: seconds per transport and connection count (default 10; 3 with --quick)")
    parser.add_argument("--results-dir", type=Path, default=HERE / "results",
                        help="where latest.md/latest.json go (and the previous numbers come from)")
    parser.add_argument("--check-only", action="store_true",
                        help="start each configuration, check its answers and memory, stop it: no load, "
                             "and results/ is left as it is")
    parser.add_argument("--list-peers", action="store_true",
                        help="print the peers this run would measure (for run.sh, which installs them) and exit")
    parser.add_argument("--before-src", default=None,
                        help="the src/ folder of an older servekit checkout: adds 'servekit-before', "
                             "measured like 'servekit' in the same run")
    args = parser.parse_args()
    parts: set[str] = {"open"} if args.only_open_loop else args.parts
    chosen = set(args.only.split(",")) if args.only else None
    configs = list(CONFIGS) + ([] if args.no_peers else PEER_CONFIGS)
    if args.before_src:
        configs.insert(1, Config("servekit-before", "servekit", bench=True, large=large.TRANSPORTS, before=True))
    configs = [c for c in configs if c.selected(chosen)]
    if args.list_peers:
        wanted = {c.peer for c in configs if c.peer and (parts - {"large"} or c.large)}
        print(" ".join(sorted(p for p in wanted if p)))
        return 0
    if shutil.which("wrk") is None:
        print("wrk is not installed (Debian: apt-get install wrk)", file=sys.stderr)
        return 2
    suite = Suite(args)
    started = time.time()
    info = machine()
    mlserver_python = Path(args.mlserver).parent / "python"
    info["mlserver"] = subprocess.run(
        [str(mlserver_python), "-c", "import mlserver, uvloop; print(mlserver.__version__, uvloop.__version__)"],
        capture_output=True, text=True).stdout.strip()
    info["peers"] = {name: peer_environment(PEER_TABLE[name]) for name in PEERS
                     if any(c.peer == name for c in configs)}
    run = time.strftime("%Y%m%d-%H%M%S")
    results: dict[str, Any] = {"run": run, "machine": info,
                               "mode": "quick" if args.quick else "full",
                               "parts": [p for p in PARTS if p in parts],
                               "wrk_seconds": suite.seconds, "bench_seconds": suite.bench_seconds,
                               "open_seconds": suite.open_seconds, "large_seconds": suite.large_seconds,
                               "floor": json.loads((suite.data / "floor.json").read_text()),
                               "configs": {}}
    out_dir: Path = args.results_dir
    previous = out_dir / "latest.json"
    partial = chosen is not None or parts != set(PARTS)
    if partial and previous.is_file():
        # a partial re-run keeps the other configurations' (and parts') numbers from the last run
        old = json.loads(previous.read_text())
        results["configs"] = old.get("configs", {})
        # and the settings those numbers were measured with
        for part, keys in (("closed", ("wrk_seconds", "bench_seconds")), ("open", ("open_seconds",)),
                           ("large", ("large_seconds",))):
            for key in keys:
                if part not in parts and key in old:
                    results[key] = old[key]
    suite.results = results["configs"]

    def measure(config: Config, todo: set[str], open_models: list[str]) -> None:
        out = suite.run_config(config, todo, open_models)
        if out is None:
            return
        out.update(measured_at=time.strftime("%Y-%m-%d %H:%M"), run=run)
        for part in PARTS:
            if part in out or (part == "closed" and "wrk" in out):
                out[f"{part}_run"] = run
        results["configs"][config.name] = merge(results["configs"].get(config.name), out, run)

    try:
        # closed loops and large requests in one start of each configuration; then the open loop on
        # each server's best configuration, which the closed loops of this run (or the last) name
        for config in configs:
            measure(config, parts - {"open"}, [])
        if "open" in parts and not args.check_only:
            plan = suite.open_plan(configs)
            log("open loop on: " + "; ".join(f"{name} ({', '.join(models)})" for name, models in plan.items()))
            for config in configs:
                if config.name in plan:
                    measure(config, set(), plan[config.name])
    finally:
        suite.write_settings(Config("reset", "servekit"))
    results["elapsed_s"] = round(time.time() - started, 1)
    if args.check_only:
        failed = [name for name, c in results["configs"].items() if c.get("failure") and c.get("run") == run]
        log(f"checked in {results['elapsed_s']:.0f} s; " + (f"FAILED: {', '.join(failed)}" if failed else "all passed"))
        return 1 if failed else 0
    out_dir.mkdir(parents=True, exist_ok=True)
    results["previous"] = committed_cpu()
    summary = Results(results)  # servekit over the best peer, open loop; servekit over each peer, large requests
    results["summary"] = {"open_loop": summary.open_summary(), "large_requests": summary.large_summary()}
    (out_dir / "latest.json").write_text(json.dumps(results, indent=1) + "\n")
    (out_dir / "latest.md").write_text(render(results))
    log(f"wrote {out_dir / 'latest.md'} in {results['elapsed_s']:.0f} s")
    print(Results(results).against_committed())  # what this tree costs per request against the committed run
    return 0


def committed_cpu() -> dict[str, Any] | None:
    """servekit's CPU per request in the last committed run (``git show
    HEAD:benchmarks/results/latest.json``), by model and connections, so the
    report can say what a change cost even on a noisy machine; None outside git."""
    try:
        text = subprocess.run(["git", "show", "HEAD:benchmarks/results/latest.json"], cwd=HERE,
                              capture_output=True, text=True, timeout=30, check=True).stdout
        old = json.loads(text)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    cells = (old.get("configs", {}).get("servekit") or {}).get("wrk") or {}
    cpu = {model: {conns: cell.get("cpu_ms_per_request") for conns, cell in levels.items()}
           for model, levels in cells.items()}
    return {"run": old.get("run"), "commit": old.get("machine", {}).get("servekit_commit"), "cpu_ms_per_request": cpu}


if __name__ == "__main__":
    sys.exit(main())
