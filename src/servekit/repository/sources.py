"""Where the desired state comes from: a list of providers, each returning the
model versions it wants served (repository folders, TF Serving base paths and
config files, model stores …). The registry is moved to their union."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from servekit.config import ModelSettings, ServerSettings
from servekit.errors import ServekitError
from servekit.repository.base_path import VersionWatcher
from servekit.repository.discovery import discover

log = logging.getLogger("servekit.repository")

Provider = Callable[[], list[ModelSettings]]
# model name -> label -> version, for sources whose labels change without a reload
LabelProvider = Callable[[], dict[str, dict[str, str]]]


class ModelSources:
    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.providers: list[Provider] = []
        # names unloaded through an API stay unloaded until loaded again explicitly
        self.unloaded: set[str] = set()
        self.label_providers: list[LabelProvider] = []
        # how often sources want to be re-read (seconds > 0); see repository.reconcile
        self.poll_seconds: list[float] = []
        self.watcher = VersionWatcher()
        # what a front keeps with the sources, by the front's name (its model
        # store, its config): made before the workers fork, so each starts from it
        self.fronts: dict[str, Any] = {}
        # the desired state and labels a sync change carried (see pin())
        self.pinned: tuple[list[ModelSettings], dict[str, dict[str, str]]] | None = None
        self._reported: set[tuple[str, str]] = set()

    def add(self, provider: Provider) -> None:
        self.providers.append(provider)

    def add_repository(self, root: str | Path) -> None:
        self.add(lambda: discover(root, watcher=self.watcher, root_name=self.settings.root_model_name))
        if self.settings.poll_wait_seconds > 0:
            self.poll_seconds.append(self.settings.poll_wait_seconds)

    def add_labels(self, provider: LabelProvider) -> None:
        self.label_providers.append(provider)

    def labels(self, desired: list[ModelSettings]) -> dict[str, dict[str, str]]:
        """Labels per model: the pinned ones, else ``version_labels`` of the
        settings, then label providers."""
        if self.pinned is not None:
            return {name: dict(v) for name, v in self.pinned[1].items()}
        return self.read_labels(desired)

    def read_labels(self, desired: list[ModelSettings]) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        for settings in desired:
            if settings.version_labels:
                out.setdefault(settings.name, {}).update(settings.version_labels)
        for provider in self.label_providers:
            for name, labels in provider().items():
                out.setdefault(name, {}).update(labels)
        return out

    def poll_interval(self) -> float:
        """Seconds between re-reads of the sources; 0 when nothing asks for polling."""
        return min((s for s in self.poll_seconds if s > 0), default=0.0)

    def pin(self, desired: list[ModelSettings], labels: dict[str, dict[str, str]]) -> None:
        """Serve this desired state (what the last ``repository.sync`` change
        carried) instead of reading the providers: with several workers only
        worker 0 reads them, and every worker applies what it read."""
        self.pinned = (list(desired), {name: dict(v) for name, v in labels.items()})

    def unpin(self) -> None:
        """Read the providers again (a source was replaced, e.g. a TF Serving config reload)."""
        self.pinned = None

    def desired(self) -> list[ModelSettings]:
        """The pinned desired state if there is one, else :meth:`read`."""
        if self.pinned is not None:
            return list(self.pinned[0])
        return self.read()

    def read(self) -> list[ModelSettings]:
        """Union of all providers; a provider that fails keeps its error in the log."""
        out: list[ModelSettings] = []
        seen: set[tuple[str, str]] = set()
        for provider in self.providers:
            try:
                found = provider()
            except ServekitError as exc:
                log.error("Model source failed: %s", exc.message)
                raise
            for settings in found:
                key = (settings.name, settings.parameters.version or "")
                if key in seen:
                    self._report(key, "Model %r%s is defined twice; using the first", settings.name,
                                 f" version {key[1]}" if key[1] else " (without a version)")
                    continue
                seen.add(key)
                out.append(settings)
        return self._without_shadowed(out)

    def _without_shadowed(self, found: list[ModelSettings]) -> list[ModelSettings]:
        """A model with numbered versions is not also served without a version:
        the unversioned settings of such a name are left out (and said once)."""
        versioned = {s.name for s in found if s.parameters.version}
        out = []
        for settings in found:
            if settings.name in versioned and not settings.parameters.version:
                self._report(
                    (settings.name, settings.source_dir),
                    "Model %r has numbered versions; not serving its settings without a version (in %s): "
                    "give them a version or remove them", settings.name, settings.source_dir or "?",
                )
                continue
            out.append(settings)
        return out

    def _report(self, key: tuple[str, str], message: str, *args: object) -> None:
        if key not in self._reported:  # once, not at every poll
            self._reported.add(key)
            log.warning(message, *args)

    def wanted(self) -> list[ModelSettings]:
        """The desired state less what was unloaded explicitly."""
        return [s for s in self.desired() if s.name not in self.unloaded]

    async def find(self, name: str) -> list[ModelSettings]:
        """Settings of every version of ``name`` (all models for an empty name)."""
        return [s for s in self.desired() if not name or s.name == name]
