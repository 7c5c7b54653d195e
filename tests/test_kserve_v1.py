"""KServe's V1 protocol on the main HTTP port (where KServe's model server and
its V1 client have it), beside V2: liveness, model list and readiness,
:predict in the row format, :explain refused, errors as {"error"}."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import joblib
import pytest
import requests
from servers import ServerProcess
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, LogisticRegression]]:
    X, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=500).fit(X, y)
    root: Path = tmp_path_factory.mktemp("kserve")
    (root / "iris").mkdir()
    joblib.dump(model, root / "iris" / "model.joblib")
    with ServerProcess(["serve", str(root)]) as process:
        yield process, model


def test_v1_status_calls_on_the_main_port(server: tuple[ServerProcess, LogisticRegression]) -> None:
    process, _ = server
    assert requests.get(f"{process.url}/", timeout=10).json() == {"status": "alive"}
    assert requests.get(f"{process.url}/v1/models", timeout=10).json() == {"models": ["iris"]}
    ready = requests.get(f"{process.url}/v1/models/iris", timeout=10)
    assert ready.status_code == 200 and ready.json() == {"name": "iris", "ready": True}
    missing = requests.get(f"{process.url}/v1/models/nope", timeout=10)
    assert missing.status_code == 404 and "nope" in missing.json()["error"]


def test_v1_predict_and_explain(server: tuple[ServerProcess, LogisticRegression]) -> None:
    process, model = server
    rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]
    answer = requests.post(f"{process.url}/v1/models/iris:predict", json={"instances": rows}, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"predictions": model.predict(rows).tolist()}
    # the same model over V2 on the same port
    v2 = requests.post(f"{process.url}/v2/models/iris/infer", timeout=10, json={
        "inputs": [{"name": "x", "shape": [3, 4], "datatype": "FP64", "data": [v for row in rows for v in row]}]}).json()
    assert v2["outputs"][0]["data"] == answer.json()["predictions"]
    explain = requests.post(f"{process.url}/v1/models/iris:explain", json={"instances": rows}, timeout=10)
    assert explain.status_code == 501 and "no explainer" in explain.json()["error"]
    for body, text in ((b"{oops", "JSON"), (b'{"instances": [[1, 2]]}', "expects 4 features")):
        bad = requests.post(f"{process.url}/v1/models/iris:predict", data=body, timeout=10)
        assert bad.status_code == 400 and text in bad.json()["error"], bad.text
    unknown = requests.post(f"{process.url}/v1/models/nope:predict", json={"instances": rows}, timeout=10)
    assert unknown.status_code == 404 and "nope" in unknown.json()["error"]
