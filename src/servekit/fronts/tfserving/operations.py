"""The TF Serving operations that its REST and gRPC skins both expose, answered
as plain data: model status, signature definitions and the classify/regress
path through tf.Example-style features. Each skin only translates these
answers into its own wire format, so both report the same thing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from servekit.errors import ModelNotFound
from servekit.fronts.tfserving import codec
from servekit.registry import ModelState, ModelVersion, Registry
from servekit.tensors import InferenceRequest, TensorSpec

PREDICT_METHOD = "tensorflow/serving/predict"

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


def check_servable(registry: Registry, name: str, version: str | None) -> None:
    """An unknown model or version is NOT_FOUND (404) with TF Serving's words,
    ``Servable not found for request: Latest(name)`` / ``Specific(name, 3)``
    (clients and TF Serving's own tests look for "Servable"), before the
    request's inputs are looked at."""
    if registry.has(name, version or None):
        return
    request = f"Specific({name}, {version})" if version else f"Latest({name})"
    served = ", ".join(registry.names()) or "none"
    raise ModelNotFound(f"Servable not found for request: {request} (models served: {served})")


def version_status(model: ModelVersion) -> dict[str, Any]:
    """TF Serving's ``ModelVersionStatus`` of one version (enum values by name)."""
    failed = model.state is ModelState.UNAVAILABLE
    return {
        "version": model.version,
        "state": TF_STATES[model.state],
        "status": {
            "error_code": "UNKNOWN" if failed else "OK",
            "error_message": model.reason if failed else "",
        },
    }


def model_signatures(
    registry: Registry, name: str, version: str | None, label: str | None
) -> tuple[ModelVersion, dict[str, Any]]:
    """The resolved version and its ``signature_def`` map (see :func:`signature_def`)."""
    if not label:
        check_servable(registry, name, version)
    model = registry.resolve(name, version, label)
    meta = model.metadata()
    signatures = meta.parameters.get("signatures") or {}
    return model, signature_def(signatures, meta.inputs, meta.outputs)


def signature_def(signatures: dict[str, Any], default_inputs: list[TensorSpec],
                  default_outputs: list[TensorSpec]) -> dict[str, Any]:
    """TF Serving's ``signature_def`` map from the runtime's metadata; models
    without signatures get one ``serving_default`` from their inputs and outputs.
    Dims are strings (``"-1"``: any size) and ``defaults`` is ``{}``, as in TF
    Serving's JSON."""
    if not signatures:
        signatures = {
            "serving_default": {
                "inputs": [s.to_dict() for s in default_inputs],
                "outputs": [s.to_dict() for s in default_outputs],
                "method_name": PREDICT_METHOD,
            }
        }
    return {
        name: {
            "inputs": {t["name"]: _tensor_info(t) for t in sig["inputs"]},
            "outputs": {t["name"]: _tensor_info(t) for t in sig["outputs"]},
            "method_name": sig.get("method_name") or PREDICT_METHOD,
            "defaults": {},
        }
        for name, sig in signatures.items()
    }


def _tensor_info(spec: dict[str, Any]) -> dict[str, Any]:
    shape = spec.get("shape") or []
    parameters = spec.get("parameters") or {}
    return {
        "dtype": TF_DTYPES.get(spec.get("datatype", ""), "DT_INVALID"),
        "tensor_shape": {
            "dim": [{"size": str(d), "name": ""} for d in shape],
            "unknown_rank": bool(parameters.get("unknown_rank")),
        },
        "name": parameters.get("tensor_name") or spec["name"],
    }


def examples_decoder(
    examples: list[dict[str, Any]], parameters: dict[str, Any]
) -> Callable[[ModelVersion], InferenceRequest]:
    """Classify/regress: examples (feature -> value, context merged in) become
    the resolved model's inputs (see :func:`tfserving_codec.examples_request`)."""

    def decode(model: ModelVersion) -> InferenceRequest:
        meta = model.metadata()
        inputs = [s.name for s in meta.inputs]
        signatures = meta.parameters.get("signatures") or {}
        chosen = signatures.get(parameters.get("signature_name") or "serving_default")
        if chosen is None and len(signatures) == 1:
            chosen = next(iter(signatures.values()))
        serialized = None
        if chosen is not None:
            inputs = [t["name"] for t in chosen["inputs"]]
            if len(chosen["inputs"]) == 1 and chosen["inputs"][0].get("datatype") == "BYTES":
                serialized = inputs[0]  # a tf.Example parser: TF Serving's classify/regress
        request: InferenceRequest = codec.examples_request(examples, inputs, parameters, serialized)
        return request

    return decode


__all__ = [
    "TF_DTYPES",
    "TF_STATES",
    "check_servable",
    "examples_decoder",
    "model_signatures",
    "signature_def",
    "version_status",
]
