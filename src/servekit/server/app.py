"""The ASGI application: one app for every listening socket, routing by the
local port to that listener's router (V2 + friends, TF Serving REST,
TorchServe management, metrics …).

Every answer, on every route, carries ``X-Request-ID``: the client's (refused
with the route's 400 when it is not 1-128 printable ASCII characters), the V2
request's ``id``, or one made here; see :mod:`servekit.observability.request_id`.
With tracing on, each request is a span (:mod:`servekit.observability.tracing`)."""

from __future__ import annotations

import logging
import time
from typing import Any

from servekit.errors import MethodNotAllowed, RouteNotFound, ServekitError
from servekit.observability.request_id import HEADER as REQUEST_ID_HEADER
from servekit.observability.request_id import REQUEST_ID
from servekit.observability.request_id import from_header as request_id_from_header
from servekit.observability.request_id import header_or_none as request_id_or_none
from servekit.observability.request_id import new_id as new_request_id
from servekit.observability.tracing import RECEIVED, Traced, Tracing, carrier
from servekit.server.http import JSON, ErrorEncoder, Receive, Request, Response, Router, Scope, Send
from servekit.server.http_server import ok_json_head

log = logging.getLogger("servekit.server")
access_log = logging.getLogger("servekit.access")


class App:
    def __init__(
        self,
        routers: dict[int, Router],
        default: Router,
        *,
        max_body: int,
        access_log: bool = False,
        tracing: Tracing | None = None,
    ) -> None:
        self.tracing = tracing
        self.routers = routers
        self.default = default
        self.max_body = max_body
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self.handle(scope, receive, send)
        elif kind == "lifespan":
            await _lifespan(receive, send)

    def router_for(self, scope: Scope) -> Router:
        server = scope.get("server")
        if server is not None:
            router = self.routers.get(server[1])
            if router is not None:
                return router
        return self.default

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        tracing = self.tracing
        started = time.perf_counter() if self.access_log else 0.0
        router = self.router_for(scope)
        request = Request(scope, receive, self.max_body)
        route, params, path_exists = router.match(scope["method"], scope["path"])
        on_error = route.on_error if route is not None else router.on_error
        traced = None if tracing is None else self._begin_trace(tracing, scope)
        try:
            for name, value in scope["headers"]:
                if name == REQUEST_ID_HEADER:
                    REQUEST_ID.set(request_id_from_header(value))
                    break
            if route is None:
                if path_exists:
                    allow = ", ".join(router.allowed(scope["path"]))
                    raise MethodNotAllowed(f"{scope['method']} is not allowed on {scope['path']}; use {allow}",
                                           allow=allow)
                raise RouteNotFound(f"no endpoint {scope['method']} {scope['path']}")
            request.path_params = params
            response = await route.handler(request)
        except Exception as exc:
            response = _error_response(on_error, exc, scope["method"], scope["path"])
        request_id = REQUEST_ID.get()
        if request_id is None:  # no header, no data plane call (health, metadata …)
            request_id = new_request_id()
            REQUEST_ID.set(request_id)
        response.headers.append((REQUEST_ID_HEADER, request_id.encode()))
        if traced is None:
            await response.send(send)
        else:
            assert tracing is not None
            response.headers.append((b"traceparent", tracing.traceparent(traced)))
            sent = time.time_ns()
            await response.send(send)
            done = time.time_ns()
        if self.access_log:
            access_log.info(
                '%s "%s %s" %d %d %.2fms',
                request.client,
                scope["method"],
                # escaped: a %0A in a path must not start a line of its own
                scope["path"].encode("unicode_escape").decode("ascii"),
                response.status,
                len(response.body),
                (time.perf_counter() - started) * 1000,
            )
        if traced is not None:  # after the access line, which names the trace
            assert tracing is not None
            tracing.end(traced, done, receive=scope.get(RECEIVED), send=(sent, done), status=response.status)

    def express(
        self, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes, server: Any
    ) -> tuple[int, list[tuple[bytes, bytes]] | bytes, bytes] | None:
        """A request answered without a task or a scope, by its route's express
        handler (:data:`servekit.server.http.Express`): (status, headers, body),
        the headers of a plain 200 JSON answer as its ready head
        (:func:`~servekit.server.http_server.ok_json_head`), or None for
        :meth:`handle` to answer. servekit's HTTP server offers it
        each request whose body it has whole; never with tracing or access
        logging on (those need :meth:`handle`'s timing)."""
        router = self.routers.get(server[1], self.default) if server is not None else self.default
        route, params, _ = router.match(method, path)
        if route is None or route.express is None:
            return None
        request_id = None
        for name, value in headers:
            if name == REQUEST_ID_HEADER:
                request_id = request_id_or_none(value)
                if request_id is None:
                    return None  # refused by handle, in the route's format
                break
        token = REQUEST_ID.set(request_id)
        try:
            try:
                response = route.express(params, headers, body)
            except Exception as exc:
                response = _error_response(route.on_error, exc, method, path)
            if response is None:
                return None
            request_id = REQUEST_ID.get() or new_request_id()
        finally:
            REQUEST_ID.reset(token)
        if response.status == 200 and response.content_type is JSON and not response.headers:
            head = ok_json_head(len(response.body), request_id.encode())
            if head is not None:
                return 200, head, response.body
        response.headers.append((REQUEST_ID_HEADER, request_id.encode()))
        return response.status, response.head(), response.body

    @property
    def expressed(self) -> bool:
        """Whether :meth:`express` may be offered requests (see there)."""
        return self.tracing is None and not self.access_log

    @staticmethod
    def _begin_trace(tracing: Tracing, scope: Scope) -> Traced:
        received = scope.get(RECEIVED)
        method = scope["method"]
        return tracing.begin(
            method, carrier(scope["headers"]), received[0] if received else time.time_ns(),
            {"http.request.method": method, "url.path": scope["path"], "url.scheme": scope.get("scheme", "http")},
        )


def _error_response(on_error: ErrorEncoder, exc: Exception, method: str, path: str) -> Response:
    """A handler's error in its route's format (a ServekitError's own status
    and headers; anything else a 500 that names only its type)."""
    if not isinstance(exc, ServekitError):
        log.error("Unhandled error on %s %s", method, path, exc_info=exc)
        exc = ServekitError(f"internal error while handling the request: {type(exc).__name__}")
    response = on_error(exc)
    if exc.retry_after is not None:
        response.headers.append((b"retry-after", str(exc.retry_after).encode()))
    if isinstance(exc, MethodNotAllowed):
        response.headers.append((b"allow", exc.allow.encode()))
    return response


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message: dict[str, Any] = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


__all__ = ["App", "Response"]
