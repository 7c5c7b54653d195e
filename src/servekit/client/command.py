"""``servekit infer MODEL --data …``: one V2 inference from a shell, through
:class:`servekit.Client`."""

from __future__ import annotations

import argparse
import io
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from servekit.client._base import PROTOCOLS
from servekit.client.codec import InferResult
from servekit.client.errors import ClientError
from servekit.tensors import DATATYPE_TO_DTYPE

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_GRPC_URL = "grpc://127.0.0.1:8081"
# a data file or --data larger than this is refused before it is read
MAX_DATA_BYTES = 256 * 1024 * 1024
EPILOG = """\
data: a JSON array is the model's only input ('[[5.1, 3.5, 1.4, 0.2]]'); an
object names the inputs ('{"x": [[5.1, 3.5, 1.4, 0.2]]}'); a V2 request body
({"inputs": [{"name", "shape", "datatype", "data"}]}) is sent as written.
--data-file reads .json the same way, .npy as the only input, .npz as inputs by
name; '-' reads JSON from standard input. Lists take the datatype the model's
metadata declares.

examples:
  servekit infer iris --data '[[5.1, 3.5, 1.4, 0.2]]'
  servekit infer iris --data-file rows.npy --protocol grpc --output-format table
"""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="the model's name")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="the inputs as JSON (see below)")
    source.add_argument("--data-file", metavar="FILE", help="the inputs from a .json, .npy or .npz file ('-': JSON on stdin)")
    parser.add_argument("--url", default=None,
                        help=f"the server (default: $SERVEKIT_URL, else {DEFAULT_URL}, or {DEFAULT_GRPC_URL} with --protocol grpc)")
    parser.add_argument("--protocol", choices=PROTOCOLS, default=None,
                        help="rest: V2 JSON; binary: V2 REST with binary tensors; grpc: V2 gRPC (default: from the URL)")
    parser.add_argument("--model-version", default=None, help="a version of the model (default: the server's default)")
    parser.add_argument("--output", action="append", dest="outputs", metavar="NAME",
                        help="ask for this output only (repeatable)")
    parser.add_argument("--parameters", default=None, help="request parameters as a JSON object")
    parser.add_argument("--output-format", choices=("json", "table"), default="json", help="how to print the answer")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the answer (default: 60)")
    parser.add_argument("--token", default=os.environ.get("SERVEKIT_TOKEN"),
                        help="bearer token sent with the request (default: $SERVEKIT_TOKEN)")
    parser.epilog = EPILOG


def run(args: argparse.Namespace) -> int:
    from servekit.client import Client

    try:
        inputs = read_inputs(args.data, args.data_file)
        parameters = _json_object(args.parameters, "--parameters") if args.parameters else None
    except ValueError as exc:
        print(f"servekit infer: {exc}", file=sys.stderr)
        return 2
    url = args.url or os.environ.get("SERVEKIT_URL") or (DEFAULT_GRPC_URL if args.protocol == "grpc" else DEFAULT_URL)
    if args.timeout <= 0:
        print("servekit infer: --timeout must be a positive number of seconds", file=sys.stderr)
        return 2
    try:
        with Client(url, protocol=args.protocol, timeout=args.timeout, token=args.token) as client:
            result = client.infer_result(args.model, inputs, model_version=args.model_version,
                                         outputs=args.outputs, parameters=parameters)
    except ValueError as exc:  # a bad --url
        print(f"servekit infer: {exc}", file=sys.stderr)
        return 2
    except ClientError as exc:
        print(f"servekit infer: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(render_table(result) if args.output_format == "table" else render_json(result))
    return 0


# -- input ------------------------------------------------------------------------------
def read_inputs(data: str | None, data_file: str | None) -> Any:
    """An array, or a dict of arrays by name, from --data or --data-file."""
    if data is not None:
        if len(data) > MAX_DATA_BYTES:
            raise ValueError(f"--data is over {MAX_DATA_BYTES} bytes; use --data-file with a .npy file")
        return from_json(data.encode(), "--data")
    assert data_file is not None
    if data_file == "-":
        return from_json(sys.stdin.buffer.read(MAX_DATA_BYTES + 1), "standard input")
    path = Path(data_file)
    if not path.is_file():
        raise ValueError(f"--data-file {data_file!r} is not a file")
    if path.stat().st_size > MAX_DATA_BYTES:
        raise ValueError(f"--data-file {data_file!r} is over {MAX_DATA_BYTES} bytes")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise ValueError(f"{data_file}: not a .npy array without Python objects ({exc})") from None
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    if suffix == ".json":
        return from_json(path.read_bytes(), data_file)
    raise ValueError(f"--data-file {data_file!r}: use a .json, .npy or .npz file")


def from_json(raw: bytes, where: str) -> Any:
    if len(raw) > MAX_DATA_BYTES:
        raise ValueError(f"{where} is over {MAX_DATA_BYTES} bytes")
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"{where} is not valid JSON: {exc}") from None
    if isinstance(document, dict) and isinstance(document.get("inputs"), list):
        return v2_inputs(document["inputs"], where)
    if isinstance(document, dict):
        if not document:
            raise ValueError(f"{where} names no inputs")
        return {str(name): _array(value, str(name), where) for name, value in document.items()}
    if isinstance(document, list):
        return document  # a list: the client casts it to the model's declared datatype
    raise ValueError(f"{where} must be a JSON array, an object of arrays by input name, or a V2 request body")


def _array(value: Any, name: str, where: str) -> Any:
    if not isinstance(value, (list, int, float, bool, str)):
        raise ValueError(f"{where}: input {name!r} must be an array of numbers, booleans or strings")
    return value


def v2_inputs(entries: list[Any], where: str) -> dict[str, np.ndarray]:
    out = {}
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or not {"name", "shape", "datatype", "data"} <= set(entry):
            raise ValueError(f"{where}: inputs[{index}] needs name, shape, datatype and data")
        name, datatype = str(entry["name"]), str(entry["datatype"]).upper()
        if datatype not in DATATYPE_TO_DTYPE:
            raise ValueError(f"{where}: input {name!r} has unknown datatype {datatype!r}")
        try:
            array = np.asarray(entry["data"], dtype=DATATYPE_TO_DTYPE[datatype])
            out[name] = array.reshape([int(d) for d in entry["shape"]])
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: input {name!r}: {exc}") from None
    return out


def _json_object(text: str, flag: str) -> dict[str, Any]:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"{flag} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{flag} must be a JSON object")
    return value


# -- output --------------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    """Nested lists of JSON values; bytes as text (hex when not UTF-8)."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "O":
            return [_plain(v) for v in value] if value.ndim else _text(value.item())
        return value.tolist()
    return _text(value)


def _text(value: Any) -> Any:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value.hex()
    return value


def render_json(result: InferResult) -> str:
    document: dict[str, Any] = {"model_name": result.model_name}
    if result.model_version:
        document["model_version"] = result.model_version
    document["outputs"] = {
        name: {"datatype": result.datatypes.get(name, ""), "shape": list(array.shape), "data": _plain(array)}
        for name, array in result.outputs.items()
    }
    return orjson.dumps(document).decode()


def render_table(result: InferResult) -> str:
    """One line per row when every output has the same number of rows, else
    one line per output."""
    outputs = result.outputs
    buffer = io.StringIO()
    lengths = {a.shape[0] if a.ndim else 1 for a in outputs.values()}
    if len(lengths) == 1 and all(a.ndim >= 1 for a in outputs.values()):
        header = ["row", *[f"{n} ({result.datatypes.get(n, '')})" for n in outputs]]
        rows = [[str(i), *[_cell(a[i]) for a in outputs.values()]] for i in range(lengths.pop())]
    else:
        header = ["output", "datatype", "shape", "data"]
        rows = [[n, result.datatypes.get(n, ""), str(list(a.shape)), _cell(a)] for n, a in outputs.items()]
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
    for line in [header, *rows]:
        buffer.write("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip() + "\n")
    return buffer.getvalue().rstrip("\n")


def _cell(value: Any) -> str:
    plain = _plain(value.item() if isinstance(value, np.ndarray) and value.ndim == 0 else value)
    if isinstance(plain, list) and len(plain) == 1 and not isinstance(plain[0], list):
        plain = plain[0]
    text = plain if isinstance(plain, str) else orjson.dumps(plain, option=orjson.OPT_SERIALIZE_NUMPY).decode()
    return text if len(text) <= 200 else text[:197] + "..."


__all__ = ["configure", "run"]
