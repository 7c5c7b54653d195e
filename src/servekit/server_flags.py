"""The server's command-line flags and logging, shared by every command that
starts a server (``serve``, ``microservice``)."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any, ClassVar

from servekit.config import ServerSettings


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
        where = f"default {field.default!r}; settings.json {name!r}; env SERVEKIT_{name.upper()}"
        if annotation is bool:
            group.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None,
                               help=where)
        else:
            group.add_argument(flag, dest=name, default=None, metavar=name.upper(), help=where)
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
