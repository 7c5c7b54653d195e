"""``servekit archive``: TorchServe's ``torch-model-archiver`` command, writing
the same layout (files at the top, ``MAR-INF/MANIFEST.json``)."""

from __future__ import annotations

import argparse
import datetime
import io
import json
import platform
import shutil
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from servekit import __version__
from servekit.archive.manifest import MANIFEST_PATH, Manifest, hash_files
from servekit.errors import ConfigError
from servekit.names import check_name
from servekit.observability import progress

FORMATS = ("default", "zip-store", "tgz", "no-archive")


@dataclass
class ArchiveSpec:
    model_name: str
    handler: str
    version: str | None = None
    serialized_file: Path | None = None
    model_file: Path | None = None
    extra_files: list[Path] = field(default_factory=list)
    requirements_file: Path | None = None
    config_file: Path | None = None
    export_path: Path = Path(".")
    archive_format: str = "default"
    force: bool = False
    runtime: str = "python"


def archive_files(spec: ArchiveSpec) -> list[tuple[str, Path]]:
    """(name in the archive, source file) for everything the archive holds."""
    files: list[tuple[str, Path]] = []
    singles = [spec.serialized_file, spec.model_file, spec.requirements_file, spec.config_file]
    handler_file = _handler_file(spec.handler)
    if handler_file is not None:
        singles.append(handler_file)
    for path in singles:
        if path is not None:
            _must_exist(path)
            files.append((path.name, path))
    for extra in spec.extra_files:
        _must_exist(extra)
        if extra.is_dir():
            # like the archiver: a folder's content lands at the top of the archive
            for inner in sorted(p for p in extra.rglob("*") if p.is_file()):
                files.append((inner.relative_to(extra).as_posix(), inner))
        else:
            files.append((extra.name, extra))
    seen: dict[str, Path] = {}
    for name, path in files:
        if name in seen and seen[name].resolve() != path.resolve():
            raise ConfigError(f"two different files would be stored as {name!r}: {seen[name]} and {path}")
        seen[name] = path
    return sorted(seen.items())


def manifest_for(spec: ArchiveSpec, files: list[tuple[str, Path]]) -> Manifest:
    handler_file = _handler_file(spec.handler)
    handler = spec.handler
    if handler_file is not None:
        _, _, entry = spec.handler.partition(".py:")
        handler = handler_file.name + (f":{entry}" if entry else "")
    return Manifest(
        model_name=spec.model_name,
        handler=handler,
        version=spec.version,
        serialized_file=spec.serialized_file.name if spec.serialized_file else None,
        model_file=spec.model_file.name if spec.model_file else None,
        requirements_file=spec.requirements_file.name if spec.requirements_file else None,
        config_file=spec.config_file.name if spec.config_file else None,
        runtime=spec.runtime,
        created_on=datetime.datetime.now().strftime("%d/%m/%Y %H:%M:%S"),
        archiver_version=f"servekit-{__version__}",
        servekit={
            "version": __version__,
            "frameworks": framework_versions(),
            "contentHash": "sha256:" + hash_files(files),
        },
    )


def write_archive(spec: ArchiveSpec) -> Path:
    """Write the archive; returns its path."""
    if spec.archive_format not in FORMATS:
        raise ConfigError(f"unknown archive format {spec.archive_format!r}; use one of {', '.join(FORMATS)}")
    check_name(spec.model_name, "--model-name")
    files = archive_files(spec)
    manifest = manifest_for(spec, files)
    manifest_bytes = (_json(manifest) + "\n").encode()
    spec.export_path.mkdir(parents=True, exist_ok=True)
    suffix = {"tgz": ".tar.gz", "no-archive": ""}.get(spec.archive_format, ".mar")
    target = spec.export_path / f"{spec.model_name}{suffix}"
    if target.exists():
        if not spec.force:
            raise ConfigError(f"{target} already exists; use --force to overwrite it")
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink()
    size = sum(path.stat().st_size for _, path in files)
    with progress.bar(f"Writing {target.name}", size, unit="bytes") as advance:
        if spec.archive_format == "no-archive":
            for name, path in files:
                (target / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target / name)
                advance(path.stat().st_size)
            (target / MANIFEST_PATH).parent.mkdir(parents=True, exist_ok=True)
            (target / MANIFEST_PATH).write_bytes(manifest_bytes)
        elif spec.archive_format == "tgz":
            # TorchServe's tgz archives hold one folder named after the model
            with tarfile.open(target, "w:gz") as tar:
                for name, path in files:
                    tar.add(path, arcname=f"{spec.model_name}/{name}", recursive=False)
                    advance(path.stat().st_size)
                info = tarfile.TarInfo(f"{spec.model_name}/{MANIFEST_PATH}")
                info.size = len(manifest_bytes)
                tar.addfile(info, io.BytesIO(manifest_bytes))
        else:
            method = zipfile.ZIP_STORED if spec.archive_format == "zip-store" else zipfile.ZIP_DEFLATED
            with zipfile.ZipFile(target, "w", compression=method) as archive:
                for name, path in files:
                    archive.write(path, name)
                    advance(path.stat().st_size)
                archive.writestr(MANIFEST_PATH, manifest_bytes)
    return target


def framework_versions() -> dict[str, str]:
    """Versions of the frameworks a handler may rely on, as installed here."""
    import importlib.metadata

    out = {"python": platform.python_version()}
    for dist in ("torch", "numpy", "pillow"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def _handler_file(handler: str) -> Path | None:
    path_part = handler.split(".py:")[0] + ".py" if ".py:" in handler else handler
    return Path(path_part) if path_part.endswith(".py") else None


def _must_exist(path: Path) -> None:
    if not path.exists():
        raise ConfigError(f"{path} does not exist")


def _json(manifest: Manifest) -> str:
    return json.dumps(manifest.to_dict(), indent=2)


# -- the command ----------------------------------------------------------------
def configure(parser: argparse.ArgumentParser) -> None:
    """The flags of ``torch-model-archiver``, spelled the same."""
    parser.add_argument("--model-name", required=True, help="name of the model (and of the .mar)")
    parser.add_argument("--serialized-file", default=None, help="weights: .pth/.pt/.pt2 …")
    parser.add_argument("--model-file", default=None, help="file with the nn.Module class")
    parser.add_argument("--handler", required=True, help="handler .py file or built-in name (image_classifier …)")
    parser.add_argument("--extra-files", default=None, help="comma-separated files or folders")
    parser.add_argument("--runtime", default="python", choices=["python", "python3"], help="runtime of the handler")
    parser.add_argument("--export-path", default=".", help="folder to write into (default: .)")
    parser.add_argument("--archive-format", default="default", choices=FORMATS,
                        help="default: a .mar (zip); tgz: .tar.gz; no-archive: a folder")
    parser.add_argument("-f", "--force", action="store_true", help="overwrite an existing archive")
    parser.add_argument("-v", "--version", default=None, help="model version (e.g. 1.0)")
    parser.add_argument("-r", "--requirements-file", default=None, help="requirements.txt stored in the archive")
    parser.add_argument("-c", "--config-file", default=None, help="model YAML config")


def run(args: argparse.Namespace) -> int:
    def opt(value: str | None) -> Path | None:
        return Path(value) if value else None

    spec = ArchiveSpec(
        model_name=args.model_name,
        handler=args.handler,
        version=args.version,
        serialized_file=opt(args.serialized_file),
        model_file=opt(args.model_file),
        extra_files=[Path(p) for p in (args.extra_files or "").split(",") if p.strip()],
        requirements_file=opt(args.requirements_file),
        config_file=opt(args.config_file),
        export_path=Path(args.export_path),
        archive_format=args.archive_format,
        force=args.force,
        runtime=args.runtime,
    )
    target = write_archive(spec)
    print(f"servekit: wrote {target}")
    return 0
