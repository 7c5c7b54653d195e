"""Node kinds: how each ``routerType`` of a graph runs, and the table of them.

A node kind is an object with three methods (subclass :class:`NodeKind`):

- ``check(graph, node)``: at load, raise :class:`~servekit.graphs.spec.GraphError`
  when the node cannot work (a Splitter whose weights do not sum to 100 …);
- ``async run(run, node, request) -> InferenceResponse``: answer ``request``
  (the node's input). ``run`` is the :class:`GraphRun` of this call; a kind
  reaches models and other nodes only through it:

  * ``await run.step(node, step, request)``: the step's target (a served
    model or graph through the data plane, with its metrics and spans, or a
    node of this graph); an error names the graph, node and step;
  * ``await run.model(node, request, what)``: the node's own model
    (``serviceName`` on the node: what a Router or Combiner asks);
  * ``run.feed(node, step, request, previous)``: what a step gets (``data``
    ``$request`` or ``$response``, and ``map``);
  * ``run.view(message)``: the JSON form conditions read; ``run.random``;
  * ``run.merge(parts)``: answers merged, outputs named ``step.output``;
- ``inputs(meta, node)`` / ``outputs(meta, node)``: the node's metadata
  (:class:`Metadata` gives a step's; by default the first step's).

:data:`NODE_KINDS` maps a ``routerType`` to ``"module:attribute"`` of its kind
(imported when a graph uses it, so no module registers itself by import):
KServe's Sequence, Switch, Ensemble and Splitter are here; Seldon's Router
and Combiner (``routerType: Router`` / ``Combiner``, with the node's
``serviceName`` naming the model that routes or combines and its steps the
children) live in :mod:`servekit.fronts.seldon` and are listed here too.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from servekit.dataplane import Target
from servekit.errors import InvalidInput, RequestTimedOut, ServekitError
from servekit.graphs.spec import MAX_DEPTH, GraphError, GraphSpec, NodeSpec, StepSpec
from servekit.tensors import InferenceRequest, InferenceResponse, Tensor, TensorSpec

if TYPE_CHECKING:
    from servekit.dataplane import DataPlane

log = logging.getLogger("servekit.graphs")

# routerType -> "module:attribute" of its NodeKind
NODE_KINDS: dict[str, str] = {
    "Sequence": "servekit.graphs.kinds:SEQUENCE",
    "Switch": "servekit.graphs.kinds:SWITCH",
    "Ensemble": "servekit.graphs.kinds:ENSEMBLE",
    "Splitter": "servekit.graphs.kinds:SPLITTER",
    # Seldon's service types as nodes (servekit/fronts/seldon/graph_nodes.py)
    "Router": "servekit.fronts.seldon.graph_nodes:ROUTER",
    "Combiner": "servekit.fronts.seldon.graph_nodes:COMBINER",
    "Transformer": "servekit.fronts.seldon.graph_nodes:TRANSFORMER",
    "OutputTransformer": "servekit.fronts.seldon.graph_nodes:OUTPUT_TRANSFORMER",
    # a TorchServe workflow archive's DAG (servekit/fronts/torchserve/workflows.py)
    "TorchServeWorkflow": "servekit.fronts.torchserve.workflows:WORKFLOW",
}
PROTOCOL = "graph"  # the protocol label of node calls in metrics and spans
# conditions see a tensor's values up to this many elements (larger ones: name, datatype, shape)
MAX_VIEW_ELEMENTS = 65536
_RANDOM = random.Random()  # a Splitter's choices (no secrecy needed)


def node_kinds() -> dict[str, NodeKind]:
    """Every listed kind, imported (a kind whose module cannot be imported is left out)."""
    out: dict[str, NodeKind] = {}
    for name, where in NODE_KINDS.items():
        module, _, attribute = where.partition(":")
        try:
            kind = getattr(importlib.import_module(module), attribute)
        except (ImportError, AttributeError) as exc:
            log.warning("Graph node kind %s (%s) is not available: %s", name, where, exc)
            continue
        out[name] = kind
    return out


class NodeFailed(ServekitError):
    """Carries the status of the error it names (a step's failure, with where)."""


def renamed(error: ServekitError, message: str) -> ServekitError:
    """``error`` with ``message``: same class, status and Retry-After (so each
    protocol answers it as it answers the original)."""
    out = error.__class__.__new__(error.__class__)
    out.__dict__.update(error.__dict__)
    Exception.__init__(out, message)
    out.message = message
    return out


@dataclass
class Metadata:
    """What a node kind sees of its steps' metadata (at metadata time, not per call)."""

    graph: GraphSpec
    resolve: Callable[[Target], Any]  # Target -> ModelVersion (raises when not served)
    kinds: dict[str, NodeKind]
    depth: int = 0

    def of_step(self, step: StepSpec) -> tuple[list[TensorSpec], list[TensorSpec]]:
        if step.node is not None:
            return self.of_node(self.graph.nodes[step.node])
        meta = self.resolve(Target(str(step.service), step.version, step.label)).metadata()
        return list(meta.inputs), list(meta.outputs)

    def of_node(self, node: NodeSpec) -> tuple[list[TensorSpec], list[TensorSpec]]:
        if self.depth > MAX_DEPTH:
            return [], []
        self.depth += 1
        try:
            kind = self.kinds[node.kind]
            return kind.inputs(self, node), kind.outputs(self, node)
        finally:
            self.depth -= 1


class NodeKind:
    """Base of node kinds (see the module's docstring)."""

    def check(self, graph: GraphSpec, node: NodeSpec) -> None:
        if not node.steps:
            raise GraphError(f"graph {graph.name!r} {node.kind} node {node.name!r} has no steps")
        if node.service is not None:
            raise GraphError(f"graph {graph.name!r} node {node.name!r}: a {node.kind} node names no "
                             "serviceName of its own (its steps do)")

    async def run(self, run: GraphRun, node: NodeSpec, request: InferenceRequest) -> InferenceResponse:
        raise NotImplementedError

    def inputs(self, meta: Metadata, node: NodeSpec) -> list[TensorSpec]:
        return meta.of_step(node.steps[0])[0] if node.steps else []

    def outputs(self, meta: Metadata, node: NodeSpec) -> list[TensorSpec]:
        return meta.of_step(node.steps[0])[1] if node.steps else []


@dataclass
class GraphRun:
    """One call of a graph, as node kinds see it (see the module's docstring)."""

    graph: GraphSpec
    request: InferenceRequest  # the graph's own request
    dataplane: DataPlane
    kinds: dict[str, NodeKind]
    random: random.Random = field(default_factory=lambda: _RANDOM)
    depth: int = 0
    _trace: Any = None  # tracing's context variable, when tracing is on

    async def node(self, name: str, request: InferenceRequest) -> InferenceResponse:
        """Run the node ``name`` of this graph on ``request``."""
        node = self.graph.nodes[name]
        if self.depth >= MAX_DEPTH:
            raise InvalidInput(f"graph {self.graph.name!r}: node {name!r} is nested deeper than {MAX_DEPTH}")
        self.depth += 1
        try:
            return await self.kinds[node.kind].run(self, node, request)
        finally:
            self.depth -= 1

    async def step(self, node: NodeSpec, step: StepSpec, request: InferenceRequest) -> InferenceResponse:
        """The step's target on ``request``; a failure names graph, node and step."""
        if step.node is not None:
            return await self.node(step.node, request)
        where = f"node {node.name!r} step {step.name!r} ({step.target})"
        return await self.call(Target(str(step.service), step.version, step.label), request, where)

    async def model(self, node: NodeSpec, request: InferenceRequest, what: str = "") -> InferenceResponse:
        """The node's own model (``serviceName`` on the node) on ``request``."""
        if node.service is None:
            raise GraphError(f"graph {self.graph.name!r} node {node.name!r} names no serviceName")
        where = f"node {node.name!r}{' ' + what if what else ''} (model {node.service!r})"
        return await self.call(Target(node.service, node.version, node.label), request, where)

    async def call(
        self, target: Target, request: InferenceRequest, where: str, *, timeout: float | None = None
    ) -> InferenceResponse:
        """A served model through the data plane (protocol ``graph``); ``where``
        (``node 'n' step 's' (model 'm')``) starts the message of its errors;
        ``timeout`` (seconds) bounds this call within the graph's own deadline."""
        deadline = self.request.deadline
        if deadline is not None:
            left = deadline - time.monotonic()
            timeout = left if timeout is None else min(timeout, left)
            if left <= 0:
                raise RequestTimedOut(f"graph {self.graph.name!r} {where}: the request's time ran out")
        # each call its own request: the data plane sets the id and deadline on it
        request = InferenceRequest(inputs=list(request.inputs), outputs=request.outputs, id=self.request.id,
                                   parameters=dict(request.parameters))
        token = self._trace.set(None) if self._trace is not None and self._trace.get() is not None else None
        try:
            return await self.dataplane.infer(target, request, protocol=PROTOCOL, timeout=timeout)
        except ServekitError as exc:
            raise renamed(exc, f"graph {self.graph.name!r} {where}: {exc.message}") from exc
        finally:
            if token is not None:
                self._trace.reset(token)

    def feed(
        self, node: NodeSpec, step: StepSpec, request: InferenceRequest, previous: InferenceResponse | None
    ) -> InferenceRequest:
        """What ``step`` gets: the node's ``request`` (``data: $request``) or the
        ``previous`` answer's outputs as inputs (``$response``), renamed and
        picked by ``map``."""
        if step.data != "$response" or previous is None:
            return request
        outputs = previous.outputs
        if step.map is not None:
            by_name = {t.name: t for t in outputs}
            picked = []
            for output, input_name in step.map.items():
                tensor = by_name.get(output)
                if tensor is None:
                    given = ", ".join(by_name) or "none"
                    raise InvalidInput(
                        f"graph {self.graph.name!r} node {node.name!r} step {step.name!r}: its map takes "
                        f"output {output!r}, but the previous answer has {given}"
                    )
                picked.append(Tensor(input_name, tensor.data, tensor.datatype, dict(tensor.parameters)))
            outputs = picked
        return InferenceRequest(
            inputs=list(outputs), id=self.request.id, parameters=passed(self.request.parameters)
        )

    def view(self, message: InferenceRequest | InferenceResponse) -> dict[str, Any]:
        """The JSON form a condition reads: V2's (``inputs``/``outputs`` as lists
        of ``{name, datatype, shape, data}``, ``parameters``, ``id``), each
        tensor's data also under its own name, and the first one's as
        ``instances`` (a request) or ``predictions`` (an answer), as KServe V1 has.
        A tensor of more than :data:`MAX_VIEW_ELEMENTS` values shows no data."""
        tensors = message.inputs if isinstance(message, InferenceRequest) else message.outputs
        listed = [
            {"name": t.name, "datatype": t.datatype, "shape": t.shape,
             **({"data": _plain(t.data)} if t.data.size <= MAX_VIEW_ELEMENTS else {})}
            for t in tensors
        ]
        out: dict[str, Any] = {}
        for entry in listed:
            if "data" in entry:
                out.setdefault(entry["name"], entry["data"])
        if isinstance(message, InferenceRequest):
            out.update(inputs=listed, parameters=dict(message.parameters), id=message.id)
            if listed and "data" in listed[0]:
                out["instances"] = listed[0]["data"]
        else:
            out.update(outputs=listed, parameters=dict(message.parameters), id=message.id,
                       model_name=message.model_name, model_version=message.model_version)
            if listed and "data" in listed[0]:
                out["predictions"] = listed[0]["data"]
        return out

    def merge(self, parts: Sequence[tuple[str, InferenceResponse]]) -> InferenceResponse:
        """Answers merged into one, each output named ``step.output``."""
        outputs = [
            Tensor(f"{name}.{t.name}", t.data, t.datatype, dict(t.parameters))
            for name, response in parts
            for t in response.outputs
        ]
        return InferenceResponse(model_name=self.graph.name, outputs=outputs, id=self.request.id)


def passed(parameters: dict[str, Any]) -> dict[str, Any]:
    # the graph's deadline is passed on as the call's timeout, not as Triton's parameter
    return {k: v for k, v in parameters.items() if k != "timeout"} if parameters else {}


def _plain(data: np.ndarray) -> Any:
    if data.dtype.kind == "O" or data.dtype.kind == "S":
        return np.vectorize(
            lambda v: v.decode("utf-8", "replace") if isinstance(v, bytes) else v, otypes=[object]
        )(data).tolist() if data.size else data.tolist()
    return data.tolist()


# -- KServe's four kinds -------------------------------------------------------------
class Sequence_(NodeKind):
    """Steps in order. A step with a ``condition`` runs only when it holds on
    the previous answer (the node's request before the first step: KServe's
    router skips the step otherwise); ``data: $response`` (or a ``map``) feeds
    it the previous answer, else it gets the node's request. A failing
    ``Soft`` step is skipped; a ``Hard`` one (the default) fails the graph."""

    async def run(self, run: GraphRun, node: NodeSpec, request: InferenceRequest) -> InferenceResponse:
        previous: InferenceResponse | None = None
        for step in node.steps:
            if step.condition is not None and not step.condition.holds(
                run.view(previous if previous is not None else request)
            ):
                continue
            fed = run.feed(node, step, request, previous)
            try:
                previous = await run.step(node, step, fed)
            except ServekitError as exc:
                if step.dependency == "Hard":
                    raise
                log.warning("Graph %r node %r: soft step %r failed: %s", run.graph.name, node.name, step.name,
                            exc.message)
        if previous is None:
            raise InvalidInput(f"graph {run.graph.name!r} sequence node {node.name!r}: no step ran "
                               "(every step's condition failed or every step failed softly)")
        return previous

    def outputs(self, meta: Metadata, node: NodeSpec) -> list[TensorSpec]:
        return meta.of_step(node.steps[-1])[1] if node.steps else []


class Switch_(NodeKind):
    """The first step whose ``condition`` holds on the node's request (a step
    without one always does) answers it; none holding is an error naming the node."""

    def check(self, graph: GraphSpec, node: NodeSpec) -> None:
        super().check(graph, node)
        for step in node.steps[:-1]:
            if step.condition is None:
                raise GraphError(f"graph {graph.name!r} switch node {node.name!r}: step {step.name!r} has no "
                                 "condition, so the steps after it never run (only the last step may go without)")

    async def run(self, run: GraphRun, node: NodeSpec, request: InferenceRequest) -> InferenceResponse:
        view = run.view(request) if any(s.condition is not None for s in node.steps) else {}
        for step in node.steps:
            if step.condition is None or step.condition.holds(view):
                return await run.step(node, step, request)
        conditions = "; ".join(f"{s.name}: {s.condition.text}" for s in node.steps if s.condition)
        raise InvalidInput(f"graph {run.graph.name!r} switch node {node.name!r}: no step's condition holds "
                           f"for this request ({conditions})")


class Ensemble_(NodeKind):
    """Every step at once on the node's request; the answers merged, each
    output named ``step.output``. A failing ``Soft`` step is left out."""

    def check(self, graph: GraphSpec, node: NodeSpec) -> None:
        super().check(graph, node)
        for step in node.steps:
            if step.condition is not None or step.data != "$request":
                raise GraphError(f"graph {graph.name!r} ensemble node {node.name!r} step {step.name!r}: "
                                 "an ensemble's steps all get the node's request (no condition, data or map)")

    async def run(self, run: GraphRun, node: NodeSpec, request: InferenceRequest) -> InferenceResponse:
        results = await asyncio.gather(*(run.step(node, s, request) for s in node.steps), return_exceptions=True)
        parts: list[tuple[str, InferenceResponse]] = []
        for step, result in zip(node.steps, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, ServekitError) or step.dependency == "Hard":
                    raise result
                log.warning("Graph %r node %r: soft step %r failed: %s", run.graph.name, node.name, step.name,
                            result.message)
                continue
            parts.append((step.name, result))
        return run.merge(parts)

    def inputs(self, meta: Metadata, node: NodeSpec) -> list[TensorSpec]:
        return meta.of_step(node.steps[0])[0] if node.steps else []

    def outputs(self, meta: Metadata, node: NodeSpec) -> list[TensorSpec]:
        out = []
        for step in node.steps:
            for spec in meta.of_step(step)[1]:
                out.append(TensorSpec(f"{step.name}.{spec.name}", spec.datatype, list(spec.shape),
                                      dict(spec.parameters)))
        return out


class Splitter_(NodeKind):
    """One step, chosen at random by ``weight`` (the weights sum to 100)."""

    def check(self, graph: GraphSpec, node: NodeSpec) -> None:
        super().check(graph, node)
        weights = [s.weight for s in node.steps]
        if any(w is None for w in weights) or sum(w or 0 for w in weights) != 100:
            raise GraphError(f"graph {graph.name!r} splitter node {node.name!r}: every step needs a weight "
                             f"and the weights must sum to 100 (they are {weights})")

    async def run(self, run: GraphRun, node: NodeSpec, request: InferenceRequest) -> InferenceResponse:
        pick = run.random.randrange(100)
        for step in node.steps:
            pick -= step.weight or 0
            if pick < 0:
                return await run.step(node, step, request)
        return await run.step(node, node.steps[-1], request)


SEQUENCE = Sequence_()
SWITCH = Switch_()
ENSEMBLE = Ensemble_()
SPLITTER = Splitter_()

__all__ = [
    "NODE_KINDS",
    "PROTOCOL",
    "GraphRun",
    "Metadata",
    "NodeKind",
    "node_kinds",
    "renamed",
]
