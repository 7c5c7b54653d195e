"""Find models below a folder: every ``model-settings.json`` (MLServer's format),
folders that hold only a model file (no settings file needed), and base paths
whose integer-named subfolders are versions (TF Serving's layout, with or
without a ``model-settings.json`` holding ``version_policy``/``version_labels``).

A model must live inside the repository: one whose ``parameters.uri``
resolves outside the root (``../..``, an absolute path elsewhere, a link
leading out) is not loaded; it is listed as unavailable with the reason.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path

from servekit.config import (
    ModelParameters,
    ModelSettings,
    load_model_settings,
    read_json_object,
    unknown_model_keys,
)
from servekit.errors import ConfigError, ModelLoadError
from servekit.repository.base_path import VersionWatcher, is_base_path, versioned_settings
from servekit.runtimes import model_files
from servekit.runtimes.base import Runtime

log = logging.getLogger("servekit.repository")

SETTINGS_FILE = "model-settings.json"
SKIP_DIRS = {".git", ".venv", "__pycache__", "node_modules", ".mypy_cache", ".pytest_cache"}


def discover(
    root: str | Path, errors: list[str] | None = None, watcher: VersionWatcher | None = None,
    root_name: str | None = None,
) -> list[ModelSettings]:
    """All model versions below ``root``. Broken settings files are reported in
    ``errors`` (and the log) instead of stopping discovery. ``watcher`` carries
    what earlier scans saw of version folders (see :class:`VersionWatcher`).
    ``root_name`` names a model whose files lie in ``root`` itself (KServe's
    /mnt/models holds one model, the InferenceService's) unless its settings name it."""
    root = Path(root).resolve()
    watcher = watcher or VersionWatcher()
    found: list[ModelSettings] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
        path = Path(folder)
        default_name = root_name if path == root and root_name else None
        if SETTINGS_FILE in files:
            try:
                settings = load_model_settings(path / SETTINGS_FILE, default_name)
                if _versioned(settings, path):
                    dirs[:] = []
                    found.extend(
                        versioned_settings(
                            settings.name, path, settings.version_policy, watcher, settings
                        )
                    )
                else:
                    found.append(settings)
                    target = settings.resolved_uri()
                    if target is not None and target.parent == path and (target / "MLmodel").is_file():
                        dirs[:] = [d for d in dirs if d != target.name]  # its MLflow model, not another one
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
            found.extend(versioned_settings(default_name or path.name, path, None, watcher))
            continue
        inferred = _settings_from_model_file(path)
        if inferred is not None and default_name:
            inferred.name = default_name
        if inferred is not None:
            found.append(inferred)
            if "MLmodel" in files:
                dirs[:] = []  # an MLflow model's folders (data/, code/) are its own
    return [_confined(settings, root) for settings in found]


# -- mistakes refused at startup ---------------------------------------------------------
def startup_problems(root: str | Path) -> list[str]:
    """What is wrong in the repository's settings files, one line each naming
    the file and the key: a file that is no JSON object or does not validate,
    keys that are no setting, a ``parameters.uri`` that does not exist. At
    startup these stop the server (unless ``--lenient``); while it runs,
    :func:`discover` skips such files with a log line instead."""
    given, root = Path(root), Path(root).resolve()
    problems: list[str] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
        if SETTINGS_FILE not in files:
            continue
        path = Path(folder) / SETTINGS_FILE
        shown = str(given / (_relative(path, root) or path))
        try:
            data = read_json_object(path)
            settings = load_model_settings(path)
        except ConfigError as exc:
            problems.append(exc.message.replace(str(path), shown))
            continue
        unknown = unknown_model_keys(data)
        if unknown:
            problems.append(f"{shown}: {', '.join(unknown)} {'is no model setting' if len(unknown) == 1 else 'are no model settings'}")
        uri = settings.parameters.uri
        target = settings.resolved_uri()
        if uri and target is not None and not target.exists():
            problems.append(f"{shown}: parameters.uri {uri!r} does not exist (no {given / (_relative(target, root) or target)})")
    return problems


# -- models must stay inside the repository ----------------------------------------
REFUSED = f"{__name__}.RefusedModel"  # the implementation of a model that is not loaded
_REPORTED: set[tuple[str, str | None, str | None]] = set()


class RefusedModel(Runtime):
    """Stands in for a model discovery refused: loading it fails with the
    reason, so the repository index lists the model as unavailable and why."""

    def load(self) -> None:
        raise ModelLoadError(str(self.settings.parameters.extra.get("refused") or "refused"))


def outside_reason(settings: ModelSettings, root: Path) -> str | None:
    """Why ``settings`` reach outside the repository ``root``, or None."""
    path = settings.resolved_uri()
    if path is None:
        return None
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError):  # a loop of links
        resolved = None
    if resolved is not None and (resolved == root or root in resolved.parents):
        return None
    uri = settings.parameters.uri
    shown = f" {uri!r}" if uri and not Path(uri).is_absolute() and not uri.startswith("file:") else ""
    where = settings.source_dir and _relative(Path(settings.source_dir), root)
    return (
        f"parameters.uri{shown} of model {settings.name!r}"
        + (f" (in {where})" if where else "")
        + " resolves outside the model repository; a model's files must be inside the "
        "repository folder - move or copy them there"
    )


def _confined(settings: ModelSettings, root: Path) -> ModelSettings:
    reason = outside_reason(settings, root)
    if reason is None:
        return settings
    key = (settings.name, settings.source_dir, settings.parameters.uri)
    if key not in _REPORTED:  # once, not at every scan of the repository
        _REPORTED.add(key)
        log.error("Not loading model %r: %s (uri %s)", settings.name, reason, settings.parameters.uri)
    parameters = settings.parameters.model_copy(
        update={"uri": None, "extra": {"refused": reason}}
    )
    return settings.model_copy(update={"implementation": REFUSED, "parameters": parameters})


def _relative(path: Path, root: Path) -> str | None:
    try:
        relative = path.resolve().relative_to(root)
    except ValueError:
        return None
    return relative.as_posix() if relative.parts else "."


# -- reasons shown to clients ---------------------------------------------------------
MAX_REASON = 500
_TRACEBACK = "Traceback (most recent call last)"
_PATH_CHARS = r"[^\s'\"`,;()<>\[\]{}]"
_ABSOLUTE_PATH = re.compile(rf"(?<![\w.~:/…-])/{_PATH_CHARS}+")
_CLIMBING_PATH = re.compile(rf"(?<![\w.~/-])(?:\.\./)+{_PATH_CHARS}*")  # ../../x: out of wherever it was
_LOAD_KEY = re.compile(r"(invalid load key),\s*'[^']{1,8}'")
_UNPRINTABLE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def public_reason(message: str, roots: Iterable[str | Path | None] = ()) -> str:
    """A load failure's message as clients may see it: one line, no traceback,
    no absolute path outside ``roots`` (a path inside one is shown relative to
    it, any other by its last part only), no bytes of a file, bounded length."""
    text = str(message)
    if _TRACEBACK in text:
        head, _, tail = text.partition(_TRACEBACK)
        lines = [line.strip() for line in tail.splitlines() if line.strip()]
        last = lines[-1] if lines else ""
        text = f"{head.strip()} {last}".strip()
    text = " ".join(text.split())
    bases = [Path(r).resolve() for r in roots if r]
    text = _CLIMBING_PATH.sub(lambda m: _shown_path("/" + m.group(0).replace("../", ""), []), text)
    text = _ABSOLUTE_PATH.sub(lambda m: _shown_path(m.group(0), bases), text)
    text = _LOAD_KEY.sub(r"\1", text)
    text = _UNPRINTABLE.sub("?", text)
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 1] + "…"


def _shown_path(raw: str, roots: list[Path]) -> str:
    trailing = ""
    while raw and raw[-1] in ".:":  # the end of a sentence, not of the path
        raw, trailing = raw[:-1], raw[-1] + trailing
    path = Path(raw)
    for root in roots:
        try:
            relative = path.relative_to(root)
        except ValueError:
            continue
        return (relative.as_posix() if relative.parts else ".") + trailing
    return (f"…/{path.name}" if path.name else "…") + trailing



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
