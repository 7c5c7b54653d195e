"""Settings of the model library: where assets live and which prediction cache
to use. Read from ``SERVEKIT_*`` environment variables (modelkit's
``MODELKIT_*`` names are accepted too) or passed to :class:`ModelLibrary`.

=============================  ==============================================
``SERVEKIT_ASSETS_DIR``        local folder assets are cached in (default
                               ``~/.cache/servekit/assets``)
``SERVEKIT_STORAGE_URL``       the remote asset store: a folder, ``file://``,
                               ``s3://bucket/prefix`` or ``gs://bucket/prefix``
``SERVEKIT_S3_ENDPOINT_URL``   S3-compatible endpoint (also ``AWS_ENDPOINT_URL``)
``SERVEKIT_CACHE_PROVIDER``    ``lru`` (in-process, default) or ``redis``
``SERVEKIT_CACHE_URL``         ``redis://host:port/db`` (or ``SERVEKIT_CACHE_HOST``
                               and ``SERVEKIT_CACHE_PORT``)
``SERVEKIT_CACHE_MAX_SIZE``    entries kept by the LRU cache (default 4096)
``SERVEKIT_CACHE_TTL``         seconds Redis keeps a prediction (default: forever)
``SERVEKIT_LAZY_LOADING``      ``1``: build models on first ``get``
=============================  ==============================================
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict


def _env(name: str, environ: dict[str, str]) -> str | None:
    return environ.get("SERVEKIT_" + name) or environ.get("MODELKIT_" + name) or None


class LibrarySettings(BaseModel):
    """Where assets come from and how predictions are cached."""

    model_config = ConfigDict(extra="forbid")

    assets_dir: str = str(Path.home() / ".cache" / "servekit" / "assets")
    storage_url: str | None = None
    s3_endpoint_url: str | None = None
    cache_provider: str = "lru"
    cache_url: str | None = None
    cache_max_size: int = 4096
    cache_ttl: int | None = None
    lazy_loading: bool = False

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> LibrarySettings:
        env = dict(os.environ) if environ is None else environ
        data: dict[str, object] = {}
        for field in ("ASSETS_DIR", "STORAGE_URL", "S3_ENDPOINT_URL", "CACHE_PROVIDER",
                      "CACHE_URL", "CACHE_MAX_SIZE", "CACHE_TTL", "LAZY_LOADING"):
            value = _env(field, env)
            if value is not None:
                data[field.lower()] = value
        # modelkit's spelling: a storage "provider" that is a local folder
        if "storage_url" not in data and env.get("SERVEKIT_STORAGE_PROVIDER") not in (None, "local"):
            data["storage_url"] = env["SERVEKIT_STORAGE_PROVIDER"]
        if "s3_endpoint_url" not in data and env.get("AWS_ENDPOINT_URL"):
            data["s3_endpoint_url"] = env["AWS_ENDPOINT_URL"]
        if "cache_url" not in data and _env("CACHE_HOST", env):
            port = _env("CACHE_PORT", env) or "6379"
            data["cache_url"] = f"redis://{_env('CACHE_HOST', env)}:{port}/0"
        return cls.model_validate(data)
