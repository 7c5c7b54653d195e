"""Find models below a folder: every ``model-settings.json`` (MLServer's format),
folders that hold only a model file (no settings file needed), and base paths
whose integer-named subfolders are versions (TF Serving's layout, with or
without a ``model-settings.json`` holding ``version_policy``/``version_labels``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from servekit.config import ModelParameters, ModelSettings, load_model_settings
from servekit.errors import ConfigError
from servekit.repository.base_path import VersionWatcher, is_base_path, versioned_settings
from servekit.runtimes import model_files

log = logging.getLogger("servekit.repository")

SETTINGS_FILE = "model-settings.json"
SKIP_DIRS = {".git", ".venv", "__pycache__", "node_modules", ".mypy_cache", ".pytest_cache"}


def discover(
    root: str | Path, errors: list[str] | None = None, watcher: VersionWatcher | None = None
) -> list[ModelSettings]:
    """All model versions below ``root``. Broken settings files are reported in
    ``errors`` (and the log) instead of stopping discovery. ``watcher`` carries
    what earlier scans saw of version folders (see :class:`VersionWatcher`)."""
    root = Path(root).resolve()
    watcher = watcher or VersionWatcher()
    found: list[ModelSettings] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
        path = Path(folder)
        if SETTINGS_FILE in files:
            try:
                settings = load_model_settings(path / SETTINGS_FILE)
                if _versioned(settings, path):
                    dirs[:] = []
                    found.extend(
                        versioned_settings(
                            settings.name, path, settings.version_policy, watcher, settings
                        )
                    )
                else:
                    found.append(settings)
            except ConfigError as exc:
                log.error("Skipping %s", exc.message)
                if errors is not None:
                    errors.append(exc.message)
            continue
        has_files = _has_model_files(path)
        if path == root and "settings.json" in files and not has_files and not is_base_path(path):
            continue
        if not has_files and is_base_path(path) and not _versions_have_settings(path):
            dirs[:] = []
            found.extend(versioned_settings(path.name, path, None, watcher))
            continue
        inferred = _settings_from_model_file(path)
        if inferred is not None:
            found.append(inferred)
    return found


def _versions_have_settings(folder: Path) -> bool:
    """MLServer's layout: each version folder carries its own model-settings.json,
    so every one of them is served (no TF Serving version policy applies)."""
    return any((child / SETTINGS_FILE).is_file() for child in folder.iterdir() if child.name.isdigit())


def _versioned(settings: ModelSettings, folder: Path) -> bool:
    """A settings file without a version or model file of its own, above version folders."""
    return (
        settings.parameters.version is None
        and settings.parameters.uri is None
        and not _has_model_files(folder)
        and is_base_path(folder)
    )


def _has_model_files(path: Path) -> bool:
    return bool(model_files(path))


def _settings_from_model_file(path: Path) -> ModelSettings | None:
    """A folder with exactly one model file serves as a model named after the folder."""
    files = model_files(path)
    if len(files) != 1:
        return None
    return ModelSettings(
        name=path.name,
        parameters=ModelParameters(uri=files[0].name),
        source_dir=str(path),
    )
