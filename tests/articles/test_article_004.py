"""Article 004, "Serving ML models with TorchServe": a TinyVGG-style CNN for
Fashion-MNIST's 28x28 images (trained here for one epoch on synthetic pictures:
class k is a bright square at spot k), its model.py, a class-level handler that
preprocesses with `torchvision.transforms` as the article's does, the archive
made by the real `torch-model-archiver`, then the article's commands with
`torchserve` typed as `servekit`: --start, curl /ping, --stop, --start again
with the one-line config moving management to https, and curl -T of a JPEG.

Changed, and only that: the article's `path` placeholders are a folder `path`
in this project (`/path/` is `$(pwd)/path/`); ports 8080/8081/8082/7070 are
free ports (SERVEKIT_* variables, except management's in the config file's own
address: 8443 in the article)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from articles_support import Ports, sh

pytest.importorskip("torch")
pytest.importorskip("torchvision")

import torch_fixtures

LABELS = torch_fixtures.LABELS

# the article's handler: BaseHandler's initialize and inference, its own
# preprocess (resize, grayscale, tensor, a batch of one) and postprocess (the
# predicted label; the label list hard-coded, as the article says it did)
HANDLER_PY = '''
import io

import torch
from PIL import Image
from torchvision import transforms
from ts.torch_handler.base_handler import BaseHandler


class ModelHandler(BaseHandler):
    def __init__(self):
        super().__init__()
        self.transform = transforms.Compose([
            transforms.Resize((28, 28)),
            transforms.Grayscale(num_output_channels=1),
            transforms.ToTensor(),
        ])
        self.labels = {labels}

    def initialize(self, context):
        super().initialize(context)

    def preprocess(self, data):
        image = data[0].get("data") or data[0].get("body")
        image = Image.open(io.BytesIO(image))
        return self.transform(image).unsqueeze(0)

    def postprocess(self, data):
        predicted = torch.argmax(torch.softmax(data, dim=1), dim=1)
        return [self.labels[int(predicted[0])]]

    def handle(self, data, context):
        model_input = self.preprocess(data)
        model_output = self.inference(model_input)
        return self.postprocess(model_output)
'''.replace("{labels}", repr(LABELS))

ARCHIVE = ("torch-model-archiver --model-name fashion_mnist --version 1.0 --model-file path/model.py "
           "--serialized-file path/fashion_mnist_model.pth --handler path/handler.py")
# the article's `/path/fashion_mnist.mar`: the archive in the model store `path`, by absolute path
START = "servekit --start --model-store path --models fmnist=$(pwd)/path/fashion_mnist.mar"
STOP = "servekit --stop"


@pytest.fixture(scope="module")
def article(project: Path) -> dict[str, object]:
    """The project: path/model.py, path/fashion_mnist_model.pth, path/handler.py,
    tshirt4.jpg, and path/fashion_mnist.mar made by torch-model-archiver."""
    import torch
    from PIL import Image

    path = project / "path"
    path.mkdir()
    model = torch_fixtures.train_model(path)  # writes path/model.py
    torch.save(model.state_dict(), path / "fashion_mnist_model.pth")  # type: ignore[attr-defined]
    (path / "handler.py").write_text(HANDLER_PY)
    # a colour JPEG as a phone would send it; the handler makes it 28x28 grey
    pixels = torch_fixtures.class_image(0).repeat(4, axis=0).repeat(4, axis=1)
    Image.fromarray(pixels).convert("RGB").save(project / "tshirt4.jpg", quality=95)
    sh(ARCHIVE, cwd=project)
    # the archive is written where the command runs; the model store is `path`
    (project / "fashion_mnist.mar").rename(path / "fashion_mnist.mar")
    return {"model": model, "expected": expected_label(model, project / "tshirt4.jpg")}


def expected_label(model: object, image: Path) -> str:
    """The label the model itself gives the JPEG, through the handler's transforms."""
    import torch
    from PIL import Image
    from torchvision import transforms

    transform = transforms.Compose([transforms.Resize((28, 28)), transforms.Grayscale(1), transforms.ToTensor()])
    with torch.inference_mode():
        logits = model(transform(Image.open(image)).unsqueeze(0))  # type: ignore[operator]
    return LABELS[int(torch.argmax(logits, dim=1)[0])]


def env_for(project: Path, ports: Ports, *, management: bool = True) -> dict[str, str]:
    env = ports.env()
    if not management:  # the config file says where management listens
        del env["SERVEKIT_MANAGEMENT_PORT"]
    env["SERVEKIT_PID_FILE"] = str(project / "servekit.pid")  # not the shared default in /tmp
    return env


def curl(line: str, cwd: Path) -> str:
    return sh(line, cwd=cwd).stdout


@pytest.fixture
def stopped(project: Path, ports: Ports) -> Iterator[Ports]:
    """Runs `servekit --stop` after the test, whatever happened."""
    yield ports
    sh(STOP, cwd=project, env=env_for(project, ports), check=False)


def test_start_ping_predict_stop(article: dict[str, object], project: Path, stopped: Ports) -> None:
    ports = stopped
    env = env_for(project, ports)
    started = sh(START, cwd=project, env=env)
    assert "servekit started in the background" in started.stdout
    # port: 8080 in the article
    assert json.loads(curl(f"curl http://localhost:{ports.http}/ping", project)) == {"status": "Healthy"}
    label = curl(f"curl -X POST http://localhost:{ports.http}/predictions/fmnist -T tshirt4.jpg", project)
    assert label == article["expected"] == "T-shirt/top"
    # the same image as a form field, and by the archive's version
    assert curl(f"curl -s -X POST http://localhost:{ports.http}/predictions/fmnist/1.0 -F data=@tshirt4.jpg",
                project) == label
    metrics = curl(f"curl -s http://localhost:{ports.metrics}/metrics", project)
    assert 'model="fmnist"' in metrics and 'protocol="torchserve"' in metrics
    log = (project / "logs" / "servekit.log").read_text()
    assert "fmnist" in log and "UNAVAILABLE" not in log and "Traceback" not in log
    again = sh(START, cwd=project, env=env, check=False)
    assert again.returncode == 1 and "already running" in again.stderr
    stopped_out = sh(STOP, cwd=project, env=env).stdout
    assert "stopped" in stopped_out
    done = sh(f"curl -s http://localhost:{ports.http}/ping", cwd=project, check=False)
    assert done.returncode == 7  # curl: failed to connect: the server is gone
    assert "not currently running" in sh(STOP, cwd=project, env=env).stdout


def test_restart_with_torch_config_https_management(article: dict[str, object], project: Path,
                                                    stopped: Ports) -> None:
    ports = stopped
    # the archive made again with servekit's own archiver, the same flags
    sh(ARCHIVE.replace("torch-model-archiver", "servekit archive"), cwd=project)
    (project / "fashion_mnist.mar").rename(project / "path" / "fashion_mnist.mar")
    # the article's one-line torch_config; 8443 is a free port here
    (project / "path" / "torch_config").write_text(f"management_address=https://0.0.0.0:{ports.management}\n")
    env = env_for(project, ports, management=False)
    sh(f"{START} --ts-config path/torch_config", cwd=project, env=env)
    assert json.loads(curl(f"curl http://localhost:{ports.http}/ping", project)) == {"status": "Healthy"}
    label = curl(f"curl -X POST http://localhost:{ports.http}/predictions/fmnist -T tshirt4.jpg", project)
    assert label == article["expected"]
    # management now answers on https (a certificate made at start, as TorchServe
    # does without private_key_file/certificate_file), with the key TorchServe writes
    key = json.loads((project / "key_file.json").read_text())["management"]["key"]
    models = json.loads(curl(f'curl -k -H "Authorization: Bearer {key}" https://localhost:{ports.management}/models',
                             project))
    assert models == {"models": [{"modelName": "fmnist", "modelUrl": str(project / "path" / "fashion_mnist.mar")}]}
    described = json.loads(curl(f'curl -k -H "Authorization: Bearer {key}" '
                                f"https://localhost:{ports.management}/models/fmnist", project))
    assert described[0]["modelName"] == "fmnist" and described[0]["modelVersion"] == "1.0"
    assert described[0]["loadedAtStartup"] is True
    # plain http on the https port is refused, not answered
    plain = sh(f"curl -s http://localhost:{ports.management}/models", cwd=project, check=False)
    assert plain.returncode != 0 or "modelName" not in plain.stdout
    # and without -k curl refuses the self-signed certificate
    strict = sh(f"curl -s https://localhost:{ports.management}/models", cwd=project, check=False)
    assert strict.returncode == 60  # SSL certificate problem
    assert "stopped" in sh(STOP, cwd=project, env=env).stdout
