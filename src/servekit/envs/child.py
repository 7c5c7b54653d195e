"""A model's own process: ``<env>/bin/python -I -m servekit.envs.child <fd>``.

It reads the model's settings from the socket on ``fd`` (its first message,
``load``), loads the model with the runtime chosen for it, answers ``ready``
with its metadata (or ``error`` with the load failure), then answers each
``predict`` in turn until the server closes the socket. stdout and stderr
are the server's stderr: a model that prints cannot break the framing.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
from typing import Any

from servekit.envs import wire
from servekit.tensors import InferenceResponse


def _error(exc: BaseException) -> dict[str, Any]:
    from servekit.errors import ServekitError

    if isinstance(exc, ServekitError):
        message, kind, status = exc.message, type(exc).__name__, exc.status
    else:
        message, kind, status = f"{type(exc).__name__}: {exc}", "ServekitError", 500
    return {"op": "error", "error": kind, "status": status, "message": str(message)[:4000]}


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    sock = socket.socket(fileno=int(argv[1]))
    try:
        header, _ = wire.receive(sock)
    except (EOFError, wire.WireError):
        return 1
    try:
        from servekit.config import ModelSettings
        from servekit.runtimes import create_runtime

        settings = ModelSettings.model_validate(header["settings"])
        runtime = create_runtime(settings)
        runtime.load()
        meta = runtime.metadata()
        ready = {
            "op": "ready",
            "batch_axis": runtime.batch_axis,
            "metadata": {
                "name": meta.name, "platform": meta.platform, "versions": meta.versions,
                "inputs": [s.to_dict() for s in meta.inputs], "outputs": [s.to_dict() for s in meta.outputs],
                "parameters": meta.parameters,
            },
            "python": sys.version.split()[0],
        }
    except BaseException as exc:  # a load failure is the model's reason, sent to the server
        wire.send(sock, wire.frame(_error(exc)))
        return 1
    wire.send(sock, wire.frame(ready))
    loop = asyncio.new_event_loop() if runtime.is_async else None
    while True:
        try:
            header, body = wire.receive(sock, wire.MAX_BODY)
        except EOFError:
            break
        if header.get("op") != "predict":
            break
        try:
            request = wire.parse_request(header, body)
            response: InferenceResponse
            if loop is not None:
                response = loop.run_until_complete(runtime.predict(request))  # type: ignore[arg-type]
            else:
                response = runtime.predict(request)
            pieces = wire.response_message(response)
        except Exception as exc:
            pieces = wire.frame(_error(exc))
        wire.send(sock, pieces)
    runtime.unload()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
