# The C extension built from _speedups/trees.c (optional; see setup.py).
from typing import Any

def forest_mean(x: Any, feature: Any, threshold: Any, left: Any, right: Any, roots: Any, value: Any, depth: int,
                out: Any, /) -> None: ...
def booster_margins(x: Any, feature: Any, threshold: Any, children: Any, roots: Any, value: Any, base: Any,
                    depth: int, out: Any, /) -> None: ...
