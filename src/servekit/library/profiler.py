"""Where prediction time goes: per model, calls, total time and net time
(total minus the time spent in the sub-models it called).

    profiler = SimpleProfiler(classifier)      # profiles it and its dependencies
    classifier.predict_batch(reviews)
    print(profiler.summary(print_table=True))

or, for every model called inside a block: ``with SimpleProfiler() as p: ...``.
Nesting is tracked with context variables, so concurrent async calls do not
mix their timings.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Any

_ACTIVE: ContextVar[SimpleProfiler | None] = ContextVar("servekit_profiler", default=None)


@dataclass
class _Frame:
    child_ns: int = 0


_STACK: ContextVar[tuple[_Frame, ...]] = ContextVar("servekit_profiler_stack", default=())


@dataclass
class ProfileRow:
    name: str
    calls: int = 0
    total_ns: int = 0
    net_ns: int = 0

    @property
    def total_ms(self) -> float:
        return self.total_ns / 1e6

    @property
    def net_ms(self) -> float:
        return self.net_ns / 1e6


class SimpleProfiler:
    """Counts calls and measures total and net duration per model."""

    def __init__(self, model: Any = None) -> None:
        self.rows: dict[str, ProfileRow] = {}
        self._token: Token[SimpleProfiler | None] | None = None
        if model is not None:
            self.attach(model)

    def attach(self, model: Any) -> None:
        """Profile ``model`` and, recursively, the models it depends on."""
        model.profiler = self
        for dependency in getattr(model, "model_dependencies", {}).values():
            self.attach(dependency)

    def __enter__(self) -> SimpleProfiler:
        self._token = _ACTIVE.set(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._token is not None:
            _ACTIVE.reset(self._token)
            self._token = None

    @contextmanager
    def profile(self, name: str) -> Iterator[None]:
        stack = _STACK.get()
        frame = _Frame()
        token = _STACK.set((*stack, frame))
        started = time.perf_counter_ns()
        try:
            yield
        finally:
            elapsed = time.perf_counter_ns() - started
            _STACK.reset(token)
            if stack:
                stack[-1].child_ns += elapsed
            row = self.rows.setdefault(name, ProfileRow(name))
            row.calls += 1
            row.total_ns += elapsed
            row.net_ns += max(0, elapsed - frame.child_ns)

    def summary(self, print_table: bool = False) -> list[ProfileRow] | str:
        """Rows sorted by net time; with ``print_table`` a text table instead."""
        rows = sorted(self.rows.values(), key=lambda r: r.net_ns, reverse=True)
        if not print_table:
            return rows
        net_total = sum(r.net_ns for r in rows) or 1
        lines = [f"{'model':<28} {'calls':>7} {'total ms':>11} {'net ms':>11} {'net %':>7}"]
        for r in rows:
            lines.append(
                f"{r.name:<28} {r.calls:>7} {r.total_ms:>11.3f} {r.net_ms:>11.3f} "
                f"{100 * r.net_ns / net_total:>6.1f}%"
            )
        return "\n".join(lines)


def active_profiler(model: Any) -> SimpleProfiler | None:
    found: SimpleProfiler | None = getattr(model, "profiler", None)
    return found or _ACTIVE.get()
