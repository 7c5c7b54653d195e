"""Asset specifications: ``category/name:1.2[sub/path]``.

The name may contain slashes; the version is ``major.minor`` (``1`` means the
latest ``1.x``; no version means the latest); the bracketed part selects a
file inside a folder asset. A spec that starts with ``/``, ``./``, ``../`` or
``~`` is a local path used as is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from servekit.errors import ConfigError

_SPEC = re.compile(
    r"^(?P<name>[A-Za-z0-9_\-][A-Za-z0-9_.\-]*(?:/[A-Za-z0-9_\-][A-Za-z0-9_.\-]*)*)"
    r"(?::(?P<version>[0-9]+(?:\.[0-9]+)?))?"
    r"(?:\[(?P<sub>[^\[\]]+)\])?$"
)
VERSION = re.compile(r"^[0-9]+\.[0-9]+$")


@dataclass(frozen=True, slots=True)
class AssetSpec:
    name: str
    version: str | None = None
    sub_path: str | None = None

    @classmethod
    def parse(cls, spec: str) -> AssetSpec:
        found = _SPEC.match(spec.strip())
        if found is None:
            raise ConfigError(
                f"invalid asset spec {spec!r}; expected 'category/name', 'category/name:1.2' "
                "or 'category/name:1.2[sub/path]'"
            )
        sub = found["sub"]
        if sub is not None and (sub.startswith("/") or ".." in sub.split("/")):
            raise ConfigError(f"asset sub-path {sub!r} must stay inside the asset")
        if ".." in found["name"].split("/"):
            raise ConfigError(f"asset name {found['name']!r} must not contain '..'")
        return cls(found["name"], found["version"], sub)

    @property
    def exact(self) -> bool:
        return self.version is not None and VERSION.match(self.version) is not None

    def __str__(self) -> str:
        out = self.name
        if self.version:
            out += f":{self.version}"
        if self.sub_path:
            out += f"[{self.sub_path}]"
        return out


def is_local_path(spec: str) -> bool:
    return spec.startswith(("/", "./", "../", "~"))


def version_key(version: str) -> tuple[int, int]:
    major, _, minor = version.partition(".")
    return int(major), int(minor or 0)


def resolve_version(requested: str | None, available: list[str], name: str) -> str:
    """The newest of ``available`` matching ``requested`` (``None``, ``1`` or ``1.2``)."""
    versions = sorted((v for v in available if VERSION.match(v)), key=version_key)
    if requested is not None:
        if VERSION.match(requested):
            matching = [v for v in versions if v == requested]
        else:
            matching = [v for v in versions if v.split(".")[0] == requested]
    else:
        matching = versions
    if not matching:
        shown = ", ".join(versions) or "none"
        wanted = f"version {requested}" if requested else "any version"
        raise ConfigError(f"asset {name!r} has no {wanted} (versions: {shown})")
    return matching[-1]


def next_version(available: list[str], bump_major: bool = False) -> str:
    """The version a push without one gets: next minor (or major) after the newest."""
    versions = sorted((v for v in available if VERSION.match(v)), key=version_key)
    if not versions:
        return "0.0"
    major, minor = version_key(versions[-1])
    return f"{major + 1}.0" if bump_major else f"{major}.{minor + 1}"
