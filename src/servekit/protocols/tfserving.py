"""TensorFlow Serving's REST API (``--rest_api_port``, 8501 by default):

- ``GET  /v1/models/{name}[/versions/{v}|/labels/{l}]``  model status
- ``GET  /v1/models/{name}[…]/metadata``                 signature defs
- ``POST /v1/models/{name}[…]:predict|:classify|:regress``

Errors are ``{"error": "…"}`` with the HTTP status of the failure.
"""

from __future__ import annotations

import time
from typing import Any

from servekit.errors import InvalidInput, ModelNotFound, ServekitError
from servekit.protocols import tfserving_codec as codec
from servekit.registry import ModelState, ModelVersion, version_sort_key
from servekit.server.context import ServerContext
from servekit.server.http import Request, Response, Route, json_response, route
from servekit.tensors import TensorSpec

PROTOCOL = "tfserving"
METHODS = ("predict", "classify", "regress")

# servekit datatype -> TF DataType enum name
TF_DTYPES = {
    "BOOL": "DT_BOOL",
    "UINT8": "DT_UINT8",
    "UINT16": "DT_UINT16",
    "UINT32": "DT_UINT32",
    "UINT64": "DT_UINT64",
    "INT8": "DT_INT8",
    "INT16": "DT_INT16",
    "INT32": "DT_INT32",
    "INT64": "DT_INT64",
    "FP16": "DT_HALF",
    "FP32": "DT_FLOAT",
    "FP64": "DT_DOUBLE",
    "BYTES": "DT_STRING",
}
# servekit states -> TF Serving's ModelVersionStatus.State
TF_STATES = {
    ModelState.LOADING: "LOADING",
    ModelState.AVAILABLE: "AVAILABLE",
    ModelState.UNLOADING: "UNLOADING",
    ModelState.UNAVAILABLE: "END",
}


def error_response(exc: ServekitError) -> Response:
    return json_response({"error": exc.message}, exc.status)


def version_status(model: ModelVersion) -> dict[str, Any]:
    failed = model.state is ModelState.UNAVAILABLE
    return {
        "version": model.version,
        "state": TF_STATES[model.state],
        "status": {
            "error_code": "UNKNOWN" if failed else "OK",
            "error_message": model.reason if failed else "",
        },
    }


def signature_def(signatures: dict[str, Any], default_inputs: list[TensorSpec],
                  default_outputs: list[TensorSpec]) -> dict[str, Any]:
    """TF Serving's ``signature_def`` map from the runtime's metadata."""
    if not signatures:
        signatures = {
            "serving_default": {
                "inputs": [s.to_dict() for s in default_inputs],
                "outputs": [s.to_dict() for s in default_outputs],
                "method_name": "tensorflow/serving/predict",
            }
        }
    return {
        name: {
            "inputs": {t["name"]: _tensor_info(t) for t in sig["inputs"]},
            "outputs": {t["name"]: _tensor_info(t) for t in sig["outputs"]},
            "method_name": sig.get("method_name") or "tensorflow/serving/predict",
        }
        for name, sig in signatures.items()
    }


def _tensor_info(spec: dict[str, Any]) -> dict[str, Any]:
    shape = spec.get("shape") or []
    return {
        "dtype": TF_DTYPES.get(spec.get("datatype", ""), "DT_INVALID"),
        "tensor_shape": {
            "dim": [{"size": str(d), "name": ""} for d in shape],
            "unknown_rank": False,
        },
        "name": (spec.get("parameters") or {}).get("tensor_name") or spec["name"],
    }


def routes(ctx: ServerContext) -> list[Route]:
    registry = ctx.registry
    metrics = ctx.metrics

    def selected(p: dict[str, str]) -> tuple[str | None, str | None]:
        return p.get("version"), p.get("label")

    async def status(request: Request) -> Response:
        p = request.path_params
        entry = registry.entry(p["model"])
        version, label = selected(p)
        if label is not None:
            if label not in entry.labels:
                raise ModelNotFound(f"model {p['model']!r} has no label {label!r}")
            version = entry.labels[label]
        if version is not None:
            model = entry.versions.get(version)
            if model is None:
                raise ModelNotFound(f"model {p['model']!r} has no version {version}")
            models = [model]
        else:
            models = sorted(
                entry.versions.values(), key=lambda m: version_sort_key(m.version), reverse=True
            )
        return json_response({"model_version_status": [version_status(m) for m in models]})

    async def metadata(request: Request) -> Response:
        p = request.path_params
        version, label = selected(p)
        model = registry.resolve(p["model"], version, label)
        assert model.runtime is not None
        meta = model.runtime.metadata()
        signatures = meta.parameters.get("signatures") or {}
        return json_response(
            {
                "model_spec": {"name": model.name, "signature_name": "", "version": model.version},
                "metadata": {
                    "signature_def": {
                        "signature_def": signature_def(signatures, meta.inputs, meta.outputs)
                    }
                },
            }
        )

    async def call(request: Request) -> Response:
        started = time.perf_counter()
        p = request.path_params
        name, method = p["model"], p["method"]
        version, label = selected(p)
        if method not in METHODS:
            raise InvalidInput(
                f"unknown method :{method} on {request.path}; use :predict, :classify or :regress"
            )
        try:
            body = await request.body()
            if method == "predict":
                inference, rows = codec.decode_predict(body)
                response = await registry.infer(name, version, inference, label=label)
                payload = codec.encode_predict(response, rows)
            else:
                model = registry.resolve(name, version, label)
                assert model.runtime is not None
                examples, parameters = codec.decode_examples(body)
                inputs = [s.name for s in model.runtime.metadata().inputs]
                inference = codec.examples_request(examples, inputs, parameters)
                response = await registry.infer(name, model.version, inference)
                encode = codec.encode_classify if method == "classify" else codec.encode_regress
                payload = encode(response, len(examples))
        except ServekitError as exc:
            metrics.failure(name, version or "", PROTOCOL, exc.status)
            raise
        metrics.observe(name, response.model_version or "", PROTOCOL, time.perf_counter() - started)
        return Response(payload)

    e = error_response
    base = "/v1/models/{model}"
    out: list[Route] = []
    for prefix in (base, base + "/versions/{version}", base + "/labels/{label}"):
        out += [
            route("GET", prefix, status, e),
            route("GET", prefix + "/metadata", metadata, e),
            route("POST", prefix + ":{method}", call, e),
        ]
    return out


__all__ = ["error_response", "routes"]
