"""scikit-learn models saved with joblib or pickle, or with skops (``.skops``).

A pickle or joblib file runs code while it loads. A skops file does not: it
holds only types skops knows to be safe, and any other type it names must be
listed in the model's ``parameters.extra.trusted_types`` or the file is
refused, naming the types (the model is UNAVAILABLE with that reason).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from servekit.errors import ModelLoadError
from servekit.runtimes.sklearn_fast import FastMethod, compile_estimator
from servekit.runtimes.tabular import TabularRuntime, spec_for

PICKLE_SUFFIXES = (".joblib", ".pkl", ".pickle")
SKOPS_SUFFIX = ".skops"
SKLEARN_METHODS = (
    "predict",
    "predict_proba",
    "predict_log_proba",
    "decision_function",
    "transform",
)


class SKLearnRuntime(TabularRuntime):
    platform: ClassVar[str] = "sklearn"
    model_suffixes: ClassVar[tuple[str, ...]] = (*PICKLE_SUFFIXES, SKOPS_SUFFIX)

    def load_model(self, path: Path) -> None:
        import sklearn

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = self._load_skops(path) if path.suffix == SKOPS_SUFFIX else _load_pickle(path)
        saved = None
        for warning in caught:
            saved = getattr(warning.message, "original_sklearn_version", saved)
        self.warn_version("scikit-learn", saved, sklearn.__version__)
        self.adopt(model)

    def _load_skops(self, path: Path) -> Any:
        """A skops file, refused when it names a type that is neither safe by
        skops' own list nor in ``parameters.extra.trusted_types``."""
        try:
            import skops.io as sio
        except ImportError:
            raise ModelLoadError(
                f"{path.name} is a skops file and skops is not installed: pip install 'servekit[skops]'"
            ) from None
        trusted = self.settings.parameters.extra.get("trusted_types") or []
        if not isinstance(trusted, list) or not all(isinstance(t, str) for t in trusted):
            raise ModelLoadError(
                "parameters.extra.trusted_types must be a list of type names "
                '(["sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor", …])'
            )
        try:
            untrusted = sio.get_untrusted_types(file=path)
        except Exception as exc:  # not a zip, no schema, a schema skops cannot read
            raise ModelLoadError(
                f"cannot load {path.name}: not a readable skops file ({type(exc).__name__}: {exc})"
            ) from exc
        refused = [t for t in untrusted if t not in trusted]
        if refused:
            named = ", ".join(t[:200] for t in refused[:10]) + (", …" if len(refused) > 10 else "")
            raise ModelLoadError(
                f"{path.name} holds {len(refused)} type(s) that are not trusted: {named}; loading them "
                "could run code: if you trust the file's source, list them in parameters.extra.trusted_types"
            )
        try:
            return sio.load(path, trusted=list(untrusted))
        except Exception as exc:
            raise ModelLoadError(f"cannot load {path.name} with skops ({type(exc).__name__}: {exc})") from exc

    def adopt(self, model: Any) -> None:
        """Serve ``model`` through whichever sklearn-style methods it has."""
        if type(model).__module__.split(".")[0] == "catboost":  # a pickled CatBoost model
            from servekit.runtimes.catboost_face import face

            model = face(self, model)
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


def _load_pickle(path: Path) -> Any:
    import joblib

    try:
        # joblib reads its own files and plain pickles alike
        return joblib.load(path)
    except Exception as exc:  # any unpickling failure is a load failure
        raise ModelLoadError(
            f"cannot load {path.name}: not a readable joblib/pickle file "
            f"({type(exc).__name__}: {exc})"
        ) from exc


def _has_method(model: Any, method: str) -> bool:
    # ``hasattr`` evaluates available_if guards: a regressor has no predict_proba
    try:
        return callable(getattr(model, method))
    except AttributeError:
        return False
