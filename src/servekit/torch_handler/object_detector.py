"""``object_detector``: TorchServe's built-in object detection handler.

Input: one image per request (raw bytes, base64 text or a form field), fed to
the model at its own size as RGB values in [0, 1] (TorchServe's
``transforms.ToTensor()``; detection models resize and normalise inside).
Output per image: one ``{label: [x1, y1, x2, y2], "score": s}`` object per
detection scoring at least ``threshold`` (0.5), labels named by
``index_to_name.json`` (the class index as text without one).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from servekit.torch_handler.base_handler import label_of
from servekit.torch_handler.vision_handler import VisionHandler, to_tensor_rgb


class ObjectDetector(VisionHandler):
    threshold = 0.5

    def initialize(self, context: Any) -> None:
        self.image_processing = to_tensor_rgb
        super().initialize(context)
        config = self.model_yaml_config.get("handler") or {}
        self.threshold = float(config.get("threshold", self.threshold))

    def postprocess(self, data: Any) -> list[Any]:
        out: list[Any] = []
        for row in data:
            scores = np.asarray(row["scores"].tolist(), dtype=np.float64).reshape(-1)
            keep = scores >= self.threshold
            boxes = np.asarray(row["boxes"].tolist(), dtype=np.float64).reshape(-1, 4)[keep]
            labels = np.asarray(row["labels"].tolist()).reshape(-1)[keep]
            out.append([
                {label_of(self.mapping, int(label)): box.tolist(), "score": float(score)}
                for label, box, score in zip(labels, boxes, scores[keep], strict=True)
            ])
        return out
