"""``library.describe()`` and ``servekit describe``: what each model is and costs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from servekit.library.library import ModelLibrary


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def describe_library(library: ModelLibrary, print_table: bool = False) -> dict[str, dict[str, Any]] | str:
    rows: dict[str, dict[str, Any]] = {}
    for key in library.build_order:
        cls, config = library.configurations[key]
        model = library.models.get(key)
        if model is not None:
            rows[key] = model.describe()
        else:
            rows[key] = {
                "name": key,
                "class": f"{cls.__module__}.{cls.__qualname__}",
                "signature": cls.signature().describe(),
                "dependencies": dict(config.model_dependencies),
                "asset": config.asset,
                "asset_path": None,
                "load_seconds": None,
                "load_memory_bytes": None,
                "cache": None,
                "async": False,
            }
    return render(rows) if print_table else rows


def render(rows: dict[str, dict[str, Any]]) -> str:
    lines = []
    for key, row in rows.items():
        lines.append(f"{key}  ({row['class']})")
        lines.append(f"  signature     {row['signature']}{'  [async]' if row['async'] else ''}")
        deps = ", ".join(f"{k}={v}" if k != v else k for k, v in row["dependencies"].items())
        lines.append(f"  dependencies  {deps or '-'}")
        if row["asset"]:
            lines.append(f"  asset         {row['asset']} -> {row['asset_path'] or 'not fetched'}")
        if row["load_seconds"] is not None:
            lines.append(
                f"  load          {row['load_seconds'] * 1000:.1f} ms, "
                f"+{_size(row['load_memory_bytes'] or 0)} memory"
            )
        else:
            lines.append("  load          not loaded (lazy)")
        if row["cache"]:
            lines.append(f"  cache         {row['cache']}")
    return "\n".join(lines)
