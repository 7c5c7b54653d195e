"""TF-IDF vectors from tokens, with the vocabulary and IDF weights that
scikit-learn's ``TfidfVectorizer`` learned (the asset)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from servekit import Model


class Vectorizer(Model[list[str], list[float]]):
    CONFIGURATIONS = {"vectorizer": {"asset": "sentiment/vectorizer:1.0[vectorizer.json]"}}
    TEST_CASES = [{"item": [], "result": []}]

    def _load(self) -> None:
        data = json.loads(Path(self.asset_path).read_text())
        self.vocabulary: dict[str, int] = data["vocabulary"]
        self.idf = np.asarray(data["idf"], dtype=np.float64)

    def _predict_batch(self, items: list[list[str]]) -> list[list[float]]:
        counts = np.zeros((len(items), len(self.idf)))
        for row, tokens in enumerate(items):
            for token in tokens:
                column = self.vocabulary.get(token)
                if column is not None:
                    counts[row, column] += 1
        weights = counts * self.idf
        norms = np.linalg.norm(weights, axis=1, keepdims=True)
        weights = np.divide(weights, norms, out=np.zeros_like(weights), where=norms > 0)
        return [list(map(float, row)) if row.any() else [] for row in weights]

    def dense(self, vectors: list[list[float]]) -> np.ndarray:
        """Stack vectors (empty ones are all zeros) into one matrix."""
        out = np.zeros((len(vectors), len(self.idf)))
        for i, vector in enumerate(vectors):
            if vector:
                out[i] = vector
        return out
