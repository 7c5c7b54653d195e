"""Changing a model's traffic split and shadow while it serves.

Two ways, one change: the V2 repository extension's
``PUT /v2/repository/models/{name}/traffic`` (and ``GET`` to read it, with the
shadow's outcomes summed over every worker), and the ``traffic``/``shadow``
keys of the model's ``model-settings.json``, read when the repository is read
(at start, on a repository load, by the poller). The API's change is one
:data:`SET` :class:`~servekit.server.lifecycle.Change` that every worker
applies before the call answers; the files' are applied by every worker as
part of the ``repository.sync`` change that carries them.

Which wins: the newest. A routing set through the API stays until the
model's files declare a different one than they did before (each worker
remembers what the files last declared, and a :data:`SET` change carries what
its maker remembered, so a worker that replays the journal agrees).
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from servekit.config import ModelSettings
from servekit.errors import InvalidInput, ModelNotFound
from servekit.names import check_name
from servekit.registry import Registry, version_sort_key
from servekit.server.lifecycle import Change, ServerContext, Skin, Stop
from servekit.traffic import mirror
from servekit.traffic.routing import NONE, Routing

log = logging.getLogger("servekit.traffic")

SET = "traffic.set"  # {"name", "routing": {"traffic", "shadow"}, "declared": {…} | null}
REPORT = "traffic"  # the name of each worker's report (shadow outcomes)
MAX_BODY = 64 * 1024
EXAMPLE = '{"traffic": {"2": 10}, "shadow": {"version": "3", "percent": 50}}'


def declared(settings: list[ModelSettings]) -> dict[str, Routing]:
    """Each model's routing as its settings files declare it: that of its
    highest version declaring a traffic split or a shadow (a base path's file
    declares it for every version); :data:`NONE` for a model declaring none."""
    out: dict[str, Routing] = {}
    ranked: dict[str, tuple[Any, ...]] = {}
    for each in settings:
        out.setdefault(each.name, NONE)
        if not each.traffic and each.shadow is None:
            continue
        rank = version_sort_key(each.parameters.version or "")
        if each.name not in ranked or rank > ranked[each.name]:
            ranked[each.name] = rank
            out[each.name] = Routing.of_settings(each)
    return out


async def apply_declared(registry: Registry, settings: list[ModelSettings], only: set[str] | None = None) -> None:
    """Give each served model of ``settings`` what its files declare, if that
    changed since they were last read (a routing set through the API stays
    otherwise)."""
    for name, routing in declared(settings).items():
        if (only is not None and name not in only) or not registry.has(name):
            continue
        if registry.declared_routing(name) == routing:
            continue
        _warn_missing(registry, name, routing)
        if registry.routing(name) != routing:
            log.info("Model %r traffic from its settings: %s", name, _described(routing))
        await registry.set_routing(name, routing, declared=routing)


def _warn_missing(registry: Registry, name: str, routing: Routing) -> None:
    served = set(registry.version_names(name))
    for version in routing.versions():
        if version not in served:
            log.error(
                "Model %r: its traffic names version %r, which is not served; until it is, its share "
                "goes to the default version (a shadow naming it is counted as failed)", name, version,
            )


def _described(routing: Routing) -> str:
    parts = [f"{percent:g} % to version {version}" for version, percent in routing.traffic.items()]
    if routing.shadow is not None:
        parts.append(f"{routing.shadow.percent:g} % mirrored to version {routing.shadow.version}")
    return ", ".join(parts) or "none (every unpinned call to the default version)"


async def apply_set(ctx: ServerContext, change: Change) -> None:
    """Set a model's routing in this worker (every worker applies it)."""
    name = change.args.get("name")
    if not isinstance(name, str):
        raise InvalidInput(f"change {SET} needs a model name")
    name = check_name(name)
    try:
        routing = Routing.parse(change.args.get("routing"))
        raw = change.args.get("declared")
        files = Routing.parse(raw) if raw is not None else None
    except ValueError as exc:
        raise InvalidInput(f"change {SET}: {exc}") from None
    await ctx.registry.set_routing(name, routing, declared=files)


# -- the V2 repository extension's /traffic ------------------------------------------
async def document(ctx: ServerContext, name: str) -> dict[str, Any]:
    """A model's routing and its shadow's outcomes, summed over every worker."""
    registry = ctx.registry
    routing = registry.routing(name)  # 404 for a model not served
    current = registry.find(name)
    gathered = await ctx.reports.gather()
    reports = [r.get(REPORT, {}) for r in gathered.reports]
    shadow = mirror.combine(reports, name, routing.shadow.version if routing.shadow is not None else None)
    return {
        "name": name,
        "default_version": current.version if current is not None and current.ready else None,
        **routing.to_dict(),
        "shadow_stats": shadow["counts"],
        "differences": shadow["recent"],
        "workers": gathered.workers or 1,
        "missing_workers": gathered.missing,
    }


def summary(registry: Registry, reports: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each model with a split or a shadow: its routing, and its shadow's
    outcomes summed over ``reports`` (every worker's; the dashboard's)."""
    out: dict[str, dict[str, Any]] = {}
    parts = [r.get(REPORT, {}) for r in reports]
    for name in registry.names():
        routing = registry.routing(name)
        if routing.empty:
            continue
        row = routing.to_dict()
        if routing.shadow is not None:
            row["shadow_stats"] = mirror.combine(parts, name, routing.shadow.version)["counts"]
        out[name] = row
    return out


async def set_traffic(ctx: ServerContext, name: str, body: bytes) -> dict[str, Any]:
    """Validate a routing sent for ``name`` and apply it in every worker;
    answers the new document once every worker has applied it."""
    if len(body) > MAX_BODY:
        raise InvalidInput(f"the body is {len(body)} bytes; at most {MAX_BODY}: send {EXAMPLE}")
    try:
        sent = orjson.loads(body or b"{}")
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"the body is not JSON ({exc}); send {EXAMPLE}") from None
    try:
        routing = Routing.parse(sent)
    except ValueError as exc:
        raise InvalidInput(f"{exc}; send {EXAMPLE} ({{}} for none)") from None
    versions = ctx.registry.version_names(name)  # 404 for a model not served
    for version in routing.versions():
        if version not in versions:
            known = ", ".join(sorted((v for v in versions if v), key=version_sort_key)) or "none"
            raise ModelNotFound(f"model {name!r} has no version {version!r} (versions: {known})")
    files = ctx.registry.declared_routing(name)
    await ctx.change(Change(SET, {
        "name": name,
        "routing": routing.to_dict(),
        "declared": files.to_dict() if files is not None else None,
    }))
    log.info("Model %r traffic set: %s", name, _described(routing))
    return await document(ctx, name)


async def start(ctx: ServerContext) -> Stop | None:
    ctx.reports.reporters[REPORT] = ctx.dataplane.mirror.report
    return None


SKIN = Skin(name="traffic", start=start, changes={SET: apply_set})


__all__ = ["REPORT", "SET", "SKIN", "apply_declared", "apply_set", "declared", "document", "set_traffic", "summary"]
