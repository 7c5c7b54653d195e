"""The models both servers serve, trained here, offline: iris (fitted on a
DataFrame: feature_names_in_) and iris-names (string class labels)."""

import json
import sys
from pathlib import Path

import joblib
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

root = Path(sys.argv[1])
frame = load_iris(as_frame=True)
X, y = frame.data, frame.target
names = y.map(dict(enumerate(frame.target_names)))
for name, target in (("iris", y), ("iris-names", names)):
    (root / name).mkdir(parents=True, exist_ok=True)
    joblib.dump(LogisticRegression(max_iter=500).fit(X, target), root / name / "model.joblib")
    (root / name / "model-settings.json").write_text(json.dumps(
        {"name": name, "implementation": "mlserver_sklearn.SKLearnModel",
         "parameters": {"uri": "./model.joblib", "version": "v1"}}))
X.iloc[[0, 1, 50, 60, 100, 120]].to_json(root / "rows.json")
