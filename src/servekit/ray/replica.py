"""One replica of one model: a servekit registry, data plane and V2 REST
routes for that model alone, inside a Ray Serve replica.

The ingress forwards each HTTP request whose path names the model as it came
(method, path, query, headers, body); :meth:`ModelReplica.call` runs it
through servekit's own application (:class:`servekit.server.app.App` with the
V2 REST skin), so decoding, the adaptive batcher, errors in V2's format,
request ids and metrics are the ones a servekit server has. Nothing here
imports Ray: :mod:`servekit.ray.engine` makes this class a deployment.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from servekit.config import ModelSettings, ServerSettings
from servekit.protocols import v2_rest
from servekit.registry import Registry
from servekit.repository.sources import ModelSources
from servekit.server.app import App
from servekit.server.assembly import build_app, build_context

log = logging.getLogger("servekit.ray")

Headers = list[tuple[bytes, bytes]]
# (status, headers, body) of one forwarded HTTP request
Answer = tuple[int, Headers, bytes]


class ModelReplica:
    """Every version of one model, loaded in this process (a Ray Serve replica)."""

    def __init__(self, name: str, versions: list[ModelSettings], server: ServerSettings) -> None:
        self.name = name
        # one replica is one servekit worker
        self.settings = server.model_copy(update={"parallel_workers": 1})
        self.sources = ModelSources(self.settings)
        self.sources.add(lambda: list(versions))
        self.registry = Registry(self.settings)
        self.app: App | None = None

    async def load(self) -> None:
        """Load every version (one that fails is FAILED with its reason, and
        requests to it answer 503 saying so), then mount the V2 routes."""
        await self.registry.apply(self.sources.wanted())
        ctx = build_context(self.settings, self.registry, self.sources)
        self.app, _ = build_app(ctx, [v2_rest.SKIN])
        log.info("Replica of model %r in process %d: %s", self.name, os.getpid(),
                 ", ".join(f"{m.version or '-'} {m.state.value}" for m in self.registry.all_versions()))

    async def call(self, method: str, path: str, query: bytes, headers: Headers, body: bytes) -> Answer:
        """Answer one HTTP request with servekit's V2 REST routes."""
        scope = {
            "type": "http", "method": method, "path": path, "query_string": query, "headers": headers,
            "http_version": "1.1", "scheme": "http",
        }
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        answer: dict[str, Any] = {}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
                answer["headers"] = message.get("headers", [])
            else:
                answer["body"] = message.get("body", b"")

        assert self.app is not None, "load() first"
        await self.app.handle(scope, receive, send)
        return answer["status"], answer["headers"], answer.get("body", b"")


__all__ = ["Answer", "Headers", "ModelReplica"]
