"""TorchServe's model store: the archives loaded at startup (``--models`` /
``load_models``) and those registered through the management API, as desired
state for the registry, with the worker count and batching of each.

Registration is safe by default: a location must be a file directly in the
model store, unless it matches one of the ``allowed_urls`` patterns; ``..``,
absolute paths and ``file://`` outside the store are refused before any
pattern is consulted. A download follows a redirect only to a URL the
patterns allow too, and is bounded in time (``SERVEKIT_DOWNLOAD_TIMEOUT``
seconds for the whole transfer, 600 by default) and size
(``SERVEKIT_MAX_DOWNLOAD_BYTES``, 4 GiB). Resolving and downloading block:
the management API runs them in a thread.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import re
import shutil
import socket
import ssl
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from servekit.archive.reader import is_archive, open_archive
from servekit.config import ModelParameters, ModelSettings, ServerSettings
from servekit.errors import ConfigError, Forbidden, InvalidInput, ModelNotFound, ServekitError
from servekit.observability.tracing import outgoing_headers
from servekit.repository.discovery import public_reason
from servekit.repository.sources import ModelSources

log = logging.getLogger("servekit.archive")

DEFAULT_VERSION = "1.0"
MAX_DOWNLOAD_BYTES = 4 * 1024**3
DOWNLOAD_TIMEOUT = 600.0  # seconds for a whole download


@dataclass
class ModelOptions:
    """What TorchServe keeps per registered model version."""

    url: str
    workers: int = 1
    batch_size: int = 1
    max_batch_delay_ms: int = 100
    handler: str | None = None
    loaded_at_startup: bool = False


Stamp = tuple[int, int]


@dataclass
class ModelStore:
    root: Path | None
    allowed_urls: list[re.Pattern[str]] = field(default_factory=list)
    startup: list[tuple[str | None, str]] = field(default_factory=list)
    default_workers: int = 1
    # (name, version) -> its settings / options; the desired state
    models: dict[tuple[str, str], ModelSettings] = field(default_factory=dict)
    options: dict[tuple[str, str], ModelOptions] = field(default_factory=dict)
    # name -> its default version, where one was chosen (registration, set-default)
    defaults: dict[str, str] = field(default_factory=dict)
    loaded_startup: bool = False
    # archives named at startup that could not be added (missing, not an archive), with why
    startup_failures: dict[str, str] = field(default_factory=dict)
    # the stamp of the last TorchServe change applied to each part of the state
    # (see protocols.torchserve_changes): a change relayed late leaves that part alone
    stamps: dict[tuple[str, str, str], Stamp] = field(default_factory=dict)
    download_timeout: float = DOWNLOAD_TIMEOUT
    max_download_bytes: int = MAX_DOWNLOAD_BYTES

    @classmethod
    def from_settings(cls, settings: ServerSettings) -> ModelStore:
        root = Path(settings.model_store).resolve() if settings.model_store else None
        patterns = []
        for pattern in split_list(settings.allowed_urls):
            try:
                patterns.append(re.compile(pattern))
            except re.error as exc:
                raise ConfigError(f"allowed_urls pattern {pattern!r} is not a valid regex: {exc}") from None
        startup = [parse_model_spec(s) for s in split_list(settings.load_models)]
        return cls(root, patterns, startup, max(0, settings.default_workers_per_model),
                   download_timeout=_positive(settings.download_timeout, "download_timeout"),
                   max_download_bytes=int(_positive(settings.max_download_bytes, "max_download_bytes")))

    # -- desired state ------------------------------------------------------
    def desired(self) -> list[ModelSettings]:
        """A ``ModelSources`` provider: the startup models, then the registered ones."""
        if not self.loaded_startup:
            self.loaded_startup = True
            for name, location in self.startup_entries():
                try:
                    path = self.startup_path(location)
                    self.add(path, name, ModelOptions(url=location, workers=self.default_workers,
                                                      loaded_at_startup=True))
                except (ConfigError, InvalidInput, ModelNotFound) as exc:
                    log.error("Cannot load %s: %s", location, exc.message)
                    self.startup_failures[name or location] = public_reason(exc.message, [self.root])
        return [effective(settings, self.option(*key)) for key, settings in self.models.items()]

    def startup_entries(self) -> list[tuple[str | None, str]]:
        entries: list[tuple[str | None, str]] = []
        for name, location in self.startup:
            if location == "all" and name is None:
                if self.root is None:
                    raise ConfigError("load_models=all needs a model store (--model-store)")
                entries.extend((None, p.name) for p in sorted(self.root.iterdir()) if is_archive(p))
            else:
                entries.append((name, location))
        return entries

    def startup_path(self, location: str) -> Path:
        """Models named at startup are the operator's choice: a path as given, or
        a file in the model store."""
        if location.startswith(("http://", "https://")):
            return self.fetch(location)
        path = Path(location[len("file://"):] if location.startswith("file://") else location)
        if not path.is_absolute() and self.root is not None and (self.root / path).exists():
            path = self.root / path
        if not path.exists():
            where = f" or in the model store {self.root}" if self.root else ""
            raise ModelNotFound(f"model archive {location} not found (as a path{where})")
        return path

    def add(self, path: Path, name: str | None, options: ModelOptions) -> ModelSettings:
        """Settings for the archive at ``path``; remembered as desired."""
        return self.keep(settings_for(path, name, options), options)

    def keep(self, settings: ModelSettings, options: ModelOptions) -> ModelSettings:
        """Remember settings already made from an archive (by this process or a
        sibling worker) as desired, without opening the archive again."""
        key = (settings.name, settings.parameters.version or "")
        self.models[key] = settings
        self.options[key] = options
        return settings

    def remove(self, name: str, version: str) -> None:
        self.models.pop((name, version), None)
        self.options.pop((name, version), None)
        if self.defaults.get(name) == version:
            del self.defaults[name]

    def option(self, name: str, version: str) -> ModelOptions:
        return self.options.setdefault((name, version), ModelOptions(url="", workers=self.default_workers))

    # -- registration -------------------------------------------------------
    def resolve(self, url: str) -> Path:
        """The local archive for a registration ``url``, refusing anything the
        configuration does not allow."""
        url = url.strip()
        if not url:
            raise InvalidInput("Parameter url is required.")
        if url.startswith(("http://", "https://")):
            self.check_allowed(url)
            return self.fetch(url, reuse=False)
        if url.startswith("file://") or url.startswith("/") or "\\" in url:
            path = Path(urllib.parse.unquote(url[len("file://"):] if url.startswith("file://") else url))
            if any(part == ".." for part in path.parts):
                raise Forbidden(f"url {url!r} contains '..'; give the archive's file name in the model store")
            self.check_allowed("file://" + str(path.resolve()))
            if not path.exists():
                raise ModelNotFound(f"model archive {path} does not exist")
            return path
        if self.root is None:
            raise InvalidInput("this server has no model store (start it with --model-store DIR)")
        parts = Path(urllib.parse.unquote(url)).parts
        if len(parts) != 1 or parts[0] in ("..", "."):
            raise Forbidden(
                f"url {url!r} must be the name of an archive directly in the model store "
                f"{self.root} (no folders, no '..')"
            )
        path = self.root / parts[0]
        if path.resolve().parent != self.root:
            raise Forbidden(f"url {url!r} points outside the model store")
        if not path.exists():
            raise ModelNotFound(f"Model archive {parts[0]} not found in the model store {self.root}")
        return path

    def check_allowed(self, url: str) -> None:
        parsed = urllib.parse.urlsplit(url)
        segments = urllib.parse.unquote(parsed.path).split("/")
        if ".." in segments or "@" in parsed.netloc:
            raise Forbidden(f"url {url!r} contains '..' or credentials; refused")
        if not any(p.fullmatch(url) for p in self.allowed_urls):
            hint = ", ".join(p.pattern for p in self.allowed_urls) or "none configured"
            raise Forbidden(
                f"url {url!r} does not match any allowed_urls pattern ({hint}); add a pattern "
                "to allowed_urls in the --ts-config file, or copy the archive into the model store"
            )

    def fetch(self, url: str, *, reuse: bool = True) -> Path:
        """Download an allowed URL into the model store (or reuse it).

        Blocking: call it from a thread, not the event loop. Every redirect
        hop and the final URL must match ``allowed_urls`` too; the download
        is bounded in time (``download_timeout``, over the whole transfer, so
        a server dripping bytes cannot hold it) and in size."""
        if self.root is None:
            raise InvalidInput("downloading archives needs a model store (--model-store DIR)")
        name = Path(urllib.parse.urlsplit(url).path).name
        if not name or name.startswith(".") or not is_archive(Path(name)):
            raise InvalidInput(f"url {url!r} does not end in an archive name (.mar, .tar.gz)")
        target = self.root / name
        if target.exists():
            if not reuse:  # TorchServe's answer: the store already holds an archive of that name
                raise ServekitError(
                    f"Model file already exists {name}: the model store holds an archive of that name; "
                    "register it by its name, or remove it from the store to download it again"
                )
            return target
        deadline = _Deadline(self.download_timeout)
        opener = urllib.request.build_opener(
            _CheckedRedirects(self), _HTTPHandler(deadline), _HTTPSHandler(deadline)
        )
        # the request id and trace of the registration that asked for it
        opener.addheaders = [*opener.addheaders, *outgoing_headers()]
        fd, partial_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=self.root)
        partial = Path(partial_name)
        try:
            with deadline, os.fdopen(fd, "wb") as out, opener.open(url, timeout=60) as response:
                final = response.geturl()
                if final != url:
                    self.check_allowed(final)
                declared = response.headers.get("Content-Length")
                length = int(declared) if declared and declared.isdigit() else None
                if length is not None and length > self.max_download_bytes:
                    raise InvalidInput(f"{url} is larger than {self.max_download_bytes} bytes; refused")
                copied = 0
                while chunk := response.read1(1 << 16):
                    copied += len(chunk)
                    if copied > self.max_download_bytes:
                        raise InvalidInput(f"{url} is larger than {self.max_download_bytes} bytes; refused")
                    out.write(chunk)
                if deadline.expired:
                    raise TimeoutError(url)
                if length is not None and copied != length:
                    raise http.client.IncompleteRead(b"", length - copied)
            shutil.move(partial, target)
        except (OSError, http.client.HTTPException) as exc:
            if deadline.expired:
                raise InvalidInput(_too_slow(url, self.download_timeout)) from None
            raise InvalidInput(f"cannot download {url}: {_reason(exc)}") from None
        finally:
            partial.unlink(missing_ok=True)
        return target


class _Deadline:
    """The whole download's time limit: when it passes, the connections it
    tracks are shut down, which ends any read blocked on them (a server
    dripping a byte at a time never trips a per-read timeout)."""

    def __init__(self, seconds: float) -> None:
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()

    def track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            expired = self.expired
        if expired:
            _shut(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shut(sock)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: _Deadline) -> None:
        super().__init__()
        self.deadline = deadline

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        deadline = self.deadline

        class Connection(http.client.HTTPConnection):
            def connect(self) -> None:
                super().connect()
                deadline.track(self.sock)

        return self.do_open(Connection, req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: _Deadline) -> None:
        self.context = ssl.create_default_context()
        super().__init__(context=self.context)
        self.deadline = deadline

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        deadline = self.deadline

        class Connection(http.client.HTTPSConnection):
            def connect(self) -> None:
                super().connect()
                deadline.track(self.sock)

        return self.do_open(Connection, req, context=self.context)


class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to a URL ``allowed_urls`` allows (checked before
    it is requested), and at most a few times."""

    max_redirections = 5

    def __init__(self, store: ModelStore) -> None:
        self.store = store

    def redirect_request(self, req: urllib.request.Request, fp: Any, code: int, msg: str,
                         headers: Any, newurl: str) -> urllib.request.Request | None:
        absolute = urllib.parse.urljoin(req.full_url, newurl)
        try:
            self.store.check_allowed(absolute)
        except Forbidden as exc:
            fp.close()
            raise Forbidden(f"{req.full_url} redirects to a URL that is not allowed: {exc.message}") from None
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _too_slow(url: str, seconds: float) -> str:
    return (f"downloading {url} took longer than {seconds:g} s; refused (servekit bounds a download's "
            "time: download_timeout / SERVEKIT_DOWNLOAD_TIMEOUT)")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    if isinstance(exc, http.client.IncompleteRead):
        return "the server closed the connection before the whole archive arrived"
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return str(exc) or type(exc).__name__


# requests run in one thread hand-off when a model's batch size is 1
QUEUED_HANDOFF = 32


def settings_for(path: Path, name: str | None, options: ModelOptions) -> ModelSettings:
    folder, manifest = open_archive(path)
    extra: dict[str, object] = {"archive": str(path)}
    if options.handler:
        extra["handler"] = options.handler
    batch_size = max(1, options.batch_size)
    extra["batch_size"] = batch_size  # the most requests one handle() call gets, as in TorchServe
    return ModelSettings(
        name=name or manifest.model_name,
        implementation="torchserve",
        parameters=ModelParameters(uri=str(folder), version=manifest.version or DEFAULT_VERSION, extra=extra),
        # batch size 1 never waits, but requests that queued while the handler was busy
        # are handed to its thread together (one hand-off, not one each) and the
        # runtime still calls handle() once per request
        max_batch_size=batch_size if batch_size > 1 else QUEUED_HANDOFF,
        max_batch_time=options.max_batch_delay_ms / 1000 if batch_size > 1 else 0.0,
        source_dir=str(folder),
    )


NO_WORKERS = "servekit.torch_handler.runtime.NoWorkers"


def effective(settings: ModelSettings, options: ModelOptions) -> ModelSettings:
    """What the registry loads for a registered version: the archive's handler
    when it has workers, else a stand-in that imports nothing (TorchServe starts
    a model's handler only with its first worker, so a model registered with no
    workers registers even if its handler would fail)."""
    if options.workers > 0:
        return settings
    extra = {**settings.parameters.extra, "handler_implementation": settings.implementation}
    parameters = settings.parameters.model_copy(update={"extra": extra})
    return settings.model_copy(update={"implementation": NO_WORKERS, "parameters": parameters})


def is_stand_in(settings: ModelSettings) -> bool:
    return settings.implementation == NO_WORKERS


def parse_model_spec(spec: str) -> tuple[str | None, str]:
    """``name=location`` or ``location``."""
    name, sep, location = spec.partition("=")
    if sep and name and "/" not in name and "://" not in name:
        return name.strip(), location.strip()
    return None, spec.strip()


def _positive(value: float, key: str) -> float:
    if not value > 0:
        raise ConfigError(f"{key}={value!r} must be a positive number")
    return value


def split_list(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def model_store(sources: ModelSources) -> ModelStore:
    """The model store of the server these sources belong to (TorchServe's front
    keeps it with them), made from their settings on first use; made before
    the workers fork, so each starts from the same desired state."""
    store = sources.fronts.get(FRONT)
    if not isinstance(store, ModelStore):
        store = sources.fronts[FRONT] = ModelStore.from_settings(sources.settings)
    return store


FRONT = "torchserve"  # the store's key in ModelSources.fronts
