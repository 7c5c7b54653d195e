"""LightGBM models: Booster text files (.txt, .bst) and pickled sklearn wrappers."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from servekit.errors import ModelLoadError
from servekit.runtimes.sklearn import PICKLE_SUFFIXES, SKLearnRuntime
from servekit.runtimes.tabular import labels_from_scores


class LightGBMRuntime(SKLearnRuntime):
    platform: ClassVar[str] = "lightgbm"
    model_suffixes: ClassVar[tuple[str, ...]] = (".txt", ".bst", ".lgb", *PICKLE_SUFFIXES)

    def load_model(self, path: Path) -> None:
        if path.suffix in PICKLE_SUFFIXES:
            super().load_model(path)
            return
        import lightgbm as lgb

        try:
            booster = lgb.Booster(model_file=str(path))
        except lgb.basic.LightGBMError as exc:
            raise ModelLoadError(f"cannot load {path.name} as LightGBM: {exc}") from exc
        self.adopt(LightGBMBoosterModel(booster, _objective(path)))


class LightGBMBoosterModel:
    """An sklearn-like face on a LightGBM Booster, driven by its objective."""

    def __init__(self, booster: Any, objective: str) -> None:
        self.booster = booster
        self.objective = objective
        self.n_features_in_ = booster.num_feature()
        self.is_classifier = objective.startswith(("binary", "multiclass", "multiclassova"))
        if self.is_classifier:
            n_class = booster.num_model_per_iteration() if objective != "binary" else 2
            self.classes_ = np.arange(max(n_class, 2), dtype=np.int64)
        else:
            self.predict_proba = None  # type: ignore[assignment]

    def predict(self, features: np.ndarray) -> np.ndarray:
        raw = np.asarray(self.booster.predict(features))
        if not self.is_classifier:
            return raw
        return labels_from_scores(raw)

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        raw = np.asarray(self.booster.predict(features))
        proba: np.ndarray = raw if raw.ndim == 2 else np.column_stack([1.0 - raw, raw])
        return proba


def _objective(path: Path) -> str:
    with path.open("r", errors="replace") as fh:
        for line in fh:
            if line.startswith("objective="):
                return line.split("=", 1)[1].split()[0].strip()
            if line.startswith("Tree="):
                break
    return "regression"
