"""scikit-learn, XGBoost and LightGBM runtimes, loaded from real files."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import joblib
import lightgbm as lgb
import numpy as np
import pytest
import sklearn
import xgboost as xgb
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
from sklearn.ensemble import ExtraTreesRegressor, GradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from servekit.config import ModelParameters, ModelSettings
from servekit.errors import InvalidInput
from servekit.runtimes import create_runtime
from servekit.runtimes.base import Runtime
from servekit.tensors import InferenceRequest, RequestedOutput, Tensor

IRIS = load_iris()
CANCER = load_breast_cancer()
DIABETES = load_diabetes()


def runtime_for(path: Path, implementation: str | None = None, **extra: Any) -> Runtime:
    settings = ModelSettings(
        name="m",
        implementation=implementation,
        parameters=ModelParameters(uri=path.name, version="1", extra=extra),
        source_dir=str(path.parent),
    )
    runtime = create_runtime(settings)
    runtime.load()
    return runtime


def infer(runtime: Runtime, x: np.ndarray, *outputs: str) -> dict[str, np.ndarray]:
    request = InferenceRequest(
        inputs=[Tensor("x", x)],
        outputs=[RequestedOutput(o) for o in outputs] if outputs else None,
    )
    return {t.name: t.data for t in runtime.predict(request).outputs}


@pytest.mark.parametrize(
    "model",
    [
        LogisticRegression(max_iter=1000),
        RandomForestClassifier(n_estimators=20, random_state=0),
        GradientBoostingClassifier(n_estimators=10),
        make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
    ],
    ids=lambda m: type(m).__name__,
)
def test_sklearn_classifiers_answer_like_the_model(tmp_path: Path, model: Any) -> None:
    model.fit(IRIS.data, IRIS.target)
    joblib.dump(model, tmp_path / "model.joblib")
    runtime = runtime_for(tmp_path / "model.joblib")
    x = IRIS.data[::7]
    out = infer(runtime, x, "predict", "predict_proba")
    np.testing.assert_array_equal(out["predict"], model.predict(x))
    np.testing.assert_allclose(out["predict_proba"], model.predict_proba(x), rtol=1e-9, atol=1e-12)
    assert out["predict"].dtype == np.int64
    specs = {s.name: s for s in runtime.metadata().outputs}
    assert specs["predict"].datatype == "INT64"
    assert specs["predict_proba"].shape == [-1, 3]


@pytest.mark.parametrize("model", [LinearRegression(), Ridge(), ExtraTreesRegressor(n_estimators=10, random_state=0)],
                         ids=lambda m: type(m).__name__)
def test_sklearn_regressors_and_no_proba(tmp_path: Path, model: Any) -> None:
    model.fit(DIABETES.data, DIABETES.target)
    joblib.dump(model, tmp_path / "model.pkl")
    runtime = runtime_for(tmp_path / "model.pkl", "mlserver_sklearn.SKLearnModel")
    x = DIABETES.data[:9]
    np.testing.assert_allclose(infer(runtime, x)["predict"], model.predict(x), rtol=1e-9)
    with pytest.raises(InvalidInput, match="has no output 'predict_proba'; available: predict"):
        infer(runtime, x, "predict_proba")


def test_fast_paths_agree_with_scikit_learn_and_can_be_turned_off(tmp_path: Path) -> None:
    forest = RandomForestClassifier(n_estimators=50, random_state=1).fit(IRIS.data, IRIS.target)
    joblib.dump(forest, tmp_path / "model.joblib")
    fast = runtime_for(tmp_path / "model.joblib")
    slow = runtime_for(tmp_path / "model.joblib", fast_path=False)
    assert set(fast.fast) == {"predict", "predict_proba"}  # type: ignore[attr-defined]
    assert slow.fast == {}  # type: ignore[attr-defined]
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 8, (300, 4))
    for name in ("predict", "predict_proba"):
        np.testing.assert_allclose(infer(fast, x, name)[name], infer(slow, x, name)[name], rtol=1e-12)


@pytest.mark.parametrize("kind", ["multiclass", "binary", "regression", "two-targets"])
def test_linear_fast_paths_answer_one_row_as_scikit_learn_does(tmp_path: Path, kind: str) -> None:
    """One row takes a matrix-vector product of its own: the same labels, and
    scores and probabilities within rounding of scikit-learn's."""
    if kind == "multiclass":
        model: Any = LogisticRegression(max_iter=1000).fit(IRIS.data, IRIS.target)
    elif kind == "binary":
        model = LogisticRegression(max_iter=5000).fit(CANCER.data, CANCER.target)
    elif kind == "regression":
        model = Ridge().fit(DIABETES.data, DIABETES.target)
    else:
        model = LinearRegression().fit(DIABETES.data, np.column_stack([DIABETES.target, -DIABETES.target]))
    joblib.dump(model, tmp_path / "model.joblib")
    runtime = runtime_for(tmp_path / "model.joblib")
    assert "predict" in runtime.fast  # type: ignore[attr-defined]
    data = {"multiclass": IRIS, "binary": CANCER}.get(kind, DIABETES).data
    names = ["predict", "predict_proba"] if hasattr(model, "predict_proba") else ["predict"]
    for row in data[::37]:
        one = row[None]
        out = infer(runtime, one, *names)
        if hasattr(model, "classes_"):
            np.testing.assert_array_equal(out["predict"], model.predict(one))
        else:
            np.testing.assert_allclose(out["predict"], model.predict(one), rtol=1e-9)
        assert out["predict"].shape == model.predict(one).shape
        if "predict_proba" in names:
            np.testing.assert_allclose(out["predict_proba"], model.predict_proba(one), rtol=1e-9, atol=1e-12)


def test_default_output_from_settings(tmp_path: Path) -> None:
    model = LogisticRegression(max_iter=1000).fit(IRIS.data, IRIS.target)
    joblib.dump(model, tmp_path / "model.joblib")
    runtime = runtime_for(tmp_path / "model.joblib", default_output="predict_proba")
    assert list(infer(runtime, IRIS.data[:2])) == ["predict_proba"]


def test_wrong_feature_count_is_invalid_input(tmp_path: Path) -> None:
    joblib.dump(LogisticRegression(max_iter=1000).fit(IRIS.data, IRIS.target), tmp_path / "model.joblib")
    runtime = runtime_for(tmp_path / "model.joblib")
    with pytest.raises(InvalidInput, match="expects 4 features per row, got 3"):
        infer(runtime, np.zeros((1, 3)))
    # a flat vector of the right length is one row
    assert infer(runtime, IRIS.data[0])["predict"].shape == (1,)


def test_version_mismatch_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "model.pkl"
    import pickle

    data = pickle.dumps(LogisticRegression(max_iter=1000).fit(IRIS.data, IRIS.target))
    current = sklearn.__version__.encode()
    older = b"0" * (len(current) - 2) + b".1"  # same length keeps the pickle valid
    path.write_bytes(data.replace(current, older))
    with caplog.at_level(logging.WARNING, logger="servekit.runtimes"):
        runtime_for(path)
    message = caplog.text
    assert f"saved with scikit-learn {older.decode()} but scikit-learn {sklearn.__version__} is installed" in message


def xgb_booster(objective: str, x: np.ndarray, y: np.ndarray, **params: Any) -> xgb.Booster:
    return xgb.train({"objective": objective, "max_depth": 3, **params}, xgb.DMatrix(x, label=y), 8)


@pytest.mark.parametrize("suffix", [".json", ".ubj"])
def test_xgboost_booster_objectives(tmp_path: Path, suffix: str) -> None:
    x = CANCER.data
    binary = xgb_booster("binary:logistic", x, CANCER.target)
    binary.save_model(str(tmp_path / f"binary{suffix}"))
    runtime = runtime_for(tmp_path / f"binary{suffix}")
    out = infer(runtime, x[:20], "predict", "predict_proba")
    p = binary.predict(xgb.DMatrix(x[:20]))
    np.testing.assert_allclose(out["predict_proba"][:, 1], p, rtol=1e-6)
    np.testing.assert_array_equal(out["predict"], (p > 0.5).astype(np.int64))

    softmax = xgb_booster("multi:softmax", IRIS.data, IRIS.target, num_class=3)
    softmax.save_model(str(tmp_path / f"softmax{suffix}"))
    runtime = runtime_for(tmp_path / f"softmax{suffix}", "mlserver_xgboost.XGBoostModel")
    out = infer(runtime, IRIS.data[::10], "predict", "predict_proba")
    np.testing.assert_array_equal(out["predict"], softmax.predict(xgb.DMatrix(IRIS.data[::10])).astype(np.int64))
    np.testing.assert_allclose(out["predict_proba"].sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(out["predict_proba"].argmax(axis=1), out["predict"])

    regression = xgb_booster("reg:squarederror", DIABETES.data, DIABETES.target)
    regression.save_model(str(tmp_path / f"reg{suffix}"))
    runtime = runtime_for(tmp_path / f"reg{suffix}")
    np.testing.assert_allclose(infer(runtime, DIABETES.data[:5])["predict"], regression.predict(xgb.DMatrix(DIABETES.data[:5])), rtol=1e-6)
    with pytest.raises(InvalidInput, match="no output 'predict_proba'"):
        infer(runtime, DIABETES.data[:5], "predict_proba")


def test_xgboost_sklearn_wrapper_pickled(tmp_path: Path) -> None:
    model = xgb.XGBClassifier(n_estimators=5, max_depth=2).fit(IRIS.data, IRIS.target)
    joblib.dump(model, tmp_path / "model.joblib")
    runtime = runtime_for(tmp_path / "model.joblib", "xgboost")
    out = infer(runtime, IRIS.data[:6], "predict", "predict_proba")
    np.testing.assert_array_equal(out["predict"], model.predict(IRIS.data[:6]))
    np.testing.assert_allclose(out["predict_proba"], model.predict_proba(IRIS.data[:6]), rtol=1e-6)


def test_xgboost_version_mismatch_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    booster = xgb_booster("binary:logistic", CANCER.data, CANCER.target)
    path = tmp_path / "model.json"
    booster.save_model(str(path))
    document = json.loads(path.read_text())
    document["version"] = [1, 7, 6]
    path.write_text(json.dumps(document))
    with caplog.at_level(logging.WARNING, logger="servekit.runtimes"):
        runtime_for(path)
    assert f"saved with xgboost 1.7.6 but xgboost {xgb.__version__} is installed" in caplog.text


def test_lightgbm_boosters_and_wrapper(tmp_path: Path) -> None:
    binary = lgb.train({"objective": "binary", "verbose": -1}, lgb.Dataset(CANCER.data, label=CANCER.target), 10)
    binary.save_model(str(tmp_path / "binary.txt"))
    runtime = runtime_for(tmp_path / "binary.txt")
    out = infer(runtime, CANCER.data[:10], "predict", "predict_proba")
    np.testing.assert_allclose(out["predict_proba"][:, 1], binary.predict(CANCER.data[:10]), rtol=1e-9)
    assert out["predict"].dtype == np.int64

    multi = lgb.train({"objective": "multiclass", "num_class": 3, "verbose": -1}, lgb.Dataset(IRIS.data, label=IRIS.target), 10)
    multi.save_model(str(tmp_path / "multi.txt"))
    runtime = runtime_for(tmp_path / "multi.txt", "mlserver_lightgbm.LightGBMModel")
    out = infer(runtime, IRIS.data[::15], "predict", "predict_proba")
    np.testing.assert_allclose(out["predict_proba"], multi.predict(IRIS.data[::15]), rtol=1e-9)
    np.testing.assert_array_equal(out["predict"], multi.predict(IRIS.data[::15]).argmax(axis=1))

    wrapper = lgb.LGBMRegressor(n_estimators=5, verbose=-1).fit(DIABETES.data, DIABETES.target)
    joblib.dump(wrapper, tmp_path / "reg.joblib")
    runtime = runtime_for(tmp_path / "reg.joblib", "lightgbm")
    np.testing.assert_allclose(infer(runtime, DIABETES.data[:4])["predict"], wrapper.predict(DIABETES.data[:4]), rtol=1e-9)
