"""CatBoost models: CatBoost's own binary files (.cbm) and pickled/joblib
CatBoostClassifier/CatBoostRegressor objects.

A ``.cbm`` file says what it was trained for: a classification loss (Logloss,
CrossEntropy, MultiClass, MultiClassOneVsAll) serves ``predict`` (the class
labels it was fitted on, strings included) and ``predict_proba``; any other loss
serves ``predict`` (the raw value, as ``CatBoostRegressor.predict``). Like the
XGBoost runtime, the model is told how many threads to use (CatBoost's own
default is every core, whichever worker it runs in) and a file saved by
another CatBoost version loads with a warning naming both versions.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from servekit.errors import ModelLoadError
from servekit.runtimes.sklearn import PICKLE_SUFFIXES, SKLearnRuntime

# MLServer's runtime looks for model.cbm, then model.bin
CATBOOST_SUFFIXES = (".cbm", ".bin")
CLASSIFICATION_LOSSES = frozenset({"Logloss", "CrossEntropy", "MultiClass", "MultiClassOneVsAll"})


class CatBoostRuntime(SKLearnRuntime):
    platform: ClassVar[str] = "catboost"
    model_suffixes: ClassVar[tuple[str, ...]] = (*CATBOOST_SUFFIXES, *PICKLE_SUFFIXES)

    def load_model(self, path: Path) -> None:
        if path.suffix in PICKLE_SUFFIXES:
            super().load_model(path)  # adopt() wraps the CatBoost object it finds
            return
        import catboost

        model = catboost.CatBoost()
        try:
            model.load_model(str(path), format="cbm")
        except catboost.CatBoostError as exc:
            detail = " ".join(str(exc).split())[:300]
            raise ModelLoadError(f"cannot load {path.name} as a CatBoost model (.cbm): {detail}") from exc
        self.adopt(model)  # SKLearnRuntime.adopt gives it its face (face() below)


def face(runtime: SKLearnRuntime, model: Any) -> Any:
    """``model`` as served: a CatBoost model (however it was loaded, by this
    runtime or by the scikit-learn runtime from a pickle) gets its face, its
    thread count and the version check; anything else stays as it is."""
    import catboost

    if not isinstance(model, catboost.CatBoost):
        return model
    runtime.warn_version("catboost", saved_version(model), catboost.__version__)
    return CatBoostModel(model, threads(runtime))


def threads(runtime: SKLearnRuntime) -> int:
    """``parameters.extra.thread_count``, else the worker's share of the cores
    (``OMP_NUM_THREADS``, set per worker by the server), as the XGBoost runtime."""
    extra = runtime.settings.parameters.extra
    explicit = extra.get("thread_count") or extra.get("nthread")
    return int(explicit or os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1)


class CatBoostModel:
    """An sklearn-like face on any CatBoost model, whichever class loaded it:
    ``predict`` and (classifiers) ``predict_proba`` with the runtime's thread count."""

    def __init__(self, model: Any, threads: int) -> None:
        self.model = model
        self.threads = threads
        loss = str(model.get_all_params().get("loss_function", ""))
        self.loss = loss.split(":", 1)[0]
        names = [str(n) for n in (model.feature_names_ or [])]
        self.n_features_in_ = len(names)
        # CatBoost names unnamed columns "0", "1", …: only real names order named inputs
        if names and names != [str(i) for i in range(len(names))]:
            self.feature_names_in_ = np.asarray(names, dtype=object)
        classes = getattr(model, "classes_", None)
        self.is_classifier = self.loss in CLASSIFICATION_LOSSES
        if self.is_classifier:
            self.classes_ = np.asarray(classes) if classes is not None and len(classes) else np.arange(2)
        else:
            self.predict_proba = None  # type: ignore[assignment]

    def _predict(self, features: np.ndarray, kind: str) -> np.ndarray:
        import catboost

        try:
            out = self.model.predict(features, prediction_type=kind, thread_count=self.threads)
        except catboost.CatBoostError as exc:  # the input does not fit the model: the client's to fix
            raise ValueError(" ".join(str(exc).split())[:300]) from None
        return np.asarray(out)

    def predict(self, features: np.ndarray) -> np.ndarray:
        if not self.is_classifier:
            return self._predict(features, "RawFormulaVal")
        labels = self._predict(features, "Class")
        return labels.reshape(len(labels)) if labels.ndim == 2 and labels.shape[1] == 1 else labels

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        return self._predict(features, "Probability")


def saved_version(model: Any) -> str | None:
    """The CatBoost version that saved ``model`` (its ``catboost_version_info`` metadata)."""
    try:
        info = str(model.get_metadata().get("catboost_version_info", ""))
    except Exception:  # metadata is informative only
        return None
    found = _RELEASE.search(info) or _TAG.search(info)
    return found.group(1) if found else None


_RELEASE = re.compile(r"CatBoost release (\d+(?:\.\d+)+)")
_TAG = re.compile(r"tags/v(\d+(?:\.\d+)+)")
