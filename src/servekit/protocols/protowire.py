"""Just enough of protobuf's wire format to cut large ``bytes`` fields (raw
tensor contents) out of a serialized message before protobuf parses the rest,
and to append them to a serialized reply, so tensor data is never copied by
the protobuf runtime.
"""

from __future__ import annotations

from collections.abc import Iterator

from servekit.errors import InvalidInput

VARINT, FIXED64, LENGTH_DELIMITED, FIXED32 = 0, 1, 2, 5


def read_varint(data: bytes | memoryview, position: int, what: str = "protobuf") -> tuple[int, int]:
    """(value, position after it) of the varint at ``position``."""
    value = shift = 0
    while True:
        if position >= len(data) or shift > 63:
            raise InvalidInput(f"the request is not a valid {what} message")
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, position
        shift += 7


def varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def length_delimited(field: int, payload: bytes | memoryview) -> list[bytes | memoryview]:
    """The pieces of one length-delimited field (to join without copying payload twice)."""
    return [varint(field << 3 | LENGTH_DELIMITED) + varint(len(payload)), payload]


def fields(data: memoryview, what: str = "protobuf") -> Iterator[tuple[int, int, memoryview, memoryview]]:
    """The top-level fields of a serialized message: (number, wire type, the
    whole field, its payload). Payloads are views of ``data``."""
    position, size = 0, len(data)
    while position < size:
        start = position
        key, position = read_varint(data, position, what)
        wire = key & 7
        if wire == VARINT:
            payload_start = position
            _, position = read_varint(data, position, what)
        elif wire == FIXED64:
            payload_start, position = position, position + 8
        elif wire == FIXED32:
            payload_start, position = position, position + 4
        elif wire == LENGTH_DELIMITED:
            length, payload_start = read_varint(data, position, what)
            position = payload_start + length
        else:
            raise InvalidInput(f"the request is not a valid {what} message")
        if position > size:
            raise InvalidInput(f"the {what} message is truncated")
        yield key >> 3, wire, data[start:position], data[payload_start:position]


__all__ = ["fields", "length_delimited", "read_varint", "varint"]
