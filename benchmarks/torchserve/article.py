"""The TorchServe article's model for the benchmark, made offline, archived once.

    python benchmarks/torchserve/article.py WORK --archiver PATH/torch-model-archiver

Reuses the end-to-end tests' builder (``tests/torch_fixtures.py``: the
two-conv-block CNN trained for one epoch on synthetic 28x28 images, its
``model.py``, the article's handler, ``index_to_name.json`` and a 28x28
grayscale PNG), with the handler importing ``ts.torch_handler`` as written for
TorchServe. Writes, under WORK:

- ``project/``: the files the article passes to the archiver;
- ``store/fashion_mnist.mar``: made by the real ``torch-model-archiver``,
  the one archive both servers serve;
- ``data/trouser.png``: the request body, and ``data/floor.json``: the
  model's own time in process for 1 and 64 images, and the handler's
  (PNG decode, preprocess, model, label) for one request.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

import torch_fixtures  # noqa: E402  (the tests' builder of the article's files)

MODEL_NAME = "fashion_mnist"
ARCHIVE = f"{MODEL_NAME}.mar"


def median_seconds(call: Callable[[], Any], repeat: int) -> float:
    """Median wall time of ``call`` after one warm-up call."""
    call()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    times.sort()
    return times[len(times) // 2]


def build(work: Path, archiver: Path) -> dict[str, Any]:
    project, store, data = work / "project", work / "store", work / "data"
    for folder in (project, store):
        shutil.rmtree(folder, ignore_errors=True)
    store.mkdir(parents=True)
    data.mkdir(parents=True, exist_ok=True)
    files = torch_fixtures.article_files(project, handler_base="ts")
    shutil.copy(files["image"], data / "trouser.png")
    subprocess.run([str(archiver), "--model-name", MODEL_NAME, "--version", "1.0",
                    "--model-file", "model.py", "--serialized-file", "fashion_mnist_model.pth",
                    "--handler", "handler.py", "--extra-files", "index_to_name.json",
                    "--export-path", str(store)], cwd=project, check=True)
    floor = measure_floor(files["model"], project, data / "trouser.png")
    floor["expected_label"] = torch_fixtures.direct_label(files["model"], data / "trouser.png")
    (data / "floor.json").write_text(json.dumps(floor, indent=2) + "\n")
    return floor


def measure_floor(model: Any, project: Path, image: Path) -> dict[str, Any]:
    """In-process times with torch's default threads (one per core), no server."""
    import torch

    from servekit.torch_handler.context import Context
    from servekit.torch_handler.runtime import resolve_handler

    one = torch.rand(1, 1, 28, 28)
    batch = torch.rand(64, 1, 28, 28)

    def forward(x: torch.Tensor) -> Callable[[], Any]:
        def call() -> Any:
            with torch.inference_mode():
                return model(x)
        return call

    # the article's handler on one request, as a server calls it (servekit's
    # stand-in for `ts` gives it the same base class and context shape)
    manifest = {"model": {"modelName": MODEL_NAME, "serializedFile": "fashion_mnist_model.pth",
                          "modelFile": "model.py", "handler": "handler.py"}}
    context = Context(MODEL_NAME, str(project), manifest, batch_size=1)
    handle, initialize = resolve_handler("handler.py", project)
    initialize(context)
    rows = [{"body": image.read_bytes()}]
    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "model_1_s": median_seconds(forward(one), 500),
        "model_64_s": median_seconds(forward(batch), 100),
        "handler_1_s": median_seconds(lambda: handle(rows, context), 500),
        "png_bytes": image.stat().st_size,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("work", type=Path)
    parser.add_argument("--archiver", type=Path, required=True, help="torch-model-archiver (TorchServe's venv)")
    args = parser.parse_args()
    floor = build(args.work.resolve(), args.archiver.absolute())
    print(f"archived {args.work / 'store' / ARCHIVE}; model {floor['model_1_s'] * 1e3:.3f} ms for 1 image, "
          f"{floor['model_64_s'] * 1e3:.2f} ms for 64; handler {floor['handler_1_s'] * 1e3:.3f} ms per request")
    return 0


if __name__ == "__main__":
    sys.exit(main())
