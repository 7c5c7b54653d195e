"""Attacks on model archives, their downloads and the repository (issue 10,
items 6, 8, 10 and 16), each against a real server:

- a redirect from an allowed URL to a disallowed one is not followed;
- a slow download or a huge archive does not stall the worker (``/ping``
  answers meanwhile) and is bounded in time, size and members;
- ``handler=`` names a built-in handler or a file of the archive, nothing else
  (no ``.py`` file elsewhere on disk, no ``builtins:print``);
- a multipart body has at most 1,000 parts;
- a planted or changed archive cache is never used;
- a repository model whose ``uri`` leads outside the repository is not loaded,
  and failure reasons shown to clients hold no outside paths or tracebacks.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import stat
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from servers import ServerProcess, free_port

from servekit.cli import main

VERSION_HANDLER = '''
def handle(data, context):
    if data is None:
        return None
    return [context.manifest["model"]["modelVersion"] for _ in data]
'''

# returns what the server made of a form: the payload and how many other fields came with it
FORM_HANDLER = '''
def handle(data, context):
    if data is None:
        return None
    out = []
    for row in data:
        payload = row.get("data")
        if isinstance(payload, (bytes, bytearray)):
            payload = payload.decode()
        out.append({"data": payload, "fields": len(row) - 1})
    return out
'''

# leaves a mark when imported: an attack worked if the mark exists
EVIL = '''
from pathlib import Path
Path({mark!r}).write_text("owned")

def handle(data, context):
    return ["owned" for _ in (data or [])]
'''

# a handler whose initialize fails with an outside path and a traceback in the message
FAILING_HANDLER = '''
class Failing:
    def initialize(self, context):
        try:
            open("/srv/secret-place/weights/model.bin", "rb")
        except OSError as exc:
            raise RuntimeError(
                f"{exc}\\nTraceback (most recent call last):\\n"
                '  File "/opt/private/site/loader.py", line 12, in load\\n'
                "    raise ValueError('deep')\\nValueError: deep"
            ) from None

    def handle(self, data, context):
        return data
'''


# -- archives -----------------------------------------------------------------------
def make_archive(work: Path, name: str, version: str, out: Path, handler_code: str = VERSION_HANDLER,
                 handler_file: str = "version_handler.py") -> Path:
    folder = work / f"src-{name}-{version}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / handler_file).write_text(handler_code)
    assert main(["archive", "--model-name", name, "--version", version, "--handler",
                 str(folder / handler_file), "--export-path", str(out), "--force"]) == 0
    return out / f"{name}.mar"


def raw_archive(path: Path, model: dict[str, Any], files: dict[str, str | bytes]) -> Path:
    """A .mar written by hand, so that its manifest can say anything."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("MAR-INF/MANIFEST.json", json.dumps({"runtime": "python", "model": model}))
        for name, content in files.items():
            archive.writestr(name, content)
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- a remote archive server with redirects and slow answers ------------------------------
class Remote:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.requested: list[str] = []
        self.slow_started = threading.Event()
        self.release = threading.Event()
        self.stop = threading.Event()
        remote = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                remote.requested.append(self.path)
                if self.path.startswith("/redirect/"):
                    # /redirect/<n>/<rest>: n hops through /redirect/ (allowed), the last to /<rest>
                    _, _, hops, rest = self.path.split("/", 3)
                    port = self.server.server_address[1]
                    self.send_response(302)
                    self.send_header("Location", f"/redirect/{int(hops) - 1}/{rest}" if int(hops) > 1
                                     else f"http://127.0.0.1:{port}/{rest}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if self.path.endswith("/slow.mar") or self.path.endswith("/forever.mar"):
                    self.drip(until=remote.release if self.path.endswith("/slow.mar") else remote.stop)
                    return
                if self.path.endswith("/huge.mar"):
                    self.send_response(200)
                    self.end_headers()  # no Content-Length: the size shows only while reading
                    for _ in range(64):
                        self.wfile.write(b"\0" * 65536)
                    return
                file = remote.folder / self.path.lstrip("/")
                if not file.is_file():
                    self.send_error(404)
                    return
                body = file.read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def drip(self, until: threading.Event) -> None:
                self.send_response(200)
                self.send_header("Content-Length", "100000")
                self.end_headers()
                remote.slow_started.set()
                try:
                    while not until.wait(0.05) and not remote.stop.is_set():
                        self.wfile.write(b"\0")
                        self.wfile.flush()
                except OSError:
                    pass  # the server gave up on us: what a bounded download does

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> Remote:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Remote]:
    folder = tmp_path_factory.mktemp("attack-remote")
    work = tmp_path_factory.mktemp("attack-remote-src")
    for sub in ("allowed", "elsewhere"):
        (folder / sub).mkdir()
    make_archive(work, "fetched", "3.0", folder / "allowed")
    make_archive(work, "forbidden", "6.0", folder / "elsewhere")
    with Remote(folder) as server:
        yield server


# -- the TorchServe-mode server -------------------------------------------------------
def start_torchserve(root: Path, remote: Remote, env: dict[str, str]) -> tuple[ServerProcess, dict[str, Any]]:
    management = free_port()
    allowed = f"{remote.url.replace('.', '[.]')}/(allowed|redirect)/.*"
    process = ServerProcess(
        ["serve", "--model-store", str(root / "store"), "--management-port", str(management),
         "--allowed-urls", allowed],
        cwd=root, env=env,
    )
    process.start()
    key = json.loads((root / "key_file.json").read_text())["management"]["key"]
    return process, {"url": process.url, "mgmt": f"http://127.0.0.1:{management}", "key": key,
                     "root": root, "log": process.log}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, remote: Remote) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("attacks")
    store = root / "store"
    store.mkdir()
    make_archive(root, "echo", "1.0", store)
    make_archive(root, "form", "1.0", store, FORM_HANDLER, "form_handler.py")
    make_archive(root, "failing", "1.0", store, FAILING_HANDLER, "failing_handler.py")
    outside = root / "outside"
    outside.mkdir()
    mark = root / "owned.txt"
    (outside / "evil.py").write_text(EVIL.format(mark=str(mark)))
    raw_archive(store / "abs_handler.mar", {"modelName": "abs_handler", "modelVersion": "1.0",
                                            "handler": str(outside / "evil.py")}, {})
    raw_archive(store / "up_handler.mar", {"modelName": "up_handler", "modelVersion": "1.0",
                                           "handler": "../../../../../../" + str(outside / "evil.py")}, {})
    raw_archive(store / "abs_model_file.mar", {
        "modelName": "abs_model_file", "modelVersion": "1.0", "handler": "base_handler",
        "serializedFile": "weights.pt", "modelFile": str(outside / "evil.py")}, {"weights.pt": b"\0"})
    raw_archive(store / "many.mar", {"modelName": "many", "handler": "h.py"},
                {f"f/{i}.txt": "" for i in range(10_000)})
    # item 16: a cache folder planted in the temporary folder, open to everybody, holding
    # an "unpacked" planted.mar (under the old and the new folder names) whose handler is evil
    planted = make_archive(root, "planted", "1.0", store)
    tmp = root / "tmp"
    cache = tmp / f"servekit-archives-{os.getuid()}"
    digest = sha256(planted)
    for folder_name in (f"planted.mar-{digest[:16]}", f"planted.mar-{digest}"):
        fake = cache / folder_name
        (fake / "MAR-INF").mkdir(parents=True)
        (fake / "MAR-INF" / "MANIFEST.json").write_text(json.dumps(
            {"model": {"modelName": "planted", "modelVersion": "1.0", "handler": "evil.py"}}))
        (fake / "evil.py").write_text(EVIL.format(mark=str(mark)))
    from servekit.archive.manifest import hash_files

    fake = cache / f"planted.mar-{digest}"  # with the hash of its planted files beside it, as servekit writes
    tree = hash_files((p.relative_to(fake).as_posix(), p) for p in fake.rglob("*") if p.is_file())
    (cache / f"planted.mar-{digest}.tree").write_text(f"{tree}\n")
    for path in [cache, *cache.rglob("*")]:
        path.chmod(0o777)
    env = {"TMPDIR": str(tmp), "SERVEKIT_DOWNLOAD_TIMEOUT": "300"}
    env.pop("SERVEKIT_ARCHIVE_CACHE", None)
    process, info = start_torchserve(root, remote, {**env})
    info.update(remote=remote, mark=mark, outside=outside, cache=cache, tmp=tmp)
    try:
        yield info
    finally:
        process.stop()


def call(server: dict[str, Any], method: str, path: str, **kwargs: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {server['key']}"}
    return requests.request(method, server["mgmt"] + path, headers=headers, timeout=120, **kwargs)


def predict(server: dict[str, Any], path: str, **kwargs: Any) -> requests.Response:
    kwargs.setdefault("data", b"x")
    return requests.post(f"{server['url']}/predictions/{path}", timeout=60, **kwargs)


def assert_error(response: requests.Response, code: int, *texts: str) -> dict[str, Any]:
    body = response.json()
    assert response.status_code == code and set(body) == {"code", "type", "message"}, body
    assert body["code"] == code, body
    for text in texts:
        assert text in body["message"], body
    return body  # type: ignore[no-any-return]


def registered(server: dict[str, Any]) -> list[str]:
    return [m["modelName"] for m in call(server, "GET", "/models").json()["models"]]


def healthy(server: dict[str, Any]) -> None:
    ping = requests.get(f"{server['url']}/ping", timeout=30)
    assert ping.status_code == 200 and ping.json() == {"status": "Healthy"}


# -- item 6: allowed_urls and redirects ---------------------------------------------------
@pytest.mark.parametrize("hops", [1, 3])
def test_a_redirect_to_a_disallowed_url_is_not_followed(server: dict[str, Any], hops: int) -> None:
    remote: Remote = server["remote"]
    before = len(remote.requested)
    response = call(server, "POST", f"/models?url={remote.url}/redirect/{hops}/elsewhere/forbidden.mar")
    body = assert_error(response, 403, "redirects to a URL that is not allowed", "allowed_urls")
    assert body["type"] == "ForbiddenException"
    assert not any(p.startswith("/elsewhere") for p in remote.requested[before:]), remote.requested
    assert "forbidden" not in registered(server)
    assert not (server["root"] / "store" / "forbidden.mar").exists()


def test_a_redirect_between_allowed_urls_is_followed(server: dict[str, Any]) -> None:
    remote: Remote = server["remote"]
    response = call(server, "POST", f"/models?url={remote.url}/redirect/2/allowed/fetched.mar&initial_workers=1")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": 'Model "fetched" Version: 3.0 registered with 1 initial workers'}
    assert predict(server, "fetched").text == "3.0"
    assert call(server, "DELETE", "/models/fetched").status_code == 200


# -- item 6: downloads and unpacking off the event loop, bounded ------------------------
def test_ping_answers_while_a_slow_download_registers(server: dict[str, Any]) -> None:
    remote: Remote = server["remote"]
    result: list[requests.Response] = []
    registering = threading.Thread(
        target=lambda: result.append(call(server, "POST", f"/models?url={remote.url}/allowed/slow.mar")))
    registering.start()
    try:
        assert remote.slow_started.wait(60), "the server never asked for the slow archive"
        healthy(server)  # the same (only) worker, while its registration waits for bytes
        listed = call(server, "GET", "/models")
        assert listed.status_code == 200 and listed.json() == {"models": []}
        assert registering.is_alive() and not result  # still downloading: the remote has not let go
    finally:
        remote.release.set()  # the remote closes the connection mid-archive
        registering.join(120)
    assert_error(result[0], 400, "cannot download", "closed the connection before the whole archive arrived")
    assert not (server["root"] / "store" / "slow.mar").exists()
    assert not list((server["root"] / "store").glob(".slow.mar*"))  # no partial file left behind


def test_an_archive_with_too_many_members_is_refused(server: dict[str, Any]) -> None:
    response = call(server, "POST", "/models?url=many.mar")
    assert_error(response, 400, "many.mar", "more than 10000 members")
    assert "many" not in registered(server)
    healthy(server)


# -- item 8: handler specs -----------------------------------------------------------------
def handler_query(server: dict[str, Any], spec: str) -> str:
    from urllib.parse import quote

    return f"/models?url=echo.mar&initial_workers=1&handler={quote(spec, safe='')}"


@pytest.mark.parametrize("spec", [
    "{outside}/evil.py", "../outside/evil.py", "../../outside/evil", "builtins:print", "os:system",
    "json", "subprocess:run", "version_handler.py:__init__", "ts.torch_handler.no_such_handler",
])
def test_handler_must_be_builtin_or_a_file_of_the_archive(server: dict[str, Any], spec: str) -> None:
    spec = spec.format(outside=server["outside"])
    body = assert_error(call(server, "POST", handler_query(server, spec)), 400, "handler", "built-in handler")
    assert body["type"] == "BadRequestException"
    assert not server["mark"].exists()
    assert "echo" not in registered(server)


@pytest.mark.parametrize("spec", ["version_handler.py", "version_handler", "version_handler.py:handle"])
def test_handler_naming_a_file_of_the_archive_works(server: dict[str, Any], spec: str) -> None:
    response = call(server, "POST", handler_query(server, spec))
    assert response.status_code == 200, response.text
    assert predict(server, "echo").text == "1.0"
    assert call(server, "DELETE", "/models/echo").status_code == 200


@pytest.mark.parametrize("archive", ["abs_handler", "up_handler", "abs_model_file"])
def test_an_archive_cannot_name_a_python_file_outside_itself(server: dict[str, Any], archive: str) -> None:
    response = call(server, "POST", f"/models?url={archive}.mar&initial_workers=1")
    assert_error(response, 500, f"Failed to start workers for model {archive}", "inside the model archive")
    assert str(server["outside"]) not in response.json()["message"]
    assert not server["mark"].exists()
    assert archive not in registered(server)


# -- item 10: multipart bodies ----------------------------------------------------------------
def form(parts: int, payload: bytes = b"hello") -> tuple[bytes, dict[str, str]]:
    fields = b"".join(
        b'--XyZ\r\nContent-Disposition: form-data; name="f%d"\r\n\r\nv\r\n' % i for i in range(parts - 1))
    body = fields + b'--XyZ\r\nContent-Disposition: form-data; name="data"\r\n\r\n' + payload + b"\r\n--XyZ--\r\n"
    return body, {"Content-Type": "multipart/form-data; boundary=XyZ"}


def test_multipart_parts_are_bounded(server: dict[str, Any]) -> None:
    assert call(server, "POST", "/models?url=form.mar&initial_workers=1").status_code == 200
    try:
        body, headers = form(1000)
        ok = predict(server, "form", data=body, headers=headers)
        assert ok.status_code == 200 and ok.json() == {"data": "hello", "fields": 999}, ok.text
        body, headers = form(1001)
        assert_error(predict(server, "form", data=body, headers=headers), 400, "more than 1000 parts")
        body, headers = form(100_000)  # the 5.6 MB body that held the loop for 30 s
        assert len(body) > 5_000_000
        assert_error(predict(server, "form", data=body, headers=headers), 400, "more than 1000 parts")
        healthy(server)
        files = {"data": ("x.txt", b"from a file", "text/plain")}
        ok = requests.post(f"{server['url']}/predictions/form", files=files, data={"k": "v"}, timeout=60)
        assert ok.status_code == 200 and ok.json() == {"data": "from a file", "fields": 1}, ok.text
    finally:
        assert call(server, "DELETE", "/models/form").status_code == 200


# -- item 16: the archive cache -------------------------------------------------------------------
def test_a_planted_cache_folder_is_not_used(server: dict[str, Any]) -> None:
    planted: Path = server["cache"]
    response = call(server, "POST", "/models?url=planted.mar&initial_workers=1")
    assert response.status_code == 200, response.text
    assert predict(server, "planted").text == "1.0"  # the archive's own handler, not the planted one
    assert not server["mark"].exists()
    digest = sha256(server["root"] / "store" / "planted.mar")
    used = planted.with_name(planted.name + "-1")  # the planted folder is left alone, and unused
    info = used.lstat()
    assert stat.S_ISDIR(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o700 and info.st_uid == os.getuid()
    unpacked = [p for p in used.iterdir() if p.is_dir() and p.name.startswith("planted")]
    assert [p.name for p in unpacked] == [f"planted.mar-{digest}"]
    assert not (unpacked[0] / "evil.py").exists() and (unpacked[0] / "version_handler.py").is_file()
    assert (planted / f"planted.mar-{digest}" / "evil.py").is_file()  # nothing of ours went into it
    assert "Not using the archive cache folder" in server["log"]()
    assert call(server, "DELETE", "/models/planted").status_code == 200


# -- item 16: failure reasons shown to clients --------------------------------------------------------
def test_load_failure_reasons_hold_no_outside_paths_or_tracebacks(server: dict[str, Any]) -> None:
    response = call(server, "POST", "/models?url=failing.mar&initial_workers=1")
    body = assert_error(response, 500, "Failed to start workers for model failing", "failed to initialize",
                        "No such file or directory", "…/model.bin", "ValueError: deep")
    message = body["message"]
    for leak in ("/srv/secret-place", "/opt/private", "Traceback", "line 12", "\n"):
        assert leak not in message, message
    assert "failing" not in registered(server)
    assert "Traceback" in server["log"]()  # the whole story stays in the server's log


# -- a server with small download bounds and a cache changed after unpacking ---------------------
@pytest.fixture(scope="module")
def bounded(tmp_path_factory: pytest.TempPathFactory, remote: Remote) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("bounded")
    store = root / "store"
    store.mkdir()
    mark = root / "owned.txt"
    changed = make_archive(root, "changed", "1.0", store)
    cache = root / "cache"
    # unpack it as the server would, then change a file of the unpacked folder
    from servekit.archive import open_archive

    previous = os.environ.get("SERVEKIT_ARCHIVE_CACHE")
    os.environ["SERVEKIT_ARCHIVE_CACHE"] = str(cache)
    try:
        folder, _ = open_archive(changed)
    finally:
        if previous is None:
            del os.environ["SERVEKIT_ARCHIVE_CACHE"]
        else:
            os.environ["SERVEKIT_ARCHIVE_CACHE"] = previous
    (folder / "version_handler.py").write_text(EVIL.format(mark=str(mark)))
    env = {"SERVEKIT_ARCHIVE_CACHE": str(cache), "SERVEKIT_DOWNLOAD_TIMEOUT": "3",
           "SERVEKIT_MAX_DOWNLOAD_BYTES": "1000000"}
    process, info = start_torchserve(root, remote, env)
    info.update(remote=remote, mark=mark, folder=folder)
    try:
        yield info
    finally:
        process.stop()


def test_a_download_is_bounded_in_time(bounded: dict[str, Any]) -> None:
    remote: Remote = bounded["remote"]
    response = call(bounded, "POST", f"/models?url={remote.url}/allowed/forever.mar")
    assert_error(response, 400, "took longer than 3 s")
    assert registered(bounded) == []
    healthy(bounded)


def test_a_download_is_bounded_in_size(bounded: dict[str, Any]) -> None:
    remote: Remote = bounded["remote"]
    response = call(bounded, "POST", f"/models?url={remote.url}/allowed/huge.mar")
    assert_error(response, 400, "larger than 1000000 bytes")
    assert registered(bounded) == []
    assert not (bounded["root"] / "store" / "huge.mar").exists()


def test_an_unpacked_folder_changed_since_is_unpacked_again(bounded: dict[str, Any]) -> None:
    response = call(bounded, "POST", "/models?url=changed.mar&initial_workers=1")
    assert response.status_code == 200, response.text
    assert predict(bounded, "changed").text == "1.0"
    assert not bounded["mark"].exists()
    assert "owned" not in (bounded["folder"] / "version_handler.py").read_text()


# -- item 16: model uris outside the repository -------------------------------------------------
def test_a_model_uri_outside_the_repository_is_refused(tmp_path: Path) -> None:
    joblib = pytest.importorskip("joblib")
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression().fit([[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1])
    repo, outside = tmp_path / "repo", tmp_path / "outside"
    for folder in (repo / "inside", repo / "up", repo / "absolute", repo / "linked", outside):
        folder.mkdir(parents=True)
    joblib.dump(model, repo / "inside" / "model.joblib")
    joblib.dump(model, outside / "model.joblib")
    (repo / "up" / "model-settings.json").write_text(json.dumps(
        {"name": "up", "implementation": "sklearn", "parameters": {"uri": "../../outside/model.joblib"}}))
    (repo / "absolute" / "model-settings.json").write_text(json.dumps(
        {"name": "absolute", "implementation": "sklearn", "parameters": {"uri": str(outside / "model.joblib")}}))
    (repo / "linked" / "model.joblib").symlink_to(outside / "model.joblib")
    with ServerProcess(["serve", str(repo)], cwd=tmp_path) as process:
        index = requests.post(f"{process.url}/v2/repository/index", json={}, timeout=30)
        assert index.status_code == 200
        rows = {row["name"]: row for row in index.json()}
        assert rows["inside"]["state"] == "READY"
        for name in ("up", "absolute", "linked"):
            assert rows[name]["state"] == "UNAVAILABLE", rows[name]
            assert "resolves outside the model repository" in rows[name]["reason"], rows[name]
            assert str(tmp_path) not in rows[name]["reason"], rows[name]
            infer = requests.post(f"{process.url}/v2/models/{name}/infer", timeout=30, json={
                "inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP64", "data": [2.0]}]})
            assert infer.status_code == 503 and "outside the model repository" in infer.json()["error"]
        ok = requests.post(f"{process.url}/v2/models/inside/infer", timeout=30, json={
            "inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP64", "data": [3.0]}]})
        assert ok.status_code == 200 and ok.json()["outputs"][0]["data"] == [1], ok.text


# -- the cache folder's checks, for cases a test cannot plant as another user ------------------------
@pytest.fixture
def temp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.delenv("SERVEKIT_ARCHIVE_CACHE", raising=False)
    return tmp_path


def test_a_cache_folder_owned_by_another_user_is_not_used(temp_dir: Path) -> None:
    from servekit.archive.reader import cache_root

    if os.getuid() != 0:
        pytest.skip("making a folder owned by another user needs root")
    planted = temp_dir / f"servekit-archives-{os.getuid()}"
    planted.mkdir(mode=0o700)
    os.chown(planted, 65534, 65534)
    root = cache_root()
    assert root == planted.with_name(planted.name + "-1")
    assert root.lstat().st_uid == os.getuid() and stat.S_IMODE(root.lstat().st_mode) == 0o700
    assert planted.lstat().st_uid == 65534


def test_a_cache_folder_that_is_a_link_or_open_is_not_used(temp_dir: Path) -> None:
    from servekit.archive.reader import cache_root
    from servekit.errors import ModelLoadError

    elsewhere = temp_dir / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    base = temp_dir / f"servekit-archives-{os.getuid()}"
    base.symlink_to(elsewhere)
    base.with_name(base.name + "-1").mkdir(mode=0o755)
    root = cache_root()
    assert root == base.with_name(base.name + "-2") and stat.S_IMODE(root.lstat().st_mode) == 0o700
    root.chmod(0o777)  # now every alternative is unusable: refused, not used
    for i in range(3, 8):
        base.with_name(f"{base.name}-{i}").symlink_to(elsewhere)
    with pytest.raises(ModelLoadError, match="private to this user"):
        cache_root()


def test_a_configured_cache_folder_open_to_others_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from servekit.archive.reader import cache_root
    from servekit.errors import ModelLoadError

    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    monkeypatch.setenv("SERVEKIT_ARCHIVE_CACHE", str(shared))
    with pytest.raises(ModelLoadError, match="open to other users"):
        cache_root()
    fresh = tmp_path / "fresh"
    monkeypatch.setenv("SERVEKIT_ARCHIVE_CACHE", str(fresh))
    assert cache_root() == fresh and stat.S_IMODE(fresh.stat().st_mode) == 0o700


def test_reasons_are_cleaned_for_clients(tmp_path: Path) -> None:
    from servekit.repository.discovery import public_reason

    reason = public_reason(
        f"cannot load {tmp_path}/repo/m/model.onnx: Load model from /etc/shadow failed.\n"
        "Traceback (most recent call last):\n  File \"/usr/lib/x.py\", line 3\nUnpicklingError: "
        "invalid load key, '\x89'.",
        [tmp_path / "repo"],
    )
    assert reason == "cannot load m/model.onnx: Load model from …/shadow failed. UnpicklingError: invalid load key."
    assert len(public_reason("x" * 5000)) == 500
