"""The one mapping from servekit errors to gRPC status codes, shared by every
gRPC service servekit serves (V2 and TF Serving's)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from servekit.errors import InvalidInput, ServekitError
from servekit.observability import grpc_calls

log = logging.getLogger("servekit.grpc")

STATUS_CODES: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.ALREADY_EXISTS,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}

Handler = TypeVar("Handler", bound=Callable[..., Awaitable[Any]])


def status_code(exc: ServekitError) -> grpc.StatusCode:
    """The gRPC status for a servekit error (from its HTTP status)."""
    return STATUS_CODES.get(exc.status, grpc.StatusCode.INTERNAL)


class MalformedMessage:
    """What :func:`deserializer` hands a method for bytes that are not its
    request message; :func:`rpc` answers it with INVALID_ARGUMENT."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message


def deserializer(message_class: Any) -> Callable[[bytes], Any]:
    """A ``request_deserializer`` for a method decorated with :func:`rpc`: the
    parsed message, or a :class:`MalformedMessage`. grpc.aio answers a
    deserializer that raises with UNKNOWN; this way a corrupt request gets
    INVALID_ARGUMENT and a message saying what is wrong."""
    parse = message_class.FromString
    full_name = message_class.DESCRIPTOR.full_name

    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except Exception as exc:  # protobuf's DecodeError, without importing its internals
            return MalformedMessage(f"the request is not a valid {full_name} message: {exc}")

    return deserialize


def rpc(service: str) -> Callable[[Handler], Handler]:
    """Decorate an async servicer method: servekit errors end the call with their
    status and message, anything unexpected with INTERNAL (logged) rather than a
    bare UNKNOWN, and a request :func:`deserializer` could not parse with
    INVALID_ARGUMENT."""

    def decorate(method: Handler) -> Handler:
        name = f"{service} {method.__name__}"

        @functools.wraps(method)
        async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
            traced = None
            try:
                # the request id (x-request-id metadata, or made) goes back as trailing metadata
                traced = grpc_calls.begin(context, name)
                if isinstance(request, MalformedMessage):
                    raise InvalidInput(request.message)
                answer = await method(self, request, context)
                grpc_calls.end(context, traced)
                return answer
            except ServekitError as exc:
                error: tuple[grpc.StatusCode, str] = (status_code(exc), exc.message)
            except Exception as exc:
                log.exception("%s %s failed", service, method.__name__)
                error = (grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")
            grpc_calls.end(context, traced, error[1])
            await context.abort(*error)

        return wrapper  # type: ignore[return-value]

    return decorate
