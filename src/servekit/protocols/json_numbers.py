"""Large numeric ``data`` arrays of V2 JSON requests, parsed without Python objects.

orjson turns a 10,000 x 784 ``data`` array into 7.8 million Python numbers and
``np.asarray`` reads them back; together that is most of the time of such a
request. Here the C extension :mod:`servekit._numbers` finds each
``inputs[i].data`` numeric array in the body and parses it straight into a
buffer, giving exactly what ``np.asarray(orjson.loads(...))`` gives (same dtype
— bool, int64 or float64 — same shape, same bits). The arrays are cut out of
the body, orjson parses only the small remainder, and the arrays are put back
into the document, so everything after this sees the usual structure.

Whenever something is unusual (strings or nulls in ``data``, ragged or empty
lists, integers beyond int64, escaped or duplicate keys, BYTES tensors, invalid
JSON) :func:`loads_request` answers None and the caller parses the whole body
with orjson as before, which also produces the usual error messages.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import orjson

try:
    from servekit import _numbers
except ImportError:  # built without a C compiler: the ordinary path only
    _numbers = None  # type: ignore[assignment]

#: Bodies smaller than this are parsed by orjson alone. Measured (one JSON row
#: of n numbers, orjson + np.asarray against this path): n=64 (300-600 bytes)
#: 5.5 against 8 us; n=128 (0.5-1.2 KB) 10-12.5 against 9-10 us; n=256 (1-2.4 KB)
#: 15-25 against 11-13 us; one 784-feature row (3.9 KB) 56 against 17 us.
MIN_BODY = 1024

_DTYPES = {"b": np.dtype(np.bool_), "i": np.dtype(np.int64), "f": np.dtype(np.float64)}
_FLOAT = _DTYPES["f"]
# what stands in for each cut-out array while orjson parses the rest
_PLACEHOLDER = b"0"


def available() -> bool:
    """Whether the C extension was built."""
    return _numbers is not None


def loads_request(body: bytes | bytearray | memoryview) -> Any | None:
    """The request document with its numeric ``inputs[i].data`` as numpy arrays.

    None means "not for the fast path": parse ``body`` the ordinary way.
    """
    if _numbers is None or not isinstance(body, bytes | bytearray) or len(body) < MIN_BODY:
        return None
    # every number takes at least two bytes (itself and a separator), so this
    # is enough for all arrays; untouched pages of it are never backed by memory
    out = np.empty(len(body) // 2 + 1, np.float64)
    found = _numbers.scan_request(body, out)
    if not found:
        return None
    if len(found) == 1:  # the common case: one array, cut out by two slices
        start, end = found[0][1][:2]
        rest = body[:start] + _PLACEHOLDER + body[end:]
    else:
        view = memoryview(body)
        pieces: list[bytes | memoryview] = []
        position = 0
        for _, (start, end, *_) in found:
            pieces += (view[position:start], _PLACEHOLDER)
            position = end
        pieces.append(view[position:])
        rest = b"".join(pieces)
    try:
        document = orjson.loads(rest)
    except orjson.JSONDecodeError:
        return None
    inputs = document.get("inputs") if isinstance(document, dict) else None
    if not isinstance(inputs, list):
        return None
    for index, (_, _, offset, kind, shape) in found:
        entry = inputs[index] if index < len(inputs) else None
        if not isinstance(entry, dict) or not _is_placeholder(entry.get("data")):
            return None
        datatype = entry.get("datatype")
        if not isinstance(datatype, str) or _ordinary_only(datatype.upper(), kind):
            return None
        count = math.prod(shape)
        data = np.frombuffer(out, _DTYPES[kind], count, offset)
        if kind == "i" and datatype == "FP64":
            # whole numbers for a float tensor (pixels, counts): made floats in
            # place, exactly (|v| < 2**53 or rounded as float() rounds them), so
            # the codec has no cast left to do
            floats = np.frombuffer(out, _FLOAT, count, offset)
            floats[...] = data
            data = floats
        entry["data"] = data.reshape(shape)
    return document


#: what plain_request's datatypes hold
_PLAIN_DTYPES: dict[str, np.dtype[Any]] = {
    "FP64": np.dtype(np.float64), "FP32": np.dtype(np.float32), "INT64": np.dtype(np.int64), "BOOL": np.dtype(np.bool_),
}


def plain_input(body: bytes | bytearray | memoryview) -> tuple[str, np.ndarray, str, str | None] | None:
    """The one input (name, array, datatype) and the id of the commonest
    request, decoded whole in C: an object of ``inputs`` (one entry of exactly
    name, shape, datatype and data) and at most a string ``id``, datatype FP64,
    FP32, INT64 or BOOL, with data of that kind and the shape's size. The array
    holds exactly what the general path makes of the same text.

    None for any other body (or without the extension): decode it the usual way.
    """
    if _numbers is None or not isinstance(body, bytes | bytearray):
        return None
    found = _numbers.plain_request(body)
    if found is None:
        return None
    name, shape, datatype, data, request_id = found
    return name, np.ndarray(shape, _PLAIN_DTYPES[datatype], data), datatype, request_id


def _ordinary_only(datatype: str, kind: str) -> bool:
    # BYTES turns numbers into text, and UINT64 reads whole floats from the
    # original list (v2_codec); both are rare enough to leave to that path
    return datatype == "BYTES" or (datatype == "UINT64" and kind == "f")


def _is_placeholder(value: Any) -> bool:
    return type(value) is int and value == 0
