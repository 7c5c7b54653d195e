"""The model library's commands: ``servekit describe``, ``servekit time``,
``servekit assets push|list|fetch`` and ``servekit microservice`` (Seldon's
``seldon-core-microservice``)."""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

from servekit.errors import ConfigError
from servekit.library.sources import FORMS


def _library_from(target: str, required: list[str] | None = None, option: str = "--models") -> Any:
    """A ModelLibrary over what ``--models`` names (see :mod:`servekit.library.sources`)."""
    from servekit.library.library import ModelLibrary
    from servekit.library.sources import import_models

    return ModelLibrary(import_models(target, option=option), required_models=required)


# -- describe -------------------------------------------------------------------
def configure_describe(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", help="a model repository folder (with model-settings.json), or the models as "
                        "--models takes them: " + FORMS)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run_describe(args: argparse.Namespace) -> int:
    from servekit.library.describe import render

    path = Path(args.target)
    rows: dict[str, Any] = {}
    if path.is_dir() and not (path / "__init__.py").exists() and _is_repository(path):
        rows = _describe_repository(path)
        if not rows:
            raise ConfigError(
                f"no models in {args.target!r}: no model-settings.json or model file below it and no "
                f"Python package in it; describe takes a model repository folder or {FORMS}"
            )
    else:
        library = _library_from(args.target, option="describe")
        described = library.describe()
        assert isinstance(described, dict)
        rows = described
    print(json.dumps(rows, indent=2, default=str) if args.json else render(rows))
    return 0


def _is_repository(folder: Path) -> bool:
    """A model repository: it has a model-settings.json somewhere, or no package to import."""
    for pattern in ("model-settings.json", "*/model-settings.json", "*/*/model-settings.json"):
        if next(folder.glob(pattern), None) is not None:
            return True
    return not any((child / "__init__.py").exists() for child in folder.iterdir() if child.is_dir())


def _describe_repository(root: Path) -> dict[str, Any]:
    from servekit.repository.discovery import discover
    from servekit.runtimes import create_runtime

    rows: dict[str, Any] = {}
    for settings in discover(root):
        runtime: Any = create_runtime(settings)
        library = None
        if hasattr(runtime, "model_class"):
            runtime.load()
            library = runtime.library
        if library is not None:
            described = library.describe()
            assert isinstance(described, dict)
            rows.update(described)
            continue
        started = time.perf_counter()
        runtime.load()
        meta = runtime.metadata()
        inputs = ", ".join(f"{s.name}:{s.datatype}{s.shape}" for s in meta.inputs)
        outputs = ", ".join(f"{s.name}:{s.datatype}{s.shape}" for s in meta.outputs)
        rows[settings.name] = {
            "name": settings.name, "class": type(runtime).__name__, "signature": f"{inputs} -> {outputs}",
            "dependencies": {}, "asset": settings.parameters.uri, "asset_path": settings.source_dir,
            "load_seconds": time.perf_counter() - started, "load_memory_bytes": 0, "cache": None, "async": False,
        }
    return rows


# -- time -------------------------------------------------------------------------
def configure_time(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="configuration key (with --models) or dotted class path")
    parser.add_argument("example", help="one item as JSON (a bare word is taken as a string)")
    parser.add_argument("-n", "--number", type=int, default=100, help="calls to time")
    parser.add_argument("--models", default=os.environ.get("SERVEKIT_DEFAULT_PACKAGE"),
                        help="where the models are (default: SERVEKIT_DEFAULT_PACKAGE): " + FORMS)


def run_time(args: argparse.Namespace) -> int:
    try:
        item = json.loads(args.example)
    except ValueError:
        item = args.example
    key = args.model
    source = args.models
    if source is None:
        module, _, _ = key.rpartition(".")
        if not module:
            raise ConfigError("give --models PACKAGE or a dotted class path as MODEL")
        source = key
        key = None
    library = _library_from(source, None if key is None else [key])
    if key is None:
        key = library.build_order[-1]
    model = library.get(key)
    timings = _measure(model, item, max(1, args.number))
    timings.sort()

    def pct(q: float) -> float:
        return timings[min(len(timings) - 1, int(q * len(timings)))]

    print(f"{key}: {len(timings)} calls")
    print(f"  mean {statistics.fmean(timings):.3f} ms  p50 {pct(0.5):.3f} ms  p90 {pct(0.9):.3f} ms  "
          f"p99 {pct(0.99):.3f} ms  min {timings[0]:.3f} ms  max {timings[-1]:.3f} ms")
    return 0


def _measure(model: Any, item: Any, n: int) -> list[float]:
    if inspect.iscoroutinefunction(model.predict):
        async def loop() -> list[float]:
            out = []
            await model.predict(item)  # warm-up
            for _ in range(n):
                started = time.perf_counter()
                await model.predict(item)
                out.append((time.perf_counter() - started) * 1000)
            return out

        return asyncio.run(loop())
    model.predict(item)
    out = []
    for _ in range(n):
        started = time.perf_counter()
        model.predict(item)
        out.append((time.perf_counter() - started) * 1000)
    return out


# -- assets -----------------------------------------------------------------------
def configure_assets(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, help="push, list or fetch")
    push = sub.add_parser("push", help="upload a file or folder as a new asset version")
    push.add_argument("path", help="file or folder to upload")
    push.add_argument("spec", help="category/name:1.2 (without a version: the next minor)")
    push.add_argument("--bump-major", action="store_true", help="next major version instead of minor")
    listing = sub.add_parser("list", help="assets and versions in the store")
    listing.add_argument("name", nargs="?", help="only this asset (category/name)")
    fetch = sub.add_parser("fetch", help="download an asset into the local cache, print its path")
    fetch.add_argument("spec", help="category/name[:version] of the asset")
    for command in (push, listing, fetch):
        command.add_argument("--storage", help="store URL (default: SERVEKIT_STORAGE_URL)")
        command.add_argument("--assets-dir", help="local cache (default: SERVEKIT_ASSETS_DIR)")


def run_assets(args: argparse.Namespace) -> int:
    from servekit.library.assets import AssetsManager, AssetSpec, next_version
    from servekit.library.settings import LibrarySettings

    settings = LibrarySettings.from_env()
    update = {k: v for k, v in {"storage_url": args.storage, "assets_dir": args.assets_dir}.items() if v}
    manager = AssetsManager(settings.model_copy(update=update))
    if args.action == "fetch":
        print(manager.fetch(args.spec))
        return 0
    store = manager.store
    if store is None:
        raise ConfigError("no asset store: pass --storage URL or set SERVEKIT_STORAGE_URL")
    if args.action == "list":
        listing = store.list()
        for name, versions in listing.items():
            if args.name is None or name == args.name:
                print(f"{name}: {', '.join(versions)}")
        return 0
    spec = AssetSpec.parse(args.spec)
    version = spec.version
    if version is None:
        version = next_version(store.versions(spec.name), args.bump_major)
    elif not spec.exact:
        raise ConfigError("push needs a full major.minor version (or none for the next one)")
    print(store.push(Path(args.path), spec.name, version))
    return 0


# -- microservice -------------------------------------------------------------------
LIBRARY_COMMANDS = {
    "describe": (configure_describe, run_describe),
    "time": (configure_time, run_time),
    "assets": (configure_assets, run_assets),
}
