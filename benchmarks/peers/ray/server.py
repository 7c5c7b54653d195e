"""The three benchmark models on Ray Serve: one deployment per model, each its own
application under ``/<model>``, taking ``{"rows": [[...], ...]}`` and answering
``{"predictions": [...]}``; a GET on the same path answers 200 once the replica is up.

PEER_BATCHING=1 is Ray Serve's documented batching: ``@serve.batch`` on the
method that predicts (up to 32 requests, waiting at most 5 ms).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import ray
from ray import serve
from starlette.requests import Request

PEERS = str(Path(__file__).resolve().parent.parent)
sys.path.insert(0, PEERS)
import models  # noqa: E402  (benchmarks/peers/models.py)


# a replica asks for half a core: three models fit in the two cores Ray sees here
@serve.deployment(ray_actor_options={"num_cpus": 0.5})
class Classifier:
    def __init__(self, name: str) -> None:
        sys.path.insert(0, PEERS)
        import models as replica_models

        self.predict_rows = replica_models.load(name)
        self.batching = replica_models.batching()

    async def __call__(self, request: Request) -> dict[str, Any]:
        if request.method == "GET":
            return {"ready": True}
        rows = np.asarray((await request.json())["rows"], dtype=np.float64)
        labels = await self.predict_batched(rows) if self.batching else self.predict_rows(rows)
        return {"predictions": labels.tolist()}

    @serve.batch(max_batch_size=models.MAX_BATCH_SIZE, batch_wait_timeout_s=models.MAX_BATCH_DELAY_S)
    async def predict_batched(self, batch: list[np.ndarray]) -> list[np.ndarray]:
        labels = self.predict_rows(np.concatenate(batch))
        return np.split(labels, np.cumsum([len(rows) for rows in batch])[:-1])


if __name__ == "__main__":
    port = int(os.environ.get("PEER_PORT", "8000"))
    ray.init(include_dashboard=False, runtime_env={"env_vars": {
        k: v for k, v in os.environ.items() if k.startswith("PEER_")}})
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    deployment = Classifier
    if models.batching():
        # Ray's batching guide: a replica must take at least a batch's worth of requests at once
        deployment = Classifier.options(max_ongoing_requests=models.MAX_BATCH_SIZE)
    for name in models.NAMES:
        serve.run(deployment.bind(name), name=name, route_prefix=f"/{name}", blocking=False)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while True:
            time.sleep(3600)
    finally:
        serve.shutdown()
        ray.shutdown()
