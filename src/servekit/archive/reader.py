"""Opening model archives: ``.mar`` zips, ``.tar.gz`` and unpacked folders.

Archives are unpacked once into a cache folder named after their SHA-256, so
every worker process and every reload shares one copy. Unpacking refuses
members that would land outside the target (absolute paths, ``..``, links)
and archives that expand beyond a size limit.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from servekit.archive.manifest import MANIFEST_PATH, Manifest, content_hash
from servekit.errors import ModelLoadError

log = logging.getLogger("servekit.archive")

MAX_UNPACKED_BYTES = 20 * 1024**3
ARCHIVE_SUFFIXES = (".mar", ".tar.gz", ".tgz", ".zip")


def is_archive(path: Path) -> bool:
    if path.is_dir():
        return (path / MANIFEST_PATH).is_file()
    return path.name.endswith(ARCHIVE_SUFFIXES)


def cache_root() -> Path:
    configured = os.environ.get("SERVEKIT_ARCHIVE_CACHE")
    if configured:
        return Path(configured)
    return Path(tempfile.gettempdir()) / f"servekit-archives-{os.getuid()}"


def open_archive(path: Path) -> tuple[Path, Manifest]:
    """The folder holding the archive's files, and its manifest."""
    if path.is_dir():
        return path, Manifest.read(path)
    if not path.is_file():
        raise ModelLoadError(f"model archive {path} does not exist")
    digest = _sha256(path)
    target = cache_root() / f"{path.name}-{digest[:16]}"
    if not (target / MANIFEST_PATH).is_file():
        _unpack_verified(path, target)
    return target, Manifest.read(target)


def _unpack_verified(path: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    staging = Path(tempfile.mkdtemp(prefix=".unpack-", dir=target.parent))
    try:
        safe_unpack(path, staging)
        root = _archive_root(staging, path)
        manifest = Manifest.read(root)
        check_content_hash(root, manifest, path.name)
        try:
            os.rename(root, target)
        except OSError:
            if not (target / MANIFEST_PATH).is_file():  # not another worker winning the race
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def check_content_hash(folder: Path, manifest: Manifest, label: str) -> None:
    """Refuse an archive whose files differ from the hash servekit recorded."""
    expected = manifest.servekit.get("contentHash")
    if not isinstance(expected, str) or not expected.startswith("sha256:"):
        return
    actual = "sha256:" + content_hash(folder)
    if actual != expected:
        raise ModelLoadError(
            f"{label}: its files do not match the content hash in its manifest "
            f"({expected[:20]}… expected, {actual[:20]}… found); the archive was changed "
            "after `servekit archive` wrote it - archive it again"
        )


def safe_unpack(path: Path, target: Path, limit: int = MAX_UNPACKED_BYTES) -> None:
    """Unpack a zip or tar archive into ``target``, refusing escaping members."""
    if zipfile.is_zipfile(path):
        _unpack_zip(path, target, limit)
    elif tarfile.is_tarfile(path):
        _unpack_tar(path, target, limit)
    else:
        raise ModelLoadError(f"{path.name} is neither a zip (.mar) nor a tar.gz archive")


def member_target(target: Path, name: str) -> Path:
    """Where ``name`` unpacks to, or ModelLoadError if it would leave ``target``."""
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts or (pure.parts and ":" in pure.parts[0]):
        raise ModelLoadError(f"archive member {name!r} would be written outside the model folder")
    out = (target / pure).resolve()
    if out != target.resolve() and target.resolve() not in out.parents:
        raise ModelLoadError(f"archive member {name!r} would be written outside the model folder")
    return out


def _unpack_zip(path: Path, target: Path, limit: int) -> None:
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            total = sum(i.file_size for i in infos)
            if total > limit:
                raise ModelLoadError(f"{path.name} unpacks to {total} bytes, over the {limit}-byte limit")
            for info in infos:
                mode = info.external_attr >> 16
                if stat.S_ISLNK(mode):
                    raise ModelLoadError(f"archive member {info.filename!r} is a link; links are refused")
                out = member_target(target, info.filename)
                if info.is_dir():
                    out.mkdir(parents=True, exist_ok=True)
                    continue
                out.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as src, out.open("wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelLoadError(f"cannot unpack {path.name}: {exc}") from None


def _unpack_tar(path: Path, target: Path, limit: int) -> None:
    try:
        with tarfile.open(path) as archive:
            members = archive.getmembers()
            total = sum(m.size for m in members if m.isfile())
            if total > limit:
                raise ModelLoadError(f"{path.name} unpacks to {total} bytes, over the {limit}-byte limit")
            for member in members:
                out = member_target(target, member.name)
                if member.isdir():
                    out.mkdir(parents=True, exist_ok=True)
                elif member.isfile():
                    out.parent.mkdir(parents=True, exist_ok=True)
                    src = archive.extractfile(member)
                    assert src is not None
                    with src, out.open("wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
                else:
                    raise ModelLoadError(
                        f"archive member {member.name!r} is a link or device; only files are allowed"
                    )
    except (tarfile.TarError, OSError) as exc:
        raise ModelLoadError(f"cannot unpack {path.name}: {exc}") from None


def _archive_root(folder: Path, path: Path) -> Path:
    if (folder / MANIFEST_PATH).is_file():
        return folder
    inner = [p for p in folder.iterdir() if p.is_dir() and (p / MANIFEST_PATH).is_file()]
    if len(inner) == 1:
        return inner[0]
    raise ModelLoadError(f"{path.name} has no {MANIFEST_PATH}; is it a TorchServe model archive?")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
