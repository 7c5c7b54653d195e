"""OpenAPI 3.1 documents of every HTTP listener, and the ``/docs`` page.

Each port answers ``GET /openapi.json`` with the document of what *that port*
answers, built at request time from its router's table (``Router.routes``):
every route is in it, described by its surface (:mod:`servekit.openapi.surfaces`)
or, when nothing describes it yet, listed with a generic operation marked
``x-servekit-undescribed`` — so no route can be missing. The served models
fill in the examples: their names as path parameter examples, a V2 request
built from each model's input metadata, its metadata as the metadata answer,
and a typed library model gets an operation of its own whose schemas are its
Python types (``/predict/{name}``, ``/predict/batch/{name}``).

``GET /docs`` shows the port's document with Swagger UI, whose files come from
the installed ``swagger-ui-py`` package (see :mod:`servekit.openapi.docs`).
"""

from __future__ import annotations

import copy
import re
from typing import Any

import orjson

from servekit import __version__
from servekit.errors import RouteNotFound, ServekitError
from servekit.openapi import docs, surfaces
from servekit.openapi.schemas import SCHEMAS
from servekit.registry import ModelVersion
from servekit.server.http import Request, Response, Route, Router, default_error, route
from servekit.server.lifecycle import (
    MAIN,
    METRICS,
    TFSERVING_REST,
    TORCHSERVE_MANAGEMENT,
    Mount,
    ServerContext,
    Skin,
)
from servekit.tensors import MAX_DIMS

OPENAPI = "3.1.0"
# bounds on what the served models add to a document
MAX_MODELS_DESCRIBED = 50  # models whose examples and typed operations are written out
MAX_EXAMPLE_ELEMENTS = 4096  # a larger input gets no generated example body

LISTENER_TITLES = {
    MAIN: "main HTTP port",
    METRICS: "metrics port",
    TFSERVING_REST: "TF Serving REST port",
    TORCHSERVE_MANAGEMENT: "TorchServe management port",
}

# the modules whose handlers each surface's table describes
FAMILIES = {
    "servekit.protocols.v2_rest": "v2",
    "servekit.fronts.kserve.v1": "kserve_v1",
    "servekit.fronts.tfserving.rest": "tfserving",
    "servekit.fronts.torchserve.api": "torchserve",
    "servekit.fronts.torchserve.metrics": "torchserve",  # TorchServe's counted routes wrap the handlers here
    "servekit.fronts.seldon.api": "seldon",
    "servekit.fronts.mlflow.api": "mlflow",
    "servekit.protocols.predict": "predict",
    "servekit.server.dashboard": "dashboard",
    __name__: "documents",
}
TYPED_ROUTE = "/predict/{name}"
TYPED_BATCH_ROUTE = "/predict/batch/{name}"
_PARAMETER = re.compile(r"\{(\w+)(?::path)?\}")


def template(r: Route) -> str:
    """The route's path template; for a route made without one, read back from its pattern."""
    if r.path:
        return r.path
    text = r.pattern.pattern.removeprefix("^").removesuffix("$")
    return re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", text)


def openapi_path(path: str) -> str:
    """OpenAPI writes ``{name}`` for every parameter (``{rest:path}`` too)."""
    return _PARAMETER.sub(r"{\1}", path)


def family(r: Route) -> str:
    return FAMILIES.get(getattr(r.handler, "__module__", ""), "")


# -- what the served models add -------------------------------------------------
def _served(ctx: ServerContext) -> list[ModelVersion]:
    """The default ready version of each model (bounded)."""
    out = []
    for name in ctx.registry.names()[:MAX_MODELS_DESCRIBED]:
        try:
            out.append(ctx.registry.resolve(name))
        except ServekitError:
            continue
    return out


def _zeros(datatype: str, count: int) -> list[Any]:
    if datatype == "BOOL":
        return [False] * count
    if datatype == "BYTES":
        return [""] * count
    return [0] * count


def _v2_example(model: ModelVersion) -> dict[str, Any] | None:
    meta = model.metadata()
    inputs = []
    for spec in meta.inputs:
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in spec.shape] or [1]
        if len(shape) > MAX_DIMS:
            return None
        count = 1
        for d in shape:
            count *= d
        if count > MAX_EXAMPLE_ELEMENTS:
            return None
        inputs.append({"name": spec.name, "shape": shape, "datatype": spec.datatype,
                       "data": _zeros(spec.datatype, count)})
    return {"inputs": inputs} if inputs else None


def _signature_text(model: ModelVersion) -> str:
    meta = model.metadata()

    def tensors(specs: list[Any]) -> str:
        return ", ".join(f"`{s.name}` {s.datatype} {list(s.shape)}" for s in specs) or "—"

    return f"| `{model.name}` | {model.version or '—'} | {meta.platform or '—'} | {tensors(meta.inputs)} | " \
           f"{tensors(meta.outputs)} |"


def model_examples(ctx: ServerContext) -> dict[str, dict[str, Any]]:
    """Named examples per kind of body, from the served models' metadata."""
    infer: dict[str, Any] = {}
    metadata: dict[str, Any] = {}
    rows: dict[str, Any] = {}
    lines = []
    from servekit.protocols.v2_operations import metadata_dict

    for model in _served(ctx):
        try:
            body = _v2_example(model)
            meta = metadata_dict(model, [v for v in ctx.registry.version_names(model.name) if v])
            lines.append(_signature_text(model))
        except ServekitError:
            continue
        summary = f"{model.name} (version {model.version or 'default'})"
        metadata[model.name] = {"summary": summary, "value": meta}
        if body is not None:
            infer[model.name] = {"summary": summary, "value": body}
            first = body["inputs"][0]
            if len(body["inputs"]) == 1 and len(first["shape"]) == 2:
                width = first["shape"][1]
                rows[model.name] = {"summary": summary, "value": {"instances": [first["data"][:width]]}}
    out: dict[str, dict[str, Any]] = {"infer": infer, "metadata": metadata, "rows": rows}
    out["flask"] = {k: {"summary": v["summary"], "value": {"inputs": v["value"]["instances"]}}
                    for k, v in rows.items()}
    if lines:
        table = "| model | version | platform | inputs | outputs |\n|---|---|---|---|---|\n" + "\n".join(lines)
        out["models_text"] = {"value": "Served models:\n\n" + table}
    return out


def typed_operations(ctx: ServerContext) -> tuple[dict[str, Any], dict[str, Any]]:
    """Operations of the typed library models (their schemas from their types),
    and the schemas they refer to."""
    paths: dict[str, Any] = {}
    components: dict[str, Any] = {}
    for model in _served(ctx):
        try:
            meta = model.metadata()
        except ServekitError:
            continue
        if not meta.parameters.get("typed"):
            continue
        schemas = []
        for key in ("input_schema", "output_schema"):
            schema = dict(meta.parameters.get(key) or {})
            components.update(schema.pop("$defs", {}))
            schemas.append(schema)
        request_schema, response_schema = schemas
        signature = meta.parameters.get("signature", "")
        def operation(summary: str, request: dict[str, Any], answer: dict[str, Any], of: str) -> dict[str, Any]:
            error = surfaces.answer("An error", {"$ref": "#/components/schemas/Error"})
            return {"post": {
                "summary": summary, "tags": [surfaces.TYPED], "x-servekit-route": of,
                "requestBody": surfaces.json_body(request),
                "responses": {"200": surfaces.answer("The model's output", answer), "default": error},
            }}

        name = model.name
        paths[f"/predict/{name}"] = operation(f"{name}: {signature}", request_schema, response_schema, TYPED_ROUTE)
        paths[f"/predict/batch/{name}"] = operation(
            f"{name}: a list of items", {"type": "array", "items": request_schema},
            {"type": "array", "items": response_schema}, TYPED_BATCH_ROUTE)
    return paths, components


# -- the document ---------------------------------------------------------------
def tables(ctx: ServerContext, examples: dict[str, dict[str, Any]]) -> dict[str, surfaces.Table]:
    from servekit.fronts.tfserving.flags import monitoring_path

    settings = ctx.settings
    return {
        "v2": surfaces.v2(settings.metrics_endpoint, examples),
        "kserve_v1": surfaces.kserve_v1(examples),
        "tfserving": surfaces.tfserving(monitoring_path(settings), examples),
        "torchserve": surfaces.torchserve(),
        "seldon": surfaces.seldon(examples),
        "predict": surfaces.predict(examples),
        "mlflow": surfaces.mlflow(),
        "documents": surfaces.documents(),
        "dashboard": surfaces.dashboard(),
    }


def describe(r: Route, path: str, known: dict[str, surfaces.Table]) -> dict[str, Any] | None:
    """The operation of a route: its family's, else the one family that has its method and path."""
    key = (r.method, path)
    table = known.get(family(r))
    if table is not None and key in table:
        return table[key]
    found = [t[key] for t in known.values() if key in t]
    return found[0] if len(found) == 1 else None


def _path_parameters(path: str, enums: dict[str, list[str]], names: list[str]) -> list[dict[str, Any]]:
    out = []
    for name in _PARAMETER.findall(path):
        schema: dict[str, Any] = {"type": "string", "minLength": 1, "pattern": "^[^/]+$"}
        values = enums.get(name)
        if values:
            schema = {"type": "string", "enum": values}
        elif name in ("model", "name") and names:
            schema["examples"] = names[:10]
        parameter: dict[str, Any] = {
            "name": name, "in": "path", "required": True, "schema": schema,
            "description": surfaces.PATH_PARAMETERS.get(name, name),
        }
        if name in ("model", "name") and names and not values:
            parameter["example"] = names[0]
        out.append(parameter)
    return out


class _Served:
    """The handler of one listener's ``/openapi.json`` or ``/docs``: it knows
    its listener, so a router's table tells which listeners share its port."""

    def __init__(self, ctx: ServerContext, listener: str, kind: str) -> None:
        self.ctx, self.listener, self.kind = ctx, listener, kind

    async def __call__(self, request: Request) -> Response:
        port = _port(self.ctx, request)
        router = self.ctx.routers.get(port) or Router()
        if self.kind == "page":
            title = f"{self.ctx.settings.server_name} API — {_where(listeners_on(router))}"
            return Response(docs.page(title), content_type=b"text/html; charset=utf-8")
        return Response(orjson.dumps(document(self.ctx, router, port)))


def listeners_on(router: Router) -> list[str]:
    """The listeners whose routes a port's router holds (read from its documents' handlers)."""
    out = [r.handler.listener for r in router.routes if isinstance(r.handler, _Served)]
    return list(dict.fromkeys(out)) or [MAIN]


def _where(listeners: list[str]) -> str:
    return ", ".join(LISTENER_TITLES.get(name, name) for name in listeners)


def document(ctx: ServerContext, router: Router, port: int) -> dict[str, Any]:
    """The OpenAPI 3.1 document of what ``router`` (the router of ``port``) answers."""
    examples = model_examples(ctx)
    known = tables(ctx, examples)
    names = [m.name for m in _served(ctx)]
    paths: dict[str, dict[str, Any]] = {}
    tags_used: list[str] = []
    identifiers: set[str] = set()
    for r in router.routes:
        path = openapi_path(template(r))
        method = r.method.lower()
        if method in paths.get(path, {}):
            continue  # an earlier route answers it (routes match in order)
        described = describe(r, path, known)
        if described is None:
            operation: dict[str, Any] = {
                "summary": f"{r.method} {path}", "tags": ["Other"], "x-servekit-undescribed": True,
                "responses": {"default": {"description": "The answer"}},
            }
        else:
            operation = copy.deepcopy(described)
        enums = operation.pop("x-servekit-enums", {})
        if "asset" in enums:
            enums["asset"] = sorted(docs.ASSETS)
        parameters = _path_parameters(path, enums, names) + operation.get("parameters", [])
        if parameters:
            operation["parameters"] = parameters
        operation["operationId"] = identifier = _operation_id(r.method, path)
        while identifier in identifiers:  # two paths may spell the same words ("/a_b", "/a/b")
            identifier += "_"
        operation["operationId"] = identifier
        identifiers.add(identifier)
        for tag in operation.get("tags", []):
            if tag not in tags_used:
                tags_used.append(tag)
        paths.setdefault(path, {})[method] = operation
    components: dict[str, Any] = {"schemas": dict(SCHEMAS)}
    if any(path == TYPED_ROUTE for path in paths) and "post" in paths[TYPED_ROUTE]:
        typed, typed_schemas = typed_operations(ctx)
        for path, item in typed.items():
            if path not in paths:
                paths[path] = item
                if surfaces.TYPED not in tags_used:
                    tags_used.append(surfaces.TYPED)
        components["schemas"].update(typed_schemas)
    components["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer",
                   "description": "The management token (management_token, or TorchServe's key_file.json)"},
    }
    where = _where(listeners_on(router))
    description = (
        f"What servekit answers on its {where} ({port}). Built from the routes this port serves; the served "
        "models' metadata fill in the examples. `/docs` shows it."
    )
    others = [f"{_where(listeners_on(other))}: port {p}, `/openapi.json`"
              for p, other in sorted(ctx.routers.items()) if p != port]
    if others:
        description += "\n\nThe other ports have documents of their own: " + "; ".join(others) + "."
    return {
        "openapi": OPENAPI,
        "info": {"title": f"{ctx.settings.server_name} — {where}", "version": __version__,
                 "description": description,
                 "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"}},
        "tags": [{"name": tag, "description": surfaces.TAGS.get(tag, "")} for tag in tags_used],
        "paths": paths,
        "components": components,
    }


def _operation_id(method: str, path: str) -> str:
    """Unique per method and path: a trailing slash is a word of its own."""
    words = re.sub(r"[^A-Za-z0-9]+", "_", path.rstrip("/")).strip("_") or "root"
    return f"{method.lower()}_{words}" + ("_slash" if path.endswith("/") and path != "/" else "")


# -- the routes -------------------------------------------------------------------
def _port(ctx: ServerContext, request: Request) -> int:
    server = request.scope.get("server")
    return int(server[1]) if server else ctx.settings.http_port


def routes(ctx: ServerContext, listener: str = MAIN) -> list[Route]:
    async def asset(request: Request) -> Response:
        name = request.path_params["asset"]
        content_type = docs.ASSETS.get(name)
        if content_type is None:
            raise RouteNotFound(f"no file {name!r} in the docs page; it has {', '.join(sorted(docs.ASSETS))}")
        return Response(docs.asset(name), content_type=content_type,
                        headers=[(b"cache-control", b"public, max-age=86400")])

    return [
        route("GET", "/openapi.json", _Served(ctx, listener, "document"), default_error),
        route("GET", "/docs", _Served(ctx, listener, "page"), default_error),
        route("GET", "/docs/{asset}", asset, default_error),
    ]


def mounts(ctx: ServerContext) -> list[Mount]:
    return [Mount(listener, routes(ctx, listener), default_error)
            for listener in (MAIN, METRICS, TFSERVING_REST, TORCHSERVE_MANAGEMENT)]


SKIN = Skin(name="openapi", mounts=mounts)

__all__ = ["SKIN", "document", "model_examples", "template", "typed_operations"]
