"""Opening model archives: ``.mar`` zips, ``.tar.gz`` and unpacked folders.

Archives are unpacked once into a private cache folder (``0700``, owned by
this user; a folder found in its place that is not is never used),
under the SHA-256 of the archive's bytes, so every worker process and every
reload shares one copy. Next to each unpacked folder lies the hash of the
tree it holds; a folder is reused only when its files still hash to it.
Unpacking refuses members that would land outside the target (absolute
paths, ``..``, links), archives with more than ``MAX_MEMBERS`` members and
archives that expand beyond a size limit.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import stat
import tarfile
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from servekit.archive.manifest import MANIFEST_PATH, Manifest, content_hash, hash_files
from servekit.errors import ModelLoadError

log = logging.getLogger("servekit.archive")

MAX_UNPACKED_BYTES = 20 * 1024**3
MAX_MEMBERS = 10_000  # files and folders in one archive
ARCHIVE_SUFFIXES = (".mar", ".tar.gz", ".tgz", ".zip")
CACHE_ENV = "SERVEKIT_ARCHIVE_CACHE"
TREE_SUFFIX = ".tree"  # the sidecar holding an unpacked folder's tree hash


def is_archive(path: Path) -> bool:
    if path.is_dir():
        return (path / MANIFEST_PATH).is_file()
    return path.name.endswith(ARCHIVE_SUFFIXES)


def cache_root() -> Path:
    """The archive cache folder, made private (``0700``) if it is new.

    A folder found there that another user owns, that is a link, or that
    others may enter is never used: the configured one
    (``SERVEKIT_ARCHIVE_CACHE``) is refused, and in place of the default one
    in the temporary folder the next of a few fixed alternatives is used
    (every worker process picks the same, without moving anything)."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        folder = Path(configured)
        _make_private(folder)
        problem = _untrusted(folder, allow_group_read=True)
        if problem:
            raise ModelLoadError(
                f"the archive cache folder ({CACHE_ENV}) {problem}; it must be a folder owned by "
                "this user that no one else may write"
            )
        return folder
    base = Path(tempfile.gettempdir()) / f"servekit-archives-{os.getuid()}"
    for folder in [base, *(base.with_name(f"{base.name}-{i}") for i in range(1, CACHE_ALTERNATIVES))]:
        _make_private(folder)
        problem = _untrusted(folder, allow_group_read=False)
        if problem is None:
            return folder
        if folder not in _DISTRUSTED:
            _DISTRUSTED.add(folder)
            log.warning("Not using the archive cache folder %s: it %s", folder, problem)
    raise ModelLoadError(
        f"none of the archive cache folders {base.name}[-1…-{CACHE_ALTERNATIVES - 1}] in the temporary "
        f"folder is private to this user; remove them, or set {CACHE_ENV} to a private folder"
    )


CACHE_ALTERNATIVES = 8
_DISTRUSTED: set[Path] = set()


def _make_private(folder: Path) -> None:
    try:
        folder.mkdir(mode=0o700, parents=False)
    except FileExistsError:
        return
    except FileNotFoundError:
        folder.parent.mkdir(parents=True, exist_ok=True)
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            return
    except OSError as exc:
        raise ModelLoadError(f"cannot make the archive cache folder {folder.name}: {exc.strerror}") from None


def _untrusted(folder: Path, *, allow_group_read: bool) -> str | None:
    """Why ``folder`` cannot be trusted as this user's archive cache, or None."""
    try:
        info = os.lstat(folder)
    except OSError as exc:
        return f"cannot be examined ({exc.strerror})"
    if stat.S_ISLNK(info.st_mode):
        return "is a symbolic link"
    if not stat.S_ISDIR(info.st_mode):
        return "is not a folder"
    if info.st_uid != os.getuid():
        return f"is owned by another user (uid {info.st_uid})"
    forbidden = 0o022 if allow_group_read else 0o077
    if info.st_mode & forbidden:
        return f"is open to other users (mode {stat.S_IMODE(info.st_mode):o})"
    return None


def open_archive(path: Path) -> tuple[Path, Manifest]:
    """The folder holding the archive's files, and its manifest."""
    if path.is_dir():
        return path, Manifest.read(path)
    if not path.is_file():
        raise ModelLoadError(f"model archive {path.name} does not exist")
    digest = _sha256(path)
    root = cache_root()
    target = root / f"{_label(path.name)}-{digest}"
    if not _verified(target):
        _unpack_verified(path, target)
    return target, Manifest.read(target)


def _label(name: str) -> str:
    """A file-name-safe prefix for the cache folder, for people looking at it."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:64].lstrip(".") or "archive"


def tree_hash(folder: Path) -> str | None:
    """SHA-256 over every file below ``folder`` (the manifest included), or
    None if it holds anything but plain files and folders (a link, a device)."""
    files: list[tuple[str, Path]] = []
    for current, dirs, names in os.walk(folder):
        here = Path(current)
        for entry in (*dirs, *names):
            mode = os.lstat(here / entry).st_mode
            if stat.S_ISDIR(mode):
                continue
            if not stat.S_ISREG(mode):
                return None
            files.append(((here / entry).relative_to(folder).as_posix(), here / entry))
    return hash_files(files)


def _verified(target: Path) -> bool:
    """Whether ``target`` is an unpacked folder made here that nobody changed since."""
    sidecar = target.with_name(target.name + TREE_SUFFIX)
    try:
        info = os.lstat(target)
        expected = sidecar.read_text().strip()
    except (OSError, ValueError):
        return False
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        return False
    try:
        actual = tree_hash(target)
    except OSError:
        return False
    if actual != expected:
        log.warning("The unpacked archive %s differs from what was unpacked; unpacking it again", target)
        return False
    return True


def _unpack_verified(path: Path, target: Path) -> None:
    staging = Path(tempfile.mkdtemp(prefix=".unpack-", dir=target.parent))
    written: str | None = None
    try:
        safe_unpack(path, staging)
        root = _archive_root(staging, path)
        manifest = Manifest.read(root)
        check_content_hash(root, manifest, path.name)
        digest = tree_hash(root)
        if digest is None:
            raise ModelLoadError(f"{path.name} unpacked to something other than files and folders")
        fd, written = tempfile.mkstemp(prefix=".tree-", dir=target.parent)
        with os.fdopen(fd, "w") as fh:
            fh.write(digest + "\n")
        if os.path.lexists(target) and not _verified(target):
            _remove(target)
        # the same hash for every worker unpacking the same archive: whoever renames last wins nothing
        os.replace(written, target.with_name(target.name + TREE_SUFFIX))
        written = None
        try:
            os.rename(root, target)
        except OSError:
            if not _verified(target):  # not another worker winning the race
                raise
    except OSError as exc:
        raise ModelLoadError(f"cannot unpack {path.name}: {exc.strerror or type(exc).__name__}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if written is not None:
            Path(written).unlink(missing_ok=True)


def _remove(path: Path) -> None:
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)  # another worker may be removing it too


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


def safe_unpack(
    path: Path, target: Path, limit: int = MAX_UNPACKED_BYTES, max_members: int = MAX_MEMBERS
) -> None:
    """Unpack a zip or tar archive into ``target``, refusing escaping members
    and archives with more than ``max_members`` members or ``limit`` bytes."""
    if zipfile.is_zipfile(path):
        _unpack_zip(path, target, limit, max_members)
    elif tarfile.is_tarfile(path):
        _unpack_tar(path, target, limit, max_members)
    else:
        raise ModelLoadError(f"{path.name} is neither a zip (.mar) nor a tar.gz archive")


def _too_many(path: Path, max_members: int) -> ModelLoadError:
    return ModelLoadError(
        f"{path.name} has more than {max_members} members (files and folders); a model archive "
        "holds at most that many"
    )


def member_target(target: Path, name: str) -> Path:
    """Where ``name`` unpacks to, or ModelLoadError if it would leave ``target``."""
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts or (pure.parts and ":" in pure.parts[0]):
        raise ModelLoadError(f"archive member {name!r} would be written outside the model folder")
    out = (target / pure).resolve()
    if out != target.resolve() and target.resolve() not in out.parents:
        raise ModelLoadError(f"archive member {name!r} would be written outside the model folder")
    return out


def _unpack_zip(path: Path, target: Path, limit: int, max_members: int) -> None:
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            if len(infos) > max_members:
                raise _too_many(path, max_members)
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
    except zipfile.BadZipFile as exc:
        raise ModelLoadError(f"cannot unpack {path.name}: {exc}") from None
    except OSError as exc:
        raise ModelLoadError(f"cannot unpack {path.name}: {exc.strerror or type(exc).__name__}") from None


def _unpack_tar(path: Path, target: Path, limit: int, max_members: int) -> None:
    try:
        with tarfile.open(path) as archive:
            members = []
            total = 0
            for member in archive:  # read lazily: stop at the bound, not at the end
                members.append(member)
                if len(members) > max_members:
                    raise _too_many(path, max_members)
                total += member.size if member.isfile() else 0
                if total > limit:
                    raise ModelLoadError(f"{path.name} unpacks to more than the {limit}-byte limit")
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
    except tarfile.TarError as exc:
        raise ModelLoadError(f"cannot unpack {path.name}: {exc}") from None
    except OSError as exc:
        raise ModelLoadError(f"cannot unpack {path.name}: {exc.strerror or type(exc).__name__}") from None


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
