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

import hmac
import ipaddress
import os
import time
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

import numpy as np
import orjson

from servekit.archive.store import ModelOptions, ModelStore, active_store, settings_for
from servekit.errors import (
    Conflict,
    InvalidInput,
    ModelLoadError,
    ModelNotFound,
    ModelNotReady,
    ServekitError,
    Unauthorized,
)
from servekit.protocols import torchserve_changes as changes
from servekit.registry import ModelVersion, version_sort_key
from servekit.server.context import ServerContext
from servekit.server.http import Request, Response, Route, json_response, route
from servekit.tensors import InferenceRequest, Tensor

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


def error_response(exc: ServekitError) -> Response:
    kind = exc.kind if exc.kind.endswith("Exception") else ERROR_TYPES.get(exc.status, "InternalServerException")
    if exc.kind == "NotFound":
        kind = "ResourceNotFoundException"
    return json_response({"code": exc.status, "type": kind, "message": exc.message}, exc.status)


def torchserve_mode(settings: Any) -> bool:
    return bool(settings.model_store or settings.load_models or settings.ts_config)


# -- request bodies -------------------------------------------------------------
def request_rows(body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, Any]]:
    """(payload, meta) of one prediction request: the raw body as ``body``, or the
    ``data`` field (else the first file) of a multipart form, other fields kept."""
    content_type = headers.get("content-type", "")
    meta: dict[str, Any] = {"headers": headers, "field": "body", "content_type": content_type}
    if not content_type.lower().startswith("multipart/form-data"):
        return body, meta
    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    )
    if not message.is_multipart():
        raise InvalidInput("the multipart body could not be parsed; check its boundary")
    fields: dict[str, Any] = {}
    payload: tuple[str, bytes, str] | None = None
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        raw = part.get_payload(decode=True)
        data = raw if isinstance(raw, bytes) else b""
        name = str(name) if name else f"file{len(fields)}"
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
    metrics = ctx.metrics
    store = active_store(ctx.settings)

    async def ping(request: Request) -> Response:
        broken = [
            f"{e.name}: no ready version" for e in registry.models.values()
            if e.versions and e.newest() is None
        ]
        if broken:
            return json_response({"status": "Unhealthy", "reason": "; ".join(broken)}, 500)
        return json_response({"status": "Healthy"})

    async def predictions(request: Request) -> Response:
        started = time.perf_counter()
        name = request.path_params["model"]
        version = request.path_params.get("version")
        try:
            model = registry.resolve(name, version)
            if store.option(model.name, model.version).workers <= 0:
                raise ModelNotReady(
                    f"No worker is available to serve request for model {name!r}: it is scaled "
                    f"to 0 workers (PUT /models/{name}?min_worker=1 on the management API)"
                )
            body = await request.body()
            response = await _predict(model, body, request.headers)
        except ServekitError as exc:
            metrics.failure(name, version or "", PROTOCOL, exc.status)
            raise
        metrics.observe(name, model.version, PROTOCOL, time.perf_counter() - started)
        return response

    async def _predict(model: ModelVersion, body: bytes, headers: dict[str, str]) -> Response:
        if model.runtime is not None and model.runtime.platform == "torchserve":
            payload, meta = request_rows(body, headers)
            data = np.empty((1, 1), dtype=object)
            data[0, 0] = payload
            meta_column = np.empty((1, 1), dtype=object)
            meta_column[0, 0] = orjson.dumps(meta)
            inference = InferenceRequest(
                inputs=[Tensor("data", data, "BYTES"), Tensor("meta", meta_column, "BYTES")]
            )
            result = await registry.infer(model.name, model.version, inference)
            out_meta = orjson.loads(result.output("meta").data.reshape(-1)[0])
            extra = [(k.encode(), str(v).encode()) for k, v in (out_meta.get("headers") or {}).items()]
            return Response(
                bytes(result.output("output").data.reshape(-1)[0]),
                status=int(out_meta.get("status") or 200),
                content_type=str(out_meta.get("content_type") or "application/json").encode(),
                headers=extra,
            )
        result = await registry.infer(model.name, model.version, numeric_request(body))
        if len(result.outputs) == 1:
            return json_response(result.outputs[0].data)
        return json_response({t.name: t.data for t in result.outputs})

    e = error_response
    return [
        route("GET", "/ping", ping, e),
        route("POST", "/ping", ping, e),
        route("POST", "/predictions/{model}", predictions, e),
        route("PUT", "/predictions/{model}", predictions, e),
        route("POST", "/predictions/{model}/{version}", predictions, e),
        route("PUT", "/predictions/{model}/{version}", predictions, e),
    ]


def management_routes(ctx: ServerContext) -> list[Route]:
    registry = ctx.registry
    settings = ctx.settings
    store = active_store(settings)
    token = settings.management_token
    loopback_only = _is_loopback(settings.management_host) and not _is_loopback(settings.host)

    def guard(request: Request) -> None:
        if loopback_only:
            client = request.scope.get("client")
            if client and not _is_loopback(client[0]):
                raise Unauthorized("the management API only serves this machine (management_host is loopback)")
        if token:
            given = request.headers.get("authorization", "")
            scheme, _, value = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
                raise Unauthorized(
                    "Token Authorization failed: send 'Authorization: Bearer <key>' with the "
                    "management key printed at startup (key_file.json)"
                )

    async def list_models(request: Request) -> Response:
        guard(request)
        limit = _int(request.query, "limit", 100, minimum=1)
        start = _int(request.query, "next_page_token", 0, minimum=0)
        names = sorted(n for n, e in registry.models.items() if e.versions)
        page = names[start : start + limit]
        rows = [{"modelName": n, "modelUrl": _url(store, registry.models[n].versions)} for n in page]
        out: dict[str, Any] = {"models": rows}
        if start + limit < len(names):
            out["nextPageToken"] = str(start + limit)
        return json_response(out)

    async def register(request: Request) -> Response:
        guard(request)
        q = request.query
        path = store.resolve(q.get("url", ""))
        options = ModelOptions(
            url=q.get("url", ""),
            workers=_int(q, "initial_workers", 0, minimum=0),
            batch_size=_int(q, "batch_size", 1, minimum=1),
            max_batch_delay_ms=_int(q, "max_batch_delay", 100, minimum=0),
            handler=q.get("handler") or None,
        )
        try:
            candidate = settings_for(path, q.get("model_name") or None, options)
        except ModelLoadError as exc:
            raise InvalidInput(f"Failed to open model archive {path.name}: {exc.message}") from None
        name, version = candidate.name, candidate.parameters.version or ""
        existing = registry.models.get(name)
        if existing is not None and version in existing.versions:
            raise Conflict(f"Model version {version} is already registered for model {name}")
        store.keep(candidate, options)
        model = await registry.load(candidate)
        if not model.ready:
            store.remove(name, version)
            if name in registry.models and version in registry.models[name].versions:
                await registry.unload(name, version)
            raise InvalidInput(f"Failed to load model {name!r} version {version}: {model.reason}")
        entry = registry.models[name]
        default = version if entry.default_version is None else entry.default_version
        # the other workers load it from the settings made here: no second download or unpacking
        await changes.make(ctx, store, changes.registered(candidate, options, default))
        message = f'Model "{name}" Version: {version} registered with {options.workers} initial workers'
        if options.workers == 0:
            message += ". Use scale workers API to add workers for the model."
        return json_response({"status": message})

    async def describe(request: Request) -> Response:
        guard(request)
        p = request.path_params
        entry = registry.entry(p["model"])
        version = p.get("version")
        if version == "all":
            models = sorted(entry.versions.values(), key=lambda m: version_sort_key(m.version))
        else:
            models = [_pick(registry, p["model"], version)]
        return json_response([_describe(store, m, entry.default_version) for m in models])

    async def scale(request: Request) -> Response:
        guard(request)
        p = request.path_params
        model = _pick(registry, p["model"], p.get("version"))
        q = request.query
        workers = _int(q, "min_worker", 1, minimum=0)
        maximum = _int(q, "max_worker", workers, minimum=0)
        if maximum < workers:
            raise InvalidInput(f"max_worker ({maximum}) is smaller than min_worker ({workers})")
        await changes.make(ctx, store, changes.scaled(model.name, model.version, workers))
        if q.get("synchronous", "false").lower() == "true":
            return json_response(
                {"status": f"Workers scaled to {workers} for model: {model.name}, version: {model.version}"}
            )
        return json_response({"status": "Processing worker updates..."}, 202)

    async def set_default(request: Request) -> Response:
        guard(request)
        p = request.path_params
        entry = registry.entry(p["model"])
        version = p["version"]
        if version not in entry.versions:
            raise ModelNotFound(f"Model version {version} does not exist for model {p['model']}")
        await changes.make(ctx, store, changes.default_set(p["model"], version))
        return json_response(
            {"status": f'Default version successfully updated for model "{p["model"]}" to "{version}"'}
        )

    async def unregister(request: Request) -> Response:
        guard(request)
        p = request.path_params
        name = p["model"]
        entry = registry.entry(name)
        version = p.get("version") or entry.default_version
        if version is None:
            newest = entry.newest() or next(iter(entry.versions.values()))
            version = newest.version
        if version not in entry.versions:
            raise ModelNotFound(f"Model version {version} does not exist for model {name}")
        if version == entry.default_version and len(entry.versions) > 1:
            raise Conflict(
                f"Cannot remove the default version {version} of model {name}; set another "
                "version as default first"
            )
        await changes.make(ctx, store, changes.unregistered(name, version))
        return json_response({"status": f'Model "{name}" unregistered'})

    e = error_response
    return [
        route("GET", "/models", list_models, e),
        route("POST", "/models", register, e),
        route("GET", "/models/{model}", describe, e),
        route("GET", "/models/{model}/{version}", describe, e),
        route("PUT", "/models/{model}", scale, e),
        route("PUT", "/models/{model}/{version}", scale, e),
        route("PUT", "/models/{model}/{version}/set-default", set_default, e),
        route("DELETE", "/models/{model}", unregister, e),
        route("DELETE", "/models/{model}/{version}", unregister, e),
    ]


def _pick(registry: Any, name: str, version: str | None) -> ModelVersion:
    entry = registry.entry(name)
    if version:
        model = entry.versions.get(version)
        if model is None:
            raise ModelNotFound(f"Model version {version} does not exist for model {name}")
        return model  # type: ignore[no-any-return]
    model = entry.newest() or next(iter(entry.versions.values()))
    return model  # type: ignore[no-any-return]


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
    if model.batcher is not None:
        out["servekit"] = {
            "inferenceCount": model.batcher.stats.inference_count,
            "batches": {str(k): v for k, v in sorted(model.batcher.stats.batch_sizes.items())},
        }
    return out


def _url(store: ModelStore, versions: dict[str, ModelVersion]) -> str:
    for version in versions:
        url = store.option(versions[version].name, version).url
        if url:
            return url
    return ""


def _int(query: dict[str, str], key: str, default: int, minimum: int) -> int:
    raw = query.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput(f"Parameter {key} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise InvalidInput(f"Parameter {key} must be at least {minimum}, got {value}")
    return value


def _is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


__all__ = ["error_response", "inference_routes", "management_routes", "torchserve_mode"]
