"""TensorFlow Serving's gRPC API on ``--port`` (8500 by default in TF Serving mode):

- ``tensorflow.serving.PredictionService``: ``Predict``, ``Classify``,
  ``Regress``, ``GetModelMetadata``
- ``tensorflow.serving.ModelService``: ``GetModelStatus``,
  ``HandleReloadConfigRequest`` (replaces the served models, as a config file would)

Models are chosen by ``model_spec`` (name; version number or label; signature).
Errors are gRPC status codes from the error's HTTP status, with its message.
Its skin starts the server in every worker (SO_REUSEPORT shares the port),
like :mod:`servekit.protocols.v2_grpc`; a config reload is a change that every
worker applies before the call answers.
"""

from __future__ import annotations

import base64
import logging
from typing import Any

import grpc

from servekit.dataplane import Target
from servekit.errors import InvalidInput, ModelLoadError, ServekitError
from servekit.fronts.tfserving import codec as tfserving_codec
from servekit.fronts.tfserving import grpc_codec as codec
from servekit.fronts.tfserving import operations as tfserving_operations
from servekit.fronts.tfserving.flags import channel_arguments
from servekit.fronts.tfserving.model_config import ModelConfigEntry, ModelServerConfig, entries_of
from servekit.fronts.tfserving.source import TFServingSource, tfserving_source
from servekit.names import check_name
from servekit.protocols.generated.tfserving import tensorflow_error_pb2 as errpb
from servekit.protocols.generated.tfserving import tensorflow_pb2 as tfpb
from servekit.protocols.generated.tfserving import tensorflow_serving_pb2 as pb
from servekit.protocols.grpc_errors import deserializer, rpc, status_code
from servekit.protocols.v2_grpc import authorization, server_options
from servekit.registry import ModelVersion
from servekit.repository.reconcile import Reconciler
from servekit.server.auth import require_token
from servekit.server.lifecycle import Change, ServerContext, Skin, Stop
from servekit.server.tls import add_grpc_port
from servekit.tensors import InferenceRequest, RequestedOutput, Tensor

log = logging.getLogger("servekit.grpc")

PROTOCOL = "tfserving-grpc"
DEFAULT_SIGNATURE = "serving_default"
RELOAD = "tfserving.config"  # the change: {"config": base64 ModelServerConfig}
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


def _parameters(spec: Any) -> dict[str, Any]:
    return {"signature_name": spec.signature_name} if spec.signature_name else {}


class PredictionServicer:
    """``tensorflow.serving.PredictionService`` over the registry."""

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        self.registry = ctx.registry

    # Predict gets and returns serialized messages (see RAW_METHODS): tensor
    # contents are cut out and written without protobuf
    @_rpc
    async def Predict(self, data: bytes, context: grpc.aio.ServicerContext) -> bytes:
        request, given = codec.split_predict(data)
        spec = request.model_spec
        name, version, label = selection(spec)
        if not label:
            tfserving_operations.check_servable(self.registry, name, version)

        def decode(model: Any) -> InferenceRequest:
            if not given:
                raise InvalidInput("request has no inputs; fill PredictRequest.inputs")
            limit = self.ctx.settings.max_request_size
            inputs = [Tensor(key, codec.decode_tensor(proto, key, content, limit)) for key, proto, content in given]
            outputs = [RequestedOutput(n) for n in request.output_filter] or None
            return InferenceRequest(inputs=inputs, outputs=outputs, parameters=_parameters(spec))

        response = await self.ctx.dataplane.infer(
            Target(name, version, label), decode, protocol=PROTOCOL, timeout=context.time_remaining()
        )
        out = pb.ModelSpec()
        fill_spec(out, name, response.model_version, spec.signature_name or DEFAULT_SIGNATURE)
        return codec.encode_predict(
            out, response.outputs, self.ctx.settings.enable_serialization_as_tensor_content
        )

    async def _examples(self, request: Any, context: grpc.aio.ServicerContext) -> tuple[Any, int]:
        spec = request.model_spec
        name, version, label = selection(spec)
        if not label:
            tfserving_operations.check_servable(self.registry, name, version)
        examples = codec.examples(request.input)
        response = await self.ctx.dataplane.infer(
            Target(name, version, label),
            tfserving_operations.examples_decoder(examples, _parameters(spec)),
            protocol=PROTOCOL,
            timeout=context.time_remaining(),
        )
        return response, len(examples)

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
                tensor.tensor_shape.unknown_rank = info["tensor_shape"]["unknown_rank"]
    return out


class ModelServicer:
    """``tensorflow.serving.ModelService``: status, and replacing the model config."""

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        self.registry = ctx.registry

    @_rpc
    async def GetModelStatus(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        name, version, label = selection(request.model_spec)
        out = pb.GetModelStatusResponse()
        for model in self.registry.select(name, version, label):
            out.model_version_status.append(version_status(model))
        return out

    @_rpc
    async def HandleReloadConfigRequest(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        require_token(self.ctx.settings, authorization(context))
        config = request.config
        kind = config.WhichOneof("config")
        if kind != "model_config_list":
            raise InvalidInput(
                "servekit reloads a model_config_list"
                + ("; custom_model_config is not supported" if kind else ", and the request has none")
            )
        payload = config.SerializeToString()
        await check_config(self.ctx, payload)
        await self.ctx.change(Change(RELOAD, {"config": base64.b64encode(payload).decode("ascii")}))
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


def _entries(ctx: ServerContext, payload: bytes) -> tuple[TFServingSource, list[ModelConfigEntry]]:
    # TF Serving's ModelServerConfig and the repository's share field numbers
    message = ModelServerConfig.FromString(payload)
    source = tfserving_source(ctx.sources)
    entries = entries_of(message, source.folder)
    for entry in entries:
        check_name(entry.name)
    return source, entries


async def check_config(ctx: ServerContext, payload: bytes) -> None:
    """Refuse a config whose base paths do not exist (then nothing changes)."""
    _, entries = _entries(ctx, payload)
    missing = [f"{e.name!r} ({e.base_path})" for e in entries if not e.base_path.is_dir()]
    if missing:
        raise InvalidInput(f"base paths do not exist: {', '.join(missing)}; no model was changed")


async def apply_reload(ctx: ServerContext, change: Change) -> None:
    """Serve the models of a ModelServerConfig: load the new, move the labels,
    unload the models it leaves out; every model must end up available."""
    encoded = change.args.get("config")
    if not isinstance(encoded, str):
        raise InvalidInput(f"change {RELOAD} needs the config")
    source, entries = _entries(ctx, base64.b64decode(encoded))
    source.replace(entries)
    ctx.sources.unpin()  # what this config says replaces what the last sync carried
    reconciler = Reconciler(
        ctx.registry,
        ctx.sources,
        allow_unavailable_labels=ctx.settings.allow_version_labels_for_unavailable_models,
    )
    await reconciler.run()
    problems = [p for p in (_failure(ctx, e.name) for e in entries) if p]
    if problems:
        raise ModelLoadError("config applied, but " + "; ".join(problems))


def _failure(ctx: ServerContext, name: str) -> str:
    versions = ctx.registry.select(name) if ctx.registry.has(name) else []
    if any(v.ready for v in versions):
        return ""
    reasons = "; ".join(f"version {v.version}: {v.reason}" for v in versions if v.reason)
    return f"model {name!r} has no available version" + (f" ({reasons})" if reasons else "")


# -- server -------------------------------------------------------------------------
# methods whose handlers take and return serialized messages
RAW_METHODS = frozenset({"Predict"})


def add_services(server: grpc.aio.Server, ctx: ServerContext) -> None:
    """Register both services' methods, from their descriptors."""
    servicers = {"PredictionService": PredictionServicer(ctx), "ModelService": ModelServicer(ctx)}
    for service_name, servicer in servicers.items():
        service = pb.DESCRIPTOR.services_by_name[service_name]
        handlers = {
            method.name: grpc.unary_unary_rpc_method_handler(
                getattr(servicer, method.name),
                request_deserializer=(
                    None if method.name in RAW_METHODS else deserializer(getattr(pb, method.input_type.name))
                ),
                response_serializer=(
                    None if method.name in RAW_METHODS else getattr(pb, method.output_type.name).SerializeToString
                ),
            )
            for method in service.methods
        }
        server.add_registered_method_handlers(service.full_name, handlers)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))


def grpc_options(settings: Any) -> list[tuple[str, int | str]]:
    """servekit's gRPC server options, then ``--grpc_channel_arguments`` (which win)."""
    options: dict[str, int | str] = dict(server_options(settings.max_request_size))
    options.update(channel_arguments(settings.grpc_channel_arguments))
    return list(options.items())


async def start(ctx: ServerContext) -> Stop:
    """Serve TF Serving's gRPC API on ``--port`` in this worker (and on
    ``--grpc_socket_path``, a unix socket, in worker 0: a socket file has one owner)."""
    settings = ctx.settings
    server = grpc.aio.server(options=grpc_options(settings))
    add_services(server, ctx)
    address = f"{settings.host}:{settings.port}"
    try:
        bound = add_grpc_port(server, address, settings, "port")
        socket_path = settings.grpc_socket_path if ctx.index == 0 else None
        if socket_path and not server.add_insecure_port(f"unix:{socket_path}"):
            raise RuntimeError(f"cannot bind unix socket {socket_path}")
    except RuntimeError as exc:
        raise ServekitError(f"cannot listen for TF Serving gRPC on {address}: {exc}") from None
    if bound == 0:
        raise ServekitError(f"cannot listen for TF Serving gRPC on {address}")
    await server.start()
    log.debug("Worker %d serves TF Serving gRPC on %s", ctx.index, address)

    async def stop() -> None:
        await server.stop(GRACE_SECONDS)

    return stop


SKIN = Skin(
    name="tfserving-grpc",
    enabled=lambda settings: bool(settings.port),
    start=start,
    changes={RELOAD: apply_reload},
)


__all__ = [
    "SKIN",
    "ModelServicer",
    "PredictionServicer",
    "apply_reload",
    "channel_arguments",
    "selection",
    "status_code",
]
