"""TorchServe's built-in handlers object_detector, image_segmenter and
text_classifier (issue 12): archives made here with small models whose
answers are known, registered and called through a real server."""

from __future__ import annotations

import io
import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from servers import ServerProcess, free_port

from servekit.cli import main

torch = pytest.importorskip("torch")
Image = pytest.importorskip("PIL.Image")

# a "detector" that finds the bright rectangle of an image (score 0.9) and
# always reports a faint box (score 0.2, under the handler's threshold)
DETECTOR_PY = '''
import torch
from torch import nn


class BrightBoxDetector(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, images):
        out = []
        for image in images:
            ys, xs = torch.nonzero(image.mean(0) > 0.5, as_tuple=True)
            box = torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float() * self.scale
            out.append({"boxes": torch.stack([box, torch.tensor([0.0, 0.0, 1.0, 1.0])]),
                        "labels": torch.tensor([1, 3]), "scores": torch.tensor([0.9, 0.2])})
        return out
'''

# a "segmenter" whose class scores per pixel are the normalised colour channels
SEGMENTER_PY = '''
import torch
from torch import nn


class ChannelSegmenter(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x):
        return {"out": x * self.scale}
'''

# AG_NEWS-style: EmbeddingBag over token ids (with offsets), then a linear layer
TEXT_PY = '''
import torch
from torch import nn


class TextSentiment(nn.Module):
    def __init__(self, vocab_size=6, embed_dim=3, num_class=3):
        super().__init__()
        self.embedding = nn.EmbeddingBag(vocab_size, embed_dim, mode="sum")
        self.fc = nn.Linear(embed_dim, num_class)

    def forward(self, text, offsets):
        return self.fc(self.embedding(text, offsets))
'''

NEEDS_TORCHVISION_PY = '''
import torchvision  # noqa: F401
from torch import nn


class Model(nn.Module):
    def forward(self, x):
        return x
'''


def load_module(path: Path, name: str) -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def archive(folder: Path, name: str, handler: str, model: Any, store: Path, extra: list[Path] | None = None) -> None:
    torch.save(model.state_dict(), folder / f"{name}.pth")
    args = ["archive", "--model-name", name, "--version", "1.0", "--model-file", str(folder / "model.py"),
            "--serialized-file", str(folder / f"{name}.pth"), "--handler", handler, "--export-path", str(store)]
    if extra:
        args += ["--extra-files", ",".join(str(p) for p in extra)]
    assert main(args) == 0


def build(root: Path, store: Path) -> None:
    for name, source, cls, handler in (
        ("detector", DETECTOR_PY, "BrightBoxDetector", "object_detector"),
        ("segmenter", SEGMENTER_PY, "ChannelSegmenter", "image_segmenter"),
    ):
        folder = root / name
        folder.mkdir()
        (folder / "model.py").write_text(textwrap.dedent(source))
        labels = folder / "index_to_name.json"
        labels.write_text(json.dumps({"0": "__background__", "1": "person", "2": "bicycle", "3": "car"}))
        model = getattr(load_module(folder / "model.py", f"t_{name}"), cls)()
        archive(folder, name, handler, model, store, [labels] if name == "detector" else None)

    folder = root / "text"
    folder.mkdir()
    (folder / "model.py").write_text(textwrap.dedent(TEXT_PY))
    model = load_module(folder / "model.py", "t_text").TextSentiment()
    vocab = {"<unk>": 0, "goal": 1, "match": 2, "stocks": 3, "goal match": 4, "market": 5}
    with torch.no_grad():  # each known token votes for its class: 0 World, 1 Sports, 2 Business
        model.embedding.weight.copy_(torch.tensor(
            [[0, 0, 0], [0, 2, 0], [0, 2, 0], [0, 0, 2], [0, 3, 0], [0, 0, 2]], dtype=torch.float32))
        model.fc.weight.copy_(torch.eye(3))
        model.fc.bias.zero_()
    torch.save(vocab, folder / "source_vocab.pt")
    labels = folder / "index_to_name.json"
    labels.write_text(json.dumps({"0": "World", "1": "Sports", "2": "Business"}))
    archive(folder, "text", "text_classifier", model, store, [folder / "source_vocab.pt", labels])

    folder = root / "vision"
    folder.mkdir()
    (folder / "model.py").write_text(NEEDS_TORCHVISION_PY)
    torch.save({}, folder / "vision.pth")
    assert main(["archive", "--model-name", "vision", "--version", "1.0", "--model-file",
                 str(folder / "model.py"), "--serialized-file", str(folder / "vision.pth"),
                 "--handler", "image_classifier", "--export-path", str(store)]) == 0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("handlers")
    store = root / "store"
    store.mkdir()
    build(root, store)
    # an environment without torchvision: a package of that name that cannot be imported
    blocked = root / "no_torchvision" / "torchvision"
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'torchvision'\", name='torchvision')\n")
    management = free_port()
    with ServerProcess(["serve", "--model-store", str(store), "--management-port", str(management),
                        "--disable-token-auth"], cwd=root,
                       env={"PYTHONPATH": str(root / "no_torchvision")}) as process:
        yield {"url": process.url, "mgmt": f"http://127.0.0.1:{management}"}


def register(server: dict[str, Any], name: str) -> requests.Response:
    return requests.post(f"{server['mgmt']}/models?url={name}.mar&initial_workers=1", timeout=120)


def png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def test_object_detector_answers_boxes_over_the_threshold_with_labels(server: dict[str, Any]) -> None:
    assert register(server, "detector").status_code == 200
    pixels = np.zeros((60, 90, 3), dtype=np.uint8)  # 90 wide, 60 high: fed at its own size
    pixels[10:30, 20:50] = 255
    answer = requests.post(f"{server['url']}/predictions/detector", data=png(pixels), timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.json() == [{"person": [20.0, 10.0, 50.0, 30.0], "score": pytest.approx(0.9)}]


def test_image_segmenter_answers_class_and_probability_per_pixel(server: dict[str, Any]) -> None:
    assert register(server, "segmenter").status_code == 200
    red = np.zeros((300, 400, 3), dtype=np.uint8)
    red[..., 0] = 255
    answer = requests.post(f"{server['url']}/predictions/segmenter", data=png(red), timeout=60)
    assert answer.status_code == 200, answer.text
    pixels = np.asarray(answer.json())
    assert pixels.shape == (224, 224, 2)  # resized to 256, centre crop 224
    scores = (np.array([1.0, 0.0, 0.0]) - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    expected = np.exp(scores)[0] / np.exp(scores).sum()
    assert np.all(pixels[..., 0] == 0.0)
    assert np.allclose(pixels[..., 1], expected, atol=1e-4)


def test_text_classifier_cleans_tokenizes_and_names_classes(server: dict[str, Any]) -> None:
    assert register(server, "text").status_code == 200
    answer = requests.post(f"{server['url']}/predictions/text",
                           data=b"<b>GOAL!</b> Match &amp; report", timeout=60)
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert set(result) == {"World", "Sports", "Business"}
    assert max(result, key=result.get) == "Sports" and sum(result.values()) == pytest.approx(1.0)
    # markup and punctuation gone, lower case: goal, match, report (unknown) and the
    # bigrams "goal match", "match report" (unknown): 2 + 2 + 3 for Sports
    expected = np.exp([0.0, 7.0, 0.0]) / np.exp([0.0, 7.0, 0.0]).sum()
    assert result["Sports"] == pytest.approx(expected[1], rel=1e-5)
    stocks = requests.post(f"{server['url']}/predictions/text", data=b"Stocks and the market", timeout=60).json()
    assert max(stocks, key=stocks.get) == "Business"


def test_a_missing_torchvision_names_the_extra_to_install(server: dict[str, Any]) -> None:
    response = register(server, "vision")
    body = response.json()
    assert response.status_code == 500 and body["type"] == "InternalServerException", body
    assert "torchvision is not installed" in body["message"]
    assert "pip install 'servekit[torch]'" in body["message"]
    assert requests.get(f"{server['mgmt']}/models/vision", timeout=10).status_code == 404
