"""servekit.Client and servekit.AsyncClient against a real ``servekit serve``
(an echo model written here and a scikit-learn model), over REST JSON, REST
with binary tensors and gRPC; retries and timeouts against a small real HTTP
server of the test's own; ``servekit infer`` as a command."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from servers import ROOT, ServerProcess, free_port
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from servekit import AsyncClient, Client
from servekit.client import errors

TOKEN = "client-test-token"
PROTOCOLS = ["rest", "binary", "grpc"]

ECHO_MODEL = '''
from servekit.runtimes.base import Runtime
from servekit.tensors import Tensor


class Echo(Runtime):
    """Answers every input unchanged, under its own name."""

    def predict(self, request):
        return self.response(request, [Tensor(t.name, t.data, t.datatype) for t in request.inputs])
'''

# every V2 datatype, with the values at the edges of its range
EVERY_DATATYPE: dict[str, np.ndarray] = {
    "BOOL": np.array([[True, False], [False, True]]),
    "UINT8": np.array([0, 7, 255], dtype=np.uint8),
    "UINT16": np.array([0, 65535], dtype=np.uint16),
    "UINT32": np.array([0, 2**32 - 1], dtype=np.uint32),
    "UINT64": np.array([0, 2**64 - 1], dtype=np.uint64),
    "INT8": np.array([-128, 0, 127], dtype=np.int8),
    "INT16": np.array([-(2**15), 2**15 - 1], dtype=np.int16),
    "INT32": np.array([[-(2**31), 1], [2, 2**31 - 1]], dtype=np.int32),
    "INT64": np.array([-(2**63), 2**63 - 1], dtype=np.int64),
    "FP16": np.array([1.5, -2.25, 65504.0], dtype=np.float16),
    "FP32": np.array([[0.1, -3.4e38], [1e-30, 2.0]], dtype=np.float32),
    "FP64": np.array([np.pi, -1e300, 5e-324]),
    "BYTES": np.array([b"plain", "h\u00e9llo \u2603".encode(), b""], dtype=object),
}


def iris_rows() -> np.ndarray:
    X, _ = load_iris(return_X_y=True)
    return np.ascontiguousarray(X[::30])


@pytest.fixture(scope="module")
def iris_model() -> LogisticRegression:
    X, y = load_iris(return_X_y=True)
    return LogisticRegression(max_iter=500).fit(X, y)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, iris_model: LogisticRegression) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("client-models")
    (root / "iris").mkdir()
    joblib.dump(iris_model, root / "iris" / "model.joblib")
    (root / "iris" / "model-settings.json").write_text(
        json.dumps({"name": "iris", "parameters": {"uri": "model.joblib", "version": "1"}}))
    for name, inputs in (("echo", []), ("pair", [{"name": "a", "datatype": "FP32", "shape": [-1]},
                                                  {"name": "b", "datatype": "INT64", "shape": [-1]}])):
        (root / name).mkdir()
        (root / name / "echo_model.py").write_text(ECHO_MODEL)
        (root / name / "model-settings.json").write_text(
            json.dumps({"name": name, "implementation": "echo_model.Echo", "inputs": inputs}))
    with ServerProcess(["serve", str(root), "--management-token", TOKEN]) as proc:
        yield proc


def client_for(server: ServerProcess, protocol: str, **options: Any) -> Client:
    if protocol == "grpc":
        return Client(f"grpc://127.0.0.1:{server.grpc_port}", **options)
    return Client(server.url, protocol=protocol, **options)  # type: ignore[arg-type]


def same(got: np.ndarray, sent: np.ndarray) -> None:
    assert got.shape == sent.shape
    if sent.dtype == object:
        assert got.dtype == object
        assert got.ravel().tolist() == [v if isinstance(v, bytes) else v.encode() for v in sent.ravel()]
    else:
        assert got.dtype == sent.dtype
        np.testing.assert_array_equal(got, sent)


# -- every datatype, three ways -------------------------------------------------------
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_every_datatype_round_trips(server: ServerProcess, protocol: str) -> None:
    inputs = {name.lower(): array for name, array in EVERY_DATATYPE.items()}
    with client_for(server, protocol) as client:
        result = client.infer_result("echo", inputs)
    assert set(result.outputs) == set(inputs)
    for name, array in inputs.items():
        same(result.outputs[name], array)
        assert result.datatypes[name] == name.upper()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_strings_and_raw_bytes(server: ServerProcess, protocol: str) -> None:
    """str objects go as UTF-8 and come back as bytes; bytes that are not
    UTF-8 survive even over JSON (they travel as binary tensors)."""
    text = np.array([["a", "\u00fc"], ["\u2603", ""]], dtype=object)
    raw = np.array([b"\x00\xff\xfe", b"\x80"], dtype=object)
    with client_for(server, protocol) as client:
        out = client.infer("echo", {"text": text, "raw": raw, "unicode": np.array(["x", "yz"])})
    assert out["text"].tolist() == [[b"a", "\u00fc".encode()], ["\u2603".encode(), b""]]
    assert out["raw"].tolist() == [b"\x00\xff\xfe", b"\x80"]
    assert out["unicode"].tolist() == [b"x", b"yz"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_async_client_round_trips(server: ServerProcess, protocol: str) -> None:
    url = f"grpc://127.0.0.1:{server.grpc_port}" if protocol == "grpc" else server.url

    async def calls() -> tuple[Any, ...]:
        async with AsyncClient(url, protocol=protocol) as client:  # type: ignore[arg-type]
            answers = await asyncio.gather(*[client.infer("echo", {"x": np.arange(i + 1, dtype=np.int16)})
                                             for i in range(5)])
            every = await client.infer("echo", {n.lower(): a for n, a in EVERY_DATATYPE.items()})
            iris = await client.infer("iris", iris_rows())
            return (await client.live(), await client.ready(), await client.model_ready("iris"),
                    await client.model_ready("nope"), answers, every, iris, await client.models())

    live, ready, iris_ready, nope_ready, answers, every, iris, models = asyncio.run(calls())
    assert (live, ready, iris_ready, nope_ready) == (True, True, True, False)
    for i, answer in enumerate(answers):
        same(answer["x"], np.arange(i + 1, dtype=np.int16))
    for name, array in EVERY_DATATYPE.items():
        same(every[name.lower()], array)
    assert iris["predict"].ravel().tolist() == [0, 0, 1, 1, 2]
    assert {m["name"] for m in models} == {"echo", "iris", "pair"}


# -- a real model, a bare array ------------------------------------------------------------
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_sklearn_model_with_a_bare_array(server: ServerProcess, protocol: str,
                                         iris_model: LogisticRegression) -> None:
    rows = iris_rows()
    expected = iris_model.predict(rows)
    with client_for(server, protocol) as client:
        bare = client.infer("iris", rows)
        assert client.cached_inputs("iris", None) == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}]
        lists = client.infer("iris", rows.tolist())  # lists take the declared FP64
        named = client.infer("iris", {"input-0": rows.astype(np.float32)})
        result = client.infer_result("iris", rows, model_version="1", outputs=["predict_proba"],
                                     request_id="req-42")
    for answer in (bare, lists, named):
        assert answer["predict"].ravel().tolist() == expected.tolist()
    assert result.model_name == "iris" and result.model_version == "1" and result.id == "req-42"
    assert list(result.outputs) == ["predict_proba"]
    np.testing.assert_allclose(result.outputs["predict_proba"], iris_model.predict_proba(rows), rtol=1e-6)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_health_metadata_and_index(server: ServerProcess, protocol: str) -> None:
    with client_for(server, protocol) as client:
        assert client.live() and client.ready()
        assert client.model_ready("iris") and client.model_ready("iris", "1")
        assert not client.model_ready("iris", "7") and not client.model_ready("nope")
        metadata = client.metadata("pair")
        assert [(t["name"], t["datatype"]) for t in metadata["inputs"]] == [("a", "FP32"), ("b", "INT64")]
        assert client.server_metadata()["name"] == "servekit"
        index = {(m["name"], m["version"]): m["state"] for m in client.models()}
        assert index[("iris", "1")] == "READY" and index[("echo", "")] == "READY"


# -- errors ----------------------------------------------------------------------------------
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_errors_are_typed_and_carry_the_servers_message(server: ServerProcess, protocol: str) -> None:
    with client_for(server, protocol) as client:
        with pytest.raises(errors.ModelNotFound, match="model 'nope' not found") as missing:
            client.infer("nope", {"x": np.zeros(2)})
        assert missing.value.status == 404
        with pytest.raises(errors.ModelNotFound):
            client.infer("iris", iris_rows(), model_version="7")
        with pytest.raises(errors.InvalidInput, match="4 features per row, got 3") as bad:
            client.infer("iris", np.zeros((2, 3)))
        assert bad.value.status == 400 and client.last_attempts == 1  # never retried
        with pytest.raises(errors.ModelNotFound, match="nope"):
            client.metadata("nope")
        # refused before anything is sent
        with pytest.raises(errors.InvalidInput, match="2 inputs \\('a', 'b'\\); pass a dict"):
            client.infer("pair", np.zeros(3))
        with pytest.raises(errors.InvalidInput, match="complex128 has no V2 datatype"):
            client.infer("echo", {"z": np.zeros(2, dtype=complex)})
        with pytest.raises(errors.InvalidInput, match="must hold str or bytes, found dict"):
            client.infer("echo", {"o": np.array([{"a": 1}], dtype=object)})


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_load_and_unload_need_the_token(server: ServerProcess, protocol: str) -> None:
    with client_for(server, protocol) as anonymous, \
            pytest.raises(errors.Unauthorized, match="Token Authorization failed"):
        anonymous.unload("pair")
    with client_for(server, protocol, token=TOKEN) as client:
        client.unload("pair")
        assert not client.model_ready("pair")
        with pytest.raises(errors.ClientError) as gone:
            client.infer("pair", {"a": np.zeros(1, dtype=np.float32)})
        assert isinstance(gone.value, errors.ModelNotFound | errors.ModelNotReady)
        client.load("pair")
        assert client.model_ready("pair")
        same(client.infer("pair", {"a": np.ones(2, dtype=np.float32)})["a"], np.ones(2, dtype=np.float32))


def test_unreachable_server_is_retried_then_named() -> None:
    port = free_port()  # nobody listens there
    with Client(f"http://127.0.0.1:{port}", retries=2, backoff=0.01) as client:
        with pytest.raises(errors.ServerUnreachable, match=f"127.0.0.1:{port}"):
            client.live()
        assert client.last_attempts == 3
        with pytest.raises(errors.ServerUnreachable):
            client.infer("m", {"x": np.zeros(1)})
        assert client.last_attempts == 1  # inference is not idempotent: no retry without the server's word


# -- retries and timeouts against a scripted real HTTP server ---------------------------------
V2_ANSWER = {"model_name": "m", "id": "1", "outputs": [{"name": "y", "shape": [2], "datatype": "INT32", "data": [4, 5]}]}


class Scripted:
    """A real HTTP server on 127.0.0.1 answering from a script: a list of
    (status, headers, body) popped per request, the last one repeated."""

    def __init__(self, script: list[tuple[int, dict[str, str], Any]], delay: float = 0.0) -> None:
        self.script = list(script)
        self.requests: list[tuple[str, str]] = []
        self.bodies: list[tuple[dict[str, str], bytes]] = []
        self.peers: list[tuple[str, int]] = []  # the client's address of each request
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, so that connection reuse shows

            def log_message(self, *args: Any) -> None:
                pass

            def answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                outer.bodies.append(({k.lower(): v for k, v in self.headers.items()}, self.rfile.read(length)))
                outer.requests.append((self.command, self.path))
                outer.peers.append(self.client_address)
                if delay:
                    threading.Event().wait(delay)
                status, headers, body = outer.script.pop(0) if len(outer.script) > 1 else outer.script[0]
                raw = json.dumps(body).encode()
                self.send_response(status)
                for key, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            do_GET = do_POST = answer

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> Scripted:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


OVERLOADED = (503, {"Retry-After": "0"}, {"error": "model 'm' is overloaded: queue full"})


def test_infer_retried_when_the_server_says_retry_after() -> None:
    with Scripted([OVERLOADED, OVERLOADED, (200, {}, V2_ANSWER)]) as fake, Client(fake.url, retries=3) as client:
        out = client.infer("m", {"x": np.zeros(2)})
        assert out["y"].tolist() == [4, 5] and out["y"].dtype == np.int32
        assert client.last_attempts == 3
        assert fake.requests == [("POST", "/v2/models/m/infer")] * 3


def test_infer_retries_are_bounded_and_say_retry_after() -> None:
    busy = (503, {"Retry-After": "0.01"}, {"error": "queue full"})
    with Scripted([busy]) as fake, Client(fake.url, retries=2) as client:
        with pytest.raises(errors.ServerOverloaded, match="queue full") as raised:
            client.infer("m", {"x": np.zeros(2)})
        assert raised.value.retry_after == 0.01 and raised.value.status == 503
        assert len(fake.requests) == 3


def test_infer_not_retried_on_503_without_retry_after_but_gets_are() -> None:
    loading = (503, {}, {"error": "model 'm' is loading"})
    with Scripted([loading, loading, (200, {}, {"name": "m", "inputs": []})]) as fake, \
            Client(fake.url, retries=3, backoff=0.01) as client:
        with pytest.raises(errors.ModelNotReady, match="is loading"):
            client.infer("m", {"x": np.zeros(2)})
        assert len(fake.requests) == 1
        assert client.metadata("m")["name"] == "m"  # 503 (loading) once more, then 200
        assert fake.requests[1:] == [("GET", "/v2/models/m")] * 2


def test_async_infer_retried_when_the_server_says_retry_after() -> None:
    async def call(url: str) -> tuple[dict[str, np.ndarray], int]:
        async with AsyncClient(url, retries=3) as client:
            return await client.infer("m", {"x": np.zeros(2)}), client.last_attempts

    with Scripted([OVERLOADED, (200, {}, V2_ANSWER)]) as fake:
        out, attempts = asyncio.run(call(fake.url))
    assert out["y"].tolist() == [4, 5] and attempts == 2


def test_wire_format_and_connection_reuse() -> None:
    """What the client sends, byte for byte where it matters, on one kept-alive connection."""
    with Scripted([(200, {}, V2_ANSWER)]) as fake:
        with Client(fake.url) as client:
            client.infer("m", {"x": np.array([[1.5, 2.0]], dtype=np.float32), "s": np.array(["a"])},
                         model_version="3", outputs=["y"], parameters={"temperature": 0.5}, request_id="r1")
            client.infer("m", {"x": np.zeros(1, dtype=np.float32)})
        with Client(fake.url, protocol="binary") as client:
            client.infer("m", {"x": np.array([1, 2], dtype=np.int32)}, outputs=["y"])
    assert fake.requests[:2] == [("POST", "/v2/models/m/versions/3/infer"), ("POST", "/v2/models/m/infer")]
    headers, body = fake.bodies[0]
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == {
        "id": "r1", "parameters": {"temperature": 0.5},
        "inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1.5, 2.0]},
                   {"name": "s", "shape": [1], "datatype": "BYTES", "data": ["a"]}],
        "outputs": [{"name": "y"}]}
    assert fake.peers[0] == fake.peers[1]  # the second call reused the first one's connection
    headers, body = fake.bodies[2]
    split = int(headers["inference-header-content-length"])
    assert headers["content-type"] == "application/octet-stream"
    assert json.loads(body[:split]) == {
        "parameters": {"binary_data_output": True},
        "inputs": [{"name": "x", "shape": [2], "datatype": "INT32", "parameters": {"binary_data_size": 8}}],
        "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}
    assert body[split:] == np.array([1, 2], dtype="<i4").tobytes()


def test_read_timeout_is_a_typed_error() -> None:
    with Scripted([(200, {}, V2_ANSWER)], delay=2.0) as fake, Client(fake.url, timeout=0.2, retries=0) as client, \
            pytest.raises(errors.ClientTimeout, match=r"no answer within 0\.2 s"):
        client.infer("m", {"x": np.zeros(2)})


def test_other_servers_error_forms() -> None:
    """FastAPI's {"detail"} (MLServer, KServe) and a plain-text body keep their message."""
    with Scripted([(422, {}, {"detail": [{"msg": "field required"}]}), (500, {}, "boom")]) as fake, \
            Client(fake.url, retries=0) as client:
        with pytest.raises(errors.InvalidInput, match="field required"):
            client.infer("m", {"x": np.zeros(2)})
        with pytest.raises(errors.ServerError, match="boom"):
            client.infer("m", {"x": np.zeros(2)})


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="protocol must be one of rest, binary, grpc"):
        Client("http://127.0.0.1:1", protocol="soap")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unsupported URL scheme 'ftp'"):
        Client("ftp://127.0.0.1:1")
    with pytest.raises(ValueError, match="retries must be between 0 and 20"):
        Client("http://127.0.0.1:1", retries=1000)
    assert Client("127.0.0.1:9000", protocol="grpc").address.host_port == "127.0.0.1:9000"


# -- servekit infer ---------------------------------------------------------------------------
def servekit_infer(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "servekit", "infer", *args], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_cli_infer(server: ServerProcess, protocol: str, iris_model: LogisticRegression, tmp_path: Path) -> None:
    rows = iris_rows()
    url = f"grpc://127.0.0.1:{server.grpc_port}" if protocol == "grpc" else server.url
    done = servekit_infer("iris", "--data", json.dumps(rows.tolist()), "--url", url, "--protocol", protocol)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["model_name"] == "iris"
    assert answer["outputs"]["predict"] == {"datatype": "INT64", "shape": [5, 1],
                                            "data": [[v] for v in iris_model.predict(rows).tolist()]}
    np.save(tmp_path / "rows.npy", rows)
    table = servekit_infer("iris", "--data-file", str(tmp_path / "rows.npy"), "--url", url,
                           "--protocol", protocol, "--output-format", "table")
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines() == ["row  predict (INT64)"] + [
        f"{i}    {v}" for i, v in enumerate(iris_model.predict(rows).tolist())]


def test_cli_infer_named_inputs_v2_bodies_and_errors(server: ServerProcess, tmp_path: Path) -> None:
    body = {"inputs": [{"name": "a", "shape": [2], "datatype": "FP32", "data": [1.5, 2]},
                       {"name": "s", "shape": [1], "datatype": "BYTES", "data": ["hi"]}]}
    (tmp_path / "body.json").write_text(json.dumps(body))
    done = servekit_infer("echo", "--data-file", str(tmp_path / "body.json"), "--url", server.url)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["outputs"] == {"a": {"datatype": "FP32", "shape": [2], "data": [1.5, 2.0]},
                                                  "s": {"datatype": "BYTES", "shape": [1], "data": ["hi"]}}
    proba = servekit_infer("iris", "--data", "[[5.1, 3.5, 1.4, 0.2]]", "--url", server.url,
                           "--output", "predict_proba", "--model-version", "1")
    assert proba.returncode == 0, proba.stderr
    answer = json.loads(proba.stdout)
    assert answer["model_version"] == "1" and list(answer["outputs"]) == ["predict_proba"]
    assert answer["outputs"]["predict_proba"]["shape"] == [1, 3]
    named = servekit_infer("echo", "--data", '{"word": ["x", "y"]}', "--url", server.url, "--output-format", "table")
    assert named.stdout.splitlines() == ["row  word (BYTES)", "0    x", "1    y"]

    missing = servekit_infer("nope", "--data", "[1]", "--url", server.url)
    assert missing.returncode == 1
    assert missing.stderr.strip() == ("servekit infer: ModelNotFound: model 'nope' not found "
                                      "(models served: echo, iris, pair) (HTTP 404)")
    broken = servekit_infer("iris", "--data", "[[1, 2", "--url", server.url)
    assert broken.returncode == 2 and "--data is not valid JSON" in broken.stderr
    wrong_file = servekit_infer("iris", "--data-file", str(tmp_path / "body.csv"), "--url", server.url)
    assert wrong_file.returncode == 2 and "is not a file" in wrong_file.stderr


# -- against MLServer (opt-in: SERVEKIT_TEST_MLSERVER=1 and MLServer 1.7 in benchmarks/.venv-mlserver) --
MLSERVER = ROOT / "benchmarks" / ".venv-mlserver" / "bin" / "mlserver"


@pytest.mark.skipif(os.environ.get("SERVEKIT_TEST_MLSERVER") != "1" or not MLSERVER.exists(),
                    reason="opt-in: SERVEKIT_TEST_MLSERVER=1 with MLServer 1.7 in benchmarks/.venv-mlserver")
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_against_mlserver(tmp_path: Path, protocol: str, iris_model: LogisticRegression) -> None:
    import time

    import requests

    joblib.dump(iris_model, tmp_path / "model.joblib")
    (tmp_path / "model-settings.json").write_text(json.dumps(
        {"name": "iris", "implementation": "mlserver_sklearn.SKLearnModel",
         "parameters": {"uri": "./model.joblib", "version": "v1"}}))
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    (tmp_path / "settings.json").write_text(json.dumps(
        {"http_port": http_port, "grpc_port": grpc_port, "metrics_port": metrics_port, "parallel_workers": 0}))
    proc = subprocess.Popen([str(MLSERVER), "start", str(tmp_path)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        for _ in range(600):
            try:
                if requests.get(f"http://127.0.0.1:{http_port}/v2/models/iris/ready", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.2)
        url = f"grpc://127.0.0.1:{grpc_port}" if protocol == "grpc" else f"http://127.0.0.1:{http_port}"
        rows = iris_rows()
        with Client(url, protocol=protocol) as client:  # type: ignore[arg-type]
            assert client.live() and client.ready() and client.model_ready("iris")
            assert not client.model_ready("nope")
            if protocol == "binary":
                # MLServer 1.7 has no binary tensor extension: its own 500, passed on with its text
                with pytest.raises(errors.ServerError, match="valid dictionary"):
                    client.infer("iris", {"input-0": rows})
                return
            assert client.metadata("iris")["name"] == "iris"
            assert {m["name"] for m in client.models()} == {"iris"}
            out = client.infer("iris", {"input-0": rows})
            assert out["predict"].ravel().tolist() == iris_model.predict(rows).tolist()
            bare = client.infer("iris", rows)  # MLServer's metadata names no inputs: sent as input-0
            assert bare["predict"].ravel().tolist() == iris_model.predict(rows).tolist()
            with pytest.raises(errors.ModelNotFound, match="nope"):
                client.infer("nope", {"input-0": rows})
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
