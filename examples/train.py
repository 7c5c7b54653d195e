"""Train the example models offline from scikit-learn's bundled data sets.

    python examples/train.py examples/models

writes a model file next to each model-settings.json (and one folder, iris/,
that holds only its model file: servekit serves it without settings).
"""

from __future__ import annotations

import sys
from pathlib import Path

import joblib
import lightgbm as lgb
import xgboost as xgb
from sklearn.datasets import load_breast_cancer, load_digits, load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.svm import SVC


def main(root: Path) -> None:
    for name in ("digits-sklearn", "digits-xgboost", "cancer-lightgbm", "iris"):
        (root / name).mkdir(parents=True, exist_ok=True)
    digits = load_digits()
    svm = SVC(kernel="poly", degree=4, gamma=0.1).fit(digits.data, digits.target)
    joblib.dump(svm, root / "digits-sklearn" / "model.joblib")

    booster = xgb.train(
        {"max_depth": 5, "eta": 0.3, "objective": "multi:softmax", "num_class": 10},
        xgb.DMatrix(digits.data, label=digits.target),
        num_boost_round=20,
    )
    booster.save_model(root / "digits-xgboost" / "model.json")

    cancer = load_breast_cancer()
    lgbm = lgb.train(
        {"objective": "binary", "verbose": -1, "num_leaves": 15},
        lgb.Dataset(cancer.data, label=cancer.target),
        num_boost_round=30,
    )
    lgbm.save_model(root / "cancer-lightgbm" / "model.txt")

    iris = load_iris()
    forest = RandomForestClassifier(n_estimators=100, random_state=0).fit(iris.data, iris.target)
    joblib.dump(forest, root / "iris" / "model.joblib")
    print(f"trained 4 example models into {root}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "examples/models"))
