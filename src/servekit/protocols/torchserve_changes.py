"""TorchServe's management changes (register, scale, set default, unregister),
applied the same way by the worker that answered the call and by its siblings.

With several worker processes, the worker that serves a management call makes
the change, then relays it through the supervisor as one line,
``torchserve <JSON>``. Each sibling applies the changes in the order they were
made; a worker that replaces a dead one has every past change replayed before
it serves. Applying a change a second time changes nothing, and each change
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

import orjson

from servekit.archive.store import ModelOptions, ModelStore, active_store
from servekit.config import ModelSettings
from servekit.registry import Registry
from servekit.server.context import ServerContext
from servekit.server.runner import CONTROL_ACTIONS, WORKER_HOOKS, Worker

log = logging.getLogger("servekit.torchserve")

ACTION = "torchserve"  # the control line's action; its argument is the change as JSON


# -- describing a change ----------------------------------------------------------
Stamp = tuple[int, int]


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


async def make(ctx: ServerContext, store: ModelStore, change: dict[str, Any]) -> None:
    """Apply a change here, then relay it to the other workers (none when this
    is the only one). orjson escapes newlines, so the change stays one line."""
    await apply(ctx.registry, store, change)
    line = orjson.dumps(change).decode()
    for hook in ctx.on_repository_change:
        await hook(ACTION, line)


# -- applying a change --------------------------------------------------------------
# the stamp of the last change applied to each part of the state: a change
# relayed late (made before one this worker applied since) leaves that part alone
_applied: dict[tuple[str, str, str], Stamp] = {}


def _newest(part: tuple[str, str, str], stamp: Stamp) -> bool:
    if _applied.get(part, (-1, -1)) > stamp:
        return False
    _applied[part] = stamp
    return True


def _set_default(registry: Registry | None, store: ModelStore, name: str, version: str | None) -> None:
    if version is None:
        store.defaults.pop(name, None)
    else:
        store.defaults[name] = version
    entry = registry.models.get(name) if registry is not None else None
    if entry is not None and (version is None or version in entry.versions):
        entry.default_version = version


async def apply(registry: Registry | None, store: ModelStore, change: dict[str, Any]) -> None:
    """Apply a change, made here or in another worker; applying it again, or
    after a newer change to the same model, changes nothing. ``registry`` is
    ``None`` in a worker that has not started yet: then only the model store
    (its desired state) changes, and the worker loads what it holds when it starts."""
    op, name, version = change["op"], str(change["name"]), str(change["version"])
    stamp: Stamp = (int(change["stamp"][0]), int(change["stamp"][1]))
    if op == "register":
        settings = ModelSettings.model_validate(change["settings"])
        if _newest(("model", name, version), stamp):
            workers = store.options[(name, version)].workers if (name, version) in store.options else None
            store.keep(settings, ModelOptions(**change["options"]))
            if not _newest(("workers", name, version), stamp) and workers is not None:
                store.options[(name, version)].workers = workers
            current = registry.find(name, version) if registry is not None else None
            if registry is not None and (current is None or not current.ready or current.settings != settings):
                await registry.load(settings)  # a failure is logged and shows in describe
        if _newest(("default", name, ""), stamp):
            _set_default(registry, store, name, change.get("default"))
    elif op == "scale":
        if _newest(("workers", name, version), stamp):
            store.option(name, version).workers = int(change["workers"])
    elif op == "set-default":
        if _newest(("default", name, ""), stamp):
            _set_default(registry, store, name, version)
    elif op == "unregister":
        if _newest(("model", name, version), stamp):
            await _unregister(registry, store, name, version, stamp)
    else:
        log.warning("Ignoring unknown TorchServe management change %r", op)


async def _unregister(registry: Registry | None, store: ModelStore, name: str, version: str, stamp: Stamp) -> None:
    default = store.defaults.get(name)
    store.remove(name, version)
    if default == version and _newest(("default", name, ""), stamp):
        _set_default(registry, store, name, None)
    entry = registry.models.get(name) if registry is not None else None
    if registry is None or entry is None or version not in entry.versions:
        return
    await registry.unload(name, version)
    entry = registry.models.get(name)
    if entry is not None and entry.default_version == version:
        entry.default_version = None


async def _apply_relayed(worker: Worker, line: str) -> None:
    registry = worker.registry if worker.ctx is not None else None
    await apply(registry, active_store(worker.settings), orjson.loads(line))


async def settle(worker: Worker) -> None:
    """Worker hook: finish what changes replayed before the worker started left
    to it - load registered models it has not loaded, and set default versions."""
    settings = worker.settings
    if not (settings.model_store or settings.load_models or settings.ts_config) or worker.registry is None:
        return
    store = active_store(settings)
    for (name, version), model_settings in list(store.models.items()):
        if worker.registry.find(name, version) is None:
            await worker.registry.load(model_settings)
    for name, version in list(store.defaults.items()):
        _set_default(worker.registry, store, name, version)


if settle not in WORKER_HOOKS:
    WORKER_HOOKS.append(settle)
CONTROL_ACTIONS[ACTION] = _apply_relayed


__all__ = [
    "ACTION",
    "apply",
    "default_set",
    "make",
    "registered",
    "scaled",
    "settle",
    "unregistered",
]
