"""``VisionHandler``: decodes each request's image with Pillow (raw bytes or
base64 text) and turns it into a CHW float tensor with numpy - no torchvision.

Transform settings come from the model config YAML (``--config-file``),
section ``handler``: ``image_size`` (``28`` or ``[h, w]``: resize to exactly
that), else ``resize`` (shorter side, default 256) then ``crop`` (centre,
default 224); ``grayscale`` (default false: RGB); ``mean`` / ``std``
(default ImageNet's for RGB, none for grayscale).
"""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np

from servekit.errors import InvalidInput
from servekit.torch_handler.base_handler import BaseHandler

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageTransform:
    """Resize / crop / colour mode / scale to [0, 1] / normalise, as numpy."""

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        config = config or {}
        size = config.get("image_size")
        self.size: tuple[int, int] | None = None
        if size is not None:
            self.size = (int(size), int(size)) if isinstance(size, int | str) else (int(size[0]), int(size[1]))
        self.resize = int(config.get("resize", 256))
        self.crop = int(config.get("crop", 224))
        self.grayscale = bool(config.get("grayscale", False))
        default_mean = None if self.grayscale else IMAGENET_MEAN
        default_std = None if self.grayscale else IMAGENET_STD
        mean, std = config.get("mean", default_mean), config.get("std", default_std)
        self.mean = None if mean is None else np.asarray(mean, np.float32).reshape(-1, 1, 1)
        self.std = None if std is None else np.asarray(std, np.float32).reshape(-1, 1, 1)

    def __call__(self, image: Any) -> np.ndarray:
        from PIL import Image

        image = image.convert("L" if self.grayscale else "RGB")
        if self.size is not None:
            image = image.resize((self.size[1], self.size[0]), Image.Resampling.BILINEAR)
        else:
            width, height = image.size
            scale = self.resize / min(width, height)
            image = image.resize(
                (max(1, round(width * scale)), max(1, round(height * scale))), Image.Resampling.BILINEAR
            )
            width, height = image.size
            left, top = (width - self.crop) // 2, (height - self.crop) // 2
            image = image.crop((left, top, left + self.crop, top + self.crop))
        array = np.asarray(image, dtype=np.float32) / 255.0
        array = array[None, :, :] if array.ndim == 2 else array.transpose(2, 0, 1)
        if self.mean is not None:
            array = array - self.mean
        if self.std is not None:
            array = array / self.std
        return np.ascontiguousarray(array, dtype=np.float32)


def to_tensor_rgb(image: Any) -> np.ndarray:
    """The image at its own size as RGB values in [0, 1], channels first
    (torchvision's ``ToTensor``), for models that resize and normalise inside."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return np.ascontiguousarray(array.transpose(2, 0, 1))


def decode_image(value: Any) -> Any:
    """A Pillow image from raw bytes or base64 text; InvalidInput otherwise."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(value, str):
        try:
            value = base64.b64decode(value, validate=True)
        except ValueError:
            raise InvalidInput("the image text is not base64") from None
    if not isinstance(value, bytes | bytearray):
        raise InvalidInput("send the image file as the request body (curl -T image.png) or as form field 'data'")
    try:
        image = Image.open(io.BytesIO(value))
        image.load()
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise InvalidInput(f"the request body is not an image Pillow can read: {exc}") from None
    return image


class VisionHandler(BaseHandler):
    """Images in, a batch tensor out; subclasses choose the post-processing."""

    image_processing: Any = None

    def initialize(self, context: Any) -> None:
        super().initialize(context)
        from PIL import Image

        if not context.system_properties.get("limit_max_image_pixels", True):
            Image.MAX_IMAGE_PIXELS = None
        if self.image_processing is None:
            self.image_processing = ImageTransform(self.model_yaml_config.get("handler"))

    def preprocess(self, data: list[dict[str, Any]]) -> Any:
        import torch

        images = []
        for row in data:
            value = row.get("data") if isinstance(row, dict) else row
            if value is None and isinstance(row, dict):
                value = row.get("body")
            if isinstance(value, list):  # already pixel values
                images.append(np.asarray(value, dtype=np.float32))
                continue
            images.append(self.image_processing(decode_image(value)))
        return torch.as_tensor(np.stack(images), device=self.device)
