"""The three benchmark models on LitServe: one ``LitAPI`` per model at
``/predict/<model>``, taking ``{"rows": [[...], ...]}`` and answering
``{"predictions": [...]}``.

PEER_BATCHING=1 is LitServe's documented batching: ``max_batch_size`` and
``batch_timeout`` (up to 32 requests, waiting at most 5 ms); ``batch`` and
``unbatch`` join the requests' rows and split the labels back.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import litserve as ls
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import models


class Classifier(ls.LitAPI):
    def __init__(self, name: str, batching: bool) -> None:
        options: dict[str, Any] = {}
        if batching:
            options = {"max_batch_size": models.MAX_BATCH_SIZE, "batch_timeout": models.MAX_BATCH_DELAY_S}
        super().__init__(api_path=f"/predict/{name}", **options)
        self.name = name
        self.sizes: list[int] = []

    def setup(self, device: str) -> None:
        self.predict_rows = models.load(self.name)

    # no annotation on request: LitServe takes the JSON body as a dict then
    def decode_request(self, request):  # type: ignore[no-untyped-def]
        return np.asarray(request["rows"], dtype=np.float64)

    def batch(self, inputs: list[np.ndarray]) -> np.ndarray:
        self.sizes = [len(rows) for rows in inputs]
        return np.concatenate(inputs)

    def predict(self, rows: np.ndarray) -> np.ndarray:
        return self.predict_rows(rows)

    def unbatch(self, output: np.ndarray) -> list[np.ndarray]:
        return np.split(output, np.cumsum(self.sizes)[:-1])

    def encode_response(self, output: np.ndarray) -> dict[str, Any]:
        return {"predictions": output.tolist()}


if __name__ == "__main__":
    batching = models.batching()
    server = ls.LitServer([Classifier(name, batching) for name in models.NAMES], accelerator="cpu")
    server.run(host="127.0.0.1", port=int(os.environ.get("PEER_PORT", "8000")), generate_client_file=False)
