"""A thousand models on one server: servekit loading them on their first
request under a budget, beside MLServer loading every one at start.

    python benchmarks/thousand_models.py [--models 1000] [--seconds 60] [--concurrency 8]
        [--budget-models 100] [--budget-mb 0] [--mlserver benchmarks/.venv-mlserver/bin/mlserver]

The repository (``--cache``, default ``benchmarks/work/thousand/``) is built
once, offline: scikit-learn models of mixed sizes trained on synthetic data
(LogisticRegression, ~1 KB; RandomForest of 5-40 trees, tens of KB; 100-300
trees, ~1 MB), each on its own sample so each answers differently, with the
answers they give to four probe rows kept in ``manifest.json``.

For each server: the time to ready and its memory (PSS of the whole process
tree); for servekit, first requests to 20 cold models one at a time (by
size); then a closed loop of ``--concurrency`` clients, each asking a model
drawn from a Zipf distribution (``--zipf`` 1.1 over a random order of the
models), for ``--warmup`` then ``--seconds`` seconds. Every answer is checked
against the model's own prediction. Reported: latency p50/p99 of the steady
part, the latency of each client-side first request of a model, loads and
evictions per second (servekit's counters), the process tree's PSS sampled
every half second (highest and mean) against the budget. Results go to
``benchmarks/results/thousand_models.{json,md}`` (``--out`` to write elsewhere).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import orjson

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from processes import Server, tree_memory  # noqa: E402

PROBES = 4
FEATURES = 20


# -- the repository ----------------------------------------------------------------
def build(cache: Path, count: int, seed: int = 0) -> Path:
    """``count`` models in MLServer's repository layout (servekit reads it too), made once."""
    repo = cache / f"repo-{count}"
    if (repo / "manifest.json").exists():
        return repo
    import joblib
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    partial = cache / f"repo-{count}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    x, y = make_classification(n_samples=2000, n_features=FEATURES, n_informative=8, n_classes=3,
                               random_state=seed)
    probes = x[:PROBES]
    models = []
    started = time.perf_counter()
    for i in range(count):
        rows = rng.choice(len(x), 400, replace=False)
        draw = rng.random()
        if draw < 0.5:
            model: Any = LogisticRegression(C=float(rng.uniform(0.05, 5)), max_iter=300)
            kind, trees = "logreg", 0
        else:
            trees = int(rng.integers(5, 41)) if draw < 0.85 else int(rng.integers(100, 301))
            model = RandomForestClassifier(n_estimators=trees, random_state=i, n_jobs=1)
            kind = "forest"
        model.fit(x[rows], y[rows])
        name = f"m{i:04d}"
        folder = partial / name
        folder.mkdir()
        joblib.dump(model, folder / "model.joblib")
        (folder / "model-settings.json").write_text(json.dumps(
            {"name": name, "implementation": "mlserver_sklearn.SKLearnModel", "parameters": {"uri": "./model.joblib"}}))
        models.append({"name": name, "kind": kind, "trees": trees, "bytes": (folder / "model.joblib").stat().st_size,
                       "expected": [[int(v)] for v in model.predict(probes)]})
        if (i + 1) % 100 == 0:
            print(f"  built {i + 1}/{count} models ({time.perf_counter() - started:.0f} s)", flush=True)
    (partial / "manifest.json").write_text(json.dumps({"probes": probes.tolist(), "models": models}))
    shutil.rmtree(repo, ignore_errors=True)
    partial.rename(repo)
    return repo


# -- the load ------------------------------------------------------------------------
def zipf_share(count: int, s: float, top: int) -> float:
    weights = 1.0 / np.arange(1, count + 1) ** s
    return float(weights[:top].sum() / weights.sum())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bodies(probes: list[list[float]]) -> list[bytes]:
    return [orjson.dumps({"inputs": [{"name": "x", "shape": [1, FEATURES], "datatype": "FP64", "data": row}]})
            for row in probes]


def percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)) * 1000, 2) if values else None


class Load:
    """A closed loop of clients asking Zipf-drawn models; every answer checked."""

    def __init__(self, url: str, manifest: dict[str, Any], zipf: float, seed: int) -> None:
        self.url = url
        self.models = manifest["models"]
        self.bodies = bodies(manifest["probes"])
        order = np.random.default_rng(seed).permutation(len(self.models))  # which model has which rank
        weights = 1.0 / np.arange(1, len(self.models) + 1) ** zipf
        self.p = np.zeros(len(self.models))
        self.p[order] = weights / weights.sum()
        self.seed = seed
        self.seen: set[int] = set()
        # (start, seconds, model index, client's first request of it, right answer, status)
        self.records: list[tuple[float, float, int, bool, bool, int]] = []
        self.failures: list[str] = []

    async def request(self, session: aiohttp.ClientSession, index: int, probe: int) -> tuple[float, bool, int]:
        model = self.models[index]
        started = time.perf_counter()
        async with session.post(f"{self.url}/v2/models/{model['name']}/infer", data=self.bodies[probe],
                                headers={"Content-Type": "application/json"}) as reply:
            body = await reply.read()
            status = reply.status
        seconds = time.perf_counter() - started
        right = False
        if status == 200:
            outputs = orjson.loads(body)["outputs"][0]["data"]
            right = [int(v) for v in outputs] == model["expected"][probe]
        if not right and len(self.failures) < 10:
            self.failures.append(f"{model['name']}: {status} {body[:300]!r}")
        return seconds, right, status

    async def run(self, seconds: float, concurrency: int) -> None:
        stop = time.perf_counter() + seconds
        timeout = aiohttp.ClientTimeout(total=120)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency), timeout=timeout) as s:

            async def client(k: int) -> None:
                rng = np.random.default_rng(self.seed * 1000 + k)
                draws = rng.choice(len(self.models), size=200_000, p=self.p)
                j = 0
                while time.perf_counter() < stop:
                    index = int(draws[j % len(draws)])
                    j += 1
                    first = index not in self.seen
                    self.seen.add(index)
                    started = time.perf_counter()
                    try:
                        took, right, status = await self.request(s, index, j % PROBES)
                    except (aiohttp.ClientError, TimeoutError) as exc:
                        took, right, status = time.perf_counter() - started, False, 0
                        if len(self.failures) < 10:
                            self.failures.append(f"{self.models[index]['name']}: {type(exc).__name__}: {exc}")
                    self.records.append((started, took, index, first, right, status))

            await asyncio.gather(*(client(k) for k in range(concurrency)))


async def sample_memory(pid: int, into: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        memory = await asyncio.to_thread(tree_memory, pid)
        into.append(memory.pss_mb if memory.pss_mb is not None else memory.rss_mb)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)


def scrape(port: int) -> dict[str, float]:
    """servekit's residency counters from its metrics port (summed over labels and workers)."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        for name in ("servekit_model_loads_total", "servekit_model_evictions_total", "servekit_loaded_models",
                     "servekit_loaded_model_bytes"):
            if line.startswith((name + " ", name + "{")):
                if name == "servekit_model_loads_total" and 'result="failed"' in line:
                    out["load_failures"] = out.get("load_failures", 0) + float(line.rsplit(" ", 1)[1])
                    continue
                out[name] = out.get(name, 0) + float(line.rsplit(" ", 1)[1])
    return out


def ready_count(url: str) -> int:
    import urllib.request

    request = urllib.request.Request(f"{url}/v2/repository/index", data=b'{"ready": true}',
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return len(json.loads(reply.read()))
    except OSError:
        return -1


def summary(load: Load, since: float) -> dict[str, Any]:
    steady = [r for r in load.records if r[0] >= since]
    seconds = [r[1] for r in steady]
    firsts = [r[1] for r in load.records if r[3]]
    span = (max(r[0] + r[1] for r in steady) - since) if steady else 0.0
    return {
        "requests": len(load.records),
        "wrong_or_failed": sum(1 for r in load.records if not r[4]),
        "statuses": {str(s): sum(1 for r in load.records if r[5] == s) for s in sorted({r[5] for r in load.records})},
        "steady_requests": len(steady),
        "steady_rps": round(len(steady) / span, 1) if span > 0 else None,
        "steady_p50_ms": percentile(seconds, 50),
        "steady_p99_ms": percentile(seconds, 99),
        "first_requests": len(firsts),
        "first_request_p50_ms": percentile(firsts, 50),
        "first_request_p99_ms": percentile(firsts, 99),
        "models_asked": len(load.seen),
        "failures": load.failures,
    }


async def measure(server: Server, manifest: dict[str, Any], args: argparse.Namespace,
                  metrics_port: int | None) -> dict[str, Any]:
    assert server.proc is not None
    out: dict[str, Any] = {"ready_s": round(server.ready_s or 0, 2)}
    idle = tree_memory(server.proc.pid)
    out["pss_at_ready_mb"] = idle.pss_mb
    out["processes"] = idle.processes
    load = Load(server.url, manifest, args.zipf, args.seed)
    if metrics_port is not None:  # first requests to cold models, one at a time, by size
        models = manifest["models"]
        by_size = sorted(range(len(models)), key=lambda i: models[i]["bytes"])
        picks = [by_size[int(k)] for k in np.linspace(0, len(by_size) - 1, 20)]
        timeout = aiohttp.ClientTimeout(total=120)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            cold = []
            for index in picks:
                first, right, _ = await load.request(session, index, 0)
                again, right_again, _ = await load.request(session, index, 1)
                cold.append({"model": models[index]["name"], "kind": models[index]["kind"],
                             "trees": models[index]["trees"], "kb": round(models[index]["bytes"] / 1024, 1),
                             "first_ms": round(first * 1000, 2), "second_ms": round(again * 1000, 2),
                             "right": right and right_again})
        out["cold"] = cold
    samples: list[float] = []
    stop = asyncio.Event()
    sampler = asyncio.get_running_loop().create_task(sample_memory(server.proc.pid, samples, stop))
    before = scrape(metrics_port) if metrics_port is not None else {}
    started = time.perf_counter()
    warm = started + args.warmup
    await load.run(args.warmup, args.concurrency)
    at_warm = scrape(metrics_port) if metrics_port is not None else {}
    await load.run(args.seconds, args.concurrency)
    ended = time.perf_counter()
    after = scrape(metrics_port) if metrics_port is not None else {}
    stop.set()
    await sampler
    out.update(summary(load, warm))
    out["pss_max_mb"] = round(max(samples), 1) if samples else None
    out["pss_mean_mb"] = round(sum(samples) / len(samples), 1) if samples else None
    out["pss_samples"] = len(samples)
    if metrics_port is not None:
        steady_s = ended - warm
        out["loads"] = after.get("servekit_model_loads_total", 0) - before.get("servekit_model_loads_total", 0)
        out["evictions"] = after.get("servekit_model_evictions_total", 0) - before.get(
            "servekit_model_evictions_total", 0)
        out["steady_loads_per_s"] = round(
            (after.get("servekit_model_loads_total", 0) - at_warm.get("servekit_model_loads_total", 0)) / steady_s, 1)
        out["steady_evictions_per_s"] = round(
            (after.get("servekit_model_evictions_total", 0) - at_warm.get("servekit_model_evictions_total", 0))
            / steady_s, 1)
        steady_loads = after.get("servekit_model_loads_total", 0) - at_warm.get("servekit_model_loads_total", 0)
        out["steady_miss_rate"] = round(steady_loads / out["steady_requests"], 3) if out["steady_requests"] else None
        out["loaded_at_end"] = after.get("servekit_loaded_models")
        out["loaded_bytes_at_end_mb"] = round(after.get("servekit_loaded_model_bytes", 0) / 1e6, 1)
        out["load_failures"] = after.get("load_failures", 0)
    return out


def servekit_server(repo: Path, args: argparse.Namespace, log: Path) -> tuple[Server, int]:
    http, grpc, metrics = free_port(), free_port(), free_port()
    command = [sys.executable, "-m", "servekit", "serve", str(repo), "--http-port", str(http), "--grpc-port",
               str(grpc), "--metrics-port", str(metrics), "--parallel-workers", str(args.workers),
               "--no-load-models-at-startup", "--no-enable-grpc"]
    if args.budget_models:
        command += ["--max-loaded-models", str(args.budget_models)]
    if args.budget_mb:
        command += ["--max-loaded-memory", f"{args.budget_mb}MB"]
    return Server("servekit", command, repo, log, http, [], ready_paths=["/v2/health/ready"]), metrics


def mlserver_server(repo: Path, args: argparse.Namespace, log: Path) -> Server:
    http, grpc, metrics = free_port(), free_port(), free_port()
    env = {"MLSERVER_HTTP_PORT": str(http), "MLSERVER_GRPC_PORT": str(grpc), "MLSERVER_METRICS_PORT": str(metrics),
           "MLSERVER_PARALLEL_WORKERS": str(args.mlserver_workers)}
    return Server("mlserver", [str(Path(args.mlserver).resolve()), "start", str(repo)], repo, log, http, [],
                  env=env, ready_paths=["/v2/health/live"])


def run_one(name: str, server: Server, manifest: dict[str, Any], args: argparse.Namespace,
            metrics_port: int | None) -> dict[str, Any]:
    print(f"{name}: starting", flush=True)
    started = time.perf_counter()
    try:
        server.start(timeout=args.start_timeout)
        if metrics_port is None:  # MLServer: ready once every model is
            while ready_count(server.url) < len(manifest["models"]):
                if time.perf_counter() - started > args.start_timeout:
                    raise RuntimeError(f"{name}: not every model ready after {args.start_timeout:.0f} s")
                time.sleep(0.5)
            server.ready_s = time.perf_counter() - started
        print(f"{name}: ready in {server.ready_s:.1f} s; load for {args.warmup + args.seconds:.0f} s", flush=True)
        return asyncio.run(measure(server, manifest, args, metrics_port))
    except Exception as exc:  # a server that fails is reported, the other still runs
        return {"error": f"{type(exc).__name__}: {exc}"[:2000], "log_tail": server.log_tail()}
    finally:
        server.stop()


def cells(d: dict[str, Any]) -> dict[str, str]:
    """One server's column of the report's table."""

    def g(key: str) -> str:
        value = d.get(key)
        return "-" if value is None else f"{value:,}" if isinstance(value, int) else str(value)

    return {
        "time to ready, s": g("ready_s"),
        "PSS at ready, MB": g("pss_at_ready_mb"),
        "PSS under load: highest / mean, MB": f"{g('pss_max_mb')} / {g('pss_mean_mb')}",
        "requests (wrong or failed)": f"{g('requests')} ({g('wrong_or_failed')})",
        "steady requests/s": g("steady_rps"),
        "steady p50 / p99, ms": f"{g('steady_p50_ms')} / {g('steady_p99_ms')}",
        "client's first request of a model: p50 / p99, ms": f"{g('first_request_p50_ms')} / "
                                                             f"{g('first_request_p99_ms')}",
        "models asked": g("models_asked"),
        "requests that loaded their model (steady)": g("steady_miss_rate"),
        "loads / evictions per s (steady)": f"{g('steady_loads_per_s')} / {g('steady_evictions_per_s')}",
        "models loaded at the end (estimated MB)": f"{g('loaded_at_end')} ({g('loaded_bytes_at_end_mb')})",
    }


def markdown(result: dict[str, Any]) -> str:
    a, m = result["servekit"], result.get("mlserver") or {}
    setup = result["setup"]
    lines = [
        "# A thousand models on one server",
        "",
        f"{setup['models']} scikit-learn models ({setup['repository_mb']} MB of files: "
        f"{setup['kinds']}), requested by {setup['concurrency']} clients with a Zipf({setup['zipf']}) draw for "
        f"{setup['warmup']:.0f} + {setup['seconds']:.0f} s; servekit with {setup['servekit_workers']} worker(s), "
        f"budget {setup['budget_models'] or '-'} models / {setup['budget_mb'] or '-'} MB per worker, loading on first "
        f"request; MLServer {setup.get('mlserver_version', '')} loading every model at start "
        f"({setup['mlserver_workers']} parallel worker(s)). The budget's most asked models get "
        f"{setup['zipf_top_share']:.0%} of the requests (the best hit rate a budget this size allows). {setup['note']}",
        "",
        "| | servekit (lazy, budget) | MLServer (all loaded) |",
        "|---|---:|---:|",
    ]
    left, right = cells(a), cells(m)
    lines += [f"| {label} | {left[label]} | {right[label]} |" for label in left]
    for name, d in (("servekit", a), ("MLServer", m)):
        if d.get("error"):
            lines += ["", f"**{name} failed**: {d['error']}"]
    if a.get("cold"):
        lines += ["", "servekit, first request of a cold model and the one after it (one at a time, by size):", "",
                  "| model | kind | trees | KB | first ms | second ms |", "|---|---|---:|---:|---:|---:|"]
        for c in a["cold"]:
            lines.append(f"| {c['model']} | {c['kind']} | {c['trees']} | {c['kb']} | {c['first_ms']} | "
                         f"{c['second_ms']} |")
    lines += ["", f"Machine: {setup['machine']}. Made by `python benchmarks/thousand_models.py "
              f"{setup['argv']}` on {setup['date']}.", ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=60.0, help="steady part of the load")
    parser.add_argument("--warmup", type=float, default=15.0, help="load before the steady part")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--zipf", type=float, default=1.1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--budget-models", type=int, default=0, help="servekit's --max-loaded-models (0: models/10)")
    parser.add_argument("--budget-mb", type=float, default=0, help="servekit's --max-loaded-memory in MB (0: none)")
    parser.add_argument("--workers", type=int, default=1, help="servekit's worker processes")
    parser.add_argument("--mlserver", default=str(HERE / ".venv-mlserver" / "bin" / "mlserver"))
    parser.add_argument("--mlserver-workers", type=int, default=1, help="MLServer's parallel_workers")
    parser.add_argument("--no-mlserver", action="store_true")
    parser.add_argument("--start-timeout", type=float, default=1800.0)
    parser.add_argument("--cache", type=Path, default=HERE / "work" / "thousand")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "thousand_models")
    parser.add_argument("--note", default="", help="a sentence for the report (the machine's state)")
    args = parser.parse_args()
    if not 1 <= args.models <= 100_000 or args.concurrency < 1 or args.seconds <= 0:
        parser.error("--models 1..100000, --concurrency >= 1, --seconds > 0")
    if not args.budget_models:
        args.budget_models = max(1, args.models // 10)
    repo = build(args.cache, args.models)
    manifest = json.loads((repo / "manifest.json").read_text())
    kinds: dict[str, int] = {}
    for model in manifest["models"]:
        key = "LogisticRegression" if model["kind"] == "logreg" else (
            "RandomForest <= 40 trees" if model["trees"] <= 40 else "RandomForest 100-300 trees")
        kinds[key] = kinds.get(key, 0) + 1
    logs = args.cache / "logs"
    setup = {
        "models": args.models, "zipf": args.zipf, "concurrency": args.concurrency, "seconds": args.seconds,
        "warmup": args.warmup, "budget_models": args.budget_models, "budget_mb": args.budget_mb or None,
        "servekit_workers": args.workers, "mlserver_workers": args.mlserver_workers,
        # the share of requests whose model is among the budget's most asked: the best hit rate LRU can reach
        "zipf_top_share": round(float(zipf_share(args.models, args.zipf, args.budget_models)), 3),
        "repository_mb": round(sum(m["bytes"] for m in manifest["models"]) / 1e6, 1),
        "kinds": ", ".join(f"{v} {k}" for k, v in kinds.items()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"), "argv": " ".join(sys.argv[1:]), "note": args.note,
    }
    server, metrics_port = servekit_server(repo, args, logs / "servekit.log")
    result: dict[str, Any] = {"setup": setup, "servekit": run_one("servekit", server, manifest, args, metrics_port)}
    if not args.no_mlserver and Path(args.mlserver).exists():
        version = subprocess.run([str(Path(args.mlserver).parent / "python"), "-c",
                                  "import mlserver; print(mlserver.__version__)"], capture_output=True, text=True)
        setup["mlserver_version"] = version.stdout.strip()
        result["mlserver"] = run_one("mlserver", mlserver_server(repo, args, logs / "mlserver.log"), manifest, args,
                                     None)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    text = markdown(result)
    args.out.with_suffix(".md").write_text(text)
    print(text)
    wrong = result["servekit"].get("wrong_or_failed", 1) + (result.get("mlserver") or {}).get("wrong_or_failed", 0)
    return 0 if wrong == 0 and "error" not in result["servekit"] else 1


if __name__ == "__main__":
    sys.exit(main())
