"""The floor on servekit's own stack: ``bare_app`` served by servekit's HTTP
server, one process per core sharing the port (SO_REUSEPORT), as servekit runs.

    python benchmarks/bare_servekit.py PORT
"""

from __future__ import annotations

import os
import sys

import uvloop
from bare_app import app

from servekit.server.http_server import HttpServer
from servekit.server.runner import listen


async def serve_forever(port: int) -> None:
    server = HttpServer(app, max_body=1 << 30)
    await server.serve([listen("127.0.0.1", port, reuse_port=True)])


def serve(port: int) -> None:
    uvloop.run(serve_forever(port))


def main() -> None:
    port = int(sys.argv[1])
    children = []
    for _ in range((os.cpu_count() or 1) - 1):
        pid = os.fork()
        if pid == 0:
            serve(port)
            os._exit(0)
        children.append(pid)
    serve(port)


if __name__ == "__main__":
    main()
