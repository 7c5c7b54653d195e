"""A model's typed signature: the ``InputT``/``OutputT`` of ``Model[InputT, OutputT]``,
validated with pydantic, with errors that name the offending field."""

from __future__ import annotations

import hashlib
import typing
from typing import Any, TypeVar

import orjson
from pydantic import TypeAdapter, ValidationError

from servekit.errors import InvalidInput, ServekitError


class ItemValidationError(InvalidInput):
    """An item given to ``predict`` does not fit the model's input type (400)."""


class ReturnValueError(ServekitError):
    """``_predict`` returned something that does not fit the output type (500)."""


def describe_validation_error(exc: ValidationError) -> str:
    """``field 'a.b': Input should be a valid string (got 3)`` for each error."""
    parts = []
    for error in exc.errors()[:5]:
        location = ".".join(str(p) for p in error["loc"])
        where = f"field {location!r}" if location else "the value"
        got = error.get("input")
        shown = repr(got)
        if len(shown) > 60:
            shown = shown[:57] + "..."
        parts.append(f"{where}: {error['msg']} (got {shown})")
    more = len(exc.errors()) - 5
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)


def _generic_args(cls: type, bases: tuple[type, ...]) -> tuple[Any, Any] | None:
    """The (InputT, OutputT) a class binds on one of ``bases``, following subclasses."""
    for klass in cls.__mro__:
        for base in getattr(klass, "__orig_bases__", ()):
            origin = typing.get_origin(base)
            if isinstance(origin, type) and issubclass(origin, bases):
                args = typing.get_args(base)
                if len(args) == 2 and not any(isinstance(a, TypeVar) for a in args):
                    return args[0], args[1]
    return None


class Signature:
    """Validation and encoding for one model class's input and output types."""

    def __init__(self, input_type: Any, output_type: Any) -> None:
        self.input_type = input_type
        self.output_type = output_type
        self.typed_input = input_type is not Any
        self.typed_output = output_type is not Any
        self.input_adapter: TypeAdapter[Any] = TypeAdapter(input_type)
        self.output_adapter: TypeAdapter[Any] = TypeAdapter(output_type)

    @classmethod
    def of(cls, model_class: type, bases: tuple[type, ...]) -> Signature:
        args = _generic_args(model_class, bases)
        return cls(*(args or (Any, Any)))

    def validate_input(self, item: Any, model: str) -> Any:
        if not self.typed_input:
            return item
        try:
            return self.input_adapter.validate_python(item)
        except ValidationError as exc:
            raise ItemValidationError(
                f"model {model!r}: invalid input: {describe_validation_error(exc)}"
            ) from None

    def validate_output(self, value: Any, model: str) -> Any:
        if not self.typed_output:
            return value
        try:
            return self.output_adapter.validate_python(value)
        except ValidationError as exc:
            raise ReturnValueError(
                f"model {model!r} returned a value that does not fit its output type: "
                f"{describe_validation_error(exc)}"
            ) from None

    def input_key(self, item: Any, kwargs: dict[str, Any]) -> str:
        """A stable hash of a validated item (and call options), for cache keys."""
        data = self.input_adapter.dump_python(item, mode="json") if self.typed_input else item
        raw = orjson.dumps([data, kwargs], option=orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY)
        return hashlib.sha256(raw).hexdigest()

    def dump_output(self, value: Any) -> bytes:
        if self.typed_output:
            return self.output_adapter.dump_json(value)
        return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)

    def load_output(self, raw: bytes) -> Any:
        if self.typed_output:
            return self.output_adapter.validate_json(raw)
        return orjson.loads(raw)

    def input_json(self, item: Any) -> Any:
        return self.input_adapter.dump_python(item, mode="json") if self.typed_input else item

    def output_json(self, value: Any) -> Any:
        if self.typed_output:
            return self.output_adapter.dump_python(value, mode="json")
        return value

    def input_schema(self, ref_template: str = "#/$defs/{model}") -> dict[str, Any]:
        """JSON schema of the input type (``{}`` when untyped)."""
        if not self.typed_input:
            return {}
        return self.input_adapter.json_schema(ref_template=ref_template)

    def output_schema(self, ref_template: str = "#/$defs/{model}") -> dict[str, Any]:
        if not self.typed_output:
            return {}
        return self.output_adapter.json_schema(ref_template=ref_template)

    def describe(self) -> str:
        return f"{_type_name(self.input_type)} -> {_type_name(self.output_type)}"


def _type_name(tp: Any) -> str:
    if isinstance(tp, type) and not typing.get_args(tp):
        return tp.__name__
    return str(tp).replace("typing.", "")
