"""The TorchServe article's files, made offline, for the README's TorchServe example:

    python examples/torchserve/make_files.py fmnist

writes into ``fmnist/``: ``model.py`` (a small two-block CNN in the article's
shape), ``fashion_mnist_model.pth`` (its state dict after one epoch on synthetic
28x28 images: class k is a bright square at spot k), ``handler.py`` (the
article's handler on servekit's BaseHandler, Pillow instead of torchvision),
``index_to_name.json`` and ``tshirt4.jpg`` (a picture of class 0, "T-shirt/top").
"""

from __future__ import annotations

import importlib.util
import json
import sys
import textwrap
from pathlib import Path

import numpy as np

LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]

MODEL_PY = '''
import torch
from torch import nn


class FashionMNISTModel(nn.Module):
    def __init__(self, input_shape=1, hidden_units=8, output_shape=10):
        super().__init__()
        self.block_1 = nn.Sequential(
            nn.Conv2d(input_shape, hidden_units, 3, padding=1), nn.ReLU(),
            nn.Conv2d(hidden_units, hidden_units, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.block_2 = nn.Sequential(
            nn.Conv2d(hidden_units, hidden_units, 3, padding=1), nn.ReLU(),
            nn.Conv2d(hidden_units, hidden_units, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(hidden_units * 7 * 7, output_shape))

    def forward(self, x: torch.Tensor):
        return self.classifier(self.block_2(self.block_1(x)))
'''

HANDLER_PY = '''
import io
import json

import numpy as np
import torch
from PIL import Image

from servekit.torch_handler.base_handler import BaseHandler


class ModelHandler(BaseHandler):
    def initialize(self, context):
        super().initialize(context)
        with open(f"{context.system_properties['model_dir']}/index_to_name.json") as f:
            self.mapping = json.load(f)

    def preprocess(self, data):
        image = data[0].get("data") or data[0].get("body")
        image = Image.open(io.BytesIO(image)).resize((28, 28)).convert("L")
        array = np.asarray(image, dtype=np.float32) / 255.0
        return torch.as_tensor(array[None, None], device=self.device)

    def postprocess(self, data):
        return [self.mapping[str(int(torch.argmax(data, dim=1)[0]))]]
'''


def picture(label: int) -> np.ndarray:
    """A clean 28x28 picture of class ``label`` (uint8 pixels)."""
    pixels = np.full((28, 28), 20, dtype=np.uint8)
    row, col = divmod(label, 5)
    pixels[4 + row * 12 : 12 + row * 12, 1 + col * 5 : 6 + col * 5] = 255
    return pixels


def main(folder: Path) -> None:
    import torch
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.py").write_text(textwrap.dedent(MODEL_PY).lstrip())
    spec = importlib.util.spec_from_file_location("fmnist_model", folder / "model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 640)
    images = rng.uniform(0, 0.2, (640, 1, 28, 28)).astype(np.float32)
    for i, label in enumerate(labels):
        images[i, 0] = np.maximum(images[i, 0], picture(int(label)) / 255.0 * (picture(int(label)) > 20))
    model = module.FashionMNISTModel()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    x, y = torch.from_numpy(images), torch.from_numpy(labels)
    for start in range(0, len(x), 32):  # one epoch
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x[start : start + 32]), y[start : start + 32]).backward()
        optimizer.step()
    torch.save(model.state_dict(), folder / "fashion_mnist_model.pth")
    (folder / "handler.py").write_text(textwrap.dedent(HANDLER_PY).lstrip())
    (folder / "index_to_name.json").write_text(json.dumps({str(i): n for i, n in enumerate(LABELS)}))
    Image.fromarray(picture(0)).save(folder / "tshirt4.jpg", quality=95)
    print(f"wrote model.py, fashion_mnist_model.pth, handler.py, index_to_name.json and tshirt4.jpg into {folder}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "."))
