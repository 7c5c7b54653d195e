"""The local asset cache: resolve a spec to a version, download it once.

Each version is downloaded into a temporary name and renamed into place
under an exclusive file lock (safe across processes); a completeness marker
recording every file's size is written last. A version without a valid marker
(an interrupted or corrupted download) is deleted and fetched again. An exact
version that is complete locally is used without touching the network.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from servekit.errors import ConfigError, ModelNotFound, ServekitError
from servekit.library.assets.spec import AssetSpec, is_local_path, resolve_version
from servekit.library.assets.store import AssetStore
from servekit.library.settings import LibrarySettings

log = logging.getLogger("servekit.assets")


@dataclass(frozen=True, slots=True)
class LocalAsset:
    path: Path
    name: str
    version: str
    downloaded: bool = False


class AssetsManager:
    """Fetches assets from the configured store into ``assets_dir``."""

    def __init__(self, settings: LibrarySettings | None = None) -> None:
        self.settings = settings or LibrarySettings.from_env()
        self.assets_dir = Path(self.settings.assets_dir).expanduser()
        self._store: AssetStore | None = None

    @classmethod
    def from_env(cls) -> AssetsManager:
        return cls(LibrarySettings.from_env())

    @property
    def store(self) -> AssetStore | None:
        if self._store is None and self.settings.storage_url:
            self._store = AssetStore(self.settings.storage_url, self.settings.s3_endpoint_url)
        return self._store

    # -- local layout -------------------------------------------------------
    def local_path(self, name: str, version: str) -> Path:
        return self.assets_dir / name / version

    def _marker(self, name: str, version: str) -> Path:
        return self.assets_dir / name / f".{version}.complete"

    def is_complete(self, name: str, version: str) -> bool:
        marker = self._marker(name, version)
        path = self.local_path(name, version)
        try:
            sizes: dict[str, int] = json.loads(marker.read_text())["files"]
        except (OSError, ValueError, KeyError, TypeError):
            return False
        for relative, size in sizes.items():
            file = path / relative if relative else path
            try:
                if file.stat().st_size != size:
                    return False
            except OSError:
                return False
        return True

    def local_versions(self, name: str) -> list[str]:
        folder = self.assets_dir / name
        if not folder.is_dir():
            return []
        return [p.name for p in folder.iterdir() if self.is_complete(name, p.name)]

    # -- fetching -------------------------------------------------------------
    def fetch(self, spec: str) -> Path:
        """The local path of an asset spec, downloading it if needed."""
        return self.fetch_asset(spec).path

    def fetch_asset(self, spec: str) -> LocalAsset:
        if is_local_path(spec):
            path = Path(spec).expanduser()
            if not path.exists():
                raise ConfigError(f"asset path {spec!r} does not exist")
            return LocalAsset(path.resolve(), spec, "")
        parsed = AssetSpec.parse(spec)
        if parsed.version is None and self.store is None:
            plain = self.assets_dir / parsed.name
            if plain.exists() and not self.local_versions(parsed.name):
                # modelkit's local mode: SERVEKIT_ASSETS_DIR holds the asset itself
                return LocalAsset(_sub(plain, parsed), parsed.name, "")
        version = self._resolve(parsed)
        downloaded = False
        if not self.is_complete(parsed.name, version):
            self._download(parsed.name, version)
            downloaded = True
        path = _sub(self.local_path(parsed.name, version), parsed)
        if not path.exists():
            raise ConfigError(f"asset {spec!r}: {parsed.sub_path!r} is not inside {parsed.name}:{version}")
        return LocalAsset(path, parsed.name, version, downloaded)

    def _resolve(self, spec: AssetSpec) -> str:
        if spec.exact and spec.version is not None and self.is_complete(spec.name, spec.version):
            return spec.version
        store = self.store
        if store is None:
            local = self.local_versions(spec.name)
            if not local:
                raise ConfigError(
                    f"asset {spec} is not in the local cache {self.assets_dir} and no store is "
                    "configured (set SERVEKIT_STORAGE_URL)"
                )
            return resolve_version(spec.version, local, spec.name)
        try:
            remote = store.versions(spec.name)
        except (OSError, ServekitError) as exc:
            local = self.local_versions(spec.name)
            if not local:
                raise ConfigError(f"cannot list versions of {spec.name!r} in {store.url}: {exc}") from exc
            log.warning("Asset store unreachable (%s); using the cached versions of %s", exc, spec.name)
            return resolve_version(spec.version, local, spec.name)
        return resolve_version(spec.version, remote, spec.name)

    @contextmanager
    def _lock(self, name: str, version: str) -> Iterator[None]:
        folder = self.assets_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / f".{version}.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _download(self, name: str, version: str) -> None:
        store = self.store
        if store is None:
            raise ModelNotFound(f"asset {name}:{version} is not cached and no store is configured")
        with self._lock(name, version):
            if self.is_complete(name, version):  # another process fetched it meanwhile
                return
            target = self.local_path(name, version)
            marker = self._marker(name, version)
            marker.unlink(missing_ok=True)
            _remove(target)
            partial = target.with_name(f".{version}.partial-{os.getpid()}")
            _remove(partial)
            started = time.perf_counter()
            try:
                sizes = store.download(name, version, partial)
                partial.rename(target)
            except BaseException:
                _remove(partial)
                raise
            marker.write_text(json.dumps({"files": sizes, "fetched_at": time.time()}))
            log.info("Fetched asset %s:%s in %.2f s", name, version, time.perf_counter() - started)


def _sub(path: Path, spec: AssetSpec) -> Path:
    return path / spec.sub_path if spec.sub_path else path


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
