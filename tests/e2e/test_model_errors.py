"""A model that raises answers with the exception's type and message and a
request id, with the same status in every protocol (500: the model failed, a
retry will not help), each in its own form: V2 REST and gRPC, TF Serving REST
and gRPC, TorchServe's inference API, Seldon and ``/predict``. The message is
one bounded line with control characters escaped; the traceback is only in
the server's log, under the request id."""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
from tfserving_support import TFServer
from tritonclient.utils import InferenceServerException

RAISER = '''
from servekit.runtimes.base import Runtime


class Raiser(Runtime):
    def predict(self, request):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied (1x9 and 10x16)")


class Noisy(Runtime):
    def predict(self, request):
        raise ValueError("bad \\x1b[31mvalue\\n" + "x" * 5000)
'''
MESSAGE = "model 'raiser' raised RuntimeError: mat1 and mat2 shapes cannot be multiplied (1x9 and 10x16)"
ROW = [0.0] * 9


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TFServer]:
    root = tmp_path_factory.mktemp("raiser")
    for name, implementation in (("raiser", "raiser.Raiser"), ("noisy", "raiser.Noisy")):
        (root / name).mkdir()
        (root / name / "raiser.py").write_text(RAISER)
        (root / name / "model-settings.json").write_text(json.dumps({"name": name, "implementation": implementation}))
    # TFServer adds TF Serving's REST and gRPC ports beside V2 REST/gRPC, TorchServe's
    # inference API, Seldon and /predict on the main port
    with TFServer([str(root), "--default-model", "raiser"]) as proc:
        yield proc


def test_v2_rest(served: TFServer) -> None:
    body = {"id": "abc-1", "inputs": [{"name": "x", "shape": [1, 9], "datatype": "FP64", "data": ROW}]}
    response = requests.post(f"{served.url}/v2/models/raiser/infer", json=body, timeout=30)
    assert response.status_code == 500
    assert response.json() == {"error": MESSAGE + " (request id abc-1; the traceback is in the server log)"}
    log = served.log()
    assert "Model 'raiser' failed on request abc-1" in log
    assert "Traceback" in log and 'raise RuntimeError("mat1 and mat2' in log


def test_v2_grpc(served: TFServer) -> None:
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{served.grpc_port}")
    tensor = grpcclient.InferInput("x", [1, 9], "FP64")
    tensor.set_data_from_numpy(np.zeros((1, 9)))
    with pytest.raises(InferenceServerException) as failure:
        client.infer("raiser", [tensor], request_id="grpc-7")
    assert failure.value.status() == "StatusCode.INTERNAL"  # gRPC's code for HTTP 500
    assert failure.value.message() == MESSAGE + " (request id grpc-7; the traceback is in the server log)"


def test_seldon_and_plain_predict(served: TFServer) -> None:
    seldon = requests.post(f"{served.url}/api/v1.0/predictions", json={"data": {"ndarray": [ROW]}}, timeout=30)
    assert seldon.status_code == 500
    status = seldon.json()["status"]
    assert status["code"] == -1 and status["status"] == 1  # Seldon's form: code -1, status FAILURE
    assert status["reason"] == "MICROSERVICE_INTERNAL_ERROR" and status["info"].startswith(MESSAGE)
    plain = requests.post(f"{served.url}/predict/raiser", json={"inputs": [ROW]}, timeout=30)
    assert plain.status_code == 500 and plain.json()["error"].startswith(MESSAGE)
    assert "request id " in plain.json()["error"]


def test_torchserve_predictions(served: TFServer) -> None:
    # TorchServe itself answers 503 "Prediction failed" without the reason;
    # servekit answers 500 as every other protocol does, with the reason
    response = requests.post(f"{served.url}/predictions/raiser", json=[ROW], timeout=30)
    assert response.status_code == 500
    body = response.json()
    assert body["code"] == 500 and body["type"] == "InternalServerException"
    assert body["message"].startswith(MESSAGE)


def test_tfserving_rest(served: TFServer) -> None:
    response = requests.post(f"{served.rest}/v1/models/raiser:predict", json={"instances": [ROW]}, timeout=30)
    assert response.status_code == 500
    assert response.json()["error"].startswith(MESSAGE)


def test_tfserving_grpc(served: TFServer) -> None:
    pytest.importorskip("tensorflow_serving")
    import grpc
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "raiser"
    request.inputs["x"].CopyFrom(tensor_pb2.TensorProto(
        dtype=types_pb2.DT_DOUBLE, double_val=ROW,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=1), tensor_shape_pb2.TensorShapeProto.Dim(size=9)])))
    with grpc.insecure_channel(served.tf_grpc) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        with pytest.raises(grpc.RpcError) as failure:
            stub.Predict(request, timeout=30)
    assert failure.value.code() == grpc.StatusCode.INTERNAL
    assert failure.value.details().startswith(MESSAGE)


def test_a_long_message_with_control_characters_is_one_bounded_line(served: TFServer) -> None:
    body = {"id": "n-1", "inputs": [{"name": "x", "shape": [1, 9], "datatype": "FP64", "data": ROW}]}
    response = requests.post(f"{served.url}/v2/models/noisy/infer", json=body, timeout=30)
    assert response.status_code == 500
    error = response.json()["error"]
    assert error.startswith("model 'noisy' raised ValueError: bad \\x1b[31mvalue xxx")
    assert "\x1b" not in error and "\n" not in error and "Traceback" not in error
    assert error.endswith("x… (request id n-1; the traceback is in the server log)")
    assert len(error) < 700
