"""TorchServe's management API, each call checked by the inference calls that
follow it; and its safety: token, model-store confinement, allowed_urls."""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import threading
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


def make_archive(folder: Path, name: str, version: str, out: Path) -> Path:
    (folder / "version_handler.py").write_text(VERSION_HANDLER)
    assert main(["archive", "--model-name", name, "--version", version, "--handler",
                 str(folder / "version_handler.py"), "--export-path", str(out), "--force"]) == 0
    return out / f"{name}.mar"


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A plain HTTP server on 127.0.0.1 holding archives, for URL registration."""
    folder = tmp_path_factory.mktemp("remote")
    (folder / "allowed").mkdir()
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(folder))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", folder
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, remote: tuple[str, Path]) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("management")
    store = root / "store"
    store.mkdir()
    make_archive(root, "echo", "1.0", store)
    shutil.move(make_archive(root, "echo", "2.0", root), store / "echo-2.mar")
    make_archive(root, "other", "1.0", store)
    (store / "junk.mar").write_bytes(b"this is not a zip")
    outside = root / "outside"
    outside.mkdir()
    make_archive(root, "secret", "1.0", outside)
    base_url, remote_folder = remote
    make_archive(root, "remote_echo", "3.0", remote_folder / "allowed")
    management = free_port()
    process = ServerProcess(
        ["serve", "--model-store", str(store), "--management-port", str(management),
         "--allowed-urls", f"{base_url.replace('.', '[.]')}/allowed/.*"],
        cwd=root,
    )
    with process:
        key = json.loads((root / "key_file.json").read_text())["management"]["key"]
        yield {"url": process.url, "mgmt": f"http://127.0.0.1:{management}", "key": key,
               "metrics": f"http://127.0.0.1:{process.metrics_port}/metrics",
               "remote": base_url, "root": root, "log": process.log}


def call(server: dict[str, Any], method: str, path: str, token: bool = True) -> requests.Response:
    headers = {"Authorization": f"Bearer {server['key']}"} if token else {}
    return requests.request(method, server["mgmt"] + path, headers=headers, timeout=60)


def predict(server: dict[str, Any], path: str) -> requests.Response:
    return requests.post(f"{server['url']}/predictions/{path}", data=b"x", timeout=30)


def assert_error(response: requests.Response, code: int, text: str) -> None:
    body = response.json()
    assert response.status_code == code and set(body) == {"code", "type", "message"}, body
    assert body["code"] == code and text in body["message"], body


def test_lifecycle_register_scale_default_unregister(server: dict[str, Any]) -> None:
    assert call(server, "GET", "/models").json() == {"models": []}
    assert "key_file.json" in server["log"]()
    registered = call(server, "POST", "/models?url=echo.mar&initial_workers=1")
    assert registered.status_code == 200
    assert registered.json() == {"status": 'Model "echo" Version: 1.0 registered with 1 initial workers'}
    assert predict(server, "echo").text == "1.0"
    assert_error(call(server, "POST", "/models?url=echo.mar"), 409, "already registered")

    second = call(server, "POST", "/models?url=echo-2.mar&model_name=echo&initial_workers=1")
    assert second.status_code == 200, second.text
    assert predict(server, "echo").text == "1.0"  # the first registered stays the default
    assert predict(server, "echo/2.0").text == "2.0"
    assert call(server, "PUT", "/models/echo/2.0/set-default").status_code == 200
    assert predict(server, "echo").text == "2.0"

    assert call(server, "PUT", "/models/echo/2.0?min_worker=0").status_code == 202
    assert_error(predict(server, "echo"), 503, "0 workers")
    assert predict(server, "echo/1.0").text == "1.0"
    scaled = call(server, "PUT", "/models/echo?min_worker=2&synchronous=true")
    assert scaled.json() == {"status": "Workers scaled to 2 for model: echo, version: 2.0"}
    assert predict(server, "echo").text == "2.0"
    described = call(server, "GET", "/models/echo/all").json()
    assert [(d["modelVersion"], d["minWorkers"], len(d["workers"])) for d in described] == [
        ("1.0", 1, 1), ("2.0", 2, 2)]

    assert call(server, "POST", "/models?url=other.mar").json()["status"].endswith(
        "Use scale workers API to add workers for the model.")
    assert_error(predict(server, "other"), 503, "0 workers")  # TorchServe's default: no workers
    page = call(server, "GET", "/models?limit=1").json()
    assert page == {"models": [{"modelName": "echo", "modelUrl": "echo.mar"}], "nextPageToken": "1"}
    assert call(server, "GET", "/models?limit=1&next_page_token=1").json() == {
        "models": [{"modelName": "other", "modelUrl": "other.mar"}]}

    assert_error(call(server, "DELETE", "/models/echo"), 409, "default version")
    assert call(server, "DELETE", "/models/echo/1.0").json() == {"status": 'Model "echo" unregistered'}
    assert_error(predict(server, "echo/1.0"), 404, "1.0")
    assert predict(server, "echo").text == "2.0"
    assert call(server, "DELETE", "/models/echo").status_code == 200
    assert_error(predict(server, "echo"), 404, "echo")
    assert call(server, "DELETE", "/models/other").status_code == 200


def test_missing_or_wrong_token_is_refused(server: dict[str, Any]) -> None:
    assert_error(call(server, "GET", "/models", token=False), 401, "Bearer")
    wrong = requests.get(server["mgmt"] + "/models", headers={"Authorization": "Bearer nope"}, timeout=10)
    assert_error(wrong, 401, "Token Authorization failed")
    assert call(server, "POST", "/models?url=echo.mar", token=False).json()["type"] == "InvalidKeyException"
    assert call(server, "GET", "/models").json() == {"models": []}  # nothing was registered


def test_v2_repository_changes_need_the_management_token(server: dict[str, Any]) -> None:
    """TorchServe mode's token also guards V2's repository API on the inference port."""
    refused = requests.post(f"{server['url']}/v2/repository/models/echo/unload", timeout=30)
    assert refused.status_code == 401 and "Bearer" in refused.json()["error"]


@pytest.mark.parametrize("query", [
    "model_name=q%0Aunload%20echo", "model_name=" + "n" * 200, "model_name=-dash",
])
def test_invalid_model_names_are_refused(server: dict[str, Any], query: str) -> None:
    assert_error(call(server, "POST", f"/models?url=echo.mar&{query}"), 400, "letters, digits")
    assert call(server, "GET", "/models").json() == {"models": []}


@pytest.mark.parametrize("query", [
    "initial_workers=99999999999999999999", "initial_workers=100000", "batch_size=100000",
    "max_batch_delay=99999999999",
])
def test_numbers_from_the_management_api_are_bounded(server: dict[str, Any], query: str) -> None:
    response = call(server, "POST", f"/models?url=echo.mar&{query}")
    assert_error(response, 400, "Parameter")
    assert call(server, "GET", "/models").json() == {"models": []}


def test_scaling_to_a_huge_number_is_refused(server: dict[str, Any]) -> None:
    assert call(server, "POST", "/models?url=other.mar&model_name=scaled").status_code == 200
    assert_error(call(server, "PUT", "/models/scaled?min_worker=99999999999999999999"), 400, "min_worker")
    described = call(server, "GET", "/models/scaled").json()
    assert described[0]["minWorkers"] == 0 and described[0]["workers"] == []
    assert call(server, "DELETE", "/models/scaled").status_code == 200


@pytest.mark.parametrize("url", [
    "../outside/secret.mar", "..%2Foutside%2Fsecret.mar", "sub/echo.mar",
    "/etc/passwd", "file:///etc/passwd", "http://example.com/evil.mar",
])
def test_locations_outside_the_store_are_refused(server: dict[str, Any], url: str) -> None:
    from urllib.parse import quote

    response = call(server, "POST", "/models?url=" + quote(url, safe="%"))
    assert_error(response, 403, "")
    assert call(server, "GET", "/models").json() == {"models": []}


def test_allowed_urls_gate_downloads(server: dict[str, Any]) -> None:
    base = server["remote"]
    tricked = call(server, "POST", f"/models?url={base}/allowed/../remote_echo.mar")
    assert_error(tricked, 403, "..")
    elsewhere = call(server, "POST", f"/models?url={base}/elsewhere/remote_echo.mar")
    assert_error(elsewhere, 403, "allowed_urls")
    ok = call(server, "POST", f"/models?url={base}/allowed/remote_echo.mar&initial_workers=1")
    assert ok.status_code == 200, ok.text
    assert predict(server, "remote_echo").text == "3.0"
    assert call(server, "DELETE", "/models/remote_echo").status_code == 200


def test_broken_archive_is_refused_and_server_keeps_serving(server: dict[str, Any]) -> None:
    response = call(server, "POST", "/models?url=junk.mar")
    assert_error(response, 400, "junk.mar")
    assert_error(call(server, "POST", "/models?url=missing.mar"), 404, "missing.mar")
    assert_error(call(server, "PUT", "/models/nothing?min_worker=1"), 404, "nothing")
    assert requests.get(f"{server['url']}/ping", timeout=10).json() == {"status": "Healthy"}


# -- issue 12: parameters read as TorchServe reads them (its Postman collection's cases) ---------
def test_parameters_that_are_no_integers_mean_the_default(server: dict[str, Any]) -> None:
    """TorchServe reads `batch_size=dd`, `max_batch_delay=junk`, `synchronous=-1` as
    their defaults and a negative `initial_workers` as none."""
    response = call(server, "POST", "/models?url=echo.mar&batch_size=dd&max_batch_delay=junk"
                                    "&initial_workers=-1&synchronous=-1")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": 'Model "echo" Version: 1.0 registered with 0 initial workers. '
                                         "Use scale workers API to add workers for the model."}
    described = call(server, "GET", "/models/echo").json()[0]
    assert (described["batchSize"], described["maxBatchDelay"], described["minWorkers"]) == (1, 100, 0)
    listed = call(server, "GET", "/models?limit=-1&next_page_token=-1")
    assert listed.json() == {"models": [{"modelName": "echo", "modelUrl": "echo.mar"}]}
    assert call(server, "GET", "/models?limit=&next_page_token=").json() == listed.json()
    scaled = call(server, "PUT", "/models/echo?min_worker=nan&synchronous=nan")
    assert scaled.status_code == 202 and scaled.json() == {"status": "Processing worker updates..."}
    assert call(server, "DELETE", "/models/echo/?synchronous=nan").json() == {"status": 'Model "echo" unregistered'}
    assert call(server, "GET", "/models").json() == {"models": []}


def test_missing_empty_url_and_unknown_runtime(server: dict[str, Any]) -> None:
    assert_error(call(server, "POST", "/models"), 400, "Parameter url is required")
    assert_error(call(server, "POST", "/models?url=&model_name=echo"), 404, "url parameter is empty")
    refused = call(server, "POST", "/models?url=echo.mar&runtime=python4")
    assert_error(refused, 400, "Invalid RuntimeType value: python4")
    assert refused.json()["type"] == "BadRequestException"
    assert call(server, "GET", "/models").json() == {"models": []}
    ok = call(server, "POST", "/models?url=echo.mar&runtime=python3")
    assert ok.status_code == 200, ok.text
    assert call(server, "DELETE", "/models/echo").status_code == 200


def test_worker_counts_as_torchserve_checks_them(server: dict[str, Any]) -> None:
    assert call(server, "POST", "/models?url=echo.mar&initial_workers=1").status_code == 200
    try:
        assert_error(call(server, "PUT", "/models/echo?min_worker=2&max_worker=1"), 400,
                     "max_worker cannot be less than min_worker")
        assert_error(call(server, "PUT", "/models/echo?max_worker=-1"), 400, "max_worker cannot be less")
        negative = call(server, "PUT", "/models/echo?min_worker=-1")
        assert_error(negative, 500, "Failed to start workers for model echo")
        assert negative.json()["type"] == "InternalServerException"
        assert predict(server, "echo").text == "1.0"  # still served by its worker
        assert call(server, "PUT", "/models/echo/?min_worker=1&synchronous=true").status_code == 200
        assert call(server, "GET", "/models/echo/").json()[0]["minWorkers"] == 1
    finally:
        assert call(server, "DELETE", "/models/echo/").status_code == 200


def test_a_url_naming_an_archive_the_store_holds_is_refused(server: dict[str, Any]) -> None:
    """TorchServe refuses to download over an archive of the same name (500)."""
    base, folder = server["remote"], server["root"]
    response = call(server, "POST", f"/models?url={base}/allowed/echo.mar")
    assert_error(response, 500, "Model file already exists echo.mar")
    assert response.json()["type"] == "InternalServerException"
    assert (folder / "store" / "echo.mar").is_file()
    assert call(server, "GET", "/models").json() == {"models": []}


def test_startup_timeout_bounds_the_first_load(server: dict[str, Any]) -> None:
    late = call(server, "POST", "/models?url=echo.mar&initial_workers=1&startup_timeout=0")
    assert_error(late, 500, "startup_timeout=0")
    assert call(server, "GET", "/models").json() == {"models": []}  # not left half-registered
    # with no worker to start, there is nothing to time
    assert call(server, "POST", "/models?url=echo.mar&startup_timeout=0").status_code == 200
    assert call(server, "DELETE", "/models/echo").status_code == 200


def test_a_handler_is_started_with_the_first_worker(server: dict[str, Any]) -> None:
    """Registered with no workers, a model whose handler would fail registers (as
    in TorchServe); scaling it up starts the handler and reports the failure."""
    registered = call(server, "POST", "/models?url=echo.mar&handler=invalidHandler")
    assert registered.status_code == 200, registered.text
    assert_error(predict(server, "echo"), 503, "0 workers")
    failed = call(server, "PUT", "/models/echo?min_worker=1&synchronous=true")
    assert_error(failed, 500, "Failed to start workers for model echo version: 1.0")
    assert "invalidHandler" in failed.json()["message"] and failed.json()["type"] == "InternalServerException"
    described = call(server, "GET", "/models/echo").json()[0]
    assert (described["minWorkers"], described["workers"]) == (0, [])
    assert_error(predict(server, "echo"), 503, "0 workers")
    assert call(server, "DELETE", "/models/echo").status_code == 200
    # the archive's own handler starts when the model is scaled up
    assert call(server, "POST", "/models?url=echo.mar").status_code == 200
    started = call(server, "PUT", "/models/echo?min_worker=1&synchronous=true")
    assert started.json() == {"status": "Workers scaled to 1 for model: echo, version: 1.0"}
    assert predict(server, "echo").text == "1.0"
    assert call(server, "DELETE", "/models/echo").status_code == 200


def test_torchserve_metrics_on_the_metrics_port(server: dict[str, Any]) -> None:
    """TorchServe's names, labels and text form (what its Postman collection matches),
    beside servekit's own."""
    import re
    import socket

    def value(text: str, line_start: str) -> float:
        found = [line for line in text.splitlines() if line.startswith(line_start)]
        return float(found[0].rsplit(" ", 1)[1]) if found else 0.0

    host = socket.gethostname()
    before = requests.get(server["metrics"], timeout=10).text
    assert call(server, "POST", "/models?url=echo.mar&initial_workers=1").status_code == 200
    try:
        for _ in range(3):
            assert predict(server, "echo").text == "1.0"
        assert predict(server, "echo/1.0").text == "1.0"
        assert predict(server, "nothing").status_code == 404
        text = requests.get(server["metrics"], timeout=10).text
    finally:
        assert call(server, "DELETE", "/models/echo").status_code == 200
    assert re.search(r'.*Requests2XX\{Level="Host",Hostname=".*",\} \d+\.\d+.*', text), text
    assert "# TYPE Requests2XX counter" in text and "# TYPE ts_inference_requests_total counter" in text
    assert value(text, "Requests2XX{") - value(before, "Requests2XX{") == 5  # register, 4 predictions
    assert value(text, "Requests4XX{") - value(before, "Requests4XX{") == 1
    labels = f'model_name="echo",model_version="default",hostname="{host}",'
    requests_line = f"ts_inference_requests_total{{{labels}}}"
    assert value(text, requests_line) - value(before, requests_line) == 3
    versioned = f"ts_inference_requests_total{{{labels}}}".replace('"default"', '"1.0"')
    assert value(text, versioned) - value(before, versioned) == 1
    latency = f"ts_inference_latency_microseconds{{{labels}}}"
    assert value(text, latency) > value(before, latency)
    assert f"ts_queue_latency_microseconds{{{labels}}}" in text
    own = 'servekit_model_requests_total{model="echo",protocol="torchserve",version="1.0"}'
    assert value(text, own) - value(before, own) == 4


# -- issue 12: key_file.json as TorchServe writes it, the /token API, the inference key -------------
def test_key_file_holds_three_keys_and_the_token_api_replaces_them(server: dict[str, Any]) -> None:
    import datetime as dt
    import os
    import stat

    path = server["root"] / "key_file.json"
    keys = json.loads(path.read_text())
    assert set(keys) == {"management", "inference", "API"} and set(keys["API"]) == {"key"}
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    for kind in ("management", "inference"):
        expires = dt.datetime.fromisoformat(keys[kind]["expiration time"].replace("Z", "+00:00"))
        assert keys[kind]["expiration time"].endswith("Z")
        assert dt.timedelta(minutes=55) < expires - dt.datetime.now(dt.UTC) <= dt.timedelta(minutes=60)
    assert len({keys[k]["key"] for k in ("management", "inference", "API")}) == 3

    def with_key(method: str, path_: str, key: str) -> requests.Response:
        return requests.request(method, server["mgmt"] + path_, headers={"Authorization": f"Bearer {key}"},
                                timeout=30)

    assert_error(with_key("GET", "/models", keys["inference"]["key"]), 401, "Token Authorization failed")
    assert_error(with_key("GET", "/models", keys["API"]["key"]), 401, "Token Authorization failed")
    assert_error(with_key("GET", "/token?type=management", keys["management"]["key"]), 401, "API key")
    assert_error(with_key("GET", "/token?type=bogus", keys["API"]["key"]), 400, "management or inference")
    # predictions need no key unless token authorization was switched on explicitly
    assert predict(server, "nothing").status_code == 404

    renewed = with_key("GET", "/token?type=management", keys["API"]["key"])
    assert renewed.status_code == 200, renewed.text
    new = json.loads(path.read_text())
    assert new["management"]["key"] != keys["management"]["key"]
    assert (new["inference"], new["API"]) == (keys["inference"], keys["API"])
    assert_error(with_key("GET", "/models", keys["management"]["key"]), 401, "Token Authorization failed")
    assert with_key("GET", "/models", new["management"]["key"]).json() == {"models": []}
    refused = requests.post(f"{server['url']}/v2/repository/models/echo/load",
                            headers={"Authorization": f"Bearer {keys['management']['key']}"}, timeout=30)
    assert refused.status_code == 401  # every port's management calls take the current key
    server["key"] = new["management"]["key"]  # the other tests of this module go on with it


@pytest.fixture(scope="module")
def tokens_on(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Token authorization switched on explicitly, as TorchServe 0.11+ has it:
    predictions need the inference key; and one server whose keys have expired."""
    root = tmp_path_factory.mktemp("tokens")
    store = root / "store"
    store.mkdir()
    make_archive(root, "echo", "1.0", store)
    management = free_port()
    (root / "config.properties").write_text("disable_token_authorization=false\n")
    with ServerProcess(["serve", "--model-store", str(store), "--models", "echo=echo.mar",
                        "--management-port", str(management), "--ts-config", "config.properties"],
                       cwd=root) as process:
        yield {"url": process.url, "mgmt": f"http://127.0.0.1:{management}",
               "keys": json.loads((root / "key_file.json").read_text()), "root": root}


def test_predictions_need_the_inference_key_when_token_authorization_is_on(tokens_on: dict[str, Any]) -> None:
    keys = tokens_on["keys"]

    def post(key: str | None) -> requests.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return requests.post(f"{tokens_on['url']}/predictions/echo", data=b"x", headers=headers, timeout=30)

    for key in (None, keys["management"]["key"], keys["API"]["key"], "nope"):
        refused = post(key)
        assert_error(refused, 401, "Token Authorization failed")
        assert refused.json()["type"] == "InvalidKeyException" and "inference key" in refused.json()["message"]
    assert post(keys["inference"]["key"]).text == "1.0"
    assert requests.get(f"{tokens_on['url']}/ping", timeout=10).json() == {"status": "Healthy"}
    renewed = requests.get(f"{tokens_on['mgmt']}/token?type=inference",
                           headers={"Authorization": f"Bearer {keys['API']['key']}"}, timeout=30)
    assert renewed.status_code == 200, renewed.text
    new = json.loads((tokens_on["root"] / "key_file.json").read_text())["inference"]["key"]
    assert_error(post(keys["inference"]["key"]), 401, "Token Authorization failed")
    assert post(new).text == "1.0"


def test_expired_keys_are_refused(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    make_archive(tmp_path, "echo", "1.0", store)
    management = free_port()
    # keys made at start expire 6 ms later, long before the server answers its first call
    (tmp_path / "config.properties").write_text("disable_token_authorization=false\ntoken_expiration_min=0.0001\n")
    with ServerProcess(["serve", "--model-store", str(store), "--models", "echo=echo.mar",
                        "--management-port", str(management), "--ts-config", "config.properties"],
                       cwd=tmp_path) as process:
        keys = json.loads((tmp_path / "key_file.json").read_text())
        expired = requests.get(f"http://127.0.0.1:{management}/models",
                               headers={"Authorization": f"Bearer {keys['management']['key']}"}, timeout=30)
        assert_error(expired, 401, "Token Authorization failed")
        predicted = requests.post(f"{process.url}/predictions/echo", data=b"x",
                                  headers={"Authorization": f"Bearer {keys['inference']['key']}"}, timeout=30)
        assert_error(predicted, 401, "Token Authorization failed")
        # the API key does not expire: it still makes new keys
        renewed = requests.get(f"http://127.0.0.1:{management}/token?type=management",
                               headers={"Authorization": f"Bearer {keys['API']['key']}"}, timeout=30)
        assert renewed.status_code == 200, renewed.text
