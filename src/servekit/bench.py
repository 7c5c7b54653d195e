"""``servekit bench``: a load generator for any Open Inference Protocol V2 server.

Like Triton's perf_analyzer: it sweeps concurrency levels (closed loop, one
request in flight per connection) or holds a fixed request rate (open loop,
latency counted from the scheduled send time so a slow server cannot hide its
queue), over V2 JSON, Triton's binary tensor extension or V2 gRPC with
``raw_input_contents``; the requests and clients are in :mod:`servekit.loadgen`.

When the server answers the statistics extension (``GET /v2/models/{m}/stats``,
as servekit and Triton do) each level also reports where the server spent the
time: queueing, computing, and the average batch. With several server worker
processes the statistics come from one of them (asked over one kept-alive
connection), so they are a sample, not a total.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import re
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from servekit.errors import ConfigError, ServekitError
from servekit.loadgen import (
    Recorder,
    Target,
    closed_loop,
    load_input_file,
    open_loop,
    random_tensor,
)
from servekit.tensors import Tensor

PROTOCOLS = ("json", "binary", "grpc")
FORMATS = ("table", "json", "csv")
STRAGGLER_SECONDS = 30.0


@dataclass
class LevelResult:
    """One measured level of a sweep (a concurrency or a request rate)."""

    protocol: str
    concurrency: int | None
    rate: float | None
    requests: int
    errors: int
    duration_s: float
    throughput: float
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    p999_ms: float | None
    mean_ms: float | None
    max_ms: float | None
    server_queue_us: float | None = None
    server_compute_us: float | None = None
    server_batch: float | None = None
    client_cpu: float | None = None  # cores this client used: near 1.0 means it may be the limit
    phase: str | None = None  # with --find-rate: which search or check this level belongs to
    first_error: str | None = None


async def run_level(target: Target, *, concurrency: int | None, rate: float | None, duration: float,
                    warmup: float, limit: int | None, max_inflight: int, progress: bool) -> LevelResult:
    label = f"c={concurrency}" if concurrency is not None else f"rate={rate:g}/s"
    recorder = Recorder(label, duration, limit, progress)
    stop = asyncio.Event()
    if concurrency is not None:
        load = asyncio.create_task(closed_loop(target, recorder, concurrency, stop))
    else:
        assert rate is not None
        load = asyncio.create_task(open_loop(target, recorder, rate, max_inflight, stop))
    shown = asyncio.create_task(recorder.show(stop))
    if warmup > 0:
        await asyncio.wait([load], timeout=warmup)
    before = await asyncio.to_thread(target.server_stats)
    recorder.recording, recorder.started = True, time.perf_counter()
    cpu_started = time.process_time()
    await asyncio.wait([load], timeout=duration if limit is None else None)
    elapsed = time.perf_counter() - recorder.started
    cpu = time.process_time() - cpu_started
    recorder.recording = False
    stop.set()
    # answers still owed get a grace period; a server that hangs must not hang the client
    finished, _ = await asyncio.wait([load], timeout=STRAGGLER_SECONDS)
    if not finished:
        load.cancel()
        recorder.errors += 1
        recorder.first_error = recorder.first_error or (
            f"requests in flight got no answer {STRAGGLER_SECONDS:.0f} s after the level ended")
    await asyncio.gather(load, shown, return_exceptions=True)
    after = await asyncio.to_thread(target.server_stats)
    result = summarize(target.protocol, concurrency, rate, recorder, elapsed, before, after)
    result.client_cpu = round(cpu / elapsed, 2) if elapsed > 0 else None
    return result


def summarize(protocol: str, concurrency: int | None, rate: float | None, recorder: Recorder,
              elapsed: float, before: dict[str, int] | None, after: dict[str, int] | None) -> LevelResult:
    ms = np.asarray(recorder.latencies, dtype=np.float64) / 1e6
    pct = [round(float(v), 3) for v in np.percentile(ms, [50, 90, 99, 99.9])] if ms.size else [None] * 4
    result = LevelResult(
        protocol=protocol, concurrency=concurrency, rate=rate, requests=int(ms.size),
        errors=recorder.errors, duration_s=round(elapsed, 3),
        throughput=round(ms.size / elapsed, 2) if elapsed > 0 else 0.0,
        p50_ms=pct[0], p90_ms=pct[1], p99_ms=pct[2], p999_ms=pct[3],
        mean_ms=round(float(ms.mean()), 3) if ms.size else None,
        max_ms=round(float(ms.max()), 3) if ms.size else None,
        first_error=recorder.first_error,
    )
    if before is not None and after is not None:
        inferences = after["inference"] - before["inference"]
        executions = after["execution"] - before["execution"]
        queue, compute = after["queue_ns"] - before["queue_ns"], after["compute_ns"] - before["compute_ns"]
        if inferences > 0 and executions > 0 and queue >= 0 and compute >= 0:
            result.server_queue_us = round(queue / inferences / 1e3, 1)
            result.server_compute_us = round(compute / executions / 1e3, 1)
            result.server_batch = round(inferences / executions, 2)
    return result


def sustained(result: LevelResult, p99_ms: float) -> bool:
    """The offered rate was served: no error, at least 95 % of it answered in
    the window (give or take two answers still on their way at its end), and
    p99 (from the scheduled send times) under the bound."""
    assert result.rate is not None
    answered = result.throughput * result.duration_s + 2
    return (result.errors == 0 and result.p99_ms is not None and result.p99_ms < p99_ms
            and answered >= 0.95 * result.rate * result.duration_s)


async def find_rate(target: Target, args: argparse.Namespace, p99_ms: float,
                    level: Any) -> tuple[float | None, list[LevelResult]]:
    """The highest open-loop rate sustained with p99 under ``p99_ms``: doubling
    from --start-rate until a rate is not sustained, then --search-steps
    bisections between the last sustained and the first failed rate. A rate
    counts as not sustained only when --tries measurements of it in a row fail:
    on a shared machine a neighbour's burst must not end the search."""
    probes: list[LevelResult] = []
    good: float | None = None
    bad: float | None = None

    async def holds(rate: float) -> bool:
        for _ in range(max(1, args.tries)):
            result = await level(rate)
            probes.append(result)
            if sustained(result, p99_ms):
                return True
        return False

    rate = args.start_rate
    while rate <= args.max_rate:
        if not await holds(rate):
            bad = rate
            break
        good, rate = rate, rate * 2
    if good is None or bad is None:
        return good, probes
    for _ in range(args.search_steps):
        middle = round((good + bad) / 2, 1)
        if await holds(middle):
            good = middle
        else:
            bad = middle
    return good, probes


async def sweep(target: Target, args: argparse.Namespace) -> list[LevelResult]:
    results = []
    if getattr(args, "find_rate", None):
        async def level(rate: float) -> LevelResult:
            return await run_level(target, concurrency=None, rate=rate, duration=args.duration,
                                   warmup=args.warmup, limit=None, max_inflight=args.max_inflight,
                                   progress=args.progress)

        args.sustainable = {}
        try:
            for bound in args.find_rate:
                found, probes = await find_rate(target, args, bound, level)
                for probe in probes:
                    probe.phase = f"search p99<{bound:g}ms"
                results.extend(probes)
                entry: dict[str, Any] = {"p99_bound_ms": bound, "rate": found}
                if found is not None:
                    for share in (0.5, 0.9):
                        at = await level(round(found * share, 1))
                        at.phase = f"{share:.0%} of {found:g}/s"
                        results.append(at)
                        entry[f"at_{round(share * 100)}"] = {"rate": at.rate, "p99_ms": at.p99_ms,
                                                             "p999_ms": at.p999_ms, "errors": at.errors}
                args.sustainable[f"{bound:g}"] = entry
        finally:
            await target.close()
        return results
    levels: list[tuple[int | None, float | None]] = (
        [(None, r) for r in args.rate] if args.rate else [(c, None) for c in args.concurrency]
    )
    try:
        for concurrency, rate in levels:
            results.append(await run_level(
                target, concurrency=concurrency, rate=rate, duration=args.duration,
                warmup=args.warmup, limit=args.requests, max_inflight=args.max_inflight,
                progress=args.progress))
    finally:
        await target.close()
    return results


# -- output ---------------------------------------------------------------------------
COLUMNS = ["protocol", "concurrency", "rate", "requests", "errors", "throughput", "p50_ms",
           "p90_ms", "p99_ms", "p999_ms", "mean_ms", "max_ms", "server_queue_us", "server_compute_us",
           "server_batch", "client_cpu"]


def render(results: list[LevelResult], fmt: str, meta: dict[str, Any]) -> str:
    """Results as an aligned table, a JSON document or CSV rows."""
    if fmt == "json":
        return json.dumps({**meta, "results": [asdict(r) for r in results]}, indent=2) + "\n"
    rows = [asdict(r) for r in results]
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=[*COLUMNS, "duration_s", "first_error", "phase"])
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue()
    header = ["level", "req/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "errors", "queue us", "compute us",
              "batch", "client cpu"]
    table = [header]
    for r in results:
        level = f"c={r.concurrency}" if r.concurrency is not None else f"{r.rate:g}/s"
        table.append([level, f"{r.throughput:.1f}", *(_num(v) for v in (r.p50_ms, r.p90_ms, r.p99_ms, r.p999_ms)),
                      str(r.errors), *(_num(v) for v in (r.server_queue_us, r.server_compute_us,
                                                          r.server_batch, r.client_cpu))])
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = [f"{meta['model']} over {meta['protocol']} ({meta['body_bytes']} bytes a request)"]
    lines += ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in table]
    lines += [f"first error: {r.first_error}" for r in results if r.first_error]
    for bound, entry in (meta.get("sustainable") or {}).items():
        if entry["rate"] is None:
            lines.append(f"p99 < {bound} ms: not sustained even at the start rate")
            continue
        lines.append(f"p99 < {bound} ms: sustained up to {entry['rate']:g} req/s; " + "; ".join(
            f"at {key[3:]}% ({entry[key]['rate']:g}/s) p99 {_num(entry[key]['p99_ms'])} ms, "
            f"p99.9 {_num(entry[key]['p999_ms'])} ms" for key in ("at_50", "at_90") if key in entry))
    return "\n".join(lines) + "\n"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


# -- the command ----------------------------------------------------------------------
def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("values must be positive integers")
    return values


def _float_list(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError("rates must be positive")
    return values


def configure(parser: argparse.ArgumentParser) -> None:
    """The ``servekit bench`` flags."""
    parser.description = "Drive load at a V2 inference server and report throughput and latency."
    parser.add_argument("model", help="model name")
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="server HTTP address")
    parser.add_argument("--grpc-url", default=None, help="host:port for gRPC (default: HTTP port + 1)")
    parser.add_argument("--model-version", default="", help="model version (default: the server's)")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="json",
                        help="json: V2 JSON; binary: Triton's binary tensors; grpc: V2 gRPC")
    load = parser.add_mutually_exclusive_group()
    load.add_argument("--concurrency", type=_int_list, default=[1, 16, 64],
                      help="closed-loop levels, e.g. 1,16,64 (default)")
    load.add_argument("--rate", type=_float_list, default=None,
                      help="open-loop request rates per second, e.g. 100,500 (latency from the scheduled send time)")
    load.add_argument("--find-rate", type=_float_list, default=None, metavar="P99_MS",
                      help="open loop: find the highest rate sustained with p99 under each bound, e.g. 10,100 "
                           "(no errors, >= 95%% of the rate answered), then measure p99/p99.9 at 50%% and 90%% of it")
    parser.add_argument("--start-rate", type=float, default=100.0, help="--find-rate: first rate tried (default 100)")
    parser.add_argument("--max-rate", type=float, default=200000.0, help="--find-rate: highest rate tried")
    parser.add_argument("--search-steps", type=int, default=4,
                        help="--find-rate: bisections after the first rate not sustained (default 4)")
    parser.add_argument("--tries", type=int, default=2,
                        help="--find-rate: measurements of a rate, one after another, before it counts as not "
                             "sustained (default 2)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per level")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each level")
    parser.add_argument("--requests", type=int, default=None,
                        help="stop a level after this many requests instead of after --duration")
    parser.add_argument("--max-inflight", type=int, default=1024, help="cap on open-loop requests in flight")
    data = parser.add_argument_group("the request")
    data.add_argument("--input-file", type=Path, default=None,
                      help="a V2 request JSON file or an .npy array (instead of random data)")
    data.add_argument("--input-name", default=None, help="input name for random or .npy data")
    data.add_argument("--shape", type=_int_list, default=None, help="input shape for random data, e.g. 1,4")
    data.add_argument("--datatype", default="FP32", help="V2 datatype for random data (default FP32)")
    data.add_argument("--seed", type=int, default=0, help="random seed of random data")
    data.add_argument("--body-file", type=Path, default=None,
                      help="POST this file's bytes as they are (any server's own format; HTTP only) to --path")
    data.add_argument("--path", default=None, help="with --body-file: the request path, e.g. /predict")
    data.add_argument("--content-type", default="application/json", help="with --body-file: its Content-Type")
    out = parser.add_argument_group("output")
    out.add_argument("--format", choices=FORMATS, default="table", help="how to print the results")
    out.add_argument("--output", type=Path, default=None, help="write the results here (default: stdout)")
    out.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                     help="progress bar on stderr (default: when stderr is a terminal)")


def request_tensors(args: argparse.Namespace) -> tuple[list[Tensor], bytes | None]:
    if args.input_file is not None:
        if not args.input_file.is_file():
            raise ConfigError(f"--input-file {args.input_file} does not exist")
        tensors, raw = load_input_file(args.input_file)
        if args.input_name and len(tensors) == 1:
            tensors[0].name = args.input_name
        return tensors, raw
    if args.shape is None:
        raise ConfigError("give the input as --shape (with --datatype) or as --input-file")
    rng = np.random.default_rng(args.seed)
    return [random_tensor(args.input_name or "input-0", args.shape, args.datatype.upper(), rng)], None


def run(args: argparse.Namespace) -> int:
    """Run the sweep and print or write the results."""
    if args.progress is None:
        args.progress = sys.stderr.isatty()
    if args.body_file is not None:
        if not args.body_file.is_file():
            raise ConfigError(f"--body-file {args.body_file} does not exist")
        if not args.path or re.fullmatch(r"/[\x21-\x7e]*", args.path) is None:
            raise ConfigError("--body-file needs --path, the request path: '/' then visible ASCII, e.g. /predict")
        if re.fullmatch(r"[\x20-\x7e]+", args.content_type) is None:
            raise ConfigError("--content-type must be visible ASCII, e.g. application/json")
        if args.protocol == "grpc":
            raise ConfigError("--body-file posts over HTTP; leave out --protocol grpc")
        target = Target(args.url, args.model, args.model_version, "raw", [], None, args.grpc_url,
                        raw_body=(args.path, args.body_file.read_bytes(), args.content_type))
    else:
        tensors, raw_json = request_tensors(args)
        target = Target(args.url, args.model, args.model_version, args.protocol, tensors, raw_json,
                        args.grpc_url)
    try:
        import uvloop

        results = uvloop.run(sweep(target, args))
    except ImportError:
        results = asyncio.run(sweep(target, args))
    meta = {"model": args.model, "url": target.base, "protocol": target.protocol,
            "body_bytes": target.body_bytes, "duration_s": args.duration}
    if getattr(args, "sustainable", None) is not None:
        meta["sustainable"] = args.sustainable
    text = render(results, args.format, meta)
    if args.output is not None:
        args.output.write_text(text)
    else:
        sys.stdout.write(text)
    failed = all(r.requests == 0 for r in results)
    if failed:
        first = next((r.first_error for r in results if r.first_error), "no request succeeded")
        raise ServekitError(f"bench: no request succeeded: {first}")
    return 0


__all__ = ["LevelResult", "configure", "render", "run"]
