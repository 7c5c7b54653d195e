"""The archives TorchServe's Postman collections register, made offline.

TorchServe's CI downloads pretrained weights (hundreds of MB) and packs them
with its examples' model files. Here each archive keeps the model name, the
handler (the same built-in handler, or a handler file of the same behaviour)
and the input/output shapes (3x224x224 images to 1,000 ImageNet classes, 21
segmentation classes, 91 COCO detection classes, 28x28 digits to 10), but the
networks are small members of the same families with random weights (the
digit model is trained for a few seconds on scikit-learn's digits). Answers
that need the pretrained weights (the top-5 classes the collection expects
for its kitten) cannot match; run() lists those checks as skipped.

Usage: make_models.py STORE REMOTE  (STORE: the model store; REMOTE: the
folder served as https://torchserve.pytorch.org/mar_files/ stand-in)
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ARCHIVER = str(Path(sys.executable).parent / "torch-model-archiver")

CLASSIFIER_PY = {
    # name: (class body using torchvision, documentation)
    "squeezenet1_1": "from torchvision.models.squeezenet import SqueezeNet\n\n\n"
                     "class ImageClassifier(SqueezeNet):\n    def __init__(self):\n"
                     "        super().__init__(version='1_1')\n",
    "resnet-18": "from torchvision.models.resnet import BasicBlock, ResNet\n\n\n"
                 "class ImageClassifier(ResNet):\n    def __init__(self):\n"
                 "        super().__init__(BasicBlock, [1, 1, 1, 1])\n",
    "resnet-152-batch": "from torchvision.models.resnet import Bottleneck, ResNet\n\n\n"
                        "class ImageClassifier(ResNet):\n    def __init__(self):\n"
                        "        super().__init__(Bottleneck, [1, 1, 1, 1], width_per_group=16)\n",
    "densenet161": "from torchvision.models.densenet import DenseNet\n\n\n"
                   "class ImageClassifier(DenseNet):\n    def __init__(self):\n"
                   "        super().__init__(growth_rate=8, block_config=(1, 1, 1, 1), num_init_features=16)\n",
    "alexnet": "from torch import nn\n\n\n"
               "class ImageClassifier(nn.Module):\n"
               "    # AlexNet's layout (5 convolutions, 3 linear layers), narrower\n"
               "    def __init__(self):\n        super().__init__()\n"
               "        self.features = nn.Sequential(\n"
               "            nn.Conv2d(3, 8, 11, 4, 2), nn.ReLU(), nn.MaxPool2d(3, 2),\n"
               "            nn.Conv2d(8, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),\n"
               "            nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),\n"
               "            nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2))\n"
               "        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))\n"
               "        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(16 * 36, 64), nn.ReLU(),\n"
               "                                        nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1000))\n\n"
               "    def forward(self, x):\n        return self.classifier(self.avgpool(self.features(x)))\n",
    "vgg16": "from torch import nn\nfrom torchvision.models.vgg import make_layers\n\n\n"
             "class ImageClassifier(nn.Module):\n    # VGG's layout (3x3 convolution blocks, 3 linear layers), smaller\n"
             "    def __init__(self):\n        super().__init__()\n"
             "        self.features = make_layers([8, 'M', 16, 'M', 16, 'M', 16, 'M', 16, 'M'])\n"
             "        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))\n"
             "        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(16 * 49, 64), nn.ReLU(),\n"
             "                                        nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1000))\n\n"
             "    def forward(self, x):\n        return self.classifier(self.avgpool(self.features(x)))\n",
}

DETECTOR_PY = """
from torchvision.models.detection import {kind}
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone


class {cls}({kind}):
    # the torchvision detector on a ResNet-18 FPN backbone, with small input sizes
    def __init__(self, num_classes=91, **kwargs):
        backbone = resnet_fpn_backbone(backbone_name="resnet18", weights=None)
        super().__init__(backbone, num_classes, min_size=320, max_size=480, **kwargs)
"""

SEGMENTER_PY = """
from torchvision.models import resnet18
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.segmentation.{module} import {kind}, {head}


class {cls}({kind}):
    # torchvision's {kind} on a ResNet-18 backbone, 21 classes
    def __init__(self, num_classes=21, **kwargs):
        backbone = IntermediateLayerGetter(resnet18(weights=None), return_layers={{"layer4": "out"}})
        super().__init__(backbone, {head}(512, num_classes), None)
"""

MNIST_PY = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, 1)
        self.conv2 = nn.Conv2d(8, 16, 3, 1)
        self.fc1 = nn.Linear(16 * 12 * 12, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
        x = torch.relu(self.fc1(torch.flatten(x, 1)))
        return torch.log_softmax(self.fc2(x), dim=1)
"""

# the behaviour of TorchServe's MNIST example handler: a grayscale 28x28 digit,
# normalised with MNIST's mean and std, answered with the digit
MNIST_HANDLER_PY = """
import io

import numpy as np
import torch
from PIL import Image

from ts.torch_handler.image_classifier import ImageClassifier


class MNISTDigitClassifier(ImageClassifier):
    def preprocess(self, data):
        images = []
        for row in data:
            image = Image.open(io.BytesIO(row.get("data") or row.get("body"))).convert("L").resize((28, 28))
            pixels = (np.asarray(image, dtype=np.float32) / 255.0 - 0.1307) / 0.3081
            images.append(pixels[None])
        return torch.as_tensor(np.stack(images))

    def postprocess(self, data):
        return data.argmax(1).tolist()
"""

# the behaviour of TorchServe's VGG example handler: image_classifier's, top 5
VGG_HANDLER_PY = """
from ts.torch_handler.image_classifier import ImageClassifier


class VGGImageClassifier(ImageClassifier):
    topk = 5
"""


def archive(out: Path, name: str, handler: str, serialized: Path, work: Path, model_file: Path | None = None,
            extra: list[Path] | None = None) -> Path:
    command = [ARCHIVER, "--model-name", name, "--version", "1.0", "--serialized-file", str(serialized),
               "--handler", handler, "--export-path", str(out), "--force"]
    if model_file is not None:
        command += ["--model-file", str(model_file)]
    if extra:
        command += ["--extra-files", ",".join(str(p) for p in extra)]
    subprocess.run(command, check=True, cwd=work)
    return out / f"{name}.mar"


def module_from(path: Path, name: str) -> object:
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def labels(work: Path) -> tuple[Path, Path, Path]:
    imagenet = work / "imagenet" / "index_to_name.json"
    imagenet.parent.mkdir(parents=True, exist_ok=True)
    imagenet.write_text(json.dumps({str(i): [f"n{i:08d}", f"class_{i}"] for i in range(1000)}))
    coco = work / "coco" / "index_to_name.json"
    coco.parent.mkdir(parents=True, exist_ok=True)
    coco.write_text(json.dumps({str(i): "__background__" if i == 0 else f"object_{i}" for i in range(91)}))
    voc = work / "voc" / "index_to_name.json"
    voc.parent.mkdir(parents=True, exist_ok=True)
    voc.write_text(json.dumps({str(i): f"segment_{i}" for i in range(21)}))
    return imagenet, coco, voc


def build(store: Path, remote: Path, work: Path) -> None:
    torch.manual_seed(0)
    store.mkdir(parents=True, exist_ok=True)
    remote.mkdir(parents=True, exist_ok=True)
    imagenet, coco, _ = labels(work)
    example = torch.rand(1, 3, 224, 224)
    for name, source in CLASSIFIER_PY.items():
        folder = work / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "model.py").write_text(source)
        model = module_from(folder / "model.py", f"m_{name.replace('-', '_')}").ImageClassifier().eval()  # type: ignore[attr-defined]
        torch.save(model.state_dict(), folder / f"{name}.pth")
        handler = "image_classifier"
        if name == "vgg16":
            (folder / "vgg_handler.py").write_text(textwrap.dedent(VGG_HANDLER_PY))
            handler = str(folder / "vgg_handler.py")
        archive(store, name, handler, folder / f"{name}.pth", work, folder / "model.py", [imagenet])
        with torch.inference_mode():
            traced = torch.jit.trace(model, example)
        traced.save(str(folder / f"{name}.pt"))
        scripted_name = {"resnet-152-batch": "resnet-152-batch_scripted"}.get(name, f"{name}_scripted")
        archive(remote, scripted_name, "image_classifier", folder / f"{name}.pt", work, None, [imagenet])

    for name, kind, cls in (("fastrcnn", "FasterRCNN", "FRCNNObjectDetector"),
                            ("maskrcnn", "MaskRCNN", "MRCNNObjectDetector")):
        folder = work / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "model.py").write_text(DETECTOR_PY.format(kind=kind, cls=cls))
        model = getattr(module_from(folder / "model.py", f"m_{name}"), cls)().eval()
        torch.save(model.state_dict(), folder / f"{name}.pth")
        archive(store, name, "object_detector", folder / f"{name}.pth", work, folder / "model.py", [coco])

    for name, module, kind, head in (("fcn_resnet_101", "fcn", "FCN", "FCNHead"),
                                     ("deeplabv3_resnet_101_eager", "deeplabv3", "DeepLabV3", "DeepLabHead")):
        folder = work / name
        folder.mkdir(parents=True, exist_ok=True)
        cls = f"{kind}ImageSegmenter"
        (folder / "model.py").write_text(SEGMENTER_PY.format(module=module, kind=kind, head=head, cls=cls))
        model = getattr(module_from(folder / "model.py", f"m_{name}"), cls)().eval()
        torch.save(model.state_dict(), folder / f"{name}.pth")
        archive(store, name, "image_segmenter", folder / f"{name}.pth", work, folder / "model.py")
        scripted = torch.jit.script(model)
        scripted.save(str(folder / f"{name}.pt"))
        remote_name = {"fcn_resnet_101": "fcn_resnet_101_scripted",
                       "deeplabv3_resnet_101_eager": "deeplabv3_resnet_101_scripted"}[name]
        archive(remote, remote_name, "image_segmenter", folder / f"{name}.pt", work)

    folder = work / "mnist"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "mnist.py").write_text(MNIST_PY)
    (folder / "mnist_handler.py").write_text(textwrap.dedent(MNIST_HANDLER_PY))
    model = train_digits(module_from(folder / "mnist.py", "m_mnist").Net())  # type: ignore[attr-defined]
    torch.save(model.state_dict(), folder / "mnist_cnn.pt")
    handler = str(folder / "mnist_handler.py")
    archive(store, "mnist", handler, folder / "mnist_cnn.pt", work, folder / "mnist.py")
    archive(remote, "mnist_v2", handler, folder / "mnist_cnn.pt", work, folder / "mnist.py")
    with torch.inference_mode():
        torch.jit.trace(model, torch.rand(1, 1, 28, 28)).save(str(folder / "mnist_scripted.pt"))
    archive(remote, "mnist_scripted_v2", handler, folder / "mnist_scripted.pt", work)


def train_digits(model: torch.nn.Module) -> torch.nn.Module:
    """A few epochs on scikit-learn's 8x8 digits drawn MNIST's way: white on
    black, 16-21 pixels tall at a random place of a 28x28 frame, strokes
    thinned or thickened at random; normalised as the handler normalises."""
    from PIL import Image, ImageFilter
    from sklearn.datasets import load_digits

    rng = np.random.default_rng(0)
    digits = load_digits()
    images, targets = [], []
    for pixels, target in zip(digits.images, digits.target, strict=True):
        small = Image.fromarray((pixels / 16.0 * 255).astype(np.uint8))
        for _ in range(4):
            size = int(rng.integers(16, 22))
            image = small.resize((size, size), Image.Resampling.BICUBIC)
            stroke = int(rng.integers(0, 3))
            if stroke:
                image = image.filter(ImageFilter.MaxFilter(3) if stroke == 1 else ImageFilter.MinFilter(3))
            drawn = np.clip((np.asarray(image, dtype=np.float32) / 255.0 - 0.25) * 1.6, 0, 1)
            frame = np.zeros((28, 28), dtype=np.float32)
            top, left = (int(rng.integers(2, 27 - size)) for _ in range(2))
            frame[top : top + size, left : left + size] = drawn
            images.append((frame - 0.1307) / 0.3081)
            targets.append(target)
    x = torch.as_tensor(np.stack(images)[:, None])
    y = torch.as_tensor(np.asarray(targets))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.003)
    for _ in range(6):
        order = torch.randperm(len(x))
        for start in range(0, len(x), 64):
            batch = order[start : start + 64]
            optimizer.zero_grad()
            loss = torch.nn.functional.nll_loss(model(x[batch]), y[batch])
            loss.backward()
            optimizer.step()
    return model.eval()


if __name__ == "__main__":
    build(*(Path(a).resolve() for a in sys.argv[1:4]))
