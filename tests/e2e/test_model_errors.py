"""A model that raises answers with the exception's type and message and a
request id, with the same status in every protocol, each in its own form."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
from servers import ServerProcess, free_port
from tritonclient.utils import InferenceServerException

RAISER = '''
from servekit.runtimes.base import Runtime


class Raiser(Runtime):
    def predict(self, request):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied (1x9 and 10x16)")
'''
MESSAGE = "model 'raiser' raised RuntimeError: mat1 and mat2 shapes cannot be multiplied (1x9 and 10x16)"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("raiser")
    (root / "raiser").mkdir()
    (root / "raiser" / "raiser.py").write_text(RAISER)
    (root / "raiser" / "model-settings.json").write_text(json.dumps(
        {"name": "raiser", "implementation": "raiser.Raiser"}))
    with ServerProcess(["serve", str(root)]) as proc:
        yield proc


def test_v2_rest(served: ServerProcess) -> None:
    body = {"id": "abc-1", "inputs": [{"name": "x", "shape": [1, 9], "datatype": "FP64", "data": [0] * 9}]}
    response = requests.post(f"{served.url}/v2/models/raiser/infer", json=body, timeout=30)
    assert response.status_code == 500
    assert response.json() == {"error": MESSAGE + " (request id abc-1; the traceback is in the server log)"}
    assert "Model 'raiser' failed on request abc-1" in served.log()
    assert "Traceback" in served.log()


def test_v2_grpc(served: ServerProcess) -> None:
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{served.grpc_port}")
    tensor = grpcclient.InferInput("x", [1, 9], "FP64")
    tensor.set_data_from_numpy(np.zeros((1, 9)))
    with pytest.raises(InferenceServerException) as failure:
        client.infer("raiser", [tensor])
    assert "StatusCode.INTERNAL" in str(failure.value.status())
    assert MESSAGE in failure.value.message()


def test_seldon_and_plain_predict(served: ServerProcess) -> None:
    seldon = requests.post(f"{served.url}/api/v1.0/predictions", json={"data": {"ndarray": [[0] * 9]}}, timeout=30)
    assert seldon.status_code == 500
    status = seldon.json()["status"]
    assert status["reason"] == "MICROSERVICE_INTERNAL_ERROR" and status["info"].startswith(MESSAGE)
    plain = requests.post(f"{served.url}/predict/raiser", json={"inputs": [[0] * 9]}, timeout=30)
    assert plain.status_code == 500 and plain.json()["error"].startswith(MESSAGE)


def test_torchserve_predictions(served: ServerProcess) -> None:
    response = requests.post(f"{served.url}/predictions/raiser", json=[[0] * 9], timeout=30)
    assert response.status_code == 500
    body = response.json()
    assert body["code"] == 500 and body["type"] == "InternalServerException"
    assert body["message"].startswith(MESSAGE)


def test_tfserving_rest(served: ServerProcess) -> None:
    repository = Path(served.args[1])
    port = free_port()
    with ServerProcess(["serve", str(repository), "--rest-api-port", str(port), "--no-enable-grpc"]) as proc:
        assert proc.proc is not None
        response = requests.post(f"http://127.0.0.1:{port}/v1/models/raiser:predict",
                                 json={"instances": [[0] * 9]}, timeout=30)
    assert response.status_code == 500
    assert response.json()["error"].startswith(MESSAGE)
