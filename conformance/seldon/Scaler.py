import numpy as np


class Scaler:
    """A TRANSFORMER (and OUTPUT_TRANSFORMER): scales numbers in, rounds them out;
    reads the request's meta as Seldon's wrapper passes it (meta=)."""

    def __init__(self, scale=10.0):
        self.scale = float(scale)

    def transform_input(self, X, feature_names, meta=None):
        if isinstance(X, str):
            return X.lower()
        return np.asarray(X, dtype=float) / self.scale

    def transform_output(self, X, feature_names, **kwargs):
        meta = kwargs.get("meta") or {}
        if isinstance(X, dict):
            return {"output": X, "puid": meta.get("puid")}
        return np.round(np.asarray(X, dtype=float) * self.scale, 3)

    def class_names(self):
        return ["low", "mid", "high", "top"]
