"""What a model asks to have installed, read from its folder and checked.

A model opts in with ``"parameters": {"environment": true}`` (the folder's
``python_env.yaml``, else ``requirements.txt``, else ``conda.yaml``: MLflow's
order) or ``"environment": "<file name>"`` (one of those files, by name, in the
model's folder). Every requirement is a name from the registries pip is
configured for: index and link options, URLs, paths and editable installs are
refused with the line that asked for them, as are files larger than
:data:`MAX_FILE_BYTES` or longer than :data:`MAX_LINES` lines.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from servekit.errors import ModelLoadError

log = logging.getLogger("servekit.envs")

MAX_FILE_BYTES = 64 * 1024
MAX_LINES = 1000
MAX_REQUIREMENTS = 500
MAX_LINE_LENGTH = 1000
MAX_INCLUDE_DEPTH = 3  # -r files naming -r files

#: what ``environment: true`` looks for, in this order (MLflow's preference)
ENVIRONMENT_FILES = ("python_env.yaml", "requirements.txt", "conda.yaml")
_SUFFIXES = (".txt", ".yaml", ".yml")

# a PEP 508 name with optional extras, then version specifiers / markers (pip checks the rest)
_NAME = re.compile(r"^([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)\s*(\[[A-Za-z0-9._,\s-]*\])?(.*)$", re.S)
_REST = re.compile(r"^\s*(?:(?:===|~=|==|!=|<=|>=|<|>)\s*[A-Za-z0-9.*+!_-]+\s*(?:,\s*(?:===|~=|==|!=|<=|>=|<|>)"
                   r"\s*[A-Za-z0-9.*+!_-]+\s*)*)?(?:;[^@]*)?$")
_HASH = re.compile(r"\s--hash[=\s]+(sha256|sha384|sha512):([0-9a-fA-F]+)")
_INCLUDE = re.compile(r"^(-r|--requirement|-c|--constraint)(?:\s+|=)(\S+)$")


@dataclass(frozen=True)
class EnvSpec:
    """A model's requirements, normalised: what the cache key is made of."""

    source: str  # the file it came from (a name in the model's folder)
    requirements: tuple[str, ...]
    constraints: tuple[str, ...] = ()
    python: str | None = None  # the Python version the file names, if any
    ignored: tuple[str, ...] = field(default=(), compare=False)  # conda packages not installed

    def key(self, extra: dict[str, Any] | None = None) -> str:
        """The content hash naming this environment in the cache: the sorted
        requirements and constraints, the running Python and ``extra``."""
        data = {
            "format": 1,
            "requirements": sorted(self.requirements),
            "constraints": sorted(self.constraints),
            "python": f"{sys.implementation.name}-{sys.version_info.major}.{sys.version_info.minor}",
            "abi": sys.abiflags,
            "platform": sys.platform,
            **(extra or {}),
        }
        text = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:20]


def requested(value: Any) -> bool:
    """Whether a model's ``parameters.environment`` asks for an environment."""
    return value is True or (isinstance(value, str) and value.strip().lower() not in ("", "false", "no", "off"))


def read_spec(folder: Path, value: bool | str) -> EnvSpec:
    """The requirements the model in ``folder`` asks for (``value``: its
    ``parameters.environment``); ModelLoadError saying what is wrong."""
    if value is True or (isinstance(value, str) and value.strip().lower() in ("true", "yes", "on", "1")):
        for name in ENVIRONMENT_FILES:
            if (folder / name).is_file():
                return _read(folder, name)
        raise ModelLoadError(
            f"environment: true, but the model's folder has none of {', '.join(ENVIRONMENT_FILES)}"
        )
    assert isinstance(value, str)
    name = value.strip()
    if not _plain_name(name) or not name.endswith(_SUFFIXES):
        raise ModelLoadError(
            f"environment {name[:80]!r} must be true or the name of a requirements.txt, python_env.yaml "
            "or conda.yaml file in the model's folder (no folders)"
        )
    if not (folder / name).is_file():
        raise ModelLoadError(f"environment {name!r}: the model's folder has no such file")
    return _read(folder, name)


def _read(folder: Path, name: str) -> EnvSpec:
    if name.endswith(".txt"):
        reqs: list[str] = []
        cons: list[str] = []
        _requirements_file(folder, name, reqs, cons, depth=0)
        return _spec(name, reqs, cons)
    data = _yaml(folder / name, name)
    deps = data.get("dependencies")
    conda_form = isinstance(deps, list) and any(isinstance(d, dict) for d in deps)
    if conda_form or "channels" in data or name.startswith("conda"):
        return _conda(folder, name, data)
    return _python_env(folder, name, data)


def _python_env(folder: Path, name: str, data: dict[str, Any]) -> EnvSpec:
    """MLflow's ``python_env.yaml``: ``python``, ``build_dependencies`` (pip,
    setuptools, wheel: servekit's installer stands for them), ``dependencies``."""
    deps = data.get("dependencies") or []
    if not isinstance(deps, list):
        raise ModelLoadError(f"{name}: 'dependencies' must be a list of requirements")
    reqs: list[str] = []
    cons: list[str] = []
    for i, line in enumerate(deps):
        _line(folder, str(line), f"{name} dependencies[{i}]", reqs, cons, depth=0)
    python = data.get("python")
    return _spec(name, reqs, cons, python=str(python) if python is not None else None)


def _conda(folder: Path, name: str, data: dict[str, Any]) -> EnvSpec:
    """``conda.yaml``: its ``pip`` section is installed; conda packages other
    than python and pip are not (they are named in a warning)."""
    deps = data.get("dependencies") or []
    if not isinstance(deps, list):
        raise ModelLoadError(f"{name}: 'dependencies' must be a list")
    reqs: list[str] = []
    cons: list[str] = []
    python: str | None = None
    ignored: list[str] = []
    for i, dep in enumerate(deps[:MAX_REQUIREMENTS]):
        if isinstance(dep, dict):
            pip = dep.get("pip")
            if not isinstance(pip, list):
                raise ModelLoadError(f"{name}: dependencies[{i}] must be {{pip: [requirements]}}")
            for j, line in enumerate(pip):
                _line(folder, str(line), f"{name} pip[{j}]", reqs, cons, depth=0)
        elif isinstance(dep, str):
            package = re.split(r"[=<>!~\s]", dep.strip(), maxsplit=1)[0].lower()
            if package == "python":
                python = dep.strip()[len("python"):].lstrip("=<>~ ") or None
            elif package != "pip":
                ignored.append(dep.strip()[:80])
    return _spec(name, reqs, cons, python=python, ignored=ignored)


def _spec(
    name: str, reqs: list[str], cons: list[str], python: str | None = None, ignored: list[str] | None = None
) -> EnvSpec:
    if len(reqs) + len(cons) > MAX_REQUIREMENTS:
        raise ModelLoadError(f"{name}: more than {MAX_REQUIREMENTS} requirements")
    if not reqs:
        raise ModelLoadError(f"{name} lists no requirements: nothing to install (drop 'environment')")
    return EnvSpec(name, tuple(dict.fromkeys(reqs)), tuple(dict.fromkeys(cons)), python, tuple(ignored or ()))


def _plain_name(name: str) -> bool:
    return bool(name) and len(name) <= 255 and "/" not in name and "\\" not in name and name not in (".", "..") \
        and name.isprintable() and not name.startswith("-")


def _bounded_text(path: Path, name: str) -> str:
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ModelLoadError(f"{name} is {size} bytes; a model's environment file may have at most {MAX_FILE_BYTES}")
        text = path.read_bytes()[:MAX_FILE_BYTES].decode("utf-8")
    except UnicodeDecodeError:
        raise ModelLoadError(f"{name} is not UTF-8 text") from None
    except OSError as exc:
        raise ModelLoadError(f"cannot read {name}: {exc.strerror}") from None
    if text.count("\n") > MAX_LINES:
        raise ModelLoadError(f"{name} has more than {MAX_LINES} lines")
    return text


def _yaml(path: Path, name: str) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(_bounded_text(path, name))
    except yaml.YAMLError as exc:
        raise ModelLoadError(f"{name} is not YAML: {str(exc).splitlines()[0][:200]}") from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"{name} must hold a mapping (python, dependencies …)")
    return data


def _requirements_file(folder: Path, name: str, reqs: list[str], cons: list[str], depth: int,
                       constraint: bool = False) -> None:
    if depth > MAX_INCLUDE_DEPTH:
        raise ModelLoadError(f"{name}: requirement files include each other more than {MAX_INCLUDE_DEPTH} deep")
    text = _bounded_text(folder / name, name)
    logical: list[tuple[int, str]] = []
    pending = ""
    for number, raw in enumerate(text.splitlines(), 1):
        if raw.endswith("\\"):
            pending += raw[:-1] + " "
            continue
        logical.append((number, pending + raw))
        pending = ""
    if pending:
        logical.append((len(text.splitlines()), pending))
    for number, line in logical:
        _line(folder, line, f"{name} line {number}", cons if constraint else reqs, cons, depth, constraint)


def _line(folder: Path, raw: str, where: str, reqs: list[str], cons: list[str], depth: int,
          constraint: bool = False) -> None:
    line = re.sub(r"(^|\s)#.*$", "", raw).strip()
    if not line:
        return
    if len(line) > MAX_LINE_LENGTH or not line.isprintable():
        raise ModelLoadError(f"{where}: not a requirement (too long or unprintable)")
    if line.startswith("-"):
        include = _INCLUDE.match(line)
        if include is None:
            option = line.split()[0].split("=")[0][:40]
            raise ModelLoadError(
                f"{where}: option {option!r} is not accepted in a model's requirements: they install by name, "
                "only from the registries the server's pip (or uv) is configured for; "
                "no index, link or editable options"
            )
        target = include.group(2)
        if not _plain_name(target) or not (folder / target).is_file():
            raise ModelLoadError(
                f"{where}: {include.group(1)} {target[:80]!r} must name a file beside it in the model's folder"
            )
        as_constraint = constraint or include.group(1) in ("-c", "--constraint")
        _requirements_file(folder, target, reqs, cons, depth + 1, as_constraint)
        return
    hashes = ["--hash=" + m.group(1) + ":" + m.group(2).lower() for m in _HASH.finditer(" " + line)]
    body = _HASH.sub("", " " + line).strip()
    match = _NAME.match(body)
    if match is None or "://" in body or "@" in body.split(";")[0] or not _REST.match(match.group(3)):
        raise ModelLoadError(
            f"{where}: {body[:80]!r} is not a requirement by name (name, extras, versions, markers); "
            "URLs, paths and direct references are not accepted in a model's requirements"
        )
    name = re.sub(r"[-_.]+", "-", match.group(1)).lower()
    extras = ""
    if match.group(2):
        extras = "[" + ",".join(sorted(e.strip().lower() for e in match.group(2)[1:-1].split(",") if e.strip())) + "]"
    rest = " ".join(match.group(3).split())
    reqs.append(" ".join([name + extras + rest, *hashes]))
