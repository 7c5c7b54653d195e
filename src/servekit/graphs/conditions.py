"""Step conditions: the part of GJSON paths (tidwall/gjson, what KServe's
router evaluates) that graphs use, over the JSON form of a request or answer.

A condition holds when its path finds something (GJSON's ``Exists``). Read:

- ``a.b.0``: keys and array indices; ``\\.`` escapes a dot in a key; ``*`` and
  ``?`` match keys; ``a|b`` is ``a.b``
- ``a.#``: an array's length; ``a.#.b``: ``b`` of every element
- ``a.#(b==1)``: the first element whose ``b`` is 1; ``a.#(b==1)#``: every one;
  ``a.#(>0.5)``: elements compared themselves; operators ``== != < <= > >=``,
  ``%`` (like, with ``*``/``?``) and ``!%``; values are numbers, ``"strings"``,
  ``true``/``false``/``null`` or bare words (strings); ``a.#(b)`` tests that
  ``b`` exists
- ``[@this]`` (or ``@this``) first: the whole document wrapped in an array, so
  ``[@this].#(parameters.route=="b")`` tests the document itself.

Other GJSON syntax (modifiers, multipaths, JSON lines) is refused when the
graph loads. Paths are at most :data:`MAX_CONDITION` characters.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass
from typing import Any

MAX_CONDITION = 512
_OPS = ("==", "!=", "<=", ">=", "!%", "<", ">", "%")


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


@dataclass(frozen=True)
class _Query:
    path: tuple[Any, ...] | None  # None: the element itself
    op: str | None  # None: the path exists
    value: Any
    all: bool  # #(...)# (every match) rather than #(...) (the first)


@dataclass(frozen=True)
class Condition:
    """A parsed GJSON path; :meth:`holds` on plain JSON data."""

    text: str
    path: tuple[Any, ...]
    wrap: bool

    def find(self, document: Any) -> Any:
        """What the path finds, or :data:`MISSING`."""
        return _walk([document] if self.wrap else document, self.path)

    def holds(self, document: Any) -> bool:
        return self.find(document) is not MISSING


def parse_condition(text: str) -> Condition:
    """A condition, or ValueError saying what is not understood."""
    if not text or len(text) > MAX_CONDITION:
        raise ValueError(f"a condition is 1 to {MAX_CONDITION} characters")
    wrap = False
    rest = text
    for prefix in ("[@this].", "[@this]|", "@this.", "@this|"):
        if rest.startswith(prefix):
            wrap, rest = True, rest[len(prefix):]
            break
    else:
        if rest in ("[@this]", "@this"):
            return Condition(text, (), rest == "[@this]")
    return Condition(text, _parse_path(rest), wrap)


def _split(text: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    quoted = False
    i = 0
    while i < len(text):
        c = text[i]
        if quoted:
            current.append(c)
            if c == "\\" and i + 1 < len(text):
                current.append(text[i + 1])
                i += 1
            elif c == '"':
                quoted = False
        elif c == "\\" and i + 1 < len(text):
            current.append(c + text[i + 1])
            i += 1
        elif c == '"' and depth:
            quoted = True
            current.append(c)
        elif c == "(":
            depth += 1
            current.append(c)
        elif c == ")":
            depth -= 1
            if depth < 0:
                raise ValueError("a ')' without its '('")
            current.append(c)
        elif c in ".|" and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(c)
        i += 1
    if depth or quoted:
        raise ValueError("an unclosed '(' or '\"'")
    parts.append("".join(current))
    return parts


def _parse_path(text: str) -> tuple[Any, ...]:
    out: list[Any] = []
    for part in _split(text):
        if not part:
            raise ValueError("an empty part (two dots, or a dot at an end)")
        if part.startswith("@") or part.startswith("[") or part.startswith("{") or part == "..":
            raise ValueError(f"{part[:40]!r}: modifiers, multipaths and JSON lines are not supported")
        if part == "#":
            out.append("#")
        elif part.startswith("#("):
            every = part.endswith(")#")
            body = part[2:-2] if every else part[2:-1]
            if not part.endswith(")") and not every:
                raise ValueError(f"{part[:40]!r}: a query is #(...) or #(...)#")
            out.append(_parse_query(body, every))
        else:
            out.append(_unescape(part))
    return tuple(out)


def _unescape(part: str) -> str:
    return "".join(c for i, c in enumerate(part) if c != "\\" or (i > 0 and part[i - 1] == "\\"))


def _parse_query(body: str, every: bool) -> _Query:
    depth = 0
    quoted = False
    for i, c in enumerate(body):
        if quoted:
            quoted = c != '"' or body[i - 1] == "\\"
            continue
        if c == '"':
            quoted = True
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif depth == 0:
            op = next((o for o in _OPS if body.startswith(o, i)), None)
            if op is not None:
                left, right = body[:i].strip(), body[i + len(op):].strip()
                return _Query(_parse_path(left) if left else None, op, _value(right), every)
    left = body.strip()
    if not left:
        raise ValueError("an empty query #()")
    return _Query(_parse_path(left), None, None, every)


def _value(text: str) -> Any:
    if not text:
        raise ValueError("a comparison without a value")
    if text.startswith('"'):
        try:
            return str(json.loads(text))
        except ValueError:
            raise ValueError(f"{text[:40]!r} is not a JSON string") from None
    if text in ("true", "false", "null"):
        return {"true": True, "false": False, "null": None}[text]
    try:
        return float(text)
    except ValueError:
        return text  # a bare word is a string


def _walk(value: Any, path: tuple[Any, ...]) -> Any:
    for i, part in enumerate(path):
        if value is MISSING:
            return MISSING
        if part == "#":
            if not isinstance(value, list):
                return MISSING
            rest = path[i + 1:]
            if not rest:
                return len(value)
            found = [_walk(v, rest) for v in value]
            return [f for f in found if f is not MISSING]
        if isinstance(part, _Query):
            if not isinstance(value, list):
                return MISSING
            matches = [v for v in value if _matches(v, part)]
            if part.all:  # every match; the rest of the path is read in each
                rest = path[i + 1:]
                found = [_walk(v, rest) for v in matches] if rest else matches
                return [f for f in found if f is not MISSING]
            value = matches[0] if matches else MISSING
            continue
        value = _child(value, part)
    return value


def _child(value: Any, key: str) -> Any:
    if isinstance(value, dict):
        if key in value:
            return value[key]
        if "*" in key or "?" in key:
            for k, v in value.items():
                if fnmatch.fnmatchcase(str(k), key):
                    return v
        return MISSING
    if isinstance(value, list) and key.isdigit():
        index = int(key)
        return value[index] if index < len(value) else MISSING
    return MISSING


def _matches(element: Any, query: _Query) -> bool:
    found = element if query.path is None else _walk(element, query.path)
    if found is MISSING:
        return False
    if query.op is None:
        return True
    return _compare(found, query.op, query.value)


def _compare(found: Any, op: str, wanted: Any) -> bool:
    if op in ("%", "!%"):
        like = isinstance(found, str) and fnmatch.fnmatchcase(found, str(wanted))
        return like if op == "%" else not like
    if isinstance(wanted, float) and isinstance(found, int | float) and not isinstance(found, bool):
        a: Any = float(found)
        b: Any = wanted
    elif isinstance(wanted, str) and isinstance(found, str):
        a, b = found, wanted
    elif op in ("==", "!="):
        same = found == wanted and type(found) is type(wanted)
        return same if op == "==" else not same
    else:
        return False
    return bool({
        "==": a == b, "!=": a != b, "<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b,
    }[op])


__all__ = ["MAX_CONDITION", "MISSING", "Condition", "parse_condition"]
