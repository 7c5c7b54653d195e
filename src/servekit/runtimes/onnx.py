"""ONNX models through onnxruntime (CPU). Inputs and outputs come from the
graph; a request's ``outputs`` selects which graph outputs are computed.
Needs ``pip install 'servekit[onnx]'``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

from servekit.errors import InvalidInput, ModelLoadError
from servekit.runtimes.base import Runtime
from servekit.runtimes.signature import (
    Feeds,
    Signature,
    bind_inputs,
    output_names,
    output_tensors,
)
from servekit.tensors import InferenceRequest, InferenceResponse, TensorSpec

# onnxruntime's element type names -> V2 datatypes
ONNX_TYPES = {
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(float16)": "FP16",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(bool)": "BOOL",
    "tensor(string)": "BYTES",
}


class ONNXRuntime(Runtime):
    platform: ClassVar[str] = "onnx"
    batch_axis: ClassVar[int | None] = 0
    fork_safe: ClassVar[bool] = False  # its thread pools do not survive fork

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.session: Any = None
        self.graph: Signature | None = None

    def model_path(self) -> Path:
        path = self.settings.resolved_uri()
        if path is not None and path.is_dir():
            files = sorted(path.glob("*.onnx"))
            if not files:
                raise ModelLoadError(f"model {self.name!r}: no .onnx file in {path}")
            path = files[0]
        if path is None or not path.is_file():
            raise ModelLoadError(f"model {self.name!r}: ONNX file {path} does not exist")
        return path

    def load(self) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise ModelLoadError(
                f"onnxruntime is not installed ({exc}); pip install 'servekit[onnx]'"
            ) from exc
        path = self.model_path()
        options = ort.SessionOptions()
        threads = os.environ.get("OMP_NUM_THREADS")
        if threads and threads.isdigit():
            options.intra_op_num_threads = int(threads)
        options.log_severity_level = 3
        try:
            session = ort.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise ModelLoadError(f"cannot load {path.name}: {exc}") from exc
        self.session = session

        def call(feeds: Feeds, wanted: list[str]) -> Feeds:
            values = session.run(wanted, feeds)
            return dict(zip(wanted, values, strict=True))

        self.graph = Signature(
            name="graph",
            inputs=[_spec(node) for node in session.get_inputs()],
            outputs=[_spec(node) for node in session.get_outputs()],
            call=call,
        )
        self.ready = True

    def predict(self, request: InferenceRequest) -> InferenceResponse:
        assert self.graph is not None
        feeds = bind_inputs(self.graph, request, self.name)
        names = output_names(self.graph, request, self.name)
        try:
            values = self.graph.call(feeds, names)
        except Exception as exc:  # shape/type mismatches the graph finds at run time
            raise InvalidInput(f"model {self.name!r} rejected the input: {exc}") from None
        return self.response(request, output_tensors(values, names))

    def unload(self) -> None:
        self.session = None
        self.graph = None

    def input_specs(self) -> list[TensorSpec]:
        return super().input_specs() or (self.graph.inputs if self.graph else [])

    def output_specs(self) -> list[TensorSpec]:
        return super().output_specs() or (self.graph.outputs if self.graph else [])


def _spec(node: Any) -> TensorSpec:
    datatype = ONNX_TYPES.get(node.type)
    if datatype is None:
        raise ModelLoadError(f"graph tensor {node.name!r} has unsupported type {node.type}")
    # symbolic dimensions ("batch", "N") and unknown ones are variable
    shape = [d if isinstance(d, int) and d >= 0 else -1 for d in (node.shape or [])]
    return TensorSpec(node.name, datatype, shape)
