"""The JSON Schemas (OpenAPI 3.1 ``components.schemas``) of every body servekit
reads or writes over HTTP, written from the protocols' own descriptions: the
Open Inference Protocol V2 (and Triton's statistics and repository
extensions), TF Serving's REST API, KServe V1, TorchServe and Seldon's
microservice API. Answers are described as servekit writes them, so that a
client (or a fuzzer) can hold servekit to them."""

from __future__ import annotations

from typing import Any

from servekit.tensors import DATATYPES

Schema = dict[str, Any]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(properties: dict[str, Schema], required: list[str] | None = None, **extra: Any) -> Schema:
    out: Schema = {"type": "object", "properties": properties}
    if required:
        out["required"] = required
    out.update(extra)
    return out


STRING: Schema = {"type": "string"}
INTEGER: Schema = {"type": "integer"}
NUMBER: Schema = {"type": "number"}
BOOLEAN: Schema = {"type": "boolean"}
ANY: Schema = {}


def array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


_V2: dict[str, Schema] = {
    "Error": obj({"error": STRING}, ["error"], description="An error, in the words of the failure and how to fix it."),
    "V2Datatype": {"type": "string", "enum": list(DATATYPES), "description": "A tensor's element type."},
    "V2Parameters": {
        "type": "object",
        "description": "Free-form parameters (``content_type``, ``binary_data_size``, ``timeout``, …).",
    },
    "V2TensorData": {
        "description": "The tensor's elements in row-major order, flat or nested as the shape.",
        "type": "array",
        "items": {"anyOf": [ref("V2TensorData"), NUMBER, STRING, BOOLEAN]},
    },
    "V2TensorMetadata": obj(
        {"name": STRING, "datatype": ref("V2Datatype"), "shape": array(INTEGER), "parameters": ref("V2Parameters")},
        ["name", "datatype", "shape"],
        description="One input or output of a model; -1 in the shape is any size.",
    ),
    "V2ServerMetadata": obj(
        {"name": STRING, "version": STRING, "extensions": array(STRING)}, ["name", "version", "extensions"]
    ),
    "V2ServerLive": obj({"live": BOOLEAN}, ["live"]),
    "V2ServerReady": obj({"ready": BOOLEAN, "error": STRING}, ["ready"]),
    "V2ModelReady": obj({"name": STRING, "version": STRING, "ready": BOOLEAN}, ["name", "ready"]),
    "V2ModelMetadata": obj(
        {
            "name": STRING,
            "versions": array(STRING),
            "platform": STRING,
            "inputs": array(ref("V2TensorMetadata")),
            "outputs": array(ref("V2TensorMetadata")),
            "parameters": ref("V2Parameters"),
        },
        ["name", "platform", "inputs", "outputs"],
    ),
    "V2RequestInput": obj(
        {
            "name": STRING,
            "shape": array({"type": "integer", "minimum": 0}),
            "datatype": ref("V2Datatype"),
            "parameters": ref("V2Parameters"),
            "data": ref("V2TensorData"),
        },
        ["name", "shape", "datatype"],
        description="One input tensor; ``data`` may instead follow the JSON in the binary tensor extension "
        "(``parameters.binary_data_size``).",
    ),
    "V2RequestOutput": obj(
        {"name": STRING, "parameters": ref("V2Parameters")},
        ["name"],
        description="An output asked for; ``parameters.binary_data: true`` answers it as raw bytes.",
    ),
    "V2InferenceRequest": obj(
        {
            "id": STRING,
            "parameters": ref("V2Parameters"),
            "inputs": array(ref("V2RequestInput")),
            "outputs": array(ref("V2RequestOutput")),
        },
        ["inputs"],
    ),
    "V2ResponseOutput": obj(
        {
            "name": STRING,
            "shape": array(INTEGER),
            "datatype": ref("V2Datatype"),
            "parameters": ref("V2Parameters"),
            "data": ref("V2TensorData"),
        },
        ["name", "shape", "datatype"],
    ),
    "V2InferenceResponse": obj(
        {
            "model_name": STRING,
            "model_version": STRING,
            "id": STRING,
            "parameters": ref("V2Parameters"),
            "outputs": array(ref("V2ResponseOutput")),
        },
        ["model_name", "outputs"],
    ),
    "V2Duration": obj({"count": INTEGER, "ns": INTEGER}, ["count", "ns"]),
    "V2ModelStatistics": obj(
        {
            "name": STRING,
            "version": STRING,
            "last_inference": INTEGER,
            "inference_count": INTEGER,
            "execution_count": INTEGER,
            "inference_stats": {"type": "object", "additionalProperties": ref("V2Duration")},
            "batch_stats": array(
                obj({"batch_size": INTEGER, "compute_infer": obj({"count": INTEGER})}, ["batch_size"])
            ),
        },
        ["name", "version", "inference_count", "execution_count"],
        description="Triton's statistics extension for one model version (durations in nanoseconds).",
    ),
    "V2Statistics": obj({"model_stats": array(ref("V2ModelStatistics"))}, ["model_stats"]),
    "V2RepositoryIndexRequest": obj({"ready": BOOLEAN}, description="``ready: true`` lists ready versions only."),
    "V2RepositoryIndex": array(
        obj({"name": STRING, "version": STRING, "state": STRING, "reason": STRING}, ["name", "version", "state"])
    ),
    "V2RepositoryChange": obj(
        {"name": STRING, "versions": array(STRING), "state": {"type": "string", "enum": ["READY", "UNLOADED"]}},
        ["name", "versions", "state"],
    ),
    # servekit's canary and shadow (servekit.traffic)
    "V2TrafficRequest": obj(
        {
            "traffic": {"type": "object", "additionalProperties": {"type": "number", "minimum": 0, "maximum": 100},
                        "maxProperties": 16,
                        "description": "Percent of the calls naming no version and no label that go to each "
                                       "version (at most 100 in all; the rest goes to the default version)."},
            "shadow": {"oneOf": [
                obj({"version": STRING, "percent": {"type": "number", "minimum": 0, "maximum": 100}}, ["version"],
                    additionalProperties=False),
                {"type": "null"},
            ], "description": "A version that answers this percent of those calls on the side, never returned."},
        },
        description="The model's whole routing: a missing key is none ({} for none at all).",
        additionalProperties=False,
    ),
    "V2Traffic": obj(
        {
            "name": STRING, "default_version": {"type": ["string", "null"]},
            "traffic": {"type": "object", "additionalProperties": NUMBER},
            "shadow": {"type": ["object", "null"]},
            "shadow_stats": obj({k: INTEGER for k in ("mirrored", "equal", "different", "failed", "dropped")}),
            "differences": array(obj({"time": NUMBER, "kind": STRING, "request_id": STRING,
                                      "served_version": STRING, "shadow_version": STRING, "what": STRING})),
            "workers": INTEGER, "missing_workers": array(INTEGER),
        },
        ["name", "traffic", "shadow", "shadow_stats", "differences"],
    ),
}

_TFSERVING: dict[str, Schema] = {
    "TFPredictRequest": obj(
        {
            "signature_name": STRING,
            "instances": {"type": "array", "description": "The row format: one item per example."},
            "inputs": {"description": "The columnar format: one tensor, or an object of named tensors."},
        },
        description="One of ``instances`` (rows) or ``inputs`` (columns); binary values as ``{\"b64\": …}``.",
    ),
    "TFPredictResponse": obj(
        {"predictions": ANY, "outputs": ANY},
        description="``predictions`` for the row format, ``outputs`` for the columnar one.",
    ),
    "TFExamplesRequest": obj(
        {"signature_name": STRING, "context": {"type": "object"}, "examples": array({"type": "object"})},
        ["examples"],
        description="tf.Example-like feature maps; ``context`` features are added to each example.",
    ),
    "TFClassifyResponse": obj({"results": array(array({"type": "array", "prefixItems": [STRING, ANY]}))}, ["results"]),
    "TFRegressResponse": obj({"results": array(NUMBER)}, ["results"]),
    "TFModelStatus": obj(
        {
            "model_version_status": array(
                obj(
                    {
                        "version": STRING,
                        "state": {"type": "string", "enum": ["START", "LOADING", "AVAILABLE", "UNLOADING", "END"]},
                        "status": obj({"error_code": STRING, "error_message": STRING}),
                    },
                    ["version", "state"],
                )
            )
        },
        ["model_version_status"],
    ),
    "TFModelMetadata": obj(
        {
            "model_spec": obj({"name": STRING, "signature_name": STRING, "version": STRING}),
            "metadata": obj({"signature_def": obj({"signature_def": {"type": "object"}})}),
        },
        ["model_spec", "metadata"],
    ),
}

_KSERVE_V1: dict[str, Schema] = {
    "V1Alive": obj({"status": STRING}, ["status"]),
    "V1Models": obj({"models": array(STRING)}, ["models"]),
    "V1ModelStatus": obj({"name": STRING, "ready": BOOLEAN}, ["name", "ready"]),
}

_TORCHSERVE: dict[str, Schema] = {
    "TSError": obj({"code": INTEGER, "type": STRING, "message": STRING}, ["code", "type", "message"]),
    "TSStatus": obj({"status": STRING}, ["status"]),
    "TSHealth": obj(
        {"status": {"type": "string", "enum": ["Healthy", "Partial Healthy", "Unhealthy"]}, "reason": STRING},
        ["status"],
    ),
    "TSModelList": obj(
        {"models": array(obj({"modelName": STRING, "modelUrl": STRING}, ["modelName"])), "nextPageToken": STRING},
        ["models"],
    ),
    "TSModelDescription": array(
        obj(
            {
                "modelName": STRING,
                "modelVersion": STRING,
                "modelUrl": STRING,
                "runtime": STRING,
                "minWorkers": INTEGER,
                "maxWorkers": INTEGER,
                "batchSize": INTEGER,
                "maxBatchDelay": INTEGER,
                "loadedAtStartup": BOOLEAN,
                "isDefault": BOOLEAN,
                "status": STRING,
                "workers": array({"type": "object"}),
            },
            ["modelName", "modelVersion"],
        )
    ),
}

_SELDON: dict[str, Schema] = {
    "SeldonData": obj(
        {
            "names": array(STRING),
            "ndarray": {"type": "array"},
            "tensor": obj({"shape": array(INTEGER), "values": array(ANY)}, ["shape", "values"]),
        }
    ),
    "SeldonMessage": obj(
        {
            "data": ref("SeldonData"),
            "strData": STRING,
            "jsonData": ANY,
            "binData": {"type": "string", "contentEncoding": "base64"},
            "meta": {"type": "object", "description": "``puid``, ``tags``, ``metrics``"},
        },
        description="One of ``data``, ``strData``, ``jsonData`` or ``binData``.",
    ),
    "SeldonFeedback": obj(
        {"request": ref("SeldonMessage"), "response": ref("SeldonMessage"), "reward": NUMBER,
         "truth": ref("SeldonMessage")}
    ),
    "SeldonError": obj(
        {"status": obj({"code": INTEGER, "info": STRING, "reason": STRING, "status": INTEGER},
                       ["code", "info", "reason", "status"])},
        ["status"],
    ),
    "SeldonForm": obj({"json": {"type": "string", "description": "the message, as JSON text"}}, ["json"]),
}

_PREDICT: dict[str, Schema] = {
    "PredictRows": obj(
        {"inputs": {"type": "array", "description": "Rows of features, or a typed model's items."}},
        ["inputs"],
        description='``{"inputs": [[feature, ...], ...]}``; a typed library model also takes its item as the body.',
    ),
    "PredictAnswer": obj({"prediction": {"type": "array"}}, ["prediction"]),
}

SCHEMAS: dict[str, Schema] = {**_V2, **_TFSERVING, **_KSERVE_V1, **_TORCHSERVE, **_SELDON, **_PREDICT}

__all__ = ["SCHEMAS", "Schema", "array", "obj", "ref"]
