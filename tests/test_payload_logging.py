"""Payload logging (issue 15 item 3) with real servers: a CloudEvents receiver
here (an HTTP/1.1 server on 127.0.0.1) gets KServe logger pairs, matched by
``ce-id``, failures included, through V2 REST and gRPC; a file sink is read
back (structured events, one a line, shared by two workers) and rotates
within its bounds; sampling keeps or drops whole pairs; an unreachable sink
answers every inference correctly and counts every lost event in /metrics."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from servers import ServerProcess, free_port

from servekit.config import ModelSettings, PayloadLogging, load_server_settings
from servekit.dataplane import InferenceCall, ModelFailed, Target
from servekit.errors import ConfigError, InvalidInput
from servekit.payloads.events import REQUEST, RESPONSE, Attributes, header_value, pair
from servekit.payloads.sinks import Counters, FileSink, Pending
from servekit.tensors import InferenceRequest, InferenceResponse, Tensor

RUNTIME = '''
from servekit.errors import InvalidInput
from servekit.runtimes.base import Runtime
from servekit.tensors import Tensor


class Doubler(Runtime):
    """Doubles its input; refuses negative values (400) and fails on huge ones (500)."""

    def predict(self, request):
        x = request.inputs[0].data
        if (x < 0).any():
            raise InvalidInput("negative values are not allowed")
        if (x > 1e6).any():
            raise RuntimeError("overflow in layer 3")
        return self.response(request, [Tensor("doubled", x * 2)])
'''


def body(*values: float) -> dict[str, Any]:
    return {"inputs": [{"name": "x", "shape": [1, len(values)], "datatype": "FP64", "data": list(values)}]}


def repository(root: Path, models: dict[str, Any]) -> Path:
    """A repository of doubling models: name -> its payload_logging setting (None: none)."""
    for name, logging in models.items():
        folder = root / name
        folder.mkdir(parents=True)
        (folder / "doubler.py").write_text(RUNTIME)
        settings: dict[str, Any] = {"name": name, "implementation": "doubler.Doubler"}
        if logging is not None:
            settings["payload_logging"] = logging
        (folder / "model-settings.json").write_text(json.dumps(settings))
    return root


class Receiver:
    """A CloudEvents receiver: every POST's headers and body, answered 200 (or
    ``status``) on a kept-alive HTTP/1.1 connection (``close``: closed after
    each answer), pipelined requests in order."""

    def __init__(self, status: int = 200, port: int | None = None, close: bool = False) -> None:
        self.events: list[tuple[dict[str, str], bytes]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                data = self.rfile.read(int(self.headers["content-length"]))
                with receiver.lock:
                    receiver.events.append(({k.lower(): v for k, v in self.headers.items()}, data))
                self.send_response(status)
                self.send_header("content-length", "0")
                if close:  # one request per connection, as an HTTP/1.0 server
                    self.send_header("connection", "close")
                    self.close_connection = True
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.port = port or free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/events"

    def wait_for(self, count: int, timeout: float = 30.0) -> list[tuple[dict[str, str], bytes]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.events) >= count:
                    return list(self.events)
            time.sleep(0.05)
        raise AssertionError(f"the receiver got {len(self.events)} events, not {count}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    out = Receiver()
    yield out
    out.close()


def metric(url: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include ``labels``."""
    total = 0.0
    for line in requests.get(url, timeout=10).text.splitlines():
        match = re.fullmatch(r"([a-z_]+)\{(.*)\} (\S+)", line)
        if match is None or match[1] != name:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', match[2]))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(match[3])
    return total


def rfc3339(text: str) -> datetime:
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", text), text
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# -- a real HTTP sink ------------------------------------------------------------


def test_http_sink_gets_one_pair_per_inference_failures_included(tmp_path: Path, receiver: Receiver) -> None:
    import tritonclient.grpc as grpcclient

    root = repository(tmp_path / "models", {
        "double": {"sink": receiver.url, "flush_seconds": 0.01, "namespace": "team-a"},
        "quiet": None,  # no payload logging: never seen by the sink
    })
    with ServerProcess(["serve", str(root)]) as server:
        sent = {}
        for i, values in enumerate([(1.0, 2.0), (3.5,), (-1.0,), (2e6,), (0.5, 0.25, 4.0)]):
            request_id = f"req-{i}"
            answer = requests.post(f"{server.url}/v2/models/double/infer", json=body(*values),
                                   headers={"X-Request-ID": request_id}, timeout=10)
            sent[request_id] = (values, answer.status_code, answer.json())
        quiet = requests.post(f"{server.url}/v2/models/quiet/infer", json=body(7.0), timeout=10)
        assert quiet.json()["outputs"][0]["data"] == [14.0]
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
        tensor = grpcclient.InferInput("x", [1, 2], "FP64")
        tensor.set_data_from_numpy(np.array([[10.0, 20.0]]))
        grpc_answer = client.infer("double", [tensor], request_id="grpc-1")
        assert grpc_answer.as_numpy("doubled").tolist() == [[20.0, 40.0]]

        events = receiver.wait_for(12)
        time.sleep(0.3)  # nothing more comes: the quiet model logs nothing
        assert len(receiver.events) == 12
        metrics = f"http://127.0.0.1:{server.metrics_port}/metrics"
        assert metric(metrics, "servekit_payload_events_sent_total", sink=receiver.url) == 12
        assert metric(metrics, "servekit_payload_events_dropped_total") == 0

    assert sent["req-0"][1] == 200 and sent["req-2"][1] == 400 and sent["req-3"][1] == 500
    pairs: dict[str, dict[str, tuple[dict[str, str], Any]]] = defaultdict(dict)
    for headers, data in events:
        assert headers["ce-specversion"] == "1.0"
        assert headers["ce-source"] == f"http://127.0.0.1:{server.http_port}/"
        assert headers["ce-inferenceservicename"] == "double"
        assert headers["ce-namespace"] == "team-a" and headers["ce-component"] == "predictor"
        assert headers["ce-endpoint"] == ""  # an unversioned model
        assert headers["content-type"] == "application/json"
        rfc3339(headers["ce-time"])
        kind = {REQUEST: "request", RESPONSE: "response"}[headers["ce-type"]]
        assert kind not in pairs[headers["ce-id"]], "one event of each type per id"
        pairs[headers["ce-id"]][kind] = (headers, json.loads(data))
    assert len(pairs) == 6 and all(len(p) == 2 for p in pairs.values())
    by_request = {p["request"][0]["ce-requestid"]: p for p in pairs.values()}
    assert set(by_request) == {*sent, "grpc-1"}
    for request_id, (values, status, answer) in sent.items():
        (request_headers, request), (response_headers, response) = by_request[request_id].values()
        assert request_headers["ce-protocol"] == response_headers["ce-protocol"] == "v2"
        assert request["inputs"] == [{"name": "x", "shape": [1, len(values)], "datatype": "FP64",
                                      "data": list(values)}]
        assert "statuscode" not in request_headers and response_headers["ce-statuscode"] == str(status)
        assert rfc3339(request_headers["ce-time"]) <= rfc3339(response_headers["ce-time"])
        if status == 200:
            assert response["outputs"] == answer["outputs"]  # what the client got
            assert response["outputs"][0]["data"] == [2 * v for v in values]
        else:
            assert response == answer  # the error the client got
    assert "negative values are not allowed" in by_request["req-2"]["response"][1]["error"]
    assert "overflow in layer 3" in by_request["req-3"]["response"][1]["error"]
    (grpc_request_headers, grpc_request), (_, grpc_response) = by_request["grpc-1"].values()
    assert grpc_request_headers["ce-protocol"] == "v2-grpc"
    assert grpc_request["inputs"][0]["data"] == [10.0, 20.0]
    assert grpc_response["outputs"][0]["data"] == [20.0, 40.0]


def test_batched_http_sink_and_response_mode(tmp_path: Path, receiver: Receiver) -> None:
    root = repository(tmp_path / "models", {
        "double": {"url": receiver.url, "mode": "response", "format": "batch", "batch_size": 8,
                   "flush_seconds": 0.05},
    })
    with ServerProcess(["serve", str(root)]) as server:
        for i in range(20):
            assert requests.post(f"{server.url}/v2/models/double/infer", json=body(float(i)),
                                 timeout=10).json()["outputs"][0]["data"] == [2.0 * i]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with receiver.lock:
                got = [json.loads(data) for _, data in receiver.events]
            if sum(len(batch) for batch in got) >= 20:
                break
            time.sleep(0.05)
    assert all(headers["content-type"] == "application/cloudevents-batch+json" for headers, _ in receiver.events)
    events = [event for batch in got for event in batch]
    assert len(events) == 20 and all(1 <= len(batch) <= 8 for batch in got)
    assert {event["type"] for event in events} == {RESPONSE}  # mode response: no request events
    assert sorted(event["data"]["outputs"][0]["data"][0] for event in events) == [2.0 * i for i in range(20)]
    assert len({event["id"] for event in events}) == 20
    assert all(event["specversion"] == "1.0" and event["datacontenttype"] == "application/json"
               and event["statuscode"] == "200" for event in events)


# -- the file sink -----------------------------------------------------------------


def read_events(path: Path) -> tuple[list[dict[str, Any]], list[Path]]:
    files = sorted(path.parent.glob(path.name + "*"), key=lambda p: p.name)
    files = [f for f in files if not f.name.endswith(".lock")]
    events = [json.loads(line) for f in files for line in f.read_text().splitlines()]
    return events, files


def test_file_sink_server_wide_shared_by_workers_with_sampling(tmp_path: Path) -> None:
    sink = tmp_path / "logs" / "payloads.jsonl"
    sink.parent.mkdir()
    root = repository(tmp_path / "models", {
        "double": None,  # the server's payload_logging
        "sampled": {"sink": f"file://{sink}", "sample_rate": 0.5},
        "private": False,  # stays out of the server's payload logging
    })
    server_wide = json.dumps({"sink": f"file://{sink}", "max_bytes": 4096, "max_files": 100})
    with ServerProcess(["serve", str(root), "--payload-logging", server_wide], workers=2) as server:
        for i in range(30):
            for name in ("double", "private"):
                answer = requests.post(f"{server.url}/v2/models/{name}/infer", json=body(float(i)), timeout=10)
                assert answer.json()["outputs"][0]["data"] == [2.0 * i]
        for i in range(200):
            requests.post(f"{server.url}/v2/models/sampled/infer", json=body(float(i)), timeout=10)
        assert requests.post(f"{server.url}/v2/models/double/infer", json=body(-5.0), timeout=10).status_code == 400
        v1 = requests.post(f"{server.url}/v1/models/double:predict", json={"instances": [[1.5, 2.5]]}, timeout=10)
        assert v1.json() == {"predictions": [[3.0, 5.0]]}
    # the workers flushed their queues when they stopped
    events, files = read_events(sink)
    assert len(files) > 2, "4 KiB files: the events of 30+ inferences rotate several times"
    assert all(f.stat().st_size <= 4096 for f in files)
    names = Counter(event["inferenceservicename"] for event in events)
    assert "private" not in names and names["double"] == 2 * 32, server.log()[-3000:]
    pairs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        assert event["specversion"] == "1.0" and event["type"] in (REQUEST, RESPONSE)
        pairs[event["id"]].append(event)
    assert all(sorted(e["type"] for e in pair) == [REQUEST, RESPONSE] for pair in pairs.values())
    doubled = sorted(e["data"]["outputs"][0]["data"][0] for e in events
                     if e["inferenceservicename"] == "double" and e["type"] == RESPONSE and e["statuscode"] == "200"
                     and e["protocol"] == "v2")
    assert doubled == [2.0 * i for i in range(30)]
    kserve = {e["type"]: e for e in events if e["protocol"] == "kserve-v1"}  # another front, the same events
    assert sorted(kserve) == [REQUEST, RESPONSE]  # (a pair may straddle two files: by type, not by order)
    assert kserve[REQUEST]["data"]["inputs"][0]["data"] == [1.5, 2.5]
    assert kserve[RESPONSE]["data"]["outputs"][0]["data"] == [3.0, 5.0]
    failed = [e for e in events if e.get("statuscode") == "400"]
    assert len(failed) == 1 and "negative" in failed[0]["data"]["error"]
    # sampling: about half of 200 inferences, always both events (binomial, 6 sigma ~ 42)
    sampled = names["sampled"] // 2
    assert names["sampled"] % 2 == 0 and 100 - 42 <= sampled <= 100 + 42


def test_file_sink_rotates_within_its_bounds(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    options = PayloadLogging(sink=f"file://{path}", max_bytes=2048, max_files=3, batch_size=7, flush_seconds=0)

    from prometheus_client import CollectorRegistry
    from prometheus_client import Counter as PromCounter

    registry = CollectorRegistry()
    sent = PromCounter("sent", "", ("sink",), registry=registry)
    dropped = PromCounter("dropped", "", ("sink", "reason"), registry=registry)
    attributes = Attributes("http://here/", "m", "", "predictor", "1", request=True, response=True)

    async def scenario() -> None:
        sink = FileSink(options.sink, options, Counters(sent, dropped, str(path)))
        sink.start()
        for i in range(100):
            sink.offer(Pending(attributes, a_call(i), time.time(), 2, 100))
            if i % 10 == 0:
                await asyncio.sleep(0.01)
        await sink.stop(10.0)

    asyncio.run(scenario())
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["p.jsonl", "p.jsonl.1", "p.jsonl.2", "p.jsonl.3", "p.jsonl.lock"]
    sizes = [(tmp_path / n).stat().st_size for n in names[:4]]
    assert all(0 < size <= 2048 for size in sizes)
    events, _ = read_events(path)
    # the newest events are kept, in order: the oldest file holds older ones than the current
    ids = [e["data"]["id"] for e in events if e["type"] == REQUEST]
    oldest = [json.loads(line)["data"]["id"] for line in (tmp_path / "p.jsonl.3").read_text().splitlines()]
    current = [json.loads(line)["data"]["id"] for line in path.read_text().splitlines()]
    assert int(oldest[0][1:]) < int(current[-1][1:]) == 99
    assert len(ids) < 100  # the files beyond max_files are gone
    assert registry.get_sample_value("sent_total", {"sink": str(path)}) == 200


def a_call(i: int) -> InferenceCall:
    request = InferenceRequest([Tensor("x", np.array([[float(i)]]))], id=f"r{i}")
    response = InferenceResponse("m", [Tensor("y", np.array([[2.0 * i]]))], id=f"r{i}")
    return InferenceCall("test", Target("m"), None, request, response, seconds=0.001)


def test_http_sink_counts_refusals_and_comes_back_after_an_outage() -> None:
    from prometheus_client import CollectorRegistry
    from prometheus_client import Counter as PromCounter

    from servekit.payloads.sinks import HttpSink

    registry = CollectorRegistry()
    sent = PromCounter("sent", "", ("sink",), registry=registry)
    dropped = PromCounter("dropped", "", ("sink", "reason"), registry=registry)
    attributes = Attributes("http://here/", "m", "", "predictor", "1", request=True, response=True)
    refusing = Receiver(status=503)
    port = free_port()  # nothing listens there until the receiver below starts

    def count(name: str, **labels: str) -> float:
        return registry.get_sample_value(name, labels) or 0.0

    async def scenario() -> None:
        options = PayloadLogging(sink=refusing.url, flush_seconds=0, timeout=5)
        sink = HttpSink(refusing.url, options, Counters(sent, dropped, "refusing"))
        sink.start()
        for i in range(3):
            sink.offer(Pending(attributes, a_call(i), time.time(), 2, 100))
        await sink.stop(10.0)

        later = f"http://127.0.0.1:{port}/events"
        sink = HttpSink(later, PayloadLogging(sink=later, flush_seconds=0), Counters(sent, dropped, "later"))
        sink.start()
        sink.offer(Pending(attributes, a_call(10), time.time(), 2, 100))
        while count("dropped_total", sink="later", reason="unreachable") < 2:
            await asyncio.sleep(0.01)
        receiver = Receiver(port=port)  # the sink is back
        try:
            for i in range(11, 14):
                while sink.events:  # the first try after the outage takes what is queued
                    await asyncio.sleep(0.01)
                sink.offer(Pending(attributes, a_call(i), time.time(), 2, 100))
            await sink.stop(10.0)
        finally:
            receiver.close()
        got = sorted(json.loads(data)["id"] for headers, data in receiver.events if headers["ce-type"] == REQUEST)
        assert got == ["r11", "r12", "r13"]

    try:
        asyncio.run(scenario())
    finally:
        refusing.close()
    assert len(refusing.events) == 6  # the sink answered every event, with 503
    assert count("dropped_total", sink="refusing", reason="rejected") == 6
    assert count("sent_total", sink="refusing") == 0
    assert count("dropped_total", sink="later", reason="unreachable") == 2
    assert count("sent_total", sink="later") == 6


def test_http_sink_pipelines_and_resends_what_a_closing_sink_left_unanswered() -> None:
    from prometheus_client import CollectorRegistry
    from prometheus_client import Counter as PromCounter

    from servekit.payloads.sinks import HttpSink

    registry = CollectorRegistry()
    sent = PromCounter("sent", "", ("sink",), registry=registry)
    dropped = PromCounter("dropped", "", ("sink", "reason"), registry=registry)
    attributes = Attributes("http://here/", "m", "", "predictor", "1", request=True, response=True)
    results = {}
    for close in (False, True):
        receiver = Receiver(close=close)

        async def scenario(receiver: Receiver, close: bool) -> None:
            options = PayloadLogging(sink=receiver.url, flush_seconds=0.05)
            sink = HttpSink(receiver.url, options, Counters(sent, dropped, f"close={close}"))
            sink.start()
            for i in range(10):  # one batch of 20 events, pipelined
                sink.offer(Pending(attributes, a_call(i), time.time(), 2, 100))
            await sink.stop(20.0)

        try:
            asyncio.run(scenario(receiver, close))
        finally:
            receiver.close()
        results[close] = [(headers["ce-type"], json.loads(data)) for headers, data in receiver.events]
        assert registry.get_sample_value("sent_total", {"sink": f"close={close}"}) == 20
    for close, events in results.items():
        ids = [data["id"] for kind, data in events if kind == REQUEST]
        assert ids == [f"r{i}" for i in range(10)], close  # each once, in order
        assert len(events) == 20


def test_a_file_sink_that_cannot_write_counts_what_it_loses(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from prometheus_client import CollectorRegistry
    from prometheus_client import Counter as PromCounter

    registry = CollectorRegistry()
    sent = PromCounter("sent", "", ("sink",), registry=registry)
    dropped = PromCounter("dropped", "", ("sink", "reason"), registry=registry)
    attributes = Attributes("http://here/", "m", "", "predictor", "1", request=True, response=False)
    path = tmp_path / "missing-folder" / "p.jsonl"
    options = PayloadLogging(sink=f"file://{path}", flush_seconds=0, queue_size=5)

    async def scenario() -> None:
        sink = FileSink(options.sink, options, Counters(sent, dropped, "x"))
        sink.start()
        for i in range(8):  # 5 fit in the queue, 3 are refused at the door
            sink.offer(Pending(attributes, a_call(i), time.time(), 1, 100))
        while sink.events:
            await asyncio.sleep(0.01)
        path.parent.mkdir()  # the folder appears: the next batch is written
        await asyncio.sleep(0.2)  # the sink's pause after a failed write
        sink.offer(Pending(attributes, a_call(8), time.time(), 1, 100))
        await sink.stop(10.0)
        sink.offer(Pending(attributes, a_call(9), time.time(), 1, 100))  # after stop: counted, never queued

    with caplog.at_level("WARNING", logger="servekit.payloads"):
        asyncio.run(scenario())
    assert f"{path.parent} does not exist: payload events will be dropped until it is" in caplog.text
    assert registry.get_sample_value("dropped_total", {"sink": "x", "reason": "queue_full"}) == 3
    assert registry.get_sample_value("dropped_total", {"sink": "x", "reason": "write_failed"}) == 5
    assert registry.get_sample_value("dropped_total", {"sink": "x", "reason": "stopped"}) == 1
    assert registry.get_sample_value("sent_total", {"sink": "x"}) == 1
    assert [json.loads(line)["data"]["id"] for line in path.read_text().splitlines()] == ["r8"]


# -- an unreachable sink ---------------------------------------------------------------


def test_an_unreachable_sink_costs_the_inference_nothing_and_counts_what_it_loses(tmp_path: Path) -> None:
    nobody = f"http://127.0.0.1:{free_port()}/events"  # nothing listens there
    root = repository(tmp_path / "models", {
        "double": {"sink": nobody, "queue_size": 10, "flush_seconds": 0.01, "timeout": 1},
    })
    with ServerProcess(["serve", str(root)]) as server:
        for i in range(60):
            answer = requests.post(f"{server.url}/v2/models/double/infer", json=body(float(i), 1.0), timeout=10)
            assert answer.status_code == 200 and answer.json()["outputs"][0]["data"] == [2.0 * i, 2.0]
        failed = requests.post(f"{server.url}/v2/models/double/infer", json=body(-1.0), timeout=10)
        assert failed.status_code == 400 and "negative" in failed.json()["error"]
        metrics = f"http://127.0.0.1:{server.metrics_port}/metrics"
        label = nobody
        # every one of the 122 events is counted as dropped once the sink has tried
        deadline = time.monotonic() + 60
        while metric(metrics, "servekit_payload_events_dropped_total", sink=label) < 122:
            assert time.monotonic() < deadline, requests.get(metrics, timeout=10).text[-2000:]
            time.sleep(0.2)
        assert metric(metrics, "servekit_payload_events_dropped_total", sink=label) == 122
        assert metric(metrics, "servekit_payload_events_dropped_total", sink=label, reason="unreachable") >= 2
        assert metric(metrics, "servekit_payload_events_dropped_total", sink=label, reason="queue_full") > 0
        assert metric(metrics, "servekit_payload_events_sent_total", sink=label) == 0
        assert requests.get(f"{server.url}/v2/health/ready", timeout=10).status_code == 200
    assert f"Payload sink {nobody}: cannot connect: ConnectionRefusedError" in server.log()


# -- events and settings without a server -----------------------------------------------


def test_events_of_a_call_that_could_not_be_decoded() -> None:
    attributes = Attributes("http://here/", "m", "ns", "predictor", "2", request=True, response=True)
    call = InferenceCall("v2_rest", Target("m"), None, None, None, InvalidInput("bad JSON at 1:3"), seconds=0.5)
    request, response = pair(attributes, call, 1_800_000_000.25)
    assert request.id == response.id and request.data is None and "datacontenttype" not in request.attributes
    assert ("content-type", "application/json") not in request.headers()
    assert json.loads(response.data or b"") == {"error": "bad JSON at 1:3"}
    assert response.attributes["statuscode"] == "400" and response.attributes["endpoint"] == "2"
    assert request.attributes["time"] == rfc3339_of(1_800_000_000.25 - 0.5)  # when it arrived
    assert response.attributes["time"] == rfc3339_of(1_800_000_000.25)
    line = json.loads(response.structured())
    assert line["data"] == {"error": "bad JSON at 1:3"} and line["type"] == RESPONSE
    failed = InferenceCall("v2_rest", Target("m"), None, None, None, ModelFailed("model 'm' raised"), seconds=0)
    assert pair(attributes, failed, 0.0)[1].attributes["statuscode"] == "500"


def rfc3339_of(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_header_values_are_percent_encoded() -> None:
    assert header_value("plain-id_1.2") == "plain-id_1.2"
    assert header_value('a b"c%d\r\né') == "a%20b%22c%25d%0D%0A%C3%A9"


def test_settings_are_checked_with_messages_that_say_what_to_write() -> None:
    with pytest.raises(ConfigError, match="absolute path"):
        load_server_settings(None, {"payload_logging": "file://relative.jsonl"})
    with pytest.raises(ConfigError, match=r"payload-logging sample_rate"):
        load_server_settings(None, {"payload_logging": '{"sink": "http://127.0.0.1:9/", "sample_rate": 2}'})
    with pytest.raises(ConfigError, match="a sink is file"):
        load_server_settings(None, {"payload_logging": "kafka://broker/topic"})
    settings = load_server_settings(None, {"payload_logging": "http://127.0.0.1:9/x"})
    assert settings.payload_logging is not None and settings.payload_logging.mode == "all"
    model = ModelSettings.model_validate({"name": "m", "payload_logging": {"url": "file:///tmp/x.jsonl",
                                                                             "mode": "request"}})
    assert isinstance(model.payload_logging, PayloadLogging) and model.payload_logging.sink == "file:///tmp/x.jsonl"
    with pytest.raises(ValueError, match="mode"):
        ModelSettings.model_validate({"name": "m", "payload_logging": {"sink": "file:///x", "mode": "some"}})
