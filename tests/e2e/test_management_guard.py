"""Calls that change what is served need the management token when one is
configured, on every port and protocol; names are checked at the edge."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import tritonclient.grpc as grpcclient
from servers import ServerProcess
from tritonclient.utils import InferenceServerException

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def guarded(iris_repository: Path) -> Iterator[ServerProcess]:
    with ServerProcess(["serve", str(iris_repository)], env={"SERVEKIT_MANAGEMENT_TOKEN": TOKEN}) as proc:
        yield proc


def test_v2_rest_load_and_unload_need_the_token(guarded: ServerProcess) -> None:
    for action in ("unload", "load"):
        refused = requests.post(f"{guarded.url}/v2/repository/models/iris/{action}", timeout=30)
        assert refused.status_code == 401
        assert "Bearer" in refused.json()["error"]
        wrong = requests.post(f"{guarded.url}/v2/repository/models/iris/{action}",
                              headers={"Authorization": "Bearer nope"}, timeout=30)
        assert wrong.status_code == 401
    # nothing changed: the model still answers
    body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [5.1, 3.5, 1.4, 0.2]}]}
    assert requests.post(f"{guarded.url}/v2/models/iris/infer", json=body, timeout=30).status_code == 200
    ok = requests.post(f"{guarded.url}/v2/repository/models/iris/unload",
                       headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    assert ok.status_code == 200 and ok.json()["state"] == "UNLOADED"
    ok = requests.post(f"{guarded.url}/v2/repository/models/iris/load",
                       headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    assert ok.status_code == 200 and ok.json()["state"] == "READY"


def test_v2_grpc_load_and_unload_need_the_token(guarded: ServerProcess) -> None:
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{guarded.grpc_port}")
    with pytest.raises(InferenceServerException) as refused:
        client.unload_model("iris")
    assert "StatusCode.UNAUTHENTICATED" in str(refused.value.status())
    assert client.is_model_ready("iris")
    client.unload_model("iris", headers={"authorization": f"Bearer {TOKEN}"})
    assert not client.is_model_ready("iris")
    client.load_model("iris", headers={"authorization": f"Bearer {TOKEN}"})
    assert client.is_model_ready("iris")


@pytest.mark.parametrize("name", ["q%0Aunload%20echo", "a" * 200, "-x", "caf%C3%A9"])
def test_invalid_names_are_refused_at_the_edge(guarded: ServerProcess, name: str) -> None:
    response = requests.post(f"{guarded.url}/v2/repository/models/{name}/load",
                             headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    assert response.status_code == 400
    assert "letters, digits" in response.json()["error"]
