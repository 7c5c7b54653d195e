"""Serving typed library models (``servekit.Model`` / ``AsyncModel``) as runtimes.

A repository entry names the class (``"implementation": "sentiment.Classifier"``);
its folder is on ``sys.path``. The model and its dependencies are built with a
:class:`~servekit.library.ModelLibrary` over the class's top-level package (or
the packages in ``parameters.extra.models``); ``parameters.extra.configuration``
picks the ``CONFIGURATIONS`` key (default: the entry's name if it is one,
else the class's first key).

V2 tensors follow the types: one input ``input`` of shape ``[-1, 1]`` whose
rows are the items — ``BYTES`` with content type ``str`` for ``str``, numbers
for ``int``/``float``/``bool``, ``[-1, -1]`` numbers for lists of numbers, and
``BYTES`` with content type ``json`` (each element one JSON document) for
anything else. Several input tensors become the fields of one object per row.
The output ``output`` follows the same rules. Rows are independent, so the
adaptive batcher merges concurrent requests into one ``predict_batch``.
"""

from __future__ import annotations

import typing
from typing import Any, ClassVar

import numpy as np
import orjson

from servekit.errors import InvalidInput, ModelLoadError, ServekitError
from servekit.runtimes.adapters import register_adapter
from servekit.runtimes.base import Runtime
from servekit.tensors import InferenceRequest, InferenceResponse, Tensor, TensorSpec

PLATFORM = "servekit-python"
OPENAPI_REF = "#/components/schemas/{model}"
_NUMBER = {bool: "BOOL", int: "INT64", float: "FP64"}


def tensor_kind(tp: Any) -> tuple[str, str | None, int]:
    """(datatype, content type, rank) a Python type travels as in V2."""
    if tp is str:
        return "BYTES", "str", 1
    if tp in _NUMBER:
        return _NUMBER[tp], None, 1
    if typing.get_origin(tp) in (list, tuple) and tp is not Any:
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        if args and all(a in _NUMBER and a is not bool for a in args):
            return ("FP64" if float in args else "INT64"), None, 2
    return "BYTES", "json", 1


def _element(value: Any, content_type: str | None, wants_text: bool) -> Any:
    if not isinstance(value, bytes):
        return value.item() if isinstance(value, np.generic) else value
    if content_type == "json" or (content_type != "str" and not wants_text):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            if content_type == "json":
                raise InvalidInput(f"input element is not valid JSON: {value[:60]!r}") from None
    return value.decode("utf-8", "replace")


def decode_items(request: InferenceRequest, input_type: Any) -> list[Any]:
    """One item per row along axis 0 of the input tensors."""
    if not request.inputs:
        raise InvalidInput("the request has no inputs")
    _, _, rank = tensor_kind(input_type)
    wants_text = input_type is str

    def rows(tensor: Tensor) -> list[Any]:
        data = tensor.data
        if data.ndim == 0:
            data = data.reshape(1)
        content_type = tensor.content_type
        out = []
        for row in data:
            if isinstance(row, np.ndarray):
                values = [_element(v, content_type, wants_text) for v in row.reshape(-1)]
                out.append(values[0] if len(values) == 1 and rank == 1 else values)
            else:
                out.append(_element(row, content_type, wants_text))
        return out

    if len(request.inputs) == 1:
        return rows(request.inputs[0])
    columns = {t.name: rows(t) for t in request.inputs}
    counts = {len(c) for c in columns.values()}
    if len(counts) != 1:
        raise InvalidInput("all input tensors must have the same number of rows")
    return [{name: column[i] for name, column in columns.items()} for i in range(counts.pop())]


def encode_outputs(values: list[Any], output_type: Any, to_json: Any) -> Tensor:
    """The output tensor for a list of validated results."""
    datatype, content_type, rank = tensor_kind(output_type)
    if output_type is Any:
        datatype, content_type, rank = _guess(values)
    if content_type == "str":
        data = np.empty(len(values), dtype=object)
        data[:] = [v.encode("utf-8") for v in values]
        return Tensor("output", data, "BYTES", {"content_type": "str"})
    if datatype != "BYTES":
        array = np.asarray(values)
        if rank == 1 or array.dtype != object:
            return Tensor("output", array.astype(_DTYPES[datatype]), datatype)
    data = np.empty(len(values), dtype=object)
    data[:] = [orjson.dumps(to_json(v), option=orjson.OPT_SERIALIZE_NUMPY) for v in values]
    return Tensor("output", data, "BYTES", {"content_type": "json"})


_DTYPES = {"BOOL": np.bool_, "INT64": np.int64, "FP64": np.float64}


def _guess(values: list[Any]) -> tuple[str, str | None, int]:
    if values and all(isinstance(v, str) for v in values):
        return "BYTES", "str", 1
    for tp in (bool, int, float):
        if values and all(type(v) is tp for v in values):
            return _NUMBER[tp], None, 1
    return "BYTES", "json", 1


def _spec(name: str, tp: Any, output: bool) -> TensorSpec:
    datatype, content_type, rank = tensor_kind(tp)
    shape = [-1, -1] if rank == 2 else ([-1] if output else [-1, 1])
    return TensorSpec(name, datatype, shape, {"content_type": content_type} if content_type else {})


class PythonModelRuntime(Runtime):
    """Runs one typed library model; subclassed per model class by the adapter."""

    platform: ClassVar[str] = PLATFORM
    batch_axis: ClassVar[int | None] = 0
    model_class: ClassVar[Any] = None

    def load(self) -> None:
        from servekit.library import LibrarySettings, ModelLibrary

        cls = self.model_class
        extra = self.settings.parameters.extra
        key = extra.get("configuration")
        if not key:
            key = self.name if self.name in cls.CONFIGURATIONS else cls.default_configuration_key()
        packages = extra.get("models") or cls.__module__.split(".")[0]
        if isinstance(packages, str):
            packages = [packages]
        overrides = {k: v for k, v in extra.items() if k in LibrarySettings.model_fields}
        settings = LibrarySettings.from_env().model_copy(update=overrides)
        try:
            self.library = ModelLibrary([cls, *packages], required_models=[key], settings=settings)
        except Exception as exc:
            raise ModelLoadError(f"model {self.name!r}: {getattr(exc, 'message', exc)}") from exc
        self.model: Any = self.library.get(key)
        self.signature = cls.signature()
        self.ready = True

    def unload(self) -> None:
        self.library.close()

    def run(self, items: list[Any]) -> list[Any]:
        try:
            return list(self.model.predict_batch(items))
        except ServekitError as exc:
            self.as_served(exc)
            raise

    def as_served(self, exc: ServekitError) -> None:
        """``exc`` naming the model as clients call it (``'sentiment'``), not by
        its configuration key in the library (``'classifier'``)."""
        key = getattr(self.model, "configuration_key", None)
        if key and key != self.name:
            exc.message = exc.message.replace(f"model {key!r}", f"model {self.name!r}")
            exc.args = (exc.message,)

    def predict(self, request: InferenceRequest) -> InferenceResponse:
        items = decode_items(request, self.signature.input_type)
        return self.finish(request, self.run(items))

    def finish(self, request: InferenceRequest, results: list[Any]) -> InferenceResponse:
        output = encode_outputs(results, self.signature.output_type, self.signature.output_json)
        return self.response(request, [output])

    def input_specs(self) -> list[TensorSpec]:
        return super().input_specs() or [_spec("input", self.model_class.signature().input_type, False)]

    def output_specs(self) -> list[TensorSpec]:
        return super().output_specs() or [_spec("output", self.model_class.signature().output_type, True)]

    def metadata(self) -> Any:
        meta = super().metadata()
        signature = self.model_class.signature()
        meta.parameters = {
            "typed": True,
            "signature": signature.describe(),
            # OpenAPI's form: shared definitions under "$defs", referenced as components
            "input_schema": signature.input_schema(OPENAPI_REF),
            "output_schema": signature.output_schema(OPENAPI_REF),
        }
        return meta


class AsyncPythonModelRuntime(PythonModelRuntime):
    """An ``AsyncModel``: ``predict`` runs on the event loop."""

    is_async: ClassVar[bool] = True

    async def predict(self, request: InferenceRequest) -> InferenceResponse:  # type: ignore[override]
        items = decode_items(request, self.signature.input_type)
        try:
            results = list(await self.model.predict_batch(items))
        except ServekitError as exc:
            self.as_served(exc)
            raise
        return self.finish(request, results)


def adapt_library_model(cls: Any) -> type[Runtime] | None:
    """The runtime for a ``servekit.Model`` / ``AsyncModel`` subclass, else None."""
    if not isinstance(cls, type):
        return None
    from servekit.library.model import AsyncModel, ModelBase

    if not issubclass(cls, ModelBase):
        return None
    base = AsyncPythonModelRuntime if issubclass(cls, AsyncModel) else PythonModelRuntime
    return type(f"{cls.__name__}Runtime", (base,), {"model_class": cls})


register_adapter(adapt_library_model)
