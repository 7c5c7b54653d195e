"""The one rule for names a client can give: models, versions and labels.

1 to 128 characters of letters, digits, ``.``, ``_`` and ``-``, starting with
a letter or a digit. Every entry point that creates or changes what is served
checks names with :func:`check_name` before they reach a file path, a log
line, a header or the channel between workers.
"""

from __future__ import annotations

import re

from servekit.errors import InvalidInput

MAX_NAME_LENGTH = 128
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def valid_name(value: object) -> bool:
    return isinstance(value, str) and NAME.fullmatch(value) is not None


def check_name(value: object, what: str = "model name") -> str:
    """``value`` if it is a valid name, else :class:`InvalidInput` saying the rule."""
    if valid_name(value):
        assert isinstance(value, str)
        return value
    shown = repr(value)[:40] if isinstance(value, str) else type(value).__name__
    raise InvalidInput(
        f"{what} {shown} is not valid: use 1 to {MAX_NAME_LENGTH} letters, digits, "
        "'.', '_' or '-', starting with a letter or a digit"
    )


def check_version(value: object, what: str = "version") -> str:
    """A version: empty (none) or a name."""
    if value == "":
        return ""
    return check_name(value, what)
