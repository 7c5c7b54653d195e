"""Assets against moto's S3 server: push, versions, local cache, re-fetch, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from servers import free_port

from servekit.errors import ConfigError, Conflict
from servekit.library import AssetsManager, AssetSpec, AssetStore, LibrarySettings
from servekit.library.assets import resolve_version


def test_spec_parsing() -> None:
    assert AssetSpec.parse("category/name:1.2[sub/path]") == AssetSpec("category/name", "1.2", "sub/path")
    assert AssetSpec.parse("name") == AssetSpec("name")
    assert AssetSpec.parse("a/b:3").version == "3"
    for bad in ("a:1.2.3", "a[../x]", "../x:1.0", "a b"):
        with pytest.raises(ConfigError):
            AssetSpec.parse(bad)


def test_version_resolution() -> None:
    versions = ["0.1", "1.0", "1.10", "1.2", "2.0"]
    assert resolve_version(None, versions, "x") == "2.0"
    assert resolve_version("1", versions, "x") == "1.10"
    assert resolve_version("1.2", versions, "x") == "1.2"
    with pytest.raises(ConfigError, match=r"no version 3 \(versions: 0.1, 1.0, 1.2, 1.10, 2.0\)"):
        resolve_version("3", versions, "x")


@pytest.fixture
def s3_store(moto, request) -> tuple[str, str]:
    bucket = "assets-" + request.node.name.replace("_", "-")[:40].lower()
    return moto.create_bucket(bucket), moto.url


def _write(folder: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


def test_push_resolve_fetch_on_s3(s3_store, tmp_path: Path) -> None:
    url, endpoint = s3_store
    store = AssetStore(url, endpoint)
    for version in ("1.0", "1.1", "2.0"):
        source = _write(tmp_path / f"src-{version}", {"vocab.txt": f"v{version}", "sub/extra.json": "{}"})
        assert store.push(source, "text/vocab", version) == f"text/vocab:{version}"
    single = _write(tmp_path / "single", {"weights.bin": "W"}) / "weights.bin"
    store.push(single, "text/weights", "0.1")
    with pytest.raises(Conflict, match="already exists"):
        store.push(single, "text/weights", "0.1")
    assert store.versions("text/vocab") == ["1.0", "1.1", "2.0"]
    assert store.list() == {"text/vocab": ["1.0", "1.1", "2.0"], "text/weights": ["0.1"]}

    cache = tmp_path / "cache"
    manager = AssetsManager(LibrarySettings(assets_dir=str(cache), storage_url=url, s3_endpoint_url=endpoint))
    assert (manager.fetch("text/vocab:1") / "vocab.txt").read_text() == "v1.1"
    assert (manager.fetch("text/vocab") / "vocab.txt").read_text() == "v2.0"
    assert manager.fetch("text/vocab:1.0[vocab.txt]").read_text() == "v1.0"
    assert manager.fetch("text/vocab:1.0[sub/extra.json]").read_text() == "{}"
    weights = manager.fetch_asset("text/weights:0.1")
    assert weights.path.read_text() == "W" and weights.downloaded
    marker = json.loads((cache / "text/vocab/.1.0.complete").read_text())
    assert marker["files"] == {"vocab.txt": 4, "sub/extra.json": 2}


def test_cached_exact_version_needs_no_network(s3_store, tmp_path: Path) -> None:
    url, endpoint = s3_store
    AssetStore(url, endpoint).push(_write(tmp_path / "a", {"f.txt": "hello"}), "m/a", "1.0")
    cache = str(tmp_path / "cache")
    first = AssetsManager(LibrarySettings(assets_dir=cache, storage_url=url, s3_endpoint_url=endpoint))
    assert first.fetch_asset("m/a:1.0").downloaded
    # the same cache with an endpoint where nothing listens: served from the cache
    dead = f"http://127.0.0.1:{free_port()}"
    offline = AssetsManager(LibrarySettings(assets_dir=cache, storage_url=url, s3_endpoint_url=dead))
    asset = offline.fetch_asset("m/a:1.0[f.txt]")
    assert asset.path.read_text() == "hello" and not asset.downloaded


def test_corrupt_or_partial_download_is_fetched_again(s3_store, tmp_path: Path) -> None:
    url, endpoint = s3_store
    AssetStore(url, endpoint).push(_write(tmp_path / "a", {"data.txt": "0123456789"}), "m/b", "1.0")
    cache = tmp_path / "cache"
    manager = AssetsManager(LibrarySettings(assets_dir=str(cache), storage_url=url, s3_endpoint_url=endpoint))
    path = manager.fetch("m/b:1.0[data.txt]")
    path.write_text("01234")  # truncated after the fact
    assert not manager.is_complete("m/b", "1.0")
    again = manager.fetch_asset("m/b:1.0[data.txt]")
    assert again.downloaded and again.path.read_text() == "0123456789"
    # an interrupted download: files present, marker missing
    (cache / "m/b/.1.0.complete").unlink()
    (cache / "m/b/1.0/data.txt").write_text("garbage")
    again = manager.fetch_asset("m/b:1.0[data.txt]")
    assert again.downloaded and again.path.read_text() == "0123456789"


def test_unknown_asset_and_no_store(tmp_path: Path) -> None:
    manager = AssetsManager(LibrarySettings(assets_dir=str(tmp_path)))
    with pytest.raises(ConfigError, match="no store is configured"):
        manager.fetch("nothing/here:1.0")
    (tmp_path / "vocabulary.txt").write_text("words")  # modelkit's local mode
    assert manager.fetch("vocabulary.txt").read_text() == "words"


def test_assets_cli_on_s3(moto, tmp_path: Path) -> None:
    url = moto.create_bucket("cli-bucket")
    env = {"SERVEKIT_STORAGE_URL": url, "SERVEKIT_S3_ENDPOINT_URL": moto.url,
           "SERVEKIT_ASSETS_DIR": str(tmp_path / "cache")}
    source = _write(tmp_path / "src", {"model.txt": "m"}) / "model.txt"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        import os

        return subprocess.run([sys.executable, "-m", "servekit", "assets", *args], capture_output=True,
                              text=True, env={**os.environ, **env}, timeout=60)

    assert cli("push", str(source), "cat/model:1.0").stdout.strip() == "cat/model:1.0"
    assert cli("push", str(source), "cat/model").stdout.strip() == "cat/model:1.1"  # next minor
    refused = cli("push", str(source), "cat/model:1.0")
    assert refused.returncode == 2 and "already exists" in refused.stderr
    assert cli("list").stdout.strip() == "cat/model: 1.0, 1.1"
    fetched = cli("fetch", "cat/model:1")
    assert fetched.returncode == 0, fetched.stderr
    assert Path(fetched.stdout.strip()).read_text() == "m"
    assert fetched.stdout.strip().endswith("cat/model/1.1")
