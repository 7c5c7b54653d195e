"""The three benchmark models as one BentoML service, served with BentoML's CLI:

    PEER_REPO=benchmarks/work/repo bentoml serve service:Classifiers --port 8000

(from this folder). One ``@bentoml.api`` per model, at ``/iris_rf``,
``/fashion_logreg`` and ``/fashion_xgboost``, taking ``{"rows": [[...], ...]}``
and answering the labels as a JSON list. PEER_BATCHING=1 is BentoML's
documented batching: ``batchable=True`` (adaptive batching, up to 32 requests).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import bentoml
import numpy as np
from bentoml.validators import DType

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import models

Rows = Annotated[np.ndarray, DType("float64")]

if models.batching():
    api = bentoml.api(batchable=True, batch_dim=0, max_batch_size=models.MAX_BATCH_SIZE)
else:
    api = bentoml.api()


@bentoml.service
class Classifiers:
    def __init__(self) -> None:
        self.iris = models.load("iris-rf")
        self.logreg = models.load("fashion-logreg")
        self.xgboost = models.load("fashion-xgboost")

    @api
    def iris_rf(self, rows: Rows) -> np.ndarray:
        return self.iris(rows)

    @api
    def fashion_logreg(self, rows: Rows) -> np.ndarray:
        return self.logreg(rows)

    @api
    def fashion_xgboost(self, rows: Rows) -> np.ndarray:
        return self.xgboost(rows)
