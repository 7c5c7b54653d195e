"""The compiled tree walk (servekit._trees) against the numpy walk it replaces:
the same means for scikit-learn forests (and scikit-learn's own, bit for bit)
and the same margins for XGBoost boosters (and XGBoost's own), on ordinary,
extreme and missing values, one row and many (a walk long enough to let other
threads run); and arrays that do not describe trees are refused, never read
out of bounds."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import xgboost as xgb
from sklearn.datasets import load_digits, load_iris
from sklearn.ensemble import ExtraTreesRegressor, RandomForestClassifier, RandomForestRegressor
from sklearn.tree import DecisionTreeClassifier

from servekit import _trees
from servekit.runtimes import sklearn_fast, xgboost_fast
from servekit.runtimes.sklearn_fast import CompiledTrees
from servekit.runtimes.xgboost_fast import compile_booster

IRIS = load_iris()
DIGITS = load_digits()


def rows(x: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Rows like the data, wilder ones, exact thresholds' neighbours and NaNs."""
    rng = np.random.default_rng(seed)
    out = np.concatenate([x[rng.integers(0, len(x), count // 2)], rng.normal(x.mean(), 3 * x.std() + 1, (count - count // 2, x.shape[1]))])
    out[1, 0] = np.nan
    out[2, :] = np.nan
    out[3, :] = 1e30
    out[4, :] = -1e30
    return out


def numpy_walk(monkeypatch: pytest.MonkeyPatch, module: Any, call: Any) -> Any:
    with monkeypatch.context() as patched:
        patched.setattr(module, "_trees", None)
        return call()


@pytest.mark.parametrize("model", [
    RandomForestClassifier(n_estimators=30, random_state=0).fit(IRIS.data, IRIS.target),
    DecisionTreeClassifier(random_state=0).fit(DIGITS.data, DIGITS.target),
    ExtraTreesRegressor(n_estimators=10, random_state=0).fit(DIGITS.data, DIGITS.target * 1.5),
])
@pytest.mark.parametrize("count", [1, 7, 2000])
def test_forest_means_are_the_numpy_walks(model: Any, count: int, monkeypatch: pytest.MonkeyPatch) -> None:
    estimators = getattr(model, "estimators_", None) or [model]
    compiled = CompiledTrees([e.tree_ for e in estimators], normalize=hasattr(model, "classes_"))
    x = rows(IRIS.data if model.n_features_in_ == 4 else DIGITS.data, max(count, 8), count)[:count]
    got = compiled.mean_value(x)
    expected = numpy_walk(monkeypatch, sklearn_fast, lambda: compiled.mean_value(x))
    assert got.shape == expected.shape and np.allclose(got, expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("model", [
    RandomForestClassifier(n_estimators=40, random_state=0).fit(DIGITS.data, DIGITS.target),
    RandomForestRegressor(n_estimators=20, random_state=0).fit(DIGITS.data, DIGITS.target * 1.5),
])
@pytest.mark.parametrize("count", [1, 9, 1500])
def test_forest_means_are_scikit_learns_bit_for_bit(model: Any, count: int) -> None:
    classifier = hasattr(model, "classes_")
    compiled = CompiledTrees([e.tree_ for e in model.estimators_], normalize=classifier)
    x = rows(DIGITS.data, max(count, 8), count)[:count]
    x = x[~np.isnan(x).any(axis=1)]  # scikit-learn's forests here were fitted without missing values
    expected = model.predict_proba(x) if classifier else model.predict(x)[:, None]
    assert np.array_equal(compiled.mean_value(x), expected)


def test_a_value_table_of_another_length_is_refused() -> None:
    arrays = tiny_forest()
    x = np.zeros((1, 2), np.float32)
    with pytest.raises(ValueError, match="do not describe trees"):
        _trees.forest_mean(x, arrays["feature"], arrays["threshold"], arrays["left"], arrays["right"],
                           arrays["roots"], np.zeros((2, 3)), 2, np.empty((1, 3)))
    mean = np.empty((1, 2))
    _trees.forest_mean(x, arrays["feature"], arrays["threshold"], arrays["left"], arrays["right"],
                       arrays["roots"], np.array([[9.0, 9.0], [0.25, 0.75], [1.0, 0.0]]), 2, mean)
    assert mean.tolist() == [[0.25, 0.75]]  # 0 <= 0.5: the left leaf's row, the mean of one tree


@pytest.mark.parametrize("count", [1, 5, 600])
def test_booster_margins_are_the_numpy_walks(count: int, monkeypatch: pytest.MonkeyPatch) -> None:
    booster = xgb.train({"objective": "multi:softprob", "num_class": 10, "max_depth": 5, "nthread": 1},
                        xgb.DMatrix(DIGITS.data, label=DIGITS.target), num_boost_round=40)
    compiled = compile_booster(booster)
    assert compiled is not None
    x = rows(DIGITS.data, max(count, 8), count)[:count].astype(np.float32)
    got = compiled.margins(x)
    expected = numpy_walk(monkeypatch, xgboost_fast, lambda: compiled.margins(x))
    assert np.array_equal(got, expected)
    finite = ~np.isnan(x).any(axis=1)  # XGBoost's own answer, where the walk is used (no missing values)
    assert np.array_equal(got[finite], booster.inplace_predict(x[finite], predict_type="margin"))


def tiny_forest() -> dict[str, np.ndarray]:
    """One tree: node 0 splits on feature 1 at 0.5 into leaves 1 and 2."""
    return {
        "feature": np.array([1, 0, 0], np.intp),
        "threshold": np.array([0.5, np.inf, np.inf]),
        "left": np.array([1, 1, 2], np.intp),
        "right": np.array([2, 1, 2], np.intp),
        "roots": np.array([0], np.intp),
    }


def walk(x: np.ndarray, depth: int = 2, **changes: np.ndarray) -> np.ndarray:
    """The leaf each row reaches: each leaf's value is its own node number."""
    arrays = {**tiny_forest(), **changes}
    out = np.empty((len(x), 1), np.float64)
    _trees.forest_mean(x, arrays["feature"], arrays["threshold"], arrays["left"], arrays["right"],
                       arrays["roots"], np.arange(3, dtype=np.float64)[:, None], depth, out)
    return out


def test_the_tiny_tree_is_walked_by_scikit_learns_rule() -> None:
    x = np.array([[0, 0.5], [0, 0.50001], [0, np.nan], [0, -1]], np.float32)
    assert walk(x).ravel().tolist() == [1, 2, 2, 1]  # <= goes left; NaN goes right


@pytest.mark.parametrize("changes, x", [
    ({"feature": np.array([7, 0, 0], np.intp)}, np.zeros((1, 2), np.float32)),  # a column x lacks
    ({"left": np.array([9, 1, 2], np.intp)}, np.zeros((1, 2), np.float32)),  # a node past the end
    ({"right": np.array([-1, 1, 2], np.intp)}, np.ones((1, 2), np.float32)),  # a negative node
    ({"roots": np.array([3], np.intp)}, np.zeros((1, 2), np.float32)),
    ({"threshold": np.array([0.5, 1.0], np.float64)}, np.zeros((1, 2), np.float32)),  # lengths differ
])
def test_arrays_that_are_not_trees_are_refused(changes: dict[str, np.ndarray], x: np.ndarray) -> None:
    with pytest.raises(ValueError, match="do not describe trees"):
        walk(x, **changes)


@pytest.mark.parametrize("x", [
    np.zeros((1, 2), np.float64),  # float64 rows
    np.zeros((2, 4), np.float32)[:, ::2],  # not contiguous
    np.zeros(2, np.float32),  # one dimension
])
def test_rows_of_another_layout_are_refused(x: np.ndarray) -> None:
    with pytest.raises((ValueError, BufferError)):
        walk(x)


def test_the_output_must_fit_and_be_writable() -> None:
    arrays = tiny_forest()
    x = np.zeros((2, 2), np.float32)
    value = np.zeros((3, 1))
    for out in (np.empty((1, 1)), np.empty((2, 1), np.float32)):
        with pytest.raises(ValueError):
            _trees.forest_mean(x, arrays["feature"], arrays["threshold"], arrays["left"], arrays["right"],
                               arrays["roots"], value, 2, out)
    frozen = np.empty((2, 1))
    frozen.flags.writeable = False
    with pytest.raises((ValueError, BufferError)):
        _trees.forest_mean(x, arrays["feature"], arrays["threshold"], arrays["left"], arrays["right"],
                           arrays["roots"], value, 2, frozen)


def test_booster_arrays_must_fit_each_other() -> None:
    x = np.zeros((1, 2), np.float32)
    feature = np.array([1, 0, 0], np.intp)
    threshold = np.array([0.5, np.inf, np.inf], np.float32)
    children = np.array([1, 2, 1, 1, 2, 2], np.intp)
    roots = np.array([0, 0], np.intp)  # two rounds of one group: the same tree twice
    value = np.array([0, 0.25, 4], np.float32)
    base = np.array([0.5], np.float32)
    out = np.empty((1, 1), np.float32)
    _trees.booster_margins(x, feature, threshold, children, roots, value, base, 2, out)
    assert out.tolist() == [[1.0]]  # 0 < 0.5: left twice, XGBoost's rule: 0.5 + 0.25 + 0.25
    bad = {"children": np.array([1, 2, 1], np.intp), "value": np.zeros(2, np.float32),
           "base": np.zeros(3, np.float32)}  # one child per node; too few values; 2 trees in 3 groups
    for name, wrong in bad.items():
        arrays = {"children": children, "value": value, "base": base, name: wrong}
        with pytest.raises(ValueError, match="do not describe trees"):
            _trees.booster_margins(x, feature, threshold, arrays["children"], roots, arrays["value"],
                                   arrays["base"], 2, np.empty((1, len(arrays["base"])), np.float32))
