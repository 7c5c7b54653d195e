"""One error hierarchy. Each error carries the HTTP status it maps to; protocols
that use other codes or names (gRPC, TorchServe) map these classes in their
own module (``protocols/grpc_errors.py``, ``protocols/torchserve.py``)::

    ServekitError (500)
    ├── InvalidInput (400)        ├── Unauthorized (401)    ├── Forbidden (403)
    ├── ModelNotFound (404)       ├── RouteNotFound (404)   ├── MethodNotAllowed (405)
    ├── Conflict (409)            ├── PayloadTooLarge (413)
    ├── ModelNotReady (503)       ├── Overloaded (503)      ├── RequestTimedOut (504)
    ├── ModelLoadError (500)      └── ConfigError (400)
"""

from __future__ import annotations


class ServekitError(Exception):
    """Base of every error servekit reports to a client."""

    status: int = 500
    # seconds after which a retry may succeed (sent as Retry-After), when known
    retry_after: int | None = None

    def __init__(self, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if retry_after is not None:
            self.retry_after = retry_after


class InvalidInput(ServekitError):
    """The request is malformed or does not fit the model (400)."""

    status = 400


class ModelNotFound(ServekitError):
    """No model, version or label of that name (404)."""

    status = 404


class RouteNotFound(ServekitError):
    """No endpoint for the request's path (404)."""

    status = 404


class MethodNotAllowed(ServekitError):
    """The path exists, but not for the request's method (405); ``allow``: the
    methods it answers, for the ``Allow`` header."""

    status = 405

    def __init__(self, message: str, *, allow: str = "") -> None:
        super().__init__(message)
        self.allow = allow


class ModelNotReady(ServekitError):
    """The model exists but is loading, unloading or failed to load (503)."""

    status = 503


class Overloaded(ServekitError):
    """The model's queue is full, or a request waited in it longer than the
    queue time; the client should back off and retry (503, Retry-After)."""

    status = 503
    retry_after = 1


class RequestTimedOut(ServekitError):
    """The request's own timeout passed before it ran (504)."""

    status = 504


class PayloadTooLarge(ServekitError):
    """The body exceeds the configured limit (413)."""

    status = 413


class Unauthorized(ServekitError):
    """A management call without the configured bearer token (401)."""

    status = 401


class Forbidden(ServekitError):
    """A request for something the configuration does not allow (403)."""

    status = 403


class Conflict(ServekitError):
    """The resource already exists (409)."""

    status = 409


class ModelLoadError(ServekitError):
    """A model could not be loaded; the reason is shown in the repository index."""

    status = 500


class ConfigError(ServekitError):
    """A settings or config file is invalid."""

    status = 400
