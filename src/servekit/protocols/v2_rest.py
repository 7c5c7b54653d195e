"""Open Inference Protocol V2 over REST (MLServer, KServe and Triton clients),
with the repository, statistics and binary tensor extensions."""

from __future__ import annotations

from functools import partial

from servekit import __version__
from servekit.dataplane import Plain, Target, header_timeout
from servekit.errors import InvalidInput, ServekitError
from servekit.names import check_name
from servekit.protocols import json_numbers, v2_codec, v2_operations
from servekit.protocols.v2_operations import metadata_dict, stats_dict
from servekit.registry import ModelVersion
from servekit.server.auth import require_token
from servekit.server.http import Request, Response, Route, json_response, route
from servekit.server.lifecycle import MAIN, METRICS, Mount, ServerContext, Skin
from servekit.server.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from servekit.tensors import InferenceRequest, InferenceResponse, Tensor
from servekit.traffic import management as traffic

EXTENSIONS = ["binary_tensor_data", "model_repository", "statistics", "schedule_policy"]
PROTOCOL = "v2"


def error_response(exc: ServekitError) -> Response:
    return json_response({"error": exc.message}, exc.status)


# request headers that only the awaited path handles: a compressed or binary
# body, a deadline
_NOT_EXPRESS = frozenset(
    {b"content-encoding", v2_codec.HEADER_LENGTH.encode(), b"x-request-timeout", b"grpc-timeout"}
)
_NO_HEADERS: dict[str, str] = {}


def _decode(body: bytes) -> InferenceRequest:
    return v2_codec.decode_request(body, _NO_HEADERS)


def _answer(response: InferenceResponse, request: InferenceRequest, accept: str | None = None) -> Response:
    """An infer answer: JSON, or JSON and binary outputs; compressed when the
    client accepts it (``Accept-Encoding``) and it is large."""
    payload, header_length = v2_codec.encode_response(response, request)
    out = Response(payload)
    if header_length is not None:
        out.content_type = b"application/octet-stream"
        out.headers.append((b"inference-header-content-length", str(header_length).encode()))
    return _compressed(out, accept) if accept else out


def _compressed(out: Response, accept: str) -> Response:
    out.body, encoding = v2_codec.compress(out.body, accept)
    if encoding:
        out.headers.append((b"content-encoding", encoding.encode()))
    return out


def _answer_output(
    model_name: str, model_version: str | None, request_id: str, output: Tensor, accept: str | None = None
) -> Response:
    """:func:`_answer` for the plain lane's one output."""
    out = Response(v2_codec.encode_output(model_name, model_version, request_id, output))
    return _compressed(out, accept) if accept else out


# the plain lane of the express path: the commonest request decoded whole in C
_PLAIN = Plain(json_numbers.plain_input, _answer_output)



def routes(ctx: ServerContext) -> list[Route]:
    registry = ctx.registry
    dataplane = ctx.dataplane

    async def live(request: Request) -> Response:
        return json_response({"live": True})

    async def ready(request: Request) -> Response:
        reason = registry.not_ready_reason()
        if reason is None:
            return json_response({"ready": True})
        return json_response({"ready": False, "error": reason}, 503)

    async def server_metadata(request: Request) -> Response:
        return json_response(
            {"name": ctx.settings.server_name, "version": __version__, "extensions": EXTENSIONS}
        )

    async def model_ready(request: Request) -> Response:
        p = request.path_params
        model = registry.resolve(p["model"], p.get("version"))
        return json_response({"name": model.name, "version": model.version, "ready": True})

    async def model_metadata(request: Request) -> Response:
        p = request.path_params
        return json_response(v2_operations.model_metadata(registry, p["model"], p.get("version")))

    async def infer(request: Request) -> Response:
        p = request.path_params
        target = Target(p["model"], p.get("version"))
        body = await request.raw_body()
        headers = request.headers
        inference: list[InferenceRequest] = []

        def decode(model: ModelVersion) -> InferenceRequest:
            inference.append(v2_codec.decode_request(body, headers, request.max_body))
            return inference[0]

        def encode(response: InferenceResponse) -> Response:
            return _answer(response, inference[0], headers.get("accept-encoding"))

        return await dataplane.serve(
            target, decode, encode, protocol=PROTOCOL, timeout=header_timeout(headers)
        )

    def infer_express(params: dict[str, str], headers: list[tuple[bytes, bytes]], body: bytes) -> Response | None:
        accept = None
        for name, value in headers:
            if name in _NOT_EXPRESS:
                return None
            if name == b"accept-encoding":
                accept = value.decode("latin-1")
        if accept is None:
            encode, plain = _answer, _PLAIN
        else:
            encode = partial(_answer, accept=accept)
            plain = Plain(json_numbers.plain_input, partial(_answer_output, accept=accept))
        return dataplane.express(Target(params["model"], params.get("version")), _decode, body, encode,
                                 protocol=PROTOCOL, plain=plain)

    async def statistics(request: Request) -> Response:
        p = request.path_params
        return json_response({"model_stats": v2_operations.model_stats(registry, p.get("model"), p.get("version"))})

    async def index(request: Request) -> Response:
        body = await request.body()
        only_ready = False
        if body.strip():
            document = v2_codec.loads(body)
            if not isinstance(document, dict):
                raise InvalidInput("repository index body must be a JSON object")
            only_ready = bool(document.get("ready", False))
        return json_response(await v2_operations.repository_index(ctx, only_ready))

    async def load(request: Request) -> Response:
        require_token(ctx.settings, request.headers.get("authorization"))
        name = check_name(request.path_params["model"])
        versions = await v2_operations.repository_load(ctx, name)
        return json_response({"name": name, "versions": versions, "state": "READY"})

    async def unload(request: Request) -> Response:
        require_token(ctx.settings, request.headers.get("authorization"))
        name = check_name(request.path_params["model"])
        versions = await v2_operations.repository_unload(ctx, name)
        return json_response({"name": name, "versions": versions, "state": "UNLOADED"})

    async def get_traffic(request: Request) -> Response:
        return json_response(await traffic.document(ctx, check_name(request.path_params["model"])))

    async def put_traffic(request: Request) -> Response:
        require_token(ctx.settings, request.headers.get("authorization"))
        name = check_name(request.path_params["model"])
        return json_response(await traffic.set_traffic(ctx, name, await request.body()))

    e = error_response
    out = [
        route("GET", "/v2/health/live", live, e),
        route("GET", "/v2/health/ready", ready, e),
        route("GET", "/v2", server_metadata, e),
        route("GET", "/v2/", server_metadata, e),  # the REST spec's OpenAPI document writes it so
        route("GET", "/v2/models/stats", statistics, e),
        route("GET", "/v2/models/{model}/ready", model_ready, e),
        route("GET", "/v2/models/{model}/versions/{version}/ready", model_ready, e),
        route("GET", "/v2/models/{model}", model_metadata, e),
        route("GET", "/v2/models/{model}/versions/{version}", model_metadata, e),
        route("POST", "/v2/models/{model}/infer", infer, e, infer_express),
        route("POST", "/v2/models/{model}/versions/{version}/infer", infer, e, infer_express),
        route("GET", "/v2/models/{model}/stats", statistics, e),
        route("GET", "/v2/models/{model}/versions/{version}/stats", statistics, e),
        route("POST", "/v2/repository/index", index, e),
        route("POST", "/v2/repository/models/{model}/load", load, e),
        route("POST", "/v2/repository/models/{model}/unload", unload, e),
        # servekit's: a model's traffic split and shadow (servekit.traffic)
        route("GET", "/v2/repository/models/{model}/traffic", get_traffic, e),
        route("PUT", "/v2/repository/models/{model}/traffic", put_traffic, e),
    ]
    return out


def metrics_routes(ctx: ServerContext) -> list[Route]:
    async def prometheus(request: Request) -> Response:
        return Response(ctx.metrics.render(), content_type=METRICS_CONTENT_TYPE)

    return [route("GET", ctx.settings.metrics_endpoint, prometheus, error_response)]


def mounts(ctx: ServerContext) -> list[Mount]:
    out = [Mount(MAIN, routes(ctx), error_response)]
    if ctx.settings.enable_metrics_endpoint:
        out.append(Mount(MAIN, metrics_routes(ctx), error_response))
        out.append(Mount(METRICS, metrics_routes(ctx), error_response))
    return out


SKIN = Skin(name="v2-rest", mounts=mounts)


__all__ = ["SKIN", "error_response", "metadata_dict", "routes", "stats_dict"]
