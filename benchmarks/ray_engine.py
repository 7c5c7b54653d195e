"""One servekit process against the same models under Ray Serve through
servekit's engine (``servekit serve --engine ray``), on this machine, measured
with ``servekit bench``; and where the Ray path's extra time and CPU go.

    .venv/bin/python benchmarks/ray_engine.py                  # ~3 min
    .venv/bin/python benchmarks/ray_engine.py --seconds 3 --models iris-rf --concurrency 1

For each model and concurrency it reports requests per second, p50 and p99
(client side, ``servekit bench``) and the server's CPU per request (all of its
processes, from /proc). For the Ray path it also splits:

- CPU per request by process: Ray's HTTP proxy, servekit's ingress replica,
  the model replicas, Ray's controller and daemons (raylet, GCS, agents);
- time per request by hop, from Ray Serve's own metrics (the proxy's request
  latency, each deployment's processing latency) and servekit's statistics in
  the replica (queue and compute): proxy -> ingress -> model replica -> the
  model's predict.

On one machine the Ray path is expected to be slower: every request crosses
two more processes (proxy, ingress) and two Ray calls, each a serialisation
and a gRPC/shared-memory hop. What it buys is replicas on other machines.
Results go to benchmarks/results/ray_engine.{json,md}; numbers from a machine
with other load on it say so in ``other_cpu`` (cores used by other processes).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "src"))

from loads import SERVEKIT, bench  # noqa: E402
from processes import CpuSample, Server, descendants, other_load  # noqa: E402

from servekit.ray.local import LocalCluster, free_port  # noqa: E402

# which process of the Ray cluster does what (from its title, set by Ray)
KINDS = [
    ("ProxyActor", "ray proxy"),
    ("_servekit_ingress", "servekit ingress"),
    ("ServeReplica", "model replicas"),
    ("ServeController", "ray controller"),
    ("raylet", "raylet"),
    ("gcs_server", "gcs"),
]


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def kind_of(pid: int) -> str:
    try:
        title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "gone"
    return next((kind for key, kind in KINDS if key in title), "other ray")


def cpu_by_kind(pids: list[int]) -> dict[str, float]:
    """CPU seconds so far of each kind of process."""
    out: dict[str, float] = defaultdict(float)
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[kind_of(pid)] += (int(stat[11]) + int(stat[12])) / CLOCK_TICKS
    return dict(out)


CLOCK_TICKS = float(os.sysconf("SC_CLK_TCK"))


_SAMPLE = re.compile(r'^(ray_serve_\w+?)_(sum|count)\{([^}]*)\}\s+([0-9.eE+-]+)$')


def ray_latencies(metrics_port: int) -> dict[str, tuple[float, float]]:
    """(sum ms, count) of Ray Serve's latency histograms: the proxy's
    ``http_request_latency_ms`` and each deployment's ``processing_latency_ms``."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as answer:
            text = answer.read().decode()
    except OSError:
        return {}
    out: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for line in text.splitlines():
        found = _SAMPLE.match(line)
        if found is None:
            continue
        name, part, labels, value = found.groups()
        if name == "ray_serve_http_request_latency_ms":
            key = "proxy: whole request"
        elif name == "ray_serve_deployment_processing_latency_ms":
            deployment = re.search(r'deployment="([^"]*)"', labels)
            key = f"deployment {deployment.group(1) if deployment else '?'}"
        else:
            continue
        out[key][0 if part == "sum" else 1] += float(value)
    return {key: (s, c) for key, (s, c) in out.items()}


# where a profiled process's samples fall, by the innermost Python frame: a loop that
# calls into C/Cython (Ray's core worker, its gRPC threads, uvloop) shows as that loop
NATIVE_LOOPS = ("Worker.main_loop", "Thread.run", "_run_user_code_event_loop", "_run_router_event_loop",
                "run_forever", "_run_once")
BUCKETS = [
    ("servekit/", "servekit"),
    ("xgboost/", "the model's predict"),
    ("sklearn/", "the model's predict"),
    ("numpy/", "the model's predict"),
    ("ray/serve/", "Ray Serve (Python)"),
    ("ray/", "Ray core (Python)"),
    ("pickle", "serialisation"),
    ("msgpack", "serialisation"),
    ("starlette", "HTTP (uvicorn, starlette)"),
    ("uvicorn", "HTTP (uvicorn, starlette)"),
    ("h11", "HTTP (uvicorn, starlette)"),
    ("concurrent/futures", "thread pool hand-offs"),
    ("asyncio", "event loop (Python)"),
]
NATIVE = "Ray's native code (core worker, gRPC, event loops)"


def bucket_of(leaf: str) -> str:
    if not leaf or leaf.startswith(NATIVE_LOOPS):
        return NATIVE
    where = leaf[leaf.rfind("(") + 1:] if "(" in leaf else leaf
    return next((name for key, name in BUCKETS if key in where), "other Python")


def start_profile(pid: int, seconds: float, path: Path) -> subprocess.Popen[bytes] | None:
    """py-spy sampling ``pid`` (without pausing it) into ``path``, if py-spy is here."""
    spy = Path(sys.executable).with_name("py-spy")
    if not spy.exists():
        return None
    return subprocess.Popen([str(spy), "record", "--nonblocking", "-r", "250", "-d", str(max(1, int(seconds))),
                             "-p", str(pid), "--format", "raw", "-o", str(path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def read_profile(path: Path) -> dict[str, Any]:
    """Share of on-CPU samples per bucket (by the innermost frame), and the top functions."""
    buckets: dict[str, int] = defaultdict(int)
    leaves: dict[str, int] = defaultdict(int)
    total = 0
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return {}
    for line in lines:
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        leaf = stack.split(";")[-1]
        buckets[bucket_of(leaf)] += count
        leaves[leaf[:160]] += count
        total += count
    if not total:
        return {}
    return {
        "samples": total,
        "share": {k: round(v / total, 3) for k, v in sorted(buckets.items(), key=lambda kv: -kv[1])},
        "top": [[leaf, round(n / total, 3)] for leaf, n in sorted(leaves.items(), key=lambda kv: -kv[1])[:8]],
    }


def replica_stats(url: str, model: str) -> tuple[float, float, float]:
    """(requests, queue ns, compute ns) from servekit's statistics in the replica."""
    try:
        with urllib.request.urlopen(f"{url}/v2/models/{model}/stats", timeout=10) as answer:
            stats = json.loads(answer.read())["model_stats"]
    except (OSError, ValueError, KeyError):
        return (0.0, 0.0, 0.0)
    count = sum(s["inference_count"] for s in stats)
    queue = sum(s["inference_stats"]["queue"]["ns"] for s in stats)
    compute = sum(s["inference_stats"]["compute_infer"]["ns"] for s in stats)
    return (float(count), float(queue), float(compute))


def measure(server: Server, model: str, data: Path, concurrency: int, seconds: float,
            pids: list[int], metrics_port: int | None, metrics_wait: float,
            profile: Path | None = None) -> dict[str, Any]:
    assert server.proc is not None
    roots = pids or [server.proc.pid]
    before = [CpuSample.take(pid) for pid in roots]
    kinds_before = cpu_by_kind([p for root in roots for p in descendants(root)]) if pids else {}
    stats_before = replica_stats(server.url, model)
    latencies_before = ray_latencies(metrics_port) if metrics_port else {}
    profiles: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
    if profile is not None and pids:
        profile.mkdir(parents=True, exist_ok=True)
        for pid in (p for root in pids for p in descendants(root)):
            kind = kind_of(pid)
            title = Path(f"/proc/{pid}/cmdline").read_bytes() if Path(f"/proc/{pid}/cmdline").exists() else b""
            if kind == "model replicas" and f":{model}".encode() not in title:
                continue
            if kind in ("ray proxy", "servekit ingress", "model replicas") and kind not in profiles:
                path = profile / f"{model}-c{concurrency}-{kind.replace(' ', '-')}.txt"
                spy = start_profile(pid, seconds, path)
                if spy is not None:
                    profiles[kind] = (spy, path)
    started = time.perf_counter()
    report = bench(server.url, "127.0.0.1:1", model, [
        "--input-file", str(data / f"{model}.json"), "--concurrency", str(concurrency),
        "--duration", str(seconds), "--warmup", "1"], timeout=seconds * 3 + 120)
    elapsed = time.perf_counter() - started
    after = [CpuSample.take(pid) for pid in roots]
    out: dict[str, Any] = {"model": model, "concurrency": concurrency}
    if "error" in report or not report.get("results"):
        out["error"] = report.get("error", "no results")
        return out
    level = report["results"][0]
    ok = max(1, int(level.get("requests", 0)) - int(level.get("errors", 0)))
    server_s = sum(a.tree_s - b.tree_s for a, b in zip(after, before, strict=True))
    out.update({
        "rps": level["throughput"], "p50_ms": level["p50_ms"], "p99_ms": level["p99_ms"],
        "errors": level["errors"], "requests": level["requests"],
        # warm-up requests are in the CPU too: counted with the measured ones they are few
        "cpu_ms_per_request": round(server_s / ok * 1000, 3),
        "server_cpu": round(server_s / elapsed, 2),
        "other_cpu": other_load(before[0], after[0], elapsed) if len(roots) == 1 else None,
    })
    stats_after = replica_stats(server.url, model)
    calls = stats_after[0] - stats_before[0]
    if calls > 0:
        out["replica_queue_ms"] = round((stats_after[1] - stats_before[1]) / calls / 1e6, 3)
        out["replica_compute_ms"] = round((stats_after[2] - stats_before[2]) / calls / 1e6, 3)
    if pids:
        kinds_after = cpu_by_kind([p for root in roots for p in descendants(root)])
        out["cpu_ms_per_request_by_process"] = {
            kind: round((kinds_after.get(kind, 0.0) - kinds_before.get(kind, 0.0)) / ok * 1000, 3)
            for kind in sorted(set(kinds_after) | set(kinds_before)) if kind != "gone"
        }
    if profiles:
        out["profile"] = {}
        for kind, (spy, path) in profiles.items():
            try:
                spy.wait(timeout=60)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait()
            out["profile"][kind] = read_profile(path)
    if metrics_port:
        time.sleep(metrics_wait)  # Ray exports its metrics every few seconds
        latencies_after = ray_latencies(metrics_port)
        hops = {}
        for key, (total, count) in latencies_after.items():
            total0, count0 = latencies_before.get(key, (0.0, 0.0))
            if count - count0 > 0:
                hops[key] = round((total - total0) / (count - count0), 3)
        out["ray_mean_latency_ms"] = hops
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="iris-rf,fashion-xgboost")
    parser.add_argument("--concurrency", default="1,16")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--ray-cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    parser.add_argument("--replica-cpus", type=float, default=0.5, help="CPUs Ray reserves per replica")
    parser.add_argument("--metrics-wait", type=float, default=12.0,
                        help="seconds to wait for Ray's metrics after each level (0: no hop times)")
    parser.add_argument("--profile", action=argparse.BooleanOptionalAction, default=True,
                        help="sample Ray's proxy, the ingress and the model's replica with py-spy during the "
                             "highest concurrency of each model (on-CPU samples by code: Ray, servekit, HTTP ...)")
    parser.add_argument("--output", default=str(HERE / "results" / "ray_engine"),
                        help="write OUTPUT.json and OUTPUT.md")
    args = parser.parse_args()
    models = [m for m in args.models.split(",") if m]
    levels = [int(c) for c in args.concurrency.split(",") if c]
    work = HERE / "work"
    if not (work / "repo").is_dir() or not (work / "data" / "floor.json").is_file():
        log("training the benchmark models (benchmarks/train.py) ...")
        subprocess.run([sys.executable, str(HERE / "train.py"), str(work)], check=True)
    repo, data = work / "repo", work / "data"
    results: dict[str, Any] = {"seconds": args.seconds, "models": models, "concurrency": levels,
                               "ray_cpus": args.ray_cpus, "replica_cpus": args.replica_cpus, "runs": {}}
    logs = Path("/tmp") / f"servekit-ray-bench-{os.getpid()}"

    # 1. one servekit process
    port = free_port()
    single = Server("servekit", [*SERVEKIT, "serve", str(repo), "--http-port", str(port), "--grpc-port",
                                 str(free_port()), "--metrics-port", str(free_port()), "--parallel-workers", "1"],
                    ROOT, logs / "servekit.log", port, models)
    log(f"servekit (one process): ready in {single.start():.1f} s")
    try:
        results["runs"]["servekit"] = [measure(single, m, data, c, args.seconds, [], None, 0)
                                       for m in models for c in levels]
    finally:
        single.stop()
    for row in results["runs"]["servekit"]:
        log(f"  servekit   {row['model']:16} c={row['concurrency']:<3} {row.get('rps', 0):8.1f} req/s  "
            f"p99 {row.get('p99_ms')} ms  cpu {row.get('cpu_ms_per_request')} ms/req")

    # 2. the same repository under Ray Serve (a private local cluster)
    with LocalCluster(num_cpus=args.ray_cpus) as cluster:
        port = free_port()
        ray_server = Server("servekit-ray", [*SERVEKIT, "serve", "--engine", "ray", str(repo), "--http-port",
                                             str(port), "--ray-num-cpus", str(args.replica_cpus)],
                            ROOT, logs / "servekit-ray.log", port, models, env=cluster.env)
        log(f"servekit on Ray Serve: ready in {ray_server.start(timeout=600):.1f} s")
        try:
            assert ray_server.proc is not None
            pids = [cluster.pid(), ray_server.proc.pid]
            metrics = cluster.metrics_port if args.metrics_wait > 0 else None
            results["runs"]["servekit-ray"] = [
                measure(ray_server, m, data, c, args.seconds, pids, metrics, args.metrics_wait,
                        logs / "profiles" if args.profile and c == max(levels) else None)
                for m in models for c in levels]
        finally:
            ray_server.stop()
    for row in results["runs"]["servekit-ray"]:
        log(f"  ray engine {row['model']:16} c={row['concurrency']:<3} {row.get('rps', 0):8.1f} req/s  "
            f"p99 {row.get('p99_ms')} ms  cpu {row.get('cpu_ms_per_request')} ms/req  "
            f"by process {row.get('cpu_ms_per_request_by_process')}  hops {row.get('ray_mean_latency_ms')}")
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    output.with_suffix(".md").write_text(render(results))
    log(f"wrote {output.with_suffix('.json')} and {output.with_suffix('.md')}")
    return 0


def render(results: dict[str, Any]) -> str:
    lines = [
        "# One servekit process vs servekit on Ray Serve (`servekit serve --engine ray`)",
        "",
        f"`benchmarks/ray_engine.py`: {results['seconds']} s per level, `servekit bench` (V2 JSON, one row), "
        f"local Ray cluster with {results['ray_cpus']} CPUs, {results['replica_cpus']} CPU per replica.",
        "",
        "| model | conc. | servekit req/s | Ray req/s | ratio | servekit p99 ms | Ray p99 ms "
        "| servekit CPU ms/req | Ray CPU ms/req |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    ray_rows = {(r["model"], r["concurrency"]): r for r in results["runs"].get("servekit-ray", [])}
    for row in results["runs"].get("servekit", []):
        other = ray_rows.get((row["model"], row["concurrency"]), {})
        ratio = (round(other["rps"] / row["rps"], 2) if row.get("rps") and other.get("rps") else "")
        lines.append(f"| {row['model']} | {row['concurrency']} | {row.get('rps', '-')} | {other.get('rps', '-')} "
                     f"| {ratio} | {row.get('p99_ms', '-')} | {other.get('p99_ms', '-')} "
                     f"| {row.get('cpu_ms_per_request', '-')} | {other.get('cpu_ms_per_request', '-')} |")
    lines += ["", "## Where the Ray path's CPU goes (ms per request, by process)", "",
              "| model | conc. | " + " | ".join(kind for _, kind in KINDS) + " | other ray |",
              "|---|---|" + "---|" * (len(KINDS) + 1)]
    for row in results["runs"].get("servekit-ray", []):
        split = row.get("cpu_ms_per_request_by_process", {})
        cells = [str(split.get(kind, "-")) for _, kind in KINDS] + [str(split.get("other ray", "-"))]
        lines.append(f"| {row['model']} | {row['concurrency']} | " + " | ".join(cells) + " |")
    lines += ["", "## Where the Ray path's time goes (mean ms per request)", "",
              "Ray Serve's metrics: the proxy's whole request, then each deployment's processing "
              "(the ingress's includes its call to the model); servekit's statistics in the replica: "
              "queue and predict.", "",
              "| model | conc. | proxy (whole) | ingress | model deployment | replica queue | replica predict |",
              "|---|---|---|---|---|---|---|"]
    for row in results["runs"].get("servekit-ray", []):
        hops = row.get("ray_mean_latency_ms", {})
        lines.append(f"| {row['model']} | {row['concurrency']} | {hops.get('proxy: whole request', '-')} "
                     f"| {hops.get('deployment _servekit_ingress', '-')} | {hops.get('deployment ' + row['model'], '-')} "
                     f"| {row.get('replica_queue_ms', '-')} | {row.get('replica_compute_ms', '-')} |")
    profiled = [row for row in results["runs"].get("servekit-ray", []) if row.get("profile")]
    if profiled:
        lines += ["", "## Inside the Ray path's processes (py-spy, share of on-CPU samples by code)", ""]
        for row in profiled:
            for kind, found in row["profile"].items():
                if not found:
                    continue
                shares = ", ".join(f"{name} {share:.0%}" for name, share in found["share"].items())
                lines.append(f"- {row['model']}, concurrency {row['concurrency']}, **{kind}** "
                             f"({found['samples']} samples): {shares}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
