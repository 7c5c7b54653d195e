"""Models described the TensorFlow Serving way: ``--model_name`` with
``--model_base_path``, ``--model_config_file`` (re-read every
``--model_config_file_poll_wait_seconds``), or the docker image's
``MODEL_NAME`` / ``MODEL_BASE_PATH`` variables (a model at ``/models/<name>/1``).
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from servekit.config import ModelSettings, ServerSettings
from servekit.errors import ConfigError
from servekit.fronts.tfserving import flags
from servekit.fronts.tfserving.model_config import ModelConfigEntry, read_model_config
from servekit.repository.base_path import VersionWatcher, versioned_settings
from servekit.repository.sources import ModelSources
from servekit.repository.version_policy import describe

log = logging.getLogger("servekit.repository")

DEFAULT_REST_API_PORT = 8501
DEFAULT_GRPC_PORT = 8500  # tensorflow_model_server --port
DEFAULT_MODEL_NAME = "default"  # tensorflow_model_server's default --model_name
DOCKER_MODEL_BASE_PATH = "/models"  # the tensorflow/serving image's MODEL_BASE_PATH


class TFServingSource:
    """Desired model versions and labels from TF Serving's flags or config file.

    A config file that fails to parse after an edit keeps the last good models
    and labels, and logs why; at startup it is an error.
    """

    def __init__(
        self,
        watcher: VersionWatcher,
        *,
        config_file: Path | None = None,
        entries: list[ModelConfigEntry] | None = None,
        config_poll_seconds: float = 0.0,
    ) -> None:
        self.watcher = watcher
        self.config_file = config_file
        self.config_poll_seconds = config_poll_seconds
        self._text: str | None = None
        self._read_at = time.monotonic()
        self._missing: set[Path] = set()
        self.batching: dict[str, Any] = {}  # ModelSettings fields from --batching_parameters_file
        if config_file is not None:
            self._text = _read(config_file)
            self.entries = read_model_config(config_file)
        else:
            self.entries = list(entries or [])
        for entry in self.entries:
            log.info(
                "Model %r: base path %s, version policy %s%s",
                entry.name, entry.base_path, describe(entry.policy),
                f", labels {entry.labels}" if entry.labels else "",
            )

    def refresh(self) -> None:
        """Re-read the config file when its poll interval has passed and it changed."""
        if self.config_file is None or self.config_poll_seconds <= 0:
            return
        now = time.monotonic()
        if now - self._read_at < self.config_poll_seconds:
            return
        self._read_at = now
        try:
            text = _read(self.config_file)
        except ConfigError as exc:
            log.error("Keeping the current models: %s", exc.message)
            return
        if text == self._text:
            return
        self._text = text
        try:
            entries = read_model_config(self.config_file)
        except ConfigError as exc:
            log.error("Model config file has an error; keeping the current models: %s", exc.message)
            return
        log.info(
            "Model config file %s changed: serving %s",
            self.config_file, ", ".join(e.name for e in entries) or "no models",
        )
        self.entries = entries

    def replace(self, entries: list[ModelConfigEntry]) -> None:
        """Serve these models instead (a config sent through the gRPC API); a
        config file is re-read only once it changes again."""
        log.info("Model config replaced: serving %s", ", ".join(e.name for e in entries) or "no models")
        self.entries = list(entries)

    @property
    def folder(self) -> Path:
        """Where relative base paths resolve: the config file's folder, else the working directory."""
        return self.config_file.parent if self.config_file is not None else Path.cwd()

    def desired(self) -> list[ModelSettings]:
        self.refresh()
        out: list[ModelSettings] = []
        for entry in self.entries:
            if not entry.base_path.is_dir():
                if entry.base_path not in self._missing:
                    self._missing.add(entry.base_path)
                    log.warning(
                        "No versions of model %r found: base path %s does not exist (yet)",
                        entry.name, entry.base_path,
                    )
                continue
            self._missing.discard(entry.base_path)
            found = versioned_settings(entry.name, entry.base_path, entry.policy, self.watcher)
            out.extend(s.model_copy(update=self.batching) if self.batching else s for s in found)
        return out

    def labels(self) -> dict[str, dict[str, str]]:
        return {entry.name: dict(entry.labels) for entry in self.entries}


FRONT = "tfserving"  # its key in ModelSources.fronts


def read_batching_parameters(path: Path) -> dict[str, Any]:
    """TF Serving's BatchingParameters text file as servekit's batching settings:
    ``max_batch_size`` (rows), ``batch_timeout_micros`` (max_batch_time, the
    time a batch waits to fill) and ``max_enqueued_batches`` (times
    max_batch_size: the model's queue). servekit batches adaptively, so
    ``num_batch_threads``, ``allowed_batch_sizes`` and padding have no use here."""
    values: dict[str, int] = {}
    for name, value in _BATCHING_FIELD.findall(_read(path)):
        values[name] = int(value)
    out: dict[str, Any] = {}
    if values.get("max_batch_size"):
        out["max_batch_size"] = values["max_batch_size"]
    if "batch_timeout_micros" in values:
        out["max_batch_time"] = values["batch_timeout_micros"] / 1e6
    if values.get("max_enqueued_batches") and values.get("max_batch_size"):
        out["max_queue_size"] = min(values["max_enqueued_batches"] * values["max_batch_size"], MAX_QUEUE)
    log.info("Batching parameters from %s: %s", path,
             ", ".join(f"{k}={v}" for k, v in out.items()) or "none that servekit uses")
    return out


# ``name { value: 128 }`` and ``name: 128`` in a BatchingParameters text proto
_BATCHING_FIELD = re.compile(r"\b(\w+)\s*(?::\s*|\{\s*value\s*:\s*)(\d+)")
MAX_QUEUE = 1_000_000


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read model config file {path}: {exc}") from None


def configure_tfserving(
    settings: ServerSettings, sources: ModelSources, environ: Mapping[str, str] | None = None,
    *, strict_env: bool = False,
) -> bool:
    """Add the TF Serving source if its flags (or docker variables) are given.

    Returns whether TF Serving mode is on; then the REST API port defaults to
    8501 and the gRPC port (``--port``) to 8500. With ``strict_env`` (nothing
    else says what to serve), ``MODEL_NAME`` whose folder is not under
    ``MODEL_BASE_PATH`` (default ``/models``) is an error, not a silent fallback.
    """
    environ = os.environ if environ is None else environ
    name, base = settings.model_name, settings.model_base_path
    config_file = settings.model_config_file
    if config_file is None and name is None and base is None and environ.get("MODEL_NAME"):
        base_path = environ.get("MODEL_BASE_PATH")
        candidate = Path(base_path or DOCKER_MODEL_BASE_PATH) / environ["MODEL_NAME"]
        if candidate.is_dir():
            name, base = environ["MODEL_NAME"], str(candidate)
        elif strict_env:
            where = f"MODEL_BASE_PATH={base_path}" if base_path else f"the default MODEL_BASE_PATH {DOCKER_MODEL_BASE_PATH}"
            raise ConfigError(
                f"MODEL_NAME={environ['MODEL_NAME']} is set but {candidate} does not exist (under {where}); "
                "set MODEL_BASE_PATH to the folder that holds that model's folder of versions, "
                "or unset MODEL_NAME to serve a model repository"
            )
        else:
            log.warning("MODEL_NAME=%s ignored: %s does not exist", environ["MODEL_NAME"], candidate)
    if config_file is None and name is None and base is None:
        return False
    if config_file is not None and base is not None:
        raise ConfigError("give either --model_config_file or --model_base_path, not both")
    if config_file is None and base is None:
        raise ConfigError(f"--model_name={name} needs --model_base_path (the folder of its versions)")
    if config_file is not None:
        source = TFServingSource(
            sources.watcher,
            config_file=Path(config_file).resolve(),
            config_poll_seconds=settings.model_config_file_poll_wait_seconds,
        )
        sources.poll_seconds.append(settings.model_config_file_poll_wait_seconds)
        if settings.model_config_file_poll_wait_seconds > 0:
            log.info("Model config file %s: read again every %g s (model_config_file_poll_wait_seconds)",
                     source.config_file, settings.model_config_file_poll_wait_seconds)
    else:
        assert base is not None
        entry = ModelConfigEntry(name=name or DEFAULT_MODEL_NAME, base_path=Path(base).resolve())
        source = TFServingSource(sources.watcher, entries=[entry])
    check_flags(settings)
    if settings.enable_batching and settings.batching_parameters_file:
        source.batching = read_batching_parameters(Path(settings.batching_parameters_file))
    _attach(sources, source)
    sources.poll_seconds.append(settings.file_system_poll_wait_seconds)
    tfserving_ports(settings)
    return True


def check_flags(settings: ServerSettings) -> None:
    """TF Serving's files and lists that are read in each worker, read once at
    startup so that a mistake stops it with a message."""
    flags.channel_arguments(settings.grpc_channel_arguments)
    flags.monitoring_path(settings)
    for name in ("tensorflow_intra_op_parallelism", "tensorflow_inter_op_parallelism"):
        value = getattr(settings, name)
        if value:  # the TensorFlow runtime reads them in the workers
            os.environ[f"SERVEKIT_TF_{name.removeprefix('tensorflow_').upper()}"] = str(value)


def tfserving_ports(settings: ServerSettings) -> None:
    """TF Serving mode's ports: REST on 8501 and gRPC on 8500 unless given, and
    only those, as ``tensorflow_model_server`` binds: servekit's main HTTP, V2
    gRPC and metrics ports stay off unless a flag, variable or settings.json
    names them (or turns them on)."""
    if settings.rest_api_port is None:
        settings.rest_api_port = DEFAULT_REST_API_PORT
    if settings.port is None:
        settings.port = DEFAULT_GRPC_PORT
    given = set(settings.model_fields_set)
    for switch, port in (("enable_http", "http_port"), ("enable_grpc", "grpc_port"),
                         ("enable_metrics_endpoint", "metrics_port")):
        if not given & {switch, port}:
            setattr(settings, switch, False)


def _attach(sources: ModelSources, source: TFServingSource) -> None:
    sources.add(source.desired)
    sources.add_labels(source.labels)
    sources.fronts[FRONT] = source


def tfserving_source(sources: ModelSources) -> TFServingSource:
    """The TF Serving source of ``sources``; one without models is added when
    the server was started without TF Serving's flags."""
    if FRONT not in sources.fronts:
        _attach(sources, TFServingSource(sources.watcher, entries=[]))
    source: TFServingSource = sources.fronts[FRONT]
    return source
