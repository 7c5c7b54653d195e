"""A minimal ASGI layer: requests, responses and a router.

Kept small on purpose: the hot path is one regex match, one body read and one
``send`` of a pre-encoded body. Each route carries the error encoder of its
protocol, so every protocol answers errors in its own format.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import orjson

from servekit.errors import PayloadTooLarge, ServekitError

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

JSON = b"application/json"
# a scope key of servekit's HTTP server: the whole request body, received before
# the application was called (what its one http.request message would carry)
BODY = "servekit.body"


class Request:
    __slots__ = ("_body", "_headers", "_query", "max_body", "path_params", "receive", "scope")

    def __init__(self, scope: Scope, receive: Receive, max_body: int) -> None:
        self.scope = scope
        self.receive = receive
        self.max_body = max_body
        self.path_params: dict[str, str] = {}
        self._headers: dict[str, str] | None = None
        self._query: dict[str, str] | None = None
        self._body: bytes | bytearray | memoryview | None = None

    @property
    def method(self) -> str:
        return str(self.scope["method"])

    @property
    def path(self) -> str:
        return str(self.scope["path"])

    @property
    def headers(self) -> dict[str, str]:
        if self._headers is None:
            self._headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in self.scope["headers"]}
        return self._headers

    @property
    def query(self) -> dict[str, str]:
        if self._query is None:
            self._query = dict(parse_qsl(self.scope.get("query_string", b"").decode("latin-1")))
        return self._query

    @property
    def client(self) -> str:
        client = self.scope.get("client")
        return f"{client[0]}:{client[1]}" if client else "-"

    async def body(self) -> bytes:
        """The whole body as bytes; refuses with 413 before reading past ``max_body``."""
        body = await self.raw_body()
        return body if isinstance(body, bytes) else bytes(body)

    async def raw_body(self) -> bytes | bytearray | memoryview:
        """The whole body without a copy: servekit's HTTP server hands large bodies
        over in the buffer they were received into (a bytearray, or a memoryview
        whose binary tensors are aligned)."""
        if self._body is not None:
            return self._body
        length = self.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            raise PayloadTooLarge(
                f"request body of {int(length)} bytes exceeds the limit of {self.max_body} "
                "bytes (raise max_request_size / --max-request-size)"
            )
        whole: bytes | bytearray | memoryview | None = self.scope.get(BODY)
        if whole is not None and len(whole) <= self.max_body:
            self._body = whole
            return whole
        chunks: list[bytes | bytearray | memoryview] = []
        size = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > self.max_body:
                    raise PayloadTooLarge(
                        f"request body exceeds the limit of {self.max_body} bytes "
                        "(raise max_request_size / --max-request-size)"
                    )
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        self._body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        return self._body


@dataclass(slots=True)
class Response:
    body: bytes = b""
    status: int = 200
    content_type: bytes | None = JSON
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)

    def head(self) -> list[tuple[bytes, bytes]]:
        """Its header lines: length, type and its own."""
        headers = [(b"content-length", b"%d" % len(self.body))]
        if self.content_type is not None:
            headers.append((b"content-type", self.content_type))
        headers.extend(self.headers)
        return headers

    async def send(self, send: Send) -> None:
        headers = self.head()
        respond = getattr(send, "respond", None)  # servekit's HTTP server: one call, one write
        if respond is not None:
            respond(self.status, headers, self.body)
            return
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


def json_response(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY), status)


Handler = Callable[[Request], Awaitable[Response]]
ErrorEncoder = Callable[[ServekitError], Response]
# a route's synchronous handler of the common case: (path params, request
# headers, whole body) -> the response, or None (nothing done: the handler
# answers); it may raise ServekitError like a handler (App.express)
Express = Callable[[dict[str, str], list[tuple[bytes, bytes]], bytes], Response | None]


def default_error(exc: ServekitError) -> Response:
    return json_response({"error": exc.message}, exc.status)


@dataclass(slots=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler
    on_error: ErrorEncoder
    path: str = ""  # the template it was made from ("/v2/models/{model}/infer"): API documents read it
    express: Express | None = None

    def shape(self) -> tuple[str | None, int, bool]:
        """(its first segment when literal, else None; its number of segments;
        whether a ``{name:path}`` makes that number a minimum): which paths it
        can match at all, for the router's index. A route made without a
        template (``path`` empty) can match anything."""
        if not self.path.startswith("/"):
            return None, 1, True
        segments = self.path.split("/")
        first = segments[1] if len(segments) > 1 and "{" not in segments[1] else None
        return first, len(segments), ":path}" in self.path


def route(
    method: str, path: str, handler: Handler, on_error: ErrorEncoder = default_error, express: Express | None = None
) -> Route:
    """``path`` uses ``{name}`` for one segment and ``{name:path}`` for the rest."""
    regex = re.sub(r"\{(\w+):path\}", r"(?P<\1>.+)", path)
    regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", regex)
    return Route(method, re.compile(f"^{regex}$"), handler, on_error, path, express)


class Router:
    """Routes in order; the first whose pattern and method fit answers.

    Matching tries only the routes that can match a path of that first segment
    and number of segments (an index made from the templates), in their order,
    so a request costs a few regex matches however many routes there are. The
    answers for the last :data:`MATCHES_KEPT` distinct (method, path) pairs are
    kept: a client calling one model's endpoint again costs one dict lookup."""

    MATCHES_KEPT = 1024

    def __init__(self, routes: list[Route] | None = None, on_error: ErrorEncoder = default_error):
        self.routes: list[Route] = list(routes or [])
        self.on_error = on_error
        self._index: dict[tuple[str | None, int], list[Route]] | None = None
        self._long = 0  # paths of this many segments or more are indexed under it
        # (method, path) -> what match() answered; emptied when full (clients choose
        # the paths, so it is bounded by count, and by length below)
        self._matches: dict[tuple[str, str], tuple[Route | None, dict[str, str], bool]] = {}

    def add(self, routes: list[Route]) -> None:
        self.routes.extend(routes)
        self._index = None
        self._matches.clear()

    def _candidates(self, path: str) -> list[Route]:
        index = self._index
        if index is None:
            index = self._index = self._build_index()
        count = path.count("/") + 1
        end = path.find("/", 1)
        first = path[1:] if end < 0 else path[1:end]
        key_count = min(count, self._long)
        found = index.get((first, key_count))
        if found is None:
            found = index.get((None, key_count), [])
        return found

    def _build_index(self) -> dict[tuple[str | None, int], list[Route]]:
        """For each literal first segment (None: any other) and number of
        segments (the longest route's + 1 standing for every longer path), the
        routes that can match such a path, in order. Bounded by the routes, not
        by what clients send."""
        shapes = [r.shape() for r in self.routes]
        self._long = max((count for _, count, _ in shapes), default=1) + 1
        firsts: list[str | None] = [None, *{first for first, _, _ in shapes if first is not None}]
        index: dict[tuple[str | None, int], list[Route]] = {}
        for first in firsts:
            for count in range(1, self._long + 1):
                index[(first, count)] = [
                    r for r, (f, c, longer) in zip(self.routes, shapes, strict=True)
                    if (f is None or f == first) and (c == count or (longer and c <= count))
                ]
        return index

    def match(self, method: str, path: str) -> tuple[Route | None, dict[str, str], bool]:
        """(route, path params, whether the path exists under another method);
        the params are the caller's to keep (a fresh dict each time)."""
        key = (method, path)
        kept = self._matches.get(key)
        if kept is not None:
            return kept[0], dict(kept[1]), kept[2]
        found = self._match(method, path)
        if len(path) <= 512:
            if len(self._matches) >= self.MATCHES_KEPT:
                self._matches.clear()
            self._matches[key] = found
        return found[0], dict(found[1]), found[2]

    def _match(self, method: str, path: str) -> tuple[Route | None, dict[str, str], bool]:
        path_exists = False
        for candidate in self._candidates(path):
            found = candidate.pattern.match(path)
            if found is None:
                continue
            if candidate.method != method and not (method == "HEAD" and candidate.method == "GET"):
                path_exists = True
                continue
            return candidate, found.groupdict(), True
        return None, {}, path_exists

    def allowed(self, path: str) -> list[str]:
        """The methods the path answers (for a 405's ``Allow`` header)."""
        methods = {route.method for route in self._candidates(path) if route.pattern.match(path) is not None}
        if "GET" in methods:
            methods.add("HEAD")
        return sorted(methods)
