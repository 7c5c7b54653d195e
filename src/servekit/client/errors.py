"""What a call to a V2 server can fail with, client-side. Each error carries
the server's own message (``message``), the HTTP status or gRPC code it came
with, and, for an overloaded server, how long it asked the client to wait::

    ClientError
    ├── ServerUnreachable          could not connect, or the connection broke
    ├── ClientTimeout              no answer within the read timeout
    ├── InvalidInput (400)         ├── Unauthorized (401)   ├── Forbidden (403)
    ├── ModelNotFound (404)        ├── Conflict (409)       ├── PayloadTooLarge (413)
    ├── ServiceUnavailable (503)
    │   ├── ModelNotReady          the model is loading, unloading or failed to load
    │   └── ServerOverloaded       the server asked to come back (Retry-After: ``retry_after``)
    ├── RequestTimedOut (504)      the server gave up on the request's deadline
    └── ServerError (500 and any other status)
"""

from __future__ import annotations

from typing import Any

import orjson


class ClientError(Exception):
    """Base of every error :class:`servekit.Client` raises."""

    status: int | None = None

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 retry_after: float | None = None, body: Any = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        self.code = code  # the gRPC status name, for errors over gRPC
        self.retry_after = retry_after
        self.body = body  # the error document the server sent, when it was JSON

    def __str__(self) -> str:
        where = f"HTTP {self.status}" if self.status is not None and self.code is None else self.code
        return f"{self.message} ({where})" if where else self.message


class ServerUnreachable(ClientError):
    """No connection to the server (refused, reset, name not found)."""


class ClientTimeout(ClientError):
    """The server did not answer within the client's timeout."""


class InvalidInput(ClientError):
    status = 400


class Unauthorized(ClientError):
    status = 401


class Forbidden(ClientError):
    status = 403


class ModelNotFound(ClientError):
    status = 404


class Conflict(ClientError):
    status = 409


class PayloadTooLarge(ClientError):
    status = 413


class ServiceUnavailable(ClientError):
    status = 503


class ModelNotReady(ServiceUnavailable):
    """The model exists but is not ready (loading, unloading or failed)."""


class ServerOverloaded(ServiceUnavailable):
    """The server's queue is full; ``retry_after`` says when to come back."""


class RequestTimedOut(ClientError):
    status = 504


class ServerError(ClientError):
    status = 500


_BY_STATUS: dict[int, type[ClientError]] = {
    400: InvalidInput,
    401: Unauthorized,
    403: Forbidden,
    404: ModelNotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: InvalidInput,  # FastAPI-based servers (MLServer, KServe) say 422 for bad bodies
    429: ServerOverloaded,
    504: RequestTimedOut,
}

# gRPC status name -> the HTTP status servekit's REST API gives the same error
GRPC_TO_HTTP: dict[str, int] = {
    "INVALID_ARGUMENT": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "RESOURCE_EXHAUSTED": 413,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
    "UNIMPLEMENTED": 501,
}


def retry_after_seconds(value: str | None) -> float | None:
    """A Retry-After header in seconds (the HTTP-date form is not used by V2 servers)."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def error_message(body: bytes, status: int) -> tuple[str, Any]:
    """The server's message from an error body: V2's ``{"error": …}``,
    FastAPI's ``{"detail": …}``, or the text itself."""
    document: Any = None
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        text = body.decode("utf-8", "replace").strip()
        return (text[:2000] or f"HTTP {status} with an empty body"), None
    if isinstance(document, dict):
        for key in ("error", "detail", "message"):
            if key in document:
                value = document[key]
                return (value if isinstance(value, str) else orjson.dumps(value).decode()), document
    return orjson.dumps(document).decode()[:2000], document


def from_http(status: int, body: bytes, retry_after: str | None = None) -> ClientError:
    """The typed error for an HTTP answer that is not 2xx."""
    message, document = error_message(body, status)
    wait = retry_after_seconds(retry_after)
    kind: type[ClientError]
    if status == 503:
        kind = ServerOverloaded if wait is not None else ModelNotReady
    else:
        kind = _BY_STATUS.get(status, ServerError)
    return kind(message, status=status, retry_after=wait, body=document)


def from_grpc(code: str, details: str, retry_after: str | None = None) -> ClientError:
    """The typed error for a gRPC call that ended with ``code`` (its name)."""
    message = details or code
    wait = retry_after_seconds(retry_after)
    if code == "UNAVAILABLE" and ("failed to connect" in details.lower() or "connection" in details.lower()
                                  or "socket closed" in details.lower()):
        return ServerUnreachable(message, code=code)
    if code == "DEADLINE_EXCEEDED" and details.strip().lower() == "deadline exceeded":
        return ClientTimeout(message, code=code)  # gRPC's own deadline, not the server's
    if code == "UNKNOWN" and "ModelNotFound" in details:
        # MLServer's gRPC server ends an unknown model's call with UNKNOWN and its exception's name
        return ModelNotFound(message, status=404, code=code)
    status = GRPC_TO_HTTP.get(code, 500)
    kind: type[ClientError]
    if status == 503:
        kind = ServerOverloaded if wait is not None else ModelNotReady
    else:
        kind = _BY_STATUS.get(status, ServerError)
    return kind(message, status=status, code=code, retry_after=wait)


__all__ = [
    "ClientError",
    "ClientTimeout",
    "Conflict",
    "Forbidden",
    "InvalidInput",
    "ModelNotFound",
    "ModelNotReady",
    "PayloadTooLarge",
    "RequestTimedOut",
    "ServerError",
    "ServerOverloaded",
    "ServerUnreachable",
    "ServiceUnavailable",
    "Unauthorized",
]
