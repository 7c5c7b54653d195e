"""scikit-learn models in skops' format (``.skops``), which loads without
running code: served from a repository as a user lays it out, answering what
the model answers in this process; a file naming a type that is not trusted
is refused with the type's name while the other models keep serving."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import skops.io as sio
from servers import ServerProcess
from sklearn.datasets import load_iris
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from servekit.config import ModelParameters, ModelSettings
from servekit.errors import ModelLoadError
from servekit.runtimes import create_runtime

IRIS = load_iris()
# the one type of a HistGradientBoosting model that skops does not trust by itself
TREE_PREDICTOR = "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"


def _settings(folder: Path, **settings: Any) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model-settings.json").write_text(json.dumps(settings))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    repo = tmp_path_factory.mktemp("skops-repo")
    linear = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(IRIS.data, IRIS.target)
    boosted = HistGradientBoostingClassifier(max_iter=10, random_state=0).fit(IRIS.data, IRIS.target)
    assert sio.get_untrusted_types(data=sio.dumps(linear)) == []
    assert sio.get_untrusted_types(data=sio.dumps(boosted)) == [TREE_PREDICTOR]
    # only safe types: a folder with the file alone serves
    (repo / "linear").mkdir()
    sio.dump(linear, repo / "linear" / "model.skops")
    # a type skops does not trust, trusted by the model's settings
    _settings(repo / "boosted", name="boosted", implementation="sklearn",
              parameters={"uri": "./model.skops", "version": "1", "extra": {"trusted_types": [TREE_PREDICTOR]}})
    sio.dump(boosted, repo / "boosted" / "model.skops")
    # the same file without that trust: refused
    (repo / "untrusted").mkdir()
    sio.dump(boosted, repo / "untrusted" / "model.skops")
    return {"repo": repo, "linear": linear, "boosted": boosted}


@pytest.fixture(scope="module")
def server(models: dict[str, Any]) -> Any:
    with ServerProcess(["serve", str(models["repo"])]) as running:
        yield running


def _infer(server: ServerProcess, name: str, x: np.ndarray, *outputs: str) -> requests.Response:
    body: dict[str, Any] = {"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP64",
                                        "data": x.ravel().tolist()}]}
    if outputs:
        body["outputs"] = [{"name": o} for o in outputs]
    return requests.post(f"{server.url}/v2/models/{name}/infer", json=body, timeout=60)


def test_skops_files_answer_like_the_model(server: ServerProcess, models: dict[str, Any]) -> None:
    x = IRIS.data[::5]
    for name in ("linear", "boosted"):
        response = _infer(server, name, x, "predict", "predict_proba")
        assert response.status_code == 200, response.text
        out = {o["name"]: o for o in response.json()["outputs"]}
        assert out["predict"]["data"] == models[name].predict(x).tolist()
        proba = np.asarray(out["predict_proba"]["data"]).reshape(out["predict_proba"]["shape"])
        np.testing.assert_allclose(proba, models[name].predict_proba(x), rtol=1e-12, atol=1e-15)


def test_an_untrusted_type_is_refused_by_name_and_the_others_serve(server: ServerProcess) -> None:
    index = {row["name"]: row for row in requests.post(f"{server.url}/v2/repository/index", json={}, timeout=30).json()}
    assert index["linear"]["state"] == "READY" and index["boosted"]["state"] == "READY"
    refused = index["untrusted"]
    assert refused["state"] == "UNAVAILABLE"
    assert f"model.skops holds 1 type(s) that are not trusted: {TREE_PREDICTOR}" in refused["reason"]
    assert "parameters.extra.trusted_types" in refused["reason"]
    response = _infer(server, "untrusted", IRIS.data[:1])
    assert response.status_code == 503
    assert response.json()["error"].startswith("model 'untrusted' has no ready version")
    assert f"not trusted: {TREE_PREDICTOR}" in response.json()["error"]
    assert _infer(server, "linear", IRIS.data[:1]).json()["outputs"][0]["data"] == [0]


def _runtime(path: Path, **extra: Any) -> Any:
    settings = ModelSettings(name="m", parameters=ModelParameters(uri=path.name, extra=extra),
                             source_dir=str(path.parent))
    runtime = create_runtime(settings)
    runtime.load()
    return runtime


def test_trust_must_name_every_type_and_be_a_list(tmp_path: Path, models: dict[str, Any]) -> None:
    path = tmp_path / "model.skops"
    sio.dump(models["boosted"], path)
    with pytest.raises(ModelLoadError, match="not trusted: " + TREE_PREDICTOR.replace(".", r"\.")):
        _runtime(path, trusted_types=["sklearn.tree.DecisionTreeClassifier"])
    with pytest.raises(ModelLoadError, match="trusted_types must be a list of type names"):
        _runtime(path, trusted_types=TREE_PREDICTOR)
    assert _runtime(path, trusted_types=[TREE_PREDICTOR]).ready


def test_a_file_that_is_not_skops_is_a_load_error(tmp_path: Path) -> None:
    (tmp_path / "model.skops").write_bytes(b"\x80\x04 a pickle, perhaps")
    with pytest.raises(ModelLoadError, match=r"cannot load model\.skops: not a readable skops file"):
        _runtime(tmp_path / "model.skops")
