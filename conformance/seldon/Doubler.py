import numpy as np


class Doubler:
    def __init__(self, factor=2.0):
        self.factor = float(factor)

    def predict(self, X, features_names=None):
        if isinstance(X, str):
            return X.upper()
        if isinstance(X, (bytes, bytearray)):
            return bytes(X)[::-1]
        if isinstance(X, dict):
            return {"echo": X, "names": list(features_names or [])}
        return np.asarray(X, dtype=float) * self.factor
