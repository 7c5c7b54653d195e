"""The prediction cache offered to any runtime for V2 requests, against real Redis."""

from __future__ import annotations

from pathlib import Path

import joblib
import redis
import requests
from servers import ServerProcess
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

COUNTER = '''
import numpy as np


class Counter:
    def __init__(self):
        self.calls = 0

    def predict(self, X, features_names):
        self.calls += 1
        return np.full(X.shape[0], self.calls, dtype=np.int64)
'''


def _infer(url: str, name: str, rows: list[list[float]]) -> dict:
    body = {"inputs": [{"name": "x", "datatype": "FP64", "shape": [len(rows), len(rows[0])],
                        "data": [v for r in rows for v in r]}]}
    answer = requests.post(f"{url}/v2/models/{name}/infer", json=body, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_repeated_v2_requests_are_served_from_redis(tmp_path: Path, redis_url: str) -> None:
    redis.Redis.from_url(redis_url).flushdb()
    (tmp_path / "counter").mkdir()
    (tmp_path / "counter" / "Counter.py").write_text(COUNTER)
    (tmp_path / "counter" / "model-settings.json").write_text(
        '{"name": "counter", "implementation": "Counter.Counter",'
        ' "parameters": {"extra": {"cache_predictions": true}}}'
    )
    (tmp_path / "iris").mkdir()
    iris = load_iris()
    joblib.dump(LogisticRegression(max_iter=500).fit(iris.data, iris.target), tmp_path / "iris" / "model.joblib")
    (tmp_path / "iris" / "model-settings.json").write_text(
        '{"name": "iris", "parameters": {"uri": "model.joblib", "version": "3", "extra": {"cache_predictions": true}}}'
    )
    env = {"SERVEKIT_CACHE_PROVIDER": "redis", "SERVEKIT_CACHE_URL": redis_url}
    with ServerProcess(["serve", str(tmp_path)], env=env) as server:
        first = _infer(server.url, "counter", [[1.0, 2.0]])["outputs"][0]["data"]
        assert first == [1]
        assert _infer(server.url, "counter", [[1.0, 2.0]])["outputs"][0]["data"] == [1]  # a hit: no call
        assert _infer(server.url, "counter", [[1.0, 3.0]])["outputs"][0]["data"] == [2]  # new input
        assert _infer(server.url, "counter", [[1.0, 2.0]])["outputs"][0]["data"] == [1]
        fresh = _infer(server.url, "iris", [[5.1, 3.5, 1.4, 0.2]])
        again = _infer(server.url, "iris", [[5.1, 3.5, 1.4, 0.2]])
        assert fresh["outputs"] == again["outputs"] and again["model_version"] == "3"
        assert again["outputs"][0]["data"] == [0]
    keys = sorted(k.decode().rsplit(":", 1)[0] for k in redis.Redis.from_url(redis_url).keys("servekit:*"))
    assert keys == ["servekit:counter:-", "servekit:counter:-", "servekit:iris:3"]
