"""The ``servekit`` command."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from servekit import __version__, bench
from servekit.archive import writer as archive_writer
from servekit.client import command as infer_command
from servekit.config import load_server_settings
from servekit.errors import ConfigError, ServekitError
from servekit.fronts.seldon import cli as seldon_cli
from servekit.fronts.tfserving import flags as tfserving_flags
from servekit.fronts.torchserve import mode as torchserve_mode
from servekit.library.commands import LIBRARY_COMMANDS
from servekit.ray import command as ray_command
from servekit.server_flags import HelpFormatter, add_server_flags, server_overrides, setup_logging

log = logging.getLogger("servekit")

# subcommand name -> (configure parser, run); other modules add theirs
Command = tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]


SERVE_EPILOG = """\
ports: --http-port serves V2 REST, /predict, Seldon and TorchServe's inference API;
--grpc-port V2 gRPC; --rest-api-port TF Serving's REST API; --port TF Serving's gRPC
API; --management-port TorchServe's management API; --metrics-port Prometheus.

environment: every setting also as SERVEKIT_<SETTING> (SERVEKIT_HTTP_PORT=9000);
settings.json in FOLDER holds the same names. TF Serving's docker variables:
MODEL_NAME serves the versions in MODEL_BASE_PATH/MODEL_NAME (MODEL_BASE_PATH
defaults to /models, as in the tensorflow/serving image) in TF Serving mode.
TorchServe mode reads ./config.properties when present and --ts-config is not given.
"""


def configure_serve(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", nargs="?", default=None,
                        help="model repository: a folder of models (default: the current folder)")
    add_server_flags(parser)
    torchserve_group = next(g for g in parser._action_groups if (g.title or "").startswith("TorchServe"))
    torchserve_mode.add_flags(torchserve_group)
    tfserving_flags.add_flags(parser)
    ray_command.add_flags(parser)  # --engine ray: every model a Ray Serve deployment
    parser.epilog = SERVE_EPILOG


def run_serve(args: argparse.Namespace) -> int:
    from servekit.fronts.tfserving.source import configure_tfserving
    from servekit.observability import tracing
    from servekit.repository.sources import ModelSources
    from servekit.server.assembly import SKINS
    from servekit.server.runner import serve

    if tfserving_flags.wants_version(args):
        print(tfserving_flags.version_line())
        return 0
    folder = args.folder
    if folder is not None and not Path(folder).is_dir():
        what = "is a file, not a folder" if Path(folder).exists() else "does not exist"
        raise ConfigError(f"model repository {folder!r} {what}; give the folder that holds the models")
    if torchserve_mode.wants_background(args):
        return torchserve_mode.start_background(args, args.argv)
    # warnings about settings files appear in the log's form
    setup_logging(bool(args.debug), "json" if getattr(args, "log_format", None) == "json" else "text")
    settings = load_server_settings(folder or ".", server_overrides(args))
    settings = torchserve_mode.torchserve_settings(settings, args)
    setup_logging(settings.debug, settings.log_format)
    tracing.check(settings)  # an OTLP endpoint needs the tracing extra
    tfserving_flags.log_not_used(args)
    if args.engine == "ray":
        _check_repository(settings.model_repository_root, settings.lenient)
        return ray_command.run(settings, settings.model_repository_root, args)
    sources = ModelSources(settings)
    torchserve_wanted = bool(settings.model_store or settings.load_models or settings.ts_config)
    tfserving_mode = configure_tfserving(settings, sources, strict_env=folder is None and not torchserve_wanted)
    torchserve = torchserve_mode.configure_torchserve(settings, sources)
    if folder is not None or not (tfserving_mode or torchserve):
        _check_repository(settings.model_repository_root, settings.lenient)
        sources.add_repository(settings.model_repository_root)
    serve(settings, sources, SKINS)
    return 0


def _check_repository(root: str, lenient: bool) -> None:
    """Refuse to start on a broken or misspelt settings file or a missing model
    file (with ``--lenient``: warn, and serve the rest)."""
    from servekit.repository.discovery import startup_problems

    problems = startup_problems(root)
    if not problems:
        from servekit.repository.discovery import discover

        if not discover(root):
            log.warning(
                "No models in %s: a model is a folder with a model-settings.json, or with one model file "
                "(model.joblib, model.onnx, …), or numbered version folders; starting without models",
                Path(root).resolve(),
            )
        return
    if lenient:
        for problem in problems:
            log.warning("%s (starting anyway: --lenient)", problem)
        return
    hint = "fix it, or start with --lenient to serve the other models"
    if len(problems) == 1:
        raise ConfigError(f"{problems[0]}; {hint}")
    raise ConfigError(
        f"{len(problems)} problems in model repository {root!r} ({hint.replace('it', 'them', 1)}):\n"
        + "\n".join(f"  {problem}" for problem in problems)
    )


COMMANDS: dict[str, Command] = {
    "serve": (configure_serve, run_serve),
    "start": (configure_serve, run_serve),  # MLServer's spelling: mlserver start .
    "archive": (archive_writer.configure, archive_writer.run),  # torch-model-archiver
    "stop": (torchserve_mode.configure_stop, torchserve_mode.run_stop),  # torchserve --stop
    "bench": (bench.configure, bench.run),
    # Seldon's wrapper: seldon-core-microservice MyModel
    "microservice": (seldon_cli.configure_microservice, seldon_cli.run_microservice),
    "infer": (infer_command.configure, infer_command.run),  # a V2 inference with servekit.Client
}
# the model library's commands: describe, time, assets
COMMANDS.update(LIBRARY_COMMANDS)
SUMMARIES = {
    "serve": "serve a model repository (MLServer's layout), TF Serving base paths or a TorchServe "
             "model store, over every API",
    "start": "the same as serve (MLServer's spelling: servekit start .)",
    "archive": "make a model archive (.mar), as torch-model-archiver does",
    "stop": "stop a server started in the background with --start, as torchserve --stop",
    "bench": "measure a running server: requests per second, latency, server-side queue and compute time",
    "microservice": "serve a Python class with Seldon's microservice API, as seldon-core-microservice",
    "infer": "send one V2 inference request to a running server (REST, binary or gRPC) and print the outputs",
    "describe": "show a library model's types, assets and test cases",
    "time": "time a library model's predictions in this process",
    "assets": "push, fetch and list model assets in the asset store",
}


def build_parser() -> argparse.ArgumentParser:
    """``servekit`` with every subcommand and its flags."""
    parser = argparse.ArgumentParser(prog="servekit", description="Serve every model.")
    parser.add_argument("--version", action="version", version=f"servekit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, title="commands",
                                metavar="COMMAND", help="`servekit COMMAND --help` for its flags")
    for name, (configure, run) in COMMANDS.items():
        summary = SUMMARIES.get(name, "")
        command = sub.add_parser(name, help=summary, description=summary, formatter_class=HelpFormatter)
        configure(command)
        command.set_defaults(run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = torchserve_mode.torchserve_argv(list(sys.argv[1:] if argv is None else argv))
    args = parser.parse_args(argv)
    args.argv = argv
    debug = bool(getattr(args, "debug", None)) or os.environ.get("SERVEKIT_DEBUG", "").lower() in ("1", "true")
    try:
        return int(args.run(args))
    except ServekitError as exc:
        if debug:
            raise
        print(f"servekit: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if debug:
            raise
        detail = " ".join(str(exc).split())[:500]
        print(f"servekit: unexpected {type(exc).__name__}" + (f": {detail}" if detail else "")
              + " (--debug or SERVEKIT_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["COMMANDS", "add_server_flags", "build_parser", "main", "server_overrides", "setup_logging"]
