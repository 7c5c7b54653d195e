"""Seldon's wrapper as a command: ``servekit microservice MyModel`` serves the
class ``MyModel`` (in ``MyModel.py`` here) as ``seldon-core-microservice``
would, on Seldon's REST port 9000, with Seldon's API (``protocols/seldon.py``)."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from servekit.errors import ConfigError


def configure_microservice(parser: argparse.ArgumentParser) -> None:
    from servekit.server_flags import add_server_flags

    parser.add_argument("interface_name", help="MyModel: class MyModel in MyModel.py here (or module.Class)")
    parser.add_argument("--service-type", default="MODEL", help="only MODEL is supported")
    parser.add_argument("--parameters", default=None, help="JSON list of {name, value, type} for __init__")
    add_server_flags(parser)


def run_microservice(args: argparse.Namespace) -> int:
    from servekit.config import ModelParameters, ModelSettings, load_server_settings
    from servekit.repository.sources import ModelSources
    from servekit.server.assembly import SKINS
    from servekit.server.runner import serve
    from servekit.server_flags import server_overrides, setup_logging

    if args.service_type.upper() != "MODEL":
        raise ConfigError(f"service type {args.service_type!r} is not supported; use MODEL")
    overrides = server_overrides(args)
    overrides.setdefault("http_port", None)
    if overrides["http_port"] is None and "SERVEKIT_HTTP_PORT" not in os.environ:
        overrides["http_port"] = 9000  # Seldon's REST port
    if overrides.get("parallel_workers") is None and "SERVEKIT_PARALLEL_WORKERS" not in os.environ:
        overrides["parallel_workers"] = 1
    settings = load_server_settings(None, overrides)
    setup_logging(settings.debug)
    name = args.interface_name
    module, _, cls = name.rpartition(".")
    implementation = name if module else f"{name}.{name}"
    init = _seldon_parameters(args.parameters)
    model = ModelSettings(
        name=cls or name,
        implementation=implementation,
        source_dir=os.getcwd(),
        parameters=ModelParameters(extra={"init_parameters": init}),
    )
    sources = ModelSources(settings)
    sources.add(lambda: [model])
    serve(settings, sources, SKINS)
    return 0


def _seldon_parameters(raw: str | None) -> dict[str, Any]:
    """Seldon's ``--parameters '[{"name": "a", "value": "1", "type": "INT"}]'``."""
    if not raw:
        return {}
    try:
        entries = json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"--parameters is not valid JSON: {exc}") from None
    casts = {"INT": int, "FLOAT": float, "DOUBLE": float, "STRING": str, "BOOL": lambda v: str(v).lower() == "true"}
    out: dict[str, Any] = {}
    for entry in entries:
        cast: Any = casts.get(str(entry.get("type", "STRING")).upper(), str)
        out[entry["name"]] = cast(entry["value"])
    return out
