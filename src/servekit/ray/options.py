"""How a model's settings become a Ray Serve deployment's options (no Ray import).

==========================  ==================================================
model-settings.json         Ray Serve deployment option
==========================  ==================================================
``parallel_workers: N``     ``num_replicas: N`` (0 or absent: 1)
``min_replicas``            ``autoscaling_config.min_replicas`` (absent: 1)
``max_replicas``            ``autoscaling_config.max_replicas`` (absent: the
                            larger of min_replicas and parallel_workers)
``target_ongoing_requests`` ``autoscaling_config.target_ongoing_requests``
                            (absent: Ray's default, 2)
==========================  ==================================================

Any of the last three turns autoscaling on; ``parallel_workers`` then is the
replica count Ray starts with (``initial_replicas``). A model with several
versions takes them from its newest version's settings.
"""

from __future__ import annotations

from typing import Any

from servekit.config import ModelSettings
from servekit.errors import ConfigError
from servekit.registry import version_sort_key


def newest(settings: list[ModelSettings]) -> ModelSettings:
    """The settings of a model's newest version (the one without a version
    when there is only that)."""
    return max(settings, key=lambda s: version_sort_key(s.parameters.version or ""))


def replica_options(settings: ModelSettings) -> dict[str, Any]:
    """``num_replicas`` or ``autoscaling_config`` for one model's deployment;
    :class:`ConfigError` naming the model when the numbers contradict each other."""
    workers = settings.parallel_workers or None  # MLServer's 0: one
    low, high, target = settings.min_replicas, settings.max_replicas, settings.target_ongoing_requests
    if low is None and high is None and target is None:
        return {"num_replicas": workers or 1}
    low = 1 if low is None else low
    high = max(low, workers or 1, 1) if high is None else high
    if low > high:
        raise ConfigError(
            f"model {settings.name!r}: min_replicas {low} is more than max_replicas {high}; "
            "make min_replicas <= max_replicas"
        )
    if workers is not None and not low <= workers <= high:
        raise ConfigError(
            f"model {settings.name!r}: parallel_workers {workers} (the replicas to start with) is "
            f"outside min_replicas {low} .. max_replicas {high}"
        )
    autoscaling: dict[str, Any] = {"min_replicas": low, "max_replicas": high}
    if target is not None:
        autoscaling["target_ongoing_requests"] = target
    if workers is not None:
        autoscaling["initial_replicas"] = workers
    return {"autoscaling_config": autoscaling}


__all__ = ["newest", "replica_options"]
