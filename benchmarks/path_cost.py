"""servekit's own cost per request, without the kernel or the client: a real
worker (the models of a repository, every skin, the data plane) whose HTTP
server is fed requests through an in-memory transport, one after another.

    python benchmarks/path_cost.py REPOSITORY MODEL BODY.json [--requests N] [--profile]

Prints CPU microseconds per request (the best of five rounds: on a busy machine
the fastest round is the least disturbed) for the whole path: HTTP parsing,
routing, decoding, the data plane, the model, encoding and the response
head. ``--profile`` adds a cProfile of one round, by own time. This is what
issue 13's "half the cost per request" is measured with, beside wrk's CPU
time per request (which adds the kernel's share).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import sys
import time
from pathlib import Path
from typing import Any

from servekit.cli import load_server_settings  # type: ignore[attr-defined]
from servekit.repository.sources import ModelSources
from servekit.server import runner
from servekit.server.assembly import SKINS
from servekit.server.http_server import HttpProtocol, HttpServer
from servekit.server.metrics import remove_shared, share_across_processes


class MemoryTransport:
    """Just enough of an asyncio transport for HttpProtocol: writes are kept."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closing = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8080)}.get(name, default)

    def write(self, data: bytes) -> None:
        self.written.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def drive(app: Any, raw: bytes, count: int) -> float:
    """CPU seconds of the process (every thread) for ``count`` requests on one
    kept-alive connection: CPU time, so other work on a busy machine inflates it
    far less than it would wall time."""
    server = HttpServer(app, max_body=1 << 30)
    protocol = HttpProtocol(server)
    transport = MemoryTransport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    started = time.process_time()
    for _ in range(count):
        view = raw
        while view:
            buffer = protocol.get_buffer(len(view))
            n = min(len(buffer), len(view))
            buffer[:n] = view[:n]
            protocol.buffer_updated(n)
            view = view[n:]
        while protocol.busy:
            await asyncio.sleep(0)
    elapsed = time.process_time() - started
    head = transport.written[-1][:12] if transport.written else b""
    if not head.startswith(b"HTTP/1.1 200"):
        raise SystemExit(f"the request failed: {b''.join(transport.written[-1:])[:400]!r}")
    protocol.connection_lost(None)
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("repository", type=Path)
    parser.add_argument("model")
    parser.add_argument("body", type=Path)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--bare", action="store_true",
                        help="also measure benchmarks/bare_app.py on the same HTTP server: the floor")
    parser.add_argument("--sort", default="tottime", help="profile order: tottime or cumulative")
    parser.add_argument("--callers", default="", help="with --profile: who calls functions matching this")
    args = parser.parse_args()
    body = args.body.read_bytes()
    raw = (b"POST /v2/models/%s/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           b"Content-Length: %d\r\n\r\n" % (args.model.encode(), len(body))) + body

    async def measure(app: Any, sockets: Any, settings: Any, contexts: Any = None, share: Any = None) -> None:
        await drive(app, raw, 2000)  # warm up
        rounds = [await drive(app, raw, args.requests) for _ in range(5)]
        best = min(rounds) / args.requests * 1e6
        print(f"{args.model}: {best:.1f} us CPU per request (best of 5 rounds of {args.requests}; "
              f"median {sorted(rounds)[2] / args.requests * 1e6:.1f})")
        if args.bare:
            sys.path.insert(0, str(Path(__file__).parent))
            from bare_app import app as bare

            await drive(bare, raw, 2000)
            floor = min([await drive(bare, raw, args.requests) for _ in range(5)]) / args.requests * 1e6
            print(f"bare app: {floor:.1f} us CPU per request; servekit's own share {best - floor:.1f} us "
                  f"({floor / best:.0%} of the floor's rate)")
        if args.profile:
            profile = cProfile.Profile()
            profile.enable()
            await drive(app, raw, args.requests)
            profile.disable()
            out = io.StringIO()
            stats = pstats.Stats(profile, stream=out).sort_stats(args.sort)
            stats.print_stats(35)
            if args.callers:
                stats.print_callers(args.callers)
            print(out.getvalue())
        for sock in sockets:
            sock.close()

    # servekit runs a worker per core, whose metrics live in prometheus_client's
    # shared files: measure that mode, not the single-process one
    made = share_across_processes()
    settings = load_server_settings(str(args.repository), {
        "parallel_workers": 1, "enable_grpc": False, "http_port": 0, "metrics_port": 0})
    sources = ModelSources(settings)
    sources.add_repository(settings.model_repository_root)
    runner.serve_http = measure  # type: ignore[assignment]
    try:
        runner.run_loop(runner.Worker(settings, sources, SKINS).run())
    finally:
        remove_shared(made)
    return 0


if __name__ == "__main__":
    sys.exit(main())
