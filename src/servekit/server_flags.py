"""The server's command-line flags and logging, shared by every command that
starts a server (``serve``, ``microservice``)."""

from __future__ import annotations

import argparse
import logging
import textwrap
from typing import Any, ClassVar

from servekit.config import ServerSettings


def setup_logging(debug: bool, log_format: str = "text") -> None:
    """Log to stderr as text or JSON (``log_format``), each line written while
    a request is handled carrying its request id."""
    from servekit.observability.logs import handler
    from servekit.observability.progress import CurrentStderr

    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        # whatever sys.stderr is when a line is written: above a progress bar while one is drawn
        handlers=[handler(CurrentStderr(), log_format)],
        force=True,
    )
    # third-party loggers stay quiet even in debug mode
    for name in ("uvicorn.error", "grpc", "grpc._cython.cygrpc", "asyncio"):
        logging.getLogger(name).setLevel(logging.WARNING)


# every server setting in one group of flags, by what it is for; a command
# shows the groups it uses (``microservice`` has no TorchServe or TF Serving flags)
GROUPS: dict[str, tuple[str, ...]] = {
    "network and ports": (
        "host", "http_port", "enable_http", "grpc_port", "metrics_port", "enable_grpc", "http_server", "keep_alive_seconds",
    ),
    "workers": (
        "parallel_workers", "threads_per_worker", "inline_predict_ms", "gil_switch_interval_ms", "yield_after_answer",
    ),
    "limits": (
        "max_request_size", "max_queue_size", "max_queue_time", "max_connections", "body_timeout_seconds",
        "abort_on_close", "drain_seconds",
    ),
    "models and repository": (
        "model_repository_root", "load_models_at_startup", "root_model_name", "poll_wait_seconds", "default_model",
        "lenient",
        "max_loaded_models", "max_loaded_bytes",
    ),
    "TorchServe (setting model_store, load_models or ts_config turns on TorchServe mode)": (
        "model_store", "load_models", "ts_config", "management_port", "management_host", "allowed_urls",
        "download_timeout", "max_download_bytes", "disable_token_auth", "default_workers_per_model", "pid_file",
    ),
    "TF Serving (setting model_base_path or model_config_file turns on TF Serving mode)": (
        "rest_api_port", "port", "model_name", "model_base_path", "model_config_file",
        "model_config_file_poll_wait_seconds", "file_system_poll_wait_seconds",
        "allow_version_labels_for_unavailable_models", "rest_api_timeout_in_ms", "grpc_socket_path",
        "grpc_channel_arguments", "monitoring_config_file", "enable_batching", "batching_parameters_file",
        "enable_serialization_as_tensor_content", "tensorflow_intra_op_parallelism",
        "tensorflow_inter_op_parallelism",
    ),
    "logging, tracing and metrics": (
        "debug", "access_log", "log_format", "otel_exporter_otlp_endpoint", "enable_metrics_endpoint",
        "metrics_endpoint", "server_name", "enable_dashboard", "payload_logging",
    ),
    "security": ("management_token", "ssl_certfile", "ssl_keyfile", "ssl_ca_certs", "ssl_ports"),
}
FRONT_GROUPS = tuple(title for title in GROUPS if title.startswith(("TorchServe", "TF Serving")))
# the groups of a server with no repository and no foreign front (servekit microservice)
SINGLE_MODEL_GROUPS = tuple(t for t in GROUPS if t not in FRONT_GROUPS and t != "models and repository")


# defaults that depend on the machine or the mode, said in words
DEFAULTS_SHOWN = {
    "parallel_workers": "one per core",
    "threads_per_worker": "cores / workers",
    "rest_api_port": "off; 8501 in TF Serving mode",
    "port": "off; 8500 in TF Serving mode",
    "grpc_port": "8081; 7070 in TorchServe mode",
    "ts_config": "./config.properties when present, in TorchServe mode",
    "max_request_size": "536870912 = 512 MiB",
    "max_download_bytes": "4294967296 = 4 GiB",
}


def flag_help(name: str) -> str:
    """A setting's help line: what it does, its default, settings.json key and variable."""
    field = ServerSettings.model_fields[name]
    default = field.default
    shown = DEFAULTS_SHOWN.get(name) or (
        "none" if default is None else "on" if default is True else "off" if default is False else default
    )
    return (f"{field.description or ''} (default: {shown}; settings.json: {name}; "
            f"env: SERVEKIT_{name.upper()})").replace("%", "%%")


def add_server_flags(parser: argparse.ArgumentParser, groups: tuple[str, ...] | None = None) -> None:
    """One ``--kebab-case`` flag per server setting (``--http-port``, …), in
    ``groups`` (default: all); TF Serving's ``--snake_case`` spelling too."""
    for title in groups or tuple(GROUPS):
        group = parser.add_argument_group(title)
        for name in GROUPS[title]:
            _add_flag(group, name)
    grouped = {name for names in GROUPS.values() for name in names}
    others = [name for name in ServerSettings.model_fields if name not in grouped]
    if others and groups is None:
        group = parser.add_argument_group("other settings")
        for name in others:
            _add_flag(group, name)


# shorter spellings of a few flags (the long one, from the setting's name, works too)
ALIASES: dict[str, tuple[str, ...]] = {
    "otel_exporter_otlp_endpoint": ("--otlp-endpoint",), "max_loaded_bytes": ("--max-loaded-memory",),
}


def _add_flag(group: argparse._ArgumentGroup, name: str) -> None:
    flags = (*ALIASES.get(name, ()), "--" + name.replace("_", "-"))
    annotation = ServerSettings.model_fields[name].annotation
    if annotation is bool:
        group.add_argument(*flags, dest=name, action=argparse.BooleanOptionalAction, default=None,
                           help=flag_help(name))
    else:
        group.add_argument(*flags, dest=name, default=None, metavar=_metavar(name, annotation), help=flag_help(name))
    if "_" in name:  # TF Serving's spelling too: --rest_api_port=9001, --model_base_path=…
        action = _TFBoolFlag if annotation is bool else "store"
        group.add_argument("--" + name, dest=name, action=action, default=None, help=argparse.SUPPRESS)


def _metavar(name: str, annotation: Any) -> str:
    text = str(annotation)
    if name.endswith("port"):
        return "PORT"
    if name == "max_loaded_bytes":
        return "SIZE"
    if "float" in text:
        return "SECONDS" if "seconds" in name or "timeout" in name or "time" in name else "N"
    if "int" in text:
        return "N"
    return name.upper()


class HelpFormatter(argparse.HelpFormatter):
    """Shows an option's default when its help does not already say it, and
    keeps the paragraphs of a description or epilog apart."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "\n\n".join(
            textwrap.fill(" ".join(part.split()), width, initial_indent=indent, subsequent_indent=indent,
                          break_on_hyphens=False)
            for part in text.split("\n\n")
        )

    def _split_lines(self, text: str, width: int) -> list[str]:
        # flags and file names stay whole (--metrics-port, model-settings.json)
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


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
