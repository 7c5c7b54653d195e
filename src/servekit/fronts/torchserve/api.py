"""TorchServe's APIs: inference (``/ping``, ``/predictions/{model}[/{version}]``)
on the main port and management (register, list, describe, scale,
set-default, unregister) on its own port, with TorchServe's error JSON
``{"code", "type", "message"}``.

Management calls need ``Authorization: Bearer <token>`` when a token is
configured (servekit makes one in TorchServe mode unless told not to), and
only loopback clients are served when ``management_host`` is a loopback
address even if the socket had to be bound more widely.

With several worker processes, a management change is made by the worker that
answers the call and then relayed to the others (``torchserve_changes``): a
registration answers once this worker serves the model, and the others follow
as soon as they have loaded it too.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import logging
import os
import quopri
import re
import time
from collections.abc import Coroutine
from email.message import Message
from email.utils import collapse_rfc2231_value
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import numpy as np
import orjson

from servekit.archive.store import ModelOptions, ModelStore, effective, model_store, settings_for
from servekit.dataplane import Target, header_timeout
from servekit.errors import (
    Conflict,
    InvalidInput,
    ModelLoadError,
    ModelNotFound,
    ModelNotReady,
    Overloaded,
    RouteNotFound,
    ServekitError,
    Unauthorized,
)
from servekit.fronts.torchserve import changes, tokens, workflows
from servekit.fronts.torchserve.metrics import counted, counting_errors, torchserve_metrics
from servekit.names import check_name, check_version
from servekit.registry import ModelVersion, Registry
from servekit.repository.discovery import public_reason
from servekit.server.auth import require_token
from servekit.server.http import Request, Response, Route, json_response, route
from servekit.server.lifecycle import MAIN, TORCHSERVE_MANAGEMENT, Mount, ServerContext, Skin
from servekit.tensors import InferenceRequest, InferenceResponse, Tensor
from servekit.torch_handler.spec import check_handler, parse_handler

log = logging.getLogger("servekit.torchserve")

PROTOCOL = "torchserve"
ERROR_TYPES = {
    400: "BadRequestException",
    401: "InvalidKeyException",
    403: "ForbiddenException",
    404: "ModelNotFoundException",
    405: "MethodNotAllowedException",
    409: "ConflictStatusException",
    413: "RequestEntityTooLargeException",
    500: "InternalServerException",
    503: "ServiceUnavailableException",
    504: "RequestTimeoutException",
}


# bounds of the numbers a management call may give (each is used to size something)
MAX_WORKERS = 256
MAX_BATCH_SIZE = 65536
MAX_BATCH_DELAY_MS = 3_600_000
MAX_PAGE = 100  # models per page of the list (TorchServe's cap)
MAX_STARTUP_SECONDS = 86_400
RUNTIMES = ("python", "python3")

# servekit's errors by TorchServe's exception names; others by status (ERROR_TYPES)
ERROR_NAMES: list[tuple[type[ServekitError], str]] = [
    (RouteNotFound, "ResourceNotFoundException"),
    (ModelNotFound, "ModelNotFoundException"),
    (Conflict, "ConflictStatusException"),
    (ModelNotReady, "ServiceUnavailableException"),
    (Overloaded, "ServiceUnavailableException"),
]


def error_name(exc: ServekitError) -> str:
    for cls, name in ERROR_NAMES:
        if isinstance(exc, cls):
            return name
    return ERROR_TYPES.get(exc.status, "InternalServerException")


def error_response(exc: ServekitError) -> Response:
    """TorchServe's error document: ``{"code", "type", "message"}``."""
    return json_response({"code": exc.status, "type": error_name(exc), "message": exc.message}, exc.status)


def torchserve_mode(settings: Any) -> bool:
    return bool(settings.model_store or settings.load_models or settings.ts_config)


# -- request bodies -------------------------------------------------------------
MAX_FORM_PARTS = 1000  # parts of one multipart body; more is refused (400)
MAX_PART_HEADERS = 16 * 1024  # bytes of one part's header block


def request_rows(body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, Any]]:
    """(payload, meta) of one prediction request: the raw body as ``body``, or the
    ``data`` field (else the first file) of a multipart form, other fields kept.

    A form is split with ``bytes.find`` (no line-by-line parsing; this runs on
    the event loop) and may hold at most ``MAX_FORM_PARTS`` parts."""
    content_type = headers.get("content-type", "")
    meta: dict[str, Any] = {"headers": headers, "field": "body", "content_type": content_type}
    if not content_type.lower().startswith("multipart/form-data"):
        return body, meta
    fields: dict[str, Any] = {}
    payload: tuple[str, bytes, str] | None = None
    for part, content in _form_parts(bytes(body), _boundary(content_type)):
        name = _param(part, "name") or f"file{len(fields)}"
        data = _decoded(part, content)
        if payload is None and (name == "data" or part.get_filename()):
            payload = (name, data, part.get_content_type())
        elif payload is not None and payload[0] != "data" and name == "data":
            fields[payload[0]] = payload[1].decode("utf-8", "replace")
            payload = (name, data, part.get_content_type())
        else:
            fields[name] = data.decode("utf-8", "replace")
    if payload is None:
        raise InvalidInput("the form has no 'data' field and no file; send the input as field 'data'")
    meta.update(field=payload[0], content_type=payload[2], fields=fields)
    return payload[1], meta


def _boundary(content_type: str) -> bytes:
    header = Message()
    header["content-type"] = content_type
    boundary = header.get_param("boundary")
    text = collapse_rfc2231_value(boundary) if boundary else ""
    if not text or len(text) > 200:
        raise InvalidInput("the multipart body could not be parsed; its Content-Type has no boundary")
    return text.encode("latin-1", "replace")


def _form_parts(body: bytes, boundary: bytes) -> list[tuple[Message, bytes]]:
    """The parts of a multipart body (RFC 2046): each its headers (as a
    Message) and its content. At most MAX_FORM_PARTS."""
    delimiter = b"--" + boundary
    pos = 0 if body.startswith(delimiter) else body.find(b"\n" + delimiter) + 1
    if pos == 0 and not body.startswith(delimiter):
        raise InvalidInput("the multipart body could not be parsed; check its boundary")
    parts: list[tuple[Message, bytes]] = []
    while not body.startswith(b"--", pos + len(delimiter)):  # "--boundary--" closes the body
        line_end = body.find(b"\n", pos + len(delimiter))
        if line_end < 0:
            break
        start = line_end + 1
        following = body.find(b"\n" + delimiter, start)
        end = len(body) if following < 0 else following
        if end > start and body[end - 1 : end] == b"\r":
            end -= 1
        if len(parts) == MAX_FORM_PARTS:
            raise InvalidInput(
                f"the multipart body has more than {MAX_FORM_PARTS} parts; send at most {MAX_FORM_PARTS}"
            )
        parts.append(_part(body, start, end))
        if following < 0:
            break  # no closing boundary: the rest was the last part
        pos = following + 1
    return parts


def _part(body: bytes, start: int, end: int) -> tuple[Message, bytes]:
    if body.startswith(b"\r\n", start) or body.startswith(b"\n", start):
        head, content_start = b"", start + (2 if body[start] == 13 else 1)
    else:
        crlf, lf = body.find(b"\r\n\r\n", start, end), body.find(b"\n\n", start, end)
        if crlf >= 0 and (lf < 0 or crlf <= lf):
            head, content_start = body[start:crlf], crlf + 4
        elif lf >= 0:
            head, content_start = body[start:lf], lf + 2
        else:
            head, content_start = body[start:end], end
    if len(head) > MAX_PART_HEADERS:
        raise InvalidInput(f"a part of the multipart body has more than {MAX_PART_HEADERS} bytes of headers")
    part = Message()
    for line in head.decode("latin-1").replace("\r\n", "\n").replace("\n ", " ").replace("\n\t", " ").split("\n"):
        key, sep, value = line.partition(":")
        if sep and key.strip():
            part[key.strip()] = value.strip()
    return part, body[content_start:end]


def _param(part: Message, key: str) -> str | None:
    value = part.get_param(key, header="content-disposition")
    if not value:
        return None
    return collapse_rfc2231_value(value)


def _decoded(part: Message, data: bytes) -> bytes:
    """A part's content, undoing a Content-Transfer-Encoding (as email does)."""
    encoding = str(part.get("content-transfer-encoding", "")).strip().lower()
    try:
        if encoding == "base64":
            return base64.b64decode(data)
        if encoding == "quoted-printable":
            return quopri.decodestring(data)
    except (binascii.Error, ValueError):
        return data
    return data


def numeric_request(body: bytes) -> InferenceRequest:
    """A JSON body for a model that is not a handler: a list of rows, or
    ``{"data"|"instances"|"inputs": …}``."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidInput("this model takes a JSON list of numbers (it has no handler)") from None
    if isinstance(document, dict):
        for key in ("data", "instances", "inputs"):
            if key in document:
                document = document[key]
                break
    try:
        array = np.asarray(document, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidInput("this model takes a JSON list of numbers (it has no handler)") from None
    if array.ndim == 1:
        array = array.reshape(1, -1)
    return InferenceRequest(inputs=[Tensor("input-0", array)])


# -- routes ---------------------------------------------------------------------
def inference_routes(ctx: ServerContext) -> list[Route]:
    registry = ctx.registry
    store = model_store(ctx.sources)
    counters = torchserve_metrics(ctx.metrics) if torchserve_mode(ctx.settings) else None

    async def ping(request: Request) -> Response:
        # TorchServe's answer: 200 with Healthy, Partial Healthy (some models
        # serve) or Unhealthy (none does); a model that should have loaded at
        # startup and did not (its archive missing or broken) counts as not serving
        broken = [f"{name}: {reason}" for name, reason in store.startup_failures.items()]
        serving = 0
        for name in registry.names():
            try:
                registry.resolve(name)
                serving += 1
            except ServekitError:
                broken.append(f"{name}: no ready version")
        if not broken:
            return json_response({"status": "Healthy"})
        status = "Partial Healthy" if serving else "Unhealthy"
        return json_response({"status": status, "reason": "; ".join(broken)})

    async def predictions(request: Request) -> Response:
        keys = tokens.inference_enforced()
        if keys is not None:
            keys.require("inference", request.headers.get("authorization"))
        name = request.path_params["model"]
        body = await request.body()
        headers = request.headers
        handler: list[bool] = []

        def decode(model: ModelVersion) -> InferenceRequest:
            if store.option(model.name, model.version).workers <= 0:
                raise ModelNotReady(
                    f"No worker is available to serve request for model {name!r}: it is scaled "
                    f"to 0 workers (PUT /models/{name}?min_worker=1 on the management API)"
                )
            handler.append(model.metadata().platform == "torchserve")
            return handler_request(body, headers) if handler[0] else numeric_request(body)

        version = request.path_params.get("version")
        started = time.perf_counter()
        try:
            return await ctx.dataplane.serve(
                Target(name, version),
                decode,
                lambda result: handler_response(result) if handler[0] else numeric_response(result),
                protocol=PROTOCOL,
                timeout=header_timeout(headers),
            )
        finally:
            if counters is not None and registry.has(name):
                counters.inference(name, version, time.perf_counter() - started, registry.find(name, version))

    e = error_response
    return [
        route("GET", "/ping", ping, e),
        route("POST", "/ping", ping, e),
        route("POST", "/predictions/{model}", predictions, e),
        route("PUT", "/predictions/{model}", predictions, e),
        route("POST", "/predictions/{model}/{version}", predictions, e),
        route("PUT", "/predictions/{model}/{version}", predictions, e),
        *workflows.inference_routes(ctx, e, handler_request, handler_response, PROTOCOL),
    ]


def handler_request(body: bytes, headers: dict[str, str]) -> InferenceRequest:
    """A request for a TorchServe handler: the payload and its meta as one row."""
    payload, meta = request_rows(body, headers)
    data = np.empty((1, 1), dtype=object)
    data[0, 0] = payload
    meta_column = np.empty((1, 1), dtype=object)
    meta_column[0, 0] = orjson.dumps(meta)
    return InferenceRequest(inputs=[Tensor("data", data, "BYTES"), Tensor("meta", meta_column, "BYTES")])


def handler_response(result: InferenceResponse) -> Response:
    out_meta = orjson.loads(result.output("meta").data.reshape(-1)[0])
    extra = [(k.encode(), str(v).encode()) for k, v in (out_meta.get("headers") or {}).items()]
    return Response(
        bytes(result.output("output").data.reshape(-1)[0]),
        status=int(out_meta.get("status") or 200),
        content_type=str(out_meta.get("content_type") or "application/json").encode(),
        headers=extra,
    )


def numeric_response(result: InferenceResponse) -> Response:
    if len(result.outputs) == 1:
        return json_response(result.outputs[0].data)
    return json_response({t.name: t.data for t in result.outputs})


def management_routes(ctx: ServerContext) -> list[Route]:
    registry = ctx.registry
    settings = ctx.settings
    store = model_store(ctx.sources)
    loopback_only = _is_loopback(settings.management_host) and not _is_loopback(settings.host)

    def local(request: Request) -> None:
        if loopback_only:
            client = request.scope.get("client")
            if client and not _is_loopback(client[0]):
                raise Unauthorized("the management API only serves this machine (management_host is loopback)")

    def guard(request: Request) -> None:
        local(request)
        require_token(settings, request.headers.get("authorization"))

    async def list_models(request: Request) -> Response:
        guard(request)
        # TorchServe's reading: a limit that is no integer, negative or over 100 means 100;
        # a token that is no integer or negative means 0
        limit = _int(request.query, "limit", MAX_PAGE, minimum=None, maximum=None)
        limit = MAX_PAGE if not 0 <= limit <= MAX_PAGE else limit
        start = max(0, _int(request.query, "next_page_token", 0, minimum=None, maximum=None))
        names = registry.names()
        page = names[start : start + limit]
        rows = [{"modelName": n, "modelUrl": _url(store, n, registry.version_names(n))} for n in page]
        out: dict[str, Any] = {"models": rows}
        if start + limit < len(names):
            out["nextPageToken"] = str(start + limit)
        return json_response(out)

    async def register(request: Request) -> Response:
        guard(request)
        # blank values kept: TorchServe tells a missing url (400) from an empty one (404)
        q = dict(parse_qsl(request.scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True))
        if "url" not in q:
            raise InvalidInput("Parameter url is required.")
        url = q["url"]
        if not url.strip():
            raise ModelNotFound("Model not found in model store: (the url parameter is empty)")
        runtime = q.get("runtime")
        if runtime is not None and runtime not in RUNTIMES:
            raise InvalidInput(
                f"Invalid RuntimeType value: {runtime[:32]}; servekit runs Python handlers (runtime "
                f"{' or '.join(RUNTIMES)})"
            )
        options = ModelOptions(
            url=url,
            # TorchServe's reading: a value that is no integer means the default, a negative count none
            workers=max(0, _int(q, "initial_workers", 0, minimum=None, maximum=MAX_WORKERS)),
            batch_size=_positive_or(_int(q, "batch_size", 1, minimum=None, maximum=MAX_BATCH_SIZE), 1),
            max_batch_delay_ms=_nonnegative_or(
                _int(q, "max_batch_delay", 100, minimum=None, maximum=MAX_BATCH_DELAY_MS), 100
            ),
            handler=q.get("handler") or None,
        )
        startup_timeout = _int(q, "startup_timeout", -1, minimum=None, maximum=MAX_STARTUP_SECONDS)
        requested = q.get("model_name") or None
        requested_name = check_name(requested) if requested else None
        if options.handler:
            parse_handler(options.handler)  # its form, before anything is downloaded
        # downloading and unpacking block: in a thread, so that this worker serves meanwhile
        path = await asyncio.to_thread(store.resolve, url)
        try:
            candidate = await asyncio.to_thread(settings_for, path, requested_name, options)
        except ModelLoadError as exc:
            raise InvalidInput(f"Failed to open model archive {path.name}: {exc.message}") from None
        folder = Path(candidate.source_dir or candidate.parameters.uri or ".")
        if options.handler and options.workers > 0:
            # a built-in one or a file of this archive; with no workers, TorchServe leaves
            # the handler alone until a worker starts, and so does servekit
            check_handler(options.handler, folder)
        name = check_name(candidate.name)
        version = check_version(candidate.parameters.version or "", "model version")
        if registry.has(name, version):
            raise Conflict(f"Model version {version} is already registered for model {name}")
        synchronous = _flag(q, "synchronous", True)

        async def load() -> None:
            store.keep(candidate, options)
            started = time.monotonic()
            model = await registry.load(effective(candidate, options))
            failure = ""
            if not model.ready:
                failure = public_reason(model.reason, [folder, store.root])
            elif startup_timeout >= 0 and options.workers > 0 and time.monotonic() - started > startup_timeout:
                failure = f"the model took longer than startup_timeout={startup_timeout} s to load"
            if failure:
                store.remove(name, version)
                if registry.has(name, version):
                    await registry.unload(name, version)
                raise ServekitError(f"Failed to start workers for model {name} version: {version}: {failure}")
            current = registry.default_version(name)
            default = version if current is None else current
            # the other workers load it from the settings made here: no second download or unpacking
            await changes.make(ctx, changes.registered(candidate, options, default), wait=synchronous)

        message = f'Model "{name}" Version: {version} registered with {options.workers} initial workers'
        if not synchronous and options.workers > 0:
            _in_background(load(), f"registering model {name!r} version {version}")
            return json_response({"status": "Processing worker updates..."}, 202)
        await load()
        if options.workers == 0:
            message += ". Use scale workers API to add workers for the model."
        return json_response({"status": message})

    async def token(request: Request) -> Response:
        """``GET /token?type=management|inference`` with the API key: a new key of that type."""
        local(request)
        keys = tokens.ACTIVE
        if keys is None:
            raise RouteNotFound("token authorization is off (disable_token_authorization): no keys to replace")
        keys.require("API", request.headers.get("authorization"))
        kind = request.query.get("type", "")
        keys.regenerate(kind)
        return json_response({"status": f"A new {kind} key is in {keys.path.name}"})

    async def describe(request: Request) -> Response:
        guard(request)
        p = request.path_params
        name, version = p["model"], p.get("version")
        if version == "all":
            models = list(reversed(registry.select(name)))
        else:
            models = [_pick(registry, name, version)]
        default = registry.default_version(name)
        return json_response([_describe(store, m, default) for m in models])

    async def scale(request: Request) -> Response:
        guard(request)
        p = request.path_params
        model = _pick(registry, p["model"], p.get("version") or None)
        q = request.query
        workers = _int(q, "min_worker", 1, minimum=None, maximum=MAX_WORKERS)
        maximum = _int(q, "max_worker", workers, minimum=None, maximum=MAX_WORKERS)
        if maximum < workers:
            raise InvalidInput("max_worker cannot be less than min_worker.")
        if workers < 0:  # TorchServe fails to start a negative number of workers: 500
            raise ServekitError(
                f"Failed to start workers for model {model.name} version: {model.version}: "
                f"min_worker must not be negative, got {workers}"
            )
        synchronous = _flag(q, "synchronous", False)
        change = changes.scaled(model.name, model.version, workers)
        if not synchronous:
            _in_background(changes.make(ctx, change, wait=False), f"scaling model {model.name!r}")
            return json_response({"status": "Processing worker updates..."}, 202)
        await changes.make(ctx, change, wait=True)
        return json_response(
            {"status": f"Workers scaled to {workers} for model: {model.name}, version: {model.version}"}
        )

    async def set_default(request: Request) -> Response:
        guard(request)
        p = request.path_params
        version = p["version"]
        registry.version_names(p["model"])  # the model must exist
        if not registry.has(p["model"], version):
            raise ModelNotFound(f"Model version {version} does not exist for model {p['model']}")
        await changes.make(ctx, changes.default_set(p["model"], version))
        return json_response(
            {"status": f'Default version successfully updated for model "{p["model"]}" to "{version}"'}
        )

    async def unregister(request: Request) -> Response:
        guard(request)
        p = request.path_params
        name = p["model"]
        versions = registry.version_names(name)
        default = registry.default_version(name)
        version = p.get("version") or default or registry.current(name).version
        if version not in versions:
            raise ModelNotFound(f"Model version {version} does not exist for model {name}")
        if version == default and len(versions) > 1:
            raise Conflict(
                f"Cannot remove the default version {version} of model {name}; set another "
                "version as default first"
            )
        await changes.make(ctx, changes.unregistered(name, version))
        return json_response({"status": f'Model "{name}" unregistered'})

    e = error_response
    return [
        route("GET", "/token", token, e),
        route("GET", "/models", list_models, e),
        route("POST", "/models", register, e),
        route("GET", "/models/{model}", describe, e),
        route("GET", "/models/{model}/{version}", describe, e),
        route("PUT", "/models/{model}", scale, e),
        route("PUT", "/models/{model}/{version}", scale, e),
        route("PUT", "/models/{model}/{version}/set-default", set_default, e),
        route("DELETE", "/models/{model}", unregister, e),
        route("DELETE", "/models/{model}/{version}", unregister, e),
        # "/models/x/" is "/models/x" (TorchServe splits the path and drops the empty end)
        route("GET", "/models/", list_models, e),
        route("POST", "/models/", register, e),
        route("GET", "/models/{model}/", describe, e),
        route("PUT", "/models/{model}/", scale, e),
        route("DELETE", "/models/{model}/", unregister, e),
        route("GET", "/models/{model}/{version}/", describe, e),
        route("PUT", "/models/{model}/{version}/", scale, e),
        route("DELETE", "/models/{model}/{version}/", unregister, e),
        *workflows.management_routes(ctx, guard, e),
    ]


def _pick(registry: Registry, name: str, version: str | None) -> ModelVersion:
    if version:
        registry.version_names(name)  # the model must exist
        found = registry.find(name, version)
        if found is None:
            raise ModelNotFound(f"Model version {version} does not exist for model {name}")
        return found
    return registry.current(name)


def _flag(query: dict[str, str], key: str, default: bool) -> bool:
    """TorchServe's reading of a boolean parameter (Java's parseBoolean): "true"
    in any case is true, any other value false, none the default."""
    raw = query.get(key)
    if raw is None:
        return default
    return raw.strip().lower() == "true"


_BACKGROUND: set[asyncio.Task[None]] = set()


def _in_background(work: Coroutine[Any, Any, None], what: str) -> None:
    """Run a management change the call does not wait for; its failure is logged."""

    async def run() -> None:
        try:
            await work
        except ServekitError as exc:
            log.error("Failed %s: %s", what, exc.message)
        except Exception:
            log.exception("Failed %s", what)

    task = asyncio.get_running_loop().create_task(run())
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)


def _describe(store: ModelStore, model: ModelVersion, default: str | None) -> dict[str, Any]:
    options = store.option(model.name, model.version)
    workers = options.workers if model.ready else 0
    pid = os.getpid()
    started = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - model.load_seconds))
    out: dict[str, Any] = {
        "modelName": model.name,
        "modelVersion": model.version,
        "modelUrl": options.url,
        "runtime": "python",
        "minWorkers": options.workers,
        "maxWorkers": options.workers,
        "batchSize": options.batch_size,
        "maxBatchDelay": options.max_batch_delay_ms,
        "loadedAtStartup": options.loaded_at_startup,
        "isDefault": default in (None, model.version),
        "status": model.state.value,
        "workers": [
            {"id": str(9000 + i), "startTime": started, "status": "READY", "pid": pid, "gpu": False,
             "gpuUsage": "N/A"}
            for i in range(workers)
        ],
    }
    if model.reason:
        out["reason"] = model.reason
    if model.ready:
        stats = model.stats
        out["servekit"] = {
            "inferenceCount": stats.inference_count,
            "batches": {str(k): v for k, v in sorted(stats.batch_sizes.items())},
        }
    return out


def _url(store: ModelStore, name: str, versions: list[str]) -> str:
    for version in versions:
        url = store.option(name, version).url
        if url:
            return url
    return ""


_INTEGER = re.compile(r"[+-]?[0-9]+")


def _int(query: dict[str, str], key: str, default: int, minimum: int | None, maximum: int | None) -> int:
    """An integer parameter, read as TorchServe reads it: missing, empty or not
    an integer means ``default``. An integer outside ``minimum``..``maximum``
    (each a bound on something servekit sizes) is refused (400)."""
    raw = (query.get(key) or "").strip()
    if not _INTEGER.fullmatch(raw):
        return default
    if len(raw) > 12:
        raise InvalidInput(f"Parameter {key} must be an integer from {minimum or 0} to {maximum}")
    value = int(raw)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise InvalidInput(f"Parameter {key} must be from {minimum or 0} to {maximum}, got {value}")
    return value


def _positive_or(value: int, default: int) -> int:
    return value if value > 0 else default


def _nonnegative_or(value: int, default: int) -> int:
    return value if value >= 0 else default


def _is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def mounts(ctx: ServerContext) -> list[Mount]:
    if not torchserve_mode(ctx.settings):
        return [Mount(MAIN, inference_routes(ctx), error_response)]
    # TorchServe mode: every answer counted in TorchServe's Requests2XX/4XX/5XX
    counters = torchserve_metrics(ctx.metrics)
    on_error = counting_errors(error_response, counters)
    return [
        Mount(MAIN, counted(inference_routes(ctx), error_response, counters), on_error),
        Mount(TORCHSERVE_MANAGEMENT, counted(management_routes(ctx), error_response, counters), on_error),
    ]


async def start(ctx: ServerContext) -> None:
    if torchserve_mode(ctx.settings):
        await changes.settle(ctx)


SKIN = Skin(name="torchserve", mounts=mounts, start=start, changes={changes.KIND: changes.apply})


__all__ = ["SKIN", "error_response", "inference_routes", "management_routes", "torchserve_mode"]
