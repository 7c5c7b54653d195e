from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

# Test modules import TensorFlow and, later, torch._dynamo (torchvision, torch.export) in
# this one process: torch's triton must load first (servekit.runtimes.tensorflow says why)
from servekit.runtimes.tensorflow import load_triton_first

load_triton_first()
