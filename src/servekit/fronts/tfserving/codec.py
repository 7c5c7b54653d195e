"""TF Serving's REST JSON: ``instances`` (row) and ``inputs`` (columnar) request
formats, ``{"b64": …}`` binary values, ``predictions`` / ``outputs`` replies,
and the tf.Example-style ``examples`` of classify and regress.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import numpy as np
import orjson

from servekit.errors import InvalidInput
from servekit.tensors import MAX_DIMS, InferenceRequest, InferenceResponse, Tensor, nesting_depth

# name given to an unnamed input: runtimes feed a lone tensor to a lone input
UNNAMED_INPUT = "inputs"
_DUMP = orjson.OPT_SERIALIZE_NUMPY


def loads(body: bytes) -> dict[str, Any]:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"request body is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise InvalidInput("request body must be a JSON object")
    return document


def decode_predict(body: bytes) -> tuple[InferenceRequest, bool]:
    """(request, whether the row format was used)."""
    document = loads(body)
    parameters = _signature(document)
    has_rows, has_columns = "instances" in document, "inputs" in document
    if has_rows == has_columns:
        raise InvalidInput(
            "send exactly one of 'instances' (row format) or 'inputs' (columnar format)"
        )
    tensors = _rows(document["instances"]) if has_rows else _columns(document["inputs"])
    return InferenceRequest(inputs=tensors, parameters=parameters), has_rows


def _signature(document: dict[str, Any]) -> dict[str, Any]:
    name = document.get("signature_name")
    if name is None or name == "":
        return {}
    if not isinstance(name, str):
        raise InvalidInput("'signature_name' must be a string")
    return {"signature_name": name}


def _rows(instances: Any) -> list[Tensor]:
    if not isinstance(instances, list) or not instances:
        raise InvalidInput("'instances' must be a non-empty list")
    first = instances[0]
    if isinstance(first, dict) and "b64" not in first:
        names = list(first)
        for i, row in enumerate(instances):
            if not isinstance(row, dict) or set(row) != set(names):
                raise InvalidInput(
                    f"instances[{i}] must have the same named inputs as instances[0] "
                    f"({', '.join(names)})"
                )
        return [Tensor(n, to_array([row[n] for row in instances], n)) for n in names]
    return [Tensor(UNNAMED_INPUT, to_array(instances, UNNAMED_INPUT))]


def _columns(inputs: Any) -> list[Tensor]:
    if isinstance(inputs, dict) and "b64" not in inputs:
        if not inputs:
            raise InvalidInput("'inputs' must name at least one input")
        return [Tensor(n, to_array(v, n)) for n, v in inputs.items()]
    return [Tensor(UNNAMED_INPUT, to_array(inputs, UNNAMED_INPUT))]


def to_array(value: Any, name: str) -> np.ndarray:
    """A JSON value as a numpy array: numbers stay numeric, strings and
    ``{"b64": …}`` become BYTES."""
    leaf = value
    depth = 0
    while isinstance(leaf, list) and leaf:
        leaf = leaf[0]
        depth += 1
    if depth > MAX_DIMS:
        nesting_depth(value, name)  # raises, naming the limit
    if isinstance(leaf, (dict, str, bytes)):
        return _bytes_array(value, name)
    try:
        array = np.asarray(value)
    except ValueError as exc:
        raise InvalidInput(f"input {name!r}: lists are ragged ({exc})") from None
    if array.ndim > MAX_DIMS:
        nesting_depth(value, name)
    if array.dtype.kind not in "biuf":
        raise InvalidInput(
            f"input {name!r} mixes numbers with other values or has ragged lists; "
            "every row must have the same shape"
        )
    return array


def _bytes_array(value: Any, name: str) -> np.ndarray:
    nesting_depth(value, name)  # bounds the recursion of convert

    def convert(item: Any) -> Any:
        if isinstance(item, list):
            return [convert(i) for i in item]
        if isinstance(item, dict):
            encoded = item.get("b64")
            if len(item) != 1 or not isinstance(encoded, str):
                raise InvalidInput(f"input {name!r}: binary values are written {{\"b64\": \"…\"}}")
            try:
                return base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                raise InvalidInput(f"input {name!r}: {encoded[:20]!r}… is not valid base64") from None
        if isinstance(item, str):
            return item.encode("utf-8")
        if isinstance(item, bytes):
            return item
        raise InvalidInput(f"input {name!r} mixes strings with other values")

    converted = convert(value)
    try:
        array = np.array(converted, dtype=object)
    except ValueError as exc:
        raise InvalidInput(f"input {name!r}: lists are ragged ({exc})") from None
    if any(isinstance(v, list) for v in array.flat):
        raise InvalidInput(f"input {name!r}: nested lists must all have the same length")
    return array


def jsonable(tensor: Tensor) -> Any:
    """A tensor's values for orjson: numpy stays numpy, bytes become text or b64."""
    data = tensor.data
    if data.dtype.kind in "OSU":
        as_b64 = tensor.name.endswith("_bytes")
        return _texts(data.tolist(), as_b64)
    if data.dtype == np.float16:
        data = data.astype(np.float32)
    if data.ndim == 0:
        return data.item()
    if not data.flags.c_contiguous or data.dtype.byteorder == ">":
        data = np.ascontiguousarray(data, dtype=data.dtype.newbyteorder("="))
    return data


def _texts(value: Any, as_b64: bool) -> Any:
    if isinstance(value, list):
        return [_texts(v, as_b64) for v in value]
    if isinstance(value, bytes):
        if not as_b64:
            try:
                return value.decode("utf-8")
            except UnicodeDecodeError:
                pass
        return {"b64": base64.b64encode(value).decode("ascii")}
    return value


def encode_predict(response: InferenceResponse, rows: bool) -> bytes:
    outputs = response.outputs
    if not rows:
        if len(outputs) == 1:
            return orjson.dumps({"outputs": jsonable(outputs[0])}, option=_DUMP)
        return orjson.dumps({"outputs": {t.name: jsonable(t) for t in outputs}}, option=_DUMP)
    if len(outputs) == 1:
        return orjson.dumps({"predictions": jsonable(outputs[0])}, option=_DUMP)
    counts = {t.data.shape[0] if t.data.ndim else 1 for t in outputs}
    if len(counts) != 1 or any(t.data.ndim == 0 for t in outputs):
        raise InvalidInput(
            "the outputs have different batch sizes, which the row format ('instances') "
            "cannot express; send 'inputs' (columnar format) instead"
        )
    columns = [(t.name, jsonable(t)) for t in outputs]
    predictions = [{name: _row(values, i) for name, values in columns} for i in range(counts.pop())]
    return orjson.dumps({"predictions": predictions}, option=_DUMP)


def _row(values: Any, index: int) -> Any:
    row = values[index]
    # orjson takes numpy arrays but not every numpy scalar type (int64 is longlong here)
    return row.item() if isinstance(row, np.generic) else row


def decode_examples(body: bytes) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(examples with the context merged in, request parameters) of classify/regress."""
    document = loads(body)
    examples = document.get("examples")
    if not isinstance(examples, list) or not examples:
        raise InvalidInput("'examples' must be a non-empty list of {feature: value} objects")
    context = document.get("context") or {}
    if not isinstance(context, dict):
        raise InvalidInput("'context' must be an object of {feature: value}")
    merged = []
    for i, example in enumerate(examples):
        if not isinstance(example, dict) or not example:
            raise InvalidInput(f"examples[{i}] must be an object of {{feature: value}}")
        merged.append({**context, **example})
    return merged, _signature(document)


def examples_request(
    examples: list[dict[str, Any]], input_names: list[str], parameters: dict[str, Any],
    serialized_input: str | None = None,
) -> InferenceRequest:
    """What classify/regress feed the model. A signature that takes one string
    tensor (TensorFlow's ``tf.Example`` parsers, as TF Serving requires) gets
    the examples as serialized ``tf.Example`` protos in ``serialized_input``;
    other models get named inputs when the features are the model's inputs,
    else one table whose columns are the features in the first example's order."""
    if serialized_input is not None:
        data = np.empty(len(examples), dtype=object)
        data[:] = [serialize_example(e, i) for i, e in enumerate(examples)]
        return InferenceRequest(inputs=[Tensor(serialized_input, data)], parameters=parameters)
    features = list(examples[0])
    for i, example in enumerate(examples):
        if set(example) != set(features):
            raise InvalidInput(f"examples[{i}] has other features than examples[0]")
    if set(features) <= set(input_names) or len(input_names) > 1:
        tensors = [Tensor(f, to_array([e[f] for e in examples], f)) for f in features]
    else:
        table = [[v for f in features for v in _flat(e[f])] for e in examples]
        tensors = [Tensor(UNNAMED_INPUT, to_array(table, UNNAMED_INPUT))]
    return InferenceRequest(inputs=tensors, parameters=parameters)


def serialize_example(example: dict[str, Any], index: int) -> bytes:
    """A ``tf.Example`` of feature -> value: floats in float_list, integers in
    int64_list, strings, bytes and ``{"b64": …}`` in bytes_list (a list: its values)."""
    from servekit.protocols.generated.tfserving import tensorflow_pb2 as tfpb

    message = tfpb.Example()
    for name, value in example.items():
        values = value if isinstance(value, list) else [value]
        feature = message.features.feature[name]
        if not values:
            feature.float_list.SetInParent()
            continue
        kinds = {_feature_kind(v, name, index) for v in values}
        if len(kinds) != 1:
            raise InvalidInput(f"examples[{index}] feature {name!r} mixes numbers and strings")
        kind = kinds.pop()
        if kind == "bytes_list":
            feature.bytes_list.value.extend(_example_bytes(v, name) for v in values)
        elif kind == "int64_list" and all(isinstance(v, int) for v in values):
            feature.int64_list.value.extend(values)
        else:
            feature.float_list.value.extend(float(v) for v in values)
    return bytes(message.SerializeToString())


def _feature_kind(value: Any, name: str, index: int) -> str:
    if isinstance(value, int):  # bool too
        return "int64_list"
    if isinstance(value, float):
        return "float_list"
    if isinstance(value, (str, bytes, dict)):
        return "bytes_list"
    raise InvalidInput(
        f"examples[{index}] feature {name!r}: {type(value).__name__} is not a feature value "
        "(numbers, strings, {\"b64\": …} or lists of them)"
    )


def _example_bytes(value: Any, name: str) -> bytes:
    converted = _bytes_array([value], name)[0]
    return converted if isinstance(converted, bytes) else str(converted).encode("utf-8")


def _flat(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def regress_values(response: InferenceResponse, count: int) -> np.ndarray:
    """One float64 per example: the regression output of each."""
    tensor = _pick(response, ("outputs", "predictions", "scores"))
    values = tensor.data.reshape(count, -1)
    if values.shape[1] != 1 or values.dtype.kind not in "biuf":
        raise InvalidInput(
            f"regress needs one number per example; output {tensor.name!r} has shape "
            f"{list(tensor.data.shape)}"
        )
    return values[:, 0].astype(np.float64)


def encode_regress(response: InferenceResponse, count: int) -> bytes:
    return orjson.dumps({"results": regress_values(response, count)}, option=_DUMP)


def classify_results(response: InferenceResponse, count: int) -> list[list[tuple[str, float | None]]]:
    """Per example, its (label, score) pairs: labels from a ``classes`` output
    (a ``scores`` output alone: empty labels, as TF Serving answers; a
    probability table: the column index), scores from ``scores`` or a
    probability table (None when the model gives classes only)."""
    by_name = {t.name: t for t in response.outputs}
    scores = by_name.get("scores")
    classes = by_name.get("classes")
    index_labels = scores is None and classes is None
    if index_labels:
        tensor = _pick(response, ("probabilities", "predict_proba"))
        if tensor.data.dtype.kind == "f" and tensor.data.reshape(count, -1).shape[1] > 1:
            scores = tensor
        else:
            classes = tensor
    score_rows = scores.data.reshape(count, -1).astype(np.float64) if scores is not None else None
    class_rows = classes.data.reshape(count, -1) if classes is not None else None
    rows = score_rows if score_rows is not None else class_rows
    assert rows is not None
    return [
        [
            (
                _label(class_rows[i, j]) if class_rows is not None else (str(j) if index_labels else ""),
                float(score_rows[i, j]) if score_rows is not None else None,
            )
            for j in range(rows.shape[1])
        ]
        for i in range(count)
    ]


def encode_classify(response: InferenceResponse, count: int) -> bytes:
    results = [
        [[label, score] if score is not None else [label] for label, score in row]
        for row in classify_results(response, count)
    ]
    return orjson.dumps({"results": results})


def _label(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value.item() if hasattr(value, "item") else value)


def _pick(response: InferenceResponse, preferred: tuple[str, ...]) -> Tensor:
    for name in preferred:
        for tensor in response.outputs:
            if tensor.name == name:
                return tensor
    if not response.outputs:
        raise InvalidInput("the model returned no outputs")
    return response.outputs[0]
