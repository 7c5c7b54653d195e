"""Base paths: a folder whose integer-named subfolders are the versions of one
model (TF Serving's layout, ``saved_models/1``, ``saved_models/2`` …), and the
watcher that notices new version folders without loading one half-written.
"""

from __future__ import annotations

import logging
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

from servekit.config import ModelParameters, ModelSettings, VersionPolicy, load_model_settings
from servekit.repository.version_policy import select_versions
from servekit.runtimes import model_files

log = logging.getLogger("servekit.repository")

SETTINGS_FILE = "model-settings.json"
# names that copy tools and exporters use for files still being written
PARTIAL_SUFFIXES = (".tmp", ".temp", ".part", ".partial", ".incomplete", ".crdownload")
_SHARD = re.compile(r"variables\.data-(\d+)-of-(\d+)$")

Fingerprint = tuple[tuple[str, int, int], ...]


@dataclass(frozen=True)
class VersionFolder:
    version: int
    path: Path


def version_folders(base: Path) -> list[VersionFolder]:
    """Integer-named subfolders of ``base``, lowest version first."""
    try:
        children = list(base.iterdir())
    except OSError:
        return []
    found = [VersionFolder(int(c.name), c) for c in children if c.name.isdigit() and c.is_dir()]
    return sorted(found, key=lambda f: f.version)


def is_base_path(folder: Path) -> bool:
    """Whether ``folder`` holds at least one version folder with a model in it."""
    return any(incomplete_reason(f.path) is None for f in version_folders(folder))


def incomplete_reason(folder: Path) -> str | None:
    """Why a version folder cannot be loaded (yet); None when it looks complete."""
    try:
        entries = list(folder.iterdir())
    except OSError as exc:
        return f"cannot list it: {exc}"
    if not entries:
        return "it is empty"
    for path in folder.rglob("*"):
        if path.name.endswith(PARTIAL_SUFFIXES):
            return f"{path.relative_to(folder)} is still being written"
    names = {e.name for e in entries}
    if "saved_model.pb" in names or "saved_model.pbtxt" in names:
        return _saved_model_reason(folder)
    for keras_file in folder.glob("*.keras"):
        if not zipfile.is_zipfile(keras_file):
            return f"{keras_file.name} is not a complete archive yet"
    if SETTINGS_FILE in names or model_files(folder):
        return None
    return "it holds no model file servekit recognises"


def _saved_model_reason(folder: Path) -> str | None:
    graph = folder / "saved_model.pb"
    if graph.exists() and graph.stat().st_size == 0:
        return "saved_model.pb is empty"
    variables = folder / "variables"
    if not variables.is_dir():
        return None
    if not (variables / "variables.index").is_file():
        return "variables/variables.index is missing"
    shards = [m for p in variables.iterdir() if (m := _SHARD.match(p.name))]
    if not shards:
        return "variables/variables.data-* is missing"
    expected = int(shards[0].group(2))
    if len(shards) < expected:
        return f"only {len(shards)} of {expected} variable shards are there"
    return None


def fingerprint(folder: Path) -> Fingerprint:
    """Every file below ``folder`` with its size and modification time."""
    items: list[tuple[str, int, int]] = []
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            try:
                stat = os.stat(path)
            except OSError:
                continue
            items.append((os.path.relpath(path, folder), stat.st_size, stat.st_mtime_ns))
    return tuple(sorted(items))


class VersionWatcher:
    """Remembers what it saw in base paths between polls.

    At the first scan of a base path (server start) every complete-looking
    version folder is taken. A folder that appears later is taken only once it
    looks complete *and* its files did not change between two consecutive
    scans, so a copy in progress is never loaded half-way.
    """

    def __init__(self) -> None:
        self._scanned: set[Path] = set()
        self._accepted: set[Path] = set()
        self._pending: dict[Path, Fingerprint] = {}
        self._reported: dict[Path, str] = {}

    def scan(self, base: Path) -> list[VersionFolder]:
        first = base not in self._scanned
        self._scanned.add(base)
        folders = version_folders(base)
        present = {f.path for f in folders}
        for gone in [p for p in self._accepted if p.parent == base and p not in present]:
            self._accepted.discard(gone)
        ready = []
        for folder in folders:
            if folder.path in self._accepted:
                ready.append(folder)
                continue
            reason = incomplete_reason(folder.path)
            if reason is None and not first:
                current = fingerprint(folder.path)
                previous = self._pending.get(folder.path)
                self._pending[folder.path] = current
                if previous != current:
                    log.debug("Version folder %s is new or changing; waiting a poll", folder.path)
                    continue
            if reason is not None:
                if self._reported.get(folder.path) != reason:
                    self._reported[folder.path] = reason
                    log.info("Not loading %s yet: %s", folder.path, reason)
                self._pending.pop(folder.path, None)
                continue
            self._accepted.add(folder.path)
            self._pending.pop(folder.path, None)
            self._reported.pop(folder.path, None)
            ready.append(folder)
        return ready


def versioned_settings(
    name: str,
    base: Path,
    policy: VersionPolicy | None,
    watcher: VersionWatcher,
    template: ModelSettings | None = None,
) -> list[ModelSettings]:
    """Settings of the versions of ``base`` that ``policy`` serves.

    A version folder's own ``model-settings.json`` wins; otherwise ``template``
    (the base path's settings) is copied with the version's folder as URI.
    """
    folders = {f.version: f.path for f in watcher.scan(base)}
    out = []
    for version in select_versions(policy, folders):
        path = folders[version]
        own = path / SETTINGS_FILE
        if own.is_file():
            settings = load_model_settings(own)
            settings.name = name
        elif template is not None:
            settings = template.model_copy(deep=True)
            settings.parameters.uri = str(path)
        else:
            settings = ModelSettings(
                name=name, parameters=ModelParameters(uri=str(path)), source_dir=str(path)
            )
        settings.parameters.version = str(version)
        out.append(settings)
    return out
