"""The V2 operations that the REST and gRPC skins both expose, answered as
plain data: server readiness, model metadata and statistics, and the model
repository (index, load, unload). Each skin only translates these answers
into its own wire format, so both report the same thing.
"""

from __future__ import annotations

from typing import Any

from servekit.errors import ModelNotFound, ServekitError
from servekit.registry import ModelVersion, Registry, version_sort_key
from servekit.server.context import ServerContext


def not_ready_reason(registry: Registry) -> str | None:
    """Why the server is not ready (the models still loading or failed), or None."""
    if registry.ready():
        return None
    waiting = [
        f"{v.name}:{v.version or '-'} {v.state.value}" for v in registry.all_versions() if not v.ready
    ]
    return "models not ready: " + ", ".join(waiting)


def metadata_dict(model: ModelVersion, versions: list[str]) -> dict[str, Any]:
    """V2 model metadata of one ready version, listing all versions of its model."""
    assert model.runtime is not None
    meta = model.runtime.metadata()
    out: dict[str, Any] = {
        "name": model.name,
        "versions": versions,
        "platform": meta.platform,
        "inputs": [s.to_dict() for s in meta.inputs],
        "outputs": [s.to_dict() for s in meta.outputs],
    }
    if meta.parameters:
        out["parameters"] = meta.parameters
    return out


def model_metadata(registry: Registry, name: str, version: str | None) -> dict[str, Any]:
    """Metadata of the version asked for (or the default one)."""
    entry = registry.entry(name)
    model = registry.resolve(name, version or None)
    versions = sorted((v for v in entry.versions if v), key=version_sort_key)
    return metadata_dict(model, versions)


def stats_dict(model: ModelVersion) -> dict[str, Any]:
    """Triton's statistics extension for one version (durations in nanoseconds)."""
    assert model.batcher is not None
    s = model.batcher.stats
    return {
        "name": model.name,
        "version": model.version,
        "last_inference": s.last_inference_ms,
        "inference_count": s.inference_count,
        "execution_count": s.execution_count,
        "inference_stats": {
            "success": {"count": s.success_count, "ns": s.success_ns},
            "fail": {"count": s.fail_count, "ns": s.fail_ns},
            "queue": {"count": s.inference_count, "ns": s.queue_ns},
            "compute_infer": {"count": s.execution_count, "ns": s.compute_ns},
        },
        "batch_stats": [
            {"batch_size": size, "compute_infer": {"count": count}}
            for size, count in sorted(s.batch_sizes.items())
        ],
    }


def model_stats(registry: Registry, name: str | None, version: str | None) -> list[dict[str, Any]]:
    """Statistics of one version, of every version of a model, or of every model."""
    if name:
        entry = registry.entry(name)
        if version and version not in entry.versions:
            raise ModelNotFound(f"model {name!r} has no version {version!r}")
        models = [entry.versions[version]] if version else list(entry.versions.values())
    else:
        models = registry.all_versions()
    return [stats_dict(m) for m in models if m.batcher]


async def repository_index(ctx: ServerContext, only_ready: bool = False) -> list[dict[str, str]]:
    """Every model version the server knows: loaded, failed, or in the repository
    but not loaded (state UNAVAILABLE, reason "unloaded")."""
    rows = []
    for model in sorted(ctx.registry.all_versions(), key=lambda m: (m.name, m.version)):
        if only_ready and not model.ready:
            continue
        rows.append(
            {"name": model.name, "version": model.version, "state": model.state.value, "reason": model.reason}
        )
    if ctx.find_model_settings is not None and not only_ready:
        known = {(r["name"], r["version"]) for r in rows}
        for settings in await ctx.find_model_settings(""):
            key = (settings.name, settings.parameters.version or "")
            if key not in known:
                rows.append({"name": key[0], "version": key[1], "state": "UNAVAILABLE", "reason": "unloaded"})
    return rows


async def repository_load(ctx: ServerContext, name: str) -> list[ModelVersion]:
    """Load (or reload) every version of ``name`` from the model repository."""
    if ctx.find_model_settings is None:
        raise ModelNotFound("this server has no model repository to load from")
    found = await ctx.find_model_settings(name)
    if not found:
        raise ModelNotFound(f"no model named {name!r} in the model repository")
    loaded = [await ctx.registry.load(settings) for settings in found]
    failed = [m for m in loaded if not m.ready]
    for hook in ctx.on_repository_change:
        await hook("load", name)
    if failed:
        raise ServekitError(f"model {name!r} failed to load: {failed[0].reason}")
    return loaded


async def repository_unload(ctx: ServerContext, name: str) -> list[ModelVersion]:
    """Unload every version of ``name``."""
    unloaded = await ctx.registry.unload(name)
    for hook in ctx.on_repository_change:
        await hook("unload", name)
    return unloaded


__all__ = [
    "metadata_dict",
    "model_metadata",
    "model_stats",
    "not_ready_reason",
    "repository_index",
    "repository_load",
    "repository_unload",
    "stats_dict",
]
