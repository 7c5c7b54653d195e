"""What every protocol adapter gets: the registry, settings, metrics and the
repository (to load models by name)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from servekit.config import ModelSettings, ServerSettings
from servekit.registry import Registry
from servekit.server.metrics import Metrics


@dataclass
class ServerContext:
    settings: ServerSettings
    registry: Registry
    metrics: Metrics
    # desired settings of one model by name, from the configured sources
    find_model_settings: Callable[[str], Awaitable[list[ModelSettings]]] | None = None
    # hooks that protocols and runtimes may add (e.g. the control plane of workers)
    on_repository_change: list[Callable[[str, str], Awaitable[None]]] = field(default_factory=list)
