"""One model's routing: a traffic split between its versions and a shadow.

A call that names neither a version nor a label is *unpinned*: the split
sends ``percent`` of those calls to each listed version and the rest to the
model's default version; a listed version that is not ready has its share
served by the default. A call naming a version or a label always gets that
version. Drawing costs one ``random.random()`` and a walk over at most
:data:`~servekit.config.MAX_TRAFFIC_VERSIONS` cumulative bounds; a model
without a split costs nothing (``ModelEntry.split`` is None).
"""

from __future__ import annotations

from dataclasses import dataclass
from random import random
from typing import TYPE_CHECKING, Any

from servekit.config import ModelSettings, ShadowSettings, check_traffic

if TYPE_CHECKING:
    from servekit.registry import ModelEntry, ModelVersion


@dataclass(frozen=True, slots=True)
class Shadow:
    """The version that answers ``percent`` of the unpinned calls on the side."""

    version: str
    percent: float


class Routing:
    """A model's traffic split (version -> percent) and shadow, validated."""

    __slots__ = ("shadow", "steps", "traffic")

    def __init__(self, traffic: dict[str, float] | None = None, shadow: Shadow | None = None) -> None:
        self.traffic: dict[str, float] = check_traffic(traffic)
        self.shadow = shadow
        steps: list[tuple[float, str]] = []
        total = 0.0
        for version, percent in self.traffic.items():
            if percent > 0:
                total += percent
                steps.append((total, version))
        self.steps: tuple[tuple[float, str], ...] = tuple(steps)

    @classmethod
    def parse(cls, document: Any) -> Routing:
        """From ``{"traffic": {...}, "shadow": {"version", "percent"} | null}``
        (both optional); ValueError saying what is wrong."""
        if not isinstance(document, dict):
            raise ValueError('send a JSON object: {"traffic": {"2": 10}, "shadow": {"version": "3", "percent": 50}}')
        unknown = sorted(str(k)[:40] for k in document if k not in ("traffic", "shadow"))
        if unknown:
            raise ValueError(f"{', '.join(repr(k) for k in unknown)}: not a traffic setting (traffic, shadow)")
        raw = document.get("shadow")
        shadow = None
        if raw is not None:
            if not isinstance(raw, dict):
                raise ValueError('shadow must be an object: {"version": "3", "percent": 50} (or null)')
            try:
                settings = ShadowSettings.model_validate(raw)
            except Exception as exc:  # pydantic's ValidationError: its first message
                errors = getattr(exc, "errors", None)
                detail = errors()[0]["msg"] if callable(errors) and errors() else str(exc)
                raise ValueError(str(detail).removeprefix("Value error, ")) from None
            shadow = Shadow(settings.version, settings.percent)
        return cls(document.get("traffic"), shadow)

    @classmethod
    def of_settings(cls, settings: ModelSettings) -> Routing:
        shadow = settings.shadow
        return cls(settings.traffic, Shadow(shadow.version, shadow.percent) if shadow is not None else None)

    @property
    def empty(self) -> bool:
        return not self.steps and self.shadow is None

    def versions(self) -> list[str]:
        """Every version this routing names."""
        named = list(self.traffic)
        if self.shadow is not None and self.shadow.version not in named:
            named.append(self.shadow.version)
        return named

    def pick(self, entry: ModelEntry) -> ModelVersion | None:
        """The version an unpinned call goes to by the split, or None for the
        default (the draw fell in the rest, or the version is not ready)."""
        draw = random() * 100.0
        for bound, version in self.steps:
            if draw < bound:
                model = entry.versions.get(version)
                return model if model is not None and model.ready else None
        return None

    def to_dict(self) -> dict[str, Any]:
        shadow = self.shadow
        return {
            "traffic": dict(self.traffic),
            "shadow": {"version": shadow.version, "percent": shadow.percent} if shadow is not None else None,
        }

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Routing) and self.traffic == other.traffic and self.shadow == other.shadow

    def __hash__(self) -> int:
        return hash((tuple(self.traffic.items()), self.shadow))

    def __repr__(self) -> str:
        return f"Routing({self.to_dict()!r})"


NONE = Routing()  # no split, no shadow


__all__ = ["NONE", "Routing", "Shadow"]
