"""XGBoost models: Booster files (.json, .ubj, .bst) and pickled sklearn wrappers."""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from servekit.errors import ModelLoadError
from servekit.runtimes.sklearn import PICKLE_SUFFIXES, SKLearnRuntime
from servekit.runtimes.tabular import labels_from_scores
from servekit.runtimes.xgboost_fast import MAX_ROWS as FAST_MAX_ROWS
from servekit.runtimes.xgboost_fast import compile_booster


class XGBoostRuntime(SKLearnRuntime):
    platform: ClassVar[str] = "xgboost"
    model_suffixes: ClassVar[tuple[str, ...]] = (".json", ".ubj", ".bst", *PICKLE_SUFFIXES)

    def load_model(self, path: Path) -> None:
        if path.suffix in PICKLE_SUFFIXES:
            super().load_model(path)
            return
        import xgboost as xgb

        try:
            booster = xgb.Booster(model_file=str(path))
        except xgb.core.XGBoostError as exc:
            raise ModelLoadError(f"cannot load {path.name} as XGBoost: {exc}") from exc
        if path.suffix == ".json":
            self.warn_version("xgboost", _saved_version(path), xgb.__version__)
        booster.set_param("nthread", str(self.threads()))
        self.adopt(BoosterModel(booster))

    def threads(self) -> int:
        """``parameters.extra.nthread``, else the worker's share of the cores.
        XGBoost's own default (0) means every core whatever OMP_NUM_THREADS
        says, so several workers would fight over the cores."""
        explicit = self.settings.parameters.extra.get("nthread")
        return int(explicit or os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1)

    def adopt(self, model: Any) -> None:
        if hasattr(model, "get_booster"):  # a pickled XGBClassifier/XGBRegressor
            with contextlib.suppress(Exception):  # not fitted: predict reports it
                model.get_booster().set_param("nthread", str(self.threads()))
        super().adopt(model)


class BoosterModel:
    """An sklearn-like face on a raw XGBoost Booster, driven by its objective."""

    def __init__(self, booster: Any) -> None:
        self.booster = booster
        config = json.loads(booster.save_config())
        learner = config["learner"]
        self.objective: str = learner["objective"]["name"]
        self.n_features_in_ = booster.num_features()
        self.is_classifier = self.objective.startswith(("binary:", "multi:"))
        if self.is_classifier:
            n_class = int(learner["learner_model_param"].get("num_class", "0") or 0)
            self.classes_ = np.arange(max(n_class, 2), dtype=np.int64)
        else:
            self.predict_proba = None  # type: ignore[assignment]

    def fast_methods(self) -> tuple[dict[str, Callable[[np.ndarray], np.ndarray]], int]:
        """``predict`` by the compiled walk (runtimes/xgboost_fast.py) for small
        requests, when the booster is one it does exactly; checked on probe rows
        against :meth:`predict` by the caller."""
        compiled = compile_booster(self.booster)
        if compiled is None:
            return {}, 0
        return {"predict": compiled.predict(self.predict)}, FAST_MAX_ROWS

    def _raw(self, features: np.ndarray, margin: bool = False) -> np.ndarray:
        kind = "margin" if margin else "value"
        return np.asarray(self.booster.inplace_predict(features, predict_type=kind))

    def predict(self, features: np.ndarray) -> np.ndarray:
        raw = self._raw(features)
        if not self.is_classifier:
            return raw
        if self.objective == "multi:softmax":
            labels: np.ndarray = raw.astype(np.int64)
            return labels
        return labels_from_scores(raw)

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        if self.objective == "multi:softmax":
            margin = self._raw(features, margin=True)
            exp = np.exp(margin - margin.max(axis=1, keepdims=True))
            proba: np.ndarray = exp / exp.sum(axis=1, keepdims=True)
            return proba
        raw = self._raw(features)
        if raw.ndim == 2:
            return raw
        return np.column_stack([1.0 - raw, raw])


def _saved_version(path: Path) -> str | None:
    """The XGBoost version a JSON model was saved with (its trailing "version" list)."""
    try:
        with path.open("rb") as fh:
            fh.seek(max(0, path.stat().st_size - 4096))
            tail = fh.read().decode("utf-8", "replace")
    except OSError:
        return None
    found = _VERSION.findall(tail)
    if not found:
        return None
    return ".".join(part.strip() for part in found[-1].split(","))


_VERSION = re.compile(r'"version"\s*:\s*\[([0-9,\s]+)\]')
