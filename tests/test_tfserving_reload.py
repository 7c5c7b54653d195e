"""Live changes while serving: config file edits under load, new version
folders dropped into a base path, a broken config keeping the last good state;
and policies/labels on a non-TensorFlow runtime through TF Serving's API."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from test_version_policy import make_sklearn
from tfserving_support import BODY, NAME, ArticleModels, TFServer, article_models, predictions

pytest.importorskip("tensorflow")

BEFORE = """model_config_list {{
  config {{
    name: 'regression_experiments'
    base_path: '{base}'
    model_platform: 'tensorflow'
    model_version_policy {{ specific {{ versions: 1 }} }}
    version_labels {{ key: 'production' value: 1 }}
  }}
  config {{
    name: 'diabetes'
    base_path: '{other}'
  }}
}}
"""

AFTER = """model_config_list {{
  config {{
    name: 'regression_experiments'
    base_path: '{base}'
    model_platform: 'tensorflow'
    model_version_policy {{ specific {{ versions: 1 versions: 2 }} }}
    version_labels {{ key: 'production' value: 1 }}
    version_labels {{ key: 'test' value: 2 }}
  }}
}}
"""


def wait_for(check: Any, what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_config_edit_under_load(tmp_path: Path) -> None:
    models: ArticleModels = article_models()
    base = models.base_path(tmp_path)
    other = tmp_path / "diabetes"
    make_sklearn(other / "1")
    cfg = tmp_path / "models.conf"
    cfg.write_text(BEFORE.format(base=base, other=other))
    args = [f"--model_config_file={cfg}", "--model_config_file_poll_wait_seconds=0.5",
            "--file_system_poll_wait_seconds=0.5"]
    with TFServer(args) as server:
        stop = threading.Event()
        failures: list[str] = []
        counts = {"ok": 0, "removed": 0}

        def client() -> None:
            session = requests.Session()
            x = '{"instances": [[0.03, 0.05, 0.06, 0.02, -0.04, -0.03, -0.04, -0.002, 0.02, -0.02]]}'
            while not stop.is_set():
                for url, body, expected in (
                    (f"/v1/models/{NAME}/labels/production:predict", BODY, models.expected[1]),
                    (f"/v1/models/{NAME}/versions/1:predict", BODY, models.expected[1]),
                    ("/v1/models/diabetes:predict", x, None),
                ):
                    response = session.post(server.rest + url, data=body)
                    if response.status_code == 200:
                        got = np.asarray(response.json()["predictions"])
                        if expected is not None and not np.allclose(got, expected, atol=1e-5):
                            failures.append(f"{url}: {got}")
                        counts["ok"] += 1
                    elif url.startswith("/v1/models/diabetes") and response.status_code == 404 \
                            and "not found" in response.json()["error"]:
                        counts["removed"] += 1
                    else:
                        failures.append(f"{url}: {response.status_code} {response.text}")

        thread = threading.Thread(target=client)
        thread.start()
        try:
            wait_for(lambda: counts["ok"] > 20, "requests before the edit")
            cfg.write_text(AFTER.format(base=base))
            url = f"{server.rest}/v1/models/{NAME}/labels/test:predict"
            wait_for(lambda: requests.post(url, data=BODY).status_code == 200, "the new label")
            wait_for(lambda: counts["removed"] > 5, "the removed model to answer 404")
            # a broken edit keeps what is served
            cfg.write_text("model_config_list { config { name: 'x' ")
            wait_for(lambda: "keeping the current models" in server.log(), "the config error in the log")
            served = counts["ok"]
            wait_for(lambda: counts["ok"] > served + 20, "requests after the broken edit")
        finally:
            stop.set()
            thread.join()
        assert failures == []
        np.testing.assert_allclose(predictions(requests.post(url, data=BODY)), models.expected[2], atol=1e-5)
        status = requests.get(f"{server.rest}/v1/models/{NAME}").json()
        assert [s["version"] for s in status["model_version_status"]] == ["2", "1"]
        assert requests.get(f"{server.rest}/v1/models/diabetes").status_code == 404


def test_new_version_folder_is_served(tmp_path: Path) -> None:
    models = article_models()
    base = models.base_path(tmp_path, versions=(1,))
    args = [f"--model_name={NAME}", f"--model_base_path={base}", "--file_system_poll_wait_seconds=0.5"]
    with TFServer(args) as server:
        got = predictions(requests.post(f"{server.rest}/v1/models/{NAME}:predict", data=BODY))
        np.testing.assert_allclose(got, models.expected[1], atol=1e-5)
        shutil.copytree(models.store / "3", base / "3")

        def serves_three() -> bool:
            status = requests.get(f"{server.rest}/v1/models/{NAME}").json()
            return [s["version"] for s in status["model_version_status"]] == ["3"]

        wait_for(serves_three, "version 3 to replace version 1")
        got = predictions(requests.post(f"{server.rest}/v1/models/{NAME}:predict", data=BODY))
        np.testing.assert_allclose(got, models.expected[3], atol=1e-5)


def test_sklearn_versions_labels_classify_regress(tmp_path: Path) -> None:
    """Policies and labels from model-settings.json, on scikit-learn, through TF Serving's API."""
    import json

    import joblib
    from sklearn.datasets import load_diabetes, load_iris
    from sklearn.linear_model import LinearRegression, LogisticRegression

    x, y = load_diabetes(return_X_y=True)
    regressors = {}
    for version in (1, 2, 3):
        folder = tmp_path / "repo" / "diabetes" / str(version)
        folder.mkdir(parents=True)
        regressors[version] = LinearRegression().fit(x, y * version)
        joblib.dump(regressors[version], folder / "model.joblib")
    (tmp_path / "repo" / "diabetes" / "model-settings.json").write_text(
        json.dumps({"version_policy": {"latest": {"num_versions": 2}}, "version_labels": {"stable": 2}})
    )
    iris_x, iris_y = load_iris(return_X_y=True)
    iris = LogisticRegression(max_iter=500).fit(iris_x, iris_y)
    (tmp_path / "repo" / "iris").mkdir()
    joblib.dump(iris, tmp_path / "repo" / "iris" / "model.joblib")
    (tmp_path / "repo" / "iris" / "model-settings.json").write_text(
        json.dumps({"parameters": {"extra": {"default_output": "predict_proba"}}})
    )
    with TFServer([str(tmp_path / "repo")]) as server:
        status = requests.get(f"{server.rest}/v1/models/diabetes").json()
        assert [s["version"] for s in status["model_version_status"]] == ["3", "2"]
        rows = x[:3].tolist()
        response = requests.post(f"{server.rest}/v1/models/diabetes/labels/stable:predict",
                                 json={"instances": rows})
        np.testing.assert_allclose(predictions(response), regressors[2].predict(x[:3]), rtol=1e-6)
        names = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
        examples = [dict(zip(names, row, strict=True)) for row in rows]
        response = requests.post(f"{server.rest}/v1/models/diabetes:regress", json={"examples": examples})
        np.testing.assert_allclose(response.json()["results"], regressors[3].predict(x[:3]), rtol=1e-6)
        features = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
        examples = [dict(zip(features, row, strict=True)) for row in iris_x[:2].tolist()]
        response = requests.post(f"{server.rest}/v1/models/iris:classify", json={"examples": examples})
        results = response.json()["results"]
        expected = iris.predict_proba(iris_x[:2])
        assert [[label for label, _ in row] for row in results] == [["0", "1", "2"]] * 2
        np.testing.assert_allclose([[s for _, s in row] for row in results], expected, rtol=1e-6)
