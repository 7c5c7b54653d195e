"""The compiled scores-and-argmax of linear classifiers (servekit._linear)
against numpy's argmax of the same scores, against the exact scores (as
fractions) and against scikit-learn's own predict: whenever the kernel says
its answer is certain, it is theirs, for every kernel this CPU runs (AVX-512,
AVX2, portable C), over row lengths that are and are not whole vectors, one
and several classes, ties, near ties, NaNs and infinities; arguments that do
not fit are refused, never read out of bounds. And the fast predict of
scikit-learn's linear classifiers, with and without the extension, is
scikit-learn's."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sklearn.datasets import load_breast_cancer, load_digits, load_iris, make_classification
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, RidgeClassifier, SGDClassifier
from sklearn.svm import LinearSVC

from servekit import _linear
from servekit.runtimes import sklearn_fast

KERNELS = _linear.kernels()
# row lengths around every vector width and block (4 and 8 doubles, 2 and 4 lanes)
LENGTHS = [1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 127, 784, 1000]


@pytest.fixture(params=KERNELS)
def kernel(request: pytest.FixtureRequest) -> Iterator[str]:
    before = _linear.use_kernel(request.param)
    try:
        yield request.param
    finally:
        _linear.use_kernel(before)


def argmax(x: np.ndarray, rows: np.ndarray, bias: np.ndarray) -> tuple[bool, np.ndarray]:
    out = np.full(len(x), -1, np.intp)
    certain = _linear.linear_argmax(x, rows, bias, out)
    assert type(certain) is bool
    return certain, out


def numpy_index(x: np.ndarray, rows: np.ndarray, bias: np.ndarray) -> np.ndarray:
    scores = x @ rows.T + bias
    if rows.shape[0] == 1:
        return (scores[:, 0] > 0).astype(np.intp)
    return scores.argmax(axis=1)


def exact_index(x: np.ndarray, rows: np.ndarray, bias: np.ndarray) -> list[int | None]:
    """Each row's class by the exact scores (None where the top two tie exactly)."""
    answers: list[int | None] = []
    for row in x:
        scores = [sum((Fraction(w) * Fraction(v) for w, v in zip(r, row, strict=True)), Fraction(b))
                  for r, b in zip(rows, bias, strict=True)]
        if len(scores) == 1:
            answers.append(None if scores[0] == 0 else int(scores[0] > 0))
            continue
        top = max(scores)
        answers.append(scores.index(top) if scores.count(top) == 1 else None)
    return answers


def fit_logistic(f: int, k: int, seed: int) -> LogisticRegression:
    rng = np.random.default_rng(seed)
    samples = max(3 * k, 12)
    x = rng.normal(0, 1, (samples, f))
    y = np.arange(samples) % max(k, 2)
    x[:, 0] += y  # something to learn
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return LogisticRegression(max_iter=200).fit(x, y)


# -- the kernel's answers ---------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 2, 3, 10])
@pytest.mark.parametrize("f", LENGTHS)
def test_certain_answers_are_numpys_and_sklearns(kernel: str, f: int, k: int) -> None:
    # scikit-learn's binary models have one row (k == 1); two rows (k == 2), which
    # no scikit-learn classifier has, are the first two of a three-class model's
    model = fit_logistic(f, 3 if k == 2 else k, seed=f * 31 + k)
    rows = np.ascontiguousarray(model.coef_[:k], dtype=np.float64)
    bias = np.ascontiguousarray(model.intercept_[:k], dtype=np.float64)
    assert rows.shape == (k, f)
    rng = np.random.default_rng(f + 1000 * k)
    certain_rows = 0
    for trial in range(40):
        n = 1 + trial % 5
        scale = [1.0, 1e-3, 1e3, 1e-150, 1e150][trial % 5]
        x = rng.normal(0, scale, (n, f))
        certain, out = argmax(x, rows, bias)
        if certain:
            certain_rows += n
            assert np.array_equal(out, numpy_index(x, rows, bias))
            if k != 2:
                assert np.array_equal(model.classes_[out], model.predict(x))
            assert np.array_equal(out[:1], numpy_index(x[:1], rows, bias))
    assert certain_rows >= 80  # of 120: the check is not vacuous


@given(
    data=st.data(),
    n=st.integers(1, 5),
    f=st.integers(1, 40),
    k=st.sampled_from([1, 2, 3, 5, 9, 10]),
)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_certain_answers_are_the_exact_scores(kernel: str, data: Any, n: int, f: int, k: int) -> None:
    """Any floats at all, cancellation, subnormals and overflow included:
    a certain answer is the exact scores' argmax (so any rounding's)."""
    values = st.one_of(
        st.floats(allow_nan=False, allow_infinity=False, width=64),
        st.sampled_from([0.0, -0.0, 1.0, -1.0, 5e-324, 1e16, -1e16, 1.0 + 2**-52]),
    )
    x = data.draw(hnp.arrays(np.float64, (n, f), elements=values))
    rows = data.draw(hnp.arrays(np.float64, (k, f), elements=values))
    bias = data.draw(hnp.arrays(np.float64, (k,), elements=values))
    certain, out = argmax(x, rows, bias)
    if certain:
        assert list(out) == exact_index(x, rows, bias)
        with np.errstate(all="ignore"):
            assert np.array_equal(out, numpy_index(x, rows, bias))


def test_cancellation_is_uncertain_when_it_decides(kernel: str) -> None:
    # exact scores 1 and 0, but summed left to right in float64 the first is 0
    x = np.array([[1e16, 1.0, -1e16]])
    rows = np.array([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    certain, _ = argmax(x, rows, np.zeros(2))
    assert not certain
    # S = 2e16 + 1, so the bound is about 8 * 4.4e-16 * 2e16 = 71: -10 is inside it, -1000 not
    assert not argmax(x, rows, np.array([0.0, -10.0]))[0]
    certain, out = argmax(x, rows, np.array([0.0, -1000.0]))
    assert certain and out[0] == 0


def test_the_bias_counts_in_the_bound(kernel: str) -> None:
    """A bias far larger than the products: rounding the dot product (here up,
    to the midpoint m of the bias's ulp) and then the add separates the scores
    by a whole ulp of the bias, though the exact order is the other way round.
    Each kernel sums these columns in this order (one lane, one accumulator)."""
    m, unit = 2.0**-53, 2.0**-106  # unit: the spacing of doubles just below m
    x = np.zeros((1, 80))
    x[0, [0, 16, 32, 48, 64]] = [m - 3 * unit, 2.8 * unit, -0.5 * unit, -0.5 * unit, -0.5 * unit]  # m, exactly m - 1.7 units
    x[0, 1] = m - unit
    rows = np.zeros((2, 80))
    rows[0, [0, 16, 32, 48, 64]] = 1.0
    rows[1, 1] = 1.0
    bias = np.full(2, 1.0 + 2.0**-52)  # an odd last bit: m rounds up, m - 1 unit down
    assert exact_index(x, rows, bias) == [1]
    certain, _ = argmax(x, rows, bias)
    assert not certain


# -- ties, near ties, NaNs and infinities ----------------------------------------------------------------
@pytest.mark.parametrize("f", [1, 3, 8, 17, 784])
@pytest.mark.parametrize("k", [2, 3, 10])
def test_exact_ties_are_never_certain(kernel: str, f: int, k: int) -> None:
    rng = np.random.default_rng(f * k)
    rows = rng.normal(0, 1, (k, f))
    bias = rng.normal(0, 1, k)
    x = rng.normal(0, 1, (1, f))
    best = int(numpy_index(x, rows, bias)[0])
    twin = (best + 1) % k
    rows[twin], bias[twin] = rows[best], bias[best]  # two classes with the same scores
    certain, _ = argmax(x, rows, bias)
    assert not certain
    # and several rows: one tied row makes the whole answer uncertain
    many = np.concatenate([rng.normal(0, 1, (3, f)), x])
    assert not argmax(many, rows, bias)[0]


@pytest.mark.parametrize("f", [1, 5, 64, 784])
def test_binary_zero_scores_are_never_certain(kernel: str, f: int) -> None:
    rows = np.random.default_rng(f).normal(0, 1, (1, f))
    assert not argmax(np.zeros((1, f)), rows, np.zeros(1))[0]
    x = np.random.default_rng(f + 1).normal(0, 1, (1, f))
    score = float((rows @ x[0])[0])
    assert not argmax(x, rows, np.array([-score]))[0]  # the score is 0 or an ulp from it
    certain, out = argmax(x, rows, np.array([-score + 1.0]))
    assert certain and out[0] == 1
    certain, out = argmax(x, rows, np.array([-score - 1.0]))
    assert certain and out[0] == 0


@pytest.mark.parametrize("steps", [-2, -1, 1, 2])
@pytest.mark.parametrize("f", [2, 9, 784])
def test_near_ties_are_uncertain_or_numpys(kernel: str, f: int, steps: int) -> None:
    rng = np.random.default_rng(f + steps)
    rows = rng.normal(0, 1, (3, f))
    bias = rng.normal(0, 1, 3)
    x = rng.normal(0, 1, (1, f))
    best = int(numpy_index(x, rows, bias)[0])
    rival = (best + 2) % 3
    rows[rival] = rows[best]
    bias[rival] = bias[best]
    for _ in range(abs(steps)):  # the rival's bias steps ulps away from the winner's
        bias[rival] = np.nextafter(bias[rival], np.inf if steps > 0 else -np.inf)
    certain, out = argmax(x, rows, bias)
    assert not certain or np.array_equal(out, numpy_index(x, rows, bias))
    assert not certain  # an ulp is far inside the bound


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("where", ["x", "x-zero-weight", "rows", "bias"])
def test_nan_and_infinity_are_never_certain(kernel: str, bad: float, k: int, where: str) -> None:
    rng = np.random.default_rng(k)
    f = 13
    x, rows, bias = rng.normal(0, 1, (2, f)), rng.normal(0, 1, (k, f)), rng.normal(0, 1, k)
    if where == "x":
        x[1, 5] = bad
    elif where == "x-zero-weight":  # a column every class ignores
        x[0, 5] = bad
        rows[:, 5] = 0.0
    elif where == "rows":
        rows[k - 1, 12] = bad
    else:
        bias[0] = bad
    assert not argmax(x, rows, bias)[0]


# -- arguments that do not fit -------------------------------------------------------------------
def test_bad_arguments_raise() -> None:
    x, rows, bias, out = np.zeros((2, 5)), np.zeros((3, 5)), np.zeros(3), np.zeros(2, np.intp)
    assert _linear.linear_argmax(x, rows, bias, out) is False  # all zero: all tied
    read_only = np.zeros(2, np.intp)
    read_only.flags.writeable = False
    bad: list[tuple[Any, ...]] = [
        (x.astype(np.float32), rows, bias, out),
        (x, rows.astype(np.float32), bias, out),
        (x, rows, bias.astype(np.float32), out),
        (x, rows, bias, out.astype(np.int32)),
        (x, rows, bias, out.astype(np.float64)),
        (x.astype(">f8"), rows, bias, out),
        (x, np.zeros((3, 4)), bias, out),  # columns differ
        (x, rows, np.zeros(4), out),  # one bias per class
        (x, rows, bias, np.zeros(3, np.intp)),  # one answer per row
        (x, np.zeros((0, 5)), np.zeros(0), out),  # no classes
        (x[0], rows, bias, out),  # 1-D rows
        (x, rows[0], bias, out),
        (x, rows, bias[:, None], out),
        (np.zeros((2, 10))[:, ::2], rows, bias, out),  # not contiguous
        (x, np.zeros((5, 3)).T, bias, out),
        (x, rows, np.zeros(6)[::2], out),
        (x, rows, bias, np.zeros(4, np.intp)[::2]),
        (x, rows, bias, read_only),
    ]
    for args in bad:
        with pytest.raises(ValueError):
            _linear.linear_argmax(*args)
    for args in [(x.tolist(), rows, bias, out), (x, rows, bias, None), (x, rows, bias), (x, rows, bias, out, out)]:
        with pytest.raises(TypeError):
            _linear.linear_argmax(*args)
    with pytest.raises(TypeError):
        _linear.linear_argmax(x=x, rows=rows, bias=bias, out=out)  # type: ignore[call-arg]
    with pytest.raises(ValueError):
        _linear.use_kernel("no-such-kernel")


def test_empty_and_wide_inputs(kernel: str) -> None:
    # no rows; no columns (the scores are the biases); many classes (past the stack buffer)
    certain, out = argmax(np.zeros((0, 4)), np.ones((3, 4)), np.zeros(3))
    assert certain and out.shape == (0,)
    certain, out = argmax(np.zeros((2, 0)), np.zeros((3, 0)), np.array([0.0, 2.0, 1.0]))
    assert certain and list(out) == [1, 1]
    rng = np.random.default_rng(7)
    rows, bias = rng.normal(0, 1, (300, 37)), rng.normal(0, 1, 300)
    x = rng.normal(0, 1, (5, 37))
    certain, out = argmax(x, rows, bias)
    assert certain and np.array_equal(out, numpy_index(x, rows, bias))


def test_many_rows_let_other_threads_run(kernel: str) -> None:
    rng = np.random.default_rng(3)
    rows, bias = rng.normal(0, 1, (10, 784)), rng.normal(0, 1, 10)
    x = rng.normal(0, 1, (400, 784))  # past the work after which the GIL is released
    certain, out = argmax(x, rows, bias)
    assert certain and np.array_equal(out, numpy_index(x, rows, bias))


# -- the fast predict of scikit-learn's linear classifiers -----------------------------------------------
def without_kernel(model: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    with monkeypatch.context() as patched:
        patched.setattr(sklearn_fast, "_linear_c", None)
        methods = sklearn_fast._linear(model)
    assert methods is not None
    return methods["predict"]


def data_sets() -> list[tuple[str, np.ndarray, np.ndarray]]:
    synthetic = make_classification(n_samples=300, n_features=37, n_informative=10, n_classes=4, random_state=0)
    binary = make_classification(n_samples=200, n_features=9, random_state=1)
    return [
        ("iris", *load_iris(return_X_y=True)),
        ("digits", *load_digits(return_X_y=True)),
        ("breast_cancer", *load_breast_cancer(return_X_y=True)),
        ("synthetic", *synthetic),
        ("binary", *binary),
    ]


DATA = data_sets()
ESTIMATORS = {
    "LogisticRegression": lambda: LogisticRegression(max_iter=5000),
    "RidgeClassifier": lambda: RidgeClassifier(),
    "SGDClassifier": lambda: SGDClassifier(random_state=0),
    "LinearSVC": lambda: LinearSVC(random_state=0),
}


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("estimator", list(ESTIMATORS))
@pytest.mark.parametrize("data", DATA, ids=[d[0] for d in DATA])
def test_fast_predict_is_sklearns(estimator: str, data: tuple[str, np.ndarray, np.ndarray],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    _, x, y = data
    model = ESTIMATORS[estimator]().fit(x, y)
    methods = sklearn_fast._linear(model)
    if estimator == "LinearSVC":  # not a linear_model estimator: scikit-learn's own predict serves it
        assert methods is None
        return
    assert methods is not None
    fast, slow = methods["predict"], without_kernel(model, monkeypatch)
    rng = np.random.default_rng(0)
    wild = rng.normal(x.mean(axis=0), 3 * x.std(axis=0) + 1, (60, x.shape[1]))
    rows = np.ascontiguousarray(np.concatenate([x[::7], wild]), dtype=np.float64)
    expected = model.predict(rows)
    for start in range(0, len(rows), 4):
        for n in (1, 2, 4):  # the kernel's (up to LINEAR_KERNEL_MAX_ROWS) and numpy's
            batch = rows[start : start + n]
            if len(batch) == n:
                for predict in (fast, slow):
                    got = predict(batch)
                    assert got.dtype == expected.dtype and np.array_equal(got, expected[start : start + n])
    assert np.array_equal(fast(rows), expected)
    assert np.array_equal(fast(rows.astype(np.float32)), slow(rows.astype(np.float32)))
    assert np.array_equal(fast(np.asfortranarray(rows[:3])), expected[:3])  # not C-contiguous: numpy's way
    verified, _ = sklearn_fast.compile_estimator(model)
    assert "predict" in verified  # the probe check keeps the fast predict


@pytest.mark.parametrize("kind", ["tie", "nan", "inf"])
def test_fast_predict_falls_back_to_numpy(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=5000).fit(x, y)
    row = x[:1].copy()
    if kind == "tie":  # a row on the boundary of classes 1 and 2: their scores tie (to rounding)
        w, b = model.coef_, model.intercept_
        d = w[1] - w[2]
        row = row - ((row[0] @ d + b[1] - b[2]) / (d @ d)) * d
        row = np.ascontiguousarray(row)
        assert not argmax(row, np.ascontiguousarray(w), b)[0]
    else:
        row[0, 2] = np.nan if kind == "nan" else np.inf
    fast, slow = sklearn_fast._linear(model)["predict"], without_kernel(model, monkeypatch)  # type: ignore[index]
    with np.errstate(all="ignore"):
        got, expected = fast(row), slow(row)
    assert np.array_equal(got, expected)
    if kind == "tie":  # scikit-learn refuses NaNs and infinities; a near tie it answers
        assert np.array_equal(got, model.predict(row))


def test_one_row_uses_the_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """The wiring really calls the kernel for one float64 row, and not for more
    rows than LINEAR_KERNEL_MAX_ROWS."""
    x, y = load_digits(return_X_y=True)
    model = LogisticRegression(max_iter=5000).fit(x, y)
    calls: list[int] = []
    real = _linear.linear_argmax

    class Counting:
        @staticmethod
        def linear_argmax(*args: Any) -> bool:
            calls.append(len(args[0]))
            return real(*args)

    monkeypatch.setattr(sklearn_fast, "_linear_c", Counting)
    predict = sklearn_fast._linear(model)["predict"]  # type: ignore[index]
    rows = np.ascontiguousarray(x[:10], dtype=np.float64)
    assert np.array_equal(predict(rows[:1]), model.predict(rows[:1]))
    assert np.array_equal(predict(rows), model.predict(rows))
    assert np.array_equal(predict(rows[:1].astype(np.float32)), model.predict(rows[:1]))
    assert calls == [1]
