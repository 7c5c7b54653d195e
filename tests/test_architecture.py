"""The design's rules, checked on the source: no import cycles among servekit's
modules, skins reach models only through the data plane, nothing registers
itself by being imported."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from servekit.server.assembly import SKINS
from servekit.server.runner import change_handlers

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = SRC / "servekit"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {
    module_name(p): p
    for p in PACKAGE.rglob("*.py")
    if "generated" not in p.parts
}


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                for sub in ast.walk(child):
                    if hasattr(sub, "lineno"):
                        lines.add(sub.lineno)
    return lines


def imports_of(name: str, path: Path) -> set[str]:
    """servekit modules ``name`` imports anywhere (functions included), less
    those imported only for type checking."""
    tree = ast.parse(path.read_text())
    skip = _type_checking_lines(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        for target in targets:
            # the longest known module the name is or is inside of
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name and target.startswith("servekit"):
                found.add(target)
    return found


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm; components of more than one module are cycles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules it imports (a package's ``__init__`` importing its
    own submodules to re-export them is an edge like any other)."""
    return {name: imports_of(name, path) for name, path in MODULES.items()}


def test_the_graph_sees_imports() -> None:
    graph = import_graph()
    assert "servekit.dataplane" in graph["servekit.protocols.v2_rest"]
    assert "servekit.registry" in graph["servekit.dataplane"]
    # a function-level import counts too
    assert "servekit.server.assembly" in graph["servekit.cli"]


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles() -> None:
    cycles = strongly_connected(import_graph())
    assert cycles == [], f"import cycles: {cycles}"


# code that may touch a loaded version's batcher and runtime: the registry, the
# data plane and the invoker; skins read through ModelVersion's methods
INTERNALS = {"batcher", "_models"}
ALLOWED = {"servekit.registry", "servekit.dataplane", "servekit.invoker"}


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n not in ALLOWED))
def test_only_the_registry_touches_its_internals(name: str) -> None:
    tree = ast.parse(MODULES[name].read_text())
    used = sorted(
        {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute) and node.attr in INTERNALS}
    )
    assert used == [], f"{name} reads registry internals: {used}"


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n.startswith("servekit.protocols.")))
def test_skins_reach_models_through_the_data_plane(name: str) -> None:
    source = MODULES[name].read_text()
    assert "registry.submit(" not in source and ".predict(" not in source.replace("seldon.predict(", "")


def test_every_change_kind_has_one_handler() -> None:
    handlers = change_handlers(SKINS)
    assert {"repository.load", "repository.unload", "repository.sync", "torchserve",
            "tfserving.config"} <= set(handlers)


def test_nothing_registers_itself_at_import() -> None:
    # module-level statements that append to or assign into another module's registry
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text())
        for node in tree.body:
            text = ast.unparse(node)
            assert "HOOKS" not in text and "CONTROL_ACTIONS" not in text, f"{name}: {text[:80]}"
