"""The Flask-style ``/predict`` API of the article, for any served model (the article's
own curl call: tests/articles/test_article_002.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import joblib
import pytest
import requests
from servers import ServerProcess
from sklearn import datasets
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LinearRegression


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("flask")
    iris = datasets.load_iris()
    (root / "iris").mkdir()
    # the article's model: joblib.dump(model, "model.pkl")
    joblib.dump(RandomForestClassifier(random_state=0).fit(iris.data, iris.target), root / "iris" / "model.pkl")
    return root


@pytest.fixture(scope="module")
def server(repository: Path) -> Iterator[ServerProcess]:
    with ServerProcess(["serve", str(repository)]) as process:
        yield process


def test_named_route_and_several_rows(server: ServerProcess) -> None:
    answer = requests.post(f"{server.url}/predict/iris", json={"inputs": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}, timeout=10)
    assert answer.json() == {"prediction": [0, 2]}


def test_seldon_body_on_predict(server: ServerProcess) -> None:
    answer = requests.post(f"{server.url}/predict", json={"data": {"ndarray": [[5.1, 3.5, 1.4, 0.2]]}}, timeout=10)
    assert answer.json() == {"data": {"names": [], "ndarray": [0]}, "meta": {}}


def test_bad_input_gets_a_clear_error(server: ServerProcess) -> None:
    for body, text in (
        ({"inputs": [[1.0, 2.0]]}, "expects 4 features"),
        ({"rows": [[1, 2, 3, 4]]}, '{"inputs"'),
        ({"inputs": [[1, 2, 3, 4], [1]]}, "rectangular"),
        ({"inputs": [[None, None, None, None]]}, "numbers or strings"),
    ):
        answer = requests.post(f"{server.url}/predict", json=body, timeout=10)
        assert answer.status_code == 400, answer.text
        assert text in answer.json()["error"]
    missing = requests.post(f"{server.url}/predict/nope", json={"inputs": [[1, 2, 3, 4]]}, timeout=10)
    assert missing.status_code == 404 and "nope" in missing.json()["error"]
    batch = requests.post(f"{server.url}/predict/batch/iris", json=[[1, 2, 3, 4]], timeout=10)
    assert batch.status_code == 400 and "not a typed library model" in batch.json()["error"]
    assert requests.post(f"{server.url}/predict", json={"inputs": [[5.1, 3.5, 1.4, 0.2]]}, timeout=10).json() == {"prediction": [0]}


def test_several_models_need_a_name_or_default(repository: Path, tmp_path: Path) -> None:
    root = tmp_path / "two"
    (root / "iris").mkdir(parents=True)
    (root / "iris" / "model.pkl").write_bytes((repository / "iris" / "model.pkl").read_bytes())
    (root / "line").mkdir()
    joblib.dump(LinearRegression().fit([[0.0], [1.0]], [1.0, 3.0]), root / "line" / "model.joblib")
    with ServerProcess(["serve", str(root)]) as server:
        nameless = requests.post(f"{server.url}/predict", json={"inputs": [[1.0]]}, timeout=10)
        assert nameless.status_code == 400
        assert "serves 2 models (iris, line)" in nameless.json()["error"]
        line = requests.post(f"{server.url}/predict/line", json={"inputs": [[2.0]]}, timeout=10).json()
        assert line["prediction"] == [pytest.approx(5.0)]
    with ServerProcess(["serve", str(root), "--default-model", "line"]) as server:
        line = requests.post(f"{server.url}/predict", json={"inputs": [[0.5]]}, timeout=10).json()
        assert line["prediction"] == [pytest.approx(2.0)]
