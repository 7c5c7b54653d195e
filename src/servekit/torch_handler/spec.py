"""Which handlers a model may name: a built-in one (``image_classifier``,
``ts.torch_handler.base_handler`` …) or a ``.py`` file inside the archive or
model folder, optionally with a function (``handler.py:handle``).

Nothing else is imported: not a file elsewhere on disk (``/tmp/x.py``,
``../x.py``), not an installed module (``os``, ``builtins:print``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from servekit.errors import InvalidInput, ModelLoadError
from servekit.torch_handler import BUILTIN_HANDLERS

BUILTIN_PREFIXES = ("ts.torch_handler.", "servekit.torch_handler.")
MAX_SPEC = 256
_FUNCTION = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class HandlerSpec:
    """A handler spec, checked: ``builtin`` (its name in BUILTIN_HANDLERS) or
    ``file`` (a relative path inside the model folder), and ``function``."""

    text: str
    builtin: str | None
    file: PurePosixPath | None
    function: str

    def path_in(self, model_dir: Path) -> Path | None:
        """The handler file inside ``model_dir``, if there is one (a built-in
        handler's name may be shadowed by a file of that name in the archive)."""
        if self.file is None:
            return None
        root = model_dir.resolve()
        path = (root / self.file).resolve()
        if root not in path.parents or not path.is_file():
            return None
        return path


def parse_handler(spec: str) -> HandlerSpec:
    """Check a handler spec's form; InvalidInput (400) names what is allowed."""
    text = spec.strip()
    if not text or len(text) > MAX_SPEC or any(ord(c) < 32 for c in text):
        raise InvalidInput(_refusal(spec[:64], "is empty, too long or has control characters"))
    module_part, sep, function = text.partition(":")
    if sep and not (_FUNCTION.fullmatch(function) and not function.startswith("__")):
        raise InvalidInput(_refusal(text, f"names the function {function[:64]!r}, which is not a plain name"))
    stem = module_part[:-3] if module_part.endswith(".py") else module_part
    builtin_name = stem.rsplit(".", 1)[-1] if stem.startswith(BUILTIN_PREFIXES) else stem
    builtin = builtin_name if builtin_name in BUILTIN_HANDLERS else None
    if stem.startswith(BUILTIN_PREFIXES) and builtin is None:
        raise InvalidInput(_refusal(text, "is not one of the built-in handlers"))
    if builtin is not None and stem != builtin:  # ts.torch_handler.X: never a file
        if function:
            raise InvalidInput(_refusal(text, "names a function of a built-in handler"))
        return HandlerSpec(text, builtin, None, function)
    return HandlerSpec(text, builtin, _relative_file(text, module_part), function)


def _relative_file(text: str, module_part: str) -> PurePosixPath:
    """``handler.py``, ``sub/handler.py`` or the module name ``handler`` /
    ``sub.handler`` as a path relative to the model folder."""
    if module_part.endswith(".py"):
        pure = PurePosixPath(module_part)
    else:
        pure = PurePosixPath(*module_part.split(".")).with_suffix(".py") if module_part else PurePosixPath()
    if (
        "\\" in module_part
        or pure.is_absolute()
        or not pure.parts
        or any(part in ("", ".", "..") or not _PART.fullmatch(part) for part in pure.parts)
    ):
        raise InvalidInput(_refusal(text, "is not a file name inside the model archive"))
    return pure


def check_handler(spec: str, model_dir: Path) -> HandlerSpec:
    """``spec`` parsed, and refused (InvalidInput) unless it names a built-in
    handler or a ``.py`` file inside ``model_dir``."""
    parsed = parse_handler(spec)
    if (parsed.builtin is None or parsed.function) and parsed.path_in(model_dir) is None:
        raise InvalidInput(_refusal(parsed.text, "names no file in the model archive"))
    return parsed


def file_inside(model_dir: str | Path, name: str, what: str) -> Path:
    """``model_dir / name`` for a file a manifest names (``serializedFile``,
    ``modelFile``, ``configFile``), refused (ModelLoadError) unless it stays
    inside ``model_dir``: an absolute path or ``..`` would reach any file."""
    root = Path(model_dir).resolve()
    pure = PurePosixPath(str(name).replace("\\", "/"))
    path = (root / pure).resolve()
    if pure.is_absolute() or ".." in pure.parts or root not in path.parents:
        raise ModelLoadError(f"the manifest's {what} {str(name)[:64]!r} is not a file inside the model archive")
    return path


def _refusal(spec: str, why: str) -> str:
    known = ", ".join(BUILTIN_HANDLERS)
    return (
        f"handler {spec!r} {why}; a handler must be a built-in handler ({known}) or a .py file "
        "inside the model archive, optionally with a function ('handler.py:handle')"
    )


__all__ = ["HandlerSpec", "check_handler", "file_inside", "parse_handler"]
