"""The KServe Python SDK's own clients (kserve.InferenceRESTClient for V1 and
V2, kserve.InferenceGRPCClient), called as KServe's docs write them, against
one running server; prints one JSON line per call: {"test", "passed", "detail"}.

Usage: python kserve_calls.py HTTP_URL GRPC_HOST:PORT EXPECTED.json
(EXPECTED: the iris rows and the predictions the served model must give.)
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import httpx
import numpy as np
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.infer_type import RequestedOutput

HTTP, GRPC, EXPECTED = sys.argv[1], sys.argv[2], json.loads(open(sys.argv[3]).read())
ROWS = np.array(EXPECTED["rows"], dtype=np.float64)
PREDICTIONS = EXPECTED["predict"]

# every V2 datatype with values at the edges of its range; the echo model answers them unchanged
TENSORS: dict[str, np.ndarray] = {
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
    "FP32": np.array([[0.5, -3.25e38], [1e-30, 2.0]], dtype=np.float32),
    "FP64": np.array([np.pi, -1e300, 5e-324]),
    "BYTES": np.array([b"plain", "h\u00e9llo \u2603".encode(), b""], dtype=object),
}
# KServe's SDK refuses FP16 in JSON ("Sending FP16 data via JSON is not supported") and the
# gRPC contents have no FP16 field: FP16 travels as binary / raw_input_contents only
JSON_TYPES = [t for t in TENSORS if t != "FP16"]


def as_bytes(values: Any) -> list[bytes]:
    return [v if isinstance(v, bytes) else str(v).encode() for v in np.asarray(values, dtype=object).ravel()]


def equal(got: np.ndarray, sent: np.ndarray) -> str | None:
    """None when the answer holds the tensor that was sent, else what differs."""
    if tuple(got.shape) != tuple(sent.shape):
        return f"shape {list(got.shape)}, sent {list(sent.shape)}"
    if sent.dtype == object:
        return None if as_bytes(got) == as_bytes(sent) else f"{as_bytes(got)} != {as_bytes(sent)}"
    if got.dtype != sent.dtype:
        return f"dtype {got.dtype}, sent {sent.dtype}"
    return None if np.array_equal(got, sent) else f"{got.tolist()} != {sent.tolist()}"


def echo_request(datatype: str, binary: bool, **options: Any) -> InferRequest:
    tensor = TENSORS[datatype]
    entry = InferInput(name=f"in-{datatype.lower()}", shape=list(tensor.shape), datatype=datatype)
    entry.set_data_from_numpy(tensor, binary_data=binary)
    return InferRequest(model_name="echo", infer_inputs=[entry], request_id=f"echo-{datatype}", **options)


def check_echo(response: Any, datatype: str) -> str | None:
    output = response.outputs[0]
    if output.name != f"in-{datatype.lower()}" or output.datatype != datatype:
        return f"output {output.name} {output.datatype}"
    return equal(output.as_numpy(), TENSORS[datatype])


def iris_request(**options: Any) -> InferRequest:
    entry = InferInput(name="input-0", shape=list(ROWS.shape), datatype="FP64")
    entry.set_data_from_numpy(ROWS, binary_data=False)
    return InferRequest(model_name="iris", infer_inputs=[entry], **options)


def predictions(response: Any) -> list[Any]:
    output = next(o for o in response.outputs if o.name == "predict")
    return [int(v) for v in output.as_numpy().ravel()]


async def expect_error(call: Awaitable[Any], kind: type[BaseException], *fragments: str) -> str | None:
    try:
        answer = await call
    except kind as exc:
        text = f"{exc} {getattr(exc, 'details', lambda: '')()}" if isinstance(exc, grpc.RpcError) else str(exc)
        missing = [f for f in fragments if f not in text]
        return f"error without {missing}: {text}" if missing else None
    return f"no error, answered {answer}"


def grpc_code(code: grpc.StatusCode) -> Callable[[Awaitable[Any]], Awaitable[str | None]]:
    async def check(call: Awaitable[Any]) -> str | None:
        try:
            answer = await call
        except grpc.RpcError as exc:
            got = exc.code()  # type: ignore[attr-defined]
            return None if got == code else f"{got}: {exc.details()}"  # type: ignore[attr-defined]
        return f"no error, answered {answer}"

    return check


async def main() -> None:
    results: list[dict[str, Any]] = []

    async def case(name: str, check: Callable[[], Awaitable[str | None]]) -> None:
        try:
            problem = await check()
        except Exception as exc:  # noqa: BLE001 - a failing call is a result, not a crash
            problem = f"{type(exc).__name__}: {exc}"
        results.append({"test": name, "passed": problem is None, "detail": problem or ""})
        print(json.dumps(results[-1]), flush=True)

    def truth(value: Any, expected: Any) -> str | None:
        return None if value == expected else f"answered {value!r}, expected {expected!r}"

    # -- V2 over REST -----------------------------------------------------------------
    v2 = InferenceRESTClient(RESTConfig(protocol="v2", timeout=30))

    async def live() -> str | None:
        return truth(await v2.is_server_live(HTTP), True)

    async def ready() -> str | None:
        return truth(await v2.is_server_ready(HTTP), True)

    async def model_ready() -> str | None:
        return truth(await v2.is_model_ready(HTTP, "iris"), True)

    async def model_missing() -> str | None:
        return truth(await v2.is_model_ready(HTTP, "no-such-model"), False)

    await case("REST v2 is_server_live", live)
    await case("REST v2 is_server_ready", ready)
    await case("REST v2 is_model_ready", model_ready)
    await case("REST v2 is_model_ready, unknown model: False", model_missing)
    for datatype in JSON_TYPES:
        async def json_echo(datatype: str = datatype) -> str | None:
            return check_echo(await v2.infer(HTTP, echo_request(datatype, binary=False), model_name="echo"), datatype)

        await case(f"REST v2 infer {datatype}, JSON", json_echo)
    for datatype in TENSORS:
        async def binary_echo(datatype: str = datatype) -> str | None:
            request = echo_request(datatype, binary=True, parameters={"binary_data_output": True})
            return check_echo(await v2.infer(HTTP, request, model_name="echo"), datatype)

        await case(f"REST v2 infer {datatype}, binary in and out", binary_echo)

    async def iris_json() -> str | None:
        return truth(predictions(await v2.infer(HTTP, iris_request(), model_name="iris")), PREDICTIONS)

    async def iris_outputs() -> str | None:
        response = await v2.infer(HTTP, iris_request(request_outputs=[RequestedOutput("predict_proba")]),
                                  model_name="iris")
        names = [o.name for o in response.outputs]
        probabilities = response.outputs[0].as_numpy()
        if names != ["predict_proba"] or probabilities.shape != (len(ROWS), 3):
            return f"outputs {names}, shape {probabilities.shape}"
        return truth([int(i) for i in probabilities.argmax(axis=1)], PREDICTIONS)

    async def iris_dict() -> str | None:
        body = {"inputs": [{"name": "input-0", "shape": list(ROWS.shape), "datatype": "FP64",
                            "data": ROWS.ravel().tolist()}]}
        return truth(predictions(await v2.infer(HTTP, body, model_name="iris")), PREDICTIONS)

    async def v2_missing() -> str | None:
        return await expect_error(v2.infer(HTTP, iris_request(), model_name="no-such-model"),
                                  httpx.HTTPStatusError, "404", "no-such-model")

    async def v2_bad_input() -> str | None:
        entry = InferInput(name="input-0", shape=[1, 3], datatype="FP64")
        entry.set_data_from_numpy(np.zeros((1, 3)), binary_data=False)
        return await expect_error(v2.infer(HTTP, InferRequest("iris", [entry]), model_name="iris"),
                                  httpx.HTTPStatusError, "400")

    await case("REST v2 infer iris (scikit-learn), JSON", iris_json)
    await case("REST v2 infer iris with requested output predict_proba", iris_outputs)
    await case("REST v2 infer iris, dict body", iris_dict)
    await case("REST v2 infer unknown model: HTTPStatusError 404 naming it", v2_missing)
    await case("REST v2 infer wrong shape: HTTPStatusError 400", v2_bad_input)
    await v2.close()

    # -- V2 over gRPC -------------------------------------------------------------------
    g = InferenceGRPCClient(GRPC, timeout=30)

    async def g_live() -> str | None:
        return truth(await g.is_server_live(), True)

    async def g_ready() -> str | None:
        return truth(await g.is_server_ready(), True)

    async def g_model_ready() -> str | None:
        return truth(await g.is_model_ready("iris"), True)

    async def g_model_missing() -> str | None:
        # KServe's server raises NOT_FOUND, Triton's answers ready=false (tritonclient raises on any
        # error, so servekit answers as Triton does); either tells the caller the model is not ready
        try:
            return truth(await g.is_model_ready("no-such-model"), False)
        except grpc.RpcError as exc:
            code = exc.code()  # type: ignore[attr-defined]
            return None if code == grpc.StatusCode.NOT_FOUND else f"{code}: {exc.details()}"  # type: ignore[attr-defined]

    await case("gRPC is_server_live", g_live)
    await case("gRPC is_server_ready", g_ready)
    await case("gRPC is_model_ready", g_model_ready)
    await case("gRPC is_model_ready, unknown model: False (or NOT_FOUND)", g_model_missing)
    for datatype in TENSORS:
        async def raw_echo(datatype: str = datatype) -> str | None:
            return check_echo(await g.infer(echo_request(datatype, binary=True)), datatype)

        await case(f"gRPC infer {datatype}, raw_input_contents", raw_echo)
    for datatype in JSON_TYPES:
        async def typed_echo(datatype: str = datatype) -> str | None:
            return check_echo(await g.infer(echo_request(datatype, binary=False)), datatype)

        await case(f"gRPC infer {datatype}, typed contents", typed_echo)

    async def g_iris() -> str | None:
        return truth(predictions(await g.infer(iris_request())), PREDICTIONS)

    async def g_missing() -> str | None:
        request = iris_request()
        request.model_name = "no-such-model"
        return await grpc_code(grpc.StatusCode.NOT_FOUND)(g.infer(request))

    async def g_bad_input() -> str | None:
        entry = InferInput(name="input-0", shape=[1, 3], datatype="FP64")
        entry.set_data_from_numpy(np.zeros((1, 3)), binary_data=False)
        return await grpc_code(grpc.StatusCode.INVALID_ARGUMENT)(g.infer(InferRequest("iris", [entry])))

    await case("gRPC infer iris (scikit-learn)", g_iris)
    await case("gRPC infer unknown model: NOT_FOUND", g_missing)
    await case("gRPC infer wrong shape: INVALID_ARGUMENT", g_bad_input)
    await g.close()

    # -- V1 over REST, on the main port -------------------------------------------------------
    v1 = InferenceRESTClient(RESTConfig(protocol="v1", timeout=30))

    async def v1_live() -> str | None:
        return truth(await v1.is_server_live(HTTP), True)

    async def v1_model_ready() -> str | None:
        return truth(await v1.is_model_ready(HTTP, "iris"), True)

    async def v1_model_missing() -> str | None:
        return await expect_error(v1.is_model_ready(HTTP, "no-such-model"), httpx.HTTPStatusError, "404")

    async def v1_predict() -> str | None:
        answer = await v1.infer(HTTP, {"instances": ROWS.tolist()}, model_name="iris")
        return truth([int(p[0]) if isinstance(p, list) else int(p) for p in answer["predictions"]], PREDICTIONS)

    async def v1_missing() -> str | None:
        return await expect_error(v1.infer(HTTP, {"instances": ROWS.tolist()}, model_name="no-such-model"),
                                  httpx.HTTPStatusError, "404", "no-such-model")

    async def v1_explain() -> str | None:
        return await expect_error(v1.explain(HTTP, "iris", {"instances": ROWS.tolist()}),
                                  httpx.HTTPStatusError, "501")

    await case("REST v1 is_server_live (GET /)", v1_live)
    await case("REST v1 is_model_ready", v1_model_ready)
    await case("REST v1 is_model_ready, unknown model: HTTPStatusError 404", v1_model_missing)
    await case("REST v1 infer (:predict) iris", v1_predict)
    await case("REST v1 infer unknown model: HTTPStatusError 404 naming it", v1_missing)
    await case("REST v1 explain: HTTPStatusError 501 (no explainer)", v1_explain)
    await v1.close()


if __name__ == "__main__":
    asyncio.run(main())
