"""Small runtimes that tests load through the registry by their dotted path
(``plugin_runtimes.Doubler``): real plugins, not mocks."""

from __future__ import annotations

import threading
from typing import ClassVar

from servekit.runtimes.base import Runtime
from servekit.tensors import InferenceRequest, InferenceResponse, Tensor

LOADED_IN: list[str] = []  # thread names that created and loaded runtimes


class Doubler(Runtime):
    """Doubles its input; row-aligned, so it is batched."""

    batch_axis: ClassVar[int | None] = 0

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        LOADED_IN.append(threading.current_thread().name)

    def load(self) -> None:
        LOADED_IN.append(threading.current_thread().name)
        self.calls = 0

    def predict(self, request: InferenceRequest) -> InferenceResponse:
        self.calls += 1
        x = request.inputs[0].data
        return self.response(request, [Tensor("doubled", x * 2)])


class Broken(Runtime):
    def load(self) -> None:
        raise RuntimeError("weights missing")


class Raiser(Runtime):
    """Fails every prediction the way a model with a shape bug does."""

    def predict(self, request: InferenceRequest) -> InferenceResponse:
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied (1x9 and 10x16)")
