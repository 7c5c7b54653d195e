"""The three benchmark models, loaded from the files ``benchmarks/train.py`` writes.

Imported by every peer's server script, inside that peer's own environment
(which has the same scikit-learn, xgboost and joblib as servekit's), so every
server predicts with the same model files and the same library calls.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import joblib
import numpy as np
import xgboost as xgb

NAMES = ("iris-rf", "fashion-logreg", "fashion-xgboost")
FEATURES = {"iris-rf": 4, "fashion-logreg": 784, "fashion-xgboost": 784}

Predict = Callable[[np.ndarray], np.ndarray]


def repository() -> Path:
    """The model repository: $PEER_REPO, else benchmarks/work/repo."""
    default = Path(__file__).resolve().parent.parent / "work" / "repo"
    return Path(os.environ.get("PEER_REPO", str(default)))


def load(name: str, repo: Path | None = None) -> Predict:
    """A function from an (n, features) FP64 array to the n predicted labels."""
    folder = (repo or repository()) / name
    if name == "fashion-xgboost":
        booster = xgb.Booster()
        booster.load_model(folder / "model.json")
        return BoosterLabels(booster)
    model = joblib.load(folder / "model.joblib")
    predict: Predict = model.predict
    return predict


class BoosterLabels:
    """An XGBoost booster's predictions (labels for multi:softmax), picklable for servers that
    send their models to worker processes (KServe's workers)."""

    def __init__(self, booster: xgb.Booster) -> None:
        self.booster = booster

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self.booster.inplace_predict(rows))


def batching() -> bool:
    """True for the peer's best documented batching setting ($PEER_BATCHING=1)."""
    return os.environ.get("PEER_BATCHING", "0") == "1"


# the batching setting used wherever a peer takes one: up to 32 requests, waiting at most 5 ms
# (the same as MLServer's adaptive batching configuration in suite.py)
MAX_BATCH_SIZE = 32
MAX_BATCH_DELAY_S = 0.005
