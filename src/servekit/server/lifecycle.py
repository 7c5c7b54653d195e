"""The worker's lifecycle, as types: what a skin is, what it gets, and what a
change to the served models is. Nothing here imports a protocol; the
assembly (:mod:`servekit.server.assembly`) lists the skins, the runner
(:mod:`servekit.server.runner`) starts them and applies changes.

- :class:`ServerContext`: what one worker process holds (settings, registry,
  data plane, metrics, model sources) and how it changes what is served
  (:meth:`ServerContext.change`).
- :class:`Skin`: one protocol front: the routes it mounts on which listener,
  optional start work (a gRPC server, a poller) returning its stop work, and
  the kinds of :class:`Change` it applies.
- :class:`Change`: one typed change to what is served. The worker that
  receives the call applies it, the supervisor journals it and relays it to
  every other worker (and replays it to a replacement), each applies it with
  the same function, and the call answers once all have (or says which failed).
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from servekit.config import ServerSettings
from servekit.dataplane import DataPlane
from servekit.errors import InvalidInput, ServekitError
from servekit.registry import Registry
from servekit.repository.sources import ModelSources
from servekit.server.http import ErrorEncoder, Route, Router
from servekit.server.metrics import Metrics
from servekit.server.reports import Reports

# the listeners a skin can mount routes on (ports from the settings)
MAIN = "main"  # --http-port: V2 REST, /predict, Seldon, TorchServe inference
METRICS = "metrics"  # --metrics-port
TFSERVING_REST = "tfserving-rest"  # --rest_api_port
TORCHSERVE_MANAGEMENT = "torchserve-management"  # management_port on management_host

# a change line between processes is bounded before it is parsed
MAX_CHANGE_BYTES = 16 * 1024 * 1024
_sequence = itertools.count(1)


@dataclass(frozen=True, slots=True)
class Change:
    """One change to what is served: ``kind`` names the function that applies
    it (a core one or a skin's), ``args`` are plain JSON data."""

    kind: str
    args: dict[str, Any]
    id: str = field(default_factory=lambda: f"{os.getpid()}-{next(_sequence)}")

    def encode(self) -> bytes:
        """One line (JSON escapes every newline in names and values)."""
        return orjson.dumps({"kind": self.kind, "args": self.args, "id": self.id})

    @classmethod
    def decode(cls, line: bytes | str) -> Change:
        if len(line) > MAX_CHANGE_BYTES:
            raise InvalidInput(f"a change of {len(line)} bytes is over the limit")
        try:
            data = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise InvalidInput(f"a change is not JSON: {exc}") from None
        if not (
            isinstance(data, dict)
            and isinstance(data.get("kind"), str)
            and isinstance(data.get("args"), dict)
            and isinstance(data.get("id"), str)
        ):
            raise InvalidInput("a change needs a string kind and id and an object of args")
        return cls(data["kind"], data["args"], data["id"])


class ChangeFailed(ServekitError):
    """A change was made here but some workers could not apply it (500)."""

    status = 500

    def __init__(self, message: str, failures: dict[int, str]) -> None:
        super().__init__(message)
        self.failures = failures


# how a worker makes a change (apply here, relay, wait for every worker when asked)
MakeChange = Callable[[Change, bool], Awaitable[None]]


async def _apply_only_here(change: Change, wait: bool) -> None:
    raise ServekitError(f"this server cannot apply changes yet ({change.kind})")


@dataclass
class ServerContext:
    """What every skin of one worker process gets."""

    settings: ServerSettings
    registry: Registry
    metrics: Metrics
    dataplane: DataPlane
    sources: ModelSources
    index: int = 0  # this worker's number
    make_change: MakeChange = _apply_only_here
    # each HTTP port's router, once mounted (the API documents describe what they answer)
    routers: dict[int, Router] = field(default_factory=dict)
    # what this worker reports and how it gathers every worker's reports (the dashboard's numbers)
    reports: Reports = field(default_factory=Reports)

    async def change(self, change: Change, *, wait: bool = True) -> None:
        """Apply ``change`` in this worker and every other one. With ``wait``,
        return once every worker has applied it; raise the first error of
        this worker's, or :class:`ChangeFailed` naming the workers that failed."""
        # shielded: a caller that goes away does not stop a change half-way
        # (applied here but not relayed)
        await asyncio.shield(self.make_change(change, wait))


# what a skin does in each worker
ChangeHandler = Callable[[ServerContext, Change], Awaitable[None]]
Stop = Callable[[], Awaitable[None]]
Start = Callable[[ServerContext], Awaitable[Stop | None]]


@dataclass(frozen=True, slots=True)
class Mount:
    """Routes a skin serves on one listener, with the error format of its protocol."""

    listener: str
    routes: list[Route]
    on_error: ErrorEncoder


@dataclass(frozen=True)
class Skin:
    """One protocol front (or a worker-wide service such as the repository poller)."""

    name: str
    enabled: Callable[[ServerSettings], bool] = lambda settings: True
    mounts: Callable[[ServerContext], list[Mount]] | None = None
    start: Start | None = None
    changes: Mapping[str, ChangeHandler] = field(default_factory=dict)


__all__ = [
    "MAIN",
    "METRICS",
    "TFSERVING_REST",
    "TORCHSERVE_MANAGEMENT",
    "Change",
    "ChangeFailed",
    "ChangeHandler",
    "Mount",
    "ServerContext",
    "Skin",
    "Start",
    "Stop",
]
