"""``image_segmenter``: TorchServe's built-in image segmentation handler.

Input: one image per request, resized (shorter side 256), centre-cropped to
224 and normalised with ImageNet's mean and std (the ``handler`` section of
the model config may change these, as for ``image_classifier``). The model
returns a dict whose ``out`` holds ``[N, classes, H, W]`` scores. Output per
image: ``[H][W][2]``, each pixel's most likely class (as a float) and its
softmax probability.
"""

from __future__ import annotations

from typing import Any

from servekit.torch_handler.vision_handler import VisionHandler


class ImageSegmenter(VisionHandler):
    def postprocess(self, data: Any) -> list[Any]:
        import torch

        scores = data["out"] if isinstance(data, dict) else data
        probabilities = torch.nn.functional.softmax(scores, dim=1)
        best = torch.max(probabilities, dim=1)
        pixels = torch.stack([best.indices.to(best.values.dtype), best.values], dim=3)
        result: list[Any] = pixels.tolist()
        return result
