"""PyTorch models in every saved form answer V2 requests with the numbers the
model itself gives (state dict, checkpoint dict, TorchScript, torch.export)."""

from __future__ import annotations

import textwrap
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from servers import ServerProcess

torch = pytest.importorskip("torch")

# the network of the PyTorch recipe (chapter 23.3), saved the ways users save it
MODEL_PY = '''
import torch


class SimpleNeuralNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.sequential = torch.nn.Sequential(
            torch.nn.Linear(10, 16), torch.nn.ReLU(),
            torch.nn.Linear(16, 16), torch.nn.ReLU(),
            torch.nn.Linear(16, 1), torch.nn.Dropout(0.1), torch.nn.Sigmoid(),
        )

    def forward(self, x):
        return self.sequential(x)
'''

FEATURES = np.random.default_rng(3).normal(size=(3, 10)).astype(np.float32)


def build_models(root: Path) -> Any:
    import importlib.util
    import sys

    (root / "simple_net.py").write_text(textwrap.dedent(MODEL_PY))
    spec = importlib.util.spec_from_file_location("simple_net_for_tests", root / "simple_net.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)  # the same class the server imports
    torch.manual_seed(0)
    network = module.SimpleNeuralNet()
    network.eval()
    for name in ("state", "checkpoint"):
        (root / name).mkdir(parents=True)
        (root / name / "model.py").write_text(textwrap.dedent(MODEL_PY))
    torch.save(network.state_dict(), root / "state" / "model.pth")
    # as after torch.compile(network): every key starts with _orig_mod.
    compiled_keys = {f"_orig_mod.{k}": v for k, v in network.state_dict().items()}
    optimizer = torch.optim.RMSprop(network.parameters())
    torch.save(
        {"epoch": 4, "model_state_dict": compiled_keys,
         "optimizer_state_dict": optimizer.state_dict(), "loss": torch.tensor(0.25)},
        root / "checkpoint" / "model.pt",
    )
    (root / "script").mkdir()
    with warnings.catch_warnings():  # torch 2.14 deprecates TorchScript; its files still load
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(network).save(str(root / "script" / "model.pt"))
    (root / "export").mkdir()
    program = torch.export.export(network, (torch.from_numpy(FEATURES),),
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, str(root / "export" / "model.pt2"))
    return network


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("torch-models")
    network = build_models(root)
    with ServerProcess(["serve", str(root)]) as server:
        yield server, network


def infer(server: ServerProcess, model: str, data: Any, datatype: str = "FP32") -> requests.Response:
    array = np.asarray(data)
    body = {"inputs": [{"name": "x", "shape": list(array.shape), "datatype": datatype,
                        "data": array.ravel().tolist()}]}
    return requests.post(f"{server.url}/v2/models/{model}/infer", json=body, timeout=30)


@pytest.mark.parametrize("model", ["state", "checkpoint", "script", "export"])
def test_every_format_gives_the_models_numbers(served: Any, model: str) -> None:
    server, network = served
    with torch.inference_mode():
        expected = network(torch.from_numpy(FEATURES)).numpy()
    response = infer(server, model, FEATURES)
    assert response.status_code == 200, response.text
    output = response.json()["outputs"][0]
    assert output["shape"] == [3, 1] and output["datatype"] == "FP32"
    np.testing.assert_allclose(np.asarray(output["data"]).reshape(3, 1), expected, atol=1e-5)


def test_fp64_and_small_integers_are_cast_to_float32(served: Any) -> None:
    server, network = served
    with torch.inference_mode():
        expected = network(torch.from_numpy(FEATURES.astype(np.float64).astype(np.float32))).numpy()
        expected_ints = network(torch.arange(10, dtype=torch.float32).reshape(1, 10)).numpy()
    response = infer(server, "state", FEATURES.astype(np.float64), "FP64")
    np.testing.assert_allclose(np.asarray(response.json()["outputs"][0]["data"]).reshape(3, 1), expected, atol=1e-5)
    response = infer(server, "script", np.arange(10).reshape(1, 10), "INT64")
    np.testing.assert_allclose(response.json()["outputs"][0]["data"], expected_ints.ravel(), atol=1e-5)


def test_unsafe_or_wrong_inputs_are_refused_clearly(served: Any) -> None:
    server, _ = served
    too_big = infer(server, "state", np.full((1, 10), 2**30), "INT64")
    assert too_big.status_code == 400 and "cannot represent exactly" in too_big.json()["error"]
    text = infer(server, "state", np.asarray([["a"] * 10]), "BYTES")
    assert text.status_code == 400 and "BYTES" in text.json()["error"]
    shape = infer(server, "checkpoint", np.zeros((2, 7), dtype=np.float32))
    assert shape.status_code == 400 and "rejected inputs x[2, 7]" in shape.json()["error"]
    assert infer(server, "export", FEATURES).status_code == 200  # still serving


def test_torchserve_predictions_on_a_plain_torch_model(served: Any) -> None:
    server, network = served
    with torch.inference_mode():
        expected = network(torch.from_numpy(FEATURES[:1])).numpy()
    response = requests.post(f"{server.url}/predictions/state", json=FEATURES[:1].tolist(), timeout=30)
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(response.json(), expected, atol=1e-5)
