"""KServe's own model server (kserve.ModelServer, from the same pinned venv)
serving the same two models as servekit, for the "peer itself" column:
echo (every input answered unchanged) and iris (the same fitted logistic
regression, computed from its coefficients in iris.json, so this venv needs no
scikit-learn). V1 dicts and V2 InferRequests, as KServe's docs write models.

Usage: python peer_server.py MODELS_FOLDER --http_port N --grpc_port M
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer
from kserve.errors import InvalidInput
from kserve.utils.utils import generate_uuid


class Echo(Model):
    def __init__(self) -> None:
        super().__init__("echo")
        self.ready = True

    async def predict(self, payload: Any, headers: Any = None, response_headers: Any = None) -> Any:
        outputs = []
        for entry in payload.inputs:
            output = InferOutput(name=entry.name, shape=list(entry.shape), datatype=entry.datatype)
            output.set_data_from_numpy(entry.as_numpy(), binary_data=payload.use_binary_outputs)
            outputs.append(output)
        return InferResponse(model_name=self.name, infer_outputs=outputs, use_binary_outputs=payload.use_binary_outputs,
                             response_id=payload.id or generate_uuid())  # as kserve.utils.utils.get_predict_response


class Iris(Model):
    def __init__(self, folder: Path) -> None:
        super().__init__("iris")
        fitted = json.loads((folder / "iris.json").read_text())
        self.coef, self.intercept = np.array(fitted["coef"]), np.array(fitted["intercept"])
        self.ready = True

    def proba(self, rows: np.ndarray) -> np.ndarray:
        if rows.ndim != 2 or rows.shape[1] != self.coef.shape[1]:
            raise InvalidInput(f"expected rows of {self.coef.shape[1]} features, got shape {list(rows.shape)}")
        scores = rows @ self.coef.T + self.intercept
        scores = np.exp(scores - scores.max(axis=1, keepdims=True))
        return scores / scores.sum(axis=1, keepdims=True)

    async def predict(self, payload: Any, headers: Any = None, response_headers: Any = None) -> Any:
        if isinstance(payload, dict):  # V1
            return {"predictions": self.proba(np.asarray(payload["instances"], dtype=float)).argmax(axis=1).tolist()}
        assert isinstance(payload, InferRequest)
        proba = self.proba(payload.inputs[0].as_numpy().astype(float))
        wanted = [o.name for o in payload.request_outputs] if payload.request_outputs else ["predict"]
        outputs = []
        for name in wanted:
            values = proba.argmax(axis=1).astype(np.int64) if name == "predict" else proba
            output = InferOutput(name=name, shape=list(values.shape), datatype="INT64" if name == "predict" else "FP64")
            output.set_data_from_numpy(values, binary_data=False)
            outputs.append(output)
        return InferResponse(model_name=self.name, infer_outputs=outputs, response_id=payload.id or generate_uuid())


if __name__ == "__main__":
    folder = Path(sys.argv[1])
    ModelServer(workers=1).start([Echo(), Iris(folder)])
