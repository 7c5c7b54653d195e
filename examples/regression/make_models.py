"""Two versions of a one-feature linear regression as ONNX files, in TF Serving's
base-path layout, made offline with onnx's helpers (no TensorFlow needed):

    python examples/regression/make_models.py saved_models
    # saved_models/1/model.onnx   y = 2x + 1
    # saved_models/2/model.onnx   y = 3x

Input ``x`` and output ``y`` are float32 of shape [-1, 1].
"""

from __future__ import annotations

import sys
from pathlib import Path

import onnx
from onnx import TensorProto, helper

VERSIONS = {1: (2.0, 1.0), 2: (3.0, 0.0)}  # version -> (slope, intercept)


def linear(slope: float, intercept: float) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["y"])],
        "regression",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])],
        [helper.make_tensor("w", TensorProto.FLOAT, [1, 1], [slope]),
         helper.make_tensor("b", TensorProto.FLOAT, [1], [intercept])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def main(base: Path) -> None:
    for version, (slope, intercept) in VERSIONS.items():
        (base / str(version)).mkdir(parents=True, exist_ok=True)
        onnx.save(linear(slope, intercept), base / str(version) / "model.onnx")
    print(f"wrote versions {', '.join(map(str, VERSIONS))} of a linear regression into {base}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "saved_models"))
