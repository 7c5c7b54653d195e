"""Building (once) and finding a model's virtual environment.

One environment per distinct set of requirements: its folder in the cache
(``SERVEKIT_ENV_CACHE``, default ``~/.cache/servekit/envs``) is named by
:meth:`EnvSpec.key`, a hash of the normalised requirements and the running
Python. A folder counts as built once its marker file ``servekit-env.json`` is
written, last; processes (server workers) building the same one at once take
turns on a lock file beside it, so it is built once and then reused.

Built with ``uv`` when it is on ``PATH`` (``uv venv`` + ``uv pip install``),
else with the standard library's ``venv`` (no pip inside) and the server's own
pip (``pip --python <env> install``, its cache and configuration).
``SERVEKIT_ENV_INSTALLER=pip|uv`` picks one. Either installer reads only its
own configuration (pip.conf / ``PIP_INDEX_URL``, uv.toml / ``UV_INDEX_URL``):
the model's files cannot name an index. ``SERVEKIT_ENV_FIND_LINKS=<folder>`` is
the offline mode: ``--no-index --find-links <folder>``, packages only from
wheels and sdists in that folder (the tests use it; the folder is part of the
cache key). ``SERVEKIT_ENV_BUILD_TIMEOUT`` (seconds, default 900) bounds a build.

The environment does not see the server's packages (no
``--system-site-packages``); servekit's own code and its core dependencies are
importable in it *behind* the environment's packages: a ``.pth`` file installs
an import hook that finds only those names in the server's installation, after
the environment's own site-packages. A model that installs its own numpy uses it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import IO

from servekit.envs.spec import EnvSpec
from servekit.errors import ModelLoadError

log = logging.getLogger("servekit.envs")

CACHE_VARIABLE = "SERVEKIT_ENV_CACHE"
FIND_LINKS_VARIABLE = "SERVEKIT_ENV_FIND_LINKS"
TIMEOUT_VARIABLE = "SERVEKIT_ENV_BUILD_TIMEOUT"
INSTALLER_VARIABLE = "SERVEKIT_ENV_INSTALLER"
MARKER = "servekit-env.json"
HOOK = "_servekit_base"
DEFAULT_TIMEOUT = 900.0
TAIL_LINES = 12
TAIL_CHARS = 1500


@dataclass(frozen=True)
class BuiltEnv:
    path: Path
    python: Path
    key: str
    built_now: bool
    installer: str


def cache_dir() -> Path:
    configured = os.environ.get(CACHE_VARIABLE)
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "servekit" / "envs"


def build_timeout() -> float:
    text = os.environ.get(TIMEOUT_VARIABLE, "")
    try:
        value = float(text) if text else DEFAULT_TIMEOUT
    except ValueError:
        raise ModelLoadError(f"{TIMEOUT_VARIABLE}={text[:40]!r} is not a number of seconds") from None
    return value if value > 0 else DEFAULT_TIMEOUT


def find_links() -> Path | None:
    text = os.environ.get(FIND_LINKS_VARIABLE)
    if not text:
        return None
    path = Path(text).expanduser().resolve()
    if not path.is_dir():
        raise ModelLoadError(f"{FIND_LINKS_VARIABLE} names no folder")
    return path


def installer() -> str:
    wanted = os.environ.get(INSTALLER_VARIABLE, "auto").strip().lower() or "auto"
    if wanted not in ("auto", "uv", "pip"):
        raise ModelLoadError(f"{INSTALLER_VARIABLE} must be auto, uv or pip, not {wanted[:20]!r}")
    if wanted == "uv" and shutil.which("uv") is None:
        raise ModelLoadError(f"{INSTALLER_VARIABLE}=uv, but uv is not on PATH")
    if wanted == "auto":
        return "uv" if shutil.which("uv") is not None else "pip"
    return wanted


def env_python(path: Path) -> Path:
    return path / "bin" / "python"


def ensure(spec: EnvSpec, model: str) -> BuiltEnv:
    """The environment for ``spec``: reused from the cache, else built now
    (ModelLoadError with the installer's last lines when that fails)."""
    links = find_links()
    key = spec.key({"find_links": str(links)} if links is not None else None)
    root = cache_dir()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelLoadError(f"cannot create the environment cache ({CACHE_VARIABLE}): {exc.strerror}") from None
    path = root / key
    timeout = build_timeout()
    with _locked(root / f"{key}.lock", timeout):
        kind = installer()
        if (path / MARKER).is_file() and env_python(path).exists():
            log.info("Model %r: its environment %s is built (%s)", model, key, spec.source)
            install_hook(path)
            return BuiltEnv(path, env_python(path), key, False, kind)
        if path.exists():  # a build that did not finish
            shutil.rmtree(path, ignore_errors=True)
        log.info("Model %r: building its environment %s from %s with %s (%d requirements)",
                 model, key, spec.source, kind, len(spec.requirements))
        started = time.monotonic()
        try:
            _build(spec, path, kind, links, timeout)
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)
            raise
        install_hook(path)
        marker = {
            "key": key, "source": spec.source, "requirements": list(spec.requirements),
            "constraints": list(spec.constraints), "installer": kind,
            "python": sys.version.split()[0], "seconds": round(time.monotonic() - started, 1),
        }
        tmp = path / (MARKER + ".tmp")
        tmp.write_text(json.dumps(marker, indent=1))
        tmp.replace(path / MARKER)
        log.info("Model %r: built its environment %s in %.1f s", model, key, marker["seconds"])
        return BuiltEnv(path, env_python(path), key, True, kind)


@contextlib.contextmanager
def _locked(lock_path: Path, timeout: float) -> Iterator[None]:
    with lock_path.open("a") as fh:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ModelLoadError(
                        f"another process has been building this environment for more than {timeout:g} s"
                    ) from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _build(spec: EnvSpec, path: Path, kind: str, links: Path | None, timeout: float) -> None:
    python = str(env_python(path))
    base = getattr(sys, "_base_executable", sys.executable)
    uv = shutil.which("uv") or "uv"
    if kind == "uv":
        create = [uv, "venv", "--quiet", "--python", base, str(path)]
    else:
        create = [base, "-m", "venv", "--without-pip", str(path)]
    deadline = time.monotonic() + timeout
    # the installer's output, beside the environment (kept when the build fails)
    log_path = path.parent / f"{path.name}.log"
    with log_path.open("wb") as log_file:
        _run(create, log_file, deadline, timeout, kind)
        requirements = path / "servekit-requirements.txt"
        requirements.write_text("".join(line + "\n" for line in spec.requirements))
        options = ["-r", str(requirements)]
        if spec.constraints:
            constraints = path / "servekit-constraints.txt"
            constraints.write_text("".join(line + "\n" for line in spec.constraints))
            options += ["-c", str(constraints)]
        if links is not None:
            options += ["--no-index", "--find-links", str(links)]
        if kind == "uv":
            install = [uv, "pip", "install", "--python", python, *options]
        else:
            install = [sys.executable, "-m", "pip", "--python", python, "install", "--disable-pip-version-check",
                       "--no-input", "--no-warn-script-location", "--progress-bar", "off", *options]
        _run(install, log_file, deadline, timeout, kind)


def _run(command: list[str], log_file: IO[bytes], deadline: float, timeout: float, kind: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PIP_NO_INPUT"] = "1"
    try:
        done = subprocess.run(
            command, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
            env=env, timeout=max(1.0, deadline - time.monotonic()), check=False,
        )
    except subprocess.TimeoutExpired:
        raise ModelLoadError(f"building the environment took longer than {timeout:g} s ({TIMEOUT_VARIABLE})") \
            from None
    except OSError as exc:
        raise ModelLoadError(f"cannot run {Path(command[0]).name}: {exc.strerror}") from None
    if done.returncode != 0:
        log_file.flush()
        raise ModelLoadError(
            f"building the environment failed ({kind} exit code {done.returncode}): {tail(Path(str(log_file.name)))}"
        )


def tail(log_path: Path) -> str:
    """The installer's last lines (its error), bounded."""
    try:
        with log_path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 16384))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return "(no output)"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith(("[notice]", "notice:"))]
    out = " | ".join(lines[-TAIL_LINES:])
    return out[-TAIL_CHARS:] if len(out) > TAIL_CHARS else out


# -- servekit inside the environment -------------------------------------------
_HOOK_SOURCE = '''"""Written by servekit (servekit.envs.build): servekit and its core
dependencies, found in the server's installation when this environment has
none of its own (an import hook after every other)."""
import importlib.machinery as _machinery
import importlib.metadata as _metadata
import sys as _sys

_PATHS = {paths!r}
_MODULES = frozenset({modules!r})
_DISTS = frozenset({dists!r})


def _norm(name):
    return name.replace("-", "_").replace(".", "_").lower()


class ServekitBaseFinder:
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if path is None and name in _MODULES:
            return _machinery.PathFinder.find_spec(name, _PATHS)
        return None

    @classmethod
    def find_distributions(cls, context=_metadata.DistributionFinder.Context()):
        if context.name is not None and _norm(context.name) not in _DISTS:
            return iter(())
        found = _metadata.MetadataPathFinder.find_distributions(
            _metadata.DistributionFinder.Context(name=context.name, path=_PATHS))
        return (d for d in found if _norm(d.metadata["Name"] or "") in _DISTS)


if not any(getattr(f, "__name__", "") == "ServekitBaseFinder" for f in _sys.meta_path):
    _sys.meta_path.append(ServekitBaseFinder)
'''

_REQ_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _core_distributions() -> set[str]:
    """servekit and every distribution its (non-extra) requirements pull in."""
    seen: set[str] = set()
    todo = ["servekit"]
    while todo:
        name = todo.pop()
        norm = re.sub(r"[-_.]+", "_", name).lower()
        if norm in seen:
            continue
        seen.add(norm)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for req in requires:
            if "extra ==" in req.replace("extra==", "extra =="):
                continue
            match = _REQ_NAME.match(req)
            if match:
                todo.append(match.group(1))
    return seen


def hook_source() -> str:
    import servekit

    dists = _core_distributions()
    modules = {"servekit"}
    for module, owners in metadata.packages_distributions().items():
        if any(re.sub(r"[-_.]+", "_", o).lower() in dists for o in owners) and module.isidentifier():
            modules.add(module)
    package_parent = str(Path(servekit.__file__).resolve().parent.parent)
    paths = [package_parent] + [
        p for p in sys.path if p and os.path.isdir(p) and "site-packages" in p and p != package_parent
    ]
    return _HOOK_SOURCE.format(paths=paths, modules=sorted(modules), dists=sorted(dists))


def site_packages(path: Path) -> Path:
    return path / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


def install_hook(path: Path) -> None:
    """Write (when changed) the hook making servekit importable in ``path``'s environment."""
    site = site_packages(path)
    if not site.is_dir():
        raise ModelLoadError("the environment has no site-packages folder for this Python; rebuild it "
                             f"(remove it from {CACHE_VARIABLE})")
    source = hook_source()
    for name, text in ((HOOK + ".py", source), (HOOK + ".pth", f"import {HOOK}\n")):
        target = site / name
        with contextlib.suppress(OSError):
            if target.read_text() == text:
                continue
        tmp = site / f".{name}.{os.getpid()}"
        tmp.write_text(text)
        tmp.replace(target)
