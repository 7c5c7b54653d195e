"""Schemathesis against the documents servekit serves: every operation of every
HTTP port's ``/openapi.json`` (V2 and its extensions, KServe V1, Seldon,
``/predict`` and a typed model, metrics, the docs page on the main port; TF
Serving REST on its port; TorchServe inference and management in TorchServe
mode), generated from the document as served by a real server.

Every answer must be no 5xx (but the ones an operation documents, such as
KServe V1's 501 for ``:explain``), carry a content type the document declares for
it, and match the document's schema for its status (each operation declares
its 200 and, as ``default``, its protocol's error form, so errors are held to
that form too). Afterwards the server still answers a good request.

Left out on purpose: ``POST /models`` (TorchServe's register fetches the
``url`` it is given: no test reaches outside 127.0.0.1), and the "schema-valid
request rejected" check (a body can fit the document and still not fit the
model). The repository load/unload and TorchServe management calls are fuzzed
without the management token (answered 401 in the protocol's form) on the
main server, and with it on the TorchServe one, where no model is registered.
``SERVEKIT_FUZZ_EXAMPLES`` raises the number of cases per operation (``make fuzz``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import checks as st_checks
from schemathesis.openapi import checks as _openapi_checks  # noqa: F401  (registers the OpenAPI checks)
from servers import ServerProcess, free_port
from test_openapi import make_repository

TOKEN = "fuzz-token"


def examples() -> int:
    value = os.environ.get("SERVEKIT_FUZZ_EXAMPLES", "")
    return int(value) if value.strip() else 6


CHECKS = [
    st_checks.content_type_conformance,
    st_checks.response_schema_conformance,
]
# answers that copy a peer byte for byte where the peer breaks its own content type:
# the schema checks cannot read them (their status is still checked)
PEER_QUIRKS = {
    "GET /version": "MLflow's scoring server answers its version as bare text labelled application/json",
}
FUZZ = settings(
    max_examples=examples(),
    deadline=None,  # never a timed assertion
    suppress_health_check=list(HealthCheck),
    phases=[Phase.generate],  # no shrinking: a failure is reported as found
    derandomize=True,
)


@pytest.fixture(scope="module")
def main_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = make_repository(tmp_path_factory.mktemp("repo"))
    tf_port = free_port()
    with ServerProcess(["serve", str(root), "--no-enable-grpc", "--rest_api_port", str(tf_port),
                        "--management-token", TOKEN], extra_ports={"tf": tf_port}) as process:
        yield process
        assert "Traceback" not in process.log(), process.log()
        good = requests.post(f"{process.url}/v2/models/iris/infer", timeout=30, json={
            "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [5.1, 3.5, 1.4, 0.2]}]})
        assert good.status_code == 200 and good.json()["outputs"][0]["data"] == [0], good.text
        typed = requests.post(f"{process.url}/predict/guess", json={"petal_length": 1, "petal_width": 0.2},
                              timeout=30)
        assert typed.json()["best"] == "setosa", typed.text


@pytest.fixture(scope="module")
def torchserve_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    store = tmp_path_factory.mktemp("store")
    management = free_port()
    with ServerProcess(["serve", "--model-store", str(store), "--management-port", str(management),
                        "--management-token", TOKEN, "--no-enable-grpc"], cwd=store, ready_path="/ping",
                       extra_ports={"management": management}) as process:
        yield process
        assert "Traceback" not in process.log(), process.log()
        assert requests.get(f"{process.url}/ping", timeout=30).json()["status"] == "Healthy"


def served(port: int) -> Any:
    return schemathesis.openapi.from_url(f"http://127.0.0.1:{port}/openapi.json")


@pytest.fixture(scope="module")
def session() -> Iterator[requests.Session]:
    with requests.Session() as each:
        yield each


def fuzz(schema: Any, session: requests.Session, headers: dict[str, str] | None = None) -> None:
    """Every operation of ``schema``: its documented examples, then generated cases.
    Failures of all operations are gathered and reported together."""
    failures: list[str] = []
    count = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        strategies = [operation.as_strategy(), *operation.get_strategies_from_examples()]

        @FUZZ
        @given(case=st.one_of(strategies))
        def run(case: Any) -> None:
            response = case.call(session=session, timeout=30, headers=headers)
            documented = case.operation.definition.raw["responses"]
            assert response.status_code < 500 or str(response.status_code) in documented, (
                f"{response.status_code} {response.text[:500]}\n{case.as_curl_command()}")
            if case.operation.label not in PEER_QUIRKS:
                case.validate_response(response, checks=CHECKS)

        try:
            run()
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # one operation's failure is reported with the others'
            failures.append(f"{operation.label}: {exc}")
        count += 1
    assert count > 0
    assert not failures, "\n\n".join(failures)


def test_main_port(main_server: ServerProcess, session: requests.Session) -> None:
    fuzz(served(main_server.http_port), session)


def test_tf_serving_port(main_server: ServerProcess, session: requests.Session) -> None:
    fuzz(served(main_server.ports["tf"]), session)


def test_metrics_port(main_server: ServerProcess, session: requests.Session) -> None:
    fuzz(served(main_server.metrics_port), session)


def test_torchserve_inference(torchserve_server: ServerProcess, session: requests.Session) -> None:
    fuzz(served(torchserve_server.http_port), session)


def test_torchserve_management(torchserve_server: ServerProcess, session: requests.Session) -> None:
    schema = served(torchserve_server.ports["management"]).exclude(method="POST", path_regex=r"^/models/?$")
    fuzz(schema, session, {"Authorization": f"Bearer {TOKEN}"})


def test_the_documents_examples_reach_the_models(main_server: ServerProcess, session: requests.Session) -> None:
    """The iris example, sent as the document gives it, answers 200 in the documented form."""
    schema = served(main_server.http_port)
    operation = schema["/v2/models/{model}/infer"]["POST"]
    case = operation.Case(path_parameters={"model": "iris"}, media_type="application/json",
                          body={"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64",
                                            "data": [0, 0, 0, 0]}]})
    response = case.call(session=session, timeout=30)
    case.validate_response(response, checks=CHECKS)
    assert response.status_code == 200 and response.json()["model_name"] == "iris"
