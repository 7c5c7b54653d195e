"""servekit on Ray Serve: every model of a repository is a deployment of its
own, behind one ingress that speaks servekit's V2 REST protocol.

::

    servekit serve --engine ray models/          # or, from Python:
    servekit.ray.deploy("models/")

Each model replica is a servekit registry and data plane for that model
(the adaptive batcher included); replicas and autoscaling come from the
model's settings (:mod:`servekit.ray.options`). Needs the ``ray`` extra
(``pip install 'servekit[ray]'``); importing this package does not import Ray.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from servekit.ray.options import replica_options

if TYPE_CHECKING:
    from servekit.ray.engine import Deployed


def deploy(root: str, **options: Any) -> Deployed:
    """Deploy the model repository at ``root`` on Ray Serve; see
    :func:`servekit.ray.engine.deploy` for the options."""
    from servekit.ray import engine

    return engine.deploy(root, **options)


__all__ = ["deploy", "replica_options"]
