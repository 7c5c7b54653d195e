"""The runtime plugin interface: ``load``, ``predict``, ``unload``, ``metadata``."""

from __future__ import annotations

from typing import Any, ClassVar

from servekit.config import ModelSettings
from servekit.tensors import (
    InferenceRequest,
    InferenceResponse,
    ModelMetadata,
    Tensor,
    TensorSpec,
)


class Runtime:
    """Base class of every runtime, framework or user code.

    The registry creates and loads a runtime in a thread, never on the event
    loop. ``predict`` is called by the version's :class:`~servekit.invoker.Invoker`,
    one call at a time (the adaptive batcher serialises them): a synchronous
    ``predict`` runs in a thread of the registry's pool, except that a model
    whose recent calls took less than ``inline_predict_ms`` (0.1 ms by default;
    0 turns this off) runs small requests inline on the event loop, where a
    thread hand-off would cost more than the call. So ``predict`` must not
    block on I/O unless it is slow enough never to run inline. A runtime
    whose outputs line up row-for-row with its inputs along axis 0 sets
    ``batch_axis = 0`` and is then fed merged batches. Runtimes with an async
    ``predict`` set ``is_async = True`` and are awaited on the loop.
    """

    platform: ClassVar[str] = ""
    batch_axis: ClassVar[int | None] = None
    # with batch_axis 0: True when a 1-D input is rows too (a list of strings), so
    # requests of shape [n] are merged; by default only inputs of 2 or more
    # dimensions are (a 1-D tensor may be one instance's features)
    batch_vectors: ClassVar[bool] = False
    is_async: ClassVar[bool] = False
    # True for an async runtime whose calls may run side by side (an inference
    # graph): its batcher then neither queues nor serialises them
    concurrent: ClassVar[bool] = False
    # False for frameworks whose state does not survive fork(): such models are
    # loaded in each worker instead of once before the workers fork
    fork_safe: ClassVar[bool] = True

    def __init__(self, settings: ModelSettings) -> None:
        self.settings = settings
        self.ready = False

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def version(self) -> str | None:
        return self.settings.parameters.version

    def load(self) -> None:
        """Load the model; raise to mark the version UNAVAILABLE with the message."""

    def predict(self, request: InferenceRequest) -> InferenceResponse:
        raise NotImplementedError

    def plain_features(self, data: Any) -> Any:
        """What :meth:`plain_output` takes for the commonest request: one input
        tensor of values ``data`` (a numpy array), no ``outputs`` asked for, no
        parameters. None, the default, with nothing done, when :meth:`predict`
        is to answer it (errors included)."""
        return None

    def plain_output(self, features: Any) -> Tensor:
        """The one output :meth:`predict` would answer that request with
        (called only with what :meth:`plain_features` gave)."""
        raise NotImplementedError

    def unload(self) -> None:
        """Release what ``load`` acquired."""

    def input_specs(self) -> list[TensorSpec]:
        return [_spec(d) for d in self.settings.inputs]

    def output_specs(self) -> list[TensorSpec]:
        return [_spec(d) for d in self.settings.outputs]

    def metadata(self) -> ModelMetadata:
        return ModelMetadata(
            name=self.name,
            platform=self.settings.platform or self.platform,
            versions=[self.version] if self.version else [],
            inputs=self.input_specs(),
            outputs=self.output_specs(),
        )

    def response(
        self, request: InferenceRequest, outputs: list[Tensor], **parameters: Any
    ) -> InferenceResponse:
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            id=request.id,
            outputs=outputs,
            parameters=dict(parameters),
        )


def _spec(data: dict[str, Any]) -> TensorSpec:
    return TensorSpec(
        name=str(data.get("name", "")),
        datatype=str(data.get("datatype", "")),
        shape=[int(d) for d in data.get("shape", [])],
        parameters=dict(data.get("parameters") or {}),
    )
