"""XGBoost's trees walked with a few numpy calls, for small requests.

XGBoost's own ``inplace_predict`` costs a fixed few hundred microseconds per
call (thread pool, DMatrix proxy, predictor set-up) however small the request;
for one row of a 500-tree model that is ten times the walk itself. Here every
tree of a ``gbtree`` booster becomes flat node arrays, walked level by level for
every (row, tree) pair at once, and each output group's margin is the float32
sum XGBoost makes: its base score, then every tree's leaf in tree order
(``cumsum`` in float32 adds in that order), so the margins are XGBoost's bit for
bit (checked on probe rows when the model loads, else the fast path is not used).

Only what is exact is served this way: labels (``multi:softmax``, the argmax of
the margins; ``multi:softprob`` and ``binary:logistic``, whose labels follow
the margins unless two are within :data:`TIE` of each other) and plain
regression (``reg:squarederror``, the margin itself). Rows with a missing value
(NaN), near ties, categorical splits, DART boosters and anything else go to
XGBoost.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np

try:
    from servekit import _trees
except ImportError:  # built without a C compiler: the numpy walk only
    _trees = None  # type: ignore[assignment]

# margins closer than this may round to equal probabilities in XGBoost's float32
# transform: such rows are left to XGBoost, which decides the label its way
TIE = 1e-4
# above this many rows XGBoost's compiled, multi-threaded predictor wins
MAX_ROWS = 32
# a walk is one numpy gather per level over every tree: deep trees are XGBoost's
MAX_DEPTH = 16
_OBJECTIVES = {"multi:softmax", "multi:softprob", "binary:logistic", "reg:squarederror"}


class Unsupported(Exception):
    """The booster uses something the walk does not do exactly."""


class CompiledBooster:
    def __init__(self, raw_json: bytes) -> None:
        learner = json.loads(raw_json)["learner"]
        booster = learner["gradient_booster"]
        if booster.get("name") != "gbtree":
            raise Unsupported(f"booster {booster.get('name')!r}")
        model = booster["model"]
        param = learner["learner_model_param"]
        if int(param.get("num_target", "1") or 1) != 1:
            raise Unsupported("several targets")
        self.objective = str(learner["objective"]["name"])
        if self.objective not in _OBJECTIVES:
            raise Unsupported(f"objective {self.objective!r}")
        trees = model["trees"]
        if not trees:
            raise Unsupported("no trees")
        self.groups = max(int(param.get("num_class", "0") or 0), 1)
        info = np.asarray(model["tree_info"], dtype=np.intp)
        if len(info) != len(trees) or len(trees) % self.groups or not np.array_equal(
                info, np.tile(np.arange(self.groups), len(trees) // self.groups)):
            raise Unsupported("trees not in round-robin group order")
        base = json.loads(param["base_score"]) if str(param["base_score"]).startswith("[") else [
            float(param["base_score"])]
        start = np.asarray(base, dtype=np.float32).reshape(-1)
        if self.objective == "binary:logistic":
            # its base score is a probability: the margin starts at its logit, in float32 as XGBoost takes it
            one = np.float32(1)
            start = -np.log(one / start - one)
        self.base = np.broadcast_to(start, (self.groups,)).copy()
        sizes = [len(t["left_children"]) for t in trees]
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.intp)
        left, right, feature, threshold, value = [], [], [], [], []
        depth = 0
        for tree, offset in zip(trees, offsets, strict=True):
            if any(tree.get("split_type") or []) or tree.get("categories"):
                raise Unsupported("categorical splits")
            if int(tree["tree_param"].get("size_leaf_vector", "1") or 1) > 1:
                raise Unsupported("vector leaves")
            lc = np.asarray(tree["left_children"], dtype=np.intp)
            rc = np.asarray(tree["right_children"], dtype=np.intp)
            nodes = np.arange(len(lc), dtype=np.intp) + offset
            leaf = lc < 0
            conditions = np.asarray(tree["split_conditions"], dtype=np.float32)
            left.append(np.where(leaf, nodes, lc + offset))
            right.append(np.where(leaf, nodes, rc + offset))
            feature.append(np.where(leaf, 0, np.asarray(tree["split_indices"], dtype=np.intp)))
            threshold.append(np.where(leaf, np.float32(np.inf), conditions))  # a leaf stays put
            value.append(np.where(leaf, conditions, np.float32(0)))  # a leaf's value is its condition
            depth = max(depth, _depth(lc, rc))
        if depth > MAX_DEPTH:
            raise Unsupported(f"trees {depth} deep")
        self.n_features = int(param.get("num_feature", "0") or 0)
        self.roots = np.ascontiguousarray(offsets, dtype=np.intp)
        self.children = np.ascontiguousarray(
            np.stack([np.concatenate(left), np.concatenate(right)], axis=1).ravel(), dtype=np.intp)
        self.feature = np.ascontiguousarray(np.concatenate(feature), dtype=np.intp)
        self.threshold = np.concatenate(threshold).astype(np.float32)
        self.value = np.concatenate(value).astype(np.float32)
        self.depth = depth
        self.n_trees = len(trees)

    def margins(self, x32: np.ndarray) -> np.ndarray:
        """(rows, groups) float32 margins of float32 rows without NaN, as XGBoost sums them."""
        n = x32.shape[0]
        children, feature, threshold = self.children, self.feature, self.threshold
        # XGBoost goes left when the value is below the condition (a leaf's is +inf, so
        # it stays put); children holds each node's left then right: 2 * node + went right
        if _trees is not None and x32.ndim == 2 and x32.flags.c_contiguous:  # the same walk and sums, compiled
            margins = np.empty((n, self.groups), np.float32)
            _trees.booster_margins(x32, feature, threshold, children, self.roots, self.value, self.base,
                                   self.depth, margins)
            return margins
        if n == 1:  # one row: flat gathers, no row index
            row, node = x32[0], self.roots
            for _ in range(self.depth):
                node = children[2 * node + (row[feature[node]] >= threshold[node])]
        else:
            node = np.broadcast_to(self.roots, (n, self.n_trees))
            rows = np.arange(n)[:, None]
            for _ in range(self.depth):
                node = children[2 * node + (x32[rows, feature[node]] >= threshold[node])]
        per_tree = self.value[node].reshape(n, self.n_trees // self.groups, self.groups)
        start = np.broadcast_to(self.base, (n, 1, self.groups))
        total: np.ndarray = np.concatenate([start, per_tree], axis=1).cumsum(axis=1, dtype=np.float32)[:, -1, :]
        return total

    def predict(self, fallback: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
        """The fast ``predict`` of a BoosterModel-like face; ``fallback`` is its own."""
        objective = self.objective
        # labels whose missing values and near ties are found in C: a class's
        # (the largest margin; softprob's within TIE of the next are ties) or binary's (margin > 0)
        labelled = _trees is not None and (
            (objective in ("multi:softmax", "multi:softprob") and self.groups > 1)
            or (objective == "binary:logistic" and self.groups == 1)
        )
        tie = 0.0 if objective == "multi:softmax" else TIE

        def predict(x: np.ndarray) -> np.ndarray:
            x32 = np.ascontiguousarray(x, dtype=np.float32)
            if x32.ndim != 2 or x32.shape[1] != self.n_features:
                return fallback(x)
            if labelled:
                certain = np.empty(x32.shape[0], np.int64)
                if not _trees.booster_labels(x32, self.margins(x32), certain, tie):
                    return fallback(x)
                return certain
            if np.isnan(x32).any():
                return fallback(x)
            margins = self.margins(x32)
            if objective == "reg:squarederror":
                return margins[:, 0]
            if objective == "binary:logistic":
                margin = margins[:, 0]
                if (np.abs(margin) < TIE).any():
                    return fallback(x)
                return (margin > 0).astype(np.int64)
            if objective == "multi:softprob" and self.groups > 1:
                top2 = np.partition(margins, -2, axis=1)[:, -2:]
                if ((top2[:, 1] - top2[:, 0]) < TIE).any():
                    return fallback(x)
            labels: np.ndarray = margins.argmax(axis=1).astype(np.int64)
            return labels

        return predict


def _depth(left: np.ndarray, right: np.ndarray) -> int:
    """The number of splits on the longest path from the root to a leaf."""
    deepest = 0
    stack = [(0, 0)]
    while stack:
        node, depth = stack.pop()
        if left[node] >= 0:
            if depth + 1 > MAX_DEPTH:
                return depth + 1
            stack += [(int(left[node]), depth + 1), (int(right[node]), depth + 1)]
            deepest = max(deepest, depth + 1)
    return deepest


def compile_booster(booster: Any) -> CompiledBooster | None:
    """The compiled walk of ``booster``, or None when it uses what the walk does
    not do, or when its margins on probe rows are not XGBoost's bit for bit."""
    try:
        compiled = CompiledBooster(bytes(booster.save_raw("json")))
    except (Unsupported, KeyError, ValueError, TypeError):
        return None
    rng = np.random.default_rng(0)
    probe = np.concatenate([
        rng.normal(0, 1, (16, compiled.n_features)), rng.normal(0, 100, (16, compiled.n_features)),
        rng.uniform(-1, 256, (16, compiled.n_features))]).astype(np.float32)
    expected = np.asarray(booster.inplace_predict(probe, predict_type="margin"), dtype=np.float32)
    if not np.array_equal(compiled.margins(probe), expected.reshape(len(probe), compiled.groups)):
        return None
    return compiled


__all__ = ["MAX_ROWS", "CompiledBooster", "Unsupported", "compile_booster"]
