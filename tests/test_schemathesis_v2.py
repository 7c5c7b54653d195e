"""Schemathesis against the Open Inference Protocol's own REST OpenAPI document
(``tests/specs/open_inference_rest.yaml``, Apache-2.0, from
kserve/open-inference-protocol, vendored verbatim as test data).

Two schemas are generated from it: the document as published (model names and
versions are arbitrary strings: the 404 paths, name checks and error forms) and
the same document with the path parameters pinned to the served model
``iris`` version ``1``, so that the generated inference bodies reach the model.
Every answer must be no 5xx, carry the declared content type, match the
document's response schema where one is declared (the ``{"error": …}`` object
on 400), answer undeclared methods 405 with an ``Allow`` header; and the
server must still answer a good request afterwards.

Checks left out, on purpose: undocumented status codes (the document lists
only 200/400; 404 for an unknown model or version and 413/503 are the
protocol's meaning) and "schema-valid request rejected" (a body can be valid
for the document and still wrong for the model, e.g. ``inputs: []``).
``SERVEKIT_FUZZ_EXAMPLES`` raises the number of cases (``make fuzz``).
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import pytest
import requests
import schemathesis
import yaml
from hypothesis import HealthCheck, settings
from schemathesis import checks as st_checks
from schemathesis.openapi import checks as _openapi_checks  # noqa: F401  (registers the OpenAPI checks)
from servers import ServerProcess
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

SPEC = Path(__file__).parent / "specs" / "open_inference_rest.yaml"


def load_spec() -> dict[str, Any]:
    # the published document writes path templates as ``${NAME}``; OpenAPI's are ``{NAME}``
    return dict(yaml.safe_load(SPEC.read_text().replace("${", "{")))


def pinned(document: dict[str, Any]) -> dict[str, Any]:
    """The document with MODEL_NAME and MODEL_VERSION limited to the served model."""
    out = copy.deepcopy(document)
    for item in out["paths"].values():
        for parameter in item.get("parameters", []):
            value = {"MODEL_NAME": "iris", "MODEL_VERSION": "1"}.get(parameter["name"])
            if value is not None:
                parameter["schema"]["enum"] = [value]
    return out


def examples() -> int:
    value = os.environ.get("SERVEKIT_FUZZ_EXAMPLES", "")
    return int(value) if value.strip() else 60


AS_PUBLISHED = schemathesis.openapi.from_dict(load_spec())
ON_IRIS = schemathesis.openapi.from_dict(pinned(load_spec()))
CHECKS = [
    st_checks.not_a_server_error,
    st_checks.content_type_conformance,
    st_checks.response_schema_conformance,
    st_checks.unsupported_method,
]
FUZZ = settings(
    max_examples=examples(),
    deadline=None,  # never a timed assertion
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("oip")
    X, y = load_iris(return_X_y=True)
    (root / "iris").mkdir()
    joblib.dump(LogisticRegression(max_iter=500).fit(X, y), root / "iris" / "model.joblib")
    (root / "iris" / "model-settings.json").write_text(json.dumps(
        {"name": "iris", "implementation": "sklearn", "parameters": {"uri": "model.joblib", "version": "1"}}))
    with ServerProcess(["serve", str(root), "--no-enable-grpc"]) as proc:
        yield proc
        assert "Traceback" not in proc.log(), proc.log()
        good = requests.post(f"{proc.url}/v2/models/iris/versions/1/infer", timeout=10, json={
            "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [5.1, 3.5, 1.4, 0.2]}]})
        assert good.status_code == 200 and good.json()["outputs"][0]["data"] == [0]


@pytest.fixture(scope="module")
def session() -> Iterator[requests.Session]:
    with requests.Session() as each:
        yield each


def check(case: Any, server: ServerProcess, session: requests.Session) -> None:
    response = case.call(base_url=server.url, session=session, timeout=30)
    case.validate_response(response, checks=CHECKS)
    if response.status_code >= 400:
        body = response.json()
        assert isinstance(body.get("error"), str) and body["error"], response.text


@AS_PUBLISHED.parametrize()
@FUZZ
def test_open_inference_rest_as_published(case: Any, server: ServerProcess, session: requests.Session) -> None:
    check(case, server, session)


@ON_IRIS.parametrize()
@FUZZ
def test_open_inference_rest_on_a_served_model(case: Any, server: ServerProcess, session: requests.Session) -> None:
    check(case, server, session)


def test_the_served_model_answers_the_documents_paths(server: ServerProcess) -> None:
    """The paths as the document writes them, with a trailing slash on /v2/."""
    meta = requests.get(f"{server.url}/v2/", timeout=10).json()
    assert meta["name"] == "servekit" and isinstance(meta["extensions"], list)
    model = requests.get(f"{server.url}/v2/models/iris/versions/1", timeout=10).json()
    assert model["name"] == "iris" and model["versions"] == ["1"]
    refused = requests.request("TRACE", f"{server.url}/v2/models/iris/versions/1/infer", timeout=10)
    assert refused.status_code == 405 and refused.headers["allow"] == "POST"
    assert refused.json() == {"error": "TRACE is not allowed on /v2/models/iris/versions/1/infer; use POST"}
    live = requests.delete(f"{server.url}/v2/health/live", timeout=10)
    assert live.status_code == 405 and live.headers["allow"] == "GET, HEAD"


def test_a_successful_inference_matches_the_documents_response_schema(
        server: ServerProcess, session: requests.Session) -> None:
    """Generated bodies seldom fit the model; this one does, and its answer must
    match ``inference_response`` (no null version or parameters)."""
    operation = ON_IRIS["/v2/models/{MODEL_NAME}/versions/{MODEL_VERSION}/infer"]["POST"]
    case = operation.Case(
        path_parameters={"MODEL_NAME": "iris", "MODEL_VERSION": "1"},
        body={"id": "a", "inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32",
                                     "data": [5.1, 3.5, 1.4, 0.2, 6.7, 3.0, 5.2, 2.3]}]},
        media_type="application/json",
    )
    response = case.call(base_url=server.url, session=session, timeout=30)
    case.validate_response(response, checks=CHECKS)
    body = response.json()
    assert body["model_name"] == "iris" and body["model_version"] == "1" and body["id"] == "a"
    assert body["outputs"][0]["data"] == [0, 2] and "parameters" not in body
