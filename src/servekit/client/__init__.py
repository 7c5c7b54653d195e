"""A Python client for V2 (Open Inference Protocol) servers: servekit, MLServer,
Triton and KServe. numpy in, numpy out; REST with JSON or Triton's binary
tensors, or gRPC::

    from servekit import Client

    client = Client("http://127.0.0.1:8080")
    client.infer("iris", {"x": rows})      # {"predict": array([...])}

:class:`AsyncClient` has the same calls for asyncio; errors are in
:mod:`servekit.client.errors`. ``servekit infer`` calls it from a shell.
"""

from __future__ import annotations

from servekit.client import errors
from servekit.client._async import AsyncClient
from servekit.client._sync import Client
from servekit.client.codec import InferResult
from servekit.client.errors import (
    ClientError,
    ClientTimeout,
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
    ServerError,
    ServerOverloaded,
    ServerUnreachable,
    ServiceUnavailable,
    Unauthorized,
)

__all__ = [
    "AsyncClient",
    "Client",
    "ClientError",
    "ClientTimeout",
    "InferResult",
    "InvalidInput",
    "ModelNotFound",
    "ModelNotReady",
    "ServerError",
    "ServerOverloaded",
    "ServerUnreachable",
    "ServiceUnavailable",
    "Unauthorized",
    "errors",
]
