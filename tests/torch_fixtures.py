"""The TorchServe article's model, made offline: a small two-block CNN trained
for one epoch on synthetic 28x28 images (class k is a bright square at spot k),
its model.py, a handler in the article's shape, labels and a PNG to send."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np

LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
          "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]

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

# the article's handler, with Pillow + numpy where it used torchvision
HANDLER_PY = '''
import base64
import io

import numpy as np
import torch
from PIL import Image

from {base}.torch_handler.base_handler import BaseHandler


class ModelHandler(BaseHandler):
    def handle(self, data, context):
        model_input = self.preprocess(data)
        model_output = self.inference(model_input)
        return self.postprocess(model_output)

    def initialize(self, context):
        super().initialize(context)

    def preprocess(self, data):
        image = data[0].get("data") or data[0].get("body")
        if isinstance(image, str):
            image = base64.b64decode(image)
        image = Image.open(io.BytesIO(image)).resize((28, 28)).convert("L")
        array = np.asarray(image, dtype=np.float32) / 255.0
        return torch.as_tensor(array[None, None], device=self.device)

    def postprocess(self, data):
        index = int(torch.argmax(torch.softmax(data, dim=1), dim=1)[0])
        return [self.mapping[str(index)]]
'''


def synthetic_images(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    images = rng.uniform(0, 0.2, (n, 1, 28, 28)).astype(np.float32)
    for i, label in enumerate(labels):
        row, col = divmod(int(label), 5)
        images[i, 0, 4 + row * 12 : 12 + row * 12, 1 + col * 5 : 6 + col * 5] = 1.0
    return images, labels


def class_image(label: int) -> np.ndarray:
    """A clean 28x28 picture of class ``label`` as uint8 pixels."""
    pixels = np.full((28, 28), 20, dtype=np.uint8)
    row, col = divmod(label, 5)
    pixels[4 + row * 12 : 12 + row * 12, 1 + col * 5 : 6 + col * 5] = 255
    return pixels


def train_model(folder: Path) -> object:
    """Write model.py and train it for one epoch; returns the trained module."""
    import importlib.util
    import sys

    import torch

    (folder / "model.py").write_text(textwrap.dedent(MODEL_PY))
    spec = importlib.util.spec_from_file_location(f"fmnist_model_{id(folder)}", folder / "model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    model = module.FashionMNISTModel()
    images, labels = synthetic_images(640)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    loss_fn = torch.nn.CrossEntropyLoss()
    x, y = torch.from_numpy(images), torch.from_numpy(labels)
    for start in range(0, len(x), 32):  # one epoch
        optimizer.zero_grad()
        loss = loss_fn(model(x[start : start + 32]), y[start : start + 32])
        loss.backward()
        optimizer.step()
    model.eval()
    return model


def article_files(folder: Path, handler_base: str = "servekit") -> dict[str, Path]:
    """model.py, fashion_mnist_model.pth, handler.py, index_to_name.json, tshirt.png."""
    import torch
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    model = train_model(folder)
    torch.save(model.state_dict(), folder / "fashion_mnist_model.pth")  # type: ignore[attr-defined]
    (folder / "handler.py").write_text(textwrap.dedent(HANDLER_PY.format(base=handler_base)))
    (folder / "index_to_name.json").write_text(json.dumps({str(i): n for i, n in enumerate(LABELS)}))
    Image.fromarray(class_image(1)).save(folder / "trouser.png")
    return {
        "model": model,  # type: ignore[dict-item]
        "model_file": folder / "model.py",
        "serialized": folder / "fashion_mnist_model.pth",
        "handler": folder / "handler.py",
        "labels": folder / "index_to_name.json",
        "image": folder / "trouser.png",
    }


def direct_label(model: object, image_path: Path) -> str:
    """What the model itself says about the image, preprocessed as the handler does."""
    import torch
    from PIL import Image

    image = Image.open(image_path).resize((28, 28)).convert("L")
    array = np.asarray(image, dtype=np.float32) / 255.0
    with torch.inference_mode():
        logits = model(torch.as_tensor(array[None, None]))  # type: ignore[operator]
    return LABELS[int(torch.argmax(logits, dim=1)[0])]
