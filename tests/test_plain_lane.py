"""The data plane's plain lane (DataPlane.express with a protocol's ``Plain``):
V2 REST's commonest request, one input and nothing else, decoded whole in C
and answered from the runtime's ``plain_output`` without request or response
objects. It must answer byte for byte what the awaited path answers, count
what it counts, and step aside, having done nothing, for what it does not
cover."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import orjson
import pytest
import requests
from servers import ServerProcess
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits, load_iris
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.tree import DecisionTreeClassifier

from servekit.config import ModelParameters, ModelSettings, ServerSettings
from servekit.dataplane import DataPlane, ModelFailed, Plain, Target
from servekit.errors import InvalidInput
from servekit.library.prediction_cache import LRUCache
from servekit.protocols import json_numbers, v2_rest
from servekit.registry import Registry
from servekit.server.metrics import Metrics

DIGITS = load_digits()
IRIS = load_iris()


def _model(root: Path, name: str, estimator: Any, **extra: Any) -> None:
    (root / name).mkdir()
    joblib.dump(estimator, root / name / "model.joblib")
    (root / name / "model-settings.json").write_text(json.dumps({
        "name": name, "implementation": "sklearn",
        "parameters": {"uri": "model.joblib", "version": "1", "extra": extra}}))


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("plain")
    cancer, diabetes = load_breast_cancer(), load_diabetes()
    _model(root, "digits", LogisticRegression(max_iter=300).fit(DIGITS.data, DIGITS.target))
    _model(root, "named", LogisticRegression(max_iter=500).fit(IRIS.data, IRIS.target_names[IRIS.target]))
    _model(root, "binary", LogisticRegression(max_iter=5000).fit(cancer.data, cancer.target))
    _model(root, "reg", Ridge().fit(diabetes.data, diabetes.target))
    _model(root, "proba", LogisticRegression(max_iter=300).fit(DIGITS.data, DIGITS.target),
           default_output="predict_proba")
    _model(root, "tree", DecisionTreeClassifier(random_state=0).fit(IRIS.data, IRIS.target))
    return root


@pytest.fixture(scope="module")
def server(repository: Path) -> Iterator[ServerProcess]:
    # calls run inline (so express) after a model's first call, whatever this machine's speed
    with ServerProcess(["serve", str(repository), "--inline-predict-ms", "60000"]) as process:
        for name in ("digits", "named", "binary", "reg", "proba", "tree"):  # a first call runs in a thread
            width = {"binary": 30, "reg": 10, "named": 4, "tree": 4}.get(name, 64)
            reply = requests.post(f"{process.url}/v2/models/{name}/infer", json=one(np.zeros((1, width))),
                                  timeout=30)
            assert reply.status_code == 200, reply.text
        yield process


@pytest.fixture(scope="module")
def url(server: ServerProcess) -> str:
    return server.url


def one(rows: np.ndarray, datatype: str = "FP64", **document: Any) -> dict[str, Any]:
    data = rows.astype(bool if datatype == "BOOL" else int if datatype == "INT64" else float).tolist()
    return {**document, "inputs": [{"name": "x", "shape": list(rows.shape), "datatype": datatype, "data": data}]}


def both(url: str, path: str, document: dict[str, Any] | bytes, **headers: str) -> tuple[Any, Any]:
    """The same request through the express path and the awaited one (which
    a deadline header sends it to)."""
    raw = document if isinstance(document, bytes) else orjson.dumps(document)
    send = {"content-type": "application/json", "accept-encoding": "identity", **headers}
    express = requests.post(url + path, data=raw, headers=send, timeout=30)
    awaited = requests.post(url + path, data=raw, headers={**send, "x-request-timeout": "600"}, timeout=30)
    return express, awaited


def same(express: Any, awaited: Any, made_id: bool = False) -> bytes:
    """Both answers alike; with ``made_id``, apart from the id each server call made (given in the header)."""
    assert express.status_code == awaited.status_code
    assert express.headers["content-type"] == awaited.headers["content-type"]
    assert express.headers.get("content-encoding") == awaited.headers.get("content-encoding")
    if made_id:
        ids = express.headers["x-request-id"], awaited.headers["x-request-id"]
        assert ids[0] != ids[1]
        assert express.content.replace(ids[0].encode(), b"ID") == awaited.content.replace(ids[1].encode(), b"ID")
    else:
        assert express.content == awaited.content
        assert express.headers["x-request-id"] == awaited.headers["x-request-id"]
    return bytes(express.content)


CASES = [
    ("digits", one(DIGITS.data[:1], id="r-1")),
    ("digits", one(DIGITS.data[:5], "INT64", id="r-2")),
    ("digits", one(DIGITS.data[7:8], "FP32", id="r-3")),
    ("digits", one(DIGITS.data[:3] > 8, "BOOL", id="r-4")),
    ("digits", one(DIGITS.data[:64] / 7, id="sixty-four rows")),
    ("digits", one(DIGITS.data[:65], id="65 rows: never inline")),
    ("named", one(IRIS.data[::30], id="string labels")),
    ("binary", one(load_breast_cancer().data[:4], id="two classes")),
    ("reg", one(load_diabetes().data[:3], id="a regressor")),
    ("proba", one(DIGITS.data[:2], id="probabilities by default")),
    ("tree", one(IRIS.data[:6], id="a tree")),
    ("digits", one(DIGITS.data[:1], id="é ünicode, spaces and a % sign")),
    ("digits", one(DIGITS.data[:1], id="")),
    ("digits", one(DIGITS.data[:1, :63], id="one feature short")),
    ("digits", one(DIGITS.data[:1].reshape(8, 8), id="an image, not a row")),
    ("digits", one(DIGITS.data[:0], id="no rows")),
    ("digits", one(DIGITS.data[:1].reshape(1, 1, 64), id="three dimensions")),
]


@pytest.mark.parametrize(("model", "document"), CASES, ids=[str(c[1].get("id")) for c in CASES])
def test_the_plain_lane_answers_byte_for_byte_as_the_awaited_path(url: str, model: str,
                                                                   document: dict[str, Any]) -> None:
    body = same(*both(url, f"/v2/models/{model}/infer", document), made_id=not document["id"])
    answer = orjson.loads(body)
    if "outputs" in answer:
        assert answer["id"] == document["id"] or (document["id"] == "" and answer["id"])
        rows = len(document["inputs"][0]["data"])
        assert answer["outputs"][0]["shape"][0] == rows


def test_what_the_plain_lane_answers_is_the_models_own_prediction(url: str) -> None:
    rows = DIGITS.data[10:14]
    express, awaited = both(url, "/v2/models/digits/versions/1/infer", one(rows, id="v"))
    answer = orjson.loads(same(express, awaited))
    model = LogisticRegression(max_iter=300).fit(DIGITS.data, DIGITS.target)
    assert answer == {
        "model_name": "digits", "model_version": "1", "id": "v",
        "outputs": [{"name": "predict", "shape": [4, 1], "datatype": "INT64", "parameters": {"content_type": "np"},
                     "data": model.predict(rows).tolist()}],
    }
    named = orjson.loads(same(*both(url, "/v2/models/named/infer", one(IRIS.data[[0, 60, 120]], id="n"))))
    assert named["outputs"][0]["datatype"] == "BYTES"
    assert named["outputs"][0]["data"] == ["setosa", "versicolor", "virginica"]


def test_ids_from_the_header_the_body_or_made_by_the_server(url: str) -> None:
    path = "/v2/models/digits/infer"
    given = same(*both(url, path, one(DIGITS.data[:1], id="body-id"), **{"x-request-id": "header-id"}))
    assert orjson.loads(given)["id"] == "body-id"
    express, awaited = both(url, path, one(DIGITS.data[:1]), **{"x-request-id": "header-id"})
    assert orjson.loads(same(express, awaited))["id"] == "header-id"
    express, awaited = both(url, path, one(DIGITS.data[:1]))
    same(express, awaited, made_id=True)
    made = orjson.loads(express.content)["id"]
    assert made == express.headers["x-request-id"] and len(made) == 36
    assert orjson.loads(awaited.content)["id"] == awaited.headers["x-request-id"] != made
    escaped = both(url, path, one(DIGITS.data[:1], id="a b\u00e9%"))[0]
    assert orjson.loads(escaped.content)["id"] == "a b\u00e9%"
    assert escaped.headers["x-request-id"] == "a%20b%C3%A9%25"


def test_a_large_answer_is_compressed_as_the_client_accepts(url: str) -> None:
    document = one(DIGITS.data[:60], id="gz")
    express, awaited = both(url, "/v2/models/proba/infer", document, **{"accept-encoding": "gzip"})
    assert express.headers["content-encoding"] == awaited.headers["content-encoding"] == "gzip"
    express_raw = requests.post(url + "/v2/models/proba/infer", data=orjson.dumps(document),
                                headers={"accept-encoding": "gzip"}, stream=True, timeout=30).raw.read()
    answer = orjson.loads(gzip.decompress(express_raw))
    assert answer["outputs"][0]["shape"] == [60, 10]
    assert express.content == awaited.content


def test_the_plain_lane_is_counted_in_statistics_and_metrics(server: ServerProcess) -> None:
    def counted() -> tuple[int, float]:
        stats = requests.get(f"{server.url}/v2/models/reg/versions/1/stats", timeout=10).json()["model_stats"][0]
        metrics = requests.get(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10).text
        line = [m for m in metrics.splitlines() if m.startswith("servekit_model_requests_total{")
                and 'model="reg"' in m and 'protocol="v2"' in m]
        return stats["inference_stats"]["success"]["count"], float(line[0].rsplit(" ", 1)[1]) if line else 0.0

    before = counted()
    for _ in range(3):
        reply = requests.post(f"{server.url}/v2/models/reg/infer", json=one(load_diabetes().data[:2]), timeout=10)
        assert reply.status_code == 200
    after = counted()
    assert after[0] - before[0] == 3 and after[1] - before[1] == 3


# -- the data plane, in process -------------------------------------------------
def settings(name: str, folder: Path) -> ModelSettings:
    return ModelSettings(name=name, implementation="sklearn",
                         parameters=ModelParameters(uri=str(folder / name / "model.joblib"), version="1"))


async def plane(repository: Path, *names: str) -> DataPlane:
    registry = Registry(ServerSettings(inline_predict_ms=60_000))  # inline after one call, on any machine
    for name in names:
        await registry.load(settings(name, repository))
    return DataPlane(registry, Metrics(), cache_factory=LRUCache)


def body(rows: np.ndarray, **document: Any) -> bytes:
    return orjson.dumps(one(rows, **document))


def test_the_express_step_takes_the_plain_lane_and_counts_it(repository: Path) -> None:
    async def scenario() -> None:
        dataplane = await plane(repository, "digits")
        model = dataplane.resolve(Target("digits"))
        runtime: Any = model.runtime
        assert model.batcher is not None
        await dataplane.serve(Target("digits"), v2_rest._decode(body(DIGITS.data[:1])), lambda r: r, protocol="v2")
        calls: list[int] = []
        plain_output = runtime.plain_output

        def counting(features: np.ndarray) -> Any:
            calls.append(len(features))
            return plain_output(features)

        runtime.plain_output = counting
        stats = model.batcher.stats
        before = stats.success_count
        answer = dataplane.express(Target("digits"), v2_rest._decode, body(DIGITS.data[:3], id="p"),
                                   v2_rest._answer, protocol="v2", plain=v2_rest._PLAIN)
        assert answer is not None and calls == [3]
        assert orjson.loads(answer.body)["outputs"][0]["data"] == DIGITS.target[:3].tolist()
        assert stats.success_count == before + 1 and stats.batch_sizes[1] == before + 1
        assert dataplane.metrics.registry.get_sample_value(
            "servekit_model_requests_total", {"model": "digits", "version": "1", "protocol": "v2"}) == 2  # and serve's
        # other bodies go the general way: still answered, not by the lane
        for other in (body(DIGITS.data[:1], parameters={"a": 1}), body(DIGITS.data[:1, :10]),
                      orjson.dumps({"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP64",
                                                "data": DIGITS.data[:1].tolist()}], "outputs": [{"name": "predict"}]})):
            with contextlib.suppress(InvalidInput):  # the general path's own error for the narrow table
                dataplane.express(Target("digits"), v2_rest._decode, other, v2_rest._answer, protocol="v2",
                                  plain=v2_rest._PLAIN)
        assert calls == [3]

    asyncio.run(scenario())


def test_the_plain_lane_steps_aside_having_done_nothing(repository: Path) -> None:
    async def scenario() -> None:
        dataplane = await plane(repository, "digits")
        model = dataplane.resolve(Target("digits"))
        assert model.batcher is not None
        first = dataplane.express(Target("digits"), v2_rest._decode, body(DIGITS.data[:1]), v2_rest._answer,
                                  protocol="v2", plain=v2_rest._PLAIN)
        assert first is None  # the first call runs in a thread: its cost is not known yet
        await dataplane.serve(Target("digits"), v2_rest._decode(body(DIGITS.data[:1])), lambda r: r, protocol="v2")
        stats = model.batcher.stats
        before = stats.inference_count
        model.batcher._direct = True  # a call of it is running: a new one must queue
        assert dataplane.express(Target("digits"), v2_rest._decode, body(DIGITS.data[:1]), v2_rest._answer,
                                 protocol="v2", plain=v2_rest._PLAIN) is None
        model.batcher._direct = False
        # more rows than run inline: the awaited path runs it in a thread
        assert model.batcher.run_plain(lambda x: x, DIGITS.data[:65]) is None
        decoded: list[str] = []

        def general(raw: bytes) -> Any:
            decoded.append("general")
            return v2_rest._decode(raw)

        def plain_decode(raw: bytes) -> Any:
            decoded.append("plain")
            return json_numbers.plain_input(raw)

        counting = Plain(plain_decode, v2_rest._answer_output)
        assert dataplane.express(Target("digits"), general, body(DIGITS.data[:65]), v2_rest._answer,
                                 protocol="v2", plain=counting) is None
        assert decoded == ["plain"]  # not decoded again on the way to the awaited path
        assert stats.inference_count == before

    asyncio.run(scenario())


def test_a_model_raising_in_the_plain_lane_is_counted_and_named_with_the_request_id(repository: Path) -> None:
    async def scenario() -> None:
        dataplane = await plane(repository, "digits")
        model = dataplane.resolve(Target("digits"))
        runtime: Any = model.runtime
        await dataplane.serve(Target("digits"), v2_rest._decode(body(DIGITS.data[:1])), lambda r: r, protocol="v2")

        def fail(features: np.ndarray) -> Any:
            raise RuntimeError("bad weights")

        runtime.plain_output = fail
        with pytest.raises(ModelFailed) as failure:
            dataplane.express(Target("digits"), v2_rest._decode, body(DIGITS.data[:1], id="r-9"), v2_rest._answer,
                              protocol="v2", plain=v2_rest._PLAIN)
        assert failure.value.message == ("model 'digits' raised RuntimeError: bad weights (request id r-9; the "
                                         "traceback is in the server log)")
        assert dataplane.metrics.registry.get_sample_value(
            "servekit_model_request_failures_total",
            {"model": "digits", "version": "1", "protocol": "v2", "status": "500"}) == 1
        assert model.batcher is not None and model.batcher.stats.fail_count == 1

    asyncio.run(scenario())
