"""Server and model settings.

Server settings come, lowest to highest precedence, from defaults,
``settings.json`` (MLServer's field names), ``SERVEKIT_*`` environment
variables and command-line flags. Model settings come from
``model-settings.json`` files in MLServer's format, or are inferred.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from servekit.errors import ConfigError

ENV_PREFIX = "SERVEKIT_"
log = logging.getLogger("servekit.config")
# the settings naming a port that can serve TLS (ssl_ports)
TLS_PORT_SETTINGS = ("http_port", "grpc_port", "metrics_port", "rest_api_port", "management_port", "port")


# the smallest value of numeric settings: (bound, whether the bound itself is refused)
_AT_LEAST: dict[str, tuple[float, bool]] = {
    "parallel_workers": (0, False),  # 0, as in MLServer's settings: one per core
    "threads_per_worker": (1, False),
    "max_request_size": (1, False),
    "max_queue_size": (1, False),
    "max_connections": (1, False),
    "max_download_bytes": (1, False),
    "max_loaded_models": (1, False),
    "max_loaded_bytes": (1, False),
    "default_workers_per_model": (0, False),
    "max_queue_time": (0, False),
    "drain_seconds": (0, False),
    "inline_predict_ms": (0, False),
    "poll_wait_seconds": (0, False),
    "model_config_file_poll_wait_seconds": (0, False),
    "file_system_poll_wait_seconds": (0, False),
    "keep_alive_seconds": (0, True),
    "body_timeout_seconds": (0, True),
    "gil_switch_interval_ms": (0, True),
    "download_timeout": (0, True),
}


class PayloadLogging(BaseModel):
    """Payload logging of a model (``payload_logging`` in its settings) or of
    every model (the server's ``payload_logging``): each sampled inference as
    a pair of CloudEvents in KServe's logger format (:mod:`servekit.payloads`).
    The sink's own options (rotation, queue, batch, timeout) are the first
    naming model's; models naming the same sink share it."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    sink: str = Field(validation_alias=AliasChoices("sink", "url"))  # KServe's logger calls it url
    mode: Literal["all", "request", "response"] = "all"
    sample_rate: float = Field(1.0, ge=0.0, le=1.0)
    # file sinks: a file grows to max_bytes, then is renamed NAME.1 (… NAME.max_files, then gone)
    max_bytes: int = Field(100 * 1024 * 1024, ge=1024, le=1 << 40)
    max_files: int = Field(5, ge=0, le=1000)
    # HTTP sinks: one binary-mode event per POST (KServe's), or batches as application/cloudevents-batch+json
    format: Literal["binary", "batch"] = "binary"
    batch_size: int = Field(64, ge=1, le=10_000)
    timeout: float = Field(5.0, gt=0.0, le=300.0)  # seconds per HTTP exchange
    # every sink: events waiting (beyond either bound an inference's events are dropped and counted)
    queue_size: int = Field(10_000, ge=2, le=1_000_000)
    queue_bytes: int = Field(64 * 1024 * 1024, ge=1024, le=1 << 36)
    flush_seconds: float = Field(0.1, ge=0.0, le=60.0)  # how long a part batch waits for more
    # CloudEvents attributes: ce-source (default http://HOST:HTTP_PORT/), ce-namespace, ce-component
    source: str | None = Field(None, max_length=512)
    namespace: str = Field("", max_length=253)
    component: str = Field("predictor", max_length=253)

    @field_validator("sink")
    @classmethod
    def _a_sink(cls, value: str) -> str:
        check_sink(value)
        return value


def check_sink(url: str) -> None:
    """A payload sink's URL is ``file:///ABSOLUTE/PATH`` or ``http(s)://HOST[:PORT]/PATH``;
    ValueError saying what it is not."""
    if len(url) > 2048 or not url.isprintable() or any(c.isspace() for c in url):
        raise ValueError("a sink is a URL of at most 2048 printable characters without spaces")
    parts = urlsplit(url)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/") or parts.path.endswith("/"):
            raise ValueError(f"{url!r}: a file sink names a file by its absolute path (file:///var/log/payloads.jsonl)")
        return
    if parts.scheme in ("http", "https"):
        try:
            port = parts.port
        except ValueError:
            port = -1
        if not parts.hostname or port == -1 or port == 0:
            raise ValueError(f"{url!r}: an HTTP sink needs a host (and a port from 1 to 65535 if given)")
        return
    raise ValueError(f"{url!r}: a sink is file:///PATH (JSON lines) or http(s)://HOST:PORT/PATH (CloudEvents)")


def _payload_logging(value: Any) -> Any:
    """A sink URL alone, or a JSON object (from a flag or a variable), as settings."""
    if isinstance(value, str):
        text = value.strip()
        if not text.startswith("{"):
            return {"sink": text}
        try:
            return json.loads(text)
        except ValueError as exc:
            raise ValueError(f"payload_logging is not JSON: {exc}") from None
    return value


class ServerSettings(BaseModel):
    """Everything about the server process, independent of any model."""

    model_config = ConfigDict(extra="ignore", validate_assignment=True, protected_namespaces=())

    host: str = Field("127.0.0.1", description="address every listener binds (0.0.0.0 for all interfaces)")
    http_port: int = Field(
        8080,
        description=(
            "main HTTP port: V2 REST (/v2/…), /predict, Seldon (/api/v1.0/…) and TorchServe's inference "
            "API (/ping, /predictions)"
        ),
    )
    enable_http: bool = Field(
        True,
        description=(
            "serve the main HTTP port (http_port); in TF Serving mode only when http_port is given, "
            "as tensorflow_model_server binds only --port and --rest_api_port"
        ),
    )
    grpc_port: int = Field(8081, description="V2 gRPC port (tritonclient.grpc, KServe)")
    metrics_port: int = Field(8082, description="Prometheus metrics port (metrics_endpoint on it)")
    rest_api_port: int | None = Field(None, description="TF Serving's REST API port (/v1/models/…)")
    debug: bool = Field(False, description="debug logging; errors at startup print their traceback")
    parallel_workers: int | None = Field(
        None,
        description=(
            "worker processes sharing the ports. Models given at startup load once "
            "before the workers fork, except TensorFlow/onnxruntime models, which each worker loads "
            "(memory times workers)"
        ),
    )
    threads_per_worker: int | None = Field(None, description="OpenMP/BLAS/torch threads per worker")
    model_repository_root: str = Field(".", description="the model repository folder (the FOLDER argument sets it)")
    load_models_at_startup: bool = Field(
        True,
        description=(
            "load every model found at startup (else each on its first inference request, or a repository "
            "load call)"
        ),
    )
    # a budget turns on lazy loading (servekit.residency): models load on their first request
    max_loaded_models: int | None = Field(
        None,
        description=(
            "models each worker keeps loaded at most; past it the least recently used idle one is unloaded "
            "(it loads again on its next request). Setting it loads models on their first request"
        ),
    )
    max_loaded_bytes: int | None = Field(
        None,
        description=(
            "bytes of models each worker keeps loaded at most, estimated from their files' sizes "
            "(512MB, 2GiB or a number); past it the least recently used idle model is unloaded"
        ),
    )
    root_model_name: str | None = Field(
        None,
        description=(
            "name of the model whose files lie directly in the repository folder (KServe's /mnt/models); "
            "default: INFERENCE_SERVICE_NAME or MLSERVER_MODEL_NAME, which KServe sets, else the folder's name"
        ),
    )
    max_request_size: int = Field(
        512 * 1024 * 1024,
        description=(
            "largest request body in bytes (also after gzip/deflate); larger: 413"
        ),
    )
    max_queue_size: int = Field(
        1024,
        description=(
            "requests queued per model before 503 (a model-settings.json may set its own)"
        ),
    )
    max_queue_time: float = Field(
        30.0,
        description=(
            "seconds a request may wait in a model's queue before 503 (it never runs); 0: no limit"
        ),
    )
    drain_seconds: float = Field(
        30.0,
        description=(
            "on SIGTERM, seconds for requests in flight to finish (new ones get 503)"
        ),
    )
    # a request whose client closes its side of the connection while it waits in a model's queue is dropped
    abort_on_close: bool = Field(
        True,
        description=(
            "drop a request still waiting in a model's queue when its client closes the connection"
        ),
    )
    keep_alive_seconds: float = Field(
        30.0,
        description=(
            "an idle connection, or an incomplete request head, closes after this many seconds"
        ),
    )
    body_timeout_seconds: float = Field(
        30.0,
        description=(
            "a request body with no byte for this long (or under 4 KiB/s) gets 408"
        ),
    )
    max_connections: int = Field(4096, description="open connections per worker; more are answered 503 and closed")
    inline_predict_ms: float = Field(
        0.1,
        description=(
            "models whose calls take less than this run on the event loop (no thread hand-off); 0: "
            "never"
        ),
    )
    gil_switch_interval_ms: float = Field(0.25, description="the workers' sys.setswitchinterval, in milliseconds")
    # Linux's scheduler preempts a busy thread only at its tick (4 ms at HZ=250): a
    # client or sidecar woken by an answer on a core a worker keeps busy waits for it
    yield_after_answer: bool = Field(
        True,
        description=(
            "after each HTTP answer a worker offers its core to a thread waiting for it (sched_yield), "
            "so that a client or sidecar on the same cores reads the answer before the scheduler's next tick "
            "(servekit's HTTP server; not the uvicorn one)"
        ),
    )
    http_server: Literal["servekit", "uvicorn"] = Field(
        "servekit",
        description=(
            "HTTP/1.1 implementation: servekit's own or uvicorn"
        ),
    )
    access_log: bool = Field(False, description="log one line per request")
    log_format: Literal["text", "json"] = Field(
        "text",
        description="log lines as text or as JSON objects (one a line); each carries the request id",
    )
    otel_exporter_otlp_endpoint: str | None = Field(
        None,
        description=(
            "trace every request with OpenTelemetry and export the spans with OTLP/HTTP to this URL "
            "(http://collector:4318; /v1/traces is added). OTEL_EXPORTER_OTLP_ENDPOINT does the same. "
            "Needs the tracing extra: pip install 'servekit[tracing]'"
        ),
    )
    payload_logging: PayloadLogging | None = Field(
        None,
        description=(
            "log every model's requests and responses as KServe logger CloudEvents to this sink: "
            "file:///PATH.jsonl or http://HOST:PORT/PATH, or a JSON object of options "
            '({"sink": …, "mode": "all", "sample_rate": 0.1}); a model\'s own payload_logging wins, '
            "false turns it off for that model"
        ),
    )
    enable_grpc: bool = Field(True, description="serve V2 gRPC on grpc_port")
    enable_metrics_endpoint: bool = Field(True, description="serve Prometheus metrics on metrics_port")
    enable_dashboard: bool = Field(
        True, description="serve the dashboard on http_port: /ui, and / for browsers (read-only without management_token)"
    )
    metrics_endpoint: str = Field("/metrics", description="path of the metrics endpoint")
    default_model: str | None = Field(
        None,
        description=(
            "the model POST /predict and Seldon's /api/v1.0/predictions use when several are served"
        ),
    )
    poll_wait_seconds: float = Field(
        0.0,
        description=(
            "re-read the model repository every this many seconds (new, changed and removed models); 0: "
            "never"
        ),
    )
    management_token: str | None = Field(
        None,
        description=(
            "bearer token required by calls that change what is served (repository load/unload, "
            "TorchServe management, TF Serving reload); none: not required, except in TorchServe mode, "
            "which makes one"
        ),
    )
    server_name: str = Field("servekit", description="name in V2 server metadata (GET /v2)")
    # TorchServe's settings (also from ``--ts-config`` config.properties); setting
    # model_store, load_models or ts_config turns on TorchServe mode: management API
    # on management_port (127.0.0.1 unless management_host says otherwise) and V2
    # gRPC moved to 7070 unless grpc_port is set
    model_store: str | None = Field(None, description="TorchServe model store folder (turns on TorchServe mode)")
    load_models: str | None = Field(
        None,
        description=(
            "TorchServe archives to load at startup: 'all' or comma-separated [NAME=]ARCHIVE.mar (also "
            "--models)"
        ),
    )
    ts_config: str | None = Field(None, description="TorchServe's config.properties to read")
    management_port: int = Field(8081, description="TorchServe management API port (TorchServe mode only)")
    management_host: str = Field(
        "127.0.0.1",
        description=(
            "address of the TorchServe management API (loopback by default)"
        ),
    )
    allowed_urls: str | None = Field(
        None,
        description=(
            "comma-separated regexes of URLs TorchServe registration may download from; none: no URL"
        ),
    )
    download_timeout: float = Field(
        600.0,
        description=(
            "seconds for the whole download of an archive registered from a URL"
        ),
    )
    max_download_bytes: int = Field(4 * 1024**3, description="largest archive a registration downloads, in bytes")
    disable_token_auth: bool = Field(False, description="TorchServe mode: do not require the management token")
    default_workers_per_model: int = Field(
        1,
        description=(
            "TorchServe's per-model worker count reported by describe (0 stops serving the model); not "
            "processes"
        ),
    )
    pid_file: str | None = Field(None, description="pid file of a server started in the background with --start")
    # TensorFlow Serving's flags (``--model_name=… --model_base_path=…`` or
    # ``--model_config_file=…``); setting either turns on TF Serving mode
    model_name: str | None = Field(
        None,
        description=(
            "TF Serving: name of the model at model_base_path (turns on TF Serving mode)"
        ),
    )
    model_base_path: str | None = Field(
        None,
        description=(
            "TF Serving: folder whose numbered subfolders are the model's versions"
        ),
    )
    model_config_file: str | None = Field(
        None,
        description=(
            "TF Serving: model_config_list file (text proto, YAML or JSON) naming several models"
        ),
    )
    model_config_file_poll_wait_seconds: float = Field(
        0.0,
        description=(
            "TF Serving: re-read model_config_file every this many seconds; 0: read it once"
        ),
    )
    file_system_poll_wait_seconds: float = Field(
        1.0,
        description=(
            "TF Serving: look for new version folders under base paths every this many seconds"
        ),
    )
    allow_version_labels_for_unavailable_models: bool = Field(
        False,
        description=(
            "TF Serving: allow a label to point at a version not loaded yet"
        ),
    )
    port: int | None = Field(None, description="TF Serving's gRPC API port (PredictionService, ModelService)")
    rest_api_timeout_in_ms: int | None = Field(
        None,
        description=(
            "TF Serving: deadline of a REST call in milliseconds (an X-Request-Timeout header wins); "
            "none or 0: no deadline"
        ),
    )
    grpc_socket_path: str | None = Field(
        None, description="TF Serving: also serve its gRPC API on this unix socket"
    )
    grpc_channel_arguments: str | None = Field(
        None,
        description=(
            "TF Serving: gRPC server arguments, comma-separated key=value "
            "(grpc.max_connection_age_ms=2000,…)"
        ),
    )
    monitoring_config_file: str | None = Field(
        None,
        description=(
            "TF Serving: MonitoringConfig file; prometheus_config {enable: true, path: …} serves "
            "Prometheus metrics at that path on rest_api_port"
        ),
    )
    enable_batching: bool = Field(
        False,
        description=(
            "TF Serving: read batching_parameters_file (servekit batches adaptively either way)"
        ),
    )
    batching_parameters_file: str | None = Field(
        None,
        description=(
            "TF Serving: BatchingParameters file; max_batch_size and batch_timeout_micros set "
            "the models' max_batch_size and max_batch_time"
        ),
    )
    enable_serialization_as_tensor_content: bool = Field(
        False,
        description="TF Serving: gRPC replies carry numbers in tensor_content instead of float_val …",
    )
    tensorflow_intra_op_parallelism: int | None = Field(
        None, description="TF Serving: threads of one TensorFlow op (default: the worker's share of cores)"
    )
    tensorflow_inter_op_parallelism: int | None = Field(
        None, description="TF Serving: TensorFlow ops run at once (default: 2 at most)"
    )
    lenient: bool = Field(
        False,
        description=(
            "start despite broken or misspelt settings files and missing model files (warnings instead "
            "of errors; the broken models are not served)"
        ),
    )
    # TLS (uvicorn's names): with a certificate, every HTTP and gRPC port serves TLS
    # (or only those ssl_ports names); ssl_ca_certs makes clients present a certificate it signed
    ssl_certfile: str | None = Field(
        None,
        description=(
            "PEM certificate chain (may also hold the key); set: the ports serve TLS"
        ),
    )
    ssl_keyfile: str | None = Field(None, description="PEM private key, unencrypted")
    ssl_ca_certs: str | None = Field(
        None,
        description=(
            "PEM CA bundle; set: clients must present a certificate it signed"
        ),
    )
    ssl_ports: str | None = Field(
        None,
        description=(
            "comma-separated port settings that serve TLS (http_port,grpc_port,…); none: all of them"
        ),
    )

    @field_validator("payload_logging", mode="before")
    @classmethod
    def _payload_logging(cls, value: Any) -> Any:
        return _payload_logging(value)

    @field_validator("ssl_ports")
    @classmethod
    def _port_settings(cls, value: str | None) -> str | None:
        if value is None:
            return value
        names = [name.strip() for name in value.split(",") if name.strip()]
        unknown = [name for name in names if name not in TLS_PORT_SETTINGS]
        if unknown:
            raise ValueError(f"{', '.join(unknown)}: not a port setting (one of {', '.join(TLS_PORT_SETTINGS)})")
        return ",".join(names)

    @field_validator(*_AT_LEAST)
    @classmethod
    def _at_least(cls, value: float | None, info: ValidationInfo) -> float | None:
        low, strict = _AT_LEAST[info.field_name or ""]
        if value is not None and (value <= low if strict else value < low):
            raise ValueError(f"{value} is too small: it must be {'more than' if strict else 'at least'} {low}")
        return value

    @field_validator("max_loaded_bytes", mode="before")
    @classmethod
    def _a_size(cls, value: Any) -> Any:
        return parse_size(value) if isinstance(value, str) else value

    @field_validator("metrics_endpoint")
    @classmethod
    def _a_path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"{value!r} is not a path: it starts with '/' (/metrics)")
        return value

    @field_validator("http_port", "grpc_port", "metrics_port", "rest_api_port", "management_port", "port")
    @classmethod
    def _a_port(cls, value: int | None) -> int | None:
        if value is not None and not 0 <= value <= 65535:
            raise ValueError(f"{value} is not a TCP port (0 to 65535)")
        return value

    def merged(self, overrides: dict[str, Any]) -> ServerSettings:
        data = self.model_dump()
        data.update({k: v for k, v in overrides.items() if v is not None})
        return ServerSettings.model_validate(data)


_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2, "mib": 1024**2,
               "g": 1000**3, "gb": 1000**3, "gib": 1024**3, "t": 1000**4, "tb": 1000**4, "tib": 1024**4}


def parse_size(text: str) -> int:
    """``512MB``, ``2GiB``, ``1.5g`` or ``1048576`` in bytes; ValueError saying what is expected."""
    raw = text.strip().replace("_", "").lower()[:32]
    digits = raw.rstrip("abcdefghijklmnopqrstuvwxyz ")
    unit = raw[len(digits):].strip()
    try:
        number = float(digits)
    except ValueError:
        number = -1.0
    if unit not in _SIZE_UNITS or not 0 < number < 1e18:
        raise ValueError(f"{text[:32]!r} is not a size: a number of bytes, or with a unit (512MB, 2GiB)")
    return int(number * _SIZE_UNITS[unit])


# Variables that KServe sets in a predictor's container, or that its runtimes pass (MLServer's
# names for settings servekit shares), read below settings.json and SERVEKIT_*: the servekit
# image also starts as KServe's own kserve-mlserver runtime starts MLServer
FOREIGN_ENV: dict[str, str] = {
    "MLSERVER_HOST": "host",
    "MLSERVER_HTTP_PORT": "http_port",
    "MLSERVER_GRPC_PORT": "grpc_port",
    "MLSERVER_METRICS_PORT": "metrics_port",
    "MLSERVER_PARALLEL_WORKERS": "parallel_workers",
    "MLSERVER_DEBUG": "debug",
    "MLSERVER_LOAD_MODELS_AT_STARTUP": "load_models_at_startup",
    "MLSERVER_SERVER_NAME": "server_name",
    "MLSERVER_METRICS_ENDPOINT": "metrics_endpoint",
    "INFERENCE_SERVICE_NAME": "root_model_name",
    "MLSERVER_MODEL_NAME": "root_model_name",  # the later entry wins
}


def foreign_env(environ: dict[str, str] | None = None) -> dict[str, tuple[str, str]]:
    """Settings from :data:`FOREIGN_ENV`'s variables: name -> (variable, value)."""
    environ = dict(os.environ) if environ is None else environ
    return {name: (variable, environ[variable]) for variable, name in FOREIGN_ENV.items() if variable in environ}


def env_overrides(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """``SERVEKIT_<FIELD>`` variables as settings (``SERVEKIT_HTTP_PORT=9000``)."""
    environ = dict(os.environ) if environ is None else environ
    out: dict[str, Any] = {}
    for name in ServerSettings.model_fields:
        value = environ.get(ENV_PREFIX + name.upper())
        if value is not None:
            out[name] = value
    return out


# MLServer's server settings that servekit reads but does not act on: a
# settings.json written for MLServer still starts (with a warning naming them)
MLSERVER_SETTINGS_NOT_USED = frozenset({
    "cache_enabled", "cache_size", "cors_settings", "environments_dir", "extensions",
    "grpc_max_message_length", "grpc_workers", "gzip_enabled", "kafka_enabled", "kafka_servers",
    "kafka_topic_input", "kafka_topic_output", "logging_settings", "metrics_dir",
    "metrics_rest_server_prefix", "model_repository_implementation",
    "model_repository_implementation_args", "parallel_workers_timeout", "root_path",
    "server_version", "tracing_server", "use_structured_logging",
})


def load_server_settings(
    root: str | Path | None,
    cli_overrides: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> ServerSettings:
    """The server settings: defaults < KServe's and MLServer's variables
    (:data:`FOREIGN_ENV`) < ``settings.json`` in ``root`` < ``SERVEKIT_*`` < flags. A key of settings.json that is no setting is an
    error naming the file and key (a warning with ``lenient``)."""
    data: dict[str, Any] = {}
    origin: dict[str, str] = {}  # where each value came from, for error messages
    unknown: list[str] = []
    path: Path | None = None
    if root is not None:
        path = Path(root) / "settings.json"
        if path.is_file():
            from_file = _read_json(path)
            unknown = [k for k in from_file if k not in ServerSettings.model_fields]
            data.update({k: v for k, v in from_file.items() if k in ServerSettings.model_fields})
            origin.update({k: f"{path} {k!r}" for k in data})
        data["model_repository_root"] = str(root)
    for name, (variable, value) in foreign_env(environ).items():
        if name not in origin:  # settings.json said nothing about it
            data[name], origin[name] = value, variable
    from_env = env_overrides(environ)
    data.update(from_env)
    origin.update({k: f"{ENV_PREFIX}{k.upper()}" for k in from_env})
    flags = {k: v for k, v in (cli_overrides or {}).items() if v is not None}
    data.update(flags)
    origin.update({k: f"--{k.replace('_', '-')}" for k in flags})
    try:
        settings = ServerSettings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"invalid server settings: {_describe(exc, origin)}") from None
    if unknown and path is not None:
        _unknown_keys(path, unknown, settings.lenient)
    return settings


def _unknown_keys(path: Path, keys: list[str], lenient: bool) -> None:
    ignored = [k for k in keys if k in MLSERVER_SETTINGS_NOT_USED]
    if ignored:
        log.warning("%s: MLServer's %s ignored: servekit does not use %s", path,
                    ", ".join(repr(k) for k in ignored), "it" if len(ignored) == 1 else "them")
    unknown = [k for k in keys if k not in MLSERVER_SETTINGS_NOT_USED]
    if not unknown:
        return
    described = "; ".join(
        f"{k!r} is no server setting{did_you_mean(k, ServerSettings.model_fields)}" for k in unknown
    )
    if not lenient:
        raise ConfigError(f"{path}: {described} (`servekit serve --help` lists them; --lenient ignores it)")
    log.warning("%s: %s; ignored (--lenient)", path, described)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'http_port'?)`` for a near miss, else ``""``."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.7)
    return f" (did you mean {close[0]!r}?)" if close else ""


class ModelParameters(BaseModel):
    model_config = ConfigDict(extra="allow")

    uri: str | None = None
    version: str | None = None
    format: str | None = None
    content_type: str | None = None
    # the model's own environment (servekit.envs): true (the model folder's requirements.txt,
    # python_env.yaml or conda.yaml) or the name of one such file in the model's folder
    environment: bool | str | None = None
    extra: dict[str, Any] = Field(default_factory=dict)


class VersionPolicy(BaseModel):
    """TF Serving's model_version_policy: latest (num_versions), all, or specific.

    Also accepts TF Serving's own spelling (``{"specific": {"versions": [1, 2]}}``,
    ``{"all": {}}``, ``{"latest": {"num_versions": 2}}``) and a bare ``"all"``.
    """

    kind: Literal["latest", "all", "specific"] = "latest"
    num_versions: int = Field(default=1, ge=1)
    versions: list[int] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _tf_serving_form(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"kind": data}
        if isinstance(data, dict) and "kind" not in data and len(data) == 1:
            ((kind, body),) = data.items()
            if kind in ("latest", "all", "specific"):
                return {"kind": kind, **(body or {})}
        return data


# bounds of a traffic split (percent per version; every client value is checked)
MAX_TRAFFIC_VERSIONS = 16
MAX_VERSION_LENGTH = 128


def _percent(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where} must be a number from 0 to 100 (a percent), not {type(value).__name__}")
    percent = float(value)
    if not 0.0 <= percent <= 100.0:  # NaN fails too
        raise ValueError(f"{where} is {value}: it must be from 0 to 100 (a percent)")
    return percent


def _a_version(value: Any, where: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value or len(value) > MAX_VERSION_LENGTH or not value.isprintable():
        shown = repr(value)[:40] if isinstance(value, str) else type(value).__name__
        raise ValueError(f"{where} {shown} is not a version (1 to {MAX_VERSION_LENGTH} printable characters)")
    return value


def check_traffic(value: Any) -> dict[str, float]:
    """A traffic split: version -> percent (0 to 100 each, at most 100 in all,
    at most :data:`MAX_TRAFFIC_VERSIONS` versions); ValueError saying what is wrong."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError('traffic must be an object of version -> percent ({"2": 10})')
    if len(value) > MAX_TRAFFIC_VERSIONS:
        raise ValueError(f"traffic names {len(value)} versions; at most {MAX_TRAFFIC_VERSIONS}")
    out = {_a_version(k, "traffic version"): _percent(v, f"traffic of version {k!r}"[:80]) for k, v in value.items()}
    total = sum(out.values())
    if total > 100.0 + 1e-9:
        raise ValueError(f"traffic adds up to {total:g} %; the shares must add up to at most 100 "
                         "(the rest goes to the default version)")
    return out


class ShadowSettings(BaseModel):
    """A version that answers ``percent`` of a model's unpinned calls on the
    side: its answers are compared with the served ones, never returned."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str
    percent: float = 100.0

    @field_validator("version", mode="before")
    @classmethod
    def _version(cls, value: Any) -> str:
        return _a_version(value, "shadow version")

    @field_validator("percent", mode="before")
    @classmethod
    def _share(cls, value: Any) -> float:
        return _percent(value, "shadow percent")


_NO_ROUTING: dict[str, Any] = {"traffic": {}, "shadow": None}


class ModelSettings(BaseModel):
    """One model version: MLServer's ``model-settings.json`` plus servekit's fields."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, protected_namespaces=())

    name: str
    implementation: str | None = None
    platform: str = ""
    versions: list[str] = Field(default_factory=list)
    parameters: ModelParameters = Field(default_factory=ModelParameters)
    inputs: list[dict[str, Any]] = Field(default_factory=list)
    outputs: list[dict[str, Any]] = Field(default_factory=list)
    max_batch_size: int = 0  # rows; 0 = no limit beyond the queue
    max_batch_time: float = 0.0  # seconds to wait for more requests (MLServer's meaning)
    adaptive_batching: bool = True
    max_queue_size: int | None = None
    max_queue_time: float | None = None  # seconds; None: the server's max_queue_time
    version_policy: VersionPolicy | None = None
    version_labels: dict[str, str] = Field(default_factory=dict)  # label -> version
    graph: dict[str, Any] | None = None  # an inference graph's nodes (implementation "graph")
    # replicas under a distributed engine (servekit serve --engine ray): parallel_workers is the
    # replica count (MLServer's key; 0 means 1); min/max_replicas or target_ongoing_requests
    # turn on autoscaling (servekit.ray.options). One servekit server ignores them.
    parallel_workers: int | None = Field(default=None, ge=0)
    min_replicas: int | None = Field(default=None, ge=0)
    max_replicas: int | None = Field(default=None, ge=1)
    target_ongoing_requests: float | None = Field(default=None, gt=0)
    # canary and shadow (servekit.traffic): percent of the calls naming no version and no
    # label that go to other versions ({"2": 10}), and a version that answers a share of
    # them on the side, never returned. Model-wide; changing them reloads nothing.
    traffic: dict[str, float] = Field(default_factory=dict)
    shadow: ShadowSettings | None = None
    # payload logging (servekit.payloads): its own sink and sampling, or false to stay out of
    # the server's payload_logging; none: the server's
    payload_logging: PayloadLogging | Literal[False] | None = None
    source_dir: str = ""  # folder of the settings file; relative URIs resolve against it

    @field_validator("traffic", mode="before")
    @classmethod
    def _a_split(cls, value: Any) -> Any:
        return check_traffic(value)

    def same_model(self, other: ModelSettings) -> bool:
        """Whether ``other`` loads the same thing (traffic and shadow aside)."""
        if self.traffic == other.traffic and self.shadow == other.shadow:
            return self == other
        return self.model_copy(update=_NO_ROUTING) == other.model_copy(update=_NO_ROUTING)

    @field_validator("version_labels", mode="before")
    @classmethod
    def _labels_as_strings(cls, value: Any) -> Any:
        # TF Serving writes label values as integers
        if isinstance(value, dict):
            return {str(k): str(v) for k, v in value.items()}
        return value

    @property
    def version(self) -> str | None:
        return self.parameters.version

    def resolved_uri(self) -> Path | None:
        uri = self.parameters.uri
        if uri is None:
            return Path(self.source_dir) if self.source_dir else None
        if uri.startswith(("runs:/", "models:/")):
            return None  # an MLflow tracking server's run or registered model, not a path
        if uri.startswith("file://"):
            uri = uri[len("file://") :]
        path = Path(uri)
        if not path.is_absolute() and self.source_dir:
            path = Path(self.source_dir) / path
        return path


# MLServer's model settings that servekit accepts without acting on them
MLSERVER_MODEL_KEYS_NOT_USED = frozenset({"warm_workers", "cache_enabled"})
MLSERVER_PARAMETERS_NOT_USED = frozenset({
    "environment_tarball", "environment_path", "autogenerate_inference_pool_gid", "inference_pool_gid",
})
MODEL_KEYS = frozenset(ModelSettings.model_fields) - {"source_dir"} | MLSERVER_MODEL_KEYS_NOT_USED
PARAMETER_KEYS = frozenset(ModelParameters.model_fields) | MLSERVER_PARAMETERS_NOT_USED


def unknown_model_keys(data: dict[str, Any]) -> list[str]:
    """Keys of a ``model-settings.json`` that are no model setting, each with a
    "did you mean" for a near miss (``'max_batch_sise' (did you mean …?)``)."""
    out = [f"{k!r}{did_you_mean(k, MODEL_KEYS)}" for k in data if k not in MODEL_KEYS]
    parameters = data.get("parameters")
    if isinstance(parameters, dict):
        out.extend(
            f"'parameters.{k}'{did_you_mean(k, PARAMETER_KEYS)}" for k in parameters if k not in PARAMETER_KEYS
        )
    return out


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON file holding an object; :class:`ConfigError` naming the file otherwise."""
    return _read_json(path)


def load_model_settings(path: Path, default_name: str | None = None) -> ModelSettings:
    """A ``model-settings.json``; a model it does not name is named ``default_name``,
    else after its folder."""
    data = _read_json(path)
    data.setdefault("name", default_name or path.parent.name)
    data["source_dir"] = str(path.parent.resolve())
    params = data.get("parameters") or {}
    if isinstance(params, dict) and params.get("version") is not None:
        params["version"] = str(params["version"])
    try:
        return ModelSettings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_describe(exc)}") from None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object at the top level")
    return data


def _describe(exc: ValidationError, origin: dict[str, str] | None = None) -> str:
    """Each error as ``where: what`` (``--http-port 99999: 99999 is not a TCP
    port …``), ``where`` being the flag, variable or file key when known."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "settings"
        if origin and err["loc"] and str(err["loc"][0]) in origin:
            where = origin[str(err["loc"][0])] + "".join(f" {p}" for p in err["loc"][1:])
        message = str(err["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {message}")
    return "; ".join(parts)
