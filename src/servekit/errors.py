"""One error hierarchy. Each error carries the HTTP status it maps to; protocols
that use other codes (gRPC, TorchServe) map from :attr:`ServekitError.status`
in their own module, never from exception types scattered around.
"""

from __future__ import annotations


class ServekitError(Exception):
    """Base of every error servekit reports to a client."""

    status: int = 500
    kind: str = "InternalServerError"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(ServekitError):
    """The request is malformed or does not fit the model (400)."""

    status = 400
    kind = "BadRequest"


class ModelNotFound(ServekitError):
    """No model, version or label of that name (404)."""

    status = 404
    kind = "ModelNotFoundException"


class ModelNotReady(ServekitError):
    """The model exists but is loading, unloading or failed to load (503)."""

    status = 503
    kind = "ServiceUnavailableException"


class Overloaded(ServekitError):
    """The model's queue is full; the client should back off and retry (503)."""

    status = 503
    kind = "ServiceUnavailableException"


class RequestTimedOut(ServekitError):
    """The request's own timeout passed before it ran (504)."""

    status = 504
    kind = "RequestTimeout"


class PayloadTooLarge(ServekitError):
    """The body exceeds the configured limit (413)."""

    status = 413
    kind = "PayloadTooLarge"


class Unauthorized(ServekitError):
    """A management call without the configured bearer token (401)."""

    status = 401
    kind = "Unauthorized"


class Forbidden(ServekitError):
    """A request for something the configuration does not allow (403)."""

    status = 403
    kind = "Forbidden"


class Conflict(ServekitError):
    """The resource already exists (409)."""

    status = 409
    kind = "ConflictStatusException"


class ModelLoadError(ServekitError):
    """A model could not be loaded; the reason is shown in the repository index."""

    status = 500
    kind = "ModelLoadError"


class ConfigError(ServekitError):
    """A settings or config file is invalid."""

    status = 400
    kind = "ConfigError"
