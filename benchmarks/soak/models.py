"""Small scikit-learn models for the soak run, trained offline from iris (bundled
with scikit-learn; nothing is downloaded), and the expected answer of each.

Layout written under ``root``::

    repo/settings.json
    repo/iris-rf/{model.joblib, model-settings.json}     always served (V2, gRPC, /predict, Seldon)
    repo/iris-lr/{model.joblib, model-settings.json}     unloaded and loaded through the V2 repository API
    tfs/static/{1,2}/model.joblib                         TF Serving config: two versions, labels flipped by edits
    tfs/rolling/{1,2,…}/model.joblib                      TF Serving config: latest 2; folders added and removed
    tfs/toggle/1/model.joblib                             TF Serving config: the entry comes and goes
    models.conf                                           TF Serving's model_config_list (text format)

Every TF Serving version ``k`` is a LinearRegression fitted on ``target * k + k``,
so an answer tells which version computed it.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import joblib
import numpy as np
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression

ROWS = load_iris().data.astype(np.float64)
TARGET = load_iris().target.astype(np.float64)
TF_MODELS = ("tf-static", "tf-rolling", "tf-toggle")


def _settings(folder: Path, name: str) -> None:
    document = {"name": name, "implementation": "sklearn",
                "parameters": {"uri": "./model.joblib", "version": "v1"}}
    (folder / "model-settings.json").write_text(json.dumps(document, indent=2) + "\n")


def versioned_model(version: int) -> LinearRegression:
    return LinearRegression().fit(ROWS, TARGET * version + version)


def write_version(base: Path, version: int) -> None:
    """A version folder as a training job would drop it: made next to the base
    path and renamed into it, so the server never sees half a folder."""
    staging = Path(tempfile.mkdtemp(prefix=f".v{version}-", dir=base.parent))
    joblib.dump(versioned_model(version), staging / "model.joblib")
    os.rename(staging, base / str(version))


def config_text(root: Path, *, flipped: bool, toggle: bool) -> str:
    """TF Serving's model_config_list. ``flipped`` swaps tf-static's labels;
    ``toggle`` adds the tf-toggle entry."""
    stable, canary = (2, 1) if flipped else (1, 2)
    entries = [
        f"""  config {{
    name: 'tf-static'
    base_path: '{root / "tfs" / "static"}'
    model_platform: 'tensorflow'
    model_version_policy {{ specific {{ versions: 1 versions: 2 }} }}
    version_labels {{ key: 'stable' value: {stable} }}
    version_labels {{ key: 'canary' value: {canary} }}
  }}""",
        f"""  config {{
    name: 'tf-rolling'
    base_path: '{root / "tfs" / "rolling"}'
    model_version_policy {{ latest {{ num_versions: 2 }} }}
  }}""",
    ]
    if toggle:
        entries.append(f"""  config {{
    name: 'tf-toggle'
    base_path: '{root / "tfs" / "toggle"}'
  }}""")
    return "model_config_list {\n" + "\n".join(entries) + "\n}\n"


def make_all(root: Path) -> None:
    repo = root / "repo"
    for name in ("iris-rf", "iris-lr"):
        (repo / name).mkdir(parents=True, exist_ok=True)
        _settings(repo / name, name)
    (repo / "settings.json").write_text('{"debug": false}\n')
    forest = RandomForestClassifier(n_estimators=20, max_depth=6, random_state=0).fit(ROWS, TARGET.astype(int))
    joblib.dump(forest, repo / "iris-rf" / "model.joblib")
    logistic = LogisticRegression(max_iter=500).fit(ROWS, TARGET.astype(int))
    joblib.dump(logistic, repo / "iris-lr" / "model.joblib")
    for folder, versions in (("static", (1, 2)), ("rolling", (1, 2)), ("toggle", (1,))):
        base = root / "tfs" / folder
        base.mkdir(parents=True, exist_ok=True)
        for version in versions:
            write_version(base, version)
    (root / "models.conf").write_text(config_text(root, flipped=False, toggle=True))


class Expected:
    """The answer every model gives for every iris row, computed here."""

    def __init__(self, root: Path) -> None:
        repo = root / "repo"
        self.classes = {name: joblib.load(repo / name / "model.joblib").predict(ROWS).astype(np.int64)
                        for name in ("iris-rf", "iris-lr")}
        self._versions: dict[int, np.ndarray] = {}

    def version(self, version: int) -> np.ndarray:
        """TF Serving version ``version``'s prediction for every row."""
        if version not in self._versions:
            self._versions[version] = versioned_model(version).predict(ROWS)
        return self._versions[version]

    def which_version(self, rows: list[int], got: list[float], candidates: range) -> int | None:
        """The version whose answers ``got`` are, or None."""
        values = np.asarray(got, dtype=np.float64).reshape(-1)
        for version in candidates:
            if values.shape == (len(rows),) and np.allclose(values, self.version(version)[rows], rtol=1e-6, atol=1e-6):
                return version
        return None
