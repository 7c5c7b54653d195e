"""The sentiment example served by a real ``servekit serve``: V2 and /predict
answers equal the library called in-process."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import orjson
import pytest
import requests
from servers import ServerProcess

from servekit import ModelLibrary
from servekit.library import LibrarySettings

SENTIMENT = Path(__file__).resolve().parents[2] / "examples" / "sentiment"
REVIEWS = [
    "A wonderful, moving masterpiece. Loved it!",
    "Boring plot, terrible actors: a waste of time.",
    "<br />The music was superb but the ending was dull.",
    "",
]


@pytest.fixture(scope="module")
def env(sentiment_store: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return {"SERVEKIT_STORAGE_URL": sentiment_store,
            "SERVEKIT_ASSETS_DIR": str(tmp_path_factory.mktemp("assets"))}


@pytest.fixture(scope="module")
def expected(env: dict[str, str]) -> list[dict[str, object]]:
    if str(SENTIMENT) not in sys.path:
        sys.path.insert(0, str(SENTIMENT))
    import sentiment

    settings = LibrarySettings(assets_dir=env["SERVEKIT_ASSETS_DIR"], storage_url=env["SERVEKIT_STORAGE_URL"])
    classifier = ModelLibrary(sentiment, settings=settings).get("classifier")
    return [r.model_dump() for r in classifier.predict_batch(REVIEWS)]


@pytest.fixture(scope="module")
def server(env: dict[str, str]) -> Iterator[ServerProcess]:
    with ServerProcess(["serve", str(SENTIMENT)], env=env) as process:
        yield process


def test_v2_infer_matches_in_process(server: ServerProcess, expected: list[dict[str, object]]) -> None:
    meta = requests.get(f"{server.url}/v2/models/sentiment", timeout=10).json()
    assert meta["inputs"] == [{"name": "input", "datatype": "BYTES", "shape": [-1, 1],
                               "parameters": {"content_type": "str"}}]
    assert meta["outputs"][0]["parameters"] == {"content_type": "json"}
    assert meta["parameters"]["signature"] == "str -> MovieSentiment"
    body = {"inputs": [{"name": "input", "datatype": "BYTES", "shape": [len(REVIEWS), 1], "data": REVIEWS}]}
    answer = requests.post(f"{server.url}/v2/models/sentiment/infer", json=body, timeout=10).json()
    output = answer["outputs"][0]
    assert output["shape"] == [len(REVIEWS)] and output["datatype"] == "BYTES"
    assert [orjson.loads(v) for v in output["data"]] == expected


def test_v2_with_tritonclient(server: ServerProcess, expected: list[dict[str, object]]) -> None:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    data = np.array([[r.encode()] for r in REVIEWS], dtype=object)
    tensor = httpclient.InferInput("input", list(data.shape), "BYTES")
    tensor.set_data_from_numpy(data, binary_data=True)
    result = client.infer("sentiment", [tensor], outputs=[httpclient.InferRequestedOutput("output", binary_data=True)])
    assert [orjson.loads(v) for v in result.as_numpy("output")] == expected
    client.close()


def test_predict_routes_match_in_process(server: ServerProcess, expected: list[dict[str, object]]) -> None:
    one = requests.post(f"{server.url}/predict/sentiment", json=REVIEWS[0], timeout=10)
    assert one.status_code == 200 and one.json() == expected[0]
    batch = requests.post(f"{server.url}/predict/batch/sentiment", json=REVIEWS, timeout=10)
    assert batch.json() == expected
    flask = requests.post(f"{server.url}/predict", json={"inputs": REVIEWS[:2]}, timeout=10)
    assert flask.json() == {"prediction": expected[:2]}


def test_concurrent_requests_are_batched_and_correct(server: ServerProcess, expected: list[dict[str, object]]) -> None:
    def call(i: int) -> object:
        return requests.post(f"{server.url}/predict/sentiment", json=REVIEWS[i % 4], timeout=30).json()

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(call, range(96)))
    assert answers == [expected[i % 4] for i in range(96)]
    stats = requests.get(f"{server.url}/v2/models/sentiment/stats", timeout=10).json()["model_stats"][0]
    assert stats["inference_count"] >= 96
    assert stats["execution_count"] <= stats["inference_count"]


def test_bad_input_names_the_problem_and_server_keeps_serving(server: ServerProcess, expected: list[dict[str, object]]) -> None:
    bad = requests.post(f"{server.url}/predict/sentiment", json={"text": 3}, timeout=10)
    assert bad.status_code == 400
    assert "invalid input" in bad.json()["error"] and "valid string" in bad.json()["error"]
    broken = requests.post(f"{server.url}/predict/sentiment", data=b"{not json", timeout=10)
    assert broken.status_code == 400 and "not valid JSON" in broken.json()["error"]
    not_list = requests.post(f"{server.url}/predict/batch/sentiment", json="x", timeout=10)
    assert not_list.status_code == 400 and "JSON list" in not_list.json()["error"]
    assert requests.post(f"{server.url}/predict/sentiment", json=REVIEWS[1], timeout=10).json() == expected[1]


def test_openapi_schemas_come_from_types(server: ServerProcess) -> None:
    document = requests.get(f"{server.url}/openapi.json", timeout=10).json()
    assert document["openapi"].startswith("3.")
    operation = document["paths"]["/predict/sentiment"]["post"]
    assert operation["requestBody"]["content"]["application/json"]["schema"] == {"type": "string"}
    response = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert response["required"] == ["label", "score"]
    assert response["properties"]["label"]["enum"] == ["positive", "negative"]
    batch = document["paths"]["/predict/batch/sentiment"]["post"]
    assert batch["requestBody"]["content"]["application/json"]["schema"] == {"type": "array", "items": {"type": "string"}}
