"""``MAR-INF/MANIFEST.json``: TorchServe's fields, plus servekit's additions
under the ``servekit`` key (framework versions, a content hash) that TorchServe
ignores."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from servekit.errors import ModelLoadError

MANIFEST_PATH = "MAR-INF/MANIFEST.json"


@dataclass
class Manifest:
    model_name: str
    handler: str
    version: str | None = None
    serialized_file: str | None = None
    model_file: str | None = None
    requirements_file: str | None = None
    config_file: str | None = None
    runtime: str = "python"
    created_on: str = ""
    archiver_version: str = ""
    servekit: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        model: dict[str, Any] = {"modelName": self.model_name, "handler": self.handler}
        optional = {
            "serializedFile": self.serialized_file,
            "modelFile": self.model_file,
            "modelVersion": self.version,
            "requirementsFile": self.requirements_file,
            "configFile": self.config_file,
        }
        model.update({k: v for k, v in optional.items() if v})
        out: dict[str, Any] = {
            "createdOn": self.created_on,
            "runtime": self.runtime,
            "model": model,
            "archiverVersion": self.archiver_version,
        }
        if self.servekit:
            out["servekit"] = self.servekit
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        model = data.get("model")
        if not isinstance(model, dict) or not model.get("modelName"):
            raise ModelLoadError(f"{MANIFEST_PATH} has no model.modelName")
        version = model.get("modelVersion")
        return cls(
            model_name=str(model["modelName"]),
            handler=str(model.get("handler") or "base_handler"),
            version=None if version in (None, "") else str(version),
            serialized_file=model.get("serializedFile"),
            model_file=model.get("modelFile"),
            requirements_file=model.get("requirementsFile"),
            config_file=model.get("configFile"),
            runtime=str(data.get("runtime") or "python"),
            created_on=str(data.get("createdOn") or ""),
            archiver_version=str(data.get("archiverVersion") or ""),
            servekit=dict(data.get("servekit") or {}),
            raw=data,
        )

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        path = folder / MANIFEST_PATH
        try:
            data = json.loads(path.read_text())
        except OSError as exc:
            # the folder's own name only: its path is the server's business, not the client's
            raise ModelLoadError(f"cannot read {MANIFEST_PATH} in {folder.name}: {exc.strerror}") from None
        except ValueError as exc:
            raise ModelLoadError(f"{MANIFEST_PATH} in {folder.name} is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ModelLoadError(f"{MANIFEST_PATH} in {folder.name} is not a JSON object")
        return cls.from_dict(data)


def content_hash(folder: Path) -> str:
    """SHA-256 over every file but the manifest, by relative path, in sorted order."""
    files = (
        (p.relative_to(folder).as_posix(), p) for p in folder.rglob("*") if p.is_file()
    )
    return hash_files((rel, p) for rel, p in files if rel != MANIFEST_PATH)


def hash_files(files: Iterable[tuple[str, Path]]) -> str:
    digest = hashlib.sha256()
    for relative, path in sorted(files):
        digest.update(relative.encode() + b"\0")
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()
