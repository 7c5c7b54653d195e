"""servekit against TorchServe, side by side on one machine, in one run.

    python benchmarks/torchserve/compare.py --torchserve benchmarks/.venv-torchserve/bin/torchserve [--quick]

(``benchmarks/torchserve/run.sh`` installs everything and calls this.) Serves
the one archive made by ``article.py`` (the article's CNN and handler,
archived by torch-model-archiver) with TorchServe and then with servekit on
the same ports, drives identical load with wrk - the 28x28 PNG as the raw
body, no Content-Type, as ``curl -T`` sends it - and writes
``results/torchserve.md`` (raw numbers in ``results/torchserve.json``).
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the MLServer suite's drivers

from article import ARCHIVE  # noqa: E402
from loads import wrk  # noqa: E402
from processes import Server  # noqa: E402
from render import render  # noqa: E402
from suite import log, machine  # noqa: E402

MODEL = "fmnist"
CONNECTIONS = [1, 16]


@dataclass
class Config:
    """One server configuration."""

    name: str
    kind: str  # servekit | torchserve
    parallel_workers: int | None = None  # servekit only; None is its TorchServe-mode default
    omp_threads: int | None = None  # OMP_NUM_THREADS for the server's processes (tuning, not default)


CONFIGS = [
    Config("torchserve", "torchserve"),
    Config("torchserve-1-thread", "torchserve", omp_threads=1),
    Config("servekit", "servekit"),
    Config("servekit-1-worker", "servekit", parallel_workers=1),
]


class Comparison:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work: Path = args.work.resolve()
        self.store = self.work / "store"
        self.image = self.work / "data" / "trouser.png"
        self.floor: dict[str, Any] = json.loads((self.work / "data" / "floor.json").read_text())
        self.raw = HERE.parent / "results" / "raw"
        self.port: int = args.port
        self.seconds = 3.0 if args.quick else args.seconds

    def server(self, config: Config) -> Server:
        p = self.port
        cwd = self.work / "run" / config.name  # both write logs / key files into their folder
        shutil.rmtree(cwd, ignore_errors=True)
        cwd.mkdir(parents=True)
        log_path = self.raw / f"torchserve-{config.name}.log"
        if config.kind == "torchserve":
            (cwd / "config.properties").write_text(
                f"inference_address=http://127.0.0.1:{p}\n"
                f"management_address=http://127.0.0.1:{p + 1}\n"
                f"metrics_address=http://127.0.0.1:{p + 2}\n"
                f"grpc_inference_port={p + 3}\ngrpc_management_port={p + 4}\n"
                "disable_token_authorization=true\n")
            # --foreground keeps the JVM (and so its workers) in this process tree;
            # --ncs: no config snapshot, so a run never restores the last one's state
            command = [str(Path(self.args.torchserve).absolute()), "--start", "--foreground", "--ncs",
                       "--disable-token-auth", "--model-store", str(self.store),
                       "--models", f"{MODEL}={ARCHIVE}", "--ts-config", "config.properties"]
        else:
            command = [sys.executable, "-m", "servekit", "serve", "--model-store", str(self.store),
                       "--models", f"{MODEL}={ARCHIVE}", "--http-port", str(p),
                       "--management-port", str(p + 1), "--metrics-port", str(p + 2),
                       "--grpc-port", str(p + 3), "--disable-token-auth"]
            if config.parallel_workers is not None:
                command += ["--parallel-workers", str(config.parallel_workers)]
        env = {} if config.omp_threads is None else {"OMP_NUM_THREADS": str(config.omp_threads)}
        return Server(config.name, command, cwd, log_path, p, [MODEL], env=env, ready_paths=["/ping"])

    def answer_ready(self, server: Server, timeout: float = 120.0) -> str:
        """Wait until a prediction answers (TorchServe's /ping says Healthy
        before its workers have loaded the model, and even when they died)."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if not server.alive():
                raise RuntimeError(f"{server.name} exited; log:\n{server.log_tail()}")
            try:
                label = predict(server.url, self.image)
            except OSError as exc:
                last = str(exc)
                time.sleep(0.1)
                continue
            if label != self.floor["expected_label"]:
                raise RuntimeError(f"{server.name} answered {label!r}, expected {self.floor['expected_label']!r}")
            return label
        raise RuntimeError(f"{server.name} answered no prediction in {timeout:.0f} s ({last}); "
                           f"log:\n{server.log_tail()}")

    def run_config(self, config: Config) -> dict[str, Any]:
        server = self.server(config)
        out: dict[str, Any] = {"kind": config.kind, "parallel_workers": config.parallel_workers}
        log(f"== {config.name}: starting")
        try:
            started = time.perf_counter()
            server.start()
            self.answer_ready(server)
            out["ready_s"] = round(time.perf_counter() - started, 2)
            if config.kind == "servekit":
                out["workers"] = worker_processes(server.log_path)
            time.sleep(1.0)  # let start-up settle before measuring idle memory
            out["memory_idle"] = asdict(server.memory())
            log(f"   ready in {out['ready_s']} s, {out['memory_idle']}")
            url = f"{server.url}/predictions/{MODEL}"
            wrk(url, self.image, 16, 1.0 if self.args.quick else 3.0, content_type="")  # warm-up
            out["wrk"] = {}
            for connections in CONNECTIONS:
                result = wrk(url, self.image, connections, self.seconds, content_type="")
                out["wrk"][str(connections)] = result
                log(f"   wrk c={connections:<3} {result['rps']:9.1f} req/s  p50 {result['p50_ms']:8.2f} ms  "
                    f"p99 {result['p99_ms']:8.2f} ms  errors {result['errors']}")
            out["memory_after"] = asdict(server.memory())
            out["answer_after"] = predict(server.url, self.image)  # still answering, and rightly
            out["alive"] = server.alive()
            log(f"   after load: {out['memory_after']}")
        except (RuntimeError, OSError) as exc:
            out["failure"] = str(exc)
            log(f"   FAILED: {exc}")
        finally:
            if not server.alive() and "failure" not in out:
                out["failure"] = f"{config.name} died during the run; log:\n{server.log_tail()}"
            server.stop()
        out["log_tail"] = server.log_tail(15)
        if config.kind == "torchserve":
            out["worker_prediction_ms"] = prediction_times(server.log_path)
        return out


def worker_processes(log_path: Path) -> int | None:
    """How many worker processes servekit started (its ready line says)."""
    found = re.findall(r"servekit ready with (\d+) workers?", log_path.read_text(errors="replace"))
    return int(found[-1]) if found else None


def prediction_times(log_path: Path) -> dict[str, float] | None:
    """TorchServe's own PredictionTime metric (the handler's time in its Python
    worker) from its log: where its time goes, JVM excluded."""
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return None
    times = sorted(float(m) for m in re.findall(r"MODEL_METRICS - PredictionTime\.ms:([0-9.]+)", text))
    if not times:
        return None
    return {"count": len(times), "p50": times[len(times) // 2], "p90": times[int(len(times) * 0.9)]}


def predict(base: str, image: Path) -> str:
    """One prediction as ``curl -T`` sends it: the raw body and no Content-Type
    (urllib would add a form one, which TorchServe decodes as form fields)."""
    host, port = base.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request("POST", f"/predictions/{MODEL}", body=image.read_bytes())
        answer = connection.getresponse()
        text = answer.read().decode(errors="replace")
    finally:
        connection.close()
    if answer.status != 200:
        raise ConnectionError(f"HTTP {answer.status}: {text[:200]}")
    return text


def versions(torchserve: Path) -> dict[str, str]:
    python = torchserve.parent / "python"
    code = ("from importlib.metadata import version as v; "
            "print(v('torchserve'), v('torch'), v('torch-model-archiver'))")
    ts, torch, archiver = subprocess.run([str(python), "-c", code], capture_output=True, text=True,
                                         check=True).stdout.split()
    java = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.splitlines()
    return {"torchserve": ts, "torchserve_torch": torch, "torch_model_archiver": archiver,
            "java": java[0] if java else "?"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--torchserve", required=True, type=Path, help="the torchserve executable (its own venv)")
    parser.add_argument("--work", type=Path, default=HERE.parent / "work" / "torchserve",
                        help="the archive and request made by article.py")
    parser.add_argument("--port", type=int, default=38180, help="inference port (management +1, metrics +2)")
    parser.add_argument("--seconds", type=float, default=12.0, help="wrk run length")
    parser.add_argument("--quick", action="store_true", help="3 s runs: a smoke run")
    parser.add_argument("--only", default=None, help="comma-separated configuration names")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed (Debian: apt-get install wrk)", file=sys.stderr)
        return 2
    comparison = Comparison(args)
    started = time.time()
    info = {**machine(), **versions(args.torchserve)}
    import torch

    info["servekit_torch"] = torch.__version__
    results: dict[str, Any] = {"machine": info, "mode": "quick" if args.quick else "full",
                               "wrk_seconds": comparison.seconds, "floor": comparison.floor, "configs": {}}
    chosen = set(args.only.split(",")) if args.only else None
    out_dir = HERE.parent / "results"
    previous = out_dir / "torchserve.json"
    if chosen is not None and previous.is_file():
        # a partial re-run keeps the other configurations' numbers from the last run
        results["configs"] = json.loads(previous.read_text()).get("configs", {})
    for config in CONFIGS:
        if chosen is None or config.name in chosen:
            results["configs"][config.name] = comparison.run_config(config)
            results["configs"][config.name]["measured_at"] = time.strftime("%Y-%m-%d %H:%M")
    results["measured_now"] = [c.name for c in CONFIGS if chosen is None or c.name in chosen]
    results["elapsed_s"] = round(time.time() - started, 1)
    out_dir.mkdir(exist_ok=True)
    (out_dir / "torchserve.json").write_text(json.dumps(results, indent=1) + "\n")
    (out_dir / "torchserve.md").write_text(render(results))
    log(f"wrote {out_dir / 'torchserve.md'} in {results['elapsed_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
