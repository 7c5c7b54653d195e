"""scikit-learn models saved with joblib or pickle."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from servekit.errors import ModelLoadError
from servekit.runtimes.sklearn_fast import FastMethod, compile_estimator
from servekit.runtimes.tabular import TabularRuntime, spec_for

PICKLE_SUFFIXES = (".joblib", ".pkl", ".pickle")
SKLEARN_METHODS = (
    "predict",
    "predict_proba",
    "predict_log_proba",
    "decision_function",
    "transform",
)


class SKLearnRuntime(TabularRuntime):
    platform: ClassVar[str] = "sklearn"
    model_suffixes: ClassVar[tuple[str, ...]] = PICKLE_SUFFIXES

    def load_model(self, path: Path) -> None:
        import joblib
        import sklearn

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                # joblib reads its own files and plain pickles alike
                model = joblib.load(path)
            except Exception as exc:  # any unpickling failure is a load failure
                raise ModelLoadError(
                    f"cannot load {path.name}: not a readable joblib/pickle file "
                    f"({type(exc).__name__}: {exc})"
                ) from exc
        saved = None
        for warning in caught:
            saved = getattr(warning.message, "original_sklearn_version", saved)
        self.warn_version("scikit-learn", saved, sklearn.__version__)
        self.adopt(model)

    def adopt(self, model: Any) -> None:
        """Serve ``model`` through whichever sklearn-style methods it has."""
        self.model: Any = model
        self.fast: dict[str, FastMethod] = {}
        self.fast_max_rows: int | None = None
        if self.settings.parameters.extra.get("fast_path", True):
            self.fast, self.fast_max_rows = compile_estimator(model)
        self.n_features = getattr(model, "n_features_in_", None)
        names = getattr(model, "feature_names_in_", None)
        self.feature_names = [str(n) for n in names] if names is not None else None
        self.outputs = {}
        for method in SKLEARN_METHODS:
            if not _has_method(model, method):
                continue
            self.outputs[method] = spec_for(method, self._sample(method), self._width(method))

    def _sample(self, method: str) -> np.ndarray | None:
        classes = getattr(self.model, "classes_", None)
        if method == "predict" and classes is not None:
            return np.asarray(classes)
        return None

    def _width(self, method: str) -> int | None:
        classes = getattr(self.model, "classes_", None)
        if method in ("predict_proba", "predict_log_proba") and classes is not None:
            return len(classes)
        return None if method == "predict" else -1

    def run(self, method: str, features: np.ndarray) -> np.ndarray:
        fast = self.fast.get(method)
        if fast is not None and (self.fast_max_rows is None or len(features) <= self.fast_max_rows):
            return fast(features)
        return np.asarray(getattr(self.model, method)(features))


def _has_method(model: Any, method: str) -> bool:
    # ``hasattr`` evaluates available_if guards: a regressor has no predict_proba
    try:
        return callable(getattr(model, method))
    except AttributeError:
        return False
