"""What serving a model from its own environment costs per call.

The same Runtime subclass (y = 3x + 1) is called in process and through
IsolatedRuntime (its own virtualenv, a child process, servekit.envs.wire over a
Unix socket), for a small request and a large one; the environment is built
offline from a wheel written here (SERVEKIT_ENV_FIND_LINKS) into a temporary
cache. Prints the median microseconds per call of each and the difference.

    .venv/bin/python benchmarks/model_env_cost.py [--calls 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

MODEL = '''
import numpy as np
from servekit.runtimes.base import Runtime
from servekit.tensors import Tensor


class Model(Runtime):
    batch_axis = 0

    def load(self):
        import envcostdep  # only in the model's environment (when it has one)
        self.ready = True

    def predict(self, request):
        return self.response(request, [Tensor("y", request.inputs[0].data * 3.0 + 1.0)])
'''


def wheel(folder: Path) -> None:
    dist = "envcostdep-1.0.dist-info"
    files = {
        "envcostdep.py": b"VERSION = '1.0'\n",
        f"{dist}/METADATA": b"Metadata-Version: 2.1\nName: envcostdep\nVersion: 1.0\n",
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: bench\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    rows = [f"{p},sha256={base64.urlsafe_b64encode(hashlib.sha256(d).digest()).rstrip(b'=').decode()},{len(d)}"
            for p, d in files.items()]
    files[f"{dist}/RECORD"] = ("\n".join([*rows, f"{dist}/RECORD,,"]) + "\n").encode()
    with zipfile.ZipFile(folder / "envcostdep-1.0-py3-none-any.whl", "w") as zf:
        for p, d in files.items():
            zf.writestr(p, d)


async def timed(call, request, calls: int) -> float:  # type: ignore[no-untyped-def]
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        await call(request)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "wheels").mkdir()
        wheel(root / "wheels")
        model = root / "model"
        model.mkdir()
        (model / "model.py").write_text(MODEL)
        (model / "requirements.txt").write_text("envcostdep==1.0\n")
        (root / "pkg").mkdir()
        (root / "pkg" / "envcostdep.py").write_text("VERSION = '1.0'\n")
        os.environ.update(SERVEKIT_ENV_CACHE=str(root / "cache"), SERVEKIT_ENV_FIND_LINKS=str(root / "wheels"))
        sys.path.insert(0, str(root / "pkg"))  # the in-process copy finds its dependency here

        from servekit.config import ModelSettings
        from servekit.runtimes import create_runtime
        from servekit.tensors import InferenceRequest, Tensor

        settings = {"name": "m", "implementation": "model.Model", "source_dir": str(model)}
        local = create_runtime(ModelSettings.model_validate(settings))
        local.load()
        isolated = create_runtime(ModelSettings.model_validate({**settings, "parameters": {"environment": True}}))
        started = time.perf_counter()
        isolated.load()
        print(f"first load (build + start): {time.perf_counter() - started:.1f} s")

        async def in_process(request: InferenceRequest) -> object:
            return local.predict(request)

        async def run() -> None:
            for label, shape in (("1x4 FP64", (1, 4)), ("1000x100 FP64 (800 kB)", (1000, 100)),
                                 ("10000x100 FP64 (8 MB)", (10000, 100))):
                request = InferenceRequest([Tensor("x", np.random.default_rng(0).random(shape))])
                calls = args.calls if shape[0] < 10000 else max(50, args.calls // 20)
                answer = await isolated.predict(request)  # type: ignore[misc]
                np.testing.assert_array_equal(answer.outputs[0].data, local.predict(request).outputs[0].data)
                here = await timed(in_process, request, calls)
                there = await timed(isolated.predict, request, calls)
                print(json.dumps({"request": label, "in_process_us": round(here, 1),
                                  "own_environment_us": round(there, 1), "added_us": round(there - here, 1)}))

        asyncio.run(run())
        isolated.unload()


if __name__ == "__main__":
    main()
