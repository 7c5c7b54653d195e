"""servekit started with a ``tensorflow_model_server`` command line as TF
Serving's own tests and deployments write it, serving a TF1-style model built
here (``y = 0.5 x + 2``; predict on ``x``, classify/regress on serialized
``tf.Example``): every flag accepted, only ``--port`` and ``--rest_api_port``
bound, tensors fed as given, typed gRPC replies, TF Serving's NOT_FOUND text,
classify/regress through the graph's own ``tf.Example`` parser, Prometheus on
the REST port, the unix socket (issue 12, failures 1-3)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests
from servers import free_port
from tfserving_support import tf1_half_plus_two

pytest.importorskip("tensorflow")
pytest.importorskip("tensorflow_serving")

import grpc
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

ROOT = Path(__file__).resolve().parent.parent
HALF_PLUS_THREE = (ROOT / "conformance" / "tfserving" / "vendor" / "tensorflow_serving" / "servables"
                   / "tensorflow" / "testdata" / "saved_model_half_plus_three" / "00000123")


@dataclass
class TFServingCommand:
    rest: str
    grpc: str
    socket: Path
    log: Path


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited {proc.returncode}:\n{log.read_text()}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"server not ready:\n{log.read_text()}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TFServingCommand]:
    folder = tmp_path_factory.mktemp("tfs")
    tf1_half_plus_two(folder / "model" / "123")
    monitoring = folder / "monitoring_config.txt"
    monitoring.write_text('prometheus_config: {\n  enable: true,\n  path: "/monitoring/prometheus/metrics"\n}\n')
    batching = folder / "batching_config.txt"
    batching.write_text("max_batch_size { value: 128 }\nbatch_timeout_micros { value: 0 }\n"
                        "max_enqueued_batches { value: 1000000 }\nnum_batch_threads { value: 8 }\n")
    rest, port = free_port(), free_port()
    socket = folder / "tf-serving.sock"
    log = folder / "server.log"
    command = [
        sys.executable, "-m", "servekit", "serve",  # as tensorflow_model_server would be called
        f"--port={port}", f"--rest_api_port={rest}", "--rest_api_timeout_in_ms=5000",
        f"--grpc_socket_path={socket}", "--model_name=default", f"--model_base_path={folder / 'model'}",
        f"--monitoring_config_file={monitoring}", "--enable_batching", f"--batching_parameters_file={batching}",
        "--grpc_channel_arguments=grpc.max_connection_age_ms=2000,grpc.lb_policy_name=grpclb",
        "--enable_model_warmup", "--rest_api_num_threads=4", "--tensorflow_intra_op_parallelism=1",
        "--tensorflow_inter_op_parallelism=1", "--prefer_tflite_model=false", "--file_system_poll_wait_seconds=1",
        "--parallel-workers=1",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERVEKIT_")}
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        wait_ready(f"http://127.0.0.1:{rest}/v1/models/default", proc, log)
        yield TFServingCommand(f"http://127.0.0.1:{rest}", f"127.0.0.1:{port}", socket, log)
    finally:
        proc.terminate()
        proc.wait(30)


def test_tf_serving_command_line_starts_and_binds_only_its_ports(server: TFServingCommand) -> None:
    text = server.log.read_text()
    assert "TF Serving REST API listening on" in text and "TF Serving gRPC API listening on" in text
    # no main HTTP port (8080), no V2 gRPC, no metrics port: TF Serving binds --port and --rest_api_port
    for other in ("HTTP server (V2 REST) listening", "gRPC server (V2) listening", "Metrics server listening"):
        assert other not in text
    (notice,) = [line for line in text.splitlines() if "TF Serving flags accepted but not used" in line]
    for flag in ("--enable_model_warmup", "--rest_api_num_threads", "--prefer_tflite_model"):
        assert flag in notice
    assert "max_batch_size=128" in text  # --batching_parameters_file read into servekit's batching


def test_rest_instances_are_fed_as_given(server: TFServingCommand) -> None:
    url = f"{server.rest}/v1/models/default:predict"
    # TF Serving's README request: three scalars into an input declared [-1, 1]
    assert requests.post(url, json={"instances": [1.0, 2.0, 5.0]}).json() == {"predictions": [2.5, 3.0, 4.5]}
    assert requests.post(url, json={"inputs": [2.0, 3.0, 4.0]}).json() == {"outputs": [3.0, 3.5, 4.0]}
    assert requests.post(url, json={"instances": [[1.0], [2.0]]}).json() == {"predictions": [[2.5], [3.0]]}
    # what the graph refuses is still a 400 in TF Serving's form
    bad = requests.post(url, json={"instances": [["a"]]})
    assert bad.status_code == 400 and "error" in bad.json()


def predict_x(values: list[float], shape: list[int], name: str = "default") -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.inputs["x"].CopyFrom(tensor_pb2.TensorProto(
        dtype=types_pb2.DT_FLOAT, float_val=values,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=s)
                                                            for s in shape]),
    ))
    return request


@pytest.mark.parametrize("over", ["tcp", "unix socket"])
def test_grpc_predict_feeds_as_given_and_answers_typed_fields(server: TFServingCommand, over: str) -> None:
    address = server.grpc if over == "tcp" else f"unix:{server.socket}"
    with grpc.insecure_channel(address) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.Predict(predict_x([1.0, 2.0, 5.0], [3]), timeout=30)
    y = response.outputs["y"]
    assert y.dtype == types_pb2.DT_FLOAT
    assert list(y.float_val) == [2.5, 3.0, 4.5]  # TF Serving's default reply form
    assert not y.tensor_content
    assert [d.size for d in y.tensor_shape.dim] == [3]
    assert response.model_spec.version.value == 123
    assert response.model_spec.signature_name == "serving_default"


def test_unknown_model_is_not_found_before_its_inputs_are_read(server: TFServingCommand) -> None:
    with grpc.insecure_channel(server.grpc) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        empty = predict_pb2.PredictRequest()
        empty.model_spec.name = "intentionally_missing_model"
        with pytest.raises(grpc.RpcError) as failure:
            stub.Predict(empty, timeout=30)
        assert failure.value.code() == grpc.StatusCode.NOT_FOUND
        assert failure.value.details().startswith(
            "Servable not found for request: Latest(intentionally_missing_model)")
        request = predict_x([1.0], [1])
        request.model_spec.version.value = 9
        with pytest.raises(grpc.RpcError) as failure:
            stub.Predict(request, timeout=30)
        assert failure.value.code() == grpc.StatusCode.NOT_FOUND
        assert "Servable not found for request: Specific(default, 9)" in failure.value.details()
    response = requests.post(f"{server.rest}/v1/models/nope:predict", json={"instances": [1.0]})
    assert response.status_code == 404
    assert response.json()["error"].startswith("Servable not found for request: Latest(nope)")


def test_classify_and_regress_feed_tf_examples_to_the_graph(server: TFServingCommand) -> None:
    classify = requests.post(f"{server.rest}/v1/models/default:classify",
                             json={"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}, {"x": 4.0}]})
    assert classify.json() == {"results": [[["", 3.0]], [["", 4.0]]]}  # scores only: empty labels
    regress = requests.post(f"{server.rest}/v1/models/default:regress",
                            json={"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]})
    assert regress.json() == {"results": [3.0]}
    with grpc.insecure_channel(server.grpc) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = classification_pb2.ClassificationRequest()
        request.model_spec.name = "default"
        request.model_spec.signature_name = "classify_x_to_y"
        request.input.example_list.examples.add().features.feature["x"].float_list.value.append(2.0)
        result = stub.Classify(request, timeout=30)
        ((only,),) = [list(c.classes) for c in result.result.classifications]
        assert (only.label, only.score) == ("", 3.0)
        assert result.model_spec.signature_name == "classify_x_to_y"
        regression = regression_pb2.RegressionRequest(model_spec=request.model_spec, input=request.input)
        regression.model_spec.signature_name = "regress_x_to_y"
        assert [r.value for r in stub.Regress(regression, timeout=30).result.regressions] == [3.0]


def test_metadata_as_tf_serving_writes_it(server: TFServingCommand) -> None:
    meta = requests.get(f"{server.rest}/v1/models/default/metadata").json()
    assert meta["model_spec"] == {"name": "default", "signature_name": "", "version": "123"}
    signatures = meta["metadata"]["signature_def"]["signature_def"]
    assert set(signatures) == {"serving_default", "classify_x_to_y", "regress_x_to_y"}
    assert signatures["serving_default"] == {
        "inputs": {"x": {"dtype": "DT_FLOAT", "name": "x:0", "tensor_shape": {
            "dim": [{"size": "-1", "name": ""}, {"size": "1", "name": ""}], "unknown_rank": False}}},
        "outputs": {"y": {"dtype": "DT_FLOAT", "name": "y:0", "tensor_shape": {
            "dim": [{"size": "-1", "name": ""}, {"size": "1", "name": ""}], "unknown_rank": False}}},
        "method_name": "tensorflow/serving/predict",
        "defaults": {},
    }
    assert signatures["classify_x_to_y"]["inputs"]["inputs"]["dtype"] == "DT_STRING"


def test_prometheus_on_the_rest_port_from_the_monitoring_config(server: TFServingCommand) -> None:
    response = requests.get(f"{server.rest}/monitoring/prometheus/metrics")
    assert response.status_code == 200
    # before any request: the models' versions (TF Serving's page is never empty)
    assert 'servekit_model_versions{model="default",state="AVAILABLE"} 1' in response.text
    requests.post(f"{server.rest}/v1/models/default:predict", json={"instances": [1.0]})
    response = requests.get(f"{server.rest}/monitoring/prometheus/metrics")
    assert "# TYPE" in response.text and 'model="default"' in response.text


def test_a_bad_model_config_file_stops_startup_with_tf_serving_words(tmp_path: Path) -> None:
    bad = tmp_path / "bad_model_config.txt"
    bad.write_text("improperly formatted file")
    result = subprocess.run(
        [sys.executable, "-m", "servekit", "serve", f"--port={free_port()}", f"--rest_api_port={free_port()}",
         f"--model_config_file={bad}"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0
    assert "Error parsing text-format tensorflow.serving.ModelServerConfig" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_grpc_channel_arguments_stop_startup(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "servekit", "serve", f"--port={free_port()}", f"--rest_api_port={free_port()}",
         "--model_name=m", f"--model_base_path={tmp_path}", "--grpc_channel_arguments=grpc.keepalive_time_ms"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0
    assert "--grpc_channel_arguments: 'grpc.keepalive_time_ms' is not key=value" in result.stderr


def test_tf1_export_that_tf_saved_model_load_cannot_rebuild_loads() -> None:
    """TF Serving's saved_model_half_plus_three (its signatures carry no shapes:
    tf.saved_model.load fails with "Shapes must be equal rank"); loaded in a
    session, as TF Serving loads it."""
    from servekit.config import ModelSettings
    from servekit.runtimes.tensorflow import TensorFlowRuntime
    from servekit.tensors import InferenceRequest, Tensor

    runtime = TensorFlowRuntime(ModelSettings.model_validate(
        {"name": "half_plus_three", "parameters": {"uri": str(HALF_PLUS_THREE)}}))
    runtime.load()
    out = runtime.predict(InferenceRequest(inputs=[Tensor("x", np.array([1.0, 2.0, 5.0], dtype=np.float32))]))
    np.testing.assert_allclose(out.outputs[0].data, [3.5, 4.0, 5.5])
    runtime.unload()


@pytest.mark.parametrize(
    ("array", "field"),
    [
        (np.array([[1.5], [2.5]], dtype=np.float32), "float_val"),
        (np.array([1.5, -2.0]), "double_val"),
        (np.array([True, False, True]), "bool_val"),
        (np.array([-3, 7], dtype=np.int32), "int_val"),
        (np.array([-3, 2**40], dtype=np.int64), "int64_val"),
        (np.array([0.5, -1.0], dtype=np.float16), "half_val"),
    ],
)
def test_reply_typed_fields_or_tensor_content(array: np.ndarray, field: str) -> None:
    import tensorflow as tf

    from servekit.fronts.tfserving import grpc_codec
    from servekit.protocols.generated.tfserving import tensorflow_serving_pb2 as pb
    from servekit.tensors import Tensor

    spec = pb.ModelSpec(name="m")
    typed = predict_pb2.PredictResponse.FromString(grpc_codec.encode_predict(spec, [Tensor("y", array)]))
    proto = typed.outputs["y"]
    assert len(getattr(proto, field)) == array.size and not proto.tensor_content
    np.testing.assert_array_equal(tf.make_ndarray(proto), array)
    packed = predict_pb2.PredictResponse.FromString(
        grpc_codec.encode_predict(spec, [Tensor("y", array)], tensor_content=True))
    assert packed.outputs["y"].tensor_content and not getattr(packed.outputs["y"], field)
    np.testing.assert_array_equal(tf.make_ndarray(packed.outputs["y"]), array)
    assert typed.model_spec.name == packed.model_spec.name == "m"


def test_batching_parameters_file_sets_servekit_batching(tmp_path: Path) -> None:
    from servekit.fronts.tfserving.source import read_batching_parameters

    path = tmp_path / "batching.txt"
    path.write_text("max_batch_size { value: 64 }\nbatch_timeout_micros { value: 2500 }\n"
                    "max_enqueued_batches { value: 10 }\nnum_batch_threads { value: 8 }\n")
    assert read_batching_parameters(path) == {"max_batch_size": 64, "max_batch_time": 0.0025,
                                              "max_queue_size": 640}
