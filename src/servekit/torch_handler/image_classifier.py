"""``image_classifier``: TorchServe's built-in image classification handler -
softmax, then the top ``topk`` classes named by ``index_to_name.json``."""

from __future__ import annotations

from typing import Any

from servekit.torch_handler.base_handler import label_of
from servekit.torch_handler.vision_handler import VisionHandler


class ImageClassifier(VisionHandler):
    """One ``{label: probability}`` object per image, best first."""

    topk = 5

    def initialize(self, context: Any) -> None:
        super().initialize(context)
        config = self.model_yaml_config.get("handler") or {}
        self.topk = int(config.get("topk", self.topk))

    def set_max_result_classes(self, topk: int) -> None:
        self.topk = topk

    def get_max_result_classes(self) -> int:
        return self.topk

    def postprocess(self, data: Any) -> list[Any]:
        import torch

        probabilities = torch.nn.functional.softmax(data, dim=1)
        k = min(self.topk, probabilities.shape[1])
        values, indexes = torch.topk(probabilities, k, dim=1)
        out = []
        for row_values, row_indexes in zip(values.tolist(), indexes.tolist(), strict=True):
            out.append({label_of(self.mapping, i): p for i, p in zip(row_indexes, row_values, strict=True)})
        return out
