"""Positive or negative, from a logistic regression over the TF-IDF vectors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel

from sentiment.tokenizer import Tokenizer
from sentiment.vectorizer import Vectorizer
from servekit import Model


class MovieSentiment(BaseModel):
    label: Literal["positive", "negative"]
    score: float


class Classifier(Model[str, MovieSentiment]):
    CONFIGURATIONS = {
        "classifier": {
            "asset": "sentiment/classifier:1.0[classifier.json]",
            "model_dependencies": {"tokenizer", "vectorizer"},
        }
    }

    def _load(self) -> None:
        data = json.loads(Path(self.asset_path).read_text())
        self.coef = np.asarray(data["coef"], dtype=np.float64)
        self.intercept = float(data["intercept"])
        self.tokenizer = self.model_dependencies.typed("tokenizer", Tokenizer)
        self.vectorizer = self.model_dependencies.typed("vectorizer", Vectorizer)

    def _predict_batch(self, items: list[str]) -> list[MovieSentiment]:
        tokens = self.tokenizer.predict_batch(items)
        vectors = self.vectorizer.dense(self.vectorizer.predict_batch(tokens))
        scores = 1.0 / (1.0 + np.exp(-(vectors @ self.coef + self.intercept)))
        return [
            MovieSentiment(label="positive" if s >= 0.5 else "negative", score=round(float(s), 6))
            for s in scores
        ]
