"""What the blocking and the asyncio clients share: the address, settings,
input preparation, the retry policy and the V2 paths."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote, urlsplit

import numpy as np

import servekit.client.codec as codec
from servekit.client.errors import ClientError, InvalidInput, ServerOverloaded, ServerUnreachable

Protocol = Literal["rest", "binary", "grpc"]
PROTOCOLS: tuple[str, ...] = ("rest", "binary", "grpc")
# the name a bare array takes when the model's metadata lists no inputs
DEFAULT_INPUT = "input-0"
MAX_RETRIES = 20
MAX_MESSAGE = (1 << 31) - 1


@dataclass(frozen=True)
class Address:
    protocol: str  # rest, binary or grpc
    scheme: str  # http / https for REST; grpc / grpcs
    host: str
    port: int
    base_path: str

    @property
    def http_base(self) -> str:
        return f"{self.scheme}://{self.host_port}{self.base_path}"

    @property
    def host_port(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def tls(self) -> bool:
        return self.scheme in ("https", "grpcs")


def parse_address(url: str, protocol: str | None) -> Address:
    """``http://host:8080`` (REST), ``grpc://host:8081`` or ``host:port`` with
    ``protocol="grpc"``; ``protocol`` says rest (JSON), binary or grpc."""
    if protocol is not None and protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, not {protocol!r}")
    if "://" not in url:
        url = ("grpc://" if protocol == "grpc" else "http://") + url
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https", "grpc", "grpcs"):
        raise ValueError(f"unsupported URL scheme {parts.scheme!r} in {url!r}; use http(s):// or grpc(s)://")
    if protocol is None:
        protocol = "grpc" if scheme.startswith("grpc") else "rest"
    if protocol == "grpc" and scheme.startswith("http"):
        scheme = "grpcs" if scheme == "https" else "grpc"
    if protocol != "grpc" and scheme.startswith("grpc"):
        scheme = "https" if scheme == "grpcs" else "http"
    if not parts.hostname:
        raise ValueError(f"no host in {url!r}")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"bad port in {url!r}: {exc}") from None
    if port is None:
        port = {"http": 80, "https": 443, "grpc": 8081, "grpcs": 8081}[scheme]
    return Address(protocol, scheme, parts.hostname, port, parts.path.rstrip("/"))


def model_path(model: str, version: str | None, suffix: str = "") -> str:
    if not model:
        raise InvalidInput("a model name is needed")
    path = f"/v2/models/{quote(model, safe='')}"
    if version:
        path += f"/versions/{quote(str(version), safe='')}"
    return path + suffix


class Base:
    """Settings and the pieces of every call that do not wait on the network."""

    def __init__(
        self,
        url: str = "http://127.0.0.1:8080",
        *,
        protocol: Protocol | None = None,
        timeout: float = 60.0,
        connect_timeout: float = 5.0,
        retries: int = 3,
        backoff: float = 0.1,
        max_backoff: float = 10.0,
        token: str | None = None,
        headers: Mapping[str, str] | None = None,
        verify: bool | str = True,
        max_message_size: int = 256 * 1024 * 1024,
    ) -> None:
        self.address = parse_address(url, protocol)
        if timeout <= 0 or connect_timeout <= 0:
            raise ValueError("timeout and connect_timeout must be positive seconds")
        if not 0 <= retries <= MAX_RETRIES:
            raise ValueError(f"retries must be between 0 and {MAX_RETRIES}")
        if backoff < 0 or max_backoff < 0:
            raise ValueError("backoff and max_backoff must be >= 0")
        if not 0 < max_message_size <= MAX_MESSAGE:
            raise ValueError(f"max_message_size must be between 1 and {MAX_MESSAGE} bytes")
        self.timeout = float(timeout)
        self.connect_timeout = float(connect_timeout)
        self.retries = retries
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.token = token
        self.headers = dict(headers or {})
        self.verify = verify
        self.max_message_size = max_message_size
        self._inputs: dict[tuple[str, str | None], list[dict[str, Any]]] = {}
        # how many attempts the last call took (1: no retry), for callers that log it
        self.last_attempts = 0

    @property
    def protocol(self) -> str:
        return self.address.protocol

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.address.http_base!r}, protocol={self.protocol!r})"

    # -- retries ------------------------------------------------------------------
    def should_retry(self, error: ClientError, attempt: int, idempotent: bool) -> float | None:
        """Seconds to wait before trying again, or None to give up. Idempotent
        calls retry when the server could not be reached or was unavailable;
        inference only when the server said it is overloaded and when to come back."""
        if attempt >= self.retries:
            return None
        if isinstance(error, ServerOverloaded) and error.retry_after is not None:
            return min(error.retry_after, self.max_backoff)
        if not idempotent:
            return None
        if isinstance(error, ServerUnreachable) or error.status in (502, 503, 504):
            # exponential with jitter, so that many clients do not come back at once
            delay: float = self.backoff * (2**attempt) * (0.5 + random.random() / 2)
            return min(delay, self.max_backoff)
        return None

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    # -- inputs ---------------------------------------------------------------------
    def wants_metadata(self, inputs: Any) -> bool:
        """A bare array, or data given as lists, needs the model's inputs."""
        if isinstance(inputs, Mapping):
            return any(not isinstance(v, np.ndarray) for v in inputs.values())
        return True

    def cached_inputs(self, model: str, version: str | None) -> list[dict[str, Any]] | None:
        return self._inputs.get((model, version))

    def remember_inputs(self, model: str, version: str | None, metadata: dict[str, Any]) -> list[dict[str, Any]]:
        declared = [t for t in metadata.get("inputs") or [] if isinstance(t, dict) and "name" in t]
        if len(self._inputs) > 1024:  # bounded: a client that walks many models forgets the oldest
            self._inputs.pop(next(iter(self._inputs)))
        self._inputs[(model, version)] = declared
        return declared

    def forget(self, model: str) -> None:
        for key in [k for k in self._inputs if k[0] == model]:
            del self._inputs[key]

    def prepare(self, inputs: Any, declared: list[dict[str, Any]] | None) -> dict[str, np.ndarray]:
        """Named arrays from a mapping or a bare array-like; data given as
        lists (not arrays) takes the datatype the model declares."""
        by_name = {t["name"]: t for t in declared or []}
        if not isinstance(inputs, Mapping):
            if declared is not None and len(declared) > 1:
                names = ", ".join(repr(t["name"]) for t in declared)
                raise InvalidInput(f"the model has {len(declared)} inputs ({names}); pass a dict of arrays by name")
            name = declared[0]["name"] if declared else DEFAULT_INPUT
            inputs = {name: inputs}
        if not inputs:
            raise InvalidInput("no inputs: pass an array or a dict of arrays by input name")
        out: dict[str, np.ndarray] = {}
        for name, value in inputs.items():
            if not isinstance(name, str) or not name:
                raise InvalidInput(f"input names must be non-empty strings, not {name!r}")
            array = codec.as_array(value, name)
            if not isinstance(value, np.ndarray) and name in by_name:
                array = codec.cast_to(array, str(by_name[name].get("datatype", "")).upper(), name)
            out[name] = array
        return out

    def infer_rest_body(self, inputs: dict[str, np.ndarray], outputs: list[str] | None,
                        parameters: dict[str, Any] | None, request_id: str | None) -> tuple[bytes, dict[str, str]]:
        body, headers = codec.rest_request(inputs, binary=self.protocol == "binary", outputs=outputs,
                                           parameters=parameters, request_id=request_id)
        if len(body) > self.max_message_size:
            raise InvalidInput(f"the request is {len(body)} bytes, over max_message_size ({self.max_message_size})")
        return body, headers


def index_entries(document: Any) -> list[dict[str, Any]]:
    if not isinstance(document, list):
        raise ClientError(f"the repository index is not a list: {str(document)[:200]}")
    return [entry for entry in document if isinstance(entry, dict)]


__all__ = ["DEFAULT_INPUT", "PROTOCOLS", "Address", "Base", "Protocol", "model_path", "parse_address"]
