"""The ``servekit`` command."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from typing import Any

from servekit import __version__, bench
from servekit.config import ServerSettings, load_server_settings
from servekit.errors import ServekitError

# subcommand name -> (configure parser, run); other modules add theirs
Command = tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]


def setup_logging(debug: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(asctime)s [servekit] %(levelname)s - %(message)s",
        stream=sys.stderr,
        force=True,
    )
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)


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


def server_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {name: getattr(args, name, None) for name in ServerSettings.model_fields}


def configure_serve(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", nargs="?", default=None, help="model repository (default: .)")
    add_server_flags(parser)


def run_serve(args: argparse.Namespace) -> int:
    from servekit.repository.sources import ModelSources
    from servekit.server.runner import serve

    folder = args.folder
    settings = load_server_settings(folder or ".", server_overrides(args))
    setup_logging(settings.debug)
    sources = ModelSources(settings)
    sources.add_repository(settings.model_repository_root)
    serve(settings, sources)
    return 0


COMMANDS: dict[str, Command] = {
    "serve": (configure_serve, run_serve),
    "start": (configure_serve, run_serve),  # MLServer's spelling: mlserver start .
    "bench": (bench.configure, bench.run),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="servekit", description="Serve every model.")
    parser.add_argument("--version", action="version", version=f"servekit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (configure, run) in COMMANDS.items():
        command = sub.add_parser(name)
        configure(command)
        command.set_defaults(run=run)
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except ServekitError as exc:
        print(f"servekit: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
