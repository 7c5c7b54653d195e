"""servekit's native-flavour path against ``mlflow models serve`` on the same MLflow model, same run.

    python benchmarks/mlflow_serve.py [--seconds 10] [--concurrency 1,16] [--rows 1] [--workers 1]

The model (built once, offline, in ``benchmarks/work/mlflow_serve/``): a
scikit-learn RandomForest (50 trees, depth 8) on the breast-cancer table (30
named columns), saved by ``mlflow.sklearn.save_model`` with the signature
MLflow infers from the DataFrame. servekit serves that folder (its sklearn
flavour through servekit's sklearn runtime); MLflow serves it with ``mlflow
models serve --env-manager local`` (uvicorn, pyfunc). Both get the same
worker count (``--workers``).

Both are sent the same bytes: a ``dataframe_split`` body of ``--rows`` rows
to ``POST /invocations``, by ``servekit bench --body-file`` at each
closed-loop ``--concurrency``; servekit is also measured on V2
(``/v2/models/{m}/infer``, one input per column). Before measuring, the two
servers' answers to the body are compared. Reported: requests/s, p50 and p99
latency, and the ratio servekit / MLflow (throughput: higher is better for
servekit; latency: lower). Results go to ``benchmarks/results/mlflow_serve.{json,md}``
(``--out`` to write elsewhere). Run on a quiet machine; numbers from a busy
one are only a check that it runs.
"""

from __future__ import annotations

import argparse
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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from processes import Server  # noqa: E402

BIN = Path(sys.executable).parent
MODEL = "cancer"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def build(cache: Path) -> Path:
    """The MLflow model folder, made once."""
    folder = cache / MODEL
    if (folder / "MLmodel").exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)  # what a failed build left
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import mlflow.sklearn
        from mlflow.models import infer_signature
        from sklearn.datasets import load_breast_cancer
        from sklearn.ensemble import RandomForestClassifier

        frame = load_breast_cancer(as_frame=True)
        model = RandomForestClassifier(n_estimators=50, max_depth=8, random_state=0).fit(frame.data, frame.target)
        cache.mkdir(parents=True, exist_ok=True)
        mlflow.sklearn.save_model(model, str(folder), signature=infer_signature(frame.data, model.predict(frame.data)),
                                 skops_trusted_types=["sklearn.tree._tree.Tree"])  # our own file
    return folder


def bodies(rows: int, work: Path) -> tuple[Path, Path]:
    """(the /invocations body, the V2 body) with the same ``rows`` rows."""
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).data.iloc[:rows]
    split = {"dataframe_split": {"columns": list(frame.columns), "data": frame.to_numpy().tolist()}}
    v2 = {"inputs": [{"name": c, "shape": [rows, 1], "datatype": "FP64", "data": frame[c].tolist()}
                     for c in frame.columns]}
    invocations, infer = work / f"invocations-{rows}.json", work / f"v2-{rows}.json"
    invocations.write_text(json.dumps(split))
    infer.write_text(json.dumps(v2))
    return invocations, infer


def bench(url: str, body: Path, path: str, concurrency: str, seconds: float) -> list[dict[str, Any]]:
    out = subprocess.run(
        [str(BIN / "servekit"), "bench", MODEL, "--url", url, "--body-file", str(body), "--path", path,
         "--concurrency", concurrency, "--duration", str(seconds), "--warmup", "2", "--format", "json",
         "--no-progress"],
        capture_output=True, text=True, check=True,
    )
    return list(json.loads(out.stdout)["results"])


def answer(url: str, body: Path) -> Any:
    import urllib.request

    request = urllib.request.Request(url + "/invocations", data=body.read_bytes(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as reply:
        return json.loads(reply.read())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds measured per level")
    parser.add_argument("--concurrency", default="1,16", help="closed-loop levels")
    parser.add_argument("--rows", type=int, default=1, help="rows per request")
    parser.add_argument("--workers", type=int, default=1, help="worker processes of each server")
    parser.add_argument("--cache", type=Path, default=HERE / "work" / "mlflow_serve")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "mlflow_serve")
    args = parser.parse_args()

    folder = build(args.cache)
    invocations, infer = bodies(args.rows, args.cache)
    logs = args.cache / "logs"
    servekit_port, mlflow_port = free_port(), free_port()
    # mlflow models serve runs `uvicorn` from PATH, as in an activated virtualenv
    env = {"PYTHONWARNINGS": "ignore", "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    servers = [
        Server("servekit", [str(BIN / "servekit"), "serve", str(folder), "--http-port", str(servekit_port),
                            "--grpc-port", str(free_port()), "--metrics-port", str(free_port()),
                            "--parallel-workers", str(args.workers)],
               HERE, logs / "servekit.log", servekit_port, [MODEL], env, ["/health"]),
        Server("mlflow", [str(BIN / "mlflow"), "models", "serve", "-m", str(folder), "--env-manager", "local",
                          "-h", "127.0.0.1", "-p", str(mlflow_port), "-w", str(args.workers)],
               HERE, logs / "mlflow.log", mlflow_port, [MODEL], env, ["/ping"]),
    ]
    results: dict[str, Any] = {
        "model": "RandomForestClassifier(50 trees, depth 8), 30 columns, mlflow.sklearn",
        "rows": args.rows, "workers": args.workers, "seconds": args.seconds,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores", "when": time.strftime("%Y-%m-%d %H:%M"),
        "runs": {},
    }
    try:
        for server in servers:
            results.setdefault("ready_s", {})[server.name] = round(server.start(), 2)
        ours, theirs = (answer(s.url, invocations) for s in servers)
        if ours != theirs:
            raise SystemExit(f"the answers differ: servekit {ours} vs MLflow {theirs}")
        results["answer"] = ours
        runs = results["runs"]
        runs["servekit /invocations"] = bench(servers[0].url, invocations, "/invocations", args.concurrency, args.seconds)
        runs["mlflow /invocations"] = bench(servers[1].url, invocations, "/invocations", args.concurrency, args.seconds)
        runs["servekit V2"] = bench(servers[0].url, infer, f"/v2/models/{MODEL}/infer", args.concurrency, args.seconds)
    finally:
        for server in servers:
            server.stop()
    write(results, args.out)


def _level(levels: list[dict[str, Any]], concurrency: int) -> dict[str, Any]:
    return next(level for level in levels if level.get("concurrency") == concurrency)


def write(results: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    runs = results["runs"]
    lines = [
        f"# servekit vs `mlflow models serve` ({results['when']}, {results['machine']})",
        "",
        f"{results['model']}; {results['rows']} row(s) per request, {results['workers']} worker(s) each, "
        f"{results['seconds']} s per level. Ready after: " + ", ".join(f"{k} {v} s" for k, v in results["ready_s"].items()),
        "",
        "| concurrency | server, path | req/s | p50 ms | p99 ms | errors |",
        "|---|---|---|---|---|---|",
    ]
    ratios = []
    for level in runs["servekit /invocations"]:
        c = level["concurrency"]
        for name, levels in runs.items():
            each = _level(levels, c)
            lines.append(f"| {c} | {name} | {each['throughput']:.0f} | {each['p50_ms']:.2f} | {each['p99_ms']:.2f} | "
                         f"{each.get('errors', 0)} |")
        ours, theirs = level, _level(runs["mlflow /invocations"], c)
        ratios.append(f"| {c} | {ours['throughput'] / theirs['throughput']:.1f}x | {theirs['p50_ms'] / ours['p50_ms']:.1f}x | "
                      f"{theirs['p99_ms'] / ours['p99_ms']:.1f}x |")
    lines += ["", "servekit /invocations against MLflow's, same body (higher: servekit better):", "",
              "| concurrency | throughput | p50 latency | p99 latency |", "|---|---|---|---|", *ratios, ""]
    out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
