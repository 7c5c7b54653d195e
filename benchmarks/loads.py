"""The two load generators: wrk (with post.lua) and ``servekit bench``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SERVEKIT = [sys.executable, "-m", "servekit"]


def wrk(url: str, body: Path, connections: int, seconds: float,
        content_type: str = "application/json") -> dict[str, Any]:
    """One wrk run posting ``body``; req/s counts only 2xx answers. An empty
    ``content_type`` sends no Content-Type header (as ``curl -T`` does)."""
    threads = min(2, connections)
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "30s",
               "-s", str(HERE / "post.lua"), url]
    env = {**os.environ, "BODY": str(body), "CONTENT_TYPE": content_type}
    out = subprocess.run(command, capture_output=True, text=True, env=env, timeout=seconds + 60)
    line = next((x for x in out.stdout.splitlines() if x.startswith('{"requests"')), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary (exit {out.returncode}): {out.stdout} {out.stderr}")
    raw = json.loads(line)
    seconds_run = raw["duration_us"] / 1e6
    errors = raw["connect"] + raw["read"] + raw["write"] + raw["status"] + raw["timeout"]
    ok = max(0, raw["requests"] - raw["status"])
    return {
        "tool": "wrk", "connections": connections, "requests": raw["requests"], "errors": errors,
        "error_kinds": {k: raw[k] for k in ("connect", "read", "write", "status", "timeout") if raw[k]},
        "rps": round(ok / seconds_run, 1) if seconds_run else 0.0,
        "p50_ms": raw["p50_us"] / 1e3, "p90_ms": raw["p90_us"] / 1e3, "p99_ms": raw["p99_us"] / 1e3,
        "max_ms": raw["max_us"] / 1e3,
    }


def bench(url: str, grpc_url: str, model: str, args: list[str], timeout: float) -> dict[str, Any]:
    """``servekit bench ... --format json``; the parsed report, or the error it gave."""
    command = [*SERVEKIT, "bench", model, "--url", url, "--grpc-url", grpc_url, "--no-progress",
               "--format", "json", *args]
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"servekit bench did not finish in {timeout:.0f} s"}
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["failed"])[-1][:400]}
    report: dict[str, Any] = json.loads(out.stdout)
    return report
