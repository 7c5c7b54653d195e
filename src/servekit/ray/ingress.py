"""The one ingress in front of every model deployment: servekit's own HTTP
application (:class:`servekit.server.app.App`) with routes that

- answer what concerns the server itself: ``/v2/health/live``, ``/v2``;
- forward a request naming a model (``/v2/models/{name}/…``) as it came to
  that model's deployment, whose replica answers it with servekit's V2 REST
  routes (:mod:`servekit.ray.replica`), and return its answer unchanged;
- ask every model and join the answers: ``/v2/health/ready``,
  ``/v2/models/stats``, ``/v2/repository/index``.

The repository's load and unload are not served: under Ray Serve what is
served changes by deploying again. Nothing here imports Ray: a model is a
:data:`Forward` function (:mod:`servekit.ray.engine` makes one of a
deployment handle).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from servekit import __version__
from servekit.dataplane import bounded
from servekit.errors import ModelNotFound, ServekitError
from servekit.observability.request_id import HEADER as REQUEST_ID_HEADER
from servekit.protocols.v2_rest import error_response
from servekit.ray.replica import Answer, Headers
from servekit.server.app import App
from servekit.server.http import (
    Receive,
    Request,
    Response,
    Route,
    Router,
    Scope,
    Send,
    json_response,
    route,
)

log = logging.getLogger("servekit.ray")

# method, path, query string, headers, body -> (status, headers, body)
Forward = Callable[[str, str, bytes, Headers, bytes], Awaitable[Answer]]

EXTENSIONS = ["binary_tensor_data", "model_repository", "statistics", "schedule_policy"]
# headers of a model's answer the ingress makes itself
_OWN_HEADERS = frozenset({b"content-length", REQUEST_ID_HEADER})


class ModelUnavailable(ServekitError):
    """Ray could not run the request on the model's deployment (no live
    replica, its queue full, the replica died): 503, try again."""

    status = 503


class NotUnderRay(ServekitError):
    """The repository's load and unload: under Ray Serve, deploy again (501)."""

    status = 501


def build_app(models: dict[str, Forward], *, server_name: str, max_body: int) -> WithoutRequestIdHeader:
    """servekit's application for the ingress replica."""
    router = Router(routes(models, server_name), on_error=error_response)
    return WithoutRequestIdHeader(App({}, router, max_body=max_body))


class WithoutRequestIdHeader:
    """Ray's proxy owns ``X-Request-ID``: it hands the client's (or one it made)
    in with the request, which servekit then uses as the request's id, and
    adds it to every answer; the App's own header would repeat it."""

    def __init__(self, app: App) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_without(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [(k, v) for k, v in message["headers"] if k != REQUEST_ID_HEADER]
            await send(message)

        await self.app(scope, receive, send_without)


def routes(models: dict[str, Forward], server_name: str) -> list[Route]:
    names = sorted(models)

    async def ask(name: str, method: str, path: str, body: bytes = b"", headers: Headers | None = None) -> Answer:
        try:
            return await models[name](method, path, b"", headers or [], body)
        except Exception as exc:
            raise _unavailable(name, exc) from exc

    async def ask_all(method: str, path: str, body: bytes = b"") -> list[tuple[str, Answer]]:
        answers = await asyncio.gather(*(ask(name, method, path.format(name=name), body) for name in names))
        return list(zip(names, answers, strict=True))

    async def live(request: Request) -> Response:
        return json_response({"live": True})

    async def ready(request: Request) -> Response:
        for name, (status, _, body) in await ask_all("GET", "/v2/health/ready"):
            if status != 200:
                reason = _error_of(body) or f"model {name!r} answered {status}"
                return json_response({"ready": False, "error": reason}, 503)
        return json_response({"ready": True})

    async def server_metadata(request: Request) -> Response:
        return json_response({"name": server_name, "version": __version__, "extensions": EXTENSIONS})

    async def statistics(request: Request) -> Response:
        stats: list[Any] = []
        for _, answer in await ask_all("GET", "/v2/models/{name}/stats"):
            if answer[0] == 200:
                stats.extend(orjson.loads(answer[2]).get("model_stats", []))
        return json_response({"model_stats": stats})

    async def index(request: Request) -> Response:
        body = await request.body()
        rows: list[dict[str, Any]] = []
        for _, (status, headers, answer) in await ask_all("POST", "/v2/repository/index", body):
            if status != 200:  # a body the replica refuses: its own error, for every model alike
                return _response(status, headers, answer)
            rows.extend(orjson.loads(answer))
        rows.sort(key=lambda row: (str(row.get("name")), str(row.get("version"))))
        return json_response(rows)

    async def change(request: Request) -> Response:
        raise NotUnderRay(
            "loading and unloading through the repository API is not available under Ray Serve: "
            "change the model repository and deploy again (servekit serve --engine ray REPOSITORY)"
        )

    async def forward(request: Request) -> Response:
        name = request.path_params["model"]
        call = models.get(name)
        if call is None:
            raise ModelNotFound(
                f"model {bounded(name, 128)!r} not found (models served: {', '.join(names) or 'none'})"
            )
        scope = request.scope
        headers = [(bytes(k), bytes(v)) for k, v in scope["headers"]]
        body = await request.raw_body()
        try:
            status, answer_headers, answer = await call(
                scope["method"], scope["path"], scope.get("query_string", b""), headers, bytes(body)
            )
        except Exception as exc:
            raise _unavailable(name, exc) from exc
        return _response(status, answer_headers, answer)

    e = error_response
    out = [
        route("GET", "/v2/health/live", live, e),
        route("GET", "/v2/health/ready", ready, e),
        route("GET", "/v2", server_metadata, e),
        route("GET", "/v2/", server_metadata, e),
        route("GET", "/v2/models/stats", statistics, e),
        route("POST", "/v2/repository/index", index, e),
        route("POST", "/v2/repository/models/{model}/load", change, e),
        route("POST", "/v2/repository/models/{model}/unload", change, e),
    ]
    for method in ("GET", "POST"):
        out.append(route(method, "/v2/models/{model}", forward, e))
        out.append(route(method, "/v2/models/{model}/{rest:path}", forward, e))
    return out


def _response(status: int, headers: Headers, body: bytes) -> Response:
    """A model replica's answer as this ingress sends it: its headers but the
    length and the request id (Ray's proxy adds it)."""
    kept = [(name, value) for name, value in headers if name not in _OWN_HEADERS]
    return Response(body, status, content_type=None, headers=kept)


def _error_of(body: bytes) -> str | None:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    error = document.get("error") if isinstance(document, dict) else None
    return error if isinstance(error, str) else None


def _unavailable(name: str, exc: Exception) -> ModelUnavailable:
    log.warning("Model %r under Ray Serve failed to answer: %s: %s", name, type(exc).__name__,
                bounded(str(exc), 500))
    return ModelUnavailable(
        f"model {name!r} could not answer under Ray Serve ({type(exc).__name__}: {bounded(str(exc), 200)}); "
        "try again (Ray starts a replacement replica when one dies)"
    )


__all__ = ["EXTENSIONS", "Forward", "ModelUnavailable", "NotUnderRay", "build_app", "routes"]
