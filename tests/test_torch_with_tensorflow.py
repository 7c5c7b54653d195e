"""PyPI's CUDA torch (the one torchvision is built for) brings triton, whose
LLVM crashes the process when it loads after TensorFlow's. servekit loads
triton before TensorFlow, so a worker can hold a TensorFlow model and then a
torchvision handler or a torch.export model."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("torchvision")

SCRIPT = """
import servekit.runtimes.tensorflow as runtime
{disable}
tf = runtime.import_tensorflow()
from torchvision import transforms  # torch._dynamo, and with it triton
import torch
print(tf.constant([1.5]).numpy()[0] + float(transforms.ToTensor()(torch.zeros(2, 2, 3).numpy()).sum()))
"""


def run(tmp_path: Path, disable: str = "") -> subprocess.CompletedProcess[str]:
    script = tmp_path / "both.py"
    script.write_text(SCRIPT.format(disable=disable))
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                          env={"TF_CPP_MIN_LOG_LEVEL": "2", "PATH": "/usr/bin:/bin"})


def test_tensorflow_then_torchvision_in_one_process(tmp_path: Path) -> None:
    done = run(tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "1.5"


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
def test_without_triton_first_the_process_crashes(tmp_path: Path) -> None:
    """What the guard prevents (so the test above can fail)."""
    done = run(tmp_path, disable="runtime.load_triton_first = lambda: None")
    assert done.returncode == -11  # SIGSEGV
