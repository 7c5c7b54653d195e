"""servekit: one Python model server for every model, behind the APIs clients already call."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from servekit.client import AsyncClient, Client
    from servekit.library import (
        AssetsManager,
        AsyncModel,
        Model,
        ModelLibrary,
        SimpleProfiler,
        load_model,
    )

# the model library's public names, imported on first use so `import servekit` stays light
_LIBRARY_NAMES = frozenset(
    {"AssetsManager", "AsyncModel", "Model", "ModelLibrary", "SimpleProfiler", "load_model"}
)


# the V2 client, likewise imported on first use
_CLIENT_NAMES = frozenset({"AsyncClient", "Client"})


def __getattr__(name: str) -> Any:
    if name in _CLIENT_NAMES:
        from servekit import client

        return getattr(client, name)
    if name in _LIBRARY_NAMES:
        from servekit import library

        return getattr(library, name)
    raise AttributeError(f"module 'servekit' has no attribute {name!r}")


__all__ = [
    "AssetsManager",
    "AsyncClient",
    "AsyncModel",
    "Client",
    "Model",
    "ModelLibrary",
    "SimpleProfiler",
    "__version__",
    "load_model",
]
