"""Model archives: `servekit archive` writes TorchServe's layout; archives from
the real torch-model-archiver open; unpacking refuses escaping members."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from servekit.archive import open_archive
from servekit.archive.reader import safe_unpack
from servekit.cli import main
from servekit.errors import ModelLoadError


def make_files(folder: Path) -> None:
    (folder / "model.py").write_text("X = 1\n")
    (folder / "weights.pth").write_bytes(b"\x00weights")
    (folder / "handler.py").write_text("def handle(data, context):\n    return data\n")
    (folder / "index_to_name.json").write_text('{"0": "zero"}')
    (folder / "config.yaml").write_text("handler:\n  topk: 2\n")


def test_archive_writes_torchserve_layout(tmp_path: Path) -> None:
    make_files(tmp_path)
    out = tmp_path / "store"
    code = main([
        "archive", "--model-name", "demo", "--version", "2.0",
        "--model-file", str(tmp_path / "model.py"), "--serialized-file", str(tmp_path / "weights.pth"),
        "--handler", str(tmp_path / "handler.py"), "--extra-files", str(tmp_path / "index_to_name.json"),
        "--config-file", str(tmp_path / "config.yaml"), "--export-path", str(out),
    ])
    assert code == 0
    with zipfile.ZipFile(out / "demo.mar") as archive:
        names = sorted(archive.namelist())
        manifest = json.loads(archive.read("MAR-INF/MANIFEST.json"))
    assert names == sorted(["MAR-INF/MANIFEST.json", "config.yaml", "handler.py",
                            "index_to_name.json", "model.py", "weights.pth"])
    assert manifest["runtime"] == "python"
    assert manifest["model"] == {
        "modelName": "demo", "handler": "handler.py", "serializedFile": "weights.pth",
        "modelFile": "model.py", "modelVersion": "2.0", "configFile": "config.yaml",
    }
    assert manifest["servekit"]["frameworks"]["python"].count(".") == 2
    assert manifest["servekit"]["contentHash"].startswith("sha256:")
    folder, parsed = open_archive(out / "demo.mar")
    assert parsed.version == "2.0" and (folder / "weights.pth").read_bytes() == b"\x00weights"
    # a second run refuses to overwrite unless forced
    args = ["archive", "--model-name", "demo", "--handler", "base_handler", "--export-path", str(out)]
    assert main(args) == 2
    assert main([*args, "--force"]) == 0


def test_archive_from_torch_model_archiver_opens(tmp_path: Path) -> None:
    make_files(tmp_path)
    subprocess.run(
        [str(Path(sys.executable).with_name("torch-model-archiver")), "--model-name", "theirs",
         "--version", "1.0", "--model-file", "model.py", "--serialized-file", "weights.pth",
         "--handler", "handler.py", "--extra-files", "index_to_name.json"],
        cwd=tmp_path, check=True,
    )
    folder, manifest = open_archive(tmp_path / "theirs.mar")
    assert manifest.model_name == "theirs" and manifest.handler == "handler.py"
    assert manifest.serialized_file == "weights.pth" and manifest.servekit == {}
    assert (folder / "index_to_name.json").read_text() == '{"0": "zero"}'


def test_tampered_archive_is_refused(tmp_path: Path) -> None:
    make_files(tmp_path)
    main(["archive", "--model-name", "demo", "--handler", str(tmp_path / "handler.py"),
          "--serialized-file", str(tmp_path / "weights.pth"), "--export-path", str(tmp_path)])
    with zipfile.ZipFile(tmp_path / "demo.mar") as archive:
        contents = {n: archive.read(n) for n in archive.namelist()}
    contents["weights.pth"] = b"\x00other weights"
    with zipfile.ZipFile(tmp_path / "demo.mar", "w") as archive:
        for name, data in contents.items():
            archive.writestr(name, data)
    with pytest.raises(ModelLoadError, match="content hash"):
        open_archive(tmp_path / "demo.mar")


@pytest.mark.parametrize("member", ["../escape.py", "/etc/escape.py", "a/../../escape.py"])
def test_zip_members_cannot_escape(tmp_path: Path, member: str) -> None:
    bad = tmp_path / "bad.mar"
    with zipfile.ZipFile(bad, "w") as archive:
        archive.writestr("MAR-INF/MANIFEST.json", '{"model": {"modelName": "x", "handler": "h.py"}}')
        archive.writestr(member, "print('owned')")
    target = tmp_path / "out"
    target.mkdir()
    with pytest.raises(ModelLoadError, match="outside the model folder"):
        safe_unpack(bad, target)
    assert not (tmp_path / "escape.py").exists()


def test_tar_links_are_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tar.gz"
    with tarfile.open(bad, "w:gz") as tar:
        info = tarfile.TarInfo("m/MAR-INF/MANIFEST.json")
        data = b'{"model": {"modelName": "x", "handler": "h.py"}}'
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("m/passwd")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tar.addfile(link)
    with pytest.raises(ModelLoadError, match="link"):
        open_archive(bad)


def test_tgz_and_folder_formats_open(tmp_path: Path) -> None:
    make_files(tmp_path)
    for fmt in ("tgz", "no-archive"):
        assert main(["archive", "--model-name", "demo", "--handler", str(tmp_path / "handler.py"),
                     "--archive-format", fmt, "--export-path", str(tmp_path / fmt)]) == 0
    _, manifest = open_archive(tmp_path / "tgz" / "demo.tar.gz")
    assert manifest.model_name == "demo"
    folder, manifest = open_archive(tmp_path / "no-archive" / "demo")
    assert (folder / "handler.py").is_file() and manifest.handler == "handler.py"


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_archives_with_too_many_members_are_refused(tmp_path: Path, kind: str) -> None:
    bad = tmp_path / ("many.mar" if kind == "zip" else "many.tar.gz")
    manifest = b'{"model": {"modelName": "x", "handler": "h.py"}}'
    if kind == "zip":
        with zipfile.ZipFile(bad, "w") as archive:
            archive.writestr("MAR-INF/MANIFEST.json", manifest)
            for i in range(50):
                archive.writestr(f"{i}.txt", "")
    else:
        with tarfile.open(bad, "w:gz") as tar:
            for i, name in enumerate(["MAR-INF/MANIFEST.json", *(f"{i}.txt" for i in range(50))]):
                info = tarfile.TarInfo(name)
                data = manifest if i == 0 else b""
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    target = tmp_path / "out"
    target.mkdir()
    with pytest.raises(ModelLoadError, match="more than 20 members"):
        safe_unpack(bad, target, max_members=20)
    assert list(target.iterdir()) == []  # refused before anything was written
    safe_unpack(bad, target, max_members=51)
    assert len(list(target.glob("*.txt"))) == 50


def test_an_unpacked_archive_is_reused_only_while_its_files_are_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SERVEKIT_ARCHIVE_CACHE", str(tmp_path / "cache"))
    make_files(tmp_path)
    main(["archive", "--model-name", "demo", "--handler", str(tmp_path / "handler.py"),
          "--export-path", str(tmp_path)])
    folder, _ = open_archive(tmp_path / "demo.mar")
    assert oct((tmp_path / "cache").stat().st_mode & 0o777) == "0o700"
    assert folder.name.endswith(hashlib.sha256((tmp_path / "demo.mar").read_bytes()).hexdigest())
    stamp = (folder / "handler.py").stat().st_mtime_ns
    assert open_archive(tmp_path / "demo.mar")[0] == folder
    assert (folder / "handler.py").stat().st_mtime_ns == stamp  # reused, not unpacked again
    (folder / "handler.py").write_text("import os\n")
    (folder / "extra.py").write_text("import os\n")
    again, _ = open_archive(tmp_path / "demo.mar")
    assert again == folder and not (folder / "extra.py").exists()
    assert (folder / "handler.py").read_text() == (tmp_path / "handler.py").read_text()


@pytest.mark.parametrize("spec", [
    "/tmp/evil.py", "../evil.py", "a/../../evil.py", "builtins:print", "os", "handler.py:__init__",
    "handler.py:a.b", "ts.torch_handler.unknown", "C:\\evil.py", "", "image_classifier:handle",
])
def test_handler_specs_outside_the_archive_are_refused(tmp_path: Path, spec: str) -> None:
    from servekit.errors import InvalidInput
    from servekit.torch_handler.spec import check_handler

    model = tmp_path / "model"
    (model / "a").mkdir(parents=True)
    (model / "handler.py").write_text("def handle(data, context):\n    return data\n")
    (tmp_path / "evil.py").write_text("raise SystemExit('owned')\n")
    with pytest.raises(InvalidInput, match="handler"):
        check_handler(spec.replace("/tmp/evil.py", str(tmp_path / "evil.py")), model)


@pytest.mark.parametrize(("spec", "builtin", "file"), [
    ("handler.py", None, "handler.py"), ("handler", None, "handler.py"), ("handler.py:handle", None, "handler.py"),
    ("image_classifier", "image_classifier", None), ("ts.torch_handler.base_handler", "base_handler", None),
    ("servekit.torch_handler.vision_handler", "vision_handler", None), ("sub/inner.py", None, "sub/inner.py"),
    ("sub.inner", None, "sub/inner.py"), ("base_handler.py", "base_handler", None),
])
def test_handler_specs_inside_the_archive_are_accepted(tmp_path: Path, spec: str, builtin: str | None,
                                                       file: str | None) -> None:
    from servekit.torch_handler.spec import check_handler

    (tmp_path / "sub").mkdir()
    (tmp_path / "handler.py").write_text("")
    (tmp_path / "sub" / "inner.py").write_text("")
    parsed = check_handler(spec, tmp_path)
    assert parsed.builtin == builtin
    found = parsed.path_in(tmp_path)
    assert (found.relative_to(tmp_path.resolve()).as_posix() if found else None) == file


def test_manifest_files_must_stay_inside_the_archive(tmp_path: Path) -> None:
    from servekit.torch_handler.spec import file_inside

    assert file_inside(tmp_path, "weights.pt", "serializedFile") == tmp_path.resolve() / "weights.pt"
    for name in ("/etc/passwd", "../x.py", "a/../../x.py"):
        with pytest.raises(ModelLoadError, match="inside the model archive"):
            file_inside(tmp_path, name, "modelFile")
