"""The ``servekit`` command."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from typing import Any, ClassVar

from servekit import __version__, bench, torchserve_mode
from servekit.archive import writer as archive_writer
from servekit.config import ServerSettings, load_server_settings
from servekit.errors import ServekitError
from servekit.library.commands import LIBRARY_COMMANDS

# subcommand name -> (configure parser, run); other modules add theirs
Command = tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]


def setup_logging(debug: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(asctime)s [servekit] %(levelname)s - %(message)s",
        stream=sys.stderr,
        force=True,
    )
    # third-party loggers stay quiet even in debug mode
    for name in ("uvicorn.error", "grpc", "grpc._cython.cygrpc", "asyncio"):
        logging.getLogger(name).setLevel(logging.WARNING)


def add_server_flags(parser: argparse.ArgumentParser) -> None:
    """One ``--kebab-case`` flag per server setting (``--http-port``, …)."""
    group = parser.add_argument_group("server settings (also settings.json and SERVEKIT_* variables)")
    for name, field in ServerSettings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        annotation = field.annotation
        if annotation is bool:
            group.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None)
        else:
            group.add_argument(flag, dest=name, default=None, metavar=name.upper())
        if "_" in name:  # TF Serving's spelling too: --rest_api_port=9001, --model_base_path=…
            action = _TFBoolFlag if annotation is bool else "store"
            group.add_argument("--" + name, dest=name, action=action, default=None, help=argparse.SUPPRESS)


class _TFBoolFlag(argparse.Action):
    """A boolean flag written the TF Serving way: ``--flag`` or ``--flag=true|false``."""

    WORDS: ClassVar[dict[str, bool]] = {"true": True, "1": True, "false": False, "0": False}

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        kwargs.pop("nargs", None)
        super().__init__(option_strings, dest, nargs="?", **kwargs)

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
        values: Any, option_string: str | None = None,
    ) -> None:
        if values is None:
            setattr(namespace, self.dest, True)
            return
        value = self.WORDS.get(str(values).lower())
        if value is None:
            parser.error(f"{option_string} takes true or false, not {values!r}")
        setattr(namespace, self.dest, value)


def server_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {name: getattr(args, name, None) for name in ServerSettings.model_fields}


def configure_serve(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", nargs="?", default=None, help="model repository (default: .)")
    add_server_flags(parser)
    torchserve_mode.add_flags(parser)


def run_serve(args: argparse.Namespace) -> int:
    from servekit.repository.reconcile import install as install_reconciler
    from servekit.repository.sources import ModelSources
    from servekit.repository.tfserving_source import configure_tfserving
    from servekit.server.runner import serve

    folder = args.folder
    if torchserve_mode.wants_background(args):
        return torchserve_mode.start_background(args, args.argv)
    settings = load_server_settings(folder or ".", server_overrides(args))
    settings = torchserve_mode.torchserve_settings(settings, args)
    setup_logging(settings.debug)
    sources = ModelSources(settings)
    tfserving_mode = configure_tfserving(settings, sources)
    torchserve = torchserve_mode.configure_torchserve(settings, sources)
    if folder is not None or not (tfserving_mode or torchserve):
        sources.add_repository(settings.model_repository_root)
    install_reconciler()
    serve(settings, sources)
    return 0


COMMANDS: dict[str, Command] = {
    "serve": (configure_serve, run_serve),
    "start": (configure_serve, run_serve),  # MLServer's spelling: mlserver start .
    "archive": (archive_writer.configure, archive_writer.run),  # torch-model-archiver
    "stop": (torchserve_mode.configure_stop, torchserve_mode.run_stop),  # torchserve --stop
    "bench": (bench.configure, bench.run),
}
# the model library's commands: describe, time, assets, microservice
COMMANDS.update(LIBRARY_COMMANDS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="servekit", description="Serve every model.")
    parser.add_argument("--version", action="version", version=f"servekit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (configure, run) in COMMANDS.items():
        command = sub.add_parser(name)
        configure(command)
        command.set_defaults(run=run)
    argv = torchserve_mode.torchserve_argv(list(sys.argv[1:] if argv is None else argv))
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        return int(args.run(args))
    except ServekitError as exc:
        print(f"servekit: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
