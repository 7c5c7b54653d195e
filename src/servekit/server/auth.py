"""The management token: every call that changes what is served, on every
port and protocol, needs ``Authorization: Bearer <token>`` when a token is
configured (``management_token``; TorchServe mode makes one unless
``--disable-token-auth``)."""

from __future__ import annotations

import hmac
from collections.abc import Callable

from servekit.config import ServerSettings
from servekit.errors import Unauthorized

MESSAGE = (
    "Token Authorization failed: send 'Authorization: Bearer <key>' with the "
    "management key (management_token, or key_file.json in TorchServe mode)"
)


# a front that keeps its own, changing keys (TorchServe's key_file.json) checks them
# here instead of comparing with management_token
key_check: Callable[[str | None], bool] | None = None


def authorized(settings: ServerSettings, authorization: str | None) -> bool:
    """Whether an ``Authorization`` value carries the token (always, without one)."""
    token = settings.management_token
    if not token:
        return True
    if key_check is not None:
        return key_check(authorization)
    scheme, _, value = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())


def require_token(settings: ServerSettings, authorization: str | None) -> None:
    """Raise :class:`Unauthorized` (401) unless the call carries the token."""
    if not authorized(settings, authorization):
        raise Unauthorized(MESSAGE)
