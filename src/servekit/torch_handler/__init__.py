"""TorchServe-style handlers: ``servekit.torch_handler.base_handler.BaseHandler``
is ``ts.torch_handler.base_handler.BaseHandler`` with ``ts`` replaced by
``servekit``; the built-in handlers keep TorchServe's names."""

BUILTIN_HANDLERS: dict[str, str] = {
    "base_handler": "servekit.torch_handler.base_handler:BaseHandler",
    "vision_handler": "servekit.torch_handler.vision_handler:VisionHandler",
    "image_classifier": "servekit.torch_handler.image_classifier:ImageClassifier",
    "object_detector": "servekit.torch_handler.object_detector:ObjectDetector",
    "image_segmenter": "servekit.torch_handler.image_segmenter:ImageSegmenter",
    "text_classifier": "servekit.torch_handler.text_classifier:TextClassifier",
}

__all__ = ["BUILTIN_HANDLERS"]
