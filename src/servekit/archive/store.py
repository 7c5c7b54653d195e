"""TorchServe's model store: the archives loaded at startup (``--models`` /
``load_models``) and those registered through the management API, as desired
state for the registry, with the worker count and batching of each.

Registration is safe by default: a location must be a file directly in the
model store, unless it matches one of the ``allowed_urls`` patterns; ``..``,
absolute paths and ``file://`` outside the store are refused before any
pattern is consulted.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from servekit.archive.reader import is_archive, open_archive
from servekit.config import ModelParameters, ModelSettings, ServerSettings
from servekit.errors import ConfigError, Forbidden, InvalidInput, ModelNotFound
from servekit.repository.sources import ModelSources

log = logging.getLogger("servekit.archive")

DEFAULT_VERSION = "1.0"
MAX_DOWNLOAD_BYTES = 4 * 1024**3


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
    # the stamp of the last TorchServe change applied to each part of the state
    # (see protocols.torchserve_changes): a change relayed late leaves that part alone
    stamps: dict[tuple[str, str, str], Stamp] = field(default_factory=dict)

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
        return cls(root, patterns, startup, max(0, settings.default_workers_per_model))

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
        return list(self.models.values())

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
            return self.fetch(url)
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

    def fetch(self, url: str) -> Path:
        """Download an allowed URL into the model store (or reuse it)."""
        if self.root is None:
            raise InvalidInput("downloading archives needs a model store (--model-store DIR)")
        name = Path(urllib.parse.urlsplit(url).path).name
        if not name or name.startswith(".") or not is_archive(Path(name)):
            raise InvalidInput(f"url {url!r} does not end in an archive name (.mar, .tar.gz)")
        target = self.root / name
        if target.exists():
            return target
        partial = target.with_name(f".{name}.{os.getpid()}.part")
        try:
            with urllib.request.urlopen(url, timeout=60) as response, partial.open("wb") as out:
                copied = 0
                while chunk := response.read(1 << 20):
                    copied += len(chunk)
                    if copied > MAX_DOWNLOAD_BYTES:
                        raise InvalidInput(f"{url} is larger than {MAX_DOWNLOAD_BYTES} bytes")
                    out.write(chunk)
            shutil.move(partial, target)
        except OSError as exc:
            raise InvalidInput(f"cannot download {url}: {exc}") from None
        finally:
            partial.unlink(missing_ok=True)
        return target


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


def parse_model_spec(spec: str) -> tuple[str | None, str]:
    """``name=location`` or ``location``."""
    name, sep, location = spec.partition("=")
    if sep and name and "/" not in name and "://" not in name:
        return name.strip(), location.strip()
    return None, spec.strip()


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
