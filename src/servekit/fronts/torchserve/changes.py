"""TorchServe's management changes (register, scale, set default, unregister),
applied the same way by the worker that answered the call and by its siblings.

Each is one :class:`~servekit.server.lifecycle.Change` of kind ``torchserve``:
the worker that serves a management call applies it, the supervisor relays it
to every other worker (which apply it in the order they were made) and
journals it for a worker that replaces a dead one. A call with
``synchronous=true`` answers once every worker has applied it. Applying a change a second time changes nothing, and each change
carries a stamp so that one relayed late (two calls answered by different
workers one after the other) does not undo a newer one: every worker ends in
the state of the last call.

A registration carries the model settings the receiving worker made from the
archive: they point at the file it downloaded into the model store (or found
there) and at the folder it unpacked into the archive cache, so siblings
neither fetch a URL again nor unpack the archive again.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Any

from servekit.archive.store import (
    ModelOptions,
    ModelStore,
    Stamp,
    effective,
    is_stand_in,
    model_store,
)
from servekit.config import ModelSettings
from servekit.errors import InvalidInput, ModelLoadError, ServekitError
from servekit.names import check_name, check_version
from servekit.registry import Registry
from servekit.repository.discovery import public_reason
from servekit.server.lifecycle import Change, ServerContext

log = logging.getLogger("servekit.torchserve")

KIND = "torchserve"  # the kind of Change; its args are one of the dicts below


# -- describing a change ----------------------------------------------------------

def _change(op: str, name: str, version: str, **fields: Any) -> dict[str, Any]:
    # CLOCK_MONOTONIC is one clock for every process of the machine, so a call
    # answered before another was received has the smaller stamp (the pid breaks ties)
    return {"op": op, "name": name, "version": version,
            "stamp": [time.monotonic_ns(), os.getpid()], **fields}


def registered(settings: ModelSettings, options: ModelOptions, default: str | None) -> dict[str, Any]:
    """A registration, with the model's default version after it."""
    return _change("register", settings.name, settings.parameters.version or "",
                   settings=settings.model_dump(mode="json"), options=dataclasses.asdict(options),
                   default=default)


def scaled(name: str, version: str, workers: int) -> dict[str, Any]:
    return _change("scale", name, version, workers=workers)


def default_set(name: str, version: str) -> dict[str, Any]:
    return _change("set-default", name, version)


def unregistered(name: str, version: str) -> dict[str, Any]:
    return _change("unregister", name, version)


async def make(ctx: ServerContext, change: dict[str, Any], *, wait: bool = True) -> None:
    """Apply a change in this worker and every other one (see :meth:`ServerContext.change`)."""
    await ctx.change(Change(KIND, change), wait=wait)


# -- applying a change --------------------------------------------------------------
def _newest(store: ModelStore, part: tuple[str, str, str], stamp: Stamp) -> bool:
    """Whether ``stamp`` is not older than the last change applied to ``part``
    (and then remember it): a change relayed late leaves that part alone."""
    if store.stamps.get(part, (-1, -1)) > stamp:
        return False
    store.stamps[part] = stamp
    return True


async def _set_default(registry: Registry, store: ModelStore, name: str, version: str | None) -> None:
    if version is None:
        store.defaults.pop(name, None)
    else:
        store.defaults[name] = version
    await registry.set_default(name, version)


async def apply(ctx: ServerContext, change: Change) -> None:
    """Apply a change, made here or in another worker; applying it again, or
    after a newer change to the same model, changes nothing."""
    registry, store = ctx.registry, model_store(ctx.sources)
    args = change.args
    try:
        op = str(args["op"])
        name, version = check_name(args["name"]), check_version(args["version"])
        stamp: Stamp = (int(args["stamp"][0]), int(args["stamp"][1]))
    except (KeyError, TypeError, ValueError, IndexError):
        raise InvalidInput("a TorchServe change needs op, name, version and stamp") from None
    if op == "register":
        settings = ModelSettings.model_validate(args["settings"])
        if _newest(store, ("model", name, version), stamp):
            workers = store.options[(name, version)].workers if (name, version) in store.options else None
            store.keep(settings, ModelOptions(**args["options"]))
            if not _newest(store, ("workers", name, version), stamp) and workers is not None:
                store.options[(name, version)].workers = workers
            wanted = effective(settings, store.option(name, version))
            current = registry.find(name, version)
            if current is None or not current.ready or current.settings != wanted:
                model = await registry.load(wanted)
                if not model.ready:
                    reason = public_reason(model.reason, [settings.source_dir, store.root])
                    raise ModelLoadError(f"model {name!r} version {version} failed to load: {reason}")
        if _newest(store, ("default", name, ""), stamp):
            await _set_default(registry, store, name, args.get("default"))
    elif op == "scale":
        if _newest(store, ("workers", name, version), stamp):
            options = store.option(name, version)
            options.workers = int(args["workers"])
            await _start_workers(registry, store, name, version)
    elif op == "set-default":
        if _newest(store, ("default", name, ""), stamp):
            await _set_default(registry, store, name, version)
    elif op == "unregister":
        if _newest(store, ("model", name, version), stamp):
            await _unregister(registry, store, name, version, stamp)
    else:
        raise InvalidInput(f"unknown TorchServe management change {op[:32]!r}")


async def _start_workers(registry: Registry, store: ModelStore, name: str, version: str) -> None:
    """A version scaled up from no workers loads its handler now (TorchServe
    starts it with the first worker); if that fails, it stays at no workers
    and the failure is the call's (500, as TorchServe answers)."""
    settings = store.models.get((name, version))
    current = registry.find(name, version)
    if settings is None or current is None or store.option(name, version).workers <= 0:
        return
    if not is_stand_in(current.settings) and current.ready:
        return
    model = await registry.load(settings)
    if not model.ready:
        store.option(name, version).workers = 0
        reason = public_reason(model.reason, [settings.source_dir, store.root])
        raise ServekitError(f"Failed to start workers for model {name} version: {version}: {reason}")


async def _unregister(registry: Registry, store: ModelStore, name: str, version: str, stamp: Stamp) -> None:
    default = store.defaults.get(name)
    store.remove(name, version)
    if default == version and _newest(store, ("default", name, ""), stamp):
        await _set_default(registry, store, name, None)
    if registry.has(name, version):
        await registry.unload(name, version)


async def settle(ctx: ServerContext) -> None:
    """At a worker's start: load registered models it has not loaded, and set
    the default versions the model store holds."""
    store = model_store(ctx.sources)
    for (name, version), model_settings in list(store.models.items()):
        if ctx.registry.find(name, version) is None:
            await ctx.registry.load(effective(model_settings, store.option(name, version)))
    for name, version in list(store.defaults.items()):
        await ctx.registry.set_default(name, version)


__all__ = [
    "KIND",
    "apply",
    "default_set",
    "make",
    "registered",
    "scaled",
    "settle",
    "unregistered",
]
