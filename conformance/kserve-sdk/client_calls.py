"""servekit's own client (servekit.Client) against a V2 server, here KServe's
model server: health, every datatype through the echo model over REST JSON,
REST binary and gRPC, iris from a bare array, a typed error. Prints one JSON
line per call: {"test", "passed", "detail"}. Runs with servekit's interpreter.

Usage: python client_calls.py HTTP_URL GRPC_HOST:PORT EXPECTED.json
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from servekit import Client
from servekit.client import errors

HTTP, GRPC, EXPECTED = sys.argv[1], sys.argv[2], json.loads(open(sys.argv[3]).read())
ROWS = np.array(EXPECTED["rows"])
TENSORS = {
    "BOOL": np.array([[True, False], [False, True]]),
    "UINT8": np.array([0, 255], dtype=np.uint8), "UINT16": np.array([0, 65535], dtype=np.uint16),
    "UINT32": np.array([0, 2**32 - 1], dtype=np.uint32), "UINT64": np.array([0, 2**64 - 1], dtype=np.uint64),
    "INT8": np.array([-128, 127], dtype=np.int8), "INT16": np.array([-(2**15), 2**15 - 1], dtype=np.int16),
    "INT32": np.array([[-(2**31), 1], [2, 2**31 - 1]], dtype=np.int32),
    "INT64": np.array([-(2**63), 2**63 - 1], dtype=np.int64),
    "FP16": np.array([1.5, -2.25], dtype=np.float16), "FP32": np.array([[0.5, -3.25e38]], dtype=np.float32),
    "FP64": np.array([np.pi, 5e-324]), "BYTES": np.array([b"plain", "h\u00e9llo".encode(), b""], dtype=object),
}


def main() -> None:
    def case(name: str, check: Callable[[], str | None]) -> None:
        try:
            problem = check()
        except Exception as exc:  # noqa: BLE001 - a failing call is a result
            problem = f"{type(exc).__name__}: {exc}"
        print(json.dumps({"test": name, "passed": problem is None, "detail": (problem or "")[:500]}), flush=True)

    for protocol, url in (("rest", HTTP), ("binary", HTTP), ("grpc", f"grpc://{GRPC}")):
        client = Client(url, protocol=protocol)  # type: ignore[arg-type]

        def health(client: Client = client) -> str | None:
            got = (client.live(), client.ready(), client.model_ready("iris"), client.model_ready("no-such-model"))
            return None if got == (True, True, True, False) else f"live, ready, model ready, unknown: {got}"

        case(f"{protocol}: live, ready, model_ready", health)
        for datatype, tensor in TENSORS.items():
            def echo(client: Client = client, datatype: str = datatype, tensor: Any = tensor) -> str | None:
                got = client.infer("echo", {"x": tensor})["x"]
                if got.shape != tensor.shape or got.dtype != tensor.dtype or got.tolist() != tensor.tolist():
                    return f"sent {tensor.tolist()} ({tensor.dtype}), got {got.tolist()} ({got.dtype})"
                return None

            case(f"{protocol}: echo {datatype}", echo)

        def iris(client: Client = client) -> str | None:
            got = client.infer("iris", ROWS)["predict"].ravel().tolist()
            return None if got == EXPECTED["predict"] else f"predicted {got}"

        def missing(client: Client = client) -> str | None:
            try:
                client.infer("no-such-model", ROWS)
            except errors.ModelNotFound as exc:
                return None if "no-such-model" in exc.message else f"message without the name: {exc}"
            return "no error"

        case(f"{protocol}: iris from a bare array", iris)
        case(f"{protocol}: unknown model is ModelNotFound naming it", missing)
        client.close()


if __name__ == "__main__":
    main()
