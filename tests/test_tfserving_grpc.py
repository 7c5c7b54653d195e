"""TF Serving's gRPC API (PredictionService, ModelService) against a real
servekit, called with the official ``tensorflow-serving-api`` stubs and
TensorFlow's own ``make_tensor_proto`` / ``make_ndarray``: the first article's
Keras regression models (versions 1 and 2, labels production/test)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from tfserving_support import ARTICLE_INSTANCES, CFG2, NAME, ArticleModels, TFServer, article_models

pytest.importorskip("tensorflow")
pytest.importorskip("tensorflow_serving")

import grpc
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)
from tensorflow_serving.config import model_server_config_pb2

X = np.array(ARTICLE_INSTANCES, dtype=np.float32)


@pytest.fixture(scope="module")
def models() -> ArticleModels:
    return article_models()


@pytest.fixture(scope="module")
def server(models: ArticleModels, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TFServer]:
    project = tmp_path_factory.mktemp("myProject")
    base = models.base_path(project)
    cfg = project / "cfg2.conf"
    cfg.write_text(CFG2.replace("/myProject/saved_models", str(base)))
    with TFServer([f"--model_config_file={cfg}"]) as process:
        yield process


@pytest.fixture(scope="module")
def channel(server: TFServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.tf_grpc) as ch:
        yield ch


def predict_request(name: str = NAME, version: int | None = None, label: str | None = None,
                    inputs: Any = None) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    proto = tf.make_tensor_proto(X) if inputs is None else inputs
    request.inputs["inputs"].CopyFrom(proto)
    return request


def prediction(response: predict_pb2.PredictResponse) -> np.ndarray:
    (output,) = response.outputs.values()
    return tf.make_ndarray(output)


def test_predict_by_version_label_and_latest(channel: grpc.Channel, models: ArticleModels) -> None:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    cases = [({"version": 1}, 1), ({"version": 2}, 2), ({"label": "production"}, 1),
             ({"label": "test"}, 2), ({}, 2)]
    for selector, version in cases:
        response = stub.Predict(predict_request(**selector), timeout=30)
        np.testing.assert_allclose(prediction(response), models.expected[version], atol=1e-5)
        assert response.model_spec.name == NAME
        assert response.model_spec.version.value == version
        assert response.model_spec.signature_name == "serving_default"
        (output,) = response.outputs.values()
        # TF Serving's default reply form: typed fields, no tensor_content
        assert output.dtype == types_pb2.DT_FLOAT and len(output.float_val) == 3 and not output.tensor_content


def test_predict_large_batch_as_tensor_content(channel: grpc.Channel, models: ArticleModels) -> None:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    batch = np.tile(X, (20_000, 1))  # 60k rows
    response = stub.Predict(predict_request(version=2, inputs=tf.make_tensor_proto(batch)), timeout=60)
    np.testing.assert_allclose(prediction(response), np.tile(models.expected[2], (20_000, 1)), atol=1e-5)


def test_predict_typed_fields(channel: grpc.Channel, models: ArticleModels) -> None:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    shape = tf.TensorShape([3, 1]).as_proto()
    float_val = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_shape=shape, float_val=[1, 2, 5])
    double_val = tensor_pb2.TensorProto(dtype=types_pb2.DT_DOUBLE, tensor_shape=shape, double_val=[1, 2, 5])
    int_val = tensor_pb2.TensorProto(dtype=types_pb2.DT_INT32, tensor_shape=shape, int_val=[1, 2, 5])
    for proto in (float_val, double_val, int_val, tf.make_tensor_proto(X.astype(np.float64))):
        response = stub.Predict(predict_request(version=1, inputs=proto), timeout=30)
        np.testing.assert_allclose(prediction(response), models.expected[1], atol=1e-5)
    # one value fills the tensor, as in TensorFlow
    fill = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_shape=shape, float_val=[2])
    response = stub.Predict(predict_request(version=1, inputs=fill), timeout=30)
    np.testing.assert_allclose(prediction(response), np.repeat(models.expected[1][1:2], 3, axis=0), atol=1e-5)


def test_predict_signature_and_output_filter(channel: grpc.Channel, models: ArticleModels) -> None:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = predict_request(version=2)
    request.model_spec.signature_name = "serving_default"
    (output_name,) = stub.Predict(request, timeout=30).outputs
    request.output_filter.append(output_name)
    response = stub.Predict(request, timeout=30)
    assert list(response.outputs) == [output_name]
    np.testing.assert_allclose(prediction(response), models.expected[2], atol=1e-5)


def test_get_model_status(channel: grpc.Channel) -> None:
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = NAME
    response = stub.GetModelStatus(request, timeout=30)
    assert [(s.version, s.state, s.status.error_code, s.status.error_message)
            for s in response.model_version_status] == [
        (2, get_model_status_pb2.ModelVersionStatus.AVAILABLE, 0, ""),
        (1, get_model_status_pb2.ModelVersionStatus.AVAILABLE, 0, ""),
    ]
    request.model_spec.version_label = "production"
    response = stub.GetModelStatus(request, timeout=30)
    assert [s.version for s in response.model_version_status] == [1]


def test_get_model_metadata(channel: grpc.Channel) -> None:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = NAME
    request.model_spec.version_label = "test"
    request.metadata_field.append("signature_def")
    response = stub.GetModelMetadata(request, timeout=30)
    assert response.model_spec.name == NAME and response.model_spec.version.value == 2
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signatures)
    signature = signatures.signature_def["serving_default"]
    assert signature.method_name == "tensorflow/serving/predict"
    ((_, tensor),) = signature.inputs.items()
    assert tensor.dtype == types_pb2.DT_FLOAT
    assert [d.size for d in tensor.tensor_shape.dim] == [-1, 1]
    assert tensor.name.startswith("serving_default_")


def test_regress_and_classify_take_examples(channel: grpc.Channel, server: TFServer,
                                            models: ArticleModels) -> None:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = NAME
    request.model_spec.version.value = 1
    for x in X[:, 0]:
        example = request.input.example_list.examples.add()
        example.features.feature["x"].float_list.value.append(float(x))
    response = stub.Regress(request, timeout=30)
    got = [r.value for r in response.result.regressions]
    np.testing.assert_allclose(got, models.expected[1][:, 0], atol=1e-5)
    assert response.model_spec.version.value == 1
    # Classify answers what REST's :classify answers for the same examples
    classify = classification_pb2.ClassificationRequest(model_spec=request.model_spec, input=request.input)
    result = stub.Classify(classify, timeout=30).result
    body = {"examples": [{"x": float(x)} for x in X[:, 0]]}
    rest = requests.post(f"{server.rest}/v1/models/{NAME}/versions/1:classify", json=body).json()
    assert [[c.label for c in row.classes] for row in result.classifications] == [
        [entry[0] for entry in row] for row in rest["results"]
    ]

@pytest.mark.parametrize(
    ("request_args", "code", "message"),
    [
        ({"name": "nope"}, grpc.StatusCode.NOT_FOUND, "Servable not found for request: Latest(nope)"),
        ({"version": 7}, grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Specific({NAME}, 7)"),
        ({"label": "canary"}, grpc.StatusCode.NOT_FOUND, "no label 'canary'"),
        ({"inputs": tf.make_tensor_proto(np.ones((2, 2), np.float32))}, grpc.StatusCode.INVALID_ARGUMENT,
         "rejected the input"),  # the graph decides, as in TF Serving
        ({"inputs": tf.make_tensor_proto([b"a", b"b"])}, grpc.StatusCode.INVALID_ARGUMENT, "not strings"),
        ({"inputs": tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_content=b"\0" * 7,
                                           tensor_shape=tf.TensorShape([2]).as_proto())},
         grpc.StatusCode.INVALID_ARGUMENT, "tensor_content holds 7 bytes"),
        ({"inputs": tf.make_tensor_proto(np.ones((1, 1), np.complex64))}, grpc.StatusCode.INVALID_ARGUMENT,
         "DT_COMPLEX64"),
    ],
)
def test_errors_are_status_codes(channel: grpc.Channel, models: ArticleModels, request_args: dict[str, Any],
                                 code: grpc.StatusCode, message: str) -> None:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    with pytest.raises(grpc.RpcError) as failure:
        stub.Predict(predict_request(**request_args), timeout=30)
    assert failure.value.code() == code
    assert message in failure.value.details()
    # and the server keeps serving
    np.testing.assert_allclose(prediction(stub.Predict(predict_request(), timeout=30)),
                               models.expected[2], atol=1e-5)


def test_status_of_unknown_model_and_empty_spec(channel: grpc.Channel) -> None:
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    with pytest.raises(grpc.RpcError) as failure:
        stub.GetModelStatus(get_model_status_pb2.GetModelStatusRequest(), timeout=30)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "model_spec.name" in failure.value.details()
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "nope"
    with pytest.raises(grpc.RpcError) as failure:
        stub.GetModelStatus(request, timeout=30)
    assert failure.value.code() == grpc.StatusCode.NOT_FOUND


def model_config(**bases: Path) -> model_server_config_pb2.ModelServerConfig:
    config = model_server_config_pb2.ModelServerConfig()
    for name, base in bases.items():
        entry = config.model_config_list.config.add(name=name, base_path=str(base), model_platform="tensorflow")
        entry.model_version_policy.all.SetInParent()
    return config


def reload(channel: grpc.Channel, config: model_server_config_pb2.ModelServerConfig) -> Any:
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    return stub.HandleReloadConfigRequest(model_management_pb2.ReloadConfigRequest(config=config), timeout=120)


def test_reload_config_adds_and_removes_models(models: ArticleModels, tmp_path: Path) -> None:
    """Two workers: the worker that takes the reload applies it before answering
    and relays it to the other, so every connection ends up with the new models."""
    first = models.base_path(tmp_path / "first", versions=(1,))
    second = models.base_path(tmp_path / "second", versions=(3,))
    with TFServer([f"--model_name={NAME}", f"--model_base_path={first}"], workers=2) as server:
        with grpc.insecure_channel(server.tf_grpc) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            response = reload(channel, model_config(**{NAME: first, "other": second}))
            assert response.status.error_code == 0
            got = prediction(stub.Predict(predict_request("other"), timeout=30))
            np.testing.assert_allclose(got, models.expected[3], atol=1e-5)
            response = stub.Predict(predict_request(NAME, version=1), timeout=30)
            np.testing.assert_allclose(prediction(response), models.expected[1], atol=1e-5)

            # a base path that does not exist changes nothing
            with pytest.raises(grpc.RpcError) as failure:
                reload(channel, model_config(other=tmp_path / "missing"))
            assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "missing" in failure.value.details()
            stub.Predict(predict_request(NAME, version=1), timeout=30)

            reload(channel, model_config(other=second))
            with pytest.raises(grpc.RpcError) as failure:
                stub.Predict(predict_request(NAME), timeout=30)
            assert failure.value.code() == grpc.StatusCode.NOT_FOUND
            np.testing.assert_allclose(prediction(stub.Predict(predict_request("other"), timeout=30)),
                                       models.expected[3], atol=1e-5)
        # the reload answered once both workers applied it: fresh connections
        # land on both, and each serves only `other`, with no waiting
        for _ in range(20):
            with grpc.insecure_channel(server.tf_grpc) as fresh:
                stub = prediction_service_pb2_grpc.PredictionServiceStub(fresh)
                got = prediction(stub.Predict(predict_request("other"), timeout=30))
                np.testing.assert_allclose(got, models.expected[3], atol=1e-5)
                with pytest.raises(grpc.RpcError) as failure:
                    stub.Predict(predict_request(NAME), timeout=30)
                assert failure.value.code() == grpc.StatusCode.NOT_FOUND


def test_reload_rejects_custom_config(channel: grpc.Channel) -> None:
    config = model_server_config_pb2.ModelServerConfig()
    config.custom_model_config.type_url = "type.googleapis.com/some.Config"
    with pytest.raises(grpc.RpcError) as failure:
        reload(channel, config)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "custom_model_config" in failure.value.details()


def test_messages_match_tensorflow_serving() -> None:
    """Every field servekit declares has the official name, number, type and
    label (what makes the two wire-compatible)."""
    from tensorflow_serving.apis import model_service_pb2, prediction_service_pb2

    from servekit.protocols.generated.tfserving import tensorflow_serving_pb2 as ours

    official_pool = prediction_service_pb2.DESCRIPTOR.pool
    assert model_service_pb2.DESCRIPTOR.pool is official_pool
    for service in ours.DESCRIPTOR.services_by_name.values():
        official_service = official_pool.FindServiceByName(service.full_name)
        for method in service.methods:
            official = official_service.methods_by_name[method.name]
            assert method.input_type.full_name == official.input_type.full_name
            assert method.output_type.full_name == official.output_type.full_name
    checked: set[str] = set()

    def compare(message: Any) -> None:
        if message.full_name in checked or message.full_name.startswith("google.protobuf"):
            return
        checked.add(message.full_name)
        official = official_pool.FindMessageTypeByName(message.full_name)
        for field in message.fields:
            theirs = official.fields_by_name[field.name]
            assert (field.number, field.type, field.is_repeated) == (theirs.number, theirs.type, theirs.is_repeated), \
                f"{message.full_name}.{field.name}"
            if field.message_type is not None:
                compare(field.message_type)
            if field.enum_type is not None:
                official_enum = theirs.enum_type
                for value in field.enum_type.values:
                    assert official_enum.values_by_name[value.name].number == value.number

    for message in ours.DESCRIPTOR.message_types_by_name.values():
        compare(message)
    assert {"tensorflow.TensorProto", "tensorflow.serving.PredictRequest",
            "tensorflow.serving.ReloadConfigRequest", "tensorflow.Example"} <= checked


def test_tf_serving_mode_listens_on_8500_unless_told(tmp_path: Path) -> None:
    from servekit.config import ServerSettings
    from servekit.errors import ConfigError
    from servekit.fronts.tfserving.source import configure_tfserving
    from servekit.repository.sources import ModelSources
    from servekit.server.runner import check_ports_free

    settings = ServerSettings(model_name="m", model_base_path=str(tmp_path))
    assert configure_tfserving(settings, ModelSources(settings), environ={})
    assert (settings.port, settings.rest_api_port) == (8500, 8501)
    settings = ServerSettings(model_name="m", model_base_path=str(tmp_path), port=9000)
    configure_tfserving(settings, ModelSources(settings), environ={})
    assert settings.port == 9000
    assert ServerSettings().port is None  # off outside TF Serving mode
    clash = ServerSettings(port=7001, grpc_port=7001)
    with pytest.raises(ConfigError, match="also the gRPC port"):
        check_ports_free(clash)


def test_a_fill_from_few_values_is_bounded_by_the_request_size() -> None:
    """TensorFlow repeats the last typed value up to the shape; servekit does so
    only up to the bytes a request could have sent in full (max_request_size)."""
    from servekit.errors import InvalidInput
    from servekit.fronts.tfserving import grpc_codec

    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[1.5],
                                   tensor_shape=tf.TensorShape([1, 1000]).as_proto())
    np.testing.assert_array_equal(grpc_codec.decode_tensor(proto, "x", None, 4000), np.full((1, 1000), 1.5))
    with pytest.raises(InvalidInput, match=r"fill at most 0.00381\d* MiB \(max_request_size\)"):
        grpc_codec.decode_tensor(proto, "x", None, 3999)
