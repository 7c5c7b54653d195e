"""servekit against MLServer, side by side on one machine, in one run.

    python benchmarks/suite.py --mlserver benchmarks/.venv-mlserver/bin/mlserver [--quick]

(``benchmarks/run.sh`` installs everything and calls this.) Serves the model
repository made by ``train.py`` with each server configuration in turn on the
same ports, drives identical load with wrk and ``servekit bench``, and writes
``results/latest.md`` (and the raw numbers to ``results/latest.json``).
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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from loads import bench, wrk
from processes import CpuSample, Server, other_load
from report import render

HERE = Path(__file__).resolve().parent
MODELS = ["iris-rf", "fashion-logreg", "fashion-xgboost"]
CONNECTIONS = [1, 16, 64]
BIG_MODEL = "fashion-logreg"


@dataclass
class Config:
    """One server configuration and what to measure on it."""

    name: str
    kind: str  # servekit | mlserver | bare (servekit's HTTP server) | bare-uvicorn
    parallel_workers: int | None = None
    batching: bool = False  # MLServer adaptive batching on iris-rf
    models: tuple[str, ...] = tuple(MODELS)
    wrk: bool = True
    bench: bool = False
    big: bool = False
    before: bool = False  # servekit from --before-src (an older checkout), for before/after runs


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
        if config.kind == "bare":
            command = [sys.executable, str(HERE / "bare_servekit.py"), str(self.port)]
            return Server(config.name, command, HERE, log, self.port, [])
        command = [sys.executable, "-m", "uvicorn", "bare_app:app", "--app-dir", str(HERE),
                   "--host", "127.0.0.1", "--port", str(self.port), "--workers", str(os.cpu_count() or 1),
                   "--http", "httptools", "--loop", "uvloop", "--no-access-log", "--log-level", "warning"]
        return Server(config.name, command, HERE, log, self.port, [])

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
        out: dict[str, Any] = {"kind": config.kind, "parallel_workers": config.parallel_workers}
        log(f"== {config.name}: starting")
        try:
            out["ready_s"] = round(server.start(), 2)
            time.sleep(1.0)  # let worker start-up settle before measuring idle memory
            out["memory_idle"] = asdict(server.memory())
            log(f"   ready in {out['ready_s']} s, {out['memory_idle']}")
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
        bare = config.kind.startswith("bare")
        for model in config.models:
            body = self.data / f"{model}.json"
            url = server.url + ("/infer" if bare else f"/v2/models/{model}/infer")
            wrk(url, body, 16, 1.0)  # warm-up, not recorded
            out[model] = {}
            for connections in CONNECTIONS:
                assert server.proc is not None
                before, started = CpuSample.take(server.proc.pid), time.perf_counter()
                result = wrk(url, body, connections, self.seconds)
                after = CpuSample.take(server.proc.pid)
                result["other_cpu"] = other_load(before, after, time.perf_counter() - started)
                result["server_cpu"] = round((after.tree_s - before.tree_s) / (time.perf_counter() - started), 2)
                out[model][str(connections)] = result
                log(f"   wrk {model:16} c={connections:<3} {result['rps']:9.1f} req/s  "
                    f"p50 {result['p50_ms']:8.2f} ms  p99 {result['p99_ms']:8.2f} ms  errors {result['errors']}  "
                    f"cpu: server {result['server_cpu']} other {result['other_cpu']}")
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mlserver", required=True, help="the mlserver executable (its own venv)")
    parser.add_argument("--work", type=Path, default=HERE / "work", help="trained repository and data")
    parser.add_argument("--port", type=int, default=38080, help="HTTP port (gRPC +1, metrics +2)")
    parser.add_argument("--seconds", type=float, default=12.0, help="wrk run length")
    parser.add_argument("--quick", action="store_true", help="3 s runs: a smoke run of the whole suite")
    parser.add_argument("--only", default=None, help="comma-separated configuration names")
    parser.add_argument("--before-src", default=None,
                        help="the src/ folder of an older servekit checkout: adds 'servekit-before', "
                             "measured like 'servekit' in the same run")
    args = parser.parse_args()
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
    results: dict[str, Any] = {"run": time.strftime("%Y%m%d-%H%M%S"), "machine": info,
                               "mode": "quick" if args.quick else "full",
                               "wrk_seconds": suite.seconds, "bench_seconds": suite.bench_seconds,
                               "floor": json.loads((suite.data / "floor.json").read_text()),
                               "configs": {}}
    chosen = set(args.only.split(",")) if args.only else None
    previous = HERE / "results" / "latest.json"
    if chosen is not None and previous.is_file():
        # a partial re-run keeps the other configurations' numbers from the last run
        results["configs"] = json.loads(previous.read_text()).get("configs", {})
    configs = list(CONFIGS)
    if args.before_src:
        configs.insert(1, Config("servekit-before", "servekit", bench=True, big=True, before=True))
    try:
        for config in configs:
            if chosen is None or config.name in chosen:
                results["configs"][config.name] = suite.run_config(config)
                results["configs"][config.name].update(measured_at=time.strftime("%Y-%m-%d %H:%M"),
                                                       run=results["run"])
    finally:
        suite.write_settings(Config("reset", "servekit"))
    results["elapsed_s"] = round(time.time() - started, 1)
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    (out_dir / "latest.json").write_text(json.dumps(results, indent=1) + "\n")
    (out_dir / "latest.md").write_text(render(results))
    log(f"wrote {out_dir / 'latest.md'} in {results['elapsed_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
