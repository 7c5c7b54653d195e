"""Named-tensor entry points of graph models (TensorFlow signatures, ONNX graphs):
binding a request's tensors to declared inputs and picking requested outputs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from servekit.errors import InvalidInput
from servekit.tensors import InferenceRequest, Tensor, TensorSpec, as_bytes_array, dtype_of

Feeds = dict[str, np.ndarray]


@dataclass
class Signature:
    """One callable entry point: declared inputs/outputs and how to run it."""

    name: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    call: Callable[[Feeds, list[str]], Feeds]
    method_name: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {
            "inputs": [s.to_dict() for s in self.inputs],
            "outputs": [s.to_dict() for s in self.outputs],
            "method_name": self.method_name,
        }


def bind_inputs(
    signature: Signature, request: InferenceRequest, model: str, *, check_shapes: bool = True
) -> Feeds:
    """The request's tensors by declared input name, cast and (unless
    ``check_shapes`` is off: the graph decides) shape-checked.

    A lone tensor feeds a lone input whatever its name (TF Serving's unnamed
    ``instances``, V2 clients that call it ``input-0``).
    """
    specs = {s.name: s for s in signature.inputs}
    given = {t.name: t for t in request.inputs}
    if len(specs) == 1 and len(given) == 1:
        ((spec_name, spec),) = specs.items()
        ((_, tensor),) = given.items()
        return {spec_name: _cast(tensor, spec, model, check_shapes)}
    missing = [n for n in specs if n not in given]
    unknown = [n for n in given if n not in specs]
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing)}")
        if unknown:
            parts.append(f"unknown {', '.join(unknown)}")
        raise InvalidInput(
            f"model {model!r} ({signature.name}) takes inputs {', '.join(specs)}; "
            + "; ".join(parts)
        )
    return {name: _cast(given[name], spec, model, check_shapes) for name, spec in specs.items()}


def output_names(signature: Signature, request: InferenceRequest, model: str) -> list[str]:
    """Requested outputs (all by default), checked against the declared ones."""
    declared = [s.name for s in signature.outputs]
    names = request.output_names or declared
    for name in names:
        if name not in declared:
            raise InvalidInput(
                f"model {model!r} ({signature.name}) has no output {name!r}; "
                f"available: {', '.join(declared)}"
            )
    return names


def output_tensors(values: Feeds, names: list[str]) -> list[Tensor]:
    out = []
    for name in names:
        data = np.asarray(values[name])
        if data.dtype.kind in ("U", "S", "O"):
            data = as_bytes_array(data)
        out.append(Tensor(name, data))
    return out


def _cast(tensor: Tensor, spec: TensorSpec, model: str, check_shapes: bool = True) -> np.ndarray:
    data = tensor.data
    target = dtype_of(spec.datatype)
    if spec.datatype == "BYTES":
        if data.dtype.kind not in ("O", "U", "S"):
            raise InvalidInput(f"input {spec.name!r} of model {model!r} takes strings (BYTES)")
        data = as_bytes_array(data)
    elif data.dtype != target:
        kind = data.dtype.kind
        if kind in ("O", "U", "S"):
            raise InvalidInput(
                f"input {spec.name!r} of model {model!r} takes {spec.datatype} numbers, not strings"
            )
        if target.kind in "iu" and kind == "f" and data.size and not np.all(np.mod(data, 1) == 0):
            raise InvalidInput(
                f"input {spec.name!r} of model {model!r} takes integers ({spec.datatype}), "
                "got fractional numbers"
            )
        data = data.astype(target)
    if check_shapes:
        _check_shape(data, spec, model)
    return data


def _check_shape(data: np.ndarray, spec: TensorSpec, model: str) -> None:
    if not spec.shape:
        return
    if data.ndim != len(spec.shape) or any(
        d >= 0 and d != got for d, got in zip(spec.shape, data.shape, strict=False)
    ):
        raise InvalidInput(
            f"input {spec.name!r} of model {model!r} needs shape {spec.shape} (-1: any), "
            f"got {list(data.shape)}"
        )
