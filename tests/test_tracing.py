"""OpenTelemetry traces of a real ``servekit serve`` process, exported with
OTLP/HTTP to a receiver here (a small HTTP server on 127.0.0.1 decoding the
protobuf export requests): six spans in order under the request's span, the
client's ``traceparent`` honoured and answered, the same request id in the
span and the log; off (and not needed) when no endpoint is configured."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import joblib
import pytest
import requests
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from servers import SERVEKIT, ServerProcess, free_port
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from servekit.protocols.generated import grpc_predict_v2_pb2 as pb

V2_BODY = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [5.1, 3.5, 1.4, 0.2]}]}
PARENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"
HTTP_STEPS = ["receive", "decode", "queue", "predict", "encode", "send"]


@dataclass
class Span:
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    start: int
    end: int
    attributes: dict[str, Any]
    status_code: int
    status_message: str
    service: str


class Receiver:
    """An OTLP/HTTP trace receiver: POST /v1/traces with a protobuf body."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.paths: list[str] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.take(self.path, self.headers.get("content-type", ""), body)
                out = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args: Any) -> None:
                pass

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def take(self, path: str, content_type: str, body: bytes) -> None:
        assert content_type == "application/x-protobuf"
        export = ExportTraceServiceRequest.FromString(body)
        with self.lock:
            self.paths.append(path)
            for resource in export.resource_spans:
                service = next((a.value.string_value for a in resource.resource.attributes
                                if a.key == "service.name"), "")
                for scope in resource.scope_spans:
                    for span in scope.spans:
                        self.spans.append(Span(
                            span.name, span.trace_id.hex(), span.span_id.hex(), span.parent_span_id.hex(),
                            span.start_time_unix_nano, span.end_time_unix_nano,
                            {a.key: _value(a.value) for a in span.attributes},
                            span.status.code, span.status.message, service,
                        ))

    def request_span(self, request_id: str, timeout: float = 20.0) -> tuple[Span, list[Span]]:
        """The span of the request with this id, and its children by start time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                for span in self.spans:
                    if span.attributes.get("servekit.request_id") == request_id:
                        children = sorted((s for s in self.spans if s.parent_id == span.span_id),
                                          key=lambda s: (s.start, s.end))
                        return span, children
            time.sleep(0.05)
        raise AssertionError(f"no span with request id {request_id!r}; got {[s.name for s in self.spans]}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


def _repository(root: Path) -> Path:
    X, y = load_iris(return_X_y=True)
    (root / "iris").mkdir()
    joblib.dump(LogisticRegression(max_iter=500).fit(X, y), root / "iris" / "model.joblib")
    return root


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    out = Receiver()
    yield out
    out.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[ServerProcess]:
    root = _repository(tmp_path_factory.mktemp("traced"))
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.port}", "OTEL_BSP_SCHEDULE_DELAY": "50"}
    with ServerProcess(["serve", str(root), "--access-log", "--log-format", "json"], workers=2, env=env) as process:
        yield process


def _access_line(process: ServerProcess, request_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for text in process.log().splitlines():
            if text.startswith("{"):
                line = json.loads(text)
                if line["logger"] == "servekit.access" and line.get("request_id") == request_id:
                    return line
        time.sleep(0.05)
    raise AssertionError(f"no access line for {request_id!r}")


def _check_steps(request: Span, children: list[Span], steps: list[str]) -> None:
    assert [child.name for child in children] == steps
    assert all(child.trace_id == request.trace_id for child in children)
    previous_end = request.start
    for child in children:  # in order, one after the other, inside the request's span
        assert previous_end <= child.start <= child.end <= request.end, child
        previous_end = child.end


def test_a_request_is_six_spans_under_the_clients_trace(server: ServerProcess, receiver: Receiver) -> None:
    traceparent = f"00-{PARENT_TRACE}-{PARENT_SPAN}-01"
    answer = requests.post(f"{server.url}/v2/models/iris/infer", json=V2_BODY, timeout=10,
                           headers={"traceparent": traceparent, "X-Request-ID": "traced-1"})
    assert answer.status_code == 200, answer.text
    request, children = receiver.request_span("traced-1")
    assert request.trace_id == PARENT_TRACE and request.parent_id == PARENT_SPAN
    assert request.name == "v2 infer" and request.service == "servekit"
    _check_steps(request, children, HTTP_STEPS)
    attributes = request.attributes
    assert attributes["servekit.model"] == "iris" and attributes["servekit.version"] == ""
    assert attributes["servekit.protocol"] == "v2" and attributes["servekit.batch_size"] == 1
    assert attributes["http.request.method"] == "POST" and attributes["url.path"] == "/v2/models/iris/infer"
    assert attributes["http.response.status_code"] == 200
    # the answer names the request's span in the same trace
    assert answer.headers["traceparent"] == f"00-{PARENT_TRACE}-{request.span_id}-01"
    # the log line of the request: same request id, same trace
    line = _access_line(server, "traced-1")
    assert line["trace_id"] == PARENT_TRACE and line["span_id"] == request.span_id


def test_without_a_traceparent_a_trace_starts_and_the_ids_agree(server: ServerProcess, receiver: Receiver) -> None:
    for url, body, protocol in (
        (f"{server.url}/v2/models/iris/infer", V2_BODY, "v2"),
        (f"{server.url}/v1/models/iris:predict", {"instances": [[5.1, 3.5, 1.4, 0.2]]}, "kserve-v1"),
        (f"{server.url}/predictions/iris", {"data": [[5.1, 3.5, 1.4, 0.2]]}, "torchserve"),
    ):
        answer = requests.post(url, json=body, timeout=10)
        assert answer.status_code == 200, answer.text
        made = answer.headers["X-Request-ID"]
        request, children = receiver.request_span(made)
        assert request.parent_id == "" and request.trace_id != PARENT_TRACE
        assert request.attributes["servekit.protocol"].startswith(protocol.split("-")[0]), request.attributes
        _check_steps(request, children, HTTP_STEPS)
        line = _access_line(server, made)
        assert line["trace_id"] == request.trace_id
        assert answer.headers["traceparent"].split("-")[1:3] == [request.trace_id, request.span_id]


def test_a_failed_call_is_an_error_span(server: ServerProcess, receiver: Receiver) -> None:
    bad = requests.post(f"{server.url}/v2/models/iris/infer", timeout=10, headers={"X-Request-ID": "traced-bad"},
                        json={"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}]})
    assert bad.status_code == 400
    request, children = receiver.request_span("traced-bad")
    assert request.status_code == 2  # STATUS_CODE_ERROR
    assert request.status_message == bad.json()["error"]
    assert request.attributes["http.response.status_code"] == 400
    names = [c.name for c in children]
    assert names[0] == "receive" and names[-1] == "send"


def test_non_inference_requests_are_traced_too(server: ServerProcess, receiver: Receiver) -> None:
    answer = requests.get(f"{server.url}/v2/health/ready", headers={"X-Request-ID": "traced-ready"}, timeout=10)
    request, children = receiver.request_span("traced-ready")
    assert request.name == "GET" and request.attributes["url.path"] == "/v2/health/ready"
    _check_steps(request, children, ["receive", "send"])
    assert answer.headers["traceparent"].split("-")[2] == request.span_id


def test_grpc_calls_honour_traceparent_metadata(server: ServerProcess, receiver: Receiver) -> None:
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                                request_serializer=pb.ModelInferRequest.SerializeToString,
                                response_deserializer=pb.ModelInferResponse.FromString)
    message = pb.ModelInferRequest(model_name="iris")
    tensor = message.inputs.add(name="x", datatype="FP64", shape=[1, 4])
    tensor.contents.fp64_contents.extend([5.1, 3.5, 1.4, 0.2])
    infer.with_call(message, timeout=10, metadata=[("traceparent", f"00-{PARENT_TRACE}-{PARENT_SPAN}-01"),
                                                   ("x-request-id", "traced-grpc")])
    request, children = receiver.request_span("traced-grpc")
    assert request.trace_id == PARENT_TRACE and request.parent_id == PARENT_SPAN
    assert request.name == "V2 gRPC ModelInfer" and request.attributes["servekit.protocol"] == "v2-grpc"
    _check_steps(request, children, ["decode", "queue", "predict", "encode"])


def test_a_merged_batch_reports_its_size_and_queue_time(tmp_path: Path, receiver: Receiver) -> None:
    """Requests that wait for each other in the batcher: the queue span is the
    time each waited, the batch size how many ran together."""
    root = _repository(tmp_path)
    (root / "iris" / "model-settings.json").write_text(json.dumps(
        {"name": "iris", "max_batch_size": 8, "max_batch_time": 0.2}))
    env = {"OTEL_BSP_SCHEDULE_DELAY": "50"}
    args = ["serve", str(root), "--otlp-endpoint", f"http://127.0.0.1:{receiver.port}"]
    with ServerProcess(args, env=env) as process:
        ids = [f"merged-{n}" for n in range(4)]
        threads = [threading.Thread(target=requests.post, args=(f"{process.url}/v2/models/iris/infer",),
                                    kwargs={"json": V2_BODY, "headers": {"X-Request-ID": each}, "timeout": 20})
                   for each in ids]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        sizes = []
        for each in ids:
            request, children = receiver.request_span(each)
            _check_steps(request, children, HTTP_STEPS)
            sizes.append(request.attributes["servekit.batch_size"])
            queue = next(c for c in children if c.name == "queue")
            assert queue.end > queue.start  # it waited for the batch window
        assert max(sizes) > 1, sizes
    assert "/v1/traces" in receiver.paths  # --otlp-endpoint is a base URL, as the variable is


def test_tracing_is_off_and_optional_without_an_endpoint(tmp_path: Path) -> None:
    """No endpoint: no observer, no timestamps, no traceparent in answers; and
    servekit runs where OpenTelemetry's SDK is not installed (hidden here),
    refusing --otlp-endpoint with the extra to install."""
    from servekit.config import ServerSettings
    from servekit.observability import tracing
    from servekit.registry import Registry
    from servekit.repository.sources import ModelSources
    from servekit.server.assembly import SKINS, build_app, build_context

    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    settings = ServerSettings()
    if tracing.endpoint(settings) is None:
        ctx = build_context(settings, Registry(settings), ModelSources(settings))
        assert ctx.dataplane.observers == []
        assert build_app(ctx, [s for s in SKINS if s.enabled(settings)])[0].tracing is None

    hidden = tmp_path / "hide" / "opentelemetry" / "sdk"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ImportError('hidden by the test')\n")
    env = {**clean, "PYTHONPATH": f"{tmp_path / 'hide'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    (tmp_path / "repo").mkdir()
    root = _repository(tmp_path / "repo")
    with ServerProcess(["serve", str(root)], env=env) as process:
        env_process = process.env
        answer = requests.post(f"{process.url}/v2/models/iris/infer", json=V2_BODY, timeout=10)
        assert answer.status_code == 200 and "traceparent" not in answer.headers
        assert answer.headers["X-Request-ID"]
    refused = subprocess.run([*SERVEKIT, "serve", str(root), "--http-port", str(free_port()),
                              "--otlp-endpoint", "http://127.0.0.1:1"],
                             env=env_process, capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0
    assert "pip install 'servekit[tracing]'" in refused.stderr, refused.stderr[-2000:]


def test_a_download_carries_the_request_id_and_the_trace_on(tmp_path: Path, receiver: Receiver) -> None:
    """TorchServe's register-by-URL downloads the archive while handling the
    call: the download's request names the call's id and trace."""
    from servekit.cli import main

    seen: list[dict[str, str]] = []
    (tmp_path / "remote").mkdir()
    (tmp_path / "handler.py").write_text("def handle(data, context):\n    return [1 for _ in data or []]\n")
    assert main(["archive", "--model-name", "fetched", "--version", "1.0", "--handler", str(tmp_path / "handler.py"),
                 "--export-path", str(tmp_path / "remote")]) == 0
    archive = (tmp_path / "remote" / "fetched.mar").read_bytes()

    class Remote(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append({k.lower(): v for k, v in self.headers.items()})
            self.send_response(200)
            self.send_header("content-length", str(len(archive)))
            self.end_headers()
            self.wfile.write(archive)

        def log_message(self, *args: Any) -> None:
            pass

    remote = ThreadingHTTPServer(("127.0.0.1", 0), Remote)
    threading.Thread(target=remote.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{remote.server_address[1]}"
    store = tmp_path / "store"
    store.mkdir()
    management = free_port()
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.port}", "OTEL_BSP_SCHEDULE_DELAY": "50"}
    args = ["serve", "--model-store", str(store), "--management-port", str(management),
            "--allowed-urls", f"{base.replace('.', '[.]')}/.*"]
    try:
        with ServerProcess(args, env=env, cwd=tmp_path, ready_path="/ping"):
            key = json.loads((tmp_path / "key_file.json").read_text())["management"]["key"]
            answer = requests.post(f"http://127.0.0.1:{management}/models?url={base}/fetched.mar", timeout=60,
                                   headers={"Authorization": f"Bearer {key}", "X-Request-ID": "register-1",
                                            "traceparent": f"00-{PARENT_TRACE}-{PARENT_SPAN}-01"})
            assert answer.status_code == 200, answer.text
            request, _ = receiver.request_span("register-1")
    finally:
        remote.shutdown()
        remote.server_close()
    assert len(seen) == 1
    assert seen[0]["x-request-id"] == "register-1"
    version, trace_id, span_id, flags = seen[0]["traceparent"].split("-")
    assert (version, trace_id, span_id, flags) == ("00", PARENT_TRACE, request.span_id, "01")
