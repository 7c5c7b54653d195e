"""The three benchmark models on KServe's Python model server (kserve.Model + ModelServer).

One ``kserve.Model`` per model, answering both of KServe's REST protocols:
V1 (``POST /v1/models/<name>:predict`` with ``{"instances": rows}``) and V2
(``POST /v2/models/<name>/infer``). KServe's Python server has no batching of
its own (KServe batches in its Kubernetes agent sidecar, which does not run
here); its one documented scaling setting is ``workers`` (uvicorn processes):
PEER_WORKERS, 1 by default as in KServe.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

# KServe reads its flags from the command line when it is imported; gRPC messages are capped at 8 MB
# by default, and the suite's 10,000-row request is 63 MB (servekit and MLServer get 256 MB too)
GRPC_MAX = str(256 * 1024 * 1024)
sys.argv += ["--grpc_max_receive_message_length", GRPC_MAX, "--grpc_max_send_message_length", GRPC_MAX]

from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer  # noqa: E402
from kserve.utils.utils import generate_uuid  # noqa: E402 (imported after the flags above)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import models

DATATYPES = {np.dtype(np.int64): "INT64", np.dtype(np.int32): "INT32",
             np.dtype(np.float32): "FP32", np.dtype(np.float64): "FP64"}


class Classifier(Model):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.predict_rows: models.Predict | None = None

    def load(self) -> bool:
        self.predict_rows = models.load(self.name)
        self.ready = True
        return self.ready

    def predict(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        assert self.predict_rows is not None
        if isinstance(payload, InferRequest):  # V2
            labels = self.predict_rows(payload.inputs[0].as_numpy())
            output = InferOutput(name="predict", shape=list(labels.shape), datatype=DATATYPES[labels.dtype])
            output.set_data_from_numpy(labels, binary_data=False)
            return InferResponse(model_name=self.name, infer_outputs=[output], response_id=payload.id or generate_uuid())
        rows = np.asarray(payload["instances"], dtype=np.float64)  # V1
        return {"predictions": self.predict_rows(rows).tolist()}


if __name__ == "__main__":
    port = int(os.environ.get("PEER_PORT", "8080"))
    served = []
    for name in models.NAMES:
        model = Classifier(name)
        model.load()
        served.append(model)
    ModelServer(http_port=port, grpc_port=port + 1,
                workers=int(os.environ.get("PEER_WORKERS", "1"))).start(served)
