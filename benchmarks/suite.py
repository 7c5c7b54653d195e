"""servekit against MLServer and the peers a team would weigh today (KServe,
Triton through PyTriton, BentoML, LitServe, Ray Serve), side by side on one
machine, in one run.

    python benchmarks/suite.py --mlserver benchmarks/.venv-mlserver/bin/mlserver [--quick]
        [--only NAMES] [--no-peers]

(``benchmarks/run.sh`` installs everything and calls this.) Serves the models
made by ``train.py`` with each server configuration in turn on the same ports,
checks that each answers a known row as scikit-learn's own ``predict`` does,
drives identical load with wrk (and ``servekit bench`` on servekit and MLServer),
and writes ``results/latest.md`` (and the raw numbers to ``results/latest.json``).
``--only`` takes configuration names or a peer's name (all its configurations).
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
    big: bool = False
    before: bool = False  # servekit from --before-src (an older checkout), for before/after runs
    peer: str | None = None  # kind "peer": which one (peer_servers.PEER_TABLE)
    protocol: str = "v2"  # the request body: v2, v1 (KServe's) or rows (the peer's own JSON)
    setting: str = ""  # the setting, in words, for the report

    def selected(self, chosen: set[str] | None) -> bool:
        return chosen is None or self.name in chosen or (self.peer is not None and self.peer in chosen)


CONFIGS = [
    Config("servekit", "servekit", bench=True, big=True),
    Config("mlserver", "mlserver", bench=True, big=True),
    Config("mlserver-pw0", "mlserver", parallel_workers=0),
    Config("mlserver-pw2", "mlserver", parallel_workers=2),
    Config("mlserver-batch", "mlserver", batching=True, models=("iris-rf",)),
    Config("bare-servekit-http", "bare"),
    Config("bare-uvicorn", "bare-uvicorn", models=("fashion-logreg",)),
    Config("servekit-1-worker", "servekit", parallel_workers=1, wrk=False),
]

_BATCH = f"batching: up to {peer_models.MAX_BATCH_SIZE} requests"
PEER_CONFIGS = [
    Config("kserve", "peer", peer="kserve", setting="V2 REST, 1 worker (default)"),
    Config("kserve-v1", "peer", peer="kserve", protocol="v1", setting="V1 REST, 1 worker (default)"),
    Config("kserve-w2", "peer", peer="kserve", parallel_workers=2,
           setting="V2 REST, 2 workers (no batching in KServe's Python server)"),
    Config("pytriton", "peer", peer="pytriton", setting="V2 REST, no batching"),
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
        self.big_requests = 2 if args.quick else 4

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

    def run_config(self, config: Config) -> dict[str, Any]:
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
        log(f"== {config.name}: starting")
        try:
            out["ready_s"] = round(server.start(), 2)
            time.sleep(1.0)  # let worker start-up settle before measuring idle memory
            out["memory_idle"] = asdict(server.memory())
            log(f"   ready in {out['ready_s']} s, {out['memory_idle']}")
            if not config.kind.startswith("bare"):
                out["correct"] = self.check_predictions(server, config)
            if self.args.check_only:
                return out
            if config.wrk:
                out["wrk"] = self.wrk_sweep(server, config)
            if config.bench:
                out["bench"] = self.bench_sweep(server, config)
            if config.big:
                # MLServer has no binary tensor extension (its issue #324): JSON and gRPC only
                protocols = ["json", "binary", "grpc"] if config.kind == "servekit" else ["json", "grpc"]
                out["big"] = self.big_request(server, protocols)
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

    def big_request(self, server: Server, protocols: list[str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        npy = str(self.data / "test-10000x784.npy")
        inputs = {"json": ["--input-file", str(self.data / "test-10000x784.json")],
                  "binary": ["--input-file", npy, "--input-name", "predict"],
                  "grpc": ["--input-file", npy, "--input-name", "predict"]}
        for protocol in protocols:
            args = inputs[protocol]
            report = bench(server.url, f"127.0.0.1:{self.port + 1}", BIG_MODEL, [
                *args, "--protocol", protocol, "--concurrency", "1", "--warmup", "0",
                "--requests", str(self.big_requests)], timeout=300)
            out[protocol] = report
            level = (report.get("results") or [{}])[0]
            log(f"   10000x784 {protocol:6} p50 {level.get('p50_ms')} ms  errors {level.get('errors')} "
                f"{report.get('error', '')}")
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mlserver", required=True, help="the mlserver executable (its own venv)")
    parser.add_argument("--work", type=Path, default=HERE / "work", help="trained repository and data")
    parser.add_argument("--port", type=int, default=38080, help="HTTP port (gRPC +1, metrics +2)")
    parser.add_argument("--seconds", type=float, default=12.0, help="wrk run length")
    parser.add_argument("--quick", action="store_true", help="3 s runs: a smoke run of the whole suite")
    parser.add_argument("--only", default=None, help="comma-separated configuration names")
    parser.add_argument("--no-peers", action="store_true",
                        help="leave out the peers (KServe, PyTriton, BentoML, LitServe, Ray Serve)")
    parser.add_argument("--check-only", action="store_true",
                        help="start each configuration, check its answers and memory, stop it: no load, "
                             "and results/ is left as it is")
    parser.add_argument("--list-peers", action="store_true",
                        help="print the peers this run would measure (for run.sh, which installs them) and exit")
    parser.add_argument("--before-src", default=None,
                        help="the src/ folder of an older servekit checkout: adds 'servekit-before', "
                             "measured like 'servekit' in the same run")
    args = parser.parse_args()
    chosen = set(args.only.split(",")) if args.only else None
    configs = list(CONFIGS) + ([] if args.no_peers else PEER_CONFIGS)
    if args.list_peers:
        print(" ".join(sorted({c.peer for c in configs if c.peer and c.selected(chosen)})))
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
                     if any(c.peer == name and c.selected(chosen) for c in configs)}
    results: dict[str, Any] = {"run": time.strftime("%Y%m%d-%H%M%S"), "machine": info,
                               "mode": "quick" if args.quick else "full",
                               "wrk_seconds": suite.seconds, "bench_seconds": suite.bench_seconds,
                               "floor": json.loads((suite.data / "floor.json").read_text()),
                               "configs": {}}
    previous = HERE / "results" / "latest.json"
    if chosen is not None and previous.is_file():
        # a partial re-run keeps the other configurations' numbers from the last run
        results["configs"] = json.loads(previous.read_text()).get("configs", {})
    if args.before_src:
        configs.insert(1, Config("servekit-before", "servekit", bench=True, big=True, before=True))
    try:
        for config in configs:
            if config.selected(chosen):
                results["configs"][config.name] = suite.run_config(config)
                results["configs"][config.name].update(measured_at=time.strftime("%Y-%m-%d %H:%M"),
                                                       run=results["run"])
    finally:
        suite.write_settings(Config("reset", "servekit"))
    results["elapsed_s"] = round(time.time() - started, 1)
    if args.check_only:
        failed = [name for name, c in results["configs"].items() if c.get("failure")]
        log(f"checked in {results['elapsed_s']:.0f} s; " + (f"FAILED: {', '.join(failed)}" if failed else "all passed"))
        return 1 if failed else 0
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    results["previous"] = committed_cpu()
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
