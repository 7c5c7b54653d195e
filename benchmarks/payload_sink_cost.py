"""What payload logging costs an inference: one servekit process serving a
small doubling model, with payload logging off, to a file sink, and to an
HTTP sink at a port where nothing listens, and to a live HTTP receiver (a
process of its own; one binary-mode POST per event, and batches), each under
the same closed-loop load from ``servekit bench`` (V2 JSON).

    python benchmarks/payload_sink_cost.py [--duration 10] [--concurrency 16] [--shape 1,4]
                                           [--workers 1] [--sample-rate 1.0] [--output FILE.json]

For each variant it prints req/s, p50/p99 latency, the server's CPU
microseconds per request (its whole process tree, from /proc, over the
measured seconds), what the file sink wrote and what the sinks counted as
sent and dropped (``servekit_payload_events_*_total``). "unreachable" is the
claim that a dead sink costs the inference nothing: its CPU per request and
latency should match "off" within the machine's noise (the queue fills, and
further inferences are counted as dropped with one comparison each). The
"other load" column is CPU other processes used meanwhile, in cores: a
reading taken with other load is noise, not a result.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from loads import SERVEKIT, bench  # noqa: E402
from processes import CpuSample, Server, other_load  # noqa: E402

RUNTIME = '''
from servekit.runtimes.base import Runtime
from servekit.tensors import Tensor


class Doubler(Runtime):
    def predict(self, request):
        return self.response(request, [Tensor("doubled", request.inputs[0].data * 2)])
'''


# a CloudEvents receiver in a process of its own (its CPU is not the server's): 200 to every POST
RECEIVER = """
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        self.rfile.read(int(self.headers["content-length"]))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass

ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def repository(root: Path, logging: dict[str, Any] | None) -> Path:
    folder = root / "double"
    folder.mkdir(parents=True)
    (folder / "doubler.py").write_text(RUNTIME)
    settings: dict[str, Any] = {"name": "double", "implementation": "doubler.Doubler"}
    if logging is not None:
        settings["payload_logging"] = logging
    (folder / "model-settings.json").write_text(json.dumps(settings))
    return root


def payload_counts(metrics_url: str) -> dict[str, float]:
    """Sent and dropped events (by reason) summed over sinks."""
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        match = re.fullmatch(r"servekit_payload_events_(sent|dropped)_total\{(.*)\} (\S+)", line)
        if match is None:
            continue
        reason = re.search(r'reason="([^"]*)"', match[2])
        key = match[1] + (f":{reason[1]}" if reason else "")
        out[key] = out.get(key, 0.0) + float(match[3])
    return out


def measure(name: str, logging: dict[str, Any] | None, work: Path, args: argparse.Namespace,
            run: int) -> dict[str, Any]:
    folder = work / f"{run}-{name}"
    if logging is not None and str(logging["sink"]).startswith("file://"):
        logging = {**logging, "sink": f"file://{folder / 'payloads.jsonl'}"}
    root = repository(folder / "models", logging)
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    command = [*SERVEKIT, "serve", str(root), "--http-port", str(http_port), "--grpc-port", str(grpc_port),
               "--metrics-port", str(metrics_port), "--parallel-workers", str(args.workers)]
    server = Server(name, command, work, folder / "server.log", http_port, ["double"])
    server.start()
    try:
        grpc_url = f"127.0.0.1:{grpc_port}"
        common = ["--concurrency", str(args.concurrency), "--shape", args.shape, "--datatype", "FP64"]
        bench(server.url, grpc_url, "double", [*common, "--requests", "2000", "--warmup", "0"], timeout=120)
        assert server.proc is not None
        before = CpuSample.take(server.proc.pid)
        report = bench(server.url, grpc_url, "double",
                       [*common, "--duration", str(args.duration), "--warmup", "0"], timeout=args.duration + 120)
        after = CpuSample.take(server.proc.pid)
        if "error" in report:
            raise RuntimeError(f"{name}: servekit bench failed: {report['error']}")
        level = report["results"][0]
        seconds = level["duration_s"]
        time.sleep(1.0)  # the sinks' last batches
        counts = payload_counts(f"http://127.0.0.1:{metrics_port}/metrics")
    finally:
        server.stop()
    written = sum(p.stat().st_size for p in folder.glob("payloads.jsonl*") if not p.name.endswith(".lock"))
    return {
        "variant": name, "requests": level["requests"], "errors": level["errors"],
        "rps": round(level["throughput"], 1), "p50_ms": level["p50_ms"], "p99_ms": level["p99_ms"],
        # the server's CPU over the bench run (its only load), per request answered
        "cpu_us_per_request": round((after.tree_s - before.tree_s) / max(level["requests"], 1) * 1e6, 1),
        "other_load_cores": other_load(before, after, seconds),
        "file_bytes": written, "events": counts,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per variant")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--shape", default="1,4", help="the request tensor's shape (FP64)")
    parser.add_argument("--workers", type=int, default=1, help="server worker processes")
    parser.add_argument("--sample-rate", type=float, default=1.0, help="of the logging variants")
    parser.add_argument("--queue-size", type=int, default=10_000, help="events a sink keeps waiting")
    parser.add_argument("--variants", default="off,file,unreachable,http,http-batch,off",
                        help="which to run, in this order (off twice: a reading of the noise)")
    parser.add_argument("--output", type=Path, help="also write the results as JSON here")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="servekit-payloads-"))
    receiver_port = free_port()
    receiver = subprocess.Popen([sys.executable, "-c", RECEIVER, str(receiver_port)])
    try:
        nobody = free_port()  # nothing listens there: every connection is refused
        options = {"sample_rate": args.sample_rate, "queue_size": args.queue_size}
        variants: dict[str, dict[str, Any] | None] = {
            "off": None,
            "file": {"sink": "file:///set-per-run/payloads.jsonl", **options},
            "unreachable": {"sink": f"http://127.0.0.1:{nobody}/events", **options},
            "http": {"sink": f"http://127.0.0.1:{receiver_port}/events", **options},
            "http-batch": {"sink": f"http://127.0.0.1:{receiver_port}/events", "format": "batch", **options},
        }
        names = [name.strip() for name in args.variants.split(",") if name.strip()]
        unknown = [name for name in names if name not in variants]
        if unknown:
            parser.error(f"unknown variants {unknown}; choose from {', '.join(variants)}")
        results = [measure(name, variants[name], work, args, run) for run, name in enumerate(names)]
    finally:
        receiver.kill()
        receiver.wait()
        shutil.rmtree(work, ignore_errors=True)
    print(f"servekit, {args.workers} worker(s), c={args.concurrency}, shape {args.shape}, "
          f"{args.duration:g} s per variant, sample rate {args.sample_rate:g}")
    print(f"{'variant':<12} {'req/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'CPU us/req':>10} {'other load':>10}  events")
    for r in results:
        events = ", ".join(f"{k} {v:.0f}" for k, v in sorted(r["events"].items())) or "-"
        print(f"{r['variant']:<12} {r['rps']:>9.1f} {r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} "
              f"{r['cpu_us_per_request']:>10.1f} {r['other_load_cores']:>10.2f}  {events}"
              + (f"; file {r['file_bytes'] / 1e6:.1f} MB" if r["file_bytes"] else ""))
    if args.output:
        args.output.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                           "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
