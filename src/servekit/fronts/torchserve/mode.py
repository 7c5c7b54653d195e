"""TorchServe mode of ``servekit serve``: its flags (``--model-store``,
``--models``, ``--ts-config``, ``--start``/``--stop``, ``--ncs``), its
``config.properties`` file, its ports, the management token, and running in
the background with a pid file.

``servekit --start …`` / ``servekit --stop`` are accepted as typed for
``torchserve``. In TorchServe mode the management API takes port 8081, so V2
gRPC moves to TorchServe's gRPC inference port 7070 unless ``grpc_port`` is set.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

from servekit.config import ENV_PREFIX, ServerSettings
from servekit.errors import ConfigError

log = logging.getLogger("servekit.torchserve")

TORCHSERVE_GRPC_PORT = 7070
KEY_FILE = "key_file.json"
READY_MARK = "servekit ready"


# -- argv and flags ---------------------------------------------------------------
def torchserve_argv(argv: list[str]) -> list[str]:
    """``servekit --start …`` → ``serve --start …``; ``servekit --stop`` → ``stop``."""
    if not argv or not argv[0].startswith("--") or argv[0] in ("--version", "--help", "-h"):
        return argv
    if "--stop" in argv:
        return ["stop", *[a for a in argv if a != "--stop"]]
    return ["serve", *argv]


def add_flags(group: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """torchserve's own flags (``--models``, ``--start`` …) in ``group``."""
    group.add_argument("--models", nargs="+", default=None, metavar="[NAME=]ARCHIVE",
                       help="archives to load, as for torchserve (or 'all')")
    group.add_argument("--start", action="store_true", help="start in the background (see `servekit stop`)")
    group.add_argument("--foreground", action="store_true", help="with --start: stay in the foreground")
    group.add_argument("--ncs", "--no-config-snapshots", dest="ncs", action="store_true",
                       help="accepted for TorchServe; servekit never writes config snapshots")


# -- settings ---------------------------------------------------------------------
def parse_properties(text: str) -> dict[str, str]:
    """Java ``.properties``: ``key=value`` or ``key: value``, ``#``/``!`` comments,
    ``\\`` line continuations."""
    out: dict[str, str] = {}
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if not line or line[0] in "#!":
            continue
        if line.endswith("\\") and not line.endswith("\\\\"):
            pending = line[:-1]
            continue
        positions = [i for i in (line.find("="), line.find(":")) if i > 0]
        if not positions:
            out[line] = ""
            continue
        split = min(positions)
        out[line[:split].strip()] = line[split + 1 :].strip()
    return out


def _address(value: str, key: str) -> tuple[str, int, bool]:
    """HOST, PORT and whether the address is ``https://``."""
    parsed = urllib.parse.urlsplit(value if "://" in value else f"http://{value}")
    if parsed.scheme not in ("http", "https") or parsed.port is None:
        raise ConfigError(f"{key}={value}: expected http(s)://HOST:PORT")
    return parsed.hostname or "127.0.0.1", parsed.port, parsed.scheme == "https"


def properties_to_settings(props: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    secure: list[str] = []  # the port settings TorchServe would serve with TLS
    for key, host_setting, port_setting in (
        ("inference_address", "host", "http_port"),
        ("management_address", "management_host", "management_port"),
        ("metrics_address", None, "metrics_port"),
    ):
        if key in props:
            host, out[port_setting], tls = _address(props[key], key)
            if host_setting is not None:
                out[host_setting] = host
            if tls:
                secure.append(port_setting)
    if props.get("enable_grpc_ssl", "").lower() == "true":
        secure.append("grpc_port")
    out.update(_tls_properties(props, secure))
    if "grpc_inference_port" in props:
        out["grpc_port"] = int(props["grpc_inference_port"])
    for key in ("model_store", "load_models", "allowed_urls", "default_workers_per_model"):
        if props.get(key):
            out[key] = props[key]
    if "disable_token_authorization" in props:
        out["disable_token_auth"] = props["disable_token_authorization"].lower() == "true"
    if "max_request_size" in props:
        out["max_request_size"] = int(props["max_request_size"])
    ignored = sorted(set(props) - KNOWN_PROPERTIES)
    if ignored:
        log.info("config.properties keys servekit does not use: %s", ", ".join(ignored))
    return out


KNOWN_PROPERTIES = {
    "inference_address", "management_address", "metrics_address", "grpc_inference_port",
    "model_store", "load_models", "allowed_urls", "default_workers_per_model",
    "disable_token_authorization", "max_request_size",
    "private_key_file", "certificate_file", "enable_grpc_ssl", "keystore", "keystore_pass", "keystore_type",
    "token_expiration_min",
}


def _tls_properties(props: dict[str, str], secure: list[str]) -> dict[str, Any]:
    """TorchServe's TLS: ``https://`` addresses (and ``enable_grpc_ssl=true``)
    with ``private_key_file`` and ``certificate_file``. With neither file,
    TorchServe serves a self-signed certificate; so does servekit
    (:func:`torchserve_settings`). A Java ``keystore`` is not read."""
    key, cert = props.get("private_key_file") or None, props.get("certificate_file") or None
    if not secure:
        if key or cert or props.get("keystore"):
            log.info("config.properties: the key and certificate serve only https:// addresses "
                     "(and gRPC with enable_grpc_ssl=true); none is set, so every port is plain")
        return {}
    if props.get("keystore"):
        if not (key and cert):
            raise ConfigError(
                f"config.properties: keystore={props['keystore']} is a Java key store, which servekit "
                "cannot read; export it as PEM files (openssl pkcs12 -in STORE -nocerts -nodes -out key.pem; "
                "openssl pkcs12 -in STORE -nokeys -out cert.pem) and set private_key_file and certificate_file"
            )
        log.warning("config.properties: keystore is not supported; serving private_key_file and certificate_file")
    if bool(key) != bool(cert):
        missing = "certificate_file" if key else "private_key_file"
        given = "private_key_file" if key else "certificate_file"
        raise ConfigError(
            f"config.properties sets {given} but not {missing}; https:// addresses need both "
            "(or neither, for a self-signed certificate made at start)"
        )
    out: dict[str, Any] = {"ssl_ports": ",".join(secure)}
    if key and cert:
        out.update(ssl_certfile=cert, ssl_keyfile=key)
    return out


def torchserve_settings(settings: ServerSettings, args: argparse.Namespace) -> ServerSettings:
    """Fold ``--models`` and the ``--ts-config`` file into the settings (flags,
    ``SERVEKIT_*`` variables and settings.json win over the file), then TorchServe
    mode's port defaults."""
    explicit = _explicit_fields(args)
    models = getattr(args, "models", None)
    if models:
        settings = settings.merged({"load_models": ",".join(models)})
        explicit.add("load_models")
    config_file = default_config_file(settings, args)
    if config_file is not None:
        settings = settings.merged({"ts_config": str(config_file)})
    if settings.ts_config:
        path = Path(settings.ts_config)
        try:
            props = parse_properties(path.read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read --ts-config {path}: {exc}") from None
        from_file = {k: v for k, v in properties_to_settings(props).items() if k not in explicit}
        settings = settings.merged(from_file)
        explicit.update(from_file)
        if "ssl_ports" in from_file and not settings.ssl_certfile:
            settings = _self_signed(settings, path)
    if not (settings.model_store or settings.load_models or settings.ts_config):
        return settings
    defaults: dict[str, Any] = {}
    if "grpc_port" not in explicit:
        defaults["grpc_port"] = TORCHSERVE_GRPC_PORT
    # parallel_workers keeps its default, one worker process per core: management
    # changes reach every worker (servekit.fronts.torchserve.changes)
    return settings.merged(defaults) if defaults else settings


def _self_signed(settings: ServerSettings, path: Path) -> ServerSettings:
    """TorchServe's answer to ``https://`` with no key or certificate: a
    self-signed certificate, made at start; clients must skip verification."""
    from servekit.server.tls import self_signed

    certfile, keyfile = self_signed([settings.host, settings.management_host])
    log.warning(
        "%s has https:// addresses but no private_key_file and certificate_file: serving a self-signed "
        "certificate made at start (as TorchServe does), which clients do not trust unless told to "
        "(curl -k); set both properties to serve your own",
        path,
    )
    return settings.merged({"ssl_certfile": certfile, "ssl_keyfile": keyfile})


DEFAULT_CONFIG_FILE = "config.properties"


def default_config_file(
    settings: ServerSettings, args: argparse.Namespace, environ: dict[str, str] | None = None
) -> Path | None:
    """The config.properties TorchServe would read when ``--ts-config`` does not
    name one: ``TS_CONFIG_FILE`` (which TorchServe prefers even to
    ``--ts-config``), else ``./config.properties`` when it exists - both only
    when servekit is started the TorchServe way (``--start``, ``--model-store``,
    ``--models``, ``--ncs`` or ``--ts-config``), so a stray file never turns an
    MLServer repository into a TorchServe server."""
    environ = dict(os.environ) if environ is None else environ
    torchserve_way = bool(
        settings.model_store or settings.load_models or settings.ts_config
        or getattr(args, "start", False) or getattr(args, "ncs", False) or getattr(args, "foreground", False)
    )
    if not torchserve_way:
        return None
    if environ.get("TS_CONFIG_FILE"):
        log.info("Reading TorchServe's config from TS_CONFIG_FILE=%s", environ["TS_CONFIG_FILE"])
        return Path(environ["TS_CONFIG_FILE"])
    if settings.ts_config is None and Path(DEFAULT_CONFIG_FILE).is_file():
        log.info("Reading ./%s (no --ts-config given, as TorchServe does)", DEFAULT_CONFIG_FILE)
        return Path(DEFAULT_CONFIG_FILE)
    return None


def _explicit_fields(args: argparse.Namespace) -> set[str]:
    out = {name for name in ServerSettings.model_fields if getattr(args, name, None) is not None}
    out.update(name for name in ServerSettings.model_fields if ENV_PREFIX + name.upper() in os.environ)
    folder = getattr(args, "folder", None)
    settings_file = Path(folder or ".") / "settings.json"
    if settings_file.is_file():
        try:
            data = json.loads(settings_file.read_text())
            out.update(data if isinstance(data, dict) else {})
        except ValueError:
            pass
    return out


def configure_torchserve(settings: ServerSettings, sources: Any) -> bool:
    """Add the model store as a model source and set up the management token.
    Returns whether TorchServe mode is on."""
    from servekit.archive.store import model_store

    if not (settings.model_store or settings.load_models or settings.ts_config):
        return False
    store = model_store(sources)
    sources.add(store.desired)
    if settings.management_token:
        log.info("Management API requires the configured management_token as a bearer token")
    elif settings.disable_token_auth:
        log.warning("Management API token authorization is disabled (--disable-token-auth)")
    else:
        from servekit.fronts.torchserve import tokens
        from servekit.server import auth

        minutes, inference = _token_properties(settings)
        keys = tokens.activate(key_file_path(), minutes, inference)
        settings.management_token = keys.read()["management"]["key"]  # token authorization is on
        auth.key_check = tokens.management_key_valid
        log.info("Token authorization: keys written to %s (send 'Authorization: Bearer <key>'; the management "
                 "key for the management API%s; they expire after %g minutes, GET /token?type=… with the API "
                 "key makes new ones)", keys.path, ", the inference key for predictions" if inference else "",
                 minutes)
    return True


def key_file_path() -> Path:
    """TorchServe's ``key_file.json`` in the working folder (``SERVEKIT_KEY_FILE`` elsewhere)."""
    return Path(os.environ.get("SERVEKIT_KEY_FILE") or Path.cwd() / KEY_FILE)


def _token_properties(settings: ServerSettings) -> tuple[float, bool]:
    """``token_expiration_min`` (minutes, 60 by default) and whether predictions
    need the inference key: when token authorization is switched on explicitly
    (``disable_token_authorization=false`` in config.properties, or
    ``TS_DISABLE_TOKEN_AUTHORIZATION=false``), as TorchServe 0.11+ does. Left at
    its default, only the management API needs a key, so that the curl calls
    of articles written for earlier TorchServe releases keep working."""
    props: dict[str, str] = {}
    if settings.ts_config:
        try:
            props = parse_properties(Path(settings.ts_config).read_text())
        except OSError:
            props = {}
    raw = props.get("token_expiration_min", "").strip()
    try:
        minutes = float(raw) if raw else 60.0
    except ValueError:
        raise ConfigError(f"token_expiration_min={raw!r} must be a number of minutes") from None
    if not 0 < minutes <= 525_600:
        raise ConfigError(f"token_expiration_min={raw!r} must be from 0 to 525600 minutes (a year)")
    explicit = props.get("disable_token_authorization") or os.environ.get("TS_DISABLE_TOKEN_AUTHORIZATION") or ""
    return minutes, explicit.strip().lower() == "false"


# -- background start / stop ------------------------------------------------------
def pid_file(value: str | None = None) -> Path:
    chosen = value or os.environ.get(ENV_PREFIX + "PID_FILE")
    return Path(chosen) if chosen else Path(tempfile.gettempdir()) / f".servekit-{os.getuid()}.pid"


def running_pid(path: Path) -> int | None:
    try:
        pid = int(path.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def wants_background(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "start", False)) and not getattr(args, "foreground", False)


def start_background(args: argparse.Namespace, argv: list[str], timeout: float = 180.0) -> int:
    """Run ``servekit serve`` (these args, minus ``--start``) detached, logging to
    ``logs/servekit.log``, and wait until it is ready or has failed."""
    path = pid_file(getattr(args, "pid_file", None))
    pid = running_pid(path)
    if pid is not None:
        print(f"servekit is already running (pid {pid}); stop it with `servekit --stop`", file=sys.stderr)
        return 1
    log_dir = Path(os.environ.get("LOG_LOCATION") or "logs")
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / "servekit.log"
    child_argv = [a for a in argv if a != "--start"]
    if child_argv and child_argv[0] == "serve":
        child_argv = child_argv[1:]
    with log_path.open("ab") as out:
        offset = out.tell()
        proc = subprocess.Popen(
            [sys.executable, "-m", "servekit", "serve", *child_argv],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    path.write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = _tail(log_path, offset)
        if READY_MARK in text:
            print(text.strip())
            print(f"servekit started in the background (pid {proc.pid}); logs in {log_path}")
            return 0
        if proc.poll() is not None:
            path.unlink(missing_ok=True)
            print(text.strip(), file=sys.stderr)
            print(f"servekit failed to start (exit code {proc.returncode}); see {log_path}", file=sys.stderr)
            return 1
        time.sleep(0.1)
    print(f"servekit (pid {proc.pid}) is still starting; see {log_path}")
    return 0


def _tail(path: Path, offset: int) -> str:
    with path.open("rb") as fh:
        fh.seek(offset)
        return fh.read().decode("utf-8", "replace")


def configure_stop(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pid-file", default=None, help="pid file of the server (default: the one --start wrote)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait before SIGKILL")


def run_stop(args: argparse.Namespace) -> int:
    """``servekit stop`` / ``servekit --stop``: stop the server started with --start."""
    path = pid_file(args.pid_file)
    pid = running_pid(path)
    if pid is None:
        path.unlink(missing_ok=True)
        print("servekit is not currently running.")
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline and running_pid(path) is not None:
        time.sleep(0.1)
    if running_pid(path) is not None:
        os.kill(pid, signal.SIGKILL)
    path.unlink(missing_ok=True)
    print("servekit has stopped.")
    return 0
