"""The three benchmark models on Triton Inference Server through PyTriton.

Each model is bound with one FP64 input ``predict`` (``[n, features]``) and one
INT64 output ``label`` (``[n, 1]``); Triton serves V2 REST on PEER_PORT, gRPC on
+1 and metrics on +2. Triton's model names take no hyphen here: iris_rf,
fashion_logreg, fashion_xgboost.

Batching: off by default here (``ModelConfig(batching=False)``: each request
reaches Python alone); PEER_BATCHING=1 is Triton's dynamic batcher, PyTriton's
documented setting (``@batch``, ``max_batch_size`` 32, at most 5 ms queue delay).
"""

from __future__ import annotations

import os
import sys
import sysconfig
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import models


def labels_of(predict: models.Predict, rows: np.ndarray) -> np.ndarray:
    return np.asarray(predict(rows)).astype(np.int64).reshape(-1, 1)


def batched(model: models.Predict) -> Callable[..., Any]:
    @batch
    def infer(predict: np.ndarray) -> dict[str, np.ndarray]:  # named after the input tensor
        return {"label": labels_of(model, predict)}

    return infer


def one_by_one(predict: models.Predict) -> Callable[..., Any]:
    def infer(requests: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        return [{"label": labels_of(predict, request["predict"])} for request in requests]

    return infer


def use_this_libpython() -> None:
    """Triton's Python backend stub links libpython3.X.so from the library path: point it at this
    interpreter's, or it may find the system's (here Debian's 3.11.2 under pyenv's 3.11.7 standard
    library: the model fails to load with "'_thread.RLock' object has no attribute
    '_recursion_count'")."""
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir and sysconfig.get_config_var("LDLIBRARY") and Path(libdir, sysconfig.get_config_var("LDLIBRARY")).exists():
        os.environ["LD_LIBRARY_PATH"] = os.pathsep.join(
            p for p in (libdir, os.environ.get("LD_LIBRARY_PATH", "")) if p)


if __name__ == "__main__":
    use_this_libpython()
    port = int(os.environ.get("PEER_PORT", "8000"))
    batching = models.batching()
    config = TritonConfig(http_address="127.0.0.1", http_port=port, grpc_address="127.0.0.1",
                          grpc_port=port + 1, metrics_port=port + 2)
    with Triton(config=config) as triton:
        for name in models.NAMES:
            predict = models.load(name)
            features = models.FEATURES[name]
            if batching:
                triton.bind(
                    model_name=name.replace("-", "_"), infer_func=batched(predict),
                    inputs=[Tensor(name="predict", dtype=np.float64, shape=(features,))],
                    outputs=[Tensor(name="label", dtype=np.int64, shape=(1,))],
                    config=ModelConfig(max_batch_size=models.MAX_BATCH_SIZE, batcher=DynamicBatcher(
                        max_queue_delay_microseconds=int(models.MAX_BATCH_DELAY_S * 1e6))),
                    strict=True)
            else:
                triton.bind(
                    model_name=name.replace("-", "_"), infer_func=one_by_one(predict),
                    inputs=[Tensor(name="predict", dtype=np.float64, shape=(-1, features))],
                    outputs=[Tensor(name="label", dtype=np.int64, shape=(-1, 1))],
                    config=ModelConfig(batching=False), strict=True)
        triton.serve()
