"""``servekit serve --engine ray REPOSITORY``: the flags, and the run
(Ray is imported only when the engine is asked for)."""

from __future__ import annotations

import argparse
import logging

from servekit.config import ServerSettings
from servekit.errors import ConfigError

log = logging.getLogger("servekit.ray")

ENGINES = ("servekit", "ray")
# settings that start TorchServe or TF Serving mode: not under Ray
FRONT_SETTINGS = ("model_store", "load_models", "ts_config", "model_base_path", "model_config_file")


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of CPUs (0.5, 1, 2 …)") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a replica needs more than 0 CPUs")
    return value


def add_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("engine (--engine ray: every model a Ray Serve deployment)")
    group.add_argument(
        "--engine", choices=ENGINES, default="servekit",
        help="servekit: this machine's processes; ray: deploy every model of the repository on Ray "
             "Serve behind one V2 REST ingress (needs the ray extra), replicas from each model's "
             "parallel_workers, min_replicas, max_replicas and target_ongoing_requests",
    )
    group.add_argument(
        "--ray-address", default=None, metavar="HOST:PORT",
        help="the Ray cluster to deploy on (default: RAY_ADDRESS, else a cluster started on this "
             "machine with `ray start`, else a new local one)",
    )
    group.add_argument(
        "--ray-num-cpus", type=_positive, default=1.0, metavar="CPUS",
        help="CPUs Ray reserves for each replica, of the models and of the ingress",
    )


def run(settings: ServerSettings, root: str, args: argparse.Namespace) -> int:
    """Deploy the repository on Ray Serve and serve until SIGINT/SIGTERM."""
    fronts = [f"--{name.replace('_', '-')}" for name in FRONT_SETTINGS if getattr(settings, name, None)]
    if fronts:
        raise ConfigError(
            f"--engine ray serves a model repository (MLServer's layout) over V2 REST; {', '.join(fronts)} "
            "asks for TorchServe or TF Serving mode, which runs only with --engine servekit"
        )
    try:
        from servekit.ray import engine
    except ImportError as exc:
        raise ConfigError(
            f"--engine ray needs Ray Serve ({exc.name or 'ray'} is not installed): "
            "pip install 'servekit[ray]'"
        ) from None
    deployed = engine.deploy(root, address=args.ray_address, settings=settings, num_cpus=args.ray_num_cpus)
    engine.serve_until_stopped(deployed, deployed.models)
    return 0


__all__ = ["ENGINES", "add_flags", "run"]
