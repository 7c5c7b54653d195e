"""The soak run's load: client threads in spawned processes, each in a closed
loop until a deadline (and never more than ``MAX_ITERATIONS`` calls), that
record every call and check every answer against the model's own.

A record is a tuple (see :data:`Record`):

    (t_start, t_end, protocol, target, status, detail, server_port, client_port, connected_at)

``status`` is the HTTP status as text ("200", "404" …), or what went wrong
without one: "reset", "eof" (closed with no answer), "broken-pipe",
"incomplete" (answer cut short), "refused", "timeout", "grpc-unavailable",
"abandoned" (the client left on purpose) … ``detail`` says more: "wrong: …"
when an answer differs from the model's, "v3" for the TF Serving version
that answered. Times are ``time.monotonic()`` (one clock for every process).
Whether a record is a failure is decided afterwards, by soak.py, from the
timeline of kills and changes.
"""

from __future__ import annotations

import functools
import http.client
import json
import pickle
import random
import socket
import struct
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from models import ROWS, Expected

Record = tuple[float, float, str, str, str, str, int, int, float]
MAX_ITERATIONS = 2_000_000  # per thread: every loop ends, whatever the clock says
TIMEOUT = 30.0  # seconds for an answer; no answer by then is a lost request
CONNECTION_ERRORS = frozenset({"reset", "eof", "broken-pipe", "incomplete", "aborted"})
HOST = "127.0.0.1"


def error_name(exc: BaseException) -> str:
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "eof"
    if isinstance(exc, ConnectionResetError):
        return "reset"
    if isinstance(exc, BrokenPipeError):
        return "broken-pipe"
    if isinstance(exc, http.client.IncompleteRead):
        return "incomplete"
    if isinstance(exc, ConnectionAbortedError):
        return "aborted"
    return "other:" + type(exc).__name__


class Http:
    """One keep-alive HTTP/1.1 connection that knows its client port."""

    def __init__(self, port: int, timeout: float = TIMEOUT) -> None:
        self.port = port
        self.timeout = timeout
        self.conn: http.client.HTTPConnection | None = None
        self.client_port = 0
        self.connected_at = 0.0

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.conn = None

    def call(self, method: str, path: str, body: bytes | None = None,
             headers: dict[str, str] | None = None, fresh: bool = False
             ) -> tuple[float, float, str, bytes, http.client.HTTPResponse | None]:
        """(t_start, t_end, status, body, response)."""
        started = time.monotonic()
        if fresh:
            self.close()
        try:
            if self.conn is None:
                self.client_port, self.connected_at = 0, 0.0
                conn = http.client.HTTPConnection(HOST, self.port, timeout=self.timeout)
                conn.connect()
                assert conn.sock is not None
                self.conn = conn
                self.client_port = conn.sock.getsockname()[1]
                self.connected_at = time.monotonic()
            self.conn.request(method, path, body=body, headers=headers or {})
            response = self.conn.getresponse()
            data = response.read()
            if response.will_close:
                self.close()
            return started, time.monotonic(), str(response.status), data, response
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            return started, time.monotonic(), error_name(exc), b"", None


class Group:
    """Client threads of one process and what they recorded."""

    def __init__(self, cfg: dict[str, Any], stop: Any = None) -> None:
        self.cfg = cfg
        self.stop = stop  # a multiprocessing.Event: the run ended early (the server died)
        self.deadline = 0.0  # set when the run starts
        self.expected = Expected(Path(cfg["root"]))
        self.records: list[Record] = []
        self.lock = threading.Lock()
        self.crashes: list[str] = []

    def running(self) -> bool:
        return time.monotonic() < self.deadline and not (self.stop is not None and self.stop.is_set())

    def add(self, record: Record) -> None:
        with self.lock:
            self.records.append(record)
        if record[4] == "refused" or record[5].startswith("failed to connect"):
            time.sleep(0.1)  # nobody listens: do not spin

    def http_record(self, h: Http, proto: str, target: str, call: tuple[float, float, str, bytes, Any],
                    detail: str = "") -> None:
        started, ended, status, body, _ = call
        if status.startswith("5") and not detail:
            detail = body[:120].decode(errors="replace")
        self.add((started, ended, proto, target, status, detail, h.port, h.client_port, h.connected_at))

    def thread(self, name: str, loop: Any, *args: Any) -> threading.Thread:
        def run() -> None:
            rng = random.Random(f"{self.cfg['seed']}-{name}")
            try:
                for _ in range(MAX_ITERATIONS):
                    if not self.running():
                        break
                    loop(rng, *args)
            except Exception:
                self.crashes.append(f"{name}: {traceback.format_exc()}")
        return threading.Thread(target=run, name=name, daemon=True)


def sample(rng: random.Random, most: int = 8) -> list[int]:
    return [rng.randrange(len(ROWS)) for _ in range(rng.randint(1, most))]


def compare(got: Any, want: np.ndarray) -> str:
    try:
        values = np.asarray(got).reshape(-1)
    except (TypeError, ValueError):
        return f"wrong: unreadable answer {str(got)[:80]}"
    if values.shape != want.shape or not np.array_equal(values.astype(np.int64), want):
        return f"wrong: got {values.tolist()[:8]} want {want.tolist()[:8]}"
    return ""


# -- V2 REST: JSON and Triton's binary tensor extension ----------------------------
def v2_json(group: Group, h: Http, rng: random.Random) -> None:
    rows = sample(rng)
    model = "iris-rf" if rng.random() < 0.7 else "iris-lr"
    body = json.dumps({"inputs": [{"name": "predict", "shape": [len(rows), 4], "datatype": "FP64",
                                   "data": ROWS[rows].ravel().tolist()}]}).encode()
    call = h.call("POST", f"/v2/models/{model}/infer", body, {"Content-Type": "application/json"},
                  fresh=rng.random() < 0.1)
    detail = ""
    if call[2] == "200":
        try:
            detail = compare(json.loads(call[3])["outputs"][0]["data"], group.expected.classes[model][rows])
        except (ValueError, KeyError, IndexError) as exc:
            detail = f"wrong: {exc!r}"
    group.http_record(h, "v2-json", model, call, detail)


def v2_binary(group: Group, h: Http, rng: random.Random) -> None:
    rows = sample(rng, 32)
    model = "iris-rf" if rng.random() < 0.7 else "iris-lr"
    tensor = np.ascontiguousarray(ROWS[rows], dtype="<f8").tobytes()
    header = json.dumps({
        "inputs": [{"name": "predict", "shape": [len(rows), 4], "datatype": "FP64",
                    "parameters": {"binary_data_size": len(tensor)}}],
        "outputs": [{"name": "predict", "parameters": {"binary_data": True}}],
    }).encode()
    call = h.call("POST", f"/v2/models/{model}/infer", header + tensor,
                  {"Content-Type": "application/octet-stream",
                   "Inference-Header-Content-Length": str(len(header))}, fresh=rng.random() < 0.1)
    detail = ""
    if call[2] == "200":
        response = call[4]
        assert response is not None
        try:
            length = int(response.headers["Inference-Header-Content-Length"])
            document = json.loads(call[3][:length])
            output = document["outputs"][0]
            size = output["parameters"]["binary_data_size"]
            values = np.frombuffer(call[3][length:length + size], dtype="<i8")
            detail = compare(values, group.expected.classes[model][rows])
        except (TypeError, ValueError, KeyError, IndexError) as exc:
            detail = f"wrong: {exc!r}"
    group.http_record(h, "v2-binary", model, call, detail)


# -- V2 gRPC (tritonclient) ----------------------------------------------------------
GRPC_TRANSPORT = ("socket closed", "connection reset", "failed to connect", "broken pipe", "goaway",
                  "stream removed", "connection refused", "recvmsg", "sendmsg", "end of tcp stream",
                  "keepalive", "transport")


def grpc_status(exc: Any) -> str:
    code = str(exc.status() or "")
    message = (exc.message() or "").lower()
    if code.endswith("NOT_FOUND"):
        return "404"
    if code.endswith("INVALID_ARGUMENT"):
        return "400"
    if code.endswith("DEADLINE_EXCEEDED"):
        return "timeout"
    if code.endswith("UNAVAILABLE"):
        return "grpc-unavailable" if any(t in message for t in GRPC_TRANSPORT) else "503"
    if code.endswith("INTERNAL"):
        return "500"
    return "grpc-" + (code.rsplit(".", 1)[-1].lower() or "error")


def grpc_loop(group: Group, state: dict[str, Any], rng: random.Random) -> None:
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    port = group.cfg["ports"]["grpc"]
    if state.get("client") is None or rng.random() < 0.02:  # now and then a new channel
        if state.get("client") is not None:
            state["client"].close()
        # its own connection (gRPC shares one between channels to the same address by default)
        state["client"] = grpcclient.InferenceServerClient(
            f"{HOST}:{port}", channel_args=[("grpc.use_local_subchannel_pool", 1)])
    client = state["client"]
    rows = sample(rng, 16)
    model = "iris-rf" if rng.random() < 0.7 else "iris-lr"
    tensor = grpcclient.InferInput("predict", [len(rows), 4], "FP64")
    tensor.set_data_from_numpy(np.ascontiguousarray(ROWS[rows]))
    started = time.monotonic()
    detail = ""
    try:
        result = client.infer(model, [tensor], client_timeout=TIMEOUT)
        status = "200"
        detail = compare(result.as_numpy("predict"), group.expected.classes[model][rows])
    except InferenceServerException as exc:
        status = grpc_status(exc)
        if status not in ("404",):
            detail = (exc.message() or "")[:160]
    group.add((started, time.monotonic(), "v2-grpc", model, status, detail, port, 0, 0.0))


# -- TF Serving REST ------------------------------------------------------------------
def tfs_loop(group: Group, h: Http, state: dict[str, Any], rng: random.Random) -> None:
    now = time.monotonic()
    if now - state.get("status_at", 0.0) > 1.0:
        state["status_at"] = now
        call = h.call("GET", "/v1/models/tf-rolling")
        versions: list[int] = []
        if call[2] == "200":
            try:
                versions = sorted(int(s["version"]) for s in json.loads(call[3])["model_version_status"]
                                  if s.get("state") == "AVAILABLE")
            except (ValueError, KeyError, TypeError):
                versions = []
        state["versions"] = versions or state.get("versions", [1, 2])
        group.http_record(h, "tfs-rest", "tf-rolling:status", call, ",".join(map(str, versions)))
        return
    choice = rng.random()
    if choice < 0.2:
        target, path = "tf-static@stable", "/v1/models/tf-static/labels/stable:predict"
    elif choice < 0.3:
        target, path = "tf-static@canary", "/v1/models/tf-static/labels/canary:predict"
    elif choice < 0.45:
        v = rng.choice((1, 2))
        target, path = f"tf-static/{v}", f"/v1/models/tf-static/versions/{v}:predict"
    elif choice < 0.7:
        target, path = "tf-rolling@latest", "/v1/models/tf-rolling:predict"
    elif choice < 0.85:
        v = rng.choice(state.get("versions") or [1])
        target, path = f"tf-rolling/{v}", f"/v1/models/tf-rolling/versions/{v}:predict"
    else:
        target, path = "tf-toggle", "/v1/models/tf-toggle:predict"
    rows = sample(rng)
    body = json.dumps({"instances": ROWS[rows].tolist()}).encode()
    call = h.call("POST", path, body, {"Content-Type": "application/json"}, fresh=rng.random() < 0.1)
    detail = ""
    if call[2] == "200":
        try:
            got = json.loads(call[3])["predictions"]
            version = group.expected.which_version(rows, got, range(1, 200))
            detail = f"v{version}" if version is not None else f"wrong: {str(got)[:80]}"
        except (ValueError, KeyError) as exc:
            detail = f"wrong: {exc!r}"
    group.http_record(h, "tfs-rest", target, call, detail)


# -- /predict (Flask form) and Seldon's form --------------------------------------------
def predict_loop(group: Group, h: Http, rng: random.Random) -> None:
    rows = sample(rng)
    data = ROWS[rows].tolist()
    choice = rng.random()
    if choice < 0.3:
        proto, target, path, document, key = "seldon", "iris-rf", "/predict", {"data": {"ndarray": data}}, "seldon"
    elif choice < 0.45:
        proto, target, path, document, key = ("seldon", "iris-rf", "/api/v1.0/predictions",
                                              {"data": {"ndarray": data}}, "seldon")
    elif choice < 0.65:
        proto, target, path, document, key = "predict", "iris-rf", "/predict", {"inputs": data}, "prediction"
    else:
        model = "iris-rf" if rng.random() < 0.6 else "iris-lr"
        proto, target, path, document, key = "predict", model, f"/predict/{model}", {"inputs": data}, "prediction"
    call = h.call("POST", path, json.dumps(document).encode(), {"Content-Type": "application/json"},
                  fresh=rng.random() < 0.1)
    detail = ""
    if call[2] == "200":
        try:
            answer = json.loads(call[3])
            got = answer["data"]["ndarray"] if key == "seldon" else answer["prediction"]
            detail = compare(got, group.expected.classes[target][rows])
        except (ValueError, KeyError, TypeError) as exc:
            detail = f"wrong: {exc!r}"
    group.http_record(h, proto, target, call, detail)


# -- slow, stalled and abandoning clients (raw sockets) ----------------------------------
def _request_bytes(rows: list[int], model: str = "iris-rf") -> tuple[bytes, bytes]:
    body = json.dumps({"inputs": [{"name": "predict", "shape": [len(rows), 4], "datatype": "FP64",
                                   "data": ROWS[rows].ravel().tolist()}]}).encode()
    head = (f"POST /v2/models/{model}/infer HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    return head, body


def _read_answer(sock: socket.socket) -> tuple[str, bytes]:
    """Status and body of one HTTP/1.1 answer with a Content-Length."""
    data = b""
    for _ in range(100_000):
        if b"\r\n\r\n" in data:
            break
        chunk = sock.recv(65536)
        if not chunk:
            raise http.client.RemoteDisconnected("closed before the answer")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = lines[0].split()[1].decode()
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    for _ in range(100_000):
        if len(rest) >= length:
            break
        chunk = sock.recv(65536)
        if not chunk:
            raise http.client.IncompleteRead(rest, length - len(rest))
        rest += chunk
    return status, rest[:length]


def _connect(port: int, timeout: float) -> tuple[socket.socket, int, float]:
    sock = socket.create_connection((HOST, port), timeout=timeout)
    return sock, sock.getsockname()[1], time.monotonic()


def slow_loop(group: Group, rng: random.Random) -> None:
    """A body (and sometimes the head) sent in pieces over a few seconds."""
    port = group.cfg["ports"]["http"]
    rows = sample(rng)
    head, body = _request_bytes(rows)
    pieces = 8
    slow_head = rng.random() < 0.3
    parts = [head[j * len(head) // 4:(j + 1) * len(head) // 4] for j in range(4)] if slow_head else [head]
    size = -(-len(body) // pieces)
    parts += [body[i:i + size] for i in range(0, len(body), size)]
    started = time.monotonic()
    client_port, connected_at, detail = 0, 0.0, "slow head" if slow_head else ""
    try:
        sock, client_port, connected_at = _connect(port, TIMEOUT)
        with sock:
            for part in parts:
                sock.sendall(part)
                time.sleep(rng.uniform(0.2, 0.6))
            status, answer = _read_answer(sock)
        if status == "200":
            detail = compare(json.loads(answer)["outputs"][0]["data"], group.expected.classes["iris-rf"][rows])
    except (OSError, http.client.HTTPException) as exc:
        status = error_name(exc)
    group.add((started, time.monotonic(), "slow", "iris-rf", status, detail, port, client_port, connected_at))


def stalled_loop(group: Group, rng: random.Random) -> None:
    """Half a body, then nothing: the server should answer 408 after its body timeout (30 s)."""
    port = group.cfg["ports"]["http"]
    if group.deadline - time.monotonic() < 45:  # not enough time left to see the 408
        time.sleep(min(1.0, max(0.0, group.deadline - time.monotonic())))
        return
    head, body = _request_bytes(sample(rng))
    started = time.monotonic()
    client_port, connected_at = 0, 0.0
    try:
        sock, client_port, connected_at = _connect(port, 45.0)
        with sock:
            sock.sendall(head + body[: len(body) // 2])
            status, _ = _read_answer(sock)
    except (OSError, http.client.HTTPException) as exc:
        status = error_name(exc)
    group.add((started, time.monotonic(), "stalled", "iris-rf", status, "", port, client_port, connected_at))


ABANDON_KINDS = ("close-after-send", "reset-after-send", "close-mid-body", "close-after-1ms", "pipelined-unread",
                 "close-mid-grpc")


def abandon_loop(group: Group, state: dict[str, int], rng: random.Random) -> None:
    """Send a request and leave before the answer, in one of several ways."""
    kind = ABANDON_KINDS[state.setdefault("n", 0) % len(ABANDON_KINDS)]
    state["n"] += 1
    port = group.cfg["ports"]["grpc" if kind == "close-mid-grpc" else "http"]
    head, body = _request_bytes(sample(rng, 64), "iris-rf" if rng.random() < 0.7 else "iris-lr")
    started = time.monotonic()
    client_port, connected_at, detail = 0, 0.0, kind
    try:
        sock, client_port, connected_at = _connect(port, 5.0)
        with sock:
            if kind == "close-mid-grpc":  # HTTP/2 preface and half a SETTINGS frame
                sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x0c\x04")
            elif kind == "close-mid-body":
                sock.sendall(head + body[: len(body) // 2])
            elif kind == "pipelined-unread":
                sock.sendall((head + body) * 3)
            else:
                sock.sendall(head + body)
            if kind == "reset-after-send":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            elif kind == "close-after-1ms":
                time.sleep(0.001)
    except OSError as exc:
        detail = f"{kind} ({error_name(exc)} while sending)"
    group.add((started, time.monotonic(), "abandon", "iris-rf", "abandoned", detail, port, client_port, connected_at))
    time.sleep(0.02)


# -- process entry ----------------------------------------------------------------------
def run_group(kind: str, cfg: dict[str, Any], out_path: str, start: Any, stop: Any) -> None:
    """Say ready, wait for the start, run one process's client threads until the
    deadline (or ``stop`` is set); pickle their records to ``out_path``.

    ``start`` is (ready queue, go event, shared deadline): every process starts at
    once, after all have imported what they need."""
    group = Group(cfg, stop)
    ready, go, deadline = start
    ready.put(kind)
    if not go.wait(300):
        return
    group.deadline = deadline.value
    ports, scale = cfg["ports"], cfg["scale"]
    threads: list[threading.Thread] = []

    def count(n: int) -> int:
        return max(1, round(n * float(scale)))

    def add(name: str, n: int, make: Any) -> None:
        """``n`` threads, each looping ``make()``'s function (its own connection and state)."""
        for i in range(count(n)):
            threads.append(group.thread(f"{name}-{i}", make()))

    if kind == "v2":
        add("v2-json", 3, lambda: functools.partial(v2_json, group, Http(ports["http"])))
        add("v2-binary", 2, lambda: functools.partial(v2_binary, group, Http(ports["http"])))
    elif kind == "grpc":
        add("grpc", 3, lambda: functools.partial(grpc_loop, group, {}))
    elif kind == "tfs-predict":
        add("tfs", 3, lambda: functools.partial(tfs_loop, group, Http(ports["tf_rest"]), {}))
        add("predict", 2, lambda: functools.partial(predict_loop, group, Http(ports["http"])))
    elif kind == "edge":
        add("slow", 2, lambda: functools.partial(slow_loop, group))
        threads.append(group.thread("stalled", functools.partial(stalled_loop, group)))
        threads.append(group.thread("abandon", functools.partial(abandon_loop, group, {})))
    else:
        raise ValueError(kind)
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max(0.0, group.deadline - time.monotonic()) + TIMEOUT + 60)
    with group.lock:
        records = list(group.records)
    hung = [t.name for t in threads if t.is_alive()]
    Path(out_path).write_bytes(pickle.dumps({"records": records, "crashes": group.crashes, "hung": hung}))
