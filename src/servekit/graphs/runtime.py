"""The graph runtime: a model whose ``predict`` runs its graph's nodes, each
node's model called through the worker's data plane (see :mod:`servekit.graphs`)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, ClassVar

from servekit.errors import InvalidInput, ModelNotFound, ModelNotReady, ServekitError
from servekit.graphs.kinds import GraphRun, Metadata, NodeKind, node_kinds, passed
from servekit.graphs.spec import GraphSpec, graph_source, parse_graph
from servekit.runtimes.base import Runtime
from servekit.tensors import InferenceRequest, InferenceResponse, ModelMetadata, TensorSpec

if TYPE_CHECKING:
    from servekit.dataplane import DataPlane

log = logging.getLogger("servekit.graphs")


class GraphRuntime(Runtime):
    """A graph served as a model. ``load`` reads and checks the graph (nodes,
    kinds, bounds, cycles inside it); the worker's graph service then
    :meth:`attach`\\ es the data plane the nodes are called through, and
    :meth:`refuse`\\ s calls while the graph is part of a cycle of graphs."""

    platform: ClassVar[str] = "graph"
    is_async: ClassVar[bool] = True
    concurrent: ClassVar[bool] = True  # calls run side by side: their nodes queue and batch them
    batch_axis: ClassVar[int | None] = None

    def __init__(self, settings: Any) -> None:
        super().__init__(settings)
        self.spec: GraphSpec | None = None
        self.kinds: dict[str, NodeKind] = {}
        self.dataplane: DataPlane | None = None
        self.refused: str | None = None
        self._trace: Any = None

    def load(self) -> None:
        self.kinds = node_kinds()
        self.spec = self.parse(self.kinds)
        self.ready = True

    def parse(self, kinds: dict[str, NodeKind] | None = None) -> GraphSpec:
        return parse_graph(self.settings.name, graph_source(self.settings), kinds)

    def attach(self, dataplane: DataPlane, trace: Any = None) -> None:
        """Call nodes through ``dataplane``; ``trace``: tracing's context variable when tracing is on."""
        self.dataplane = dataplane
        self._trace = trace

    def refuse(self, reason: str | None) -> None:
        """Answer every call with ``reason`` (None: serve again)."""
        self.refused = reason

    async def predict(self, request: InferenceRequest) -> InferenceResponse:  # type: ignore[override]
        if self.refused is not None:
            raise ServekitError(self.refused)
        if self.dataplane is None or self.spec is None:
            raise ModelNotReady(f"graph {self.name!r} is not attached to a server's data plane")
        run = GraphRun(self.spec, request, self.dataplane, self.kinds, _trace=self._trace)
        # the nodes get the inputs and parameters; the outputs asked for are the graph's
        fed = InferenceRequest(inputs=request.inputs, id=request.id, parameters=passed(request.parameters))
        answer = await run.node("root", fed)
        outputs = answer.outputs
        wanted = request.output_names
        if wanted is not None:
            by_name = {t.name: t for t in outputs}
            missing = [n for n in wanted if n not in by_name]
            if missing:
                raise InvalidInput(f"graph {self.name!r} has no output {', '.join(map(repr, missing))} "
                                   f"(its answer has {', '.join(by_name) or 'none'})")
            outputs = [by_name[n] for n in wanted]
        return InferenceResponse(model_name=self.name, model_version=self.version, id=request.id,
                                 outputs=list(outputs), parameters=dict(answer.parameters))

    def metadata(self) -> ModelMetadata:
        inputs, outputs = self.input_specs(), self.output_specs()
        if not inputs or not outputs:
            if self.dataplane is None or self.spec is None:  # raised, so not kept: asked again once attached
                raise ModelNotReady(f"graph {self.name!r} is not attached to a server's data plane yet")
            found = self._node_metadata()
            inputs, outputs = inputs or found[0], outputs or found[1]
        return ModelMetadata(name=self.name, platform=self.settings.platform or self.platform,
                             versions=[self.version] if self.version else [], inputs=inputs, outputs=outputs)

    def _node_metadata(self) -> tuple[list[TensorSpec], list[TensorSpec]]:
        assert self.spec is not None and self.dataplane is not None
        try:
            return Metadata(self.spec, self.dataplane.resolve, self.kinds).of_node(self.spec.root)
        except (ModelNotFound, ModelNotReady) as exc:
            # not kept: asked again once the nodes are served
            raise ModelNotReady(f"graph {self.name!r}: its metadata comes from its nodes, and {exc.message}") from None


__all__ = ["GraphRuntime"]
