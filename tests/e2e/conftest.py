"""A model repository trained offline, as the first seed article builds it:
an SVM-style scikit-learn model and an XGBoost model on 784-feature data."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from servers import ServerProcess
from sklearn.linear_model import LogisticRegression
from sklearn.svm import SVC

N_FEATURES = 784


def fashion_like(rows: int, seed: int) -> tuple[pd.DataFrame, pd.Series]:
    """Synthetic stand-in for fashion-mnist CSVs: 'label' plus pixel0..pixel783 as ints."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, rows)
    centers = np.random.default_rng(0).integers(0, 200, (10, N_FEATURES))
    pixels = np.clip(centers[labels] + rng.integers(-40, 40, (rows, N_FEATURES)), 0, 255)
    frame = pd.DataFrame(pixels, columns=[f"pixel{i}" for i in range(N_FEATURES)])
    return frame, pd.Series(labels, name="label")


def write_settings(folder: Path, settings: dict[str, object]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model-settings.json").write_text(json.dumps(settings, indent=2))


@pytest.fixture(scope="session")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    (root / "settings.json").write_text('{\n    "debug": "true"\n}\n')
    X, y = fashion_like(400, seed=1)

    svm = SVC(kernel="poly", degree=4, gamma=0.1).fit(X.values, y.values)
    (root / "sklearn").mkdir()
    joblib.dump(svm, root / "sklearn" / "Fashion_MNIST.joblib")
    write_settings(root / "sklearn", {
        "name": "fashion-sklearn",
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./Fashion_MNIST.joblib", "version": "v1"},
    })

    booster = xgb.train(
        {"max_depth": 5, "eta": 0.3, "verbosity": 1, "objective": "multi:softmax", "num_class": 10},
        xgb.DMatrix(X.values, label=y.values), 10,
    )
    (root / "xgboost").mkdir()
    booster.save_model(str(root / "xgboost" / "Fashion_MNIST.json"))
    write_settings(root / "xgboost", {
        "name": "fashion-xgboost",
        "implementation": "mlserver_xgboost.XGBoostModel",
        "parameters": {"uri": "./Fashion_MNIST.json", "version": "v1"},
    })

    # two versions of one model, one settings file per version folder
    for version, c in (("1", 0.01), ("2", 1.0)):
        folder = root / "logistic" / version
        folder.mkdir(parents=True)
        joblib.dump(LogisticRegression(C=c, max_iter=300).fit(X.values / 255, y.values), folder / "model.joblib")
        write_settings(folder, {"name": "logistic", "parameters": {"uri": "model.joblib", "version": version}})

    # a folder holding only a model file: served under the folder's name
    (root / "bare-forest").mkdir()
    from sklearn.ensemble import RandomForestRegressor

    joblib.dump(RandomForestRegressor(n_estimators=5, random_state=0).fit(X.values, y.values),
                root / "bare-forest" / "forest.pkl")

    # a broken model beside the working ones
    (root / "broken").mkdir()
    (root / "broken" / "model.joblib").write_bytes(b"this is not a pickle")
    write_settings(root / "broken", {"name": "broken", "parameters": {"uri": "model.joblib"}})
    return root


@pytest.fixture(scope="session")
def test_set() -> tuple[pd.DataFrame, pd.Series]:
    return fashion_like(200, seed=2)


@pytest.fixture(scope="session")
def server(repository: Path) -> Iterator[ServerProcess]:
    with ServerProcess(["serve", str(repository), "--max-request-size", str(8 * 1024 * 1024)]) as proc:
        yield proc


@pytest.fixture(scope="session")
def iris_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One small model: LogisticRegression on iris as ``iris`` version 1."""
    from sklearn.datasets import load_iris

    root = tmp_path_factory.mktemp("one-model")
    X, y = load_iris(return_X_y=True)
    (root / "iris").mkdir()
    joblib.dump(LogisticRegression(max_iter=500).fit(X, y), root / "iris" / "model.joblib")
    write_settings(root / "iris", {"name": "iris", "implementation": "mlserver_sklearn.SKLearnModel",
                                   "parameters": {"uri": "./model.joblib", "version": "1"}})
    return root
