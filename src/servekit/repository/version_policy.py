"""Which versions of a model to serve: TF Serving's ``latest`` / ``all`` / ``specific``."""

from __future__ import annotations

from collections.abc import Iterable

from servekit.config import VersionPolicy


def select_versions(policy: VersionPolicy | None, available: Iterable[int]) -> list[int]:
    """The versions ``policy`` serves out of ``available``, in ascending order.

    ``latest`` keeps the ``num_versions`` highest; ``specific`` keeps the listed
    ones that exist (the others are simply not served yet, as in TF Serving).
    """
    found = sorted(set(available))
    policy = policy or VersionPolicy()
    if policy.kind == "all":
        return found
    if policy.kind == "specific":
        wanted = set(policy.versions)
        return [v for v in found if v in wanted]
    return found[-policy.num_versions :] if found else []


def describe(policy: VersionPolicy | None) -> str:
    """``latest(1)``, ``all`` or ``specific(1, 2)`` for log lines."""
    policy = policy or VersionPolicy()
    if policy.kind == "all":
        return "all"
    if policy.kind == "specific":
        return f"specific({', '.join(str(v) for v in policy.versions)})"
    return f"latest({policy.num_versions})"
