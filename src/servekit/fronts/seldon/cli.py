"""Seldon's wrapper as a command: ``servekit microservice MyModel`` serves the
class ``MyModel`` (in ``MyModel.py`` here) as ``seldon-core-microservice``
would, on Seldon's REST port 9000, with Seldon's API (``protocols/seldon.py``)."""

from __future__ import annotations

import argparse
import json
import logging
import os
from typing import Any

from servekit.errors import ConfigError

log = logging.getLogger("servekit")


# seldon-core-microservice's choices, and OUTPUT_TRANSFORMER (a graph node type
# in Seldon, whose containers run as TRANSFORMER); the wrapper serves every route
# whatever the type: here the type also picks the method a call through another
# protocol (V2, graphs) runs, and the method the class must have
SERVICE_TYPES = ("MODEL", "ROUTER", "TRANSFORMER", "OUTPUT_TRANSFORMER", "COMBINER", "OUTLIER_DETECTOR")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
TRUE_WORDS = ("1", "true", "yes", "on", "t", "y")


def _switch(value: str) -> bool:
    """Seldon's optional-value switches: ``--debug``, ``--debug true``, ``--access-log 0``."""
    return value.strip().lower() in TRUE_WORDS


def configure_microservice(parser: argparse.ArgumentParser) -> None:
    from servekit.server_flags import SINGLE_MODEL_GROUPS, add_server_flags

    parser.add_argument("interface_name", help="MyModel: class MyModel in MyModel.py here (or module.Class)")
    # seldon-core-microservice's own flags, same names; those with a servekit
    # meaning replace servekit's flag of the same name
    parser.conflict_handler = "resolve"
    add_server_flags(parser, SINGLE_MODEL_GROUPS)  # no repository, TorchServe or TF Serving flags
    seldon = parser.add_argument_group("seldon-core-microservice's flags")
    seldon.add_argument("--service-type", default="MODEL", type=str.upper, choices=SERVICE_TYPES,
                        help="MODEL: predict; ROUTER: route; COMBINER: aggregate; TRANSFORMER: "
                             "transform_input; OUTPUT_TRANSFORMER: transform_output (default: MODEL)")
    seldon.add_argument("--parameters", default=os.environ.get("PREDICTIVE_UNIT_PARAMETERS"),
                        help="JSON list of {name, value, type} for __init__ (env: PREDICTIVE_UNIT_PARAMETERS)")
    seldon.add_argument("--log-level", type=str.upper, choices=LOG_LEVELS, default=None,
                        help="log level (default: INFO; DEBUG is --debug)")
    seldon.add_argument("--debug", nargs="?", const=True, default=None, type=_switch, metavar="BOOL",
                        help="debug logging: --debug, --debug true|false (settings.json: debug)")
    seldon.add_argument("--access-log", nargs="?", const=True, default=None, type=_switch, metavar="BOOL",
                        help="log every request: --access-log, --access-log true|false")
    seldon.add_argument("--workers", type=int, default=None, metavar="N",
                        help="worker processes (Gunicorn's workers; servekit's --parallel-workers; default: 1)")
    seldon.add_argument("--persistence", nargs="?", const=1, default=0, type=int,
                        help="deprecated in Seldon; accepted and ignored")
    for flag, meaning in (
        ("--tracing", "OpenTracing (not in servekit)"),
        ("--threads", "threads per Gunicorn worker (servekit workers are asynchronous)"),
        ("--max-requests", "Gunicorn worker recycling"),
        ("--max-requests-jitter", "Gunicorn worker recycling"),
        ("--keepalive", "Gunicorn keep-alive seconds (servekit: --keep-alive-seconds)"),
        ("--single-threaded", "Flask single-threading"),
        ("--pidfile", "Gunicorn PID file"),
        ("--grpc-threads", "Seldon gRPC threads (servekit serves Seldon over REST only)"),
        ("--grpc-workers", "Seldon gRPC workers (servekit serves Seldon over REST only)"),
    ):
        seldon.add_argument(flag, nargs="?", const="1", default=None, metavar="VALUE",
                            dest="ignored_" + flag[2:].replace("-", "_"),
                            help=f"accepted and ignored: {meaning}")


def run_microservice(args: argparse.Namespace) -> int:
    from servekit.config import ModelParameters, ModelSettings, load_server_settings
    from servekit.repository.sources import ModelSources
    from servekit.server.assembly import SKINS
    from servekit.server.runner import serve
    from servekit.server_flags import server_overrides, setup_logging

    overrides = server_overrides(args)
    overrides.setdefault("http_port", None)
    if overrides["http_port"] is None and "SERVEKIT_HTTP_PORT" not in os.environ:
        overrides["http_port"] = int(os.environ.get("PREDICTIVE_UNIT_HTTP_SERVICE_PORT") or 9000)  # Seldon's
    if args.workers is not None:
        given = overrides.get("parallel_workers")
        if given is not None and str(given).strip() != str(args.workers):
            raise ConfigError("--workers and --parallel-workers say different things; give one of them")
        overrides["parallel_workers"] = args.workers
    if overrides.get("parallel_workers") is None and "SERVEKIT_PARALLEL_WORKERS" not in os.environ:
        overrides["parallel_workers"] = int(os.environ.get("GUNICORN_WORKERS") or 1)
    if args.log_level == "DEBUG" and overrides.get("debug") is None:
        overrides["debug"] = True
    settings = load_server_settings(None, overrides)
    setup_logging(settings.debug, settings.log_format)
    if args.log_level in ("WARNING", "ERROR") and not settings.debug:
        logging.getLogger("servekit").setLevel(args.log_level)
    ignored = sorted(k[len("ignored_"):].replace("_", "-") for k, v in vars(args).items()
                     if k.startswith("ignored_") and v is not None)
    if args.persistence:
        ignored.insert(0, "persistence")
    if ignored:
        log.info("seldon-core-microservice flags with no meaning here, ignored: %s",
                 ", ".join("--" + name for name in ignored))
    name = args.interface_name
    module, _, cls = name.rpartition(".")
    implementation = name if module else f"{name}.{name}"
    init = _seldon_parameters(args.parameters)
    model = ModelSettings(
        name=cls or name,
        implementation=implementation,
        source_dir=os.getcwd(),
        parameters=ModelParameters(extra={"init_parameters": init, "seldon_service_type": args.service_type}),
    )
    _check_class(model, args.service_type)
    sources = ModelSources(settings)
    sources.add(lambda: [model])
    serve(settings, sources, SKINS)
    return 0


def _check_class(model: Any, service_type: str) -> None:
    """Refuse to start, as seldon-core-microservice does, when the class cannot
    be imported, is no Seldon class, or lacks its service type's method."""
    import inspect

    from servekit.errors import ServekitError
    from servekit.runtimes import runtime_class
    from servekit.runtimes.seldon_class import REQUIRED, SeldonClassRuntime

    try:
        runtime = runtime_class(model)
    except ServekitError as exc:
        reason = exc.message.replace(" (is its framework extra installed?)", "")
        raise ConfigError(
            f"cannot serve {model.implementation!r}: {reason}; servekit microservice MyModel serves "
            f"class MyModel of MyModel.py in the current folder ({os.getcwd()}), or give module.Class"
        ) from None
    if not issubclass(runtime, SeldonClassRuntime):
        return  # a servekit runtime or model: served as it is
    wanted = REQUIRED.get(service_type, ())
    user = runtime.user_class
    if wanted and not any(callable(getattr(user, m + s, None)) for m in wanted for s in ("", "_raw", "_rest")):
        where = inspect.getsourcefile(user) or model.implementation
        raise ConfigError(
            f"{user.__name__} ({where}) is served as a {service_type} but has no "
            + " or ".join(f"{m}()" for m in wanted)
        )


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
