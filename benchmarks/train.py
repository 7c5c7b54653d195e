"""Train the seed article's three model shapes offline and write one model
repository in MLServer's format (servekit reads the same files).

    python benchmarks/train.py benchmarks/work

writes, under the given folder:

- ``repo/iris-rf``: a 100-tree RandomForest on iris (scikit-learn);
- ``repo/fashion-logreg``: a LogisticRegression on synthetic 784-feature
  "images" (pixel values 0-255, stored as FP64, like Fashion-MNIST);
- ``repo/fashion-xgboost``: an XGBoost booster on the same data, trained with
  the article's parameters;
- ``data/``: the 10,000 x 784 FP64 test set as ``.npy`` and as the article's
  JSON request (``requests.post(json=...)`` spelling), one-row request bodies
  per model, and ``floor.json``: each model's in-process predict time.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path

import joblib
import numpy as np
import xgboost as xgb
from sklearn.datasets import load_iris, make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

FEATURES = 784
TEST_ROWS = 10_000
TRAIN_ROWS = 6_000


def pixels(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic 784-feature images: integer pixel values 0-255 as FP64, 10 classes."""
    x, y = make_classification(n_samples=rows, n_features=FEATURES, n_informative=60,
                               n_redundant=20, n_classes=10, class_sep=2.0,
                               random_state=seed)
    lo, hi = np.percentile(x, [1, 99])
    x = np.clip(np.round((x - lo) / (hi - lo) * 255), 0, 255)
    return x.astype(np.float64), y


def settings(folder: Path, name: str, implementation: str, uri: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    document = {"name": name, "implementation": implementation,
                "parameters": {"uri": uri, "version": "v1"}}
    (folder / "model-settings.json").write_text(json.dumps(document, indent=4) + "\n")


def v2_body(rows: np.ndarray, as_int: bool) -> bytes:
    """The article's request: nested lists, datatype FP64, json.dumps separators."""
    data = rows.astype(np.int64).tolist() if as_int else rows.tolist()
    body = {"inputs": [{"name": "predict", "shape": list(rows.shape), "datatype": "FP64", "data": data}]}
    return json.dumps(body).encode()


def predict_seconds(predict: object, rows: np.ndarray, repeat: int) -> float:
    """Median wall time of one in-process predict call."""
    assert callable(predict)
    predict(rows)
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        predict(rows)
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def main(root: Path) -> None:
    repo, data = root / "repo", root / "data"
    data.mkdir(parents=True, exist_ok=True)

    iris = load_iris()
    forest = RandomForestClassifier(n_estimators=100, random_state=0).fit(iris.data, iris.target)
    settings(repo / "iris-rf", "iris-rf", "mlserver_sklearn.SKLearnModel", "./model.joblib")
    joblib.dump(forest, repo / "iris-rf" / "model.joblib")

    x_all, y_all = pixels(TRAIN_ROWS + TEST_ROWS, seed=0)
    x_train, y_train = x_all[:TRAIN_ROWS], y_all[:TRAIN_ROWS]
    x_test = np.ascontiguousarray(x_all[TRAIN_ROWS:])
    with warnings.catch_warnings():  # a benchmark needs the model's shape, not its best fit
        warnings.simplefilter("ignore", ConvergenceWarning)
        logreg = LogisticRegression(max_iter=100).fit(x_train / 255.0, y_train)
    # the served model sees raw pixels, as the article's does; fold the scaling into it
    logreg.coef_ = logreg.coef_ / 255.0
    settings(repo / "fashion-logreg", "fashion-logreg", "mlserver_sklearn.SKLearnModel", "./model.joblib")
    joblib.dump(logreg, repo / "fashion-logreg" / "model.joblib")

    booster = xgb.train(
        {"max_depth": 5, "eta": 0.3, "objective": "multi:softmax", "num_class": 10, "nthread": 2},
        xgb.DMatrix(x_train, label=y_train), num_boost_round=50,
    )
    settings(repo / "fashion-xgboost", "fashion-xgboost", "mlserver_xgboost.XGBoostModel", "./model.json")
    booster.save_model(repo / "fashion-xgboost" / "model.json")

    np.save(data / "test-10000x784.npy", x_test)
    (data / "test-10000x784.json").write_bytes(v2_body(x_test, as_int=True))
    (data / "iris-rf.json").write_bytes(v2_body(iris.data[:1], as_int=False))
    (data / "fashion-logreg.json").write_bytes(v2_body(x_test[:1], as_int=True))
    (data / "fashion-xgboost.json").write_bytes(v2_body(x_test[:1], as_int=True))

    def xgb_predict(rows: np.ndarray) -> object:
        return booster.inplace_predict(rows)

    floor = {
        "iris-rf": {"one_row_s": predict_seconds(forest.predict, iris.data[:1], 200)},
        "fashion-logreg": {"one_row_s": predict_seconds(logreg.predict, x_test[:1], 200),
                           "test_set_s": predict_seconds(logreg.predict, x_test, 10)},
        "fashion-xgboost": {"one_row_s": predict_seconds(xgb_predict, x_test[:1], 200),
                            "test_set_s": predict_seconds(xgb_predict, x_test, 5)},
    }
    accuracy = float((logreg.predict(x_test) == y_all[TRAIN_ROWS:]).mean())
    (data / "floor.json").write_text(json.dumps(floor, indent=2) + "\n")
    print(f"trained 3 models into {repo} (logreg test accuracy {accuracy:.3f}); "
          f"test set JSON is {(data / 'test-10000x784.json').stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/work"))
