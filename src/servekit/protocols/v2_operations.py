"""The V2 operations that the REST and gRPC skins both expose, answered as
plain data: server readiness, model metadata and statistics, and the model
repository (index, load, unload). Each skin only translates these answers
into its own wire format, so both report the same thing.
"""

from __future__ import annotations

from typing import Any

from servekit.errors import ModelNotFound
from servekit.registry import ModelVersion, Registry
from servekit.repository.reconcile import LOAD, UNLOAD
from servekit.server.lifecycle import Change, ServerContext


def metadata_dict(model: ModelVersion, versions: list[str]) -> dict[str, Any]:
    """V2 model metadata of one ready version, listing all versions of its model."""
    meta = model.metadata()
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
    model = registry.resolve(name, version or None)
    return metadata_dict(model, [v for v in registry.version_names(name) if v])


def stats_dict(model: ModelVersion) -> dict[str, Any]:
    """Triton's statistics extension for one version (durations in nanoseconds)."""
    s = model.stats
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
    models = list(reversed(registry.select(name, version or None))) if name else registry.all_versions()
    return [stats_dict(m) for m in models if m.ready]


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
    if not only_ready:
        known = {(r["name"], r["version"]) for r in rows}
        for settings in await ctx.sources.find(""):
            key = (settings.name, settings.parameters.version or "")
            if key not in known:
                rows.append({"name": key[0], "version": key[1], "state": "UNAVAILABLE", "reason": "unloaded"})
    return rows


async def repository_load(ctx: ServerContext, name: str) -> list[str]:
    """Load (or reload) every version of ``name`` from the model repository in
    every worker; answers once all have (the versions loaded)."""
    found = await ctx.sources.find(name)
    if not found:
        raise ModelNotFound(f"no model named {name!r} in the model repository")
    await ctx.change(Change(LOAD, {"name": name}))
    return [s.parameters.version or "" for s in found]


async def repository_unload(ctx: ServerContext, name: str) -> list[str]:
    """Unload every version of ``name`` in every worker (the versions unloaded)."""
    versions = [m.version for m in reversed(ctx.registry.select(name))]
    await ctx.change(Change(UNLOAD, {"name": name}))
    return versions


__all__ = [
    "metadata_dict",
    "model_metadata",
    "model_stats",
    "repository_index",
    "repository_load",
    "repository_unload",
    "stats_dict",
]
