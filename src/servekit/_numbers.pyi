# The C extension built from _speedups/numbers.c (optional; see setup.py).
from typing import Any

# (start, end) of the array in the body, its byte offset in the output
# buffer, its kind ("b" bool, "i" int64, "f" float64) and its shape
Parsed = tuple[int, int, int, str, tuple[int, ...]]

def scan_request(body: bytes | bytearray, out: Any, /) -> list[tuple[int, Parsed]] | None: ...
def parse_array(body: bytes | bytearray, offset: int, out: Any, /) -> Parsed | None: ...

# (name, shape, datatype, the tensor's bytes, id) of a plain one-input request
def plain_request(
    body: bytes | bytearray, /
) -> tuple[str, tuple[int, ...], str, bytearray, str | None] | None: ...
