"""V2 over gRPC against a real ``servekit serve`` process, called with the
official ``tritonclient.grpc`` client and, for typed contents, with the raw
generated stub that ships with tritonclient."""

from __future__ import annotations

import json
import queue
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import joblib
import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
import xgboost as xgb
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from servers import ServerProcess
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

MAX_REQUEST = 4 * 1024 * 1024

ECHO_RUNTIME = '''
from servekit.runtimes.base import Runtime
from servekit.tensors import Tensor


class Echo(Runtime):
    """Returns every input unchanged, under the same name."""

    def predict(self, request):
        return self.response(request, [Tensor(t.name, t.data, t.datatype) for t in request.inputs])
'''


def write_settings(folder: Path, settings: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model-settings.json").write_text(json.dumps(settings))


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("grpc-models")
    X, y = load_iris(return_X_y=True)
    logistic = LogisticRegression(max_iter=500).fit(X, y)
    for name in ("iris", "spare"):
        write_settings(root / name, {"name": name, "parameters": {"uri": "model.joblib", "version": "1"}})
        joblib.dump(logistic, root / name / "model.joblib")

    rng = np.random.default_rng(0)
    features = rng.normal(size=(300, 12)).astype(np.float32)
    labels = (features[:, 0] + features[:, 1] > 0).astype(int)
    booster = xgb.train(
        {"max_depth": 3, "objective": "binary:logistic", "nthread": 1},
        xgb.DMatrix(features, label=labels),
        8,
    )
    write_settings(root / "xgb", {"name": "xgb", "implementation": "xgboost", "parameters": {"uri": "model.json"}})
    booster.save_model(str(root / "xgb" / "model.json"))

    write_settings(root / "echo", {"name": "echo", "implementation": "echo_runtime.Echo"})
    (root / "echo" / "echo_runtime.py").write_text(ECHO_RUNTIME)
    return root


@pytest.fixture(scope="module")
def server(repository: Path) -> Iterator[ServerProcess]:
    with ServerProcess(["serve", str(repository), "--max-request-size", str(MAX_REQUEST)]) as proc:
        yield proc


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[grpcclient.InferenceServerClient]:
    triton = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    yield triton
    triton.close()


@pytest.fixture(scope="module")
def stub(server: ServerProcess) -> Iterator[service_pb2_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def triton_input(name: str, array: np.ndarray, datatype: str) -> grpcclient.InferInput:
    entry = grpcclient.InferInput(name, list(array.shape), datatype)
    entry.set_data_from_numpy(array)
    return entry


def rest_infer(server: ServerProcess, model: str, array: np.ndarray, datatype: str, outputs: list[str]) -> dict[str, Any]:
    body = {
        "inputs": [{"name": "input-0", "shape": list(array.shape), "datatype": datatype, "data": array.ravel().tolist()}],
        "outputs": [{"name": n} for n in outputs],
    }
    response = requests.post(f"{server.url}/v2/models/{model}/infer", json=body, timeout=30)
    assert response.status_code == 200, response.text
    return {o["name"]: o for o in response.json()["outputs"]}


def iris_rows(n: int = 6) -> np.ndarray:
    X, _ = load_iris(return_X_y=True)
    return np.ascontiguousarray(X[::25][:n])


# -- health and metadata ----------------------------------------------------------
def test_health_and_server_metadata(client: grpcclient.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("iris")
    assert client.is_model_ready("iris", "1")
    assert not client.is_model_ready("iris", "7")
    assert not client.is_model_ready("no-such-model")
    metadata = client.get_server_metadata(as_json=True)
    assert metadata["name"] == "servekit"
    assert "model_repository" in metadata["extensions"]
    assert "statistics" in metadata["extensions"]


def test_model_metadata_equals_rest(client: grpcclient.InferenceServerClient, server: ServerProcess) -> None:
    for model in ("iris", "xgb"):
        grpc_meta = client.get_model_metadata(model, as_json=True)
        rest_meta = requests.get(f"{server.url}/v2/models/{model}", timeout=10).json()
        assert grpc_meta["name"] == rest_meta["name"] == model
        assert grpc_meta.get("versions", []) == rest_meta["versions"]
        assert grpc_meta["platform"] == rest_meta["platform"]
        for key in ("inputs", "outputs"):
            assert [
                {"name": t["name"], "datatype": t["datatype"], "shape": [int(d) for d in t["shape"]]}
                for t in grpc_meta[key]
            ] == [{"name": t["name"], "datatype": t["datatype"], "shape": t["shape"]} for t in rest_meta[key]]
    meta = client.get_model_metadata("iris", as_json=True)
    assert meta["versions"] == ["1"]
    assert {o["name"] for o in meta["outputs"]} >= {"predict", "predict_proba"}


def test_model_config_describes_tensors(client: grpcclient.InferenceServerClient) -> None:
    config = client.get_model_config("iris", as_json=True)["config"]
    assert config["name"] == "iris"
    assert config["platform"] == "sklearn"
    assert config["input"][0]["data_type"] == "TYPE_FP64"
    assert [int(d) for d in config["input"][0]["dims"]] == [-1, 4]
    assert any(o["name"] == "predict_proba" and o["data_type"] == "TYPE_FP64" for o in config["output"])


# -- inference --------------------------------------------------------------------
def test_infer_raw_contents_equals_rest_and_local(
    client: grpcclient.InferenceServerClient, server: ServerProcess, repository: Path
) -> None:
    rows = iris_rows()
    result = client.infer(
        "iris",
        [triton_input("input-0", rows, "FP64")],
        model_version="1",
        request_id="req-7",
        outputs=[grpcclient.InferRequestedOutput("predict"), grpcclient.InferRequestedOutput("predict_proba")],
    )
    response = result.get_response()
    assert response.model_name == "iris"
    assert response.model_version == "1"
    assert response.id == "req-7"
    # raw in, raw out (as Triton answers)
    assert len(response.raw_output_contents) == 2
    assert not any(o.HasField("contents") for o in response.outputs)

    local = joblib.load(repository / "iris" / "model.joblib")
    # a vector output is a column, [N, 1], as MLServer answers (content_type np)
    np.testing.assert_array_equal(result.as_numpy("predict"), local.predict(rows).reshape(-1, 1))
    np.testing.assert_allclose(result.as_numpy("predict_proba"), local.predict_proba(rows), rtol=1e-12)

    rest = rest_infer(server, "iris", rows, "FP64", ["predict", "predict_proba"])
    assert result.as_numpy("predict").reshape(-1).tolist() == rest["predict"]["data"]
    assert result.as_numpy("predict_proba").shape == tuple(rest["predict_proba"]["shape"])
    np.testing.assert_allclose(result.as_numpy("predict_proba").ravel(), rest["predict_proba"]["data"], rtol=1e-12)


def test_infer_typed_contents(stub: service_pb2_grpc.GRPCInferenceServiceStub, server: ServerProcess) -> None:
    rows = iris_rows()
    request = service_pb2.ModelInferRequest(model_name="iris", id="typed")
    entry = request.inputs.add(name="input-0", datatype="FP64", shape=list(rows.shape))
    entry.contents.fp64_contents.extend(rows.ravel().tolist())
    request.outputs.add(name="predict")
    request.outputs.add(name="predict_proba")
    response = stub.ModelInfer(request)
    assert response.id == "typed"
    # typed in, typed out
    assert len(response.raw_output_contents) == 0
    outputs = {o.name: o for o in response.outputs}
    assert outputs["predict"].datatype == "INT64"
    assert list(outputs["predict"].shape) == [len(rows), 1]
    assert outputs["predict"].parameters["content_type"].string_param == "np"
    assert outputs["predict_proba"].datatype == "FP64"
    assert list(outputs["predict_proba"].shape) == [len(rows), 3]
    rest = rest_infer(server, "iris", rows, "FP64", ["predict", "predict_proba"])
    assert list(outputs["predict"].contents.int64_contents) == rest["predict"]["data"]
    np.testing.assert_allclose(outputs["predict_proba"].contents.fp64_contents, rest["predict_proba"]["data"], rtol=1e-12)


def test_xgboost_equals_rest(client: grpcclient.InferenceServerClient, server: ServerProcess) -> None:
    features = np.random.default_rng(5).normal(size=(9, 12)).astype(np.float32)
    result = client.infer("xgb", [triton_input("input-0", features, "FP32")])
    rest = rest_infer(server, "xgb", features, "FP32", [])
    [name] = list(rest)
    np.testing.assert_allclose(result.as_numpy(name).ravel(), rest[name]["data"], rtol=1e-6)
    assert list(result.as_numpy(name).shape) == rest[name]["shape"]


ROUND_TRIP = {
    "BOOL": np.array([[True, False, True]]),
    "INT8": np.array([[-128, 0, 127]], dtype=np.int8),
    "UINT8": np.array([[0, 7, 255]], dtype=np.uint8),
    "INT16": np.array([[-32768, 1, 32767]], dtype=np.int16),
    "UINT16": np.array([[0, 1, 65535]], dtype=np.uint16),
    "INT32": np.array([[-(2**31), 5, 2**31 - 1]], dtype=np.int32),
    "UINT32": np.array([[0, 5, 2**32 - 1]], dtype=np.uint32),
    "INT64": np.array([[-(2**63), 5, 2**63 - 1]], dtype=np.int64),
    "UINT64": np.array([[0, 5, 2**64 - 1]], dtype=np.uint64),
    "FP16": np.array([[0.5, -1.25, 65504]], dtype=np.float16),
    "FP32": np.array([[0.1, -2.5, 3e38]], dtype=np.float32),
    "FP64": np.array([[0.1, -2.5, 1e300]], dtype=np.float64),
    "BYTES": np.array([[b"", b"caf\xc3\xa9", b"\xff\x00binary"]], dtype=object),
}


@pytest.mark.parametrize("datatype", list(ROUND_TRIP))
def test_round_trip_raw(client: grpcclient.InferenceServerClient, datatype: str) -> None:
    array = ROUND_TRIP[datatype]
    result = client.infer("echo", [triton_input("x", array, datatype)])
    output = result.get_output("x")
    assert output.datatype == datatype
    assert list(output.shape) == [1, 3]
    back = result.as_numpy("x")
    assert back.tolist() == array.tolist()
    assert back.dtype == array.dtype


TYPED_FIELD = {
    "BOOL": "bool_contents", "INT8": "int_contents", "UINT8": "uint_contents",
    "INT16": "int_contents", "UINT16": "uint_contents", "INT32": "int_contents",
    "UINT32": "uint_contents", "INT64": "int64_contents", "UINT64": "uint64_contents",
    "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents",
}


@pytest.mark.parametrize("datatype", list(TYPED_FIELD))
def test_round_trip_typed(stub: service_pb2_grpc.GRPCInferenceServiceStub, datatype: str) -> None:
    array = ROUND_TRIP[datatype]
    field = TYPED_FIELD[datatype]
    request = service_pb2.ModelInferRequest(model_name="echo")
    entry = request.inputs.add(name="x", datatype=datatype, shape=[1, 3])
    getattr(entry.contents, field).extend(array.ravel().tolist())
    response = stub.ModelInfer(request)
    assert len(response.raw_output_contents) == 0
    [output] = response.outputs
    assert (output.name, output.datatype, list(output.shape)) == ("x", datatype, [1, 3])
    assert list(getattr(output.contents, field)) == array.ravel().tolist()


def test_fp16_typed_is_refused_and_answered_raw(stub: service_pb2_grpc.GRPCInferenceServiceStub) -> None:
    request = service_pb2.ModelInferRequest(model_name="echo")
    request.inputs.add(name="x", datatype="FP16", shape=[2]).contents.fp32_contents.extend([1.0, 2.0])
    with pytest.raises(grpc.RpcError) as error:
        stub.ModelInfer(request)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "raw_input_contents" in error.value.details()
    # typed request whose output has no typed field: the answer is raw
    request = service_pb2.ModelInferRequest(model_name="echo")
    request.inputs.add(name="x", datatype="FP16", shape=[2])
    request.raw_input_contents.append(np.array([1.5, -2], dtype="<f2").tobytes())
    response = stub.ModelInfer(request)
    assert np.frombuffer(response.raw_output_contents[0], dtype="<f2").tolist() == [1.5, -2.0]


# -- streaming --------------------------------------------------------------------
def test_stream_infer(client: grpcclient.InferenceServerClient, server: ServerProcess) -> None:
    results: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    try:
        rows = iris_rows()
        for i in range(len(rows)):
            client.async_stream_infer(
                "iris",
                [triton_input("input-0", rows[i : i + 1], "FP64")],
                request_id=f"s{i}",
                outputs=[grpcclient.InferRequestedOutput("predict")],
            )
        client.async_stream_infer("no-such-model", [triton_input("input-0", rows[:1], "FP64")], request_id="bad")
        got: dict[str, int] = {}
        errors = []
        for _ in range(len(rows) + 1):
            result, error = results.get(timeout=60)
            if error is not None:
                errors.append(str(error))
            else:
                got[result.get_response().id] = int(result.as_numpy("predict")[0, 0])
    finally:
        client.stop_stream()
    rest = rest_infer(server, "iris", rows, "FP64", ["predict"])
    assert got == {f"s{i}": rest["predict"]["data"][i] for i in range(len(rows))}
    assert len(errors) == 1 and "no-such-model" in errors[0]


# -- repository and statistics ----------------------------------------------------------
def repository_states(client: grpcclient.InferenceServerClient) -> dict[str, str]:
    index = client.get_model_repository_index(as_json=True)
    return {m["name"]: m.get("state", "") for m in index["models"]}


def test_repository_unload_and_load(client: grpcclient.InferenceServerClient, server: ServerProcess) -> None:
    states = repository_states(client)
    assert states["iris"] == states["spare"] == states["xgb"] == states["echo"] == "READY"
    rows = iris_rows(2)
    client.unload_model("spare")
    assert not client.is_model_ready("spare")
    assert repository_states(client)["spare"] == "UNAVAILABLE"
    with pytest.raises(InferenceServerException) as error:
        client.infer("spare", [triton_input("input-0", rows, "FP64")])
    assert error.value.status() == "StatusCode.NOT_FOUND"
    # the same registry is behind REST
    assert requests.get(f"{server.url}/v2/models/spare/ready", timeout=10).status_code != 200
    client.load_model("spare")
    assert client.is_model_ready("spare")
    assert repository_states(client)["spare"] == "READY"
    assert client.infer("spare", [triton_input("input-0", rows, "FP64")]).as_numpy("predict").shape == (2, 1)
    with pytest.raises(InferenceServerException) as error:
        client.load_model("no-such-model")
    assert error.value.status() == "StatusCode.NOT_FOUND"
    assert "no-such-model" in error.value.message()


def test_statistics_equal_rest(client: grpcclient.InferenceServerClient, server: ServerProcess) -> None:
    client.infer("xgb", [triton_input("input-0", np.zeros((2, 12), dtype=np.float32), "FP32")])
    stats = client.get_inference_statistics("xgb", as_json=True)["model_stats"]
    rest = requests.get(f"{server.url}/v2/models/xgb/stats", timeout=10).json()["model_stats"]
    assert len(stats) == len(rest) == 1
    assert int(stats[0]["inference_count"]) == rest[0]["inference_count"] >= 1
    assert int(stats[0]["execution_count"]) == rest[0]["execution_count"]
    success = stats[0]["inference_stats"]["success"]
    assert int(success["count"]) == rest[0]["inference_stats"]["success"]["count"]
    assert int(success["ns"]) == rest[0]["inference_stats"]["success"]["ns"] > 0


# -- errors -------------------------------------------------------------------------------
def test_errors_map_to_grpc_codes_and_server_keeps_serving(
    client: grpcclient.InferenceServerClient, stub: service_pb2_grpc.GRPCInferenceServiceStub
) -> None:
    rows = iris_rows(2)
    with pytest.raises(InferenceServerException) as error:
        client.infer("no-such-model", [triton_input("input-0", rows, "FP64")])
    assert error.value.status() == "StatusCode.NOT_FOUND"
    assert "no-such-model" in error.value.message()

    with pytest.raises(InferenceServerException) as error:
        client.infer("iris", [triton_input("input-0", np.zeros((2, 5)), "FP64")])
    assert error.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "expects 4 features" in error.value.message()

    bad_cases: list[tuple[service_pb2.ModelInferRequest, str]] = []
    # raw bytes that do not fit the shape
    short = service_pb2.ModelInferRequest(model_name="iris")
    short.inputs.add(name="input-0", datatype="FP64", shape=[2, 4])
    short.raw_input_contents.append(b"\x00" * 40)
    bad_cases.append((short, "need 64 bytes"))
    # typed values in the wrong field
    wrong = service_pb2.ModelInferRequest(model_name="iris")
    wrong.inputs.add(name="input-0", datatype="FP64", shape=[1, 4]).contents.fp32_contents.extend([1, 2, 3, 4])
    bad_cases.append((wrong, "fp64_contents"))
    # more raw entries than inputs
    extra = service_pb2.ModelInferRequest(model_name="iris", raw_input_contents=[b"", b""])
    extra.inputs.add(name="input-0", datatype="FP64", shape=[0, 4])
    bad_cases.append((extra, "one entry per input"))
    # an unknown datatype
    unknown = service_pb2.ModelInferRequest(model_name="iris")
    unknown.inputs.add(name="input-0", datatype="FP128", shape=[1])
    bad_cases.append((unknown, "unknown datatype"))
    for request, message in bad_cases:
        with pytest.raises(grpc.RpcError) as rpc_error:
            stub.ModelInfer(request)
        assert rpc_error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, rpc_error.value.details()
        assert message in rpc_error.value.details()

    with pytest.raises(InferenceServerException) as error:
        client.infer("iris", [triton_input("input-0", np.zeros((MAX_REQUEST // 8, 4)), "FP64")])
    assert error.value.status() == "StatusCode.RESOURCE_EXHAUSTED"

    assert client.is_server_live()
    result = client.infer("iris", [triton_input("input-0", rows, "FP64")])
    assert result.as_numpy("predict").shape == (2, 1)


def test_malformed_message_is_invalid_argument(server: ServerProcess) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        with pytest.raises(grpc.RpcError) as error:
            call(b"\x0a\xff\xff\xff\xff\x0f")  # a model_name claiming 4 GB
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as error:
            channel.unary_unary("/inference.GRPCInferenceService/SystemSharedMemoryStatus")(b"")
        assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED


# -- health checking and reflection ---------------------------------------------------------
def test_grpc_health_checking(server: ServerProcess) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "inference.GRPCInferenceService"):
            answer = health.Check(health_pb2.HealthCheckRequest(service=service))
            assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_server_reflection(server: ServerProcess) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
        requests_ = [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol="inference.ModelInferRequest"),
        ]
        listed, described = list(reflect.ServerReflectionInfo(iter(requests_)))
    names = {s.name for s in listed.list_services_response.service}
    assert {"inference.GRPCInferenceService", "grpc.health.v1.Health"} <= names
    from google.protobuf import descriptor_pb2

    [raw] = described.file_descriptor_response.file_descriptor_proto
    file = descriptor_pb2.FileDescriptorProto.FromString(raw)
    assert file.package == "inference"
    assert "ModelInferRequest" in {m.name for m in file.message_type}


# -- the .proto itself ---------------------------------------------------------------------------
def test_proto_is_wire_compatible_with_tritonclient() -> None:
    """Every message and field servekit defines has the number, type and
    cardinality tritonclient's own definition gives it."""
    from tritonclient.grpc import model_config_pb2

    from servekit.protocols.generated import grpc_predict_v2_pb2 as ours

    theirs_pool = service_pb2.DESCRIPTOR.pool
    assert model_config_pb2.DESCRIPTOR.pool is theirs_pool

    def compare(mine: Any) -> int:
        other = theirs_pool.FindMessageTypeByName(mine.full_name)
        checked = 0
        for field in mine.fields:
            twin = other.fields_by_name[field.name]
            assert (field.number, field.type, field.is_repeated) == (twin.number, twin.type, twin.is_repeated), field.full_name
            checked += 1
        for nested in mine.nested_types:
            checked += compare(nested)
        return checked

    fields = sum(compare(m) for m in ours.DESCRIPTOR.message_types_by_name.values())
    assert fields > 100
    service = ours.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    twin_service = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    for method in service.methods:
        twin = twin_service.methods_by_name[method.name]
        assert method.input_type.full_name == twin.input_type.full_name
        assert method.output_type.full_name == twin.output_type.full_name
        assert (method.client_streaming, method.server_streaming) == (twin.client_streaming, twin.server_streaming)


# -- several workers ------------------------------------------------------------------------------
def test_workers_share_the_grpc_port(repository: Path) -> None:
    with ServerProcess(["serve", str(repository)], workers=2) as proc:
        rows = iris_rows(3)
        expected = None
        for _ in range(8):  # a new connection each time, spread over the workers by the kernel
            triton = grpcclient.InferenceServerClient(f"127.0.0.1:{proc.grpc_port}")
            try:
                predicted = triton.infer("iris", [triton_input("input-0", rows, "FP64")]).as_numpy("predict").tolist()
            finally:
                triton.close()
            expected = expected or predicted
            assert predicted == expected
