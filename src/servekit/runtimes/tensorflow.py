"""TensorFlow SavedModels (every signature; ``serving_default`` unless the
request's ``signature_name`` parameter says otherwise) and Keras ``.keras`` /
``.h5`` files. Needs TensorFlow's CPU package: ``pip install 'servekit[tensorflow]'``.

SavedModels load the way TensorFlow Serving loads them: the MetaGraph tagged
``serve`` in a session, each signature run by feeding and fetching its tensors
by name. Tensors are fed as given and the graph decides what it accepts (a
``[3]`` tensor into an input declared ``[-1, 1]`` works when the graph's ops
take it, as with TF Serving), and TF1 exports that ``tf.saved_model.load``
cannot rebuild (TF Serving's ``saved_model_half_plus_three``) load too.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
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
# TF Serving's --tensorflow_intra_op_parallelism / --tensorflow_inter_op_parallelism,
# passed to the workers by the server
INTRA_OP_ENV = "SERVEKIT_TF_INTRA_OP_PARALLELISM"
INTER_OP_ENV = "SERVEKIT_TF_INTER_OP_PARALLELISM"


def import_tensorflow() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TF's C++ start-up chatter out
    load_triton_first()
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
        if _has_serve_graph(path):
            self._load_session(tf, path)
            return
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

    def _load_session(self, tf: Any, path: Path) -> None:
        graph = tf.Graph()
        session = tf.compat.v1.Session(graph=graph, config=_session_config(tf))
        with graph.as_default():
            meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], str(path))
        self._model = session
        for name, definition in sorted(meta_graph.signature_def.items()):
            if name.startswith("__") or not definition.inputs:
                continue  # __saved_model_init_op: run at load, not a call
            self.signatures[name] = Signature(
                name=name,
                inputs=[_info_spec(tf, k, v) for k, v in sorted(definition.inputs.items())],
                outputs=[_info_spec(tf, k, v) for k, v in sorted(definition.outputs.items())],
                call=_session_call(session, definition),
                method_name=definition.method_name or PREDICT_METHOD,
                parameters={"check_shapes": False},
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
        feeds = bind_inputs(signature, request, self.name,
                            check_shapes=signature.parameters.get("check_shapes", True))
        names = output_names(signature, request, self.name)
        try:
            values = signature.call(feeds, names)
        except Exception as exc:  # TF's InvalidArgumentError and friends
            message = getattr(exc, "message", None) or str(exc)
            raise InvalidInput(f"model {self.name!r} rejected the input: {message}") from None
        return self.response(request, output_tensors(values, names))

    def unload(self) -> None:
        self.signatures.clear()
        close = getattr(self._model, "close", None)
        if callable(close):
            close()
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


def _has_serve_graph(path: Path) -> bool:
    """Whether saved_model.pb holds a MetaGraph tagged ``serve`` (what TF Serving loads)."""
    from tensorflow.core.protobuf import saved_model_pb2

    graph = path / "saved_model.pb"
    if not graph.is_file():
        return False
    model = saved_model_pb2.SavedModel()
    try:
        model.ParseFromString(graph.read_bytes())
    except Exception:  # an odd file: tf.saved_model.load says what is wrong
        return False
    return any("serve" in m.meta_info_def.tags for m in model.meta_graphs)


def _session_config(tf: Any) -> Any:
    """Thread pools: TF Serving's --tensorflow_intra_op_parallelism /
    --tensorflow_inter_op_parallelism when given, else the worker's share of cores."""
    config = tf.compat.v1.ConfigProto()
    threads = os.environ.get("OMP_NUM_THREADS", "")
    intra = os.environ.get(INTRA_OP_ENV, "") or threads
    inter = os.environ.get(INTER_OP_ENV, "") or (str(min(2, int(threads))) if threads.isdigit() else "")
    if intra.isdigit():
        config.intra_op_parallelism_threads = int(intra)
    if inter.isdigit():
        config.inter_op_parallelism_threads = int(inter)
    return config


def _session_call(session: Any, definition: Any) -> Any:
    """Run a signature in the session: its inputs fed by tensor name, whatever
    their shapes (TensorFlow's Python feed check is left out, as TF Serving's
    C++ session run has none: the ops decide)."""
    from tensorflow.core.protobuf import config_pb2

    feeds = sorted(definition.inputs)
    callables: dict[tuple[str, ...], Any] = {}

    def call(values: Feeds, wanted: list[str]) -> Feeds:
        key = tuple(wanted)
        run = callables.get(key)
        if run is None:
            options = config_pb2.CallableOptions()
            options.feed.extend(definition.inputs[n].name for n in feeds)
            options.fetch.extend(definition.outputs[n].name for n in wanted)
            run = callables[key] = session._make_callable_from_options(options)
        results = run(*[values[n] for n in feeds])
        return dict(zip(wanted, results, strict=True))

    return call


def _info_spec(tf: Any, name: str, info: Any) -> TensorSpec:
    """A signature's TensorInfo as a spec: graph tensor name, unknown rank."""
    parameters: dict[str, Any] = {"tensor_name": info.name}
    if info.tensor_shape.unknown_rank:
        parameters["unknown_rank"] = True
        dims: list[int] = []
    else:
        dims = [int(d.size) for d in info.tensor_shape.dim]
    try:
        datatype = _datatype(tf, info.dtype)
    except (TypeError, ValueError):
        datatype = "BYTES" if info.dtype == 7 else "FP32"
    return TensorSpec(name, datatype, dims, parameters)


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


def load_triton_first() -> None:
    """Triton (installed with PyPI's CUDA torch, which torchvision needs) crashes
    the process when its LLVM loads after TensorFlow's: a torchvision handler or a
    torch.export model served beside a TensorFlow model would end the worker with
    a segmentation fault. Loaded before TensorFlow, both work."""
    if "triton" in sys.modules or "tensorflow" in sys.modules or importlib.util.find_spec("triton") is None:
        return
    try:
        import triton  # noqa: F401
    except Exception as exc:  # a broken triton only matters to torch on a GPU
        log.debug("triton not loaded before TensorFlow: %s", exc)


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
