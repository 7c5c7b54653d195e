"""A graph's specification, read and checked once when the graph loads.

The form is KServe InferenceGraph's ``spec``: ``nodes`` maps node names to
``{routerType, steps}``; the entry node is ``root``; each step names one
target (``serviceName``: a served model or another graph; ``nodeName``: a
node of this graph) with optional ``name``, ``data`` (``$request`` or
``$response``), ``condition`` (a GJSON path), ``weight`` and ``dependency``
(``Hard`` or ``Soft``). servekit adds to a step ``version`` / ``label`` (pin
the served model's version) and ``map`` (output name -> input name: what
the step's model gets of the previous answer), and to a node ``serviceName``
(+ ``version``/``label``: the model a Seldon ``Router`` or ``Combiner`` node
asks). Everything is bounded here: names, counts, lengths, and nothing from
a request ever changes a graph.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from servekit.config import ModelSettings
from servekit.errors import ConfigError
from servekit.graphs.conditions import Condition, parse_condition

MAX_NODES = 64  # nodes in one graph
MAX_STEPS = 64  # steps in one node
MAX_DEPTH = 16  # nodes and graphs one call may pass through nested (graph -> node -> graph …)
MAX_NAME = 128  # characters of a node, step or model name
MAX_SPEC_BYTES = 1024 * 1024  # a graph.yaml
ROOT = "root"
GRAPH_FILES = ("graph.yaml", "graph.yml", "graph.json")

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:/+-]*$")
_STEP_KEYS = {
    "name", "serviceName", "nodeName", "serviceUrl", "version", "label", "data", "condition",
    "weight", "dependency", "map", "parameters",
}
_NODE_KEYS = {"routerType", "kind", "steps", "serviceName", "version", "label", "parameters"}


class GraphError(ConfigError):
    """A graph's specification is wrong (it does not load, with this message)."""


@dataclass(frozen=True)
class StepSpec:
    """One step of a node: its target and how it is fed."""

    name: str
    service: str | None = None  # a served model (or graph) by name
    version: str | None = None
    label: str | None = None
    node: str | None = None  # a node of this graph
    data: str = "$request"  # what the step gets: the node's request, or the previous answer
    condition: Condition | None = None
    weight: int | None = None
    dependency: str = "Hard"  # Hard: its failure fails the graph; Soft: the graph goes on
    map: dict[str, str] | None = None  # previous output name -> this step's input name
    parameters: dict[str, Any] = field(default_factory=dict)  # what a node kind reads itself

    @property
    def target(self) -> str:
        """What the step calls, as error messages name it."""
        if self.node is not None:
            return f"node {self.node!r}"
        where = f" version {self.version}" if self.version else f" label {self.label!r}" if self.label else ""
        return f"model {self.service!r}{where}"


@dataclass(frozen=True)
class NodeSpec:
    """One node: its kind (``routerType``), steps, and the model it asks, if any."""

    name: str
    kind: str
    steps: tuple[StepSpec, ...]
    service: str | None = None  # Router/Combiner nodes: the model that routes or combines
    version: str | None = None
    label: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)  # what its kind reads itself


@dataclass(frozen=True)
class GraphSpec:
    """A whole graph: its nodes by name; calls enter at :data:`ROOT`."""

    name: str
    nodes: dict[str, NodeSpec]

    @property
    def root(self) -> NodeSpec:
        return self.nodes[ROOT]

    def services(self) -> set[str]:
        """The served models (and graphs) this graph calls, by name."""
        out = {s.service for n in self.nodes.values() for s in n.steps if s.service}
        out |= {n.service for n in self.nodes.values() if n.service}
        return out


def graph_source(settings: ModelSettings) -> dict[str, Any]:
    """The raw graph of a model's settings: its ``graph`` field, its
    ``parameters.extra.graph``, or the YAML/JSON file ``parameters.uri`` names
    (or a ``graph.yaml`` in the model's folder)."""
    inline = getattr(settings, "graph", None)
    if inline is None:
        inline = (settings.model_extra or {}).get("graph")
    if inline is None:
        inline = settings.parameters.extra.get("graph")
    if inline is not None:
        if not isinstance(inline, dict):
            raise GraphError(f"graph {settings.name!r}: 'graph' must be an object with 'nodes'")
        return inline
    path = settings.resolved_uri()
    if path is not None and path.is_dir():
        path = next((path / n for n in GRAPH_FILES if (path / n).is_file()), None)
    if path is None or not path.is_file():
        raise GraphError(
            f"graph {settings.name!r} has no graph: give 'graph' in its model-settings.json or a "
            f"graph.yaml in its folder"
        )
    return read_graph_file(path, settings.name)


def read_graph_file(path: Path, name: str) -> dict[str, Any]:
    size = path.stat().st_size
    if size > MAX_SPEC_BYTES:
        raise GraphError(f"graph {name!r}: {path.name} is {size} bytes, over the {MAX_SPEC_BYTES} limit")
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise GraphError(f"graph {name!r}: cannot read {path.name}: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise GraphError(f"graph {name!r}: {path.name} must hold a mapping with 'nodes'")
    # a whole InferenceGraph resource is read for its spec
    spec = data.get("spec")
    return spec if isinstance(spec, dict) and "nodes" in spec else data


def parse_graph(name: str, raw: dict[str, Any], kinds: dict[str, Any] | None = None) -> GraphSpec:
    """Check and read a graph; :class:`GraphError` says what is wrong and where.
    ``kinds``: the node kinds to check nodes with (name -> :class:`~servekit.graphs.kinds.NodeKind`)."""
    nodes_raw = raw.get("nodes")
    if not isinstance(nodes_raw, dict) or not nodes_raw:
        raise GraphError(f"graph {name!r} needs 'nodes': a mapping of node names to nodes, one named 'root'")
    if len(nodes_raw) > MAX_NODES:
        raise GraphError(f"graph {name!r} has {len(nodes_raw)} nodes; the limit is {MAX_NODES}")
    if ROOT not in nodes_raw:
        raise GraphError(f"graph {name!r} has no node named 'root' (the node calls enter at)")
    nodes = {str(n): _node(name, str(n), body) for n, body in nodes_raw.items()}
    graph = GraphSpec(name=name, nodes=nodes)
    for node in nodes.values():
        for step in node.steps:
            if step.node is not None and step.node not in nodes:
                known = ", ".join(sorted(nodes))
                raise GraphError(f"graph {name!r} node {node.name!r} step {step.name!r}: no node "
                                 f"{step.node!r} (nodes: {known})")
            if step.service == name:
                raise GraphError(f"graph {name!r} node {node.name!r} step {step.name!r} calls the graph "
                                 "itself: a graph cannot contain itself (a cycle)")
        if node.service == name:
            raise GraphError(f"graph {name!r} node {node.name!r} asks the graph itself (a cycle)")
    cycle = node_cycle(graph)
    if cycle:
        raise GraphError(f"graph {name!r} has a cycle: {' -> '.join(cycle)}; a node cannot reach itself")
    if kinds is not None:
        for node in nodes.values():
            kind = kinds.get(node.kind)
            if kind is None:
                raise GraphError(f"graph {name!r} node {node.name!r}: unknown routerType {node.kind!r} "
                                 f"(known: {', '.join(sorted(kinds))})")
            kind.check(graph, node)
    return graph


def node_cycle(graph: GraphSpec) -> list[str]:
    """A path of node names that comes back to its start, or []."""
    state: dict[str, int] = {}  # 1 on the path, 2 done
    for start in graph.nodes:
        if state.get(start):
            continue
        path: list[str] = [start]
        stack = [iter([s.node for s in graph.nodes[start].steps if s.node])]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                stack.pop()
                state[path.pop()] = 2
                continue
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter([s.node for s in graph.nodes[nxt].steps if s.node]))
    return []


def _name(graph: str, where: str, value: Any) -> str:
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise GraphError(f"graph {graph!r} {where}: expected a name, got {type(value).__name__}")
    text = str(value)
    if not (0 < len(text) <= MAX_NAME) or not _NAME.match(text):
        raise GraphError(f"graph {graph!r} {where}: {text[:MAX_NAME]!r} is not a name (1-{MAX_NAME} "
                         "letters, digits and _ . : / + -, not starting with a sign)")
    return text


def _node(graph: str, name: str, body: Any) -> NodeSpec:
    where = f"node {_name(graph, 'node name', name)!r}"
    if not isinstance(body, dict):
        raise GraphError(f"graph {graph!r} {where} must be a mapping with routerType and steps")
    unknown = sorted(set(body) - _NODE_KEYS)
    if unknown:
        raise GraphError(f"graph {graph!r} {where}: unknown keys {', '.join(unknown)} "
                         f"(known: {', '.join(sorted(_NODE_KEYS))})")
    kind = body.get("routerType", body.get("kind"))
    if not isinstance(kind, str) or not kind:
        raise GraphError(f"graph {graph!r} {where} needs a routerType (Sequence, Switch, Ensemble, Splitter …)")
    steps_raw = body.get("steps", [])
    if not isinstance(steps_raw, list):
        raise GraphError(f"graph {graph!r} {where}: steps must be a list")
    if len(steps_raw) > MAX_STEPS:
        raise GraphError(f"graph {graph!r} {where} has {len(steps_raw)} steps; the limit is {MAX_STEPS}")
    steps = tuple(_step(graph, where, i, s) for i, s in enumerate(steps_raw))
    names = [s.name for s in steps]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise GraphError(f"graph {graph!r} {where}: step names must be unique; {', '.join(twice)} "
                         "twice (give each step a 'name')")
    service = body.get("serviceName")
    return NodeSpec(
        name=name,
        kind=kind,
        steps=steps,
        service=_name(graph, f"{where} serviceName", service) if service is not None else None,
        version=_optional(graph, where, "version", body.get("version")),
        label=_optional(graph, where, "label", body.get("label")),
        parameters=_parameters(graph, where, body.get("parameters")),
    )


def _parameters(graph: str, where: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise GraphError(f"graph {graph!r} {where}: parameters must be a mapping")
    return dict(value)


def _optional(graph: str, where: str, key: str, value: Any) -> str | None:
    return None if value is None else _name(graph, f"{where} {key}", value)


def _step(graph: str, node: str, index: int, body: Any) -> StepSpec:
    where = f"{node} step {index}"
    if not isinstance(body, dict):
        raise GraphError(f"graph {graph!r} {where} must be a mapping (serviceName or nodeName, …)")
    if "serviceUrl" in body:
        raise GraphError(f"graph {graph!r} {where}: serviceUrl is not supported; a graph calls models "
                         "this server serves (serviceName) or its own nodes (nodeName)")
    targets = [k for k in ("serviceName", "nodeName") if body.get(k) is not None]
    if len(targets) != 1:
        raise GraphError(f"graph {graph!r} {where} needs exactly one of serviceName or nodeName")
    target_key = targets[0]
    target = _name(graph, f"{where} {target_key}", body[target_key])
    name = _name(graph, f"{where} name", body["name"]) if body.get("name") is not None else target
    where = f"{node} step {name!r}"
    data = body.get("data", "$request")
    if data not in ("$request", "$response"):
        raise GraphError(f"graph {graph!r} {where}: data must be $request or $response, not {str(data)[:40]!r}")
    condition = body.get("condition")
    parsed = None
    if condition is not None:
        if not isinstance(condition, str):
            raise GraphError(f"graph {graph!r} {where}: condition must be a string (a GJSON path)")
        try:
            parsed = parse_condition(condition)
        except ValueError as exc:
            raise GraphError(f"graph {graph!r} {where}: condition {condition[:80]!r}: {exc}") from None
    weight = body.get("weight")
    if weight is not None and (not isinstance(weight, int) or isinstance(weight, bool) or not 0 <= weight <= 100):
        raise GraphError(f"graph {graph!r} {where}: weight must be an integer from 0 to 100")
    dependency = body.get("dependency", "Hard")
    if dependency not in ("Hard", "Soft"):
        raise GraphError(f"graph {graph!r} {where}: dependency must be Hard or Soft")
    mapping = body.get("map")
    if mapping is not None:
        if not isinstance(mapping, dict) or not mapping or len(mapping) > MAX_STEPS:
            raise GraphError(f"graph {graph!r} {where}: map must be a mapping of output names to input names")
        mapping = {_name(graph, f"{where} map", k): _name(graph, f"{where} map", v) for k, v in mapping.items()}
    unknown = sorted(set(body) - _STEP_KEYS)
    if unknown:
        raise GraphError(f"graph {graph!r} {where}: unknown keys {', '.join(unknown)} "
                         f"(known: {', '.join(sorted(_STEP_KEYS))})")
    return StepSpec(
        name=name,
        service=target if target_key == "serviceName" else None,
        node=target if target_key == "nodeName" else None,
        version=_optional(graph, where, "version", body.get("version")),
        label=_optional(graph, where, "label", body.get("label")),
        data="$response" if mapping is not None and "data" not in body else str(data),
        condition=parsed,
        weight=weight,
        dependency=dependency,
        map=mapping,
        parameters=_parameters(graph, where, body.get("parameters")),
    )


__all__ = [
    "MAX_DEPTH",
    "MAX_NODES",
    "MAX_STEPS",
    "ROOT",
    "GraphError",
    "GraphSpec",
    "NodeSpec",
    "StepSpec",
    "graph_source",
    "node_cycle",
    "parse_graph",
    "read_graph_file",
]
