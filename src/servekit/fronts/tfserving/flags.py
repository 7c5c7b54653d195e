"""``tensorflow_model_server``'s flags that servekit accepts without acting on
them, so that a TF Serving command line starts unchanged: each is named in
one log line at startup with why it does nothing here. The flags servekit
honours are server settings (``servekit.config.ServerSettings``: ``port``,
``rest_api_port``, ``rest_api_timeout_in_ms``, ``grpc_socket_path``,
``grpc_channel_arguments``, ``monitoring_config_file``, ``enable_batching``,
``batching_parameters_file``, ``tensorflow_intra_op_parallelism`` …).
"""

from __future__ import annotations

import argparse
import logging
import re
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

from servekit.errors import ConfigError

log = logging.getLogger("servekit")

DEST_PREFIX = "tfserving_flag_"

# TF Serving 2.20's flags (tensorflow_serving/model_servers/main.cc) that
# servekit does not act on, and why
NOT_USED: dict[str, str] = {
    "rest_api_num_threads": "servekit's HTTP server is asynchronous, one per worker process",
    "rest_api_enable_cors_support": "no CORS headers",
    "enable_per_model_batching_parameters": "servekit batches every model adaptively",
    "num_load_threads": "models load one after another",
    "num_unload_threads": "models unload one after another",
    "max_num_load_retries": "a failed load is not retried (the model is UNAVAILABLE with its reason)",
    "load_retry_interval_micros": "a failed load is not retried",
    "flush_filesystem_caches": "nothing to flush",
    "tensorflow_session_parallelism": "use --tensorflow_intra_op_parallelism / --tensorflow_inter_op_parallelism",
    "tensorflow_session_config_file": "use --tensorflow_intra_op_parallelism / --tensorflow_inter_op_parallelism",
    "use_alts_credentials": "no ALTS; TLS comes from --ssl-certfile/--ssl-keyfile",
    "ssl_config_file": "TLS comes from --ssl-certfile/--ssl-keyfile",
    "platform_config_file": "the runtime is chosen from the model's files",
    "per_process_gpu_memory_fraction": "CPU only",
    "saved_model_tags": "the MetaGraph tagged 'serve' is loaded",
    "grpc_max_threads": "servekit's gRPC server is asynchronous",
    "enable_model_warmup": "no warmup requests are replayed (assets.extra/tf_serving_warmup_requests)",
    "num_request_iterations_for_warmup": "no warmup requests are replayed",
    "remove_unused_fields_from_bundle_metagraph": "the MetaGraph is kept whole",
    "prefer_tflite_model": "servekit does not run .tflite models; the SavedModel is served",
    "num_tflite_pools": "no TFLite",
    "num_tflite_interpreters_per_pool": "no TFLite",
    "enable_signature_method_name_check": "method names are not checked",
    "xla_cpu_compilation_enabled": "no XLA compilation",
    "xla_gpu_compilation_enabled": "no GPU",
    "enable_profiler": "no profiler service",
    "thread_pool_factory_config_file": "TensorFlow's default thread pools",
    "mixed_precision": "models run in the precision they were saved in",
    "skip_initialize_tpu": "no TPU",
    "enable_grpc_healthcheck_service": "servekit's V2 gRPC port serves grpc.health.v1 when it is on",
}


def add_flags(parser: argparse.ArgumentParser) -> None:
    """Accept ``--name``, ``--name=value`` and ``--name value`` for each flag of
    :data:`NOT_USED` (hidden from ``--help``), and TF Serving's ``--version``."""
    for name in NOT_USED:
        parser.add_argument(f"--{name}", dest=DEST_PREFIX + name, nargs="?", const="true", default=None,
                            help=argparse.SUPPRESS)
    parser.add_argument("--version", dest=DEST_PREFIX + "version", action="store_true", default=False,
                        help="print servekit's version (TF Serving's --version) and exit")


def wants_version(args: argparse.Namespace) -> bool:
    return bool(getattr(args, DEST_PREFIX + "version", False))


def version_line() -> str:
    try:
        return f"servekit {package_version('servekit')} (serving TensorFlow Serving's APIs)"
    except PackageNotFoundError:
        return "servekit (serving TensorFlow Serving's APIs)"


def log_not_used(args: argparse.Namespace) -> list[str]:
    """Log one line naming the TF Serving flags given that servekit does not
    act on; returns their names."""
    given = [name for name in NOT_USED if getattr(args, DEST_PREFIX + name, None) is not None]
    if given:
        log.info(
            "TF Serving flags accepted but not used by servekit: %s",
            "; ".join(f"--{name} ({NOT_USED[name]})" for name in given),
        )
    return given


__all__ = ["NOT_USED", "add_flags", "log_not_used", "version_line", "wants_version"]


DEFAULT_MONITORING_PATH = "/monitoring/prometheus/metrics"  # TF Serving's


def channel_arguments(text: str | None) -> list[tuple[str, int | str]]:
    """TF Serving's ``--grpc_channel_arguments``: ``key=value`` pairs separated
    by commas; numbers become integers, as TF Serving passes them."""
    out: list[tuple[str, int | str]] = []
    for item in (text or "").split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise ConfigError(
                f"--grpc_channel_arguments: {item!r} is not key=value "
                "(write grpc.max_connection_age_ms=2000,grpc.keepalive_time_ms=10000)"
            )
        number = value.lstrip("-")
        out.append((key, int(value) if number.isdigit() else value))
    return out


def monitoring_path(settings: Any) -> str | None:
    """The Prometheus path of ``--monitoring_config_file`` (TF Serving's
    MonitoringConfig: ``prometheus_config { enable: true path: "…" }``), or None."""
    if not settings.monitoring_config_file:
        return None
    path = Path(settings.monitoring_config_file)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read --monitoring_config_file {path}: {exc.strerror}") from None
    block = re.search(r"prometheus_config\s*:?\s*\{([^}]*)\}", text)
    if block is None or not re.search(r"\benable\s*:\s*true\b", block.group(1)):
        return None
    found = re.search(r"\bpath\s*:\s*[\"']([^\"']*)[\"']", block.group(1))
    where = found.group(1) if found and found.group(1) else DEFAULT_MONITORING_PATH
    if not where.startswith("/"):
        raise ConfigError(f"--monitoring_config_file {path}: prometheus_config path {where!r} must start with /")
    return where
