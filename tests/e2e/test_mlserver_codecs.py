"""Requests as MLServer's codecs write them (PandasCodec: one input per column,
named as the DataFrame's columns, request content_type pd; NumpyCodec answers
[N, 1] with content_type np) against a real server and a scikit-learn model
fitted on a DataFrame."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
import requests
from servers import ServerProcess
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression


@pytest.fixture(scope="module")
def iris(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, LogisticRegression, pd.DataFrame]]:
    frame = load_iris(as_frame=True)
    X, y = frame.data, frame.target
    model = LogisticRegression(max_iter=500).fit(X, y)
    root: Path = tmp_path_factory.mktemp("codecs")
    (root / "iris").mkdir()
    joblib.dump(model, root / "iris" / "model.joblib")
    (root / "iris" / "model-settings.json").write_text(
        '{"name": "iris", "implementation": "mlserver_sklearn.SKLearnModel"}')
    with ServerProcess(["serve", str(root)]) as server:
        yield server, model, X.iloc[[0, 100, 60]]


def pandas_request(frame: pd.DataFrame) -> dict[str, object]:
    """What PandasCodec.encode_request(frame) sends: one [N, 1] input per column."""
    return {
        "parameters": {"content_type": "pd"},
        "inputs": [{"name": column, "shape": [len(frame), 1], "datatype": "FP64",
                    "data": frame[column].tolist()} for column in frame.columns],
    }


def infer(server: ServerProcess, body: dict[str, object]) -> requests.Response:
    return requests.post(f"{server.url}/v2/models/iris/infer", json=body, timeout=30)


def test_columns_in_any_order_are_put_in_the_fitted_order(
    iris: tuple[ServerProcess, LogisticRegression, pd.DataFrame],
) -> None:
    server, model, rows = iris
    expected = model.predict(rows).tolist()
    assert len(set(expected)) == 3  # rows of three classes: a column mix-up would show
    for frame in (rows, rows[rows.columns[::-1]], rows[[rows.columns[2], rows.columns[0], rows.columns[3], rows.columns[1]]]):
        answer = infer(server, pandas_request(frame))
        assert answer.status_code == 200, answer.text
        [output] = answer.json()["outputs"]
        assert output["data"] == expected
        assert output["shape"] == [3, 1] and output["parameters"] == {"content_type": "np"}


def test_unknown_or_missing_columns_are_refused_by_name(
    iris: tuple[ServerProcess, LogisticRegression, pd.DataFrame],
) -> None:
    server, _, rows = iris
    renamed = rows.rename(columns={rows.columns[1]: "sepal width (mm)"})
    answer = infer(server, pandas_request(renamed))
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert "unknown column(s) 'sepal width (mm)'" in error and "missing column(s) 'sepal width (cm)'" in error
    short = infer(server, pandas_request(rows[rows.columns[:3]]))
    assert short.status_code == 400 and "missing column(s) 'petal width (cm)'" in short.json()["error"]


def test_positional_requests_and_every_output_as_mlserver(
    iris: tuple[ServerProcess, LogisticRegression, pd.DataFrame],
) -> None:
    server, model, rows = iris
    # NumpyRequestCodec: one [N, 4] input, whatever its name
    body = {"inputs": [{"name": "input-0", "shape": [3, 4], "datatype": "FP64", "data": rows.values.ravel().tolist()}],
            "outputs": [{"name": "predict"}, {"name": "predict_proba"}]}
    answer = infer(server, body)
    assert answer.status_code == 200, answer.text
    predict, proba = answer.json()["outputs"]
    assert predict["shape"] == [3, 1] and predict["data"] == model.predict(rows).tolist()
    assert proba["shape"] == [3, 3] and proba["parameters"] == {"content_type": "np"}
    np.testing.assert_allclose(np.reshape(proba["data"], (3, 3)), model.predict_proba(rows), rtol=1e-9)
