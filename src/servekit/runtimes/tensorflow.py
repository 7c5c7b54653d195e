"""TensorFlow SavedModels (every signature; ``serving_default`` unless the
request's ``signature_name`` parameter says otherwise) and Keras ``.keras`` /
``.h5`` files. Needs TensorFlow's CPU package: ``pip install 'servekit[tensorflow]'``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from servekit.errors import InvalidInput, ModelLoadError
from servekit.runtimes.base import Runtime
from servekit.runtimes.signature import (
    Feeds,
    Signature,
    bind_inputs,
    output_names,
    output_tensors,
)
from servekit.tensors import (
    InferenceRequest,
    InferenceResponse,
    ModelMetadata,
    TensorSpec,
    datatype_of,
)

log = logging.getLogger("servekit.runtimes")

DEFAULT_SIGNATURE = "serving_default"
PREDICT_METHOD = "tensorflow/serving/predict"
KERAS_SUFFIXES = (".keras", ".h5")


def import_tensorflow() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TF's C++ start-up chatter out
    try:
        import tensorflow as tf
    except ImportError as exc:
        raise ModelLoadError(
            f"TensorFlow is not installed ({exc}); pip install 'servekit[tensorflow]'"
        ) from exc
    return tf


class TensorFlowRuntime(Runtime):
    platform: ClassVar[str] = "tensorflow"
    batch_axis: ClassVar[int | None] = 0
    fork_safe: ClassVar[bool] = False  # its thread pools do not survive fork

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.signatures: dict[str, Signature] = {}
        self._model: Any = None

    def model_path(self) -> Path:
        path = self.settings.resolved_uri()
        if path is None or not path.exists():
            raise ModelLoadError(f"model {self.name!r}: {path} does not exist")
        if path.name in ("saved_model.pb", "saved_model.pbtxt"):
            return path.parent
        if path.is_dir() and not any((path / n).exists() for n in ("saved_model.pb", "saved_model.pbtxt")):
            files = sorted(p for p in path.iterdir() if p.suffix in KERAS_SUFFIXES)
            if not files:
                raise ModelLoadError(
                    f"model {self.name!r}: {path} holds neither saved_model.pb nor a .keras file"
                )
            return files[0]
        return path

    def load(self) -> None:
        tf = import_tensorflow()
        _limit_threads(tf)
        path = self.model_path()
        try:
            if path.is_dir():
                self._load_saved_model(tf, path)
            else:
                self._load_keras(tf, path)
        except ModelLoadError:
            raise
        except Exception as exc:  # TF raises many types for a bad model
            raise ModelLoadError(f"cannot load {path}: {type(exc).__name__}: {exc}") from exc
        if not self.signatures:
            raise ModelLoadError(f"model {self.name!r} at {path} has no callable signatures")
        self.ready = True

    def _load_saved_model(self, tf: Any, path: Path) -> None:
        loaded = tf.saved_model.load(str(path))
        self._model = loaded
        defs = _signature_defs(path)
        for name, function in loaded.signatures.items():
            _, kwargs = function.structured_input_signature
            outputs = function.structured_outputs
            if not isinstance(outputs, dict):
                outputs = {"output_0": outputs}
            definition = defs.get(name)
            self.signatures[name] = Signature(
                name=name,
                inputs=[_spec(k, v, definition, "inputs") for k, v in sorted(kwargs.items())],
                outputs=[_spec(k, v, definition, "outputs") for k, v in sorted(outputs.items())],
                call=_saved_model_call(tf, function),
                method_name=definition.method_name if definition is not None else PREDICT_METHOD,
            )

    def _load_keras(self, tf: Any, path: Path) -> None:
        import keras

        model = keras.models.load_model(str(path), compile=False)
        self._model = model
        inputs = [
            TensorSpec(t.name, _datatype(tf, t.dtype), _dims(t.shape)) for t in model.inputs
        ]
        names = list(getattr(model, "output_names", None) or [])
        if len(names) != len(model.outputs):
            names = [f"output_{i}" for i in range(len(model.outputs))]
        outputs = [
            TensorSpec(n, _datatype(tf, t.dtype), _dims(t.shape))
            for n, t in zip(names, model.outputs, strict=True)
        ]
        order = [s.name for s in inputs]

        def call(feeds: Feeds, wanted: list[str]) -> Feeds:
            args = [feeds[n] for n in order]
            result = model(args[0] if len(args) == 1 else args, training=False)
            if isinstance(result, dict):
                values = list(result.values())
            elif isinstance(result, (list, tuple)):
                values = list(result)
            else:
                values = [result]
            return {n: np.asarray(v) for n, v in zip(names, values, strict=True) if n in wanted}

        self.signatures[DEFAULT_SIGNATURE] = Signature(
            DEFAULT_SIGNATURE, inputs, outputs, call, PREDICT_METHOD
        )

    def signature(self, name: Any) -> Signature:
        if name in (None, ""):
            if DEFAULT_SIGNATURE in self.signatures or len(self.signatures) != 1:
                name = DEFAULT_SIGNATURE
            else:
                name = next(iter(self.signatures))
        signature = self.signatures.get(str(name))
        if signature is None:
            raise InvalidInput(
                f"model {self.name!r} has no signature {name!r}; available: "
                f"{', '.join(sorted(self.signatures))}"
            )
        return signature

    def predict(self, request: InferenceRequest) -> InferenceResponse:
        signature = self.signature(request.parameters.get("signature_name"))
        feeds = bind_inputs(signature, request, self.name)
        names = output_names(signature, request, self.name)
        try:
            values = signature.call(feeds, names)
        except Exception as exc:  # TF's InvalidArgumentError and friends
            message = getattr(exc, "message", None) or str(exc)
            raise InvalidInput(f"model {self.name!r} rejected the input: {message}") from None
        return self.response(request, output_tensors(values, names))

    def unload(self) -> None:
        self.signatures.clear()
        self._model = None

    def metadata(self) -> ModelMetadata:
        default = self.signature(None)
        return ModelMetadata(
            name=self.name,
            platform=self.settings.platform or self.platform,
            versions=[self.version] if self.version else [],
            inputs=self.input_specs() or default.inputs,
            outputs=self.output_specs() or default.outputs,
            parameters={"signatures": {n: s.describe() for n, s in sorted(self.signatures.items())}},
        )


def _saved_model_call(tf: Any, function: Any) -> Any:
    def call(feeds: Feeds, wanted: list[str]) -> Feeds:
        result = function(**{name: tf.constant(value) for name, value in feeds.items()})
        if not isinstance(result, dict):
            result = {"output_0": result}
        return {name: result[name].numpy() for name in wanted}

    return call


def _signature_defs(path: Path) -> dict[str, Any]:
    """SignatureDefs from saved_model.pb (method names, graph tensor names)."""
    from tensorflow.core.protobuf import saved_model_pb2

    graph = path / "saved_model.pb"
    if not graph.is_file():
        return {}
    model = saved_model_pb2.SavedModel()
    try:
        model.ParseFromString(graph.read_bytes())
    except Exception:  # a pbtxt model or an odd file: metadata only loses tensor names
        return {}
    if not model.meta_graphs:
        return {}
    return dict(model.meta_graphs[0].signature_def)


def _spec(name: str, spec: Any, definition: Any, side: str) -> TensorSpec:
    import tensorflow as tf

    parameters: dict[str, Any] = {}
    if definition is not None and name in getattr(definition, side):
        parameters["tensor_name"] = getattr(definition, side)[name].name
    return TensorSpec(name, _datatype(tf, spec.dtype), _dims(spec.shape), parameters)


def _datatype(tf: Any, dtype: Any) -> str:
    dtype = tf.as_dtype(dtype)
    if dtype == tf.string:
        return "BYTES"
    return datatype_of(np.empty(0, dtype=dtype.as_numpy_dtype))


def _dims(shape: Any) -> list[int]:
    try:
        dims = list(shape)
    except (TypeError, ValueError):  # unknown rank
        return []
    return [-1 if d is None else int(d) for d in dims]


def _limit_threads(tf: Any) -> None:
    """Match TF's pools to the worker's share of cores (set by the runner)."""
    threads = os.environ.get("OMP_NUM_THREADS")
    if not threads or not threads.isdigit():
        return
    try:
        tf.config.threading.set_intra_op_parallelism_threads(int(threads))
        tf.config.threading.set_inter_op_parallelism_threads(min(2, int(threads)))
    except RuntimeError:
        pass  # TF already started: the pools are fixed for this process
