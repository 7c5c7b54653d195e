"""Assets: versioned files and folders a model loads, fetched from a store
(local folder, S3, GCS) into a local cache."""

from servekit.library.assets.manager import AssetsManager, LocalAsset
from servekit.library.assets.spec import AssetSpec, next_version, resolve_version
from servekit.library.assets.store import AssetStore

__all__ = ["AssetSpec", "AssetStore", "AssetsManager", "LocalAsset", "next_version", "resolve_version"]
