"""Fast paths for the estimators people serve most: linear models and tree
ensembles, evaluated with a few numpy calls instead of scikit-learn's
per-call validation (about 140 µs for a one-row LogisticRegression) and
per-tree dispatch (about 9 ms for a one-row 100-tree forest).

Each fast method is checked against scikit-learn's own on probe rows when the
model loads and is dropped if the answers differ, so a fast path can only
ever be a faster way to the same numbers. Large batches go to scikit-learn,
whose compiled loops win there.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

try:
    from servekit import _trees
except ImportError:  # built without a C compiler: the numpy walk only
    _trees = None  # type: ignore[assignment]
try:
    from servekit import _linear as _linear_c
except ImportError:  # built without a C compiler: numpy's scores and argmax only
    _linear_c = None  # type: ignore[assignment]

log = logging.getLogger("servekit.runtimes")

FastMethod = Callable[[np.ndarray], np.ndarray]


# above this many rows a forest goes back to scikit-learn's compiled loops
FOREST_MAX_ROWS = 512
# above this many rows a linear classifier's labels come from numpy's matrix
# product and argmax, not servekit._linear's one pass over the weights per row
# (fashion-MNIST's 10x784 LogisticRegression: 4 rows 6.5 vs 8.6 us, 8 rows
# 12.2 vs 9.8 us)
LINEAR_KERNEL_MAX_ROWS = 4


def compile_estimator(model: Any) -> tuple[dict[str, FastMethod], int | None]:
    """Fast equivalents of the model's methods that passed the probe check."""
    max_rows = None
    candidates = _linear(model)
    own = getattr(model, "fast_methods", None)  # a face that compiles itself (XGBoost boosters)
    if candidates is None and callable(own):
        candidates, max_rows = own()
    elif candidates is None:
        candidates, max_rows = _forest(model) or {}, FOREST_MAX_ROWS
    n_features = getattr(model, "n_features_in_", None)
    if not candidates or not isinstance(n_features, int):
        return {}, None
    rng = np.random.default_rng(0)
    probe = np.concatenate(
        [rng.normal(0, 1, (8, n_features)), rng.normal(0, 50, (8, n_features))]
    )
    verified: dict[str, FastMethod] = {}
    for name, method in candidates.items():
        try:
            expected = np.asarray(getattr(model, name)(probe))
            got = [method(probe)] + [method(probe[i : i + 1]) for i in (0, 9)]  # one row may take its own way
        except Exception:  # the fast path does not fit this model; keep sklearn's
            continue
        same = all(
            answer.shape == wanted.shape and (
                np.array_equal(answer, wanted)
                if wanted.dtype.kind not in "fc"
                else np.allclose(answer, wanted, rtol=1e-9, atol=1e-12)
            )
            for answer, wanted in zip(got, [expected, expected[0:1], expected[9:10]], strict=True)
        )
        if same:
            verified[name] = method
        else:
            log.debug("fast %s for %s differs from scikit-learn's; not used", name, type(model).__name__)
    return verified, max_rows


# -- linear models --------------------------------------------------------------
def _linear(model: Any) -> dict[str, FastMethod] | None:
    coef = getattr(model, "coef_", None)
    intercept = getattr(model, "intercept_", None)
    if not isinstance(coef, np.ndarray) or intercept is None or type(model).__module__.split(".")[1] != "linear_model":
        return None
    weights = coef.T
    rows = np.ascontiguousarray(coef) if coef.ndim == 2 else None
    bias = np.asarray(intercept)

    def flat(scores: np.ndarray) -> np.ndarray:
        return scores.ravel() if scores.ndim == 2 and scores.shape[1] == 1 else scores

    def decision_function(x: np.ndarray) -> np.ndarray:
        x = _float(x)
        if rows is not None and x.ndim == 2 and x.shape[0] == 1:
            # one row: a matrix-vector product, without a matrix product's set-up
            return flat((rows @ x[0] + bias)[None])
        return flat(x @ weights + bias)

    classes = getattr(model, "classes_", None)
    if classes is None:
        return {"predict": decision_function}

    # A few float64 rows: the scores and their argmax in one compiled call
    # (servekit._linear), which says when rounding could change a row's class
    # (a near tie, a NaN or an infinity); numpy answers then. The conversions
    # to float64 are exact, as numpy's own upcasts of float32 weights are.
    exact = {np.dtype(t) for t in (np.float16, np.float32, np.float64)}  # widen to float64 exactly
    compiled = _linear_c is not None and rows is not None and {rows.dtype, bias.dtype} <= exact
    kernel = _linear_c.linear_argmax if compiled else None
    rows64 = bias64 = np.empty(0)
    columns = coef.shape[-1]
    if kernel is not None:
        rows64 = np.ascontiguousarray(rows, dtype=np.float64)
        try:
            bias64 = np.ascontiguousarray(np.broadcast_to(bias, rows64.shape[:1]), dtype=np.float64)
        except ValueError:  # an intercept that is not one per class: numpy's way only
            kernel = None

    def predict(x: np.ndarray) -> np.ndarray:
        x = _float(x)
        if (kernel is not None and x.dtype is _F64 and x.ndim == 2 and x.shape[1] == columns
                and len(x) <= LINEAR_KERNEL_MAX_ROWS):
            index = np.empty(len(x), np.intp)
            try:
                certain = kernel(x, rows64, bias64, index)
            except ValueError:  # not C-contiguous
                certain = False
            if certain:
                found: np.ndarray = classes[index]  # as classes.take(index), a little cheaper
                return found
        # the product scikit-learn's own predict makes (X @ coef_.T + intercept_):
        # a near tie must round as it rounds there, which the one-row
        # matrix-vector product of decision_function need not (other BLAS kernels)
        scores = flat(x @ weights + bias)
        index = (scores > 0).astype(np.intp) if scores.ndim == 1 else scores.argmax(axis=1)
        labels: np.ndarray = classes.take(index)
        return labels

    methods: dict[str, FastMethod] = {"predict": predict, "decision_function": decision_function}
    if hasattr(model, "predict_proba") and type(model).__name__ == "LogisticRegression":

        def predict_proba(x: np.ndarray) -> np.ndarray:
            scores = decision_function(x)
            if scores.ndim == 1:
                positive = 1.0 / (1.0 + np.exp(-scores))
                return np.column_stack([1.0 - positive, positive])
            exp: np.ndarray = np.exp(scores - scores.max(axis=1, keepdims=True))
            exp /= exp.sum(axis=1, keepdims=True)
            return exp

        methods["predict_proba"] = predict_proba
    return methods


# -- decision trees and forests ---------------------------------------------------
class CompiledTrees:
    """All trees of an ensemble as flat node arrays, walked level by level for
    every (row, tree) pair at once. Leaves point to themselves, so walking
    ``depth`` steps lands every pair on its leaf."""

    def __init__(self, trees: list[Any], normalize: bool) -> None:
        sizes = [t.node_count for t in trees]
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.intp)
        left, right, feature, threshold, values = [], [], [], [], []
        for tree, offset in zip(trees, offsets, strict=True):
            nodes = np.arange(tree.node_count, dtype=np.intp) + offset
            is_leaf = tree.children_left < 0
            left.append(np.where(is_leaf, nodes, tree.children_left + offset))
            right.append(np.where(is_leaf, nodes, tree.children_right + offset))
            feature.append(np.where(is_leaf, 0, tree.feature))
            threshold.append(np.where(is_leaf, np.inf, tree.threshold))
            value = tree.value[:, 0, :].astype(np.float64)
            if normalize:
                total = value.sum(axis=1, keepdims=True)
                total[total == 0.0] = 1.0
                value = value / total
            values.append(value)
        self.roots = np.ascontiguousarray(offsets, dtype=np.intp)
        self.left = np.ascontiguousarray(np.concatenate(left), dtype=np.intp)
        self.right = np.ascontiguousarray(np.concatenate(right), dtype=np.intp)
        self.feature = np.ascontiguousarray(np.concatenate(feature), dtype=np.intp)
        self.threshold = np.ascontiguousarray(np.concatenate(threshold), dtype=np.float64)
        self.value = np.ascontiguousarray(np.concatenate(values), dtype=np.float64)
        self.depth = max(t.max_depth for t in trees)
        self.n_trees = len(trees)

    def leaves(self, x: np.ndarray) -> np.ndarray:
        # trees compare float32 features with float64 thresholds, as scikit-learn does
        x32 = np.ascontiguousarray(x, dtype=np.float32)
        n = x32.shape[0]
        node = np.broadcast_to(self.roots, (n, self.n_trees)).copy()
        rows = np.arange(n)[:, None]
        for _ in range(self.depth):
            go_left = x32[rows, self.feature[node]] <= self.threshold[node]
            node = np.where(go_left, self.left[node], self.right[node])
        return node

    def mean_value(self, x: np.ndarray) -> np.ndarray:
        x32 = np.ascontiguousarray(x, dtype=np.float32)
        if _trees is not None and x32.ndim == 2:  # the walk and the mean, compiled
            mean = np.empty((x32.shape[0], self.value.shape[1]), np.float64)
            _trees.forest_mean(x32, self.feature, self.threshold, self.left, self.right, self.roots, self.value,
                               self.depth, mean)
            return mean
        per_tree = self.value[self.leaves(x32)]  # (rows, trees, outputs)
        total: np.ndarray = per_tree.sum(axis=1)
        total /= self.n_trees
        return total


def _forest(model: Any) -> dict[str, FastMethod] | None:
    name = type(model).__name__
    if name not in {
        "RandomForestClassifier",
        "RandomForestRegressor",
        "ExtraTreesClassifier",
        "ExtraTreesRegressor",
        "DecisionTreeClassifier",
        "DecisionTreeRegressor",
    } or getattr(model, "n_outputs_", 1) != 1:
        return None
    estimators = getattr(model, "estimators_", None) or [model]
    trees = [e.tree_ for e in estimators]
    classes = getattr(model, "classes_", None)
    compiled = CompiledTrees(trees, normalize=classes is not None)
    if classes is None:
        return {"predict": lambda x: compiled.mean_value(x)[:, 0]}

    def predict(x: np.ndarray) -> np.ndarray:
        labels: np.ndarray = classes.take(compiled.mean_value(x).argmax(axis=1))
        return labels

    return {"predict": predict, "predict_proba": compiled.mean_value}


_F64 = np.dtype(np.float64)


def _float(x: np.ndarray) -> np.ndarray:
    return x if x.dtype.kind == "f" else x.astype(np.float64)
