"""MLflow models: a folder with an ``MLmodel`` file, or a ``runs:/`` / ``models:/`` URI.

Which code runs the model:

- **native**: when the model has a flavour servekit has its own runtime for
  (``sklearn``, ``xgboost``, ``lightgbm``, ``onnx``, ``pytorch``), the
  flavour's model is served by that runtime (numpy in, numpy out: no DataFrame
  per request, the fast paths and the batcher of the tabular runtimes).
  scikit-learn, XGBoost, LightGBM and PyTorch objects are read by the flavour's
  own ``load_model`` (which knows skops, cloudpickle, UBJSON and ``torch.export``
  files) and handed to servekit's runtime; an ONNX file is opened by servekit's
  ONNX runtime.
- **pyfunc**: every other flavour (a ``PythonModel``, tensorflow,
  transformers …), and any model whose settings say
  ``parameters.extra.mlflow_flavour: "python_function"``, is loaded with
  ``mlflow.pyfunc.load_model`` and called with a pandas DataFrame (or arrays, for
  a tensor signature), as ``mlflow models serve`` calls it.

Both answer the same: the default output is the single output named in the
signature, else ``predict``; vectors are marked ``content_type: np`` as the
tabular runtimes mark theirs.

The signature becomes the V2 metadata. A column (ColSpec) signature takes one
input per column (MLServer's pandas codec: shape ``[N]`` or ``[N, 1]``, named as
the column), or one ``[N, columns]`` tensor whose columns are in the
signature's order; a tensor signature takes its named tensors. Requests are
checked against it: unknown or missing names, strings for numbers, fractions
for integers and wrong shapes are 400 with the expected form.

``runs:/`` and ``models:/`` URIs are downloaded from the tracking server of
``parameters.extra.tracking_uri`` or ``MLFLOW_TRACKING_URI`` into a temporary
folder, removed when the model unloads.

A model's own environment (``python_env.yaml``, ``conda.yaml``,
``requirements.txt``) is recorded in :attr:`MLflowRuntime.environment` and not
acted on: serving a model from its own virtual environment plugs in there.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from servekit.config import ModelSettings
from servekit.errors import InvalidInput, ModelLoadError
from servekit.runtimes.base import Runtime
from servekit.runtimes.tabular import NUMPY_CONTENT_TYPE
from servekit.tensors import (
    InferenceRequest,
    InferenceResponse,
    ModelMetadata,
    Tensor,
    TensorSpec,
    as_bytes_array,
    datatype_of,
)

log = logging.getLogger("servekit.runtimes.mlflow")

MLMODEL = "MLmodel"
REMOTE_SCHEMES = ("runs:/", "models:/")
PYFUNC = "python_function"
# flavours servekit serves with its own runtime, in the order they are preferred
NATIVE_FLAVOURS = ("sklearn", "xgboost", "lightgbm", "onnx", "pytorch")
# flavour -> servekit's runtime of it
_RUNTIMES = {"pytorch": "torch"}
# flavours whose framework state does not survive fork(): load them in each worker
_NOT_FORK_SAFE = {"onnx", "tensorflow", "keras", "pytorch", "transformers", "sentence_transformers"}
_ENVIRONMENT_FILES = ("python_env.yaml", "conda.yaml", "requirements.txt")
# the response parameter that marks a table (MLServer's PandasCodec marks its answers so)
PANDAS_CONTENT_TYPE = "pd"
DEFAULT_OUTPUT = "predict"
# MLflow's tracking URI is process-wide: one fetch from a tracking server at a time
_TRACKING = threading.Lock()
# most columns a signature may declare (a bound on what a model file can make the server build)
MAX_COLUMNS = 100_000

# MLflow's column types -> V2 datatypes
_COLUMN_DATATYPES = {
    "boolean": "BOOL",
    "integer": "INT32",
    "long": "INT64",
    "float": "FP32",
    "double": "FP64",
    "string": "BYTES",
    "binary": "BYTES",
    "datetime": "BYTES",
}
_NUMPY_KINDS = {"BOOL": "b", "INT32": "iu", "INT64": "iu", "FP32": "fiu", "FP64": "fiu"}


def is_remote(uri: str | None) -> bool:
    return bool(uri) and str(uri).startswith(REMOTE_SCHEMES)


def is_mlflow_dir(path: Path) -> bool:
    return (path / MLMODEL).is_file()


@dataclass
class Column:
    """One declared input or output: a column of a table or a named tensor."""

    name: str
    datatype: str
    shape: list[int]
    mlflow_type: str = ""
    required: bool = True
    named: bool = True  # False: the signature gave no name (servekit made one up)

    def spec(self, content_type: str | None) -> TensorSpec:
        parameters = {"content_type": content_type} if content_type else {}
        return TensorSpec(self.name, self.datatype, list(self.shape), parameters)


@dataclass
class ModelSignature:
    """The parts of an MLflow signature servekit checks requests with."""

    inputs: list[Column] = field(default_factory=list)
    outputs: list[Column] = field(default_factory=list)
    columns: bool = False  # a column (ColSpec) signature: inputs are a table's columns
    tensor_outputs: bool = False


@dataclass
class ModelEnvironment:
    """What the model says it needs installed (item 2 of issue 17 reads it)."""

    folder: Path
    files: dict[str, Path] = field(default_factory=dict)


def read_mlmodel(folder: Path) -> dict[str, Any]:
    import yaml

    try:
        with (folder / MLMODEL).open(encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except (OSError, yaml.YAMLError) as exc:
        raise ModelLoadError(f"cannot read {MLMODEL}: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("flavors"), dict):
        raise ModelLoadError(f"{MLMODEL} in {folder.name!r} has no 'flavors' section; is it an MLflow model?")
    return data


def flavours_of(settings: ModelSettings) -> list[str]:
    """The flavours of a local MLflow model (empty when it is remote or unreadable)."""
    folder = local_folder(settings)
    if folder is None or not is_mlflow_dir(folder):
        return []
    try:
        return list(read_mlmodel(folder)["flavors"])
    except ModelLoadError:
        return []


def local_folder(settings: ModelSettings) -> Path | None:
    path = settings.resolved_uri()
    if path is None:
        return None
    return path.parent if path.name == MLMODEL else path


def parse_signature(mlmodel: dict[str, Any]) -> ModelSignature:
    import json

    raw = mlmodel.get("signature") or {}
    signature = ModelSignature()
    for key in ("inputs", "outputs"):
        text = raw.get(key)
        if not text:
            continue
        try:
            items = json.loads(text) if isinstance(text, str) else text
        except ValueError as exc:
            raise ModelLoadError(f"the signature's {key} in {MLMODEL} are not JSON: {exc}") from exc
        if not isinstance(items, list) or len(items) > MAX_COLUMNS:
            raise ModelLoadError(f"the signature's {key} in {MLMODEL} are not a list of columns")
        columns, is_columns = _columns(items, key)
        if key == "inputs":
            signature.inputs, signature.columns = columns, is_columns
        else:
            signature.outputs, signature.tensor_outputs = columns, not is_columns
    return signature


def _columns(items: list[Any], key: str) -> tuple[list[Column], bool]:
    out: list[Column] = []
    tensors = any(isinstance(i, dict) and i.get("type") == "tensor" for i in items)
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise ModelLoadError(f"the signature's {key} in {MLMODEL} hold {item!r}, not a column")
        default = "input-0" if key == "inputs" else DEFAULT_OUTPUT
        name = str(item.get("name") or (default if len(items) == 1 else f"{key[:-1]}-{index}"))
        if item.get("type") == "tensor":
            spec = item.get("tensor-spec") or {}
            try:
                datatype = datatype_of(np.empty(0, dtype=np.dtype(str(spec.get("dtype")))))
            except (TypeError, ValueError, InvalidInput):
                datatype = "BYTES"
            shape = [int(d) for d in spec.get("shape") or [-1]]
            out.append(Column(name, datatype, shape, str(spec.get("dtype")), bool(item.get("required", True)),
                              bool(item.get("name"))))
        else:
            kind = str(item.get("type"))
            out.append(Column(name, _COLUMN_DATATYPES.get(kind, "BYTES"), [-1], kind, bool(item.get("required", True)),
                              bool(item.get("name"))))
    return out, not tensors


class MLflowRuntime(Runtime):
    """Serves one MLflow model, natively where servekit can, else through pyfunc."""

    platform: ClassVar[str] = "mlflow"
    # a table's rows in, rows out: requests are merged along axis 0 (set the model's
    # ``adaptive_batching: false`` for a pyfunc model whose answer is not one row per row)
    batch_axis: ClassVar[int | None] = 0

    def __init__(self, settings: ModelSettings) -> None:
        super().__init__(settings)
        self.folder: Path | None = None
        self.flavour = ""
        self.signature = ModelSignature()
        self.native: Runtime | None = None
        self.pyfunc: Any = None
        self.output_name = DEFAULT_OUTPUT
        self.environment: ModelEnvironment | None = None
        self._download: str | None = None
        self._accepts_params = False

    # -- which processes may share a copy -------------------------------------
    @classmethod
    def survives_fork(cls, settings: ModelSettings) -> bool:
        """Whether a copy loaded before the workers fork still works in them:
        not for flavours with framework thread pools (onnx, tensorflow, pytorch …)
        nor for remote models (their flavours are known only once downloaded)."""
        if is_remote(settings.parameters.uri):
            return False
        return not _NOT_FORK_SAFE.intersection(flavours_of(settings))

    # -- loading ------------------------------------------------------------
    def load(self) -> None:
        folder = self._fetch()
        self.folder = folder
        mlmodel = read_mlmodel(folder)
        self.signature = parse_signature(mlmodel)
        outputs = self.signature.outputs
        self.output_name = outputs[0].name if len(outputs) == 1 and outputs[0].named else DEFAULT_OUTPUT
        self.environment = ModelEnvironment(
            folder, {n: folder / n for n in _ENVIRONMENT_FILES if (folder / n).is_file()}
        )
        flavours: dict[str, Any] = mlmodel["flavors"]
        wanted = self.settings.parameters.extra.get("mlflow_flavour")
        if wanted is not None and wanted not in flavours:
            raise ModelLoadError(
                f"model {self.name!r} has no flavour {wanted!r} (mlflow_flavour); it has {', '.join(flavours)}"
            )
        choice = wanted or next((f for f in NATIVE_FLAVOURS if f in flavours), PYFUNC)
        if choice != PYFUNC and choice in NATIVE_FLAVOURS:
            self.native = self._load_native(choice, folder, flavours)
        elif PYFUNC in flavours:
            self._load_pyfunc(folder)
        else:
            raise ModelLoadError(
                f"model {self.name!r} has neither a flavour servekit serves natively "
                f"({', '.join(NATIVE_FLAVOURS)}) nor python_function; it has {', '.join(flavours)}"
            )
        self.flavour = choice
        self.ready = True

    def _fetch(self) -> Path:
        uri = self.settings.parameters.uri
        if is_remote(uri):
            assert uri is not None
            tracking = self.settings.parameters.extra.get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI")
            if not tracking:
                raise ModelLoadError(
                    f"model {self.name!r}: parameters.uri {uri!r} names a run or a registered model; "
                    "set MLFLOW_TRACKING_URI (or parameters.extra.tracking_uri) to the tracking server"
                )
            import mlflow

            self._download = tempfile.mkdtemp(prefix="servekit-mlflow-")
            try:
                # MLflow resolves models:/ through its process-wide tracking and registry URIs
                # (unset, it would make a SQLite store in the current folder): set both for this fetch
                with _TRACKING, _tracking_server(str(tracking)):
                    local = mlflow.artifacts.download_artifacts(
                        artifact_uri=uri, tracking_uri=str(tracking), dst_path=self._download
                    )
            except Exception as exc:  # MlflowException, connection errors
                self.unload()
                raise ModelLoadError(
                    f"model {self.name!r}: cannot fetch {uri!r} from {tracking}: {type(exc).__name__}: {exc}"
                ) from exc
            folder = Path(local)
        else:
            found = local_folder(self.settings)
            if found is None:
                raise ModelLoadError(f"model {self.name!r} has no parameters.uri and no folder")
            folder = found
        if not is_mlflow_dir(folder):
            raise ModelLoadError(f"model {self.name!r}: no {MLMODEL} file in {folder}")
        return folder

    def _load_native(self, flavour: str, folder: Path, flavours: dict[str, Any]) -> Runtime:
        from servekit.runtimes import create_runtime

        conf = flavours.get(PYFUNC) or {}
        extra = dict(self.settings.parameters.extra)
        method = conf.get("predict_fn")
        if method and "default_output" not in extra:
            extra["default_output"] = method
        if flavour == "onnx":
            data = flavours[flavour].get("data") or "model.onnx"
            uri = str(folder / data)
        else:
            uri = str(folder)
        parameters = self.settings.parameters.model_copy(update={"uri": uri, "extra": extra})
        inner_settings = self.settings.model_copy(update={
            "implementation": _RUNTIMES.get(flavour, flavour), "parameters": parameters, "inputs": [], "outputs": [],
        })
        runtime = create_runtime(inner_settings)
        if flavour == "onnx":
            runtime.load()
            return runtime
        import importlib

        try:
            module = importlib.import_module(f"mlflow.{flavour}")
            model = module.load_model(str(folder))
        except Exception as exc:
            raise ModelLoadError(
                f"cannot load the {flavour} flavour of model {self.name!r}: {type(exc).__name__}: {exc}"
            ) from exc
        if flavour == "pytorch":
            from servekit.runtimes.torch import TorchRuntime

            assert isinstance(runtime, TorchRuntime)
            with contextlib.suppress(NotImplementedError, RuntimeError):  # exported programs refuse eval()
                model.eval()
            runtime.module = model
            runtime.input_dtype = np.dtype(str(extra.get("input_dtype") or _parameter_dtype(model)))
            runtime.ready = True
            return runtime
        from servekit.runtimes.sklearn import SKLearnRuntime

        assert isinstance(runtime, SKLearnRuntime)  # sklearn, xgboost and lightgbm serve a model object
        runtime.adopt(model)
        default = runtime.default_output()
        if default not in runtime.available_outputs:
            raise ModelLoadError(f"model {self.name!r} has no method {default!r} (predict_fn)")
        runtime.ready = True
        return runtime

    def _load_pyfunc(self, folder: Path) -> None:
        import inspect

        import mlflow.pyfunc

        try:
            self.pyfunc = mlflow.pyfunc.load_model(str(folder))
        except Exception as exc:
            raise ModelLoadError(
                f"cannot load model {self.name!r} with mlflow.pyfunc: {type(exc).__name__}: {exc}"
            ) from exc
        self._accepts_params = "params" in inspect.signature(self.pyfunc.predict).parameters

    def unload(self) -> None:
        if self.native is not None:
            self.native.unload()
        self.native = None
        self.pyfunc = None
        if self._download is not None:
            shutil.rmtree(self._download, ignore_errors=True)
            self._download = None

    # -- metadata -----------------------------------------------------------
    def input_specs(self) -> list[TensorSpec]:
        declared = super().input_specs()
        if declared:
            return declared
        if self.signature.inputs:
            return [c.spec(_content_type(c) if self.signature.columns else None) for c in self.signature.inputs]
        if self.native is not None:
            return self.native.input_specs()
        return []

    def output_specs(self) -> list[TensorSpec]:
        declared = super().output_specs()
        if declared:
            return declared
        outputs = self.signature.outputs
        if outputs:
            specs = [c.spec(None) for c in outputs]
            graph = self.native.output_specs() if self.flavour == "onnx" and self.native is not None else []
            if len(graph) == len(specs) and not all(c.named for c in outputs):
                for spec, answered in zip(specs, graph, strict=True):
                    spec.name = answered.name  # an ONNX graph answers with its own output names
            return specs
        if self.native is not None:  # what the native runtime answers
            return [
                TensorSpec(self.output_name if s.name == DEFAULT_OUTPUT else s.name, s.datatype, s.shape, s.parameters)
                for s in self.native.output_specs()
            ]
        return []

    def metadata(self) -> ModelMetadata:
        meta = super().metadata()
        meta.platform = self.settings.platform or f"mlflow/{self.flavour}" if self.flavour else "mlflow"
        if self.signature.columns and self.signature.inputs:
            meta.parameters = {**meta.parameters, "content_type": PANDAS_CONTENT_TYPE}
        return meta

    # -- predicting -----------------------------------------------------------
    def predict(self, request: InferenceRequest) -> InferenceResponse:
        names = request.output_names
        if self.native is not None:
            return self._predict_native(request, names)
        if names and names != [self.output_name] and not set(names) <= {c.name for c in self.signature.outputs}:
            raise InvalidInput(
                f"model {self.name!r} (pyfunc) has no output {', '.join(map(repr, names))}; "
                f"it answers {self.output_name!r}"
            )
        data = self._pyfunc_input(request)
        params = request.parameters.get("params")
        try:
            if self._accepts_params and isinstance(params, dict) and params:
                result = self.pyfunc.predict(data, params=params)
            else:
                result = self.pyfunc.predict(data)
        except Exception as exc:
            from mlflow.exceptions import MlflowException

            if isinstance(exc, MlflowException) and exc.error_code in ("BAD_REQUEST", "INVALID_PARAMETER_VALUE"):
                raise InvalidInput(f"model {self.name!r} refused the input: {exc.message}") from None
            raise
        outputs, table = self._outputs(result)
        if names:
            outputs = [t for t in outputs if t.name in names] or outputs
        response = self.response(request, outputs)
        if table:
            response.parameters["content_type"] = PANDAS_CONTENT_TYPE
        return response

    def _predict_native(self, request: InferenceRequest, names: list[str] | None) -> InferenceResponse:
        assert self.native is not None
        inputs = self.signature.inputs
        if inputs and self.signature.columns:
            columns = self._columns(request)
            table = np.column_stack([_numeric(c, col) for c, col in zip(columns, inputs, strict=True)])
            request = InferenceRequest([Tensor("input-0", table)], request.outputs, request.id, request.parameters)
        elif inputs and len(inputs) == 1 and len(request.inputs) == 1:
            _check_tensor(request.inputs[0], inputs[0], self.name)
        if names:
            rename = {self.output_name: DEFAULT_OUTPUT}
            request.outputs = [type(o)(rename.get(o.name, o.name), o.parameters) for o in request.outputs or []]
        response = self.native.predict(request)
        lone = self.flavour == "pytorch" and len(response.outputs) == 1  # torch names it output-0
        for tensor in response.outputs:
            if tensor.name == DEFAULT_OUTPUT or lone:
                tensor.name = self.output_name
                if lone:
                    tensor.parameters["content_type"] = NUMPY_CONTENT_TYPE  # as the pyfunc path marks it
        response.model_name, response.model_version = self.name, self.version
        return response

    def _columns(self, request: InferenceRequest) -> list[np.ndarray]:
        """The request as the signature's columns, each a vector of one row per row."""
        declared = self.signature.inputs
        given = request.inputs
        if not given:
            raise InvalidInput(f"model {self.name!r} takes the columns {_names(declared)}; the request has no inputs")
        if len(given) == 1 and given[0].name not in {c.name for c in declared} and len(declared) > 0:
            data = given[0].data
            if data.ndim == 1 and len(declared) == 1:
                data = data.reshape(-1, 1)
            if data.ndim != 2 or data.shape[1] != len(declared):
                raise InvalidInput(
                    f"model {self.name!r} takes {len(declared)} columns ({_names(declared)}): send one input per "
                    f"column, or one tensor of shape [rows, {len(declared)}]; got {given[0].name!r} of shape "
                    f"{list(data.shape)}"
                )
            return [data[:, i] for i in range(len(declared))]
        by_name = {t.name: t for t in given}
        unknown = [t.name for t in given if t.name not in {c.name for c in declared}]
        missing = [c.name for c in declared if c.name not in by_name and c.required]
        if unknown or missing or len(by_name) != len(given):
            problems = []
            if missing:
                problems.append(f"missing {', '.join(map(repr, missing))}")
            if unknown:
                problems.append(f"unknown {', '.join(map(repr, unknown))}")
            if len(by_name) != len(given):
                problems.append("a column sent twice")
            raise InvalidInput(
                f"model {self.name!r} takes the columns {_names(declared)} (one input each); "
                f"the request has {'; '.join(problems)}"
            )
        out: list[np.ndarray | None] = []
        rows: int | None = None
        for column in declared:
            tensor = by_name.get(column.name)
            if tensor is None:
                out.append(None)  # an optional column left out
                continue
            data = tensor.data
            if data.ndim == 2 and data.shape[1] == 1:
                data = data[:, 0]
            if data.ndim != 1:
                raise InvalidInput(
                    f"column {column.name!r} of model {self.name!r} takes shape [rows] or [rows, 1]; "
                    f"got {list(tensor.data.shape)}"
                )
            if rows is not None and data.shape[0] != rows:
                raise InvalidInput(
                    f"the columns of a request to model {self.name!r} must have as many rows each; "
                    f"{column.name!r} has {data.shape[0]}, the ones before it {rows}"
                )
            rows = data.shape[0]
            data = _check_column(data, column, self.name)
            if column.required and data.dtype.kind == "f" and np.isnan(data).any():
                row = int(np.argmax(np.isnan(data)))
                raise InvalidInput(
                    f"column {column.name!r} of model {self.name!r} is required: row {row} has no value "
                    "(null or NaN); send a number in every row"
                )
            out.append(data)
        return [np.full(rows or 0, np.nan) if data is None else data for data in out]

    def _pyfunc_input(self, request: InferenceRequest) -> Any:
        declared = self.signature.inputs
        if declared and self.signature.columns:
            import pandas as pd

            columns = self._columns(request)
            frame = {}
            for column, data in zip(declared, columns, strict=True):
                if column.name not in {t.name for t in request.inputs} and len(request.inputs) > 1:
                    continue  # an optional column left out
                frame[column.name] = _for_pandas(data, column)
            return pd.DataFrame(frame)
        if declared:
            if len(declared) == 1 and len(request.inputs) == 1:
                return _check_tensor(request.inputs[0], declared[0], self.name)
            by_name = {t.name: t for t in request.inputs}
            missing = [c.name for c in declared if c.name not in by_name and c.required]
            unknown = [n for n in by_name if n not in {c.name for c in declared}]
            if missing or unknown:
                raise InvalidInput(
                    f"model {self.name!r} takes the tensors {_names(declared)}; "
                    + "; ".join(p for p in (f"missing {', '.join(map(repr, missing))}" if missing else "",
                                            f"unknown {', '.join(map(repr, unknown))}" if unknown else "") if p)
                )
            return {c.name: _check_tensor(by_name[c.name], c, self.name) for c in declared if c.name in by_name}
        # no signature: a lone tensor as it is, named vectors as a table's columns
        if len(request.inputs) == 1:
            return _plain(request.inputs[0].data)
        if all(t.data.ndim == 1 or (t.data.ndim == 2 and t.data.shape[1] == 1) for t in request.inputs):
            import pandas as pd

            return pd.DataFrame({t.name: _plain(t.data.reshape(-1)) for t in request.inputs})
        return {t.name: _plain(t.data) for t in request.inputs}

    def _outputs(self, result: Any) -> tuple[list[Tensor], bool]:
        """A pyfunc answer as tensors, and whether it was a table."""
        import pandas as pd

        if isinstance(result, pd.DataFrame):
            return [_tensor(str(name), result[name].to_numpy()) for name in result.columns], True
        if isinstance(result, pd.Series):
            return [_tensor(self.output_name, result.to_numpy())], False
        if isinstance(result, dict):
            return [_tensor(str(k), np.asarray(v)) for k, v in result.items()], False
        return [_tensor(self.output_name, np.asarray(result))], False


@contextlib.contextmanager
def _tracking_server(uri: str) -> Iterator[None]:
    """MLflow's process-wide tracking and registry URIs (and the environment
    variables MLflow sets with them) pointed at ``uri``, then put back, so that
    one model's tracking server is not another's."""
    import mlflow

    names = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    before = {name: os.environ.get(name) for name in names}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before["MLFLOW_TRACKING_URI"])  # type: ignore[arg-type]  # None: unset
        mlflow.set_registry_uri(before["MLFLOW_REGISTRY_URI"])  # type: ignore[arg-type]
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _parameter_dtype(module: Any) -> str:
    """The dtype of a torch module's first parameter (float32 without any)."""
    for parameter in module.parameters():
        return str(parameter.dtype).replace("torch.", "")
    return "float32"


def _tensor(name: str, data: np.ndarray) -> Tensor:
    if data.dtype.kind in ("U", "S", "O"):
        data = as_bytes_array(data)
    return Tensor(name, data, parameters={"content_type": NUMPY_CONTENT_TYPE})


def _names(columns: list[Column]) -> str:
    shown = ", ".join(repr(c.name) for c in columns[:20])
    return shown + (f" … ({len(columns)} in all)" if len(columns) > 20 else "")


def _content_type(column: Column) -> str:
    if column.mlflow_type == "string":
        return "str"
    if column.mlflow_type == "binary":
        return "base64"
    return NUMPY_CONTENT_TYPE


def _check_column(data: np.ndarray, column: Column, model: str) -> np.ndarray:
    kinds = _NUMPY_KINDS.get(column.datatype)
    if kinds is None:  # strings, bytes, dates: anything goes as text
        return data
    if data.dtype.kind not in kinds:
        got = "strings (BYTES)" if data.dtype.kind in ("O", "U", "S") else datatype_of(data)
        raise InvalidInput(
            f"column {column.name!r} of model {model!r} is {column.mlflow_type} ({column.datatype}); "
            f"the request gives {got}"
        )
    if column.datatype in ("INT32", "INT64") and data.dtype.kind == "f":
        raise InvalidInput(
            f"column {column.name!r} of model {model!r} is {column.mlflow_type} ({column.datatype}); "
            "the request gives fractional numbers"
        )
    return data


def _check_tensor(tensor: Tensor, column: Column, model: str) -> np.ndarray:
    data = tensor.data
    if column.datatype != "BYTES":
        if data.dtype.kind in ("O", "U", "S"):
            raise InvalidInput(
                f"input {column.name!r} of model {model!r} takes {column.datatype} numbers, not strings"
            )
        want = np.dtype(column.mlflow_type) if column.mlflow_type not in ("", "object") else data.dtype
        if data.dtype != want:
            if want.kind in "iu" and data.dtype.kind == "f" and data.size and not np.all(np.mod(data, 1) == 0):
                raise InvalidInput(
                    f"input {column.name!r} of model {model!r} takes integers ({column.datatype}), "
                    "got fractional numbers"
                )
            data = data.astype(want)
    shape = column.shape
    if shape and (
        data.ndim != len(shape) or any(d >= 0 and d != g for d, g in zip(shape, data.shape, strict=False))
    ):
        raise InvalidInput(
            f"input {column.name!r} of model {model!r} takes shape {shape} (-1: any), got {list(data.shape)}"
        )
    return data


def _numeric(data: np.ndarray, column: Column) -> np.ndarray:
    if data.dtype.kind in ("O", "U", "S"):
        raise InvalidInput(
            f"column {column.name!r} is {column.mlflow_type}; the model's native runtime takes numbers only"
        )
    return data


def _for_pandas(data: np.ndarray, column: Column) -> Any:
    if column.mlflow_type == "string" and data.dtype.kind in ("O", "S"):
        return np.array([v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in data], dtype=object)
    if column.mlflow_type in ("integer", "long", "float", "double", "boolean"):
        return data.astype(np.dtype(_PANDAS_DTYPES[column.mlflow_type]))
    return data


_PANDAS_DTYPES = {"integer": "int32", "long": "int64", "float": "float32", "double": "float64", "boolean": "bool"}


def _plain(data: np.ndarray) -> np.ndarray:
    """BYTES as str, which is what MLflow's own server hands a model."""
    if data.dtype.kind == "O":
        return np.array(
            [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in data.reshape(-1)], dtype=object
        ).reshape(data.shape)
    return data


__all__ = ["MLMODEL", "MLflowRuntime", "is_mlflow_dir", "is_remote", "parse_signature"]
