"""MLflow's scoring protocol on the main HTTP port, as ``mlflow models serve`` answers it:

- ``POST /invocations``: a JSON object with exactly one of ``dataframe_split``
  (``{"columns": [...], "data": [[...]]}``), ``dataframe_records`` (``[{col:
  value}]``), ``instances`` or ``inputs`` (a tensor as nested lists, a
  ``{name: values}`` object or a list of records), plus an optional
  ``params`` object; or a ``text/csv`` body with a header row. The answer is
  ``{"predictions": ...}``: a table's rows as records, one output as its
  values, several outputs as ``{name: values}``.
- ``GET /health``: 200 when the model ``/invocations`` serves is ready (MLflow's
  ``/ping`` answers the same; on servekit's main port ``/ping`` is TorchServe's
  health call, which answers 200 too).
- ``GET /version``: the installed MLflow's version, as MLflow's server answers it.

Which model ``/invocations`` serves: ``default_model`` when it is set, else the
only model served; with several and no ``default_model`` the call is refused
with the list (``POST /v2/models/{name}/infer`` reaches each of them).

Errors are MLflow's ``{"error_code": "BAD_REQUEST", "message": "…"}`` with the
status MLflow gives that code; an unsupported content type or charset is 415
with a plain-text message, as MLflow answers it.
"""

from __future__ import annotations

import io
import math
from importlib import metadata as package_metadata
from typing import Any

import numpy as np
import orjson

from servekit.dataplane import Target, header_timeout
from servekit.errors import InvalidInput, ServekitError
from servekit.protocols.json_values import default_model_name
from servekit.protocols.v2_codec import loads
from servekit.registry import ModelVersion
from servekit.server.http import Request, Response, Route, route
from servekit.server.lifecycle import MAIN, Mount, ServerContext, Skin
from servekit.tensors import (
    InferenceRequest,
    InferenceResponse,
    Tensor,
    as_bytes_array,
    nesting_depth,
)

PROTOCOL = "mlflow"
JSON = "application/json"
CSV = "text/csv"
FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
# MLflow's error codes by the HTTP status servekit's errors carry
ERROR_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "RESOURCE_DOES_NOT_EXIST",
    405: "ENDPOINT_NOT_FOUND",
    409: "RESOURCE_CONFLICT",
    413: "BAD_REQUEST",
    429: "REQUEST_LIMIT_EXCEEDED",
    501: "NOT_IMPLEMENTED",
    503: "TEMPORARILY_UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
# most columns one request may name (a table is columns by rows; rows are bounded by the body size)
MAX_COLUMNS = 10_000


class UnsupportedMediaType(ServekitError):
    status = 415


def error_response(exc: ServekitError) -> Response:
    if isinstance(exc, UnsupportedMediaType):
        return Response(exc.message.encode(), exc.status, b"text/plain")
    body = {"error_code": ERROR_CODES.get(exc.status, "INTERNAL_ERROR"), "message": exc.message}
    response = Response(orjson.dumps(body), exc.status)
    if exc.retry_after is not None:
        response.headers.append((b"retry-after", str(exc.retry_after).encode()))
    return response


def served_model(ctx: ServerContext) -> str:
    """The model ``/invocations`` answers for."""
    return default_model_name(ctx, "/invocations answers for one: call POST /v2/models/NAME/infer")


# -- requests -----------------------------------------------------------------------
def media_type(header: str | None) -> str:
    if not header:
        raise UnsupportedMediaType(
            f"This predictor only supports the following content types: {JSON}, {CSV}; the request has no "
            "Content-Type header"
        )
    mime, *rest = (part.strip() for part in header.split(";"))
    parameters = {k.strip().lower(): v.strip().strip('"') for k, _, v in (p.partition("=") for p in rest if p)}
    charset = parameters.pop("charset", "utf-8").lower()
    if charset != "utf-8":
        raise UnsupportedMediaType("The scoring server only supports UTF-8")
    if parameters:
        raise UnsupportedMediaType(f"Unrecognized content type parameters: {', '.join(sorted(parameters))[:200]}.")
    mime = mime.lower()
    if mime not in (JSON, CSV):
        raise UnsupportedMediaType(
            f"This predictor only supports the following content types: {JSON}, {CSV}. Got {header[:100]!r}."
        )
    return mime


def decode(body: bytes, mime: str, model: ModelVersion) -> InferenceRequest:
    meta = model.metadata()
    declared = [spec.name for spec in meta.inputs]
    table = meta.parameters.get("content_type") == "pd"
    if mime == CSV:
        return _from_columns(_csv_columns(body, meta), declared, table, {})
    payload = loads(body)
    if not isinstance(payload, dict):
        kind = "a list" if isinstance(payload, list) else type(payload).__name__
        raise InvalidInput(f"The input must be a JSON dictionary with exactly one of the input fields {_fields()}; got {kind}")
    given = [key for key in FORMATS if key in payload]
    if len(given) != 1:
        keys = ", ".join(repr(k)[:60] for k in list(payload)[:10])
        raise InvalidInput(
            f"The input must be a JSON dictionary with exactly one of the input fields {_fields()}; "
            f"the request has {keys or 'no fields'}"
        )
    key = given[0]
    params = payload.get("params")
    if params is not None and not isinstance(params, dict):
        raise InvalidInput("'params' must be a JSON object of parameter names and values")
    parameters = {"params": params} if params else {}
    value = payload[key]
    if key == "dataframe_split":
        return _from_columns(_split_columns(value, declared if table else []), declared, table, parameters)
    if key == "dataframe_records" or (isinstance(value, list) and value and all(isinstance(r, dict) for r in value)):
        return _from_columns(_record_columns(value, key), declared, table, parameters)
    if isinstance(value, dict):
        if len(value) > MAX_COLUMNS:
            raise InvalidInput(f"'{key}' names {len(value)} inputs; at most {MAX_COLUMNS}")
        return InferenceRequest([_tensor(str(name), v) for name, v in value.items()], parameters=parameters)
    if not isinstance(value, list):
        raise InvalidInput(f"'{key}' must be a list (a tensor's rows or records) or an object of named inputs")
    name = declared[0] if len(declared) == 1 else "input-0"
    return InferenceRequest([_tensor(name, value)], parameters=parameters)


def _fields() -> str:
    return ", ".join(FORMATS)


def _split_columns(value: Any, declared: list[str]) -> dict[str, list[Any]]:
    if not isinstance(value, dict) or not isinstance(value.get("data"), list):
        raise InvalidInput(
            "'dataframe_split' must be an object {\"columns\": [names], \"data\": [[row values]]} "
            "(pandas' split orient)"
        )
    rows = value["data"]
    columns = value.get("columns")
    width = len(rows[0]) if rows and isinstance(rows[0], list) else (len(columns) if isinstance(columns, list) else 0)
    if columns is None:
        columns = declared if len(declared) == width else [str(i) for i in range(width)]
    if not isinstance(columns, list) or not all(isinstance(c, str | int) for c in columns):
        raise InvalidInput("'dataframe_split.columns' must be a list of column names")
    if len(columns) > MAX_COLUMNS:
        raise InvalidInput(f"'dataframe_split' has {len(columns)} columns; at most {MAX_COLUMNS}")
    for index, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != len(columns):
            raise InvalidInput(
                f"row {index} of 'dataframe_split.data' has {len(row) if isinstance(row, list) else 'no'} values; "
                f"each row needs one per column ({len(columns)})"
            )
    return {str(name): [row[i] for row in rows] for i, name in enumerate(columns)}


def _record_columns(value: Any, key: str) -> dict[str, list[Any]]:
    if not isinstance(value, list) or not all(isinstance(r, dict) for r in value):
        raise InvalidInput(f"'{key}' must be a list of records, one {{column: value}} object per row")
    names: dict[str, None] = {}
    for record in value:
        for name in record:
            names.setdefault(name, None)
        if len(names) > MAX_COLUMNS:
            raise InvalidInput(f"'{key}' names more than {MAX_COLUMNS} columns")
    return {name: [record.get(name) for record in value] for name in names}


def _csv_columns(body: bytes, meta: Any) -> dict[str, list[Any]]:
    import pandas as pd

    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"Ensure that input is a valid UTF-8 encoded string. Error: {exc}") from None
    strings = {s.name: str for s in meta.inputs if s.datatype == "BYTES"}
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=strings or None)
    except Exception as exc:  # pandas' parser errors
        raise InvalidInput(
            "Failed to parse input as a Pandas DataFrame. Ensure that the input is a valid CSV-formatted "
            f"Pandas DataFrame produced using the `pandas.DataFrame.to_csv()` method. Error: {exc}"
        ) from None
    if len(frame.columns) > MAX_COLUMNS:
        raise InvalidInput(f"the CSV body has {len(frame.columns)} columns; at most {MAX_COLUMNS}")
    return {str(name): frame[name].tolist() for name in frame.columns}


def _from_columns(
    columns: dict[str, list[Any]], declared: list[str], table: bool, parameters: dict[str, Any]
) -> InferenceRequest:
    tensors = [_tensor(name, values) for name, values in columns.items()]
    if not table and len(declared) == 1 and len(tensors) > 1 and all(t.data.ndim == 1 for t in tensors):
        # a table sent to a model with one tensor input: its rows are that tensor's rows
        try:
            stacked = np.column_stack([t.data for t in tensors])
        except (ValueError, TypeError) as exc:
            raise InvalidInput(f"the columns do not form one tensor: {exc}") from None
        tensors = [Tensor(declared[0], as_bytes_array(stacked) if stacked.dtype.kind in "OUS" else stacked)]
    return InferenceRequest(tensors, parameters=parameters)


def _tensor(name: str, values: Any) -> Tensor:
    nesting_depth(values, name)
    if isinstance(values, list) and any(v is None for v in _flat(values)):
        values = _nulls(values)
    try:
        data = np.asarray(values)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"input {name!r} is not a rectangular array: {exc}") from None
    if data.dtype.kind in ("U", "S", "O"):
        if data.dtype.kind == "O" and any(isinstance(v, dict | list) for v in data.reshape(-1)):
            raise InvalidInput(f"input {name!r} is not a rectangular array of numbers or strings")
        data = as_bytes_array(data)
    return Tensor(name, data)


def _flat(values: list[Any]) -> list[Any]:
    out: list[Any] = []
    level: list[Any] = [values]
    while level:
        nxt: list[Any] = []
        for item in level:
            if isinstance(item, list):
                nxt.extend(item)
            else:
                out.append(item)
        level = nxt
    return out


def _nulls(values: Any) -> Any:
    """JSON nulls among numbers as NaN (pandas reads them so)."""
    if isinstance(values, list):
        return [_nulls(v) for v in values]
    return math.nan if values is None else values


# -- answers -------------------------------------------------------------------------
def encode(response: InferenceResponse) -> bytes:
    outputs = response.outputs
    if response.parameters.get("content_type") == "pd":
        columns = [(t.name, _values(t)) for t in outputs]
        rows = len(columns[0][1]) if columns else 0
        predictions: Any = [{name: values[i] for name, values in columns} for i in range(rows)]
    elif len(outputs) == 1:
        predictions = _values(outputs[0])
    else:
        predictions = {t.name: _values(t) for t in outputs}
    return orjson.dumps({"predictions": predictions}, option=orjson.OPT_SERIALIZE_NUMPY)


def _values(tensor: Tensor) -> list[Any]:
    data = tensor.data
    if data.dtype.kind == "O":
        flat = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in data.reshape(-1)]
        return np.array(flat, dtype=object).reshape(data.shape).tolist()  # type: ignore[no-any-return]
    return data.tolist()  # type: ignore[no-any-return]


def mlflow_version() -> str:
    try:
        return package_metadata.version("mlflow")
    except package_metadata.PackageNotFoundError:
        try:
            return package_metadata.version("mlflow-skinny")
        except package_metadata.PackageNotFoundError:
            return "none"


def routes(ctx: ServerContext) -> list[Route]:
    version = mlflow_version().encode()

    async def invocations(request: Request) -> Response:
        mime = media_type(request.headers.get("content-type"))
        body = await request.body()
        name = served_model(ctx)
        payload = await ctx.dataplane.serve(
            Target(name), lambda model: decode(body, mime, model), encode,
            protocol=PROTOCOL, timeout=header_timeout(request.headers),
        )
        return Response(payload)

    async def health(request: Request) -> Response:
        name = served_model(ctx)
        ready = any(m.ready for m in ctx.registry.select(name))
        return Response(b"\n", 200 if ready else 503)

    async def mlflow_version_call(request: Request) -> Response:
        return Response(version)

    e = error_response
    return [
        route("POST", "/invocations", invocations, e),
        route("GET", "/health", health, e),
        route("GET", "/version", mlflow_version_call, e),
    ]


SKIN = Skin(name="mlflow", mounts=lambda ctx: [Mount(MAIN, routes(ctx), error_response)])

__all__ = ["SKIN", "decode", "encode", "error_response", "routes", "served_model"]
