"""servekit._trees walks several trees at a time (lanes), level by level; these
check it against a plain walk of one tree at a time, written here in Python:
the same leaves and the same sums in the same order, so bit for bit equal
margins (float32, tree by tree) and means (float64, tree by tree, then
divided). Tree counts that do not fill the lanes, trees of depths 0 to 8 in
one model, one to five rows, several groups, NaN and threshold-equal values.
And arrays with an index out of range where the walk goes, in any lane (the
last, part-filled set of lanes too), are refused with ValueError."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import xgboost as xgb
from sklearn.datasets import load_digits
from sklearn.ensemble import RandomForestClassifier

from servekit import _trees
from servekit.runtimes.sklearn_fast import CompiledTrees
from servekit.runtimes.xgboost_fast import compile_booster

COLUMNS = 6
TREE_COUNTS = [1, 3, 7, 8, 9, 15, 16, 17, 33, 500]


def groups_of(trees: int) -> int:
    """How many groups (classes) a model of `trees` trees has here: several when they divide."""
    return next(g for g in (10, 4, 3, 1) if trees % g == 0)


def random_model(trees: int, depth: int, seed: int) -> dict[str, Any]:
    """Flat node arrays of `trees` random trees, none deeper than `depth` and one
    (when there are several) exactly that deep; leaves point to themselves."""
    rng = np.random.default_rng(seed)
    feature: list[int] = []
    threshold: list[float] = []
    left: list[int] = []
    right: list[int] = []
    value: list[float] = []
    roots: list[int] = []

    def grow(level: int, full: bool) -> int:
        node = len(feature)
        feature.append(0)
        threshold.append(np.inf)
        left.append(node)
        right.append(node)
        value.append(float(np.float32(rng.normal(0, 1))))
        if level < depth and (full or rng.random() < 0.75):
            feature[node] = int(rng.integers(0, COLUMNS))
            threshold[node] = float(np.float32(rng.choice([0.0, 0.5, -1.25, rng.normal(0, 1)])))
            left[node] = grow(level + 1, full and level % 2 == 0)
            right[node] = grow(level + 1, full and level % 2 == 1)
        return node

    for t in range(trees):
        roots.append(grow(0, t == trees // 2))
    return {
        "feature": np.array(feature, np.intp), "threshold": np.array(threshold), "left": np.array(left, np.intp),
        "right": np.array(right, np.intp), "value": np.array(value), "roots": np.array(roots, np.intp),
        "depth": depth,
    }


def random_rows(count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (count, COLUMNS)).astype(np.float32)
    x[rng.random(x.shape) < 0.2] = np.nan
    x[rng.random(x.shape) < 0.2] = 0.5  # some thresholds exactly
    x[rng.random(x.shape) < 0.1] = -1.25
    return x


# -- XGBoost's rule -----------------------------------------------------------------
def booster_arrays(model: dict[str, Any]) -> dict[str, Any]:
    trees = len(model["roots"])
    groups = groups_of(trees)
    rng = np.random.default_rng(trees)
    return {
        "feature": model["feature"], "threshold": model["threshold"].astype(np.float32),
        "children": np.ascontiguousarray(np.stack([model["left"], model["right"]], axis=1).reshape(-1)),
        "roots": model["roots"], "value": model["value"].astype(np.float32),
        "base": rng.normal(0, 1, groups).astype(np.float32), "depth": model["depth"],
    }


def booster_reference(x: np.ndarray, a: dict[str, Any]) -> np.ndarray:
    """One tree at a time: child 2 * node + (x >= threshold), NaN left; float32 adds in tree order."""
    groups = len(a["base"])
    out = np.empty((len(x), groups), np.float32)
    for r, row in enumerate(x):
        margin = [np.float32(b) for b in a["base"]]
        for t, root in enumerate(a["roots"]):
            node = int(root)
            for _ in range(a["depth"]):
                node = int(a["children"][2 * node + int(row[a["feature"][node]] >= a["threshold"][node])])
            margin[t % groups] = np.float32(margin[t % groups] + a["value"][node])
        out[r] = margin
    return out


def booster_walk(x: np.ndarray, a: dict[str, Any]) -> np.ndarray:
    out = np.full((len(x), len(a["base"])), np.nan, np.float32)
    _trees.booster_margins(x, a["feature"], a["threshold"], a["children"], a["roots"], a["value"], a["base"],
                           a["depth"], out)
    return out


# -- scikit-learn's rule --------------------------------------------------------------
def forest_arrays(model: dict[str, Any], outputs: int = 3) -> dict[str, Any]:
    rng = np.random.default_rng(len(model["feature"]))
    return {**model, "value": rng.normal(0, 1, (len(model["feature"]), outputs)) * 10.0 ** rng.integers(-8, 9, (len(model["feature"]), 1))}


def forest_reference(x: np.ndarray, a: dict[str, Any]) -> np.ndarray:
    """One tree at a time: left when (double)x <= threshold, NaN right; float64 sums in tree order, then / trees."""
    outputs = a["value"].shape[1]
    out = np.empty((len(x), outputs))
    for r, row in enumerate(x):
        total = [0.0] * outputs
        for root in a["roots"]:
            node = int(root)
            for _ in range(a["depth"]):
                go_left = float(row[a["feature"][node]]) <= a["threshold"][node]
                node = int(a["left"][node] if go_left else a["right"][node])
            total = [s + float(v) for s, v in zip(total, a["value"][node], strict=True)]
        out[r] = [s / len(a["roots"]) for s in total]
    return out


def forest_walk(x: np.ndarray, a: dict[str, Any]) -> np.ndarray:
    out = np.full((len(x), a["value"].shape[1]), np.nan)
    _trees.forest_mean(x, a["feature"], a["threshold"], a["left"], a["right"], a["roots"], a["value"], a["depth"],
                       out)
    return out


def same_bits(got: np.ndarray, expected: np.ndarray) -> bool:
    return got.dtype == expected.dtype and got.shape == expected.shape and got.tobytes() == expected.tobytes()


@pytest.mark.parametrize("trees", TREE_COUNTS)
@pytest.mark.parametrize("depth", range(9))
def test_margins_are_the_plain_walks_bit_for_bit(trees: int, depth: int) -> None:
    a = booster_arrays(random_model(trees, depth, seed=trees * 10 + depth))
    for count in range(1, 6):
        x = random_rows(count, seed=trees + depth + count)
        assert same_bits(booster_walk(x, a), booster_reference(x, a)), (trees, depth, count)


@pytest.mark.parametrize("trees", TREE_COUNTS)
@pytest.mark.parametrize("depth", range(9))
def test_means_are_the_plain_walks_bit_for_bit(trees: int, depth: int) -> None:
    a = forest_arrays(random_model(trees, depth, seed=trees * 10 + depth + 1))
    for count in range(1, 6):
        x = random_rows(count, seed=trees + depth + count)
        assert same_bits(forest_walk(x, a), forest_reference(x, a)), (trees, depth, count)


def test_a_depth_beyond_the_deepest_tree_lands_on_the_same_leaves() -> None:
    model = random_model(17, 3, seed=7)
    x = random_rows(5, seed=7)
    for depth in (3, 4, 12):
        a, b = booster_arrays({**model, "depth": depth}), forest_arrays({**model, "depth": depth})
        assert same_bits(booster_walk(x, a), booster_reference(x, a))
        assert same_bits(forest_walk(x, b), forest_reference(x, b))


def test_a_long_walk_without_the_gil_is_the_same() -> None:
    a = booster_arrays(random_model(500, 6, seed=3))
    b = forest_arrays(random_model(500, 6, seed=4))
    x = random_rows(80, seed=5)  # 80 rows x 500 trees x 6 levels: past the walk that lets other threads run
    assert same_bits(booster_walk(x, a), booster_reference(x, a))
    assert same_bits(forest_walk(x, b), forest_reference(x, b))


def test_xgboosts_own_margins_for_trees_that_do_not_fill_the_lanes() -> None:
    digits = load_digits()
    for classes, rounds in ((3, 7), (10, 5), (1, 17)):
        keep = digits.target < max(classes, 2)
        params = {"max_depth": 6, "nthread": 1, "objective": "multi:softprob", "num_class": classes} if classes > 1 \
            else {"max_depth": 6, "nthread": 1, "objective": "reg:squarederror"}
        booster = xgb.train(params, xgb.DMatrix(digits.data[keep], label=digits.target[keep]), num_boost_round=rounds)
        compiled = compile_booster(booster)
        assert compiled is not None and compiled.n_trees == classes * rounds
        x = digits.data[:5].astype(np.float32)
        expected = booster.inplace_predict(x, predict_type="margin").reshape(len(x), -1)
        assert same_bits(compiled.margins(x).reshape(len(x), -1), expected.astype(np.float32))


def test_scikit_learns_own_means_for_trees_that_do_not_fill_the_lanes() -> None:
    digits = load_digits()
    for trees in (1, 7, 9, 13):
        model = RandomForestClassifier(n_estimators=trees, random_state=trees).fit(digits.data, digits.target)
        compiled = CompiledTrees([e.tree_ for e in model.estimators_], normalize=True)
        for count in range(1, 6):
            x = digits.data[count * 7:count * 8]
            assert np.array_equal(compiled.mean_value(x), model.predict_proba(x))


# -- arrays that do not describe trees ---------------------------------------------------
def visited(a: dict[str, Any], x: np.ndarray, tree: int, forest: bool) -> list[int]:
    """The nodes tree `tree` steps from, row 0 (its root first)."""
    node, path = int(a["roots"][tree]), []
    for _ in range(a["depth"]):
        path.append(node)
        row = x[0]
        if forest:
            nxt = a["left"][node] if float(row[a["feature"][node]]) <= a["threshold"][node] else a["right"][node]
        else:
            nxt = a["children"][2 * node + int(row[a["feature"][node]] >= a["threshold"][node])]
        node = int(nxt)
    return path


BAD = [-1, -(2**63), 2**62, 2**63 - 1]


@pytest.mark.parametrize("trees, tree", [(1, 0), (9, 0), (9, 8), (17, 9), (17, 16), (33, 32)])
@pytest.mark.parametrize("bad", [*BAD, "just past the end"])
@pytest.mark.parametrize("forest", [False, True])
def test_an_index_out_of_range_on_the_way_is_refused(trees: int, tree: int, bad: Any, forest: bool) -> None:
    model = random_model(trees, 4, seed=trees + tree)
    a = forest_arrays(model) if forest else booster_arrays(model)
    x = np.zeros((2, COLUMNS), np.float32)
    walk = forest_walk if forest else booster_walk
    path = visited(a, x, tree, forest)
    cases = []
    for name in ("feature",):  # the feature of a node the walk steps from: the root's, the last one's
        for node in {path[0], path[-1]}:
            cases.append((name, node))
    for node in {path[0], path[-1]}:  # both children of a node the walk steps from
        cases.append(("children", node))
    cases.append(("roots", tree))
    for name, node in cases:
        broken = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in a.items()}
        # a feature is checked against the columns, a node against the nodes
        value = bad if bad in BAD else COLUMNS if name == "feature" else len(a["feature"])
        if name == "children" and forest:
            broken["left"][node] = broken["right"][node] = value
        elif name == "children":
            broken[name][2 * node:2 * node + 2] = value
        else:
            broken[name][node] = value
        with pytest.raises(ValueError, match="do not describe trees"):
            walk(x, broken)
    assert same_bits(walk(x, a), forest_reference(x, a) if forest else booster_reference(x, a))


@pytest.mark.parametrize("forest", [False, True])
def test_a_root_out_of_range_is_refused_without_a_walk(forest: bool) -> None:
    model = random_model(9, 3, seed=1)
    x = np.zeros((1, COLUMNS), np.float32)
    for bad in [*BAD, len(model["feature"])]:
        a = forest_arrays(model) if forest else booster_arrays(model)
        a["roots"] = a["roots"].copy()
        a["roots"][8] = bad
        a["depth"] = 0  # no step: the leaf read is checked all the same
        with pytest.raises(ValueError, match="do not describe trees"):
            (forest_walk if forest else booster_walk)(x, a)
