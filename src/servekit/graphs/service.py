"""The graphs' worker service: attach each loaded graph to the worker's data
plane, and refuse calls to graphs that call each other in a cycle (checked
whenever a model loads or unloads, over every loaded version's graph)."""

from __future__ import annotations

import logging

from servekit.graphs.runtime import GraphRuntime
from servekit.observability import tracing
from servekit.registry import ModelVersion
from servekit.server.lifecycle import ServerContext, Skin, Stop

log = logging.getLogger("servekit.graphs")


def graph_cycles(graphs: dict[str, set[str]]) -> dict[str, list[str]]:
    """For each graph name on a cycle of ``graphs`` (name -> names it calls),
    one cycle through it (a path of names ending where it starts)."""
    out: dict[str, list[str]] = {}
    for start in graphs:
        # a breadth-first search back to start, keeping the path
        paths = [[start, n] for n in sorted(graphs[start])]
        seen: set[str] = set()
        while paths:
            path = paths.pop(0)
            last = path[-1]
            if last == start:
                out[start] = path
                break
            if last in seen or last not in graphs:
                continue
            seen.add(last)
            paths.extend([*path, n] for n in sorted(graphs[last]))
    return out


class GraphService:
    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        tracer = next((o for o in ctx.dataplane.observers if isinstance(o, tracing.Tracing)), None)
        self.trace = tracing.TRACE if tracer is not None else None

    def graphs(self) -> list[tuple[ModelVersion, GraphRuntime]]:
        return [(m, m.runtime) for m in self.ctx.registry.all_versions() if isinstance(m.runtime, GraphRuntime)]

    def changed(self, event: str, model: ModelVersion) -> None:
        if event == "loaded" and isinstance(model.runtime, GraphRuntime):
            model.runtime.attach(self.ctx.dataplane, self.trace)
        if event in ("loaded", "unloaded"):
            self.check_cycles()

    def check_cycles(self) -> None:
        graphs = self.graphs()
        calls: dict[str, set[str]] = {}
        for _, runtime in graphs:
            if runtime.spec is not None:
                calls.setdefault(runtime.name, set()).update(runtime.spec.services())
        cycles = graph_cycles(calls)
        for _, runtime in graphs:
            cycle = cycles.get(runtime.name)
            reason = None
            if cycle:
                reason = (f"graph {runtime.name!r} is refused: graphs call each other in a cycle "
                          f"({' -> '.join(cycle)}); a graph cannot contain itself")
                if runtime.refused != reason:
                    log.error("%s", reason)
            runtime.refuse(reason)


async def start(ctx: ServerContext) -> Stop | None:
    service = GraphService(ctx)
    for _, runtime in service.graphs():
        runtime.attach(ctx.dataplane, service.trace)
    service.check_cycles()
    ctx.registry.listeners.append(service.changed)

    async def stop() -> None:
        if service.changed in ctx.registry.listeners:
            ctx.registry.listeners.remove(service.changed)

    return stop


SKIN = Skin(name="graphs", start=start)

__all__ = ["SKIN", "GraphService", "graph_cycles"]
