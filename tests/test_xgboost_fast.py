"""XGBoost's trees walked by numpy (runtimes/xgboost_fast.py): the same answers
as XGBoost's own predict, bit for bit, for every objective it takes; the rest
(NaN rows, near ties, DART, categorical splits, large batches) left to XGBoost."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb
from sklearn.datasets import load_digits, load_iris

from servekit import _trees
from servekit.config import ModelParameters, ModelSettings
from servekit.runtimes import xgboost_fast
from servekit.runtimes.xgboost import BoosterModel, XGBoostRuntime
from servekit.runtimes.xgboost_fast import MAX_ROWS, compile_booster
from servekit.tensors import InferenceRequest, Tensor

DIGITS = load_digits()
X, Y = DIGITS.data.astype(np.float64), DIGITS.target


def _booster(objective: str, rounds: int = 20, **params: object) -> xgb.Booster:
    y = Y if objective.startswith("multi") else (Y > 4 if objective.startswith("binary") else Y * 1.5)
    extra = {"num_class": 10} if objective.startswith("multi") else {}
    return xgb.train({"objective": objective, "max_depth": 4, "nthread": 1, **extra, **params},
                     xgb.DMatrix(X, label=y), num_boost_round=rounds)


@pytest.mark.parametrize("objective", ["multi:softmax", "multi:softprob", "binary:logistic", "reg:squarederror"])
def test_the_walk_answers_as_xgboost(objective: str) -> None:
    face = BoosterModel(_booster(objective))
    methods, max_rows = face.fast_methods()
    assert max_rows == MAX_ROWS
    fast = methods["predict"]
    rows = np.concatenate([X[:40], np.random.default_rng(1).normal(8, 6, (24, X.shape[1]))])
    for start in range(0, len(rows), 8):
        chunk = rows[start:start + 8]
        expected, got = face.predict(chunk), fast(chunk)
        assert got.dtype == expected.dtype and np.array_equal(got, expected), objective


def test_margins_are_xgboosts_bit_for_bit() -> None:
    booster = _booster("multi:softprob", rounds=30)
    compiled = compile_booster(booster)
    assert compiled is not None
    rows = X[:64].astype(np.float32)
    assert np.array_equal(compiled.margins(rows), booster.inplace_predict(rows, predict_type="margin"))


def test_rows_with_missing_values_go_to_xgboost() -> None:
    face = BoosterModel(_booster("multi:softmax"))
    calls: list[int] = []

    def own(x: np.ndarray) -> np.ndarray:
        calls.append(len(x))
        return face.predict(x)

    compiled = compile_booster(face.booster)
    assert compiled is not None
    fast = compiled.predict(own)
    rows = X[:3].copy()
    rows[1, 5] = np.nan
    assert np.array_equal(fast(rows), face.predict(rows)) and calls == [3]
    assert np.array_equal(fast(X[:3]), face.predict(X[:3])) and calls == [3]  # no NaN: the walk


def test_what_the_walk_does_not_do_exactly_is_not_compiled() -> None:
    assert compile_booster(_booster("multi:softprob", booster="dart", rate_drop=0.1)) is None
    assert compile_booster(_booster("reg:absoluteerror")) is None
    frame_x = np.column_stack([X[:, :3], (Y % 3)])
    categorical = xgb.DMatrix(frame_x, label=Y > 4, enable_categorical=True,
                              feature_types=["q", "q", "q", "c"])
    tree = xgb.train({"objective": "binary:logistic", "tree_method": "hist", "max_cat_to_onehot": 1},
                     categorical, num_boost_round=5)
    assert compile_booster(tree) is None


def test_the_runtime_serves_small_requests_by_the_walk_and_large_ones_by_xgboost(tmp_path: Path) -> None:
    iris = load_iris()
    booster = xgb.train({"objective": "multi:softmax", "num_class": 3, "max_depth": 3},
                        xgb.DMatrix(iris.data, label=iris.target), num_boost_round=10)
    booster.save_model(str(tmp_path / "model.json"))
    runtime = XGBoostRuntime(ModelSettings(name="iris", implementation="xgboost",
                                           parameters=ModelParameters(uri=str(tmp_path / "model.json"))))
    runtime.load()
    assert "predict" in runtime.fast and runtime.fast_max_rows == MAX_ROWS
    for rows in (iris.data[:1], iris.data[:MAX_ROWS], np.tile(iris.data, (2, 1))):
        answer = runtime.predict(InferenceRequest(inputs=[Tensor("x", rows)]))
        assert np.array_equal(answer.outputs[0].data, booster.inplace_predict(rows).astype(np.int64))


@pytest.mark.skipif(_trees is None, reason="the C extension was not built")
def test_labels_are_certain_only_without_missing_values_and_near_ties() -> None:
    def labels(x: list[list[float]], margins: list[list[float]], tie: float = 1e-4) -> tuple[bool, list[int]]:
        out = np.full(len(x), -7, np.int64)
        certain = _trees.booster_labels(np.asarray(x, np.float32), np.asarray(margins, np.float32), out, tie)
        return certain, out.tolist()

    row = [[0.0, 1.0]]
    assert labels(row * 2, [[0.1, 0.5, 0.2], [0.7, 0.7 - 2e-4, 0.1]]) == (True, [1, 0])
    assert labels(row * 2, [[0.1, 0.5, 0.2], [0.7, 0.7 - 5e-5, 0.1]])[0] is False  # softprob's near tie
    assert labels(row, [[0.3, 0.3, 0.1]])[0] is False  # an exact tie
    assert labels(row, [[0.3, 0.3, 0.1]], tie=0.0) == (True, [0])  # softmax: the first of equal margins
    assert labels([[0.0, float("nan")]], [[0.1, 0.5]], tie=0.0)[0] is False  # a missing value
    assert labels(row * 3, [[0.5], [-0.5], [2e-4]]) == (True, [1, 0, 1])  # binary: margin > 0
    assert labels(row, [[-5e-5]])[0] is False
    with pytest.raises(ValueError):
        labels(row * 2, [[0.1, 0.2]])  # rows that do not match
    with pytest.raises(ValueError):
        _trees.booster_labels(np.zeros((1, 2), np.float32), np.zeros((1, 2), np.float32),
                              np.zeros(1, np.int32), 1e-4)


@pytest.mark.parametrize("objective", ["multi:softmax", "multi:softprob", "binary:logistic"])
def test_labels_in_c_and_in_numpy_agree(objective: str, monkeypatch: pytest.MonkeyPatch) -> None:
    face = BoosterModel(_booster(objective))
    rows = np.concatenate([X[:40], np.random.default_rng(2).normal(8, 6, (24, X.shape[1]))])
    rows[5, 3] = np.nan
    answers = []
    for compiled_labels in (True, False):
        if not compiled_labels:
            monkeypatch.setattr(xgboost_fast, "_trees", None)
        fallbacks: list[int] = []

        def own(x: np.ndarray, fallbacks: list[int] = fallbacks) -> np.ndarray:
            fallbacks.append(len(x))
            return face.predict(x)

        compiled = compile_booster(face.booster)
        assert compiled is not None
        fast = compiled.predict(own)
        answers.append(([fast(rows[i : i + 1]).tolist() for i in range(len(rows))], fallbacks))
    assert answers[0] == answers[1] and answers[0][1]  # the NaN row (at least) went to XGBoost in both
