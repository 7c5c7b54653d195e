"""TensorFlow Serving's gRPC API on ``--port`` (8500 by default in TF Serving mode):

- ``tensorflow.serving.PredictionService``: ``Predict``, ``Classify``,
  ``Regress``, ``GetModelMetadata``
- ``tensorflow.serving.ModelService``: ``GetModelStatus``,
  ``HandleReloadConfigRequest`` (replaces the served models, as a config file would)

Models are chosen by ``model_spec`` (name; version number or label; signature).
Errors are gRPC status codes from the error's HTTP status, with its message.
Importing this module registers the worker hook that starts the server in
every worker (SO_REUSEPORT shares the port), like :mod:`servekit.protocols.v2_grpc`.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Awaitable
from typing import Any

import grpc

from servekit.errors import InvalidInput, ModelLoadError, ServekitError
from servekit.protocols import tfserving_codec, tfserving_operations
from servekit.protocols import tfserving_grpc_codec as codec
from servekit.protocols.generated.tfserving import tensorflow_error_pb2 as errpb
from servekit.protocols.generated.tfserving import tensorflow_pb2 as tfpb
from servekit.protocols.generated.tfserving import tensorflow_serving_pb2 as pb
from servekit.protocols.grpc_errors import rpc, status_code
from servekit.protocols.v2_grpc import server_options
from servekit.registry import ModelVersion
from servekit.repository.model_config import ModelServerConfig, entries_of
from servekit.repository.reconcile import Reconciler
from servekit.repository.tfserving_source import tfserving_source
from servekit.server.runner import CONTROL_ACTIONS, WORKER_HOOKS, Worker
from servekit.tensors import InferenceRequest, RequestedOutput, Tensor

log = logging.getLogger("servekit.grpc")

PROTOCOL = "tfserving-grpc"
DEFAULT_SIGNATURE = "serving_default"
RELOAD_ACTION = "tfserving-config"  # relayed to sibling workers with the config
GRACE_SECONDS = 5.0


_rpc = rpc("TF Serving gRPC")


def selection(spec: Any) -> tuple[str, str | None, str | None]:
    """(name, version, label) of a ModelSpec; neither version nor label: the latest."""
    if not spec.name:
        raise InvalidInput("model_spec.name is required")
    choice = spec.WhichOneof("version_choice")
    version = str(spec.version.value) if choice == "version" else None
    label = spec.version_label if choice == "version_label" and spec.version_label else None
    return spec.name, version, label


def fill_spec(out: Any, model_name: str, version: str | None, signature_name: str = "") -> None:
    """A reply's ModelSpec: the version that answered (when it is a number)."""
    out.name = model_name
    if version and version.isdigit():
        out.version.value = int(version)
    if signature_name:
        out.signature_name = signature_name


def _parameters(spec: Any, context: grpc.aio.ServicerContext) -> dict[str, Any]:
    parameters: dict[str, Any] = {}
    if spec.signature_name:
        parameters["signature_name"] = spec.signature_name
    remaining = context.time_remaining()
    if remaining is not None:
        # the client's deadline becomes the batcher's timeout (µs), as in V2 gRPC
        parameters["timeout"] = max(1, int(remaining * 1e6))
    return parameters


class PredictionServicer:
    """``tensorflow.serving.PredictionService`` over the registry."""

    def __init__(self, worker: Worker) -> None:
        self.ctx = worker.ctx
        self.registry = worker.ctx.registry

    async def _timed(self, name: str, version: str | None, run: Awaitable[Any]) -> Any:
        started = time.perf_counter()
        try:
            response = await run
        except ServekitError as exc:
            self.ctx.metrics.failure(name, version or "", PROTOCOL, exc.status)
            raise
        self.ctx.metrics.observe(
            name, response.model_version or "", PROTOCOL, time.perf_counter() - started
        )
        return response

    # Predict gets and returns serialized messages (see RAW_METHODS): tensor
    # contents are cut out and written without protobuf
    @_rpc
    async def Predict(self, data: bytes, context: grpc.aio.ServicerContext) -> bytes:
        request, given = codec.split_predict(data)
        spec = request.model_spec
        name, version, label = selection(spec)
        if not given:
            raise InvalidInput("request has no inputs; fill PredictRequest.inputs")
        inputs = [Tensor(key, codec.decode_tensor(proto, key, content)) for key, proto, content in given]
        outputs = [RequestedOutput(n) for n in request.output_filter] or None
        inference = InferenceRequest(inputs=inputs, outputs=outputs, parameters=_parameters(spec, context))
        response = await self._timed(
            name, version, self.registry.infer(name, version, inference, label=label)
        )
        out = pb.ModelSpec()
        fill_spec(out, name, response.model_version, spec.signature_name or DEFAULT_SIGNATURE)
        return codec.encode_predict(out, response.outputs)

    async def _examples(self, request: Any, context: grpc.aio.ServicerContext) -> tuple[Any, int]:
        spec = request.model_spec
        name, version, label = selection(spec)
        examples = codec.examples(request.input)
        parameters = _parameters(spec, context)
        run = tfserving_operations.run_examples(
            self.registry, name, version, label, examples, parameters
        )
        return await self._timed(name, version, run), len(examples)

    @_rpc
    async def Classify(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        response, count = await self._examples(request, context)
        out = pb.ClassificationResponse()
        fill_spec(out.model_spec, request.model_spec.name, response.model_version,
                  request.model_spec.signature_name or DEFAULT_SIGNATURE)
        for row in tfserving_codec.classify_results(response, count):
            classes = out.result.classifications.add()
            for label, score in row:
                classes.classes.add(label=label, score=score or 0.0)
        return out

    @_rpc
    async def Regress(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        response, count = await self._examples(request, context)
        out = pb.RegressionResponse()
        fill_spec(out.model_spec, request.model_spec.name, response.model_version,
                  request.model_spec.signature_name or DEFAULT_SIGNATURE)
        for value in tfserving_codec.regress_values(response, count).tolist():
            out.result.regressions.add(value=value)
        return out

    @_rpc
    async def GetModelMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        fields = list(request.metadata_field) or ["signature_def"]
        unknown = [f for f in fields if f != "signature_def"]
        if unknown:
            raise InvalidInput(f"metadata_field {', '.join(unknown)} is not known; ask for signature_def")
        name, version, label = selection(request.model_spec)
        model, signatures = tfserving_operations.model_signatures(self.registry, name, version, label)
        out = pb.GetModelMetadataResponse()
        fill_spec(out.model_spec, model.name, model.version)
        out.metadata["signature_def"].Pack(signature_def_map(signatures))
        return out


def signature_def_map(signatures: dict[str, Any]) -> Any:
    """The ``SignatureDefMap`` of :func:`tfserving_operations.signature_def`'s answer."""
    out = pb.SignatureDefMap()
    for name, signature in signatures.items():
        target = out.signature_def[name]
        target.method_name = signature["method_name"]
        for side in ("inputs", "outputs"):
            for key, info in signature[side].items():
                tensor = getattr(target, side)[key]
                tensor.name = info["name"]
                tensor.dtype = tfpb.DataType.Value(info["dtype"])
                for dim in info["tensor_shape"]["dim"]:
                    tensor.tensor_shape.dim.add(size=int(dim["size"]))
    return out


class ModelServicer:
    """``tensorflow.serving.ModelService``: status, and replacing the model config."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.registry = worker.ctx.registry

    @_rpc
    async def GetModelStatus(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        name, version, label = selection(request.model_spec)
        out = pb.GetModelStatusResponse()
        for model in tfserving_operations.model_versions(self.registry, name, version, label):
            out.model_version_status.append(version_status(model))
        return out

    @_rpc
    async def HandleReloadConfigRequest(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        config = request.config
        kind = config.WhichOneof("config")
        if kind != "model_config_list":
            raise InvalidInput(
                "servekit reloads a model_config_list"
                + ("; custom_model_config is not supported" if kind else ", and the request has none")
            )
        payload = config.SerializeToString()
        await reload_config(self.worker, payload, check=True)
        encoded = base64.b64encode(payload).decode("ascii")
        for hook in self.worker.ctx.on_repository_change:
            await hook(RELOAD_ACTION, encoded)
        return pb.ReloadConfigResponse(status=pb.StatusProto(error_code=errpb.OK))


def version_status(model: ModelVersion) -> Any:
    status = tfserving_operations.version_status(model)
    return pb.ModelVersionStatus(
        version=int(model.version) if model.version.isdigit() else 0,
        state=pb.ModelVersionStatus.State.Value(status["state"]),
        status=pb.StatusProto(
            error_code=errpb.Code.Value(status["status"]["error_code"]),
            error_message=status["status"]["error_message"],
        ),
    )


async def reload_config(worker: Worker, payload: bytes, *, check: bool = False) -> None:
    """Serve the models of a serialized ModelServerConfig: load the new, move
    the labels, unload the models it leaves out. With ``check``, base paths
    must exist (else nothing changes) and every model must end up available."""
    # TF Serving's ModelServerConfig and the repository's share field numbers
    message = ModelServerConfig.FromString(payload)
    source = tfserving_source(worker.sources)
    entries = entries_of(message, source.folder)
    if check:
        missing = [f"{e.name!r} ({e.base_path})" for e in entries if not e.base_path.is_dir()]
        if missing:
            raise InvalidInput(f"base paths do not exist: {', '.join(missing)}; no model was changed")
    source.replace(entries)
    if worker.registry is None or worker.ctx is None:
        return  # a worker that has not started yet loads the new config when it does
    reconciler = Reconciler(
        worker.registry,
        worker.sources,
        allow_unavailable_labels=worker.settings.allow_version_labels_for_unavailable_models,
    )
    await reconciler.run()
    if check:
        failed = [_failure(worker, e.name) for e in entries]
        problems = [f for f in failed if f]
        if problems:
            raise ModelLoadError("config applied, but " + "; ".join(problems))


def _failure(worker: Worker, name: str) -> str:
    assert worker.registry is not None
    entry = worker.registry.models.get(name)
    versions = list(entry.versions.values()) if entry else []
    if any(v.ready for v in versions):
        return ""
    reasons = "; ".join(f"version {v.version}: {v.reason}" for v in versions if v.reason)
    return f"model {name!r} has no available version" + (f" ({reasons})" if reasons else "")


async def _apply_relayed(worker: Worker, encoded: str) -> None:
    await reload_config(worker, base64.b64decode(encoded))


# -- server -------------------------------------------------------------------------
# methods whose handlers take and return serialized messages
RAW_METHODS = frozenset({"Predict"})


def add_services(server: grpc.aio.Server, worker: Worker) -> None:
    """Register both services' methods, from their descriptors."""
    servicers = {"PredictionService": PredictionServicer(worker), "ModelService": ModelServicer(worker)}
    for service_name, servicer in servicers.items():
        service = pb.DESCRIPTOR.services_by_name[service_name]
        handlers = {
            method.name: grpc.unary_unary_rpc_method_handler(
                getattr(servicer, method.name),
                request_deserializer=(
                    None if method.name in RAW_METHODS else getattr(pb, method.input_type.name).FromString
                ),
                response_serializer=(
                    None if method.name in RAW_METHODS else getattr(pb, method.output_type.name).SerializeToString
                ),
            )
            for method in service.methods
        }
        server.add_registered_method_handlers(service.full_name, handlers)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))


async def start_in_worker(worker: Worker) -> None:
    """Worker hook: serve TF Serving's gRPC API on ``--port`` when it is set."""
    settings = worker.settings
    if not settings.port:
        return
    server = grpc.aio.server(options=server_options(settings.max_request_size))
    add_services(server, worker)
    address = f"{settings.host}:{settings.port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise ServekitError(f"cannot listen for TF Serving gRPC on {address}: {exc}") from None
    if bound == 0:
        raise ServekitError(f"cannot listen for TF Serving gRPC on {address}")
    await server.start()
    log.debug("Worker %d serves TF Serving gRPC on %s", worker.index, address)

    async def stop() -> None:
        await server.stop(GRACE_SECONDS)

    worker.cleanups.append(stop)


if start_in_worker not in WORKER_HOOKS:
    WORKER_HOOKS.append(start_in_worker)
CONTROL_ACTIONS[RELOAD_ACTION] = _apply_relayed


__all__ = [
    "ModelServicer",
    "PredictionServicer",
    "reload_config",
    "selection",
    "start_in_worker",
    "status_code",
]
