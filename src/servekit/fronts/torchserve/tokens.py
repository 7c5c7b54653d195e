"""TorchServe's token authorization: ``key_file.json`` with three keys, as
TorchServe writes it::

    {"management": {"key": "…", "expiration time": "2026-12-01T11:30:00.123456Z"},
     "inference": {"key": "…", "expiration time": "…"},
     "API": {"key": "…"}}

- the management key guards the management API (and every call that changes
  what is served, on any port: :mod:`servekit.server.auth`);
- the inference key guards ``/predictions`` when inference tokens are on
  (see :func:`inference_enforced`);
- the API key guards ``GET /token?type=management|inference`` on the
  management port, which replaces that key (and its expiry) in the file.

Keys are sent as ``Authorization: Bearer <key>``. The management and inference
keys expire ``token_expiration_min`` minutes (config.properties; 60 by
default) after they were made. The file is the one truth every worker
process reads (re-read when it changes), so a key replaced through any worker
is in force in all of them at once. It is readable by its owner only.
"""

from __future__ import annotations

import datetime as dt
import hmac
import json
import os
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from servekit.errors import InvalidInput, Unauthorized

KEY_FILE = "key_file.json"
DEFAULT_EXPIRATION_MIN = 60.0
KINDS = ("management", "inference")
FAILED = "Token Authorization failed. Token either incorrect, expired, or not provided correctly"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _instant(when: dt.datetime) -> str:
    """Java's ``Instant.toString()``: ``2026-12-01T11:30:00.123456Z``."""
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class KeyFile:
    path: Path
    expiration_min: float = DEFAULT_EXPIRATION_MIN
    enforce_inference: bool = False

    def __post_init__(self) -> None:
        self._cache: tuple[tuple[int, int], dict[str, Any]] | None = None
        self._lock = threading.Lock()

    # -- writing --------------------------------------------------------------
    def create(self) -> dict[str, Any]:
        """A new file with three new keys."""
        expires = _instant(_now() + dt.timedelta(minutes=self.expiration_min))
        document = {kind: {"key": _key(), "expiration time": expires} for kind in KINDS}
        document["API"] = {"key": _key()}
        self._write(document)
        return document

    def regenerate(self, kind: str) -> None:
        """Replace the management or inference key (and its expiry)."""
        if kind not in KINDS:
            raise InvalidInput(f"type must be management or inference, got {kind[:32]!r}")
        with self._lock:
            document = self.read()
            document[kind] = {"key": _key(),
                              "expiration time": _instant(_now() + dt.timedelta(minutes=self.expiration_min))}
            self._write(document)

    def _write(self, document: dict[str, Any]) -> None:
        partial = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(document, fh, indent=2)
        os.replace(partial, self.path)  # readers see the old file or the new one, never half of one

    # -- reading --------------------------------------------------------------
    def read(self) -> dict[str, Any]:
        try:
            info = self.path.stat()
            stamp = (info.st_mtime_ns, info.st_ino)
            if self._cache is not None and self._cache[0] == stamp:
                return self._cache[1]
            document = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(document, dict):
            return {}
        self._cache = (stamp, document)
        return document

    def valid(self, kind: str, authorization: str | None) -> bool:
        """Whether ``Authorization: Bearer <key>`` carries the current, unexpired key of ``kind``."""
        scheme, _, token = (authorization or "").strip().partition(" ")
        token = token.strip()
        entry = self.read().get(kind)
        if scheme.lower() != "bearer" or not token or not isinstance(entry, dict):
            return False
        key = str(entry.get("key") or "")
        if not key or not hmac.compare_digest(token.encode(), key.encode()):
            return False
        expires = entry.get("expiration time")
        if expires is None:
            return True
        try:
            return _now() < dt.datetime.fromisoformat(str(expires).replace("Z", "+00:00"))
        except ValueError:
            return False

    def require(self, kind: str, authorization: str | None) -> None:
        if not self.valid(kind, authorization):
            raise Unauthorized(f"{FAILED}: send 'Authorization: Bearer <key>' with the {kind} key of {self.path}")


def _key() -> str:
    return secrets.token_urlsafe(18)


# the key file of this server, made at start before the workers fork (None: no token auth)
ACTIVE: KeyFile | None = None


def activate(path: Path, expiration_min: float, enforce_inference: bool) -> KeyFile:
    global ACTIVE
    ACTIVE = KeyFile(path, expiration_min, enforce_inference)
    ACTIVE.create()
    return ACTIVE


def inference_enforced() -> KeyFile | None:
    return ACTIVE if ACTIVE is not None and ACTIVE.enforce_inference else None


def management_key_valid(authorization: str | None) -> bool:
    return ACTIVE is not None and ACTIVE.valid("management", authorization)


__all__ = ["ACTIVE", "FAILED", "KEY_FILE", "KeyFile", "activate", "inference_enforced", "management_key_valid"]
