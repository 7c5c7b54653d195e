"""Open Inference Protocol V2 over gRPC (``inference.GRPCInferenceService``),
served with ``grpc.aio`` in every worker next to the HTTP server, with gRPC
health checking and server reflection.

Its skin starts the server on ``settings.host:settings.grpc_port`` in every
worker when ``settings.enable_grpc`` is set. gRPC binds with SO_REUSEPORT, so every worker process listens on the same port.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

from servekit import __version__
from servekit.dataplane import Target
from servekit.errors import InvalidInput, ModelNotFound, ModelNotReady, ServekitError
from servekit.names import check_name
from servekit.protocols import v2_operations
from servekit.protocols.generated import grpc_predict_v2_pb2 as pb
from servekit.protocols.grpc_errors import deserializer, rpc, status_code
from servekit.protocols.v2_grpc_codec import (
    decode_request,
    encode_response,
    split_request,
    stream_response,
)
from servekit.server.auth import require_token
from servekit.server.lifecycle import ServerContext, Skin, Stop
from servekit.server.tls import add_grpc_port
from servekit.tensors import InferenceRequest

log = logging.getLogger("servekit.grpc")

SERVICE = "inference.GRPCInferenceService"
PROTOCOL = "v2-grpc"
EXTENSIONS = ["model_repository", "statistics", "model_configuration"]
GRACE_SECONDS = 5.0
_MAX_MESSAGE = 2**31 - 1  # gRPC takes the limits as C ints

# Triton's model configuration names its datatypes differently
CONFIG_DATATYPES = {
    "BOOL": pb.TYPE_BOOL,
    "UINT8": pb.TYPE_UINT8,
    "UINT16": pb.TYPE_UINT16,
    "UINT32": pb.TYPE_UINT32,
    "UINT64": pb.TYPE_UINT64,
    "INT8": pb.TYPE_INT8,
    "INT16": pb.TYPE_INT16,
    "INT32": pb.TYPE_INT32,
    "INT64": pb.TYPE_INT64,
    "FP16": pb.TYPE_FP16,
    "FP32": pb.TYPE_FP32,
    "FP64": pb.TYPE_FP64,
    "BYTES": pb.TYPE_STRING,
}

# Reflection describes services from this module's private descriptor pool (kept
# apart from the default pool so that tritonclient, whose messages share the
# `inference` package, can be imported in the same process); health and
# reflection are added to it so they can be described too.
POOL = pb.DESCRIPTOR.pool
for _module in (health_pb2, reflection_pb2):
    POOL.AddSerializedFile(_module.DESCRIPTOR.serialized_pb)


_rpc = rpc("V2 gRPC")


class InferenceServicer:
    """The V2 gRPC API over the registry, like :mod:`servekit.protocols.v2_rest`."""

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        self.registry = ctx.registry

    # -- health and metadata --------------------------------------------------
    @_rpc
    async def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    @_rpc
    async def ServerReady(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.registry.ready())

    @_rpc
    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        try:
            self.registry.resolve(request.name, request.version or None)
        except (ModelNotFound, ModelNotReady):
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    @_rpc
    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: Any
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(
            name=self.ctx.settings.server_name, version=__version__, extensions=EXTENSIONS
        )

    @_rpc
    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: Any
    ) -> pb.ModelMetadataResponse:
        meta = v2_operations.model_metadata(self.registry, request.name, request.version)
        out = pb.ModelMetadataResponse(
            name=meta["name"], versions=meta["versions"], platform=meta["platform"]
        )
        for specs, target in ((meta["inputs"], out.inputs), (meta["outputs"], out.outputs)):
            for spec in specs:
                target.add(name=spec["name"], datatype=spec["datatype"], shape=spec["shape"])
        return out

    @_rpc
    async def ModelConfig(self, request: pb.ModelConfigRequest, context: Any) -> pb.ModelConfigResponse:
        meta = v2_operations.model_metadata(self.registry, request.name, request.version)
        config = pb.ModelConfig(
            name=meta["name"], platform=meta["platform"], backend=meta["platform"], max_batch_size=0
        )
        for spec in meta["inputs"]:
            config.input.add(
                name=spec["name"],
                data_type=CONFIG_DATATYPES.get(spec["datatype"], pb.TYPE_INVALID),
                dims=spec["shape"],
            )
        for spec in meta["outputs"]:
            config.output.add(
                name=spec["name"],
                data_type=CONFIG_DATATYPES.get(spec["datatype"], pb.TYPE_INVALID),
                dims=spec["shape"],
            )
        return pb.ModelConfigResponse(config=config)

    @_rpc
    async def ModelStatistics(
        self, request: pb.ModelStatisticsRequest, context: Any
    ) -> pb.ModelStatisticsResponse:
        rows = v2_operations.model_stats(self.registry, request.name, request.version)
        out = pb.ModelStatisticsResponse()
        for row in rows:
            stats = out.model_stats.add(
                name=row["name"],
                version=row["version"],
                last_inference=int(row["last_inference"]),
                inference_count=row["inference_count"],
                execution_count=row["execution_count"],
            )
            for key, value in row["inference_stats"].items():
                duration = getattr(stats.inference_stats, key)
                duration.count = value["count"]
                duration.ns = value["ns"]
            for batch in row["batch_stats"]:
                entry = stats.batch_stats.add(batch_size=batch["batch_size"])
                entry.compute_infer.count = batch["compute_infer"]["count"]
        return out

    # -- inference --------------------------------------------------------------
    # ModelInfer and ModelStreamInfer get and return serialized messages (see
    # RAW_METHODS): raw tensor bytes are cut out and written without protobuf.
    @_rpc
    async def ModelInfer(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        message, raw = split_request(request)
        return await self._infer(message, raw, context.time_remaining())

    async def _infer(
        self, message: pb.ModelInferRequest, raw_contents: list[memoryview], time_remaining: float | None
    ) -> bytes:
        name, version = message.model_name, message.model_version or None
        if not name:
            raise InvalidInput("request needs a model_name")
        raw: list[Any] = []

        def decode(model: Any) -> InferenceRequest:
            inference, raw_outputs = decode_request(message, raw_contents)
            raw.append(raw_outputs)
            return inference

        return await self.ctx.dataplane.serve(
            Target(name, version),
            decode,
            lambda response: encode_response(response, raw[0]),
            protocol=PROTOCOL,
            timeout=time_remaining,  # a request nobody waits for any more never runs
        )

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        """Requests of a stream run concurrently (so the batcher can merge them);
        responses are sent as they complete, each carrying its request's id. A
        failed request gets a response with its error and id; the stream goes on."""
        results: asyncio.Queue[bytes | None] = asyncio.Queue()
        running: set[asyncio.Task[None]] = set()

        async def answer(data: bytes) -> None:
            message = pb.ModelInferRequest()
            try:
                message, raw = split_request(data)
                await results.put(stream_response(await self._infer(message, raw, None)))
            except Exception as exc:
                if isinstance(exc, ServekitError):
                    text = exc.message
                else:
                    log.exception("gRPC stream request failed")
                    text = f"{type(exc).__name__}: {exc}"
                echo = pb.ModelInferResponse(
                    model_name=message.model_name, model_version=message.model_version, id=message.id
                )
                await results.put(stream_response(echo.SerializeToString(), text))

        async def read() -> None:
            try:
                async for message in request_iterator:
                    task = asyncio.ensure_future(answer(message))
                    running.add(task)
                    task.add_done_callback(running.discard)
                if running:
                    await asyncio.wait(set(running))
            finally:
                await results.put(None)

        reader = asyncio.ensure_future(read())
        try:
            while (item := await results.get()) is not None:
                yield item
            await reader  # re-raises a failure of the request stream itself
        finally:
            reader.cancel()
            for task in list(running):
                task.cancel()

    # -- model repository -------------------------------------------------------
    @_rpc
    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: Any
    ) -> pb.RepositoryIndexResponse:
        rows = await v2_operations.repository_index(self.ctx, request.ready)
        out = pb.RepositoryIndexResponse()
        for row in rows:
            out.models.add(**row)
        return out

    @_rpc
    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: Any
    ) -> pb.RepositoryModelLoadResponse:
        if request.parameters:
            raise InvalidInput(
                f"servekit loads models as they are in the repository; load parameters "
                f"({', '.join(sorted(request.parameters))}) are not supported"
            )
        require_token(self.ctx.settings, authorization(context))
        await v2_operations.repository_load(self.ctx, _model_name(request.model_name))
        return pb.RepositoryModelLoadResponse()

    @_rpc
    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: Any
    ) -> pb.RepositoryModelUnloadResponse:
        # servekit has no ensembles, so Triton's unload_dependents changes nothing
        require_token(self.ctx.settings, authorization(context))
        unknown = sorted(set(request.parameters) - {"unload_dependents"})
        if unknown:
            raise InvalidInput(f"unload parameters {', '.join(unknown)} are not supported")
        await v2_operations.repository_unload(self.ctx, _model_name(request.model_name))
        return pb.RepositoryModelUnloadResponse()


def _model_name(name: str) -> str:
    if not name:
        raise InvalidInput("request needs a model_name")
    return check_name(name)


def authorization(context: Any) -> str | None:
    """The call's ``authorization`` metadata (gRPC's form of the HTTP header)."""
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            return value if isinstance(value, str) else value.decode("latin-1")
    return None


# -- server -------------------------------------------------------------------------
# methods whose handlers take and return serialized messages
RAW_METHODS = frozenset({"ModelInfer", "ModelStreamInfer"})


def add_inference_service(servicer: InferenceServicer, server: grpc.aio.Server) -> None:
    """Register every method of the service, from its descriptor."""
    handlers = {}
    for method in pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods:
        raw = method.name in RAW_METHODS
        request_class = getattr(pb, method.input_type.name)
        response_class = getattr(pb, method.output_type.name)
        kind = {
            (False, False): grpc.unary_unary_rpc_method_handler,
            (True, True): grpc.stream_stream_rpc_method_handler,
        }[(method.client_streaming, method.server_streaming)]
        handlers[method.name] = kind(
            getattr(servicer, method.name),
            request_deserializer=None if raw else deserializer(request_class),
            response_serializer=None if raw else response_class.SerializeToString,
        )
    server.add_registered_method_handlers(SERVICE, handlers)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))


def server_options(max_message: int) -> list[tuple[str, int]]:
    size = _MAX_MESSAGE if max_message <= 0 else min(max_message, _MAX_MESSAGE)
    return [
        ("grpc.max_receive_message_length", size),
        ("grpc.max_send_message_length", size),
        # every worker process binds the same port; the kernel spreads connections
        ("grpc.so_reuseport", 1),
    ]


class GRPCServer:
    """The gRPC server of one worker: V2 inference, health and reflection."""

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        self.server = grpc.aio.server(options=server_options(ctx.settings.max_request_size))
        add_inference_service(InferenceServicer(ctx), self.server)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        names = (SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, self.server, pool=POOL)
        self.address = f"{ctx.settings.host}:{ctx.settings.grpc_port}"
        self._health_updates: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        try:
            port = add_grpc_port(self.server, self.address, self.ctx.settings, "grpc_port")
        except RuntimeError as exc:
            raise ServekitError(f"cannot listen for gRPC on {self.address}: {exc}") from None
        if port == 0:
            raise ServekitError(f"cannot listen for gRPC on {self.address}")
        await self.server.start()
        await self._update_health()
        self.ctx.registry.listeners.append(self._on_registry_event)

    def _on_registry_event(self, event: str, model: Any) -> None:
        task = asyncio.get_running_loop().create_task(self._update_health())
        self._health_updates.add(task)
        task.add_done_callback(self._health_updates.discard)

    async def _update_health(self) -> None:
        # "" is the whole server (live); the V2 service is SERVING once every model is ready
        serving = health_pb2.HealthCheckResponse.SERVING
        ready = serving if self.ctx.registry.ready() else health_pb2.HealthCheckResponse.NOT_SERVING
        await self.health.set("", serving)
        await self.health.set(SERVICE, ready)

    async def stop(self) -> None:
        """Report NOT_SERVING, finish the calls under way (up to a grace period), stop."""
        if self._on_registry_event in self.ctx.registry.listeners:
            self.ctx.registry.listeners.remove(self._on_registry_event)
        await self.health.enter_graceful_shutdown()
        await self.server.stop(GRACE_SECONDS)
        log.debug("gRPC server on %s stopped", self.address)


async def start(ctx: ServerContext) -> Stop:
    """Serve V2 over gRPC in this worker."""
    server = GRPCServer(ctx)
    await server.start()
    log.debug("Worker %d serves gRPC on %s", ctx.index, server.address)
    return server.stop


SKIN = Skin(name="v2-grpc", enabled=lambda settings: settings.enable_grpc, start=start)


__all__ = ["SKIN", "GRPCServer", "InferenceServicer", "status_code"]
