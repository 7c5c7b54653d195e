"""Where ``--models`` finds the user's code, the way Python does.

``servekit describe``, ``servekit time --models`` and the pytest plugin's
``--servekit-models`` take any of:

- a module name, dotted or not (``sentiment``, ``sentiment.classifier``, or a
  class path ``sentiment.classifier.Classifier``), imported with the current
  folder first on ``sys.path`` as ``python -m`` has it;
- a package folder (``examples/sentiment/sentiment``: a folder with
  ``__init__.py``), imported by its name with the folder above its outermost
  package on ``sys.path``;
- a ``.py`` file, imported the same way (a file inside a package keeps its
  dotted name, so relative imports work);
- a folder that holds packages (``examples/sentiment``), each package in it.

Every mistake (a path that does not exist, a folder without a package, a name
Python cannot import, an error raised while importing, no model classes) is a
:class:`~servekit.errors.ConfigError` with one line that says what to give.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys
import traceback
from pathlib import Path
from types import ModuleType

from servekit.errors import ConfigError

FORMS = ("a module name (sentiment), a package folder (examples/sentiment/sentiment), "
         "a folder holding packages (examples/sentiment) or a .py file")


def put_on_path(folder: str | Path) -> None:
    """``folder`` first on ``sys.path`` (once)."""
    entry = str(Path(folder).resolve())
    if entry not in sys.path:
        sys.path.insert(0, entry)


def import_models(target: str, base: str | Path | None = None, option: str = "--models") -> list[ModuleType | type]:
    """The modules (or the class) ``target`` names, imported; ``base`` (default:
    the current folder) goes on ``sys.path`` and relative paths start there.
    ``option`` is the flag the messages name."""
    from servekit.library.library import find_model_classes

    shown = target
    target = target.strip()
    if not target:
        raise ConfigError(f"{option} is empty; give {FORMS}")
    where = Path(base or os.getcwd()).resolve()
    put_on_path(where)
    path = Path(target).expanduser()
    if not path.is_absolute():
        path = where / path
    if path.exists():
        found = [_import(name, option) for name in _names_for_path(path, shown, option)]
    elif _looks_like_path(target):
        looked = "" if Path(target).expanduser().is_absolute() else f" (looked in {where})"
        raise ConfigError(f"{shown!r} does not exist{looked}; {option} takes {FORMS}")
    elif not all(part.isidentifier() for part in target.split(".")):
        raise ConfigError(f"{shown!r} is neither an existing path nor a module name; {option} takes {FORMS}")
    else:
        found = [_import(target, option)]
    if not find_model_classes(found):
        names = ", ".join(getattr(f, "__name__", str(f)) for f in found)
        raise ConfigError(
            f"{shown!r} ({names}) defines no model class: {option} needs servekit.Model "
            "subclasses with CONFIGURATIONS"
        )
    return found


def _looks_like_path(target: str) -> bool:
    return "/" in target or os.sep in target or target.endswith(".py") or target.startswith(("~", "."))


def _names_for_path(path: Path, shown: str, option: str) -> list[str]:
    """Module names for an existing file or folder, with the right folder put on ``sys.path``."""
    path = path.resolve()
    if path.is_file():
        if path.suffix != ".py":
            raise ConfigError(f"{shown!r} is a file but not a .py file; {option} takes {FORMS}")
        return [_package_name(path.parent, [] if path.stem == "__init__" else [path.stem], shown)]
    if (path / "__init__.py").exists():
        return [_package_name(path.parent, [path.name], shown)]
    packages = sorted(
        child.name for child in path.iterdir()
        if child.is_dir() and (child / "__init__.py").exists() and child.name.isidentifier()
    )
    if not packages:
        raise ConfigError(
            f"{shown!r} is a folder without __init__.py and holds no package (a folder with "
            f"__init__.py); {option} takes {FORMS}"
        )
    put_on_path(path)
    return packages


def _package_name(folder: Path, parts: list[str], shown: str) -> str:
    """The dotted name of ``folder/parts``: up through every folder with ``__init__.py``;
    the folder above the outermost package goes on ``sys.path``."""
    while (folder / "__init__.py").exists():
        parts.insert(0, folder.name)
        folder = folder.parent
    for part in parts:
        if not part.isidentifier():
            raise ConfigError(
                f"{shown!r}: {part!r} is not a valid Python module name (letters, digits and _ only); "
                "rename it to import it"
            )
    put_on_path(folder)
    return ".".join(parts)


def _import(name: str, option: str) -> ModuleType | type:
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing == name and "." in name:
            # a class path: sentiment.classifier.Classifier
            module_name, _, attr = name.rpartition(".")
            owner = _import_module(module_name, option)
            found = getattr(owner, attr, None)
            if isinstance(found, (type, ModuleType)):
                return found
            raise ConfigError(f"module {module_name!r} has no class or module {attr!r}") from None
        if missing and (name == missing or name.startswith(missing + ".")):
            raise ConfigError(
                f"no module named {missing!r} in the current folder ({os.getcwd()}) or on sys.path; "
                f"run from the folder that holds it, or give its path: {option} path/to/{missing.split('.')[0]}"
            ) from None
        raise ConfigError(f"importing {name!r} failed: {_one_line(exc)}") from None
    except Exception as exc:  # the user's code raised while importing
        raise ConfigError(f"importing {name!r} failed: {_one_line(exc)}") from None
    return _walk(module)


def _import_module(name: str, option: str) -> ModuleType:
    found = _import(name, option)
    assert isinstance(found, ModuleType)
    return found


def _walk(module: ModuleType) -> ModuleType:
    """Import a package's submodules now, so that their errors are reported here."""
    path = getattr(module, "__path__", None)
    if path is None:
        return module
    current = module.__name__
    try:
        for info in pkgutil.walk_packages(path, module.__name__ + "."):
            current = info.name
            importlib.import_module(info.name)
    except Exception as exc:
        raise ConfigError(f"importing {current!r} failed: {_one_line(exc)}") from None
    return module


def _one_line(exc: BaseException) -> str:
    """``Type: message (file:line)`` of the innermost frame of the user's code."""
    if isinstance(exc, SyntaxError):
        return f"SyntaxError: {exc.msg} ({exc.filename}:{exc.lineno})"
    where = ""
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if "importlib" not in frame.filename and not frame.filename.startswith("<frozen"):
            where = f" ({frame.filename}:{frame.lineno})"
            break
    message = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {message}{where}" if message else f"{type(exc).__name__}{where}"
