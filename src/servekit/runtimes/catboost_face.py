"""The face servekit gives a CatBoost model, however it was loaded (a ``.cbm``
by :mod:`servekit.runtimes.catboost`, a pickle by the scikit-learn runtime):
``predict`` and (classifiers) ``predict_proba`` with the runtime's thread
count, and the check of the CatBoost version that saved it. Its own module so
that both runtimes use it without importing each other."""

from __future__ import annotations

import os
import re
from typing import Any

import numpy as np

from servekit.runtimes.tabular import TabularRuntime

CLASSIFICATION_LOSSES = frozenset({"Logloss", "CrossEntropy", "MultiClass", "MultiClassOneVsAll"})


def face(runtime: TabularRuntime, model: Any) -> Any:
    """``model`` as served: a CatBoost model (however it was loaded, by this
    runtime or by the scikit-learn runtime from a pickle) gets its face, its
    thread count and the version check; anything else stays as it is."""
    import catboost

    if not isinstance(model, catboost.CatBoost):
        return model
    runtime.warn_version("catboost", saved_version(model), catboost.__version__)
    return CatBoostModel(model, threads(runtime))


def threads(runtime: TabularRuntime) -> int:
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
