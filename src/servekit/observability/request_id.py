"""The request id: one per request, on every protocol.

It is the client's ``X-Request-ID`` header (gRPC: ``x-request-id`` metadata)
when one is given, else the V2 request's own ``id``, else a generated UUID. It
is returned in the ``X-Request-ID`` response header (gRPC: trailing metadata),
written by the V2 codecs as the response's ``id`` when the request had none,
and carried by every log line written while the request is handled.

A client controls it, so it is bounded before it is used anywhere: a header
or metadata value must be 1 to 128 printable ASCII characters without spaces
(anything else is refused with the protocol's 400 / INVALID_ARGUMENT); a V2
``id`` (any JSON string, echoed unchanged in the response body) is escaped
(``%XX``) and cut to 128 characters for the header and the log.

The id lives in a context variable: each HTTP request and gRPC call is its own
asyncio task, so setting it touches no other request.
"""

from __future__ import annotations

import itertools
import os
import random
import re
from contextvars import Context, ContextVar, copy_context
from urllib.parse import quote

from servekit.errors import InvalidInput

REQUEST_ID: ContextVar[str | None] = ContextVar("servekit_request_id", default=None)
HEADER = b"x-request-id"
METADATA = "x-request-id"
MAX_LENGTH = 128

_VALID = re.compile(r"[\x21-\x7e]{1,128}")
VALID_BYTES = re.compile(rb"[\x21-\x7e]{1,128}")  # a header value that is a request id
# escaped as %XX: '%' itself, and everything outside printable ASCII (spaces, CR, LF, …)
_SAFE_CHARACTERS = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) != "%")
_CUT_ESCAPE = re.compile(r"%[0-9A-F]?$")


def new_id() -> str:
    """A version-4 UUID: request ids need uniqueness, not secrecy. Its first 74
    random bits are drawn once per process (again after a fork), the last 48
    count up from a random start: one formatting per id instead of five."""
    return f"{_prefix}{next(_counter) & 0xFFFFFFFFFFFF:012x}"


def _fresh_sequence() -> None:
    global _prefix, _counter
    bits = random.getrandbits(74)
    _prefix = (f"{bits >> 42:08x}-{(bits >> 26) & 0xFFFF:04x}-4{(bits >> 14) & 0xFFF:03x}-"
               f"{0x8000 | (bits & 0x3FFF):04x}-")
    _counter = itertools.count(random.getrandbits(48))


_prefix = ""
_counter = itertools.count()
_fresh_sequence()
os.register_at_fork(after_in_child=_fresh_sequence)


def refusal(what: str) -> str:
    return (f"{what} must be 1 to {MAX_LENGTH} printable ASCII characters without spaces "
            "(a UUID, for example); leave it out and the server makes one")


def from_header(value: bytes) -> str:
    """A client's ``X-Request-ID`` value, or InvalidInput saying what one may be."""
    if VALID_BYTES.fullmatch(value) is None:
        raise InvalidInput(refusal("the X-Request-ID header"))
    return value.decode("ascii")


def header_or_none(value: bytes) -> str | None:
    """A client's ``X-Request-ID`` value, or None when :func:`from_header` refuses it."""
    return value.decode("ascii") if VALID_BYTES.fullmatch(value) is not None else None


def from_metadata(value: str) -> str:
    """A client's ``x-request-id`` gRPC metadata, or InvalidInput."""
    if _VALID.fullmatch(value) is None:
        raise InvalidInput(refusal("the x-request-id metadata"))
    return value


def header_safe(text: str) -> str:
    """``text`` as it may appear in a header and a log line: unchanged when it
    is a valid header id, else ``%XX``-escaped and cut to :data:`MAX_LENGTH`."""
    if _VALID.fullmatch(text) is not None:
        return text
    escaped = quote(text, safe=_SAFE_CHARACTERS)[:MAX_LENGTH]
    return _CUT_ESCAPE.sub("", escaped) or new_id()


def bind(request_id: str | None) -> str:
    """The id of the call being handled, once the protocol decoded its own
    (``request_id``: a V2 ``id``, or None): the id already bound (the header's)
    wins, else the protocol's (made header-safe), else a new one. Returns the
    id the request itself carries (its own, or the bound one when it had none)."""
    bound = REQUEST_ID.get()
    if bound is not None:
        return request_id or bound
    if request_id:
        REQUEST_ID.set(header_safe(request_id))
        return request_id
    bound = new_id()
    REQUEST_ID.set(bound)
    return bound


def current() -> str | None:
    return REQUEST_ID.get()




def unbound_context() -> Context:
    """A copy of the current context without the request id: for a task that
    one request starts but that serves others too (a batcher's drain)."""
    context = copy_context()
    context.run(REQUEST_ID.set, None)
    return context


__all__ = [
    "HEADER",
    "MAX_LENGTH",
    "METADATA",
    "REQUEST_ID",
    "VALID_BYTES",
    "bind",
    "current",
    "from_header",
    "from_metadata",
    "header_safe",
    "new_id",
    "unbound_context",
]
