"""The remote asset store, through fsspec: a local folder, S3 or GCS.

Layout: ``<root>/<name>/<major.minor>`` is the asset, either one object (a
file asset) or a prefix holding files (a folder asset). Versions are never
overwritten.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from servekit.errors import Conflict, ModelNotFound
from servekit.library.assets.spec import VERSION, version_key
from servekit.observability import progress


class AssetStore:
    """Push, list and download asset versions."""

    def __init__(self, url: str, s3_endpoint_url: str | None = None) -> None:
        import fsspec

        options: dict[str, Any] = {}
        if url.startswith(("s3://", "s3a://")) and s3_endpoint_url:
            options["client_kwargs"] = {"endpoint_url": s3_endpoint_url}
        self.url = url
        fs, root = fsspec.core.url_to_fs(url, **options)
        self.fs: Any = fs
        self.root = str(root).rstrip("/")

    def _remote(self, name: str, version: str | None = None) -> str:
        path = f"{self.root}/{name}"
        return f"{path}/{version}" if version else path

    def refresh(self) -> None:
        self.fs.invalidate_cache()

    def versions(self, name: str) -> list[str]:
        self.refresh()
        base = self._remote(name)
        try:
            entries = self.fs.ls(base, detail=False)
        except FileNotFoundError:
            return []
        names = {str(e).rstrip("/").rsplit("/", 1)[-1] for e in entries}
        return sorted((n for n in names if VERSION.match(n)), key=version_key)

    def list(self) -> dict[str, list[str]]:
        """Every asset name with its versions."""
        self.refresh()
        try:
            files = self.fs.find(self.root)
        except FileNotFoundError:
            return {}
        found: dict[str, set[str]] = {}
        prefix = self.root + "/"
        for path in files:
            relative = str(path)[len(prefix) :] if str(path).startswith(prefix) else str(path)
            parts = relative.split("/")
            for i in range(1, len(parts)):
                if VERSION.match(parts[i]):
                    found.setdefault("/".join(parts[:i]), set()).add(parts[i])
                    break
        return {k: sorted(v, key=version_key) for k, v in sorted(found.items())}

    def push(self, local: Path, name: str, version: str) -> str:
        """Upload ``local`` (file or folder) as ``name:version``; refuses existing versions."""
        if version in self.versions(name):
            raise Conflict(
                f"asset {name}:{version} already exists in {self.url}; versions are immutable, "
                "push a new version instead"
            )
        remote = self._remote(name, version)
        if local.is_dir():
            sources = [Path(folder) / file for folder, _, files in os.walk(local) for file in sorted(files)]
            size = sum(source.stat().st_size for source in sources)
            with progress.bar(f"Pushing {name}:{version}", size, unit="bytes") as advance:
                for source in sources:
                    relative = source.relative_to(local).as_posix()
                    target = f"{remote}/{relative}"
                    self.fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
                    self.fs.put_file(str(source), target)
                    advance(source.stat().st_size)
        elif local.is_file():
            self.fs.makedirs(remote.rsplit("/", 1)[0], exist_ok=True)
            with progress.bar(f"Pushing {name}:{version}", local.stat().st_size, unit="bytes") as advance:
                self.fs.put_file(str(local), remote)
                advance(local.stat().st_size)
        else:
            raise ModelNotFound(f"nothing to push at {local}")
        self.refresh()
        return f"{name}:{version}"

    def download(self, name: str, version: str, destination: Path) -> dict[str, int]:
        """Copy ``name:version`` to ``destination``; returns relative path -> size."""
        remote = self._remote(name, version)
        self.refresh()
        title = f"Fetching {name}:{version}"
        if self.fs.isfile(remote):
            destination.parent.mkdir(parents=True, exist_ok=True)
            with progress.bar(title, self.fs.size(remote), unit="bytes") as advance:
                self.fs.get_file(remote, str(destination))
                advance(destination.stat().st_size)
            return {"": destination.stat().st_size}
        found = self.fs.find(remote, detail=True)
        if not found:
            raise ModelNotFound(f"asset {name}:{version} is not in {self.url}")
        sizes: dict[str, int] = {}
        total = sum(int(info.get("size") or 0) for info in found.values())
        with progress.bar(title, total, unit="bytes") as advance:
            for path in sorted(found):
                relative = str(path)[len(remote) + 1 :]
                target = destination / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                self.fs.get_file(str(path), str(target))
                sizes[relative] = target.stat().st_size
                advance(sizes[relative])
        return sizes
