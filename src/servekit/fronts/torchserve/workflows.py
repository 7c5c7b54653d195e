"""TorchServe workflows: ``.war`` archives (``torch-workflow-archiver``'s)
served as inference graphs, through TorchServe's workflow API.

A workflow archive holds ``WAR-INF/MANIFEST.json`` (``workflow``:
``workflowName``, ``specFile``, ``handler``), its YAML spec and a handler
``.py``. The spec's ``models`` gives defaults (``min-workers``,
``max-workers``, ``batch-size``, ``max-batch-delay``, ``retry-attempts``,
``timeout-ms``) and one entry per model (``url``: a ``.mar`` in the model
store, or among the archive's files, and its own overrides); ``dag`` maps
each node to the nodes it feeds. A node that is no model is a function of
the handler file, called ``fn(data, context)`` like a handler.

Registering (``POST /workflows?url=…[&workflow_name=…]`` on the management
port) does what TorchServe does: each node becomes a model named
``{workflow}__{node}`` (the ``.mar`` models with the spec's settings, the
functions as handler models ``handler.py:function`` running in process),
and the workflow itself a graph model named ``{workflow}`` whose one node is
of kind ``TorchServeWorkflow`` (:data:`WORKFLOW`, listed in
:data:`servekit.graphs.kinds.NODE_KINDS`). Every one is a TorchServe
registration (``fronts.torchserve.changes``), so every worker serves it and
a replacement worker gets it back. ``GET /workflows`` lists, ``GET
/workflows/{name}`` describes, ``DELETE /workflows/{name}`` unregisters (the
graph, then its nodes); ``POST /wfpredict/{name}`` on the inference port runs
it: the request goes to the DAG's start node as a TorchServe request; a
node with one parent gets that parent's answer as its ``body`` (bytes), a
node with several gets each parent's under the parent's name (the first as
bytes, the others as text); the answer is the leaf's, or with several leaves
a JSON object of each leaf's answer under its name. Each node call goes
through the data plane (metrics, deadline, spans), is retried
``retry-attempts`` times and bounded by ``timeout-ms``; a failing node
fails the call with its name.

Errors answer as TorchServe's do (the Postman collection's statuses): a
workflow registered twice 500, an archive that cannot be fetched 400, an
invalid spec 400, an unknown workflow 404. Archives come from the model store
(or ``file://`` paths ``allowed_urls`` allows); servekit does not download
``.war`` files.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import numpy as np
import orjson
import yaml

from servekit.archive.reader import cache_root, safe_unpack
from servekit.archive.store import ModelOptions, ModelStore, model_store, settings_for
from servekit.config import ModelParameters, ModelSettings
from servekit.dataplane import Target, bounded, header_timeout
from servekit.errors import InvalidInput, ModelLoadError, ModelNotFound, ServekitError
from servekit.fronts.torchserve import changes
from servekit.graphs.kinds import GraphRun, Metadata, NodeKind
from servekit.graphs.spec import MAX_NODES, GraphError, GraphSpec, NodeSpec
from servekit.names import check_name
from servekit.server.http import ErrorEncoder, Request, Response, Route, json_response, route
from servekit.server.lifecycle import ServerContext
from servekit.tensors import InferenceRequest, InferenceResponse, Tensor, TensorSpec

MANIFEST = "WAR-INF/MANIFEST.json"
KIND = "TorchServeWorkflow"  # the graph node kind of a workflow's DAG
VERSION = "1.0"  # workflows have no versions; their models get TorchServe's default one
MAX_SPEC_BYTES = 1024 * 1024
MAX_PAGE = 100
# the spec's model properties, TorchServe's defaults
DEFAULTS = {"min-workers": 1, "max-workers": 1, "batch-size": 1, "max-batch-delay": 50,
            "retry-attempts": 1, "timeout-ms": 10000}
BOUNDS = {"min-workers": 256, "max-workers": 256, "batch-size": 65536, "max-batch-delay": 3_600_000,
          "retry-attempts": 10, "timeout-ms": 3_600_000}


class InvalidWorkflow(InvalidInput):
    """The archive or its spec is not a workflow TorchServe would take (400)."""


@dataclass
class Workflow:
    """A workflow archive, read and checked."""

    name: str
    url: str
    folder: Path  # the unpacked archive
    handler: str  # the handler file's name in ``folder``
    dag: dict[str, list[str]]  # node -> the nodes it feeds (every node a key)
    models: dict[str, dict[str, Any]]  # model node -> its properties (url and overrides)
    defaults: dict[str, int]
    written: dict[str, list[str]]  # the spec's dag as written (what describe shows)

    def model_name(self, node: str) -> str:
        return f"{self.name}__{node}"

    def prop(self, node: str, key: str) -> int:
        return int(self.models.get(node, {}).get(key, self.defaults[key]))


# -- reading an archive ----------------------------------------------------------
def unpack(path: Path) -> Path:
    """The folder holding the archive's files (unpacked once into the archive cache)."""
    if path.is_dir():
        return path
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    target = cache_root() / f"war-{digest.hexdigest()[:32]}"
    if target.is_dir():
        return target
    staging = Path(tempfile.mkdtemp(prefix=".unpack-", dir=target.parent))
    try:
        safe_unpack(path, staging)
        try:
            os.rename(staging, target)
        except OSError:
            if not target.is_dir():  # not another worker winning the race
                raise
    except ModelLoadError as exc:
        raise InvalidWorkflow(f"Failed to open workflow archive {path.name}: {exc.message}") from None
    except OSError as exc:
        raise InvalidWorkflow(f"Failed to open workflow archive {path.name}: {exc.strerror}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def read_workflow(path: Path, url: str, requested: str | None) -> Workflow:
    """A workflow archive, checked as TorchServe checks it."""
    if path.is_file() and not zipfile.is_zipfile(path):
        raise InvalidWorkflow(f"{path.name} is not a workflow archive (a .war is a zip file)")
    folder = unpack(path)
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        info = manifest["workflow"]
        spec_file, handler = str(info["specFile"]), str(info.get("handler") or "")
        name = requested or str(info["workflowName"])
    except (OSError, ValueError, KeyError, TypeError):
        raise InvalidWorkflow(f"{path.name} has no readable {MANIFEST} with workflow.workflowName and "
                              "specFile (make it with torch-workflow-archiver)") from None
    name = check_name(name, "workflow name")
    spec_path = _inside(folder, spec_file, "specFile")
    if spec_path.stat().st_size > MAX_SPEC_BYTES:
        raise InvalidWorkflow(f"the workflow spec {spec_file} is over {MAX_SPEC_BYTES} bytes")
    try:
        spec = yaml.safe_load(spec_path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InvalidWorkflow(f"Invalid workflow specification: cannot read {spec_file}: "
                              f"{' '.join(str(exc).split())[:300]}") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("models"), dict) or not isinstance(spec.get("dag"), dict):
        raise InvalidWorkflow("Invalid workflow specification: it needs 'models' and 'dag' mappings")
    defaults = dict(DEFAULTS)
    models: dict[str, dict[str, Any]] = {}
    for key, value in spec["models"].items():
        if key in DEFAULTS:
            defaults[key] = _bounded(key, value, f"models.{key}")
        elif isinstance(value, dict) and isinstance(value.get("url"), str):
            node = check_name(str(key), "workflow model name")
            props = {k: _bounded(k, v, f"models.{key}.{k}") for k, v in value.items() if k in DEFAULTS}
            unknown = sorted(set(value) - set(DEFAULTS) - {"url"})
            if unknown:
                raise InvalidWorkflow(f"Invalid workflow specification: models.{key} has unknown keys "
                                      f"{', '.join(map(str, unknown))}")
            models[node] = {"url": value["url"], **props}
        else:
            raise InvalidWorkflow(f"Invalid workflow specification: models.{str(key)[:64]} needs a url")
    dag = _dag(spec["dag"])
    functions = [n for n in dag if n not in models]
    if functions:
        if not handler:
            raise InvalidWorkflow(f"Invalid workflow specification: nodes {', '.join(functions)} are no "
                                  "models and the archive has no handler file for them")
        defined = _functions(_inside(folder, handler, "handler"))
        missing = [f for f in functions if f not in defined]
        if missing:
            raise InvalidWorkflow(f"Invalid workflow specification: {', '.join(missing)} is neither a model "
                                  f"of the spec nor a function of {handler}")
    written = {node: [c for c in dag[node]] for node in map(str, spec["dag"])}
    return Workflow(name, url, folder, handler, dag, models, defaults, written)


def _bounded(key: str, value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= BOUNDS[key]:
        raise InvalidWorkflow(f"Invalid workflow specification: {where} must be an integer from 0 to {BOUNDS[key]}")
    return value


def _inside(folder: Path, name: str, what: str) -> Path:
    path = (folder / name).resolve()
    if folder.resolve() not in path.parents or not path.is_file():
        raise InvalidWorkflow(f"the archive's {what} {name[:64]!r} is not a file of the archive")
    return path


def _functions(path: Path) -> set[str]:
    """Top-level functions of the handler file (read, not imported)."""
    import ast

    try:
        tree = ast.parse(path.read_text())
    except (SyntaxError, UnicodeDecodeError, ValueError) as exc:
        raise InvalidWorkflow(f"the handler file {path.name} is not Python: {exc}") from None
    return {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}


def _dag(raw: dict[Any, Any]) -> dict[str, list[str]]:
    """Node -> children, checked as TorchServe's Dag.validate: one start node, no cycle."""
    dag: dict[str, list[str]] = {}
    for key, children in raw.items():
        node = check_name(str(key), "workflow node name")
        if children is None:
            children = []
        if not isinstance(children, list):
            raise InvalidWorkflow(f"Invalid workflow specification: dag.{node} must be a list of nodes")
        dag.setdefault(node, [])
        for child in children:
            if child is None or not str(child).strip():
                continue
            name = check_name(str(child).strip(), "workflow node name")
            if name == node:
                raise InvalidWorkflow(f"Invalid workflow specification: Self loop exception ({node})")
            if name not in dag[node]:
                dag[node].append(name)
            dag.setdefault(name, [])
    if len(dag) > MAX_NODES:
        raise InvalidWorkflow(f"Invalid workflow specification: {len(dag)} nodes; the limit is {MAX_NODES}")
    starts = start_nodes(dag)
    if len(starts) != 1:
        raise InvalidWorkflow(f"Invalid workflow specification: DAG should have only one start node (it has "
                              f"{', '.join(starts) or 'none'})")
    if len(waves(dag)) == 0 or sum(len(w) for w in waves(dag)) != len(dag):
        raise InvalidWorkflow("Invalid workflow specification: Not a valid DAG (it has a cycle)")
    return dag


def start_nodes(dag: dict[str, list[str]]) -> list[str]:
    fed = {c for children in dag.values() for c in children}
    return [n for n in dag if n not in fed]


def parents_of(dag: dict[str, list[str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {n: [] for n in dag}
    for node, children in dag.items():
        for child in children:
            out[child].append(node)
    return out


def waves(dag: dict[str, list[str]]) -> list[list[str]]:
    """The nodes in rounds: each round's nodes only need earlier rounds' (Kahn)."""
    waiting = {n: len(p) for n, p in parents_of(dag).items()}
    ready = [n for n, count in waiting.items() if count == 0]
    out = []
    while ready:
        out.append(ready)
        nxt = []
        for node in ready:
            for child in dag[node]:
                waiting[child] -= 1
                if waiting[child] == 0:
                    nxt.append(child)
        ready = nxt
    return out


# -- what a workflow registers ------------------------------------------------------
def node_settings(store: ModelStore, workflow: Workflow) -> list[tuple[ModelSettings, ModelOptions]]:
    """Each node's model, as TorchServe registers it (``{workflow}__{node}``)."""
    out = []
    for node in workflow.dag:
        options = ModelOptions(
            url=str(workflow.models.get(node, {}).get("url") or f"{workflow.handler}:{node}"),
            workers=workflow.prop(node, "min-workers") if node in workflow.models else 1,
            batch_size=max(1, workflow.prop(node, "batch-size")) if node in workflow.models else 1,
            max_batch_delay_ms=workflow.prop(node, "max-batch-delay") if node in workflow.models else 0,
        )
        name = workflow.model_name(node)
        if node in workflow.models:
            url = str(workflow.models[node]["url"])
            local = workflow.folder / Path(url).name
            path = local if "/" not in url and local.is_file() else store.resolve(url)
            try:
                settings = settings_for(path, name, options)
            except ModelLoadError as exc:
                raise InvalidWorkflow(f"Workflow Node {name} failed to register. Details: {exc.message}") from None
        else:
            settings = ModelSettings(
                name=name,
                implementation="torchserve",
                parameters=ModelParameters(uri=str(workflow.folder), version=VERSION,
                                           extra={"handler": f"{workflow.handler}:{node}", "batch_size": 1}),
                source_dir=str(workflow.folder),
            )
        out.append((settings, options))
    return out


def graph_settings(workflow: Workflow) -> ModelSettings:
    """The workflow as a graph model: one node of kind :data:`KIND` over its node models."""
    steps = [{"name": node, "serviceName": workflow.model_name(node)} for node in workflow.dag]
    limits = {node: {"retries": workflow.prop(node, "retry-attempts"), "timeout_ms": workflow.prop(node, "timeout-ms")}
              for node in workflow.dag}
    described = {
        "url": workflow.url,
        "minWorkers": workflow.defaults["min-workers"],
        "maxWorkers": workflow.defaults["max-workers"],
        "batchSize": workflow.defaults["batch-size"],
        "maxBatchDelay": workflow.defaults["max-batch-delay"],
        "dag": workflow.dag,
        "written": workflow.written,
    }
    return ModelSettings(
        name=workflow.name,
        implementation="graph",
        parameters=ModelParameters(version=VERSION, extra={"workflow": described}),
        graph={"nodes": {"root": {"routerType": KIND, "steps": steps,
                                  "parameters": {"dag": workflow.dag, "limits": limits}}}},
        source_dir=str(workflow.folder),
    )


# -- running one --------------------------------------------------------------------
def _bytes_column(value: bytes) -> np.ndarray:
    column = np.empty((1, 1), dtype=object)
    column[0, 0] = value
    return column


def _single(response: InferenceResponse, name: str) -> bytes:
    try:
        value = response.output(name).data.reshape(-1)[0]
    except (KeyError, IndexError):
        raise ServekitError(f"model {response.model_name!r} answered no {name!r}; a workflow node must be a "
                            "TorchServe handler or function") from None
    return bytes(value) if isinstance(value, bytes | bytearray) else str(value).encode()


class WorkflowKind(NodeKind):
    """A TorchServe workflow's DAG as one graph node (see the module's docstring)."""

    def check(self, graph: GraphSpec, node: NodeSpec) -> None:
        dag = node.parameters.get("dag")
        steps = {s.name for s in node.steps}
        if not isinstance(dag, dict) or set(dag) != steps:
            raise GraphError(f"graph {graph.name!r} node {node.name!r}: a {KIND} node's parameters.dag "
                             "names each of its steps")
        try:
            _dag(dag)
        except InvalidInput as exc:
            raise GraphError(f"graph {graph.name!r}: {exc.message}") from None

    async def run(self, run: GraphRun, node: NodeSpec, request: InferenceRequest) -> InferenceResponse:
        dag: dict[str, list[str]] = node.parameters["dag"]
        limits: dict[str, dict[str, int]] = node.parameters.get("limits") or {}
        steps = {s.name: s for s in node.steps}
        parents = parents_of(dag)
        headers: dict[str, Any] = {}
        if any(t.name == "meta" for t in request.inputs):
            try:
                headers = dict(orjson.loads(request.input("meta").data.reshape(-1)[0]).get("headers") or {})
            except (orjson.JSONDecodeError, AttributeError, IndexError, TypeError):
                headers = {}
        answers: dict[str, bytes] = {}
        last: dict[str, InferenceResponse] = {}

        def fed(name: str) -> InferenceRequest:
            if not parents[name]:
                return request
            first, *others = parents[name]
            meta = {"headers": headers, "field": "body" if not others else first,
                    "content_type": "application/octet-stream",
                    "fields": {p: answers[p].decode("utf-8", "replace") for p in others}}
            return InferenceRequest(inputs=[Tensor("data", _bytes_column(answers[first]), "BYTES"),
                                            Tensor("meta", _bytes_column(orjson.dumps(meta)), "BYTES")])

        async def call(name: str) -> None:
            step = steps[name]
            limit = limits.get(name, {})
            attempts = 1 + int(limit.get("retries", 0))
            timeout = int(limit.get("timeout_ms", 0)) / 1000 or None
            where = f"node {name!r} (model {step.service!r})"
            for attempt in range(attempts):
                try:
                    response = await run.call(Target(str(step.service)), fed(name), where, timeout=timeout)
                    break
                except ServekitError:
                    if attempt + 1 == attempts:
                        raise
            last[name] = response
            answers[name] = _single(response, "output")

        for wave in waves(dag):
            await asyncio.gather(*(call(n) for n in wave))
        leaves = [n for n in dag if not dag[n]]
        if len(leaves) == 1:
            return last[leaves[0]]
        merged = {}
        for leaf in leaves:
            try:
                merged[leaf] = orjson.loads(answers[leaf])
            except orjson.JSONDecodeError:
                merged[leaf] = answers[leaf].decode("utf-8", "replace")
        meta = {"content_type": "application/json", "status": 200}
        return InferenceResponse(model_name=run.graph.name, id=run.request.id, outputs=[
            Tensor("output", _bytes_column(orjson.dumps(merged)), "BYTES"),
            Tensor("meta", _bytes_column(orjson.dumps(meta)), "BYTES"),
        ])

    def inputs(self, meta: Metadata, node: NodeSpec) -> list[TensorSpec]:
        return [TensorSpec("data", "BYTES", [-1, 1]), TensorSpec("meta", "BYTES", [-1, 1])]

    def outputs(self, meta: Metadata, node: NodeSpec) -> list[TensorSpec]:
        return [TensorSpec("output", "BYTES", [-1, 1]), TensorSpec("meta", "BYTES", [-1, 1])]


WORKFLOW = WorkflowKind()


# -- the API ------------------------------------------------------------------------
def _described(ctx: ServerContext, name: str) -> dict[str, Any]:
    """The workflow ``name`` as registered (its graph model's record), or 404."""
    try:
        model = ctx.registry.current(name)
    except ModelNotFound:
        model = None
    described = model.settings.parameters.extra.get("workflow") if model is not None else None
    if not isinstance(described, dict):
        raise ModelNotFound(f"Workflow not found: {bounded(name, 128)}")
    return described


def _java_map(dag: dict[str, list[str]]) -> str:
    """The DAG as TorchServe's describe prints it (a Java map's toString)."""
    return "{" + ", ".join(f"{k}=[{', '.join(v)}]" for k, v in dag.items()) + "}"


def management_routes(ctx: ServerContext, guard: Callable[[Request], None], e: ErrorEncoder) -> list[Route]:
    registry = ctx.registry
    store = model_store(ctx.sources)
    lock = asyncio.Lock()  # one registration at a time in this worker

    def names() -> list[str]:
        return [n for n in registry.names()
                if isinstance(registry.current(n).settings.parameters.extra.get("workflow"), dict)]

    async def register(request: Request) -> Response:
        guard(request)
        q = dict(parse_qsl(request.scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True))
        if "url" not in q:
            raise InvalidInput("Parameter url is required.")
        url = q["url"].strip()
        if not url:
            raise ModelNotFound("Workflow archive not found in the workflow store: (the url parameter is empty)")
        if url.startswith(("http://", "https://")):
            raise InvalidInput("Failed to download workflow archive file: servekit registers workflow archives "
                               "from the model store; copy the .war there and give its name")
        requested = check_name(q["workflow_name"], "workflow name") if q.get("workflow_name") else None
        async with lock:
            path = await asyncio.to_thread(store.resolve, url)
            workflow = await asyncio.to_thread(read_workflow, path, url, requested)
            if registry.has(workflow.name):
                raise ServekitError(f"Workflow {workflow.name} is already registered.")
            nodes = await asyncio.to_thread(node_settings, store, workflow)
            taken = [s.name for s, _ in nodes if registry.has(s.name)]
            if taken:
                raise ServekitError(f"Workflow {workflow.name} has failed to register. Failures: "
                                    f"[models {', '.join(taken)} are already registered]")
            done: list[str] = []
            try:
                for settings, options in nodes:
                    await changes.make(ctx, changes.registered(settings, options, VERSION))
                    done.append(settings.name)
                graph = graph_settings(workflow)
                await changes.make(ctx, changes.registered(graph, ModelOptions(url=url, workers=1), VERSION))
            except ServekitError as exc:
                for name in reversed(done):
                    await changes.make(ctx, changes.unregistered(name, VERSION))
                raise ServekitError(f"Workflow {workflow.name} has failed to register. Failures: "
                                    f"[{exc.message}]") from None
        return json_response({"status": f"Workflow {workflow.name} has been registered and scaled successfully."})

    async def list_workflows(request: Request) -> Response:
        guard(request)
        limit = _int(request.query.get("limit"), MAX_PAGE)
        limit = MAX_PAGE if not 0 <= limit <= MAX_PAGE else limit
        start = max(0, _int(request.query.get("next_page_token"), 0))
        listed = names()
        page = listed[start : start + limit]
        out: dict[str, Any] = {"workflows": [
            {"workflowName": n, "workflowUrl": _described(ctx, n).get("url", "")} for n in page]}
        if start + limit < len(listed):
            out["nextPageToken"] = str(start + limit)
        return json_response(out)

    async def describe(request: Request) -> Response:
        guard(request)
        name = request.path_params["name"]
        described = _described(ctx, name)
        return json_response([{
            "workflowName": name,
            "workflowUrl": described.get("url", ""),
            "minWorkers": described.get("minWorkers"),
            "maxWorkers": described.get("maxWorkers"),
            "batchSize": described.get("batchSize"),
            "maxBatchDelay": described.get("maxBatchDelay"),
            "workflowDag": _java_map(described.get("written") or {}),
        }])

    async def unregister(request: Request) -> Response:
        guard(request)
        name = request.path_params["name"]
        described = _described(ctx, name)
        async with lock:
            await changes.make(ctx, changes.unregistered(name, registry.current(name).version))
            for node in described.get("dag") or {}:
                model = f"{name}__{node}"
                if registry.has(model):
                    await changes.make(ctx, changes.unregistered(model, registry.current(model).version))
        return json_response({"status": f'Workflow "{name}" unregistered'})

    return [
        route("POST", "/workflows", register, e),
        route("GET", "/workflows", list_workflows, e),
        route("GET", "/workflows/{name}", describe, e),
        route("DELETE", "/workflows/{name}", unregister, e),
    ]


def inference_routes(
    ctx: ServerContext,
    e: ErrorEncoder,
    decode: Callable[[bytes, dict[str, str]], InferenceRequest],
    encode: Callable[[InferenceResponse], Response],
    protocol: str,
) -> list[Route]:
    """``POST /wfpredict/{name}``: ``decode``/``encode`` are the TorchServe
    front's handler request and answer."""

    async def wfpredict(request: Request) -> Response:
        name = request.path_params["name"]
        _described(ctx, name)
        body = await request.body()
        headers = request.headers
        return await ctx.dataplane.serve(Target(name), lambda _: decode(body, headers), encode,
                                         protocol=protocol, timeout=header_timeout(headers))

    return [route("POST", "/wfpredict/{name}", wfpredict, e), route("PUT", "/wfpredict/{name}", wfpredict, e)]


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


__all__ = ["KIND", "WORKFLOW", "Workflow", "inference_routes", "management_routes", "read_workflow"]
