"""Canary and shadow releases: a model's unpinned calls split between its
versions, and a share of them mirrored to a shadow version whose answers are
compared with the served ones and never returned.

- :mod:`servekit.traffic.routing`: the split and the shadow of one model
  (:class:`~servekit.traffic.routing.Routing`), kept in the registry and used
  by ``Registry.resolve(..., routed=True)``, the data plane's resolution;
- :mod:`servekit.traffic.mirror`: running the shadow beside the answer
  (bounded, counted), comparing, the last differences;
- :mod:`servekit.traffic.management`: the ``traffic.set`` change every worker
  applies, the V2 repository extension's ``/traffic`` documents, and the
  routing read from ``model-settings.json`` files.
"""
