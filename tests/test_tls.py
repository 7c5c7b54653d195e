"""TLS on every port of a real servekit: a CA and certificates for 127.0.0.1
and localhost made at test time, and clients that verify them (requests,
tritonclient, grpc, curl); V2 REST and gRPC, TF Serving REST and gRPC,
metrics, TorchServe's config.properties, client certificates, the uvicorn
fallback, and the mistakes that stop a start."""

from __future__ import annotations

import datetime
import ipaddress
import json
import shutil
import socket
import ssl
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import joblib
import numpy as np
import pytest
import requests
from servers import SERVEKIT, ServerProcess, free_port
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from servekit.protocols.generated.tfserving import tensorflow_serving_pb2 as tfspb

x509 = pytest.importorskip("cryptography.x509")
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

TIMEOUT = 30
X, Y = load_iris(return_X_y=True)
ROWS = X[[0, 60, 120]]


# -- a CA and its certificates, made here ---------------------------------------------
def _name(common: str) -> Any:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _pem_key(key: Any) -> bytes:
    return bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()))


def _certificate(subject: str, key: Any, issuer: Any, issuer_key: Any, *, ca: bool = False,
                 hosts: tuple[str, ...] = ()) -> Any:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if hosts:
        names = [x509.DNSName(h) if h == "localhost" else x509.IPAddress(ipaddress.ip_address(h)) for h in hosts]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


class Pki:
    """ca.pem signs cert.pem (127.0.0.1, localhost; key.pem) and client.pem
    (client-key.pem); other-ca.pem is a CA nobody here trusts, other-key.pem a
    key of no certificate here."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = _certificate("servekit test CA", ca_key, _name("servekit test CA"), ca_key, ca=True)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _certificate("localhost", key, ca.subject, ca_key, hosts=("127.0.0.1", "localhost"))
        client_key = ec.generate_private_key(ec.SECP256R1())
        client = _certificate("a client", client_key, ca.subject, ca_key)
        other_key = ec.generate_private_key(ec.SECP256R1())
        other = _certificate("another CA", other_key, _name("another CA"), other_key, ca=True)
        pem = serialization.Encoding.PEM
        files = {
            "ca.pem": ca.public_bytes(pem), "cert.pem": cert.public_bytes(pem), "key.pem": _pem_key(key),
            "client.pem": client.public_bytes(pem), "client-key.pem": _pem_key(client_key),
            "other-ca.pem": other.public_bytes(pem), "other-key.pem": _pem_key(other_key),
            "cert-and-key.pem": cert.public_bytes(pem) + _pem_key(key),
        }
        for name, data in files.items():
            (folder / name).write_bytes(data)

    def __getattr__(self, name: str) -> str:
        path = self.folder / (name.replace("_", "-") + ".pem")
        if not path.is_file():
            raise AttributeError(name)
        return str(path)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tls-models")
    (root / "iris").mkdir()
    joblib.dump(LogisticRegression(max_iter=500).fit(X, Y), root / "iris" / "model.joblib")
    (root / "iris" / "model-settings.json").write_text(json.dumps(
        {"name": "iris", "implementation": "sklearn", "parameters": {"uri": "model.joblib", "version": "1"}}))
    return root


@pytest.fixture(scope="module")
def expected(repository: Path) -> list[int]:
    return [int(v) for v in joblib.load(repository / "iris" / "model.joblib").predict(ROWS)]


class TlsServer(ServerProcess):
    """servekit with TLS on every port, V2 and TF Serving (REST on ``rest_port``,
    gRPC on ``tf_grpc_port``), two workers sharing the ports."""

    def __init__(self, args: list[str], pki: Pki, **kwargs: Any) -> None:
        self.rest_port, self.tf_grpc_port = free_port(), free_port()
        super().__init__([*args, f"--rest_api_port={self.rest_port}", f"--port={self.tf_grpc_port}"],
                         scheme="https", verify=pki.ca, **kwargs)


@pytest.fixture(scope="module")
def server(repository: Path, pki: Pki) -> Iterator[TlsServer]:
    args = ["serve", str(repository), "--ssl-certfile", pki.cert, "--ssl-keyfile", pki.key]
    process = TlsServer(args, pki, workers=2)
    with process:
        yield process


def v2_body() -> dict[str, Any]:
    return {"inputs": [{"name": "x", "shape": list(ROWS.shape), "datatype": "FP64", "data": ROWS.ravel().tolist()}]}


def infer_v2(url: str, verify: str | bool, **kwargs: Any) -> list[int]:
    response = requests.post(f"{url}/v2/models/iris/infer", json=v2_body(), verify=verify, timeout=TIMEOUT, **kwargs)
    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    return [int(v) for v in output["data"]]


# -- every port of one server -------------------------------------------------------------
def test_v2_rest_answers_over_verified_tls(server: TlsServer, pki: Pki, expected: list[int]) -> None:
    assert server.url.startswith("https://")
    assert infer_v2(server.url, pki.ca) == expected
    assert infer_v2(f"https://localhost:{server.http_port}", pki.ca) == expected  # the other name in the certificate
    ready = requests.get(f"{server.url}/v2/health/ready", verify=pki.ca, timeout=TIMEOUT)
    assert ready.json() == {"ready": True}


def test_metrics_and_tf_serving_rest_ports_serve_tls(server: TlsServer, pki: Pki, expected: list[int]) -> None:
    rest = requests.post(f"https://127.0.0.1:{server.rest_port}/v1/models/iris:predict",
                         json={"instances": ROWS.tolist()}, verify=pki.ca, timeout=TIMEOUT)
    assert rest.status_code == 200, rest.text
    assert np.ravel(rest.json()["predictions"]).astype(int).tolist() == expected
    metrics = requests.get(f"https://127.0.0.1:{server.metrics_port}/metrics", verify=pki.ca, timeout=TIMEOUT)
    assert metrics.status_code == 200 and 'protocol="tfserving' in metrics.text


def test_v2_grpc_with_tritonclient_ssl(server: TlsServer, pki: Pki, expected: list[int]) -> None:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}", ssl=True, root_certificates=pki.ca)
    try:
        assert client.is_server_ready()
        tensor = grpcclient.InferInput("x", list(ROWS.shape), "FP64")
        tensor.set_data_from_numpy(ROWS.astype(np.float64))
        result = client.infer("iris", [tensor])
        assert result.as_numpy("predict").ravel().tolist() == expected
    finally:
        client.close()


def tf_predict(channel: grpc.Channel) -> list[int]:
    request = tfspb.PredictRequest()
    request.model_spec.name = "iris"
    tensor = request.inputs["x"]
    tensor.dtype = 2  # DT_DOUBLE
    for size in ROWS.shape:
        tensor.tensor_shape.dim.add(size=size)
    tensor.double_val.extend(ROWS.ravel().tolist())
    call = channel.unary_unary("/tensorflow.serving.PredictionService/Predict",
                               request_serializer=tfspb.PredictRequest.SerializeToString,
                               response_deserializer=tfspb.PredictResponse.FromString)
    response = call(request, timeout=TIMEOUT)
    (output,) = response.outputs.values()
    assert output.dtype == 9  # DT_INT64
    values = output.int64_val or np.frombuffer(output.tensor_content, dtype="<i8")
    return [int(v) for v in values]


def test_tf_serving_grpc_over_a_secure_channel(server: TlsServer, pki: Pki, expected: list[int]) -> None:
    credentials = grpc.ssl_channel_credentials(root_certificates=Path(pki.ca).read_bytes())
    with grpc.secure_channel(f"127.0.0.1:{server.tf_grpc_port}", credentials) as channel:
        assert tf_predict(channel) == expected


def test_startup_lines_say_https_and_tls(server: TlsServer) -> None:
    log = server.log()
    assert f"HTTP server (V2 REST) listening on https://127.0.0.1:{server.http_port}" in log
    assert f"Metrics server listening on https://127.0.0.1:{server.metrics_port}/metrics" in log
    assert f"TF Serving REST API listening on https://127.0.0.1:{server.rest_port}" in log
    assert f"gRPC server (V2) listening on 127.0.0.1:{server.grpc_port} (TLS)" in log
    assert f"TF Serving gRPC API listening on 127.0.0.1:{server.tf_grpc_port} (TLS)" in log
    assert "http://" not in log


def test_plain_clients_on_tls_ports_fail_cleanly(server: TlsServer, pki: Pki, expected: list[int]) -> None:
    # plain HTTP to an HTTPS port: a plain 400 that says what to do, not an empty reply
    for port in (server.http_port, server.metrics_port, server.rest_port):
        plain = requests.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=TIMEOUT)
        assert plain.status_code == 400
        assert plain.text == "this port speaks HTTPS: call it with https://, not http://\n"
        assert plain.headers["connection"] == "close"
    # a client that connects and sends nothing holds no one up
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=TIMEOUT):
        assert infer_v2(server.url, pki.ca) == expected
    with grpc.insecure_channel(f"127.0.0.1:{server.tf_grpc_port}") as channel, pytest.raises(grpc.RpcError) as error:
        tf_predict(channel)
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    # and the server still serves its TLS clients
    assert infer_v2(server.url, pki.ca) == expected
    assert "Traceback" not in server.log()


def test_clients_that_do_not_trust_the_ca_are_refused(server: TlsServer, pki: Pki) -> None:
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{server.url}/v2/health/ready", verify=pki.other_ca, timeout=TIMEOUT)
    with pytest.raises(requests.exceptions.SSLError):  # the system's CAs do not know the test CA either
        requests.get(f"{server.url}/v2/health/ready", timeout=TIMEOUT)
    credentials = grpc.ssl_channel_credentials(root_certificates=Path(pki.other_ca).read_bytes())
    with grpc.secure_channel(f"127.0.0.1:{server.grpc_port}", credentials) as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ServerLive")
        with pytest.raises(grpc.RpcError) as error:
            call(b"", timeout=TIMEOUT)
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE


# -- the certificate and key files: every mistake stops the start ---------------------------
def start_fails(args: list[str], cwd: Path | None = None) -> str:
    done = subprocess.run([*SERVEKIT, "serve", *args, "--http-port", str(free_port()), "--grpc-port",
                           str(free_port()), "--metrics-port", str(free_port())],
                          capture_output=True, text=True, timeout=120, cwd=cwd)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and "ready" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("servekit: "), done.stderr
    return lines[-1]


@pytest.mark.parametrize(("files", "words"), [
    ({"ssl_certfile": "missing.pem", "ssl_keyfile": "key"},
     ["ssl_certfile", "missing.pem", "--ssl-certfile", "cannot be read: No such file or directory"]),
    ({"ssl_certfile": "cert", "ssl_keyfile": "missing.pem"},
     ["ssl_keyfile", "missing.pem", "--ssl-keyfile", "cannot be read"]),
    ({"ssl_certfile": "cert", "ssl_keyfile": "other_key"},
     ["ssl_keyfile", "other-key.pem", "is not the key of the certificate in ssl_certfile", "cert.pem"]),
    ({"ssl_certfile": "cert"}, ["ssl_certfile", "cert.pem", "holds no PEM private key", "--ssl-keyfile"]),
    ({"ssl_certfile": "key", "ssl_keyfile": "key"}, ["ssl_certfile", "key.pem", "holds no PEM certificate"]),
    ({"ssl_keyfile": "key"}, ["ssl_keyfile is set but ssl_certfile is not"]),
    ({"ssl_certfile": "cert", "ssl_keyfile": "key", "ssl_ca_certs": "key"},
     ["ssl_ca_certs", "key.pem", "--ssl-ca-certs", "holds no PEM certificate"]),
])
def test_bad_certificate_or_key_refuses_to_start(repository: Path, pki: Pki, files: dict[str, str],
                                                  words: list[str]) -> None:
    args = [str(repository)]
    for setting, name in files.items():
        path = getattr(pki, name) if name != "missing.pem" else str(Path(pki.ca).parent / "missing.pem")
        args += ["--" + setting.replace("_", "-"), path]
    message = start_fails(args)
    for word in words:
        assert word in message, message


def test_an_encrypted_key_is_refused_without_a_prompt(repository: Path, pki: Pki, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    key = load_pem_private_key(Path(pki.key).read_bytes(), password=None)
    encrypted = tmp_path / "encrypted.pem"
    encrypted.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.BestAvailableEncryption(b"secret")))
    message = start_fails([str(repository), "--ssl-certfile", pki.cert, "--ssl-keyfile", str(encrypted)])
    assert f"ssl_keyfile {encrypted}" in message and "encrypted" in message


# -- client certificates, settings.json, the environment, ssl_ports, uvicorn ------------------
def test_client_certificates_with_ssl_ca_certs_from_settings_json(
    repository: Path, pki: Pki, expected: list[int], tmp_path: Path
) -> None:
    root = tmp_path / "repo"
    shutil.copytree(repository, root)
    (root / "settings.json").write_text(json.dumps(
        {"ssl_certfile": pki.cert, "ssl_keyfile": pki.key, "ssl_ca_certs": pki.ca}))
    client = (pki.client, pki.client_key)
    with ServerProcess(["serve", str(root)], scheme="https", verify=pki.ca, cert=client) as process:
        assert infer_v2(process.url, pki.ca, cert=client) == expected
        with pytest.raises((requests.exceptions.SSLError, requests.ConnectionError)):
            requests.get(f"{process.url}/v2/health/ready", verify=pki.ca, timeout=TIMEOUT)
        import tritonclient.grpc as grpcclient

        with_cert = grpcclient.InferenceServerClient(
            f"127.0.0.1:{process.grpc_port}", ssl=True, root_certificates=pki.ca,
            private_key=pki.client_key, certificate_chain=pki.client)
        without = grpcclient.InferenceServerClient(f"127.0.0.1:{process.grpc_port}", ssl=True,
                                                   root_certificates=pki.ca)
        try:
            assert with_cert.is_server_live()
            with pytest.raises(Exception, match=r"(?i)unavailable|handshake|ssl|certificate"):
                without.is_server_live()
        finally:
            with_cert.close()
            without.close()


@pytest.mark.parametrize("http_server", ["servekit", "uvicorn"])
def test_ssl_ports_from_the_environment_keeps_other_ports_plain(
    repository: Path, pki: Pki, expected: list[int], http_server: str
) -> None:
    env = {"SERVEKIT_SSL_CERTFILE": pki.cert_and_key, "SERVEKIT_SSL_PORTS": "http_port"}
    with ServerProcess(["serve", str(repository), "--http-server", http_server], env=env,
                       scheme="https", verify=pki.ca) as process:
        assert infer_v2(process.url, pki.ca) == expected  # the key comes from the certificate's file
        metrics = requests.get(f"http://127.0.0.1:{process.metrics_port}/metrics", timeout=TIMEOUT)
        assert "servekit_model_requests_total" in metrics.text
        import tritonclient.grpc as grpcclient

        client = grpcclient.InferenceServerClient(f"127.0.0.1:{process.grpc_port}")  # plain gRPC
        try:
            assert client.is_server_live()
        finally:
            client.close()
        log = process.log()
        assert f"listening on https://127.0.0.1:{process.http_port}" in log
        assert f"Metrics server listening on http://127.0.0.1:{process.metrics_port}" in log
        assert f"127.0.0.1:{process.grpc_port} (TLS)" not in log


# -- TorchServe's config.properties ------------------------------------------------------------
ECHO_HANDLER = '''
def handle(data, context):
    if data is None:
        return None
    return [{"bytes": len(row.get("body") or row.get("data") or b"")} for row in data]
'''


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from servekit.cli import main

    folder = tmp_path_factory.mktemp("ts-store")
    (folder / "echo_handler.py").write_text(ECHO_HANDLER)
    assert main(["archive", "--model-name", "echo", "--version", "1.0", "--handler",
                 str(folder / "echo_handler.py"), "--export-path", str(folder / "store"), "--force"]) == 0
    return folder / "store"


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["curl", "-s", "-S", "--max-time", "30", *args], capture_output=True, text=True,
                          timeout=60, check=False)


def ts_process(store: Path, config: Path, cwd: Path, verify: str | bool) -> ServerProcess:
    return ServerProcess(["serve", "--model-store", str(store), "--models", "echo=echo.mar", "--ts-config",
                          str(config)], cwd=cwd, scheme="https", verify=verify, ready_path="/ping")


def test_torchserve_https_addresses_with_key_and_certificate(store: Path, pki: Pki, tmp_path: Path) -> None:
    management = free_port()
    config = tmp_path / "config.properties"
    config.write_text(textwrap.dedent(f"""\
        inference_address=https://127.0.0.1:{free_port()}
        management_address=https://127.0.0.1:{management}
        private_key_file={pki.key}
        certificate_file={pki.cert}
        """))
    payload = tmp_path / "payload.bin"
    payload.write_bytes(b"x" * 1234)
    with ts_process(store, config, tmp_path, pki.ca) as process:
        key = json.loads((tmp_path / "key_file.json").read_text())["management"]["key"]
        answer = curl("--cacert", pki.ca, "-X", "POST", f"{process.url}/predictions/echo", "-T", str(payload))
        assert answer.returncode == 0, answer.stderr
        assert json.loads(answer.stdout) == {"bytes": 1234}
        for verify in (["--cacert", pki.ca], ["-k"]):
            listed = curl(*verify, "-H", f"Authorization: Bearer {key}", f"https://localhost:{management}/models")
            assert listed.returncode == 0, listed.stderr
            assert json.loads(listed.stdout) == {"models": [{"modelName": "echo", "modelUrl": "echo.mar"}]}
        plain = curl("-w", " %{http_code}", f"http://127.0.0.1:{management}/models")
        assert plain.stdout == "this port speaks HTTPS: call it with https://, not http://\n 400"
        untrusted = curl("--cacert", pki.other_ca, f"{process.url}/ping")
        assert untrusted.returncode == 60, untrusted.stderr  # curl: peer certificate cannot be authenticated
        assert f"TorchServe management API listening on https://127.0.0.1:{management}" in process.log()
        # curl ends each connection with close_notify: closed quietly, no warning per connection
        assert json.loads(curl("--cacert", pki.ca, f"{process.url}/ping").stdout) == {"status": "Healthy"}
        assert "WARNING" not in process.log(), process.log()


def test_torchserve_https_without_files_serves_a_self_signed_certificate(
    store: Path, pki: Pki, tmp_path: Path
) -> None:
    """The fifth article's config.properties: only management_address=https://…
    and no key; TorchServe then makes a self-signed certificate, and so does servekit."""
    management = free_port()
    config = tmp_path / "torch_config"
    config.write_text(f"management_address=https://0.0.0.0:{management}\n")
    process = ServerProcess(["serve", "--model-store", str(store), "--models", "echo=echo.mar", "--ts-config",
                             str(config)], cwd=tmp_path, ready_path="/ping")
    with process:
        key = json.loads((tmp_path / "key_file.json").read_text())["management"]["key"]
        listed = curl("-k", "-H", f"Authorization: Bearer {key}", f"https://localhost:{management}/models")
        assert listed.returncode == 0, listed.stderr
        assert json.loads(listed.stdout)["models"][0]["modelName"] == "echo"
        verified = curl("-H", f"Authorization: Bearer {key}", f"https://localhost:{management}/models")
        assert verified.returncode == 60  # self-signed: not trusted unless told to
        assert json.loads(curl(f"{process.url}/ping").stdout) == {"status": "Healthy"}
        assert "self-signed certificate" in process.log() and "private_key_file" in process.log()


@pytest.mark.parametrize(("lines", "words"), [
    (["keystore=keystore.p12", "keystore_pass=changeit"], ["keystore=keystore.p12", "Java key store",
                                                           "private_key_file and certificate_file"]),
    (["private_key_file=key.pem"], ["sets private_key_file but not certificate_file"]),
])
def test_torchserve_tls_mistakes_refuse_to_start(store: Path, tmp_path: Path, lines: list[str],
                                                 words: list[str]) -> None:
    config = tmp_path / "config.properties"
    config.write_text("\n".join([f"inference_address=https://127.0.0.1:{free_port()}", *lines]) + "\n")
    message = start_fails(["--model-store", str(store), "--ts-config", str(config)], cwd=tmp_path)
    for word in words:
        assert word in message, message


def test_the_test_ca_is_what_the_server_presents(server: TlsServer, pki: Pki) -> None:
    """The handshake itself, with Python's ssl: the chain verifies against the
    test CA for both names, and the server speaks at least TLS 1.2."""
    context = ssl.create_default_context(cafile=pki.ca)
    for host in ("127.0.0.1", "localhost"):
        with socket.create_connection(("127.0.0.1", server.http_port), timeout=TIMEOUT) as raw, \
                context.wrap_socket(raw, server_hostname=host) as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
            assert tls.selected_alpn_protocol() in (None, "http/1.1")
            tls.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := tls.recv(4096):
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b'{"live":true}')



# -- which ports: TorchServe's schemes, and listeners sharing a port ----------------------------
@pytest.mark.parametrize(("text", "wanted"), [
    ("inference_address=https://127.0.0.1:8443\nmanagement_address=http://127.0.0.1:8444\n"
     "metrics_address=https://127.0.0.1:8445\nprivate_key_file=k.pem\ncertificate_file=c.pem\n",
     {"ssl_ports": "http_port,metrics_port", "ssl_keyfile": "k.pem", "ssl_certfile": "c.pem"}),
    ("inference_address=https://127.0.0.1:8443\nenable_grpc_ssl=true\n", {"ssl_ports": "http_port,grpc_port"}),
    ("management_address=https://0.0.0.0:8443\n", {"ssl_ports": "management_port"}),
    ("inference_address=http://127.0.0.1:8080\nprivate_key_file=k.pem\ncertificate_file=c.pem\n", {}),
])
def test_torchserve_schemes_choose_the_tls_ports(text: str, wanted: dict[str, str]) -> None:
    from servekit.fronts.torchserve.mode import parse_properties, properties_to_settings

    settings = properties_to_settings(parse_properties(text))
    assert {k: v for k, v in settings.items() if k.startswith("ssl_")} == wanted


def test_listeners_sharing_a_port_must_agree_on_tls(pki: Pki) -> None:
    from servekit.config import ServerSettings
    from servekit.errors import ConfigError
    from servekit.server.assembly import secure_ports

    base = {"http_port": 9000, "metrics_port": 9000, "ssl_certfile": pki.cert, "ssl_keyfile": pki.key}
    with pytest.raises(ConfigError, match="metrics_port and http_port are both port 9000"):
        secure_ports(ServerSettings(**base, ssl_ports="http_port"))
    assert secure_ports(ServerSettings(**base, ssl_ports="http_port,metrics_port")) == {9000}
    assert secure_ports(ServerSettings(**{**base, "metrics_port": 9002}, ssl_ports="metrics_port")) == {9002}


@pytest.mark.parametrize("maker", ["cryptography", "openssl"])
def test_self_signed_pairs_name_the_hosts(maker: str, tmp_path: Path) -> None:
    """Both ways servekit makes TorchServe's self-signed certificate give a
    usable pair naming localhost, 127.0.0.1 and the configured host."""
    from servekit.server import tls

    names = ["127.0.0.1", "10.1.2.3", "localhost", "model-host"]
    if maker == "openssl":
        if shutil.which("openssl") is None:
            pytest.skip("no openssl command")
        cert_pem, key_pem = tls._self_signed_openssl(names, tmp_path)
    else:
        cert_pem, key_pem = tls._self_signed_cryptography(names)
    (tmp_path / "c.pem").write_bytes(cert_pem)
    (tmp_path / "k.pem").write_bytes(key_pem)
    ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
    alt = x509.load_pem_x509_certificate(cert_pem).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    named = {str(v) for v in alt.value.get_values_for_type(x509.IPAddress)}
    named |= set(alt.value.get_values_for_type(x509.DNSName))
    assert named == set(names)
