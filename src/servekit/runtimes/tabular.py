"""Shared behaviour of the table-in, rows-out runtimes (scikit-learn, XGBoost, LightGBM).

Requested outputs are method names (``predict``, ``predict_proba``, ``transform`` …);
a request without ``outputs`` gets the default method, ``predict`` unless
``parameters.extra.default_output`` says otherwise.

Outputs are marked ``content_type: np``, as MLServer's runtimes mark theirs
(NumpyCodec): the V2 APIs then give a vector the column shape ``[N, 1]`` that
MLServer answers. A request of one input per column (MLServer's PandasCodec)
whose names are the model's feature names (``feature_names_in_``) is put in
the model's column order; columns the model does not know, or missing, are
refused by name.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from servekit.errors import InvalidInput, ModelLoadError
from servekit.runtimes.base import Runtime
from servekit.tensors import (
    InferenceRequest,
    InferenceResponse,
    Tensor,
    TensorSpec,
    as_bytes_array,
    datatype_of,
)

log = logging.getLogger("servekit.runtimes")

# MLServer's NumpyCodec content type, which its tabular runtimes put on every output
NUMPY_CONTENT_TYPE = "np"


class TabularRuntime(Runtime):
    batch_axis: ClassVar[int | None] = 0
    model_suffixes: ClassVar[tuple[str, ...]] = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.n_features: int | None = None
        # the column names the model was fitted on, when it knows them
        self.feature_names: list[str] | None = None
        # output name -> its spec, filled by ``load_model``
        self.outputs: dict[str, TensorSpec] = {}

    # -- to implement -----------------------------------------------------
    def load_model(self, path: Path) -> None:
        raise NotImplementedError

    def run(self, method: str, features: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    # -- shared -------------------------------------------------------------
    def model_path(self) -> Path:
        path = self.settings.resolved_uri()
        if path is None:
            raise ModelLoadError(f"model {self.name!r} has no parameters.uri and no folder")
        if path.is_dir():
            candidates = sorted(
                p for p in path.iterdir() if p.is_file() and p.suffix in self.model_suffixes
            )
            if not candidates:
                raise ModelLoadError(
                    f"no model file ({', '.join(self.model_suffixes)}) in {path}"
                )
            path = candidates[0]
        if not path.exists():
            raise ModelLoadError(f"model file {path} does not exist")
        return path

    def load(self) -> None:
        self.load_model(self.model_path())
        default = self.default_output()
        if default not in self.available_outputs:
            raise ModelLoadError(
                f"default output {default!r} is not available; this model has "
                f"{', '.join(self.available_outputs)}"
            )
        self.ready = True

    def default_output(self) -> str:
        extra = self.settings.parameters.extra
        return str(extra.get("default_output") or extra.get("method") or "predict")

    def features(self, request: InferenceRequest) -> np.ndarray:
        if not request.inputs:
            raise InvalidInput("the request has no inputs; send one 2-D tensor of features")
        for tensor in request.inputs:
            if tensor.data.ndim == 0:
                width = self.n_features if self.n_features is not None else "features"
                raise InvalidInput(
                    f"input {tensor.name!r} has shape [] (one scalar); model {self.name!r} takes "
                    f"rows of features: send shape [rows, {width}]"
                )
        if len(request.inputs) == 1:
            data = request.inputs[0].data
        else:
            columns = [_rows(t.data) for t in self._in_feature_order(request.inputs)]
            if len({c.shape[0] for c in columns}) != 1:
                raise InvalidInput("all inputs must have the same number of rows to form a table")
            data = np.concatenate(columns, axis=1)
        if data.dtype == object:
            raise InvalidInput(f"model {self.name!r} takes numeric features, not BYTES")
        if data.ndim == 1:
            # a flat vector is one row when its length is the feature count
            one_row = self.n_features is not None and data.shape[0] == self.n_features
            data = data.reshape(1, -1) if one_row else data.reshape(-1, 1)
        elif data.ndim > 2:
            data = _rows(data)
        if self.n_features is not None and data.shape[1] != self.n_features:
            raise InvalidInput(
                f"model {self.name!r} expects {self.n_features} features per row, "
                f"got {data.shape[1]}"
            )
        return data

    def _in_feature_order(self, inputs: list[Tensor]) -> list[Tensor]:
        """Named columns in the order the model was fitted on. Inputs named
        otherwise (``input-0``, ``x`` …) stay in the order they came."""
        feature_names = self.feature_names
        if not feature_names:
            return inputs
        names = [t.name for t in inputs]
        known = set(feature_names)
        if not known.intersection(names):
            return inputs
        unknown = [n for n in names if n not in known]
        missing = [n for n in feature_names if n not in set(names)]
        if unknown or missing or len(set(names)) != len(names):
            problems = []
            if unknown:
                problems.append(f"unknown column(s) {', '.join(map(repr, unknown))}")
            if missing:
                problems.append(f"missing column(s) {', '.join(map(repr, missing))}")
            if len(set(names)) != len(names):
                problems.append("a column sent twice")
            raise InvalidInput(
                f"model {self.name!r} was fitted on the columns {', '.join(map(repr, feature_names))}; "
                f"the request has {' and '.join(problems)}; send one input per column, named as in fit"
            )
        by_name = {t.name: t for t in inputs}
        return [by_name[n] for n in feature_names]

    def predict(self, request: InferenceRequest) -> InferenceResponse:
        names = request.output_names or [self.default_output()]
        for name in names:
            if name not in self.outputs:
                raise InvalidInput(
                    f"model {self.name!r} has no output {name!r}; available: "
                    f"{', '.join(self.available_outputs)}"
                )
        features = self.features(request)
        return self.response(request, [self._output(name, features) for name in names])

    def plain_features(self, data: np.ndarray) -> np.ndarray | None:
        """A numeric table of the model's width, which :meth:`features` takes
        as it is; None for any other input (see :meth:`Runtime.plain_features`)."""
        if data.ndim != 2 or data.dtype == object or (self.n_features is not None and data.shape[1] != self.n_features):
            return None
        return data

    def plain_output(self, features: np.ndarray) -> Tensor:
        return self._output(self.default_output(), features)

    def _output(self, name: str, features: np.ndarray) -> Tensor:
        try:
            result = np.asarray(self.run(name, features))
        except ValueError as exc:
            raise InvalidInput(f"model {self.name!r} rejected the input: {exc}") from None
        if result.dtype.kind in ("U", "S", "O"):
            result = as_bytes_array(result)
        return Tensor(name=name, data=result, parameters={"content_type": NUMPY_CONTENT_TYPE})

    def input_specs(self) -> list[TensorSpec]:
        specs = super().input_specs()
        if specs:
            return specs
        return [TensorSpec("input-0", "FP64", [-1, self.n_features if self.n_features else -1])]

    def output_specs(self) -> list[TensorSpec]:
        return super().output_specs() or list(self.outputs.values())

    @property
    def available_outputs(self) -> list[str]:
        return list(self.outputs)

    def warn_version(self, framework: str, saved: str | None, installed: str) -> None:
        if saved and saved != installed:
            log.warning(
                "model %r was saved with %s %s but %s %s is installed; predictions may "
                "differ - retrain or pin %s==%s",
                self.name, framework, saved, framework, installed, framework, saved,
            )


def _rows(data: np.ndarray) -> np.ndarray:
    """``data`` as a table: axis 0 stays the rows, the other axes become columns
    (spelled out rather than -1, which numpy cannot infer for 0 rows)."""
    return data.reshape(data.shape[0], math.prod(data.shape[1:]))


def spec_for(name: str, sample: np.ndarray | None, width: int | None) -> TensorSpec:
    """Spec of an output whose rows follow the input's: ``[-1]`` or ``[-1, width]``."""
    datatype = "FP64" if sample is None else datatype_of(sample)
    return TensorSpec(name, datatype, [-1] if width is None else [-1, width])


def labels_from_scores(scores: np.ndarray) -> np.ndarray:
    """Class labels from probabilities: argmax per row, or p > 0.5 for one column."""
    labels: np.ndarray = np.argmax(scores, axis=1) if scores.ndim == 2 else scores > 0.5
    return labels.astype(np.int64)
