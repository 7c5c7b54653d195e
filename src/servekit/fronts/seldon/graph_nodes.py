"""Seldon's service types as graph node kinds (:mod:`servekit.graphs`), run as
Seldon's executor runs a SeldonDeployment's graph. The node's ``serviceName``
is the served Seldon class (or any model) it asks; its steps are its children::

    nodes:
      root:
        routerType: Router          # route(features, names) picks the child
        serviceName: my-router
        steps: [{serviceName: model-a}, {serviceName: model-b}]
      both:
        routerType: Combiner        # every child, then aggregate(their outputs, names)
        serviceName: my-combiner
        steps: [{serviceName: model-a}, {serviceName: model-b}]
      pre:
        routerType: Transformer     # transform_input, then the children (none: the transform only)
        serviceName: my-transformer
        steps: [{serviceName: model-a}]
      post:
        routerType: OutputTransformer   # the children, then transform_output of their answer
        serviceName: my-output-transformer
        steps: [{nodeName: both}]

A Router's answer (its first value) is the child's index; -1 sends the
request to every child and answers the first child's answer (Seldon's "route
to all" without a combiner), -2 answers the request itself (Seldon's "route to
none"); any other index outside the children fails the graph naming the node.
Children of a Transformer or OutputTransformer run as Seldon's do: all of
them, the first one's answer going on. The node model is asked with the
request parameter ``seldon_method`` (``route``, ``aggregate``,
``transform_input``, ``transform_output``), so a Seldon class of any service
type answers with that method; a Combiner's model gets one input per child
(each child's first output) and their names in ``names_list``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from servekit.errors import InvalidInput
from servekit.graphs.kinds import GraphRun, Metadata, NodeKind
from servekit.graphs.spec import GraphError, GraphSpec, NodeSpec
from servekit.tensors import InferenceRequest, InferenceResponse, Tensor, TensorSpec

# request parameters of a Seldon call that must not reach another model
_SELDON_CALL = frozenset({"seldon_method", "seldon_message", "names_list", "timeout"})
ROUTE_ALL, ROUTE_NONE = -1, -2  # Seldon executor's special routes


def _passed(request: InferenceRequest, **extra: Any) -> InferenceRequest:
    parameters = {k: v for k, v in request.parameters.items() if k not in _SELDON_CALL}
    parameters.update(extra)
    return InferenceRequest(inputs=list(request.inputs), id=request.id, parameters=parameters,
                            outputs=None)


def _as_request(answer: InferenceResponse, like: InferenceRequest) -> InferenceRequest:
    """An answer fed on as the next call's request (names and meta kept, as
    Seldon's messages carry them)."""
    inputs = [Tensor(f"input_{i}" if i else "input", t.data, t.datatype, dict(t.parameters))
              for i, t in enumerate(answer.outputs)]
    parameters = {k: v for k, v in like.parameters.items() if k not in _SELDON_CALL and k != "names"}
    if answer.parameters.get("names"):
        parameters["names"] = answer.parameters["names"]
    return InferenceRequest(inputs=inputs, id=like.id, parameters=parameters)


class SeldonNode(NodeKind):
    """What every Seldon node kind shares: a ``serviceName`` of its own."""

    needs_steps = True

    def check(self, graph: GraphSpec, node: NodeSpec) -> None:
        if node.service is None:
            raise GraphError(f"graph {graph.name!r} {node.kind} node {node.name!r} needs a serviceName: "
                             "the served model that runs its Seldon method")
        if self.needs_steps and not node.steps:
            raise GraphError(f"graph {graph.name!r} {node.kind} node {node.name!r} has no steps (its children)")

    async def children(self, run: GraphRun, node: NodeSpec, request: InferenceRequest) -> list[InferenceResponse]:
        child = _passed(request)
        return list(await asyncio.gather(*(run.step(node, s, child) for s in node.steps)))


class Router(SeldonNode):
    """``route`` picks one child (see the module's docstring)."""

    async def run(self, run: GraphRun, node: NodeSpec, request: InferenceRequest) -> InferenceResponse:
        answer = await run.model(node, _passed(request, seldon_method="route"), "route")
        choice = _route(answer)
        if choice is None:
            raise InvalidInput(f"graph {run.graph.name!r} router node {node.name!r}: model {node.service!r} "
                               "answered no integer route")
        if choice == ROUTE_NONE:
            return InferenceResponse(model_name=run.graph.name, outputs=list(request.inputs), id=request.id)
        if choice == ROUTE_ALL:
            return (await self.children(run, node, request))[0]
        if not 0 <= choice < len(node.steps):
            raise InvalidInput(f"graph {run.graph.name!r} router node {node.name!r}: model {node.service!r} "
                               f"chose child {choice}, but the node has {len(node.steps)} (0..{len(node.steps) - 1})")
        return await run.step(node, node.steps[choice], _passed(request))


def _route(answer: InferenceResponse) -> int | None:
    if not answer.outputs or answer.outputs[0].data.size == 0:
        return None
    value = answer.outputs[0].data.reshape(-1)[0]
    if isinstance(value, (np.integer, int)) and not isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (np.floating, float)) and float(value).is_integer():
        return int(value)
    return None


class Combiner(SeldonNode):
    """Every child on the request, then ``aggregate`` of their answers."""

    async def run(self, run: GraphRun, node: NodeSpec, request: InferenceRequest) -> InferenceResponse:
        answers = await self.children(run, node, request)
        inputs, names_list = [], []
        for i, (step, answer) in enumerate(zip(node.steps, answers, strict=True)):
            if not answer.outputs:
                raise InvalidInput(f"graph {run.graph.name!r} combiner node {node.name!r}: step {step.name!r} "
                                   "answered no output to combine")
            first = answer.outputs[0]
            inputs.append(Tensor(f"input_{i}", first.data, first.datatype, dict(first.parameters)))
            names_list.append(list(answer.parameters.get("names") or []))
        parameters = {k: v for k, v in request.parameters.items() if k not in _SELDON_CALL and k != "names"}
        combined = InferenceRequest(inputs=inputs, id=request.id,
                                    parameters={**parameters, "seldon_method": "aggregate", "names_list": names_list})
        return await run.model(node, combined, "aggregate")

    def outputs(self, meta: Metadata, node: NodeSpec) -> list[TensorSpec]:
        return []  # the combiner's own answer, whose shape its class decides


class Transformer(SeldonNode):
    """``transform_input``, then the children (their first answer)."""

    needs_steps = False

    async def run(self, run: GraphRun, node: NodeSpec, request: InferenceRequest) -> InferenceResponse:
        answer = await run.model(node, _passed(request, seldon_method="transform_input"), "transform_input")
        if not node.steps:
            return answer
        return (await self.children(run, node, _as_request(answer, request)))[0]

    def inputs(self, meta: Metadata, node: NodeSpec) -> list[TensorSpec]:
        return []  # what the transformer takes, which its class decides


class OutputTransformer(SeldonNode):
    """The children (their first answer), then ``transform_output`` of it."""

    needs_steps = False

    async def run(self, run: GraphRun, node: NodeSpec, request: InferenceRequest) -> InferenceResponse:
        answer = (await self.children(run, node, request))[0] if node.steps else None
        fed = _as_request(answer, request) if answer is not None else request
        return await run.model(node, _passed(fed, seldon_method="transform_output"), "transform_output")

    def outputs(self, meta: Metadata, node: NodeSpec) -> list[TensorSpec]:
        return []


ROUTER = Router()
COMBINER = Combiner()
TRANSFORMER = Transformer()
OUTPUT_TRANSFORMER = OutputTransformer()
