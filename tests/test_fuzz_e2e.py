"""Fuzzing a real ``servekit serve`` process over every REST surface and both
gRPC services, plus one regression test per bug of issue 10 (items 5 and 14).

Each REST surface gets ``SERVEKIT_FUZZ_EXAMPLES`` (200 unless set) bodies
made by hypothesis, mostly almost-valid, from the strategies of
``test_fuzz_codecs``: the answer is never a 5xx, an error is in the
protocol's own format with a message, and the server still answers a good
request afterwards. The server's log must hold no traceback at the end.
Everything talks to 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import joblib
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from servers import ServerProcess, free_port
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from test_fuzz_codecs import (
    Nested,
    anything,
    dump,
    one_in,
    seldon_body,
    tf_body,
    tf_examples_body,
    tf_predict_request,
    tf_value,
    v2_body,
    v2_grpc_request,
)

from servekit.protocols import grpc_errors
from servekit.protocols.generated import grpc_predict_v2_pb2 as v2pb
from servekit.protocols.generated.tfserving import tensorflow_serving_pb2 as tfspb


def examples(default: int) -> int:
    value = os.environ.get("SERVEKIT_FUZZ_EXAMPLES", "")
    return int(value) if value.strip() else default


E2E_FUZZ = settings(
    max_examples=examples(200),
    deadline=None,  # never a timed assertion
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
GRPC_FUZZ = settings(E2E_FUZZ, max_examples=examples(100))
IRIS_ROW = [5.1, 3.5, 1.4, 0.2]
TIMEOUT = 30  # a bound on each call, never asserted on


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fuzz-models")
    X, y = load_iris(return_X_y=True)
    (root / "iris").mkdir()
    joblib.dump(LogisticRegression(max_iter=500).fit(X, y), root / "iris" / "model.joblib")
    (root / "iris" / "model-settings.json").write_text(json.dumps(
        {"name": "iris", "implementation": "sklearn", "parameters": {"uri": "model.joblib", "version": "1"}}))
    return root


class Server(ServerProcess):
    """V2 (REST, gRPC), TF Serving (REST, gRPC), Seldon and /predict in one process."""

    def __init__(self, repository: Path) -> None:
        self.tf_rest_port, self.tf_grpc_port = free_port(), free_port()
        super().__init__(["serve", str(repository), f"--rest_api_port={self.tf_rest_port}",
                          f"--port={self.tf_grpc_port}", "--max-request-size", str(1 << 20)])

    @property
    def tf_rest(self) -> str:
        return f"http://127.0.0.1:{self.tf_rest_port}"


@pytest.fixture(scope="module")
def server(repository: Path) -> Iterator[Server]:
    with Server(repository) as proc:
        yield proc


def no_traceback_since(server: Server, mark: int) -> None:
    """Nothing the fuzzing sent made the server log a traceback."""
    log = server.log()[mark:]
    assert "Traceback" not in log, log[-4000:]


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as http:
        yield http


# -- what each protocol answers -------------------------------------------------------
def check_plain(response: requests.Response) -> Any:
    """V2, TF Serving and /predict: ``{"error": "…"}`` for a failure."""
    assert response.status_code < 500, response.text
    body = response.json()
    if response.status_code >= 400:
        assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"], body
    return body


def check_seldon(response: requests.Response) -> Any:
    """Seldon: ``{"status": {"code": -1, "info", "reason": "MICROSERVICE_BAD_DATA", "status": 1}}``."""
    assert response.status_code < 500, response.text
    body = response.json()
    if response.status_code >= 400:
        status = body["status"]
        assert status["code"] == -1 and status["status"] == 1, body
        assert status["reason"] == "MICROSERVICE_BAD_DATA", body
        assert isinstance(status["info"], str) and status["info"], body
    return body


def still_serving(server: Server) -> None:
    """After the fuzzing, a good request on every surface gets the right answer."""
    v2 = requests.post(f"{server.url}/v2/models/iris/infer", timeout=TIMEOUT, json={
        "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": IRIS_ROW}]})
    assert v2.status_code == 200, v2.text
    assert v2.json()["outputs"][0]["data"] == [0]
    tf = requests.post(f"{server.tf_rest}/v1/models/iris:predict", json={"instances": [IRIS_ROW]},
                       timeout=TIMEOUT)
    assert tf.status_code == 200 and tf.json() == {"predictions": [0]}, tf.text
    seldon = requests.post(f"{server.url}/api/v1.0/predictions", json={"data": {"ndarray": [IRIS_ROW]}},
                           timeout=TIMEOUT)
    assert seldon.status_code == 200 and seldon.json()["data"]["ndarray"] == [0], seldon.text
    flask = requests.post(f"{server.url}/predict/iris", json={"inputs": [IRIS_ROW]}, timeout=TIMEOUT)
    assert flask.status_code == 200 and flask.json() == {"prediction": [0]}, flask.text


# -- REST fuzzing -----------------------------------------------------------------------
def test_fuzz_v2_rest(server: Server, session: requests.Session) -> None:
    mark = len(server.log())
    @E2E_FUZZ
    @given(body=v2_body())
    def send(body: tuple[bytes, dict[str, str]]) -> None:
        data, headers = body
        response = session.post(f"{server.url}/v2/models/iris/infer", data=data, headers=headers,
                                timeout=TIMEOUT)
        assert response.status_code < 500, response.text
        if response.status_code >= 400 or not response.headers.get("inference-header-content-length"):
            answer = check_plain(response)
            if response.status_code == 200:
                assert answer["model_name"] == "iris" and isinstance(answer["outputs"], list)

    send()
    still_serving(server)
    no_traceback_since(server, mark)


def test_fuzz_tfserving_rest(server: Server, session: requests.Session) -> None:
    mark = len(server.log())
    @E2E_FUZZ
    @given(call=st.one_of(
        st.tuples(st.just("predict"), tf_body()),
        st.tuples(st.sampled_from(["classify", "regress"]), tf_examples_body()),
    ))
    def send(call: tuple[str, bytes]) -> None:
        method, body = call
        answer = check_plain(session.post(f"{server.tf_rest}/v1/models/iris:{method}", data=body,
                                          timeout=TIMEOUT))
        keys = {"predict": {"predictions", "outputs"}, "classify": {"results"}, "regress": {"results"}}
        assert set(answer) <= keys[method] | {"error"} and len(answer) == 1, answer

    send()
    still_serving(server)
    no_traceback_since(server, mark)


def test_fuzz_seldon(server: Server, session: requests.Session) -> None:
    mark = len(server.log())
    @E2E_FUZZ
    @given(body=seldon_body())
    def send(body: bytes) -> None:
        answer = check_seldon(session.post(f"{server.url}/api/v1.0/predictions", data=body,
                                           timeout=TIMEOUT))
        assert {"status", "data", "jsonData", "strData", "binData"} & set(answer), answer

    send()
    still_serving(server)
    no_traceback_since(server, mark)


@st.composite
def predict_body(draw: st.DrawFn) -> bytes:
    """``/predict/<name>``: Flask's ``{"inputs": rows}``, mostly."""
    if one_in(draw, 20):
        return draw(st.binary(max_size=40))
    document: Any = {"inputs": draw(tf_value())}
    if one_in(draw, 10):
        document = draw(anything)
    return dump(document).encode()


def test_fuzz_predict(server: Server, session: requests.Session) -> None:
    mark = len(server.log())
    @E2E_FUZZ
    @given(body=predict_body())
    def send(body: bytes) -> None:
        answer = check_plain(session.post(f"{server.url}/predict/iris", data=body, timeout=TIMEOUT))
        assert set(answer) in ({"prediction"}, {"error"}), answer

    send()
    still_serving(server)
    no_traceback_since(server, mark)


# -- gRPC fuzzing (the raw methods, which servekit parses itself) --------------------------
def rpc(channel: grpc.Channel, path: str, data: bytes) -> tuple[grpc.StatusCode, str]:
    call = channel.unary_unary(path, request_serializer=None, response_deserializer=None)
    try:
        call(data, timeout=TIMEOUT)
    except grpc.RpcError as error:
        return error.code(), error.details() or ""
    return grpc.StatusCode.OK, ""


def check_status(code: grpc.StatusCode, details: str) -> None:
    assert code not in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL), (code, details)
    if code != grpc.StatusCode.OK:
        assert details, code


def test_fuzz_v2_grpc_model_infer(server: Server) -> None:
    mark = len(server.log())
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        @GRPC_FUZZ
        @given(data=v2_grpc_request())
        def send(data: bytes) -> None:
            check_status(*rpc(channel, "/inference.GRPCInferenceService/ModelInfer", data))

        send()
        good = v2pb.ModelInferRequest(model_name="iris")
        good.inputs.add(name="x", datatype="FP64", shape=[1, 4]).contents.fp64_contents.extend(IRIS_ROW)
        answer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                                     request_serializer=v2pb.ModelInferRequest.SerializeToString,
                                     response_deserializer=v2pb.ModelInferResponse.FromString)(good, timeout=TIMEOUT)
        assert list(answer.outputs[0].contents.int64_contents) == [0]
    no_traceback_since(server, mark)


def test_fuzz_tfserving_grpc_predict(server: Server) -> None:
    mark = len(server.log())
    with grpc.insecure_channel(f"127.0.0.1:{server.tf_grpc_port}") as channel:
        @GRPC_FUZZ
        @given(data=tf_predict_request())
        def send(data: bytes) -> None:
            check_status(*rpc(channel, "/tensorflow.serving.PredictionService/Predict", data))

        send()
    still_serving(server)
    no_traceback_since(server, mark)


# -- regressions of issue 10 against the real server --------------------------------------
def v2_post(server: Server, document: Any) -> requests.Response:
    return requests.post(f"{server.url}/v2/models/iris/infer", data=dump(document).encode(), timeout=TIMEOUT)


def one_input(shape: Any, data: Any, datatype: str = "FP64", name: str = "x") -> dict[str, Any]:
    return {"name": name, "shape": shape, "datatype": datatype, "data": data}


@pytest.mark.parametrize(("document", "message"), [
    # shape [] on a tabular model: IndexError before
    ({"inputs": [one_input([], [1.0])]}, "has shape [] (one scalar); model 'iris' takes rows of features: "
                                         "send shape [rows, 4]"),
    # zero elements in a shape no array can have: ValueError before
    ({"inputs": [one_input([0, 2**62, 2**62], [])]}, "larger than any tensor can be"),
    ({"inputs": [one_input([0, 2**63], [])]}, "larger than any tensor can be"),
    # more than 32 dimensions: ValueError / RuntimeError before
    ({"inputs": [one_input([0] + [1] * 40, [])]}, "has 41 dimensions; servekit takes tensors of at most 32"),
    ({"inputs": [one_input([1], Nested(40, "a"), "BYTES")]}, "nests lists more than 32 levels deep"),
    ({"inputs": [one_input([1] * 40, Nested(40, "a"), "BYTES")]}, "has 40 dimensions"),
    # integers past int64 (orjson reads them as floats): "fractional numbers" before
    ({"inputs": [one_input([1, 4], [2**63, -1, 2, 3], "INT64")]}, "outside the range of INT64"),
    # the same output twice: answered twice before; Triton refuses it
    ({"inputs": [one_input([1, 4], IRIS_ROW)], "outputs": [{"name": "predict"}, {"name": "predict"}]},
     "asks for output 'predict' more than once"),
])
def test_v2_bad_input_is_400(server: Server, document: Any, message: str) -> None:
    response = v2_post(server, document)
    assert response.status_code == 400, response.text
    assert message in response.json()["error"], response.text


def test_v2_binary_data_size_deep_list_is_400(server: Server) -> None:
    """A 1,000-deep list as binary_data_size: a 500 (RecursionError in the message) before."""
    header = dump({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64",
                               "parameters": {"binary_data_size": Nested(1000, 1)}}]}).encode()
    response = requests.post(f"{server.url}/v2/models/iris/infer", data=header + bytes(32), timeout=TIMEOUT,
                             headers={"Inference-Header-Content-Length": str(len(header))})
    assert response.status_code == 400, response.text
    assert response.json() == {"error": "input 'x': binary_data_size must be a number of bytes, not list"}


def test_v2_two_inputs_of_zero_rows(server: Server) -> None:
    """Two inputs of 0 rows form a table of 0 rows (ValueError before)."""
    response = v2_post(server, {"inputs": [one_input([0, 2], []), one_input([0, 2], [], name="y")]})
    assert response.status_code == 200, response.text
    [output] = response.json()["outputs"]
    assert output["name"] == "predict" and output["shape"] == [0, 1] and output["data"] == []


def test_v2_distinct_outputs_still_answered(server: Server) -> None:
    response = v2_post(server, {"inputs": [one_input([1, 4], IRIS_ROW)],
                                "outputs": [{"name": "predict"}, {"name": "predict_proba"}]})
    assert response.status_code == 200, response.text
    assert [o["name"] for o in response.json()["outputs"]] == ["predict", "predict_proba"]


@pytest.mark.parametrize("document", [
    {"instances": Nested(1000, "a")},  # RecursionError before
    {"inputs": {"x": Nested(1000, "a")}},
    {"instances": [Nested(40, 1.5)]},
])
def test_tfserving_rest_deep_lists_are_400(server: Server, document: Any) -> None:
    response = requests.post(f"{server.tf_rest}/v1/models/iris:predict", data=dump(document).encode(),
                             timeout=TIMEOUT)
    assert response.status_code == 400, response.text
    assert "nests lists more than 32 levels deep" in response.json()["error"]


@pytest.mark.parametrize(("document", "message"), [
    ({"data": {"ndarray": Nested(300, 1)}}, "nests lists more than 32 levels deep"),  # TypeError before
    ({"jsonData": Nested(300, 1)}, "jsonData cannot be passed to the model as JSON"),
    ({"data": {"tensor": {"shape": [2], "values": [1, "a"]}}}, "data.tensor.values must be a flat list"),
    ({"data": {"names": [Nested(900, 1)], "ndarray": [IRIS_ROW]}}, "data.names must be a list of strings"),
])
def test_seldon_bad_input_is_400(server: Server, document: Any, message: str) -> None:
    response = requests.post(f"{server.url}/api/v1.0/predictions", data=dump(document).encode(),
                             timeout=TIMEOUT)
    assert response.status_code == 400, response.text
    assert response.json() == {"status": {"code": -1, "info": response.json()["status"]["info"],
                                          "reason": "MICROSERVICE_BAD_DATA", "status": 1}}
    assert message in response.json()["status"]["info"]


def test_predict_scalar_inputs_is_400(server: Server) -> None:
    """``/predict`` with ``{"inputs": 5}`` reaches the tabular runtime as shape []."""
    response = requests.post(f"{server.url}/predict/iris", json={"inputs": 5}, timeout=TIMEOUT)
    assert response.status_code == 400, response.text
    assert "has shape [] (one scalar)" in response.json()["error"]


def test_tfserving_grpc_typed_values_out_of_range(server: Server) -> None:
    request = tfspb.PredictRequest()
    request.model_spec.name = "iris"
    tensor = request.inputs["x"]
    tensor.dtype = 6  # DT_INT8
    tensor.tensor_shape.dim.add(size=1)
    tensor.int_val.append(300)  # OverflowError before
    with grpc.insecure_channel(f"127.0.0.1:{server.tf_grpc_port}") as channel:
        code, details = rpc(channel, "/tensorflow.serving.PredictionService/Predict", request.SerializeToString())
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "int_val holds values outside -128…127" in details


CORRUPT = b"\x0a\x05ab"  # a length-delimited field running past the end
NON_RAW = [
    ("v2", "/inference.GRPCInferenceService/ModelMetadata", "inference.ModelMetadataRequest"),
    ("v2", "/inference.GRPCInferenceService/RepositoryIndex", "inference.RepositoryIndexRequest"),
    ("tf", "/tensorflow.serving.ModelService/GetModelStatus", "tensorflow.serving.GetModelStatusRequest"),
    ("tf", "/tensorflow.serving.PredictionService/Classify", "tensorflow.serving.ClassificationRequest"),
]


@pytest.mark.parametrize(("service", "path", "message"), NON_RAW)
def test_grpc_corrupt_message_is_invalid_argument(server: Server, service: str, path: str, message: str) -> None:
    """Methods whose requests protobuf parses (registered with grpc_errors.deserializer):
    UNKNOWN before (grpc.aio's answer to a deserializer that raises)."""
    port = server.grpc_port if service == "v2" else server.tf_grpc_port
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        code, details = rpc(channel, path, CORRUPT)
    assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, details)
    assert details.startswith(f"the request is not a valid {message} message"), details


def test_grpc_deserializer_in_a_real_grpc_server() -> None:
    """The registration v2_grpc.py needs, on a grpc.aio server of its own with
    servekit's servicer: a corrupt message is INVALID_ARGUMENT with a message,
    a good one is answered."""
    from servekit.protocols.v2_grpc import SERVICE, InferenceServicer

    async def main() -> list[tuple[grpc.StatusCode, str]]:
        server = grpc.aio.server()
        servicer = InferenceServicer(SimpleNamespace(registry=None))  # type: ignore[arg-type]
        handlers = {
            name: grpc.unary_unary_rpc_method_handler(
                getattr(servicer, name),
                request_deserializer=grpc_errors.deserializer(getattr(v2pb, f"{name}Request")),
                response_serializer=getattr(v2pb, f"{name}Response").SerializeToString,
            )
            for name in ("ServerLive", "ServerMetadata")
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        results = []
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                for data in (CORRUPT, b""):
                    call = channel.unary_unary(f"/{SERVICE}/ServerLive")
                    try:
                        answer = await call(data, timeout=TIMEOUT)
                        results.append((grpc.StatusCode.OK, v2pb.ServerLiveResponse.FromString(answer).live))
                    except grpc.aio.AioRpcError as error:
                        results.append((error.code(), error.details() or ""))
        finally:
            await server.stop(None)
        return results

    (code, details), good = asyncio.run(main())
    assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, details)
    assert details.startswith("the request is not a valid inference.ServerLiveRequest message: "), details
    assert good == (grpc.StatusCode.OK, True)
