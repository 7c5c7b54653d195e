"""Request ids on every protocol, against a real server: the client's
``X-Request-ID`` (gRPC: ``x-request-id`` metadata) comes back, else the V2
request's ``id``, else a made one; every answer carries it, the log lines of
the request carry it, and a hostile one cannot add a header or a log line."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import joblib
import pytest
import requests
from servers import ServerProcess, free_port
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from servekit.protocols.generated import grpc_predict_v2_pb2 as pb

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
V2_BODY = {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP64", "data": [v for r in ROWS for v in r]}]}


def _repository(root: Path) -> Path:
    X, y = load_iris(return_X_y=True)
    (root / "iris").mkdir()
    joblib.dump(LogisticRegression(max_iter=500).fit(X, y), root / "iris" / "model.joblib")
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = _repository(tmp_path_factory.mktemp("ids"))
    rest_port = free_port()
    process = ServerProcess(["serve", str(root), "--access-log", "--log-format", "json",
                             "--rest-api-port", str(rest_port)], extra_ports={"rest": rest_port})
    with process:
        yield process


def _calls(process: ServerProcess) -> dict[str, tuple[str, str, dict[str, Any]]]:
    """One inference call per HTTP protocol: (method, url, JSON body)."""
    main, rest = process.url, f"http://127.0.0.1:{process.ports['rest']}"
    return {
        "V2": ("POST", f"{main}/v2/models/iris/infer", V2_BODY),
        "TF Serving REST": ("POST", f"{rest}/v1/models/iris:predict", {"instances": ROWS}),
        "KServe V1": ("POST", f"{main}/v1/models/iris:predict", {"instances": ROWS}),
        "TorchServe": ("POST", f"{main}/predictions/iris", {"data": ROWS}),
        "Seldon": ("POST", f"{main}/api/v1.0/predictions", {"data": {"ndarray": ROWS}}),
        "/predict": ("POST", f"{main}/predict/iris", {"inputs": ROWS}),
    }


def _log_lines(process: ServerProcess) -> list[dict[str, Any]]:
    lines = [line for line in process.log().splitlines() if line.startswith("{")]
    return [json.loads(line) for line in lines]


def _access_line(process: ServerProcess, request_id: str) -> dict[str, Any]:
    """The access-log line of the request with this id (written just after its answer)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for line in _log_lines(process):
            if line["logger"] == "servekit.access" and line.get("request_id") == request_id:
                return line
        time.sleep(0.05)
    raise AssertionError(f"no access-log line carries request id {request_id!r}:\n{process.log()[-3000:]}")


def test_every_http_protocol_returns_the_given_id(server: ServerProcess) -> None:
    for protocol, (method, url, body) in _calls(server).items():
        given = f"given-{protocol.replace(' ', '-').replace('/', '')}-1"
        answer = requests.request(method, url, json=body, headers={"X-Request-ID": given}, timeout=10)
        assert answer.status_code == 200, (protocol, answer.text)
        assert answer.headers["X-Request-ID"] == given, protocol
        line = _access_line(server, given)
        assert url.split("127.0.0.1:")[1].split("/", 1)[1] in line["message"], line
        assert " 200 " in line["message"]


def test_every_http_protocol_makes_an_id_when_none_is_given(server: ServerProcess) -> None:
    seen: set[str] = set()
    for protocol, (method, url, body) in _calls(server).items():
        answer = requests.request(method, url, json=body, timeout=10)
        assert answer.status_code == 200, (protocol, answer.text)
        made = answer.headers["X-Request-ID"]
        assert UUID.fullmatch(made), (protocol, made)
        assert made not in seen
        seen.add(made)
        assert _access_line(server, made)["level"] == "INFO"


def test_errors_and_non_inference_routes_carry_an_id_too(server: ServerProcess) -> None:
    for url in (f"{server.url}/v2/health/ready", f"{server.url}/v2/models/iris", f"{server.url}/v2/models/nope",
                f"{server.url}/no/such/route", f"{server.url}/ping"):
        answer = requests.get(url, headers={"X-Request-ID": "probe-7"}, timeout=10)
        assert answer.headers["X-Request-ID"] == "probe-7", url
        made = requests.get(url, timeout=10).headers["X-Request-ID"]
        assert UUID.fullmatch(made), url
    missing = requests.post(f"{server.url}/v2/models/nope/infer", json=V2_BODY, headers={"X-Request-ID": "e-1"},
                            timeout=10)
    assert missing.status_code == 404 and "nope" in missing.json()["error"]
    assert missing.headers["X-Request-ID"] == "e-1"


def test_v2_id_is_the_request_id_when_no_header_is_given(server: ServerProcess) -> None:
    url = f"{server.url}/v2/models/iris/infer"
    own = requests.post(url, json={**V2_BODY, "id": "v2-own-id"}, timeout=10)
    assert own.json()["id"] == "v2-own-id" and own.headers["X-Request-ID"] == "v2-own-id"
    _access_line(server, "v2-own-id")
    # a header wins for the header and the log; the body keeps its own id
    both = requests.post(url, json={**V2_BODY, "id": "body-id"}, headers={"X-Request-ID": "hdr-id"}, timeout=10)
    assert both.json()["id"] == "body-id" and both.headers["X-Request-ID"] == "hdr-id"
    # a request without an id gets the header's in its body too
    header_only = requests.post(url, json=V2_BODY, headers={"X-Request-ID": "only-hdr"}, timeout=10)
    assert header_only.json()["id"] == "only-hdr"
    made = requests.post(url, json=V2_BODY, timeout=10)
    assert made.json()["id"] == made.headers["X-Request-ID"] and UUID.fullmatch(made.json()["id"])


def _raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _heads(raw: bytes) -> list[list[bytes]]:
    """The header lines of each response in ``raw``."""
    out = []
    for part in raw.split(b"HTTP/1.1 ")[1:]:
        out.append(part.split(b"\r\n\r\n", 1)[0].split(b"\r\n"))
    return out


def test_a_hostile_header_id_is_refused_in_the_protocols_error_format(server: ServerProcess) -> None:
    url = f"{server.url}/v2/models/iris/infer"
    for bad in ("x" * 10_000, "x" * 129, "has space", "tab\there", "ünïcode"):
        answer = requests.post(url, json=V2_BODY, headers={"X-Request-ID": bad.encode("latin-1")}, timeout=10)
        assert answer.status_code == 400, bad[:20]
        assert "X-Request-ID header must be 1 to 128 printable ASCII" in answer.json()["error"]
        assert UUID.fullmatch(answer.headers["X-Request-ID"])  # a made one instead
    assert requests.post(url, json=V2_BODY, headers={"X-Request-ID": "x" * 128}, timeout=10).status_code == 200
    # TorchServe's and Seldon's own error bodies
    torchserve = requests.post(f"{server.url}/predictions/iris", json={"data": ROWS},
                               headers={"X-Request-ID": "y" * 200}, timeout=10)
    assert torchserve.status_code == 400 and "X-Request-ID" in torchserve.json()["message"]
    seldon = requests.post(f"{server.url}/api/v1.0/predictions", json={"data": {"ndarray": ROWS}},
                           headers={"X-Request-ID": "y" * 200}, timeout=10)
    assert seldon.status_code == 400 and "X-Request-ID" in seldon.json()["status"]["info"]
    # control characters sent raw (a client library would refuse to send them)
    for value in (b"a\x1b[31mred", b"a\x00b", b"a\x7fb"):
        raw = _raw(server.http_port, b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Request-ID: " + value
                   + b"\r\nConnection: close\r\n\r\n")
        head = _heads(raw)
        assert head and head[0][0].startswith(b"400"), raw[:200]
        assert value not in raw


def test_a_hostile_v2_id_is_escaped_in_the_header_and_the_log(server: ServerProcess) -> None:
    hostile = "evil\r\nSet-Cookie: a=b\r\n\r\n{\"level\": \"CRITICAL\"}\n" + "z" * 10_000
    answer = requests.post(f"{server.url}/v2/models/iris/infer", json={**V2_BODY, "id": hostile}, timeout=10)
    assert answer.status_code == 200
    assert answer.json()["id"] == hostile  # the protocol echoes its id unchanged, inside JSON
    assert "Set-Cookie" not in answer.headers and "set-cookie" not in {k.lower() for k in answer.headers}
    header = answer.headers["X-Request-ID"]
    assert header.startswith("evil%0D%0ASet-Cookie:%20a=b%0D%0A%0D%0A") and len(header) <= 128
    line = _access_line(server, header)
    assert line["request_id"] == header
    for text in server.log().splitlines():  # every line of the log is one JSON object
        if text.strip():
            json.loads(text)


def test_pipelined_requests_each_get_their_own_id(server: ServerProcess) -> None:
    body = json.dumps(V2_BODY).encode()
    first = (b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\nX-Request-ID: pipelined-1\r\n"
             b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    second = (b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
    heads = _heads(_raw(server.http_port, first + second))
    assert len(heads) == 2
    ids = [next(line.split(b": ", 1)[1] for line in head if line.lower().startswith(b"x-request-id:"))
           for head in heads]
    assert ids[0] == b"pipelined-1"
    assert UUID.fullmatch(ids[1].decode()), ids  # not the first request's


def _grpc(process: ServerProcess) -> tuple[Any, Any]:
    channel = grpc.insecure_channel(f"127.0.0.1:{process.grpc_port}")
    infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                                request_serializer=pb.ModelInferRequest.SerializeToString,
                                response_deserializer=pb.ModelInferResponse.FromString)
    live = channel.unary_unary("/inference.GRPCInferenceService/ServerLive",
                               request_serializer=pb.ServerLiveRequest.SerializeToString,
                               response_deserializer=pb.ServerLiveResponse.FromString)
    return infer, live


def _request(name: str = "iris") -> Any:
    message = pb.ModelInferRequest(model_name=name)
    tensor = message.inputs.add(name="x", datatype="FP64", shape=[2, 4])
    tensor.contents.fp64_contents.extend([v for r in ROWS for v in r])
    return message


def test_grpc_metadata_in_and_trailing_metadata_out(server: ServerProcess) -> None:
    infer, live = _grpc(server)
    answer, call = infer.with_call(_request(), metadata=[("x-request-id", "grpc-given-1")], timeout=10)
    assert answer.id == "grpc-given-1"
    assert ("x-request-id", "grpc-given-1") in [(m.key, m.value) for m in call.trailing_metadata()]
    _, call = infer.with_call(_request(), timeout=10)
    made = dict((m.key, m.value) for m in call.trailing_metadata())["x-request-id"]
    assert UUID.fullmatch(made)
    _, call = live.with_call(pb.ServerLiveRequest(), timeout=10)
    assert UUID.fullmatch(dict((m.key, m.value) for m in call.trailing_metadata())["x-request-id"])
    with pytest.raises(grpc.RpcError) as missing:
        infer.with_call(_request("nope"), metadata=[("x-request-id", "grpc-err-1")], timeout=10)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert ("x-request-id", "grpc-err-1") in [(m.key, m.value) for m in missing.value.trailing_metadata()]
    with pytest.raises(grpc.RpcError) as refused:
        # 1,000 characters: past servekit's 128, below gRPC's own 8 KiB metadata soft limit
        # (between that and its hard limit gRPC refuses at random, RESOURCE_EXHAUSTED)
        infer.with_call(_request(), metadata=[("x-request-id", "g" * 1_000)], timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "x-request-id metadata must be 1 to 128" in (refused.value.details() or "")


def test_text_logs_carry_the_id_on_one_line(tmp_path: Path) -> None:
    root = _repository(tmp_path)
    with ServerProcess(["serve", str(root), "--access-log"]) as process:
        answer = requests.post(f"{process.url}/v2/models/iris/infer", timeout=10,
                               json={**V2_BODY, "id": "line\nbreak [x]"})
        header = answer.headers["X-Request-ID"]
        assert header == "line%0Abreak%20[x]"
        deadline = time.monotonic() + 10
        while f"[{header}]" not in process.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        lines = [line for line in process.log().splitlines() if f"[{header}]" in line]
        assert len(lines) == 1, process.log()[-2000:]
        assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} \[servekit\] INFO \[line%0Abreak%20\[x\]\] - ",
                        lines[0]), lines[0]
        assert '"POST /v2/models/iris/infer" 200' in lines[0]
        assert "break [x]" not in process.log()


def test_made_ids_are_uuid4_and_differ_between_processes_forked_alike() -> None:
    """Ids count up within a process from a random start; a forked worker
    draws its own prefix and start, so two workers never hand out one id."""
    import os
    import uuid

    from servekit.observability.request_id import new_id

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child writes its ids and leaves
        os.write(write, " ".join(new_id() for _ in range(100)).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read) as pipe:
        child = pipe.read().split()
    parent = [new_id() for _ in range(100)]
    for made in parent + child:
        assert UUID.fullmatch(made) and uuid.UUID(made).version == 4, made
    assert len(set(parent) | set(child)) == 200
    assert {p[:24] for p in parent} != {c[:24] for c in child}
