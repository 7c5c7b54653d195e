"""Handlers as a servekit runtime.

The request is a BYTES tensor ``data`` of shape ``[n, 1]`` - one element per
request body - plus an optional ``meta`` BYTES tensor (one JSON object per
request: its headers, the form field it came from and other form fields). The
adaptive batcher merges concurrent requests, and ``handle`` is called on
chunks of at most the model's ``batch_size`` (``parameters.extra.batch_size``,
else ``max_batch_size``), so it gets TorchServe's ``data`` list. The response
holds ``output`` (the encoded result per request) and ``meta`` (content type
and status per request).

torch's intra-op threads are set to one fewer than the worker's share of the
cores (at least one; ``parameters.extra.threads`` chooses): the same process
parses requests on its event loop, and per-request batches are too small for
a thread team to pay for the cores it takes from it.

The model is a TorchServe archive (``.mar``, ``.tar.gz`` or an unpacked
folder), or a folder whose ``model-settings.json`` names the handler and
files in ``parameters.extra`` (``handler``, ``serialized_file``,
``model_file``, ``config_file``).
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import orjson

from servekit.archive.manifest import Manifest
from servekit.archive.reader import is_archive, open_archive
from servekit.errors import InvalidInput, ModelLoadError, ModelNotReady, ServekitError
from servekit.repository.discovery import public_reason
from servekit.runtimes.base import Runtime
from servekit.tensors import InferenceRequest, InferenceResponse, Tensor, TensorSpec
from servekit.torch_handler import BUILTIN_HANDLERS
from servekit.torch_handler.compat import alias_ts_package
from servekit.torch_handler.context import Context, RequestInfo
from servekit.torch_handler.spec import check_handler, file_inside

log = logging.getLogger("servekit.torch_handler")

Entry = Callable[[Any, Any], Any]


class HandlerRuntime(Runtime):
    platform: ClassVar[str] = "torchserve"
    batch_axis: ClassVar[int | None] = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.entry: Entry | None = None
        self.context: Context | None = None
        self.manifest: Manifest | None = None
        self.model_dir: Path | None = None
        self.batch_size = 1

    def load(self) -> None:
        extra = self.settings.parameters.extra
        self.model_dir, self.manifest = self._locate()
        spec = str(extra.get("handler") or self.manifest.handler)
        config = _read_yaml(self.model_dir, self.manifest.config_file)
        batch_size = int(extra.get("batch_size") or max(1, self.settings.max_batch_size))
        self.batch_size = max(1, batch_size)
        self.context = Context(
            model_name=self.name,
            model_dir=str(self.model_dir),
            manifest=self.manifest.raw or self.manifest.to_dict(),
            batch_size=batch_size,
            model_yaml_config=config,
        )
        try:
            entry, initialize = resolve_handler(spec, self.model_dir)
            initialize(self.context)
        except ModelLoadError as exc:
            raise _missing_torchvision(exc, exc.message) from None
        except ServekitError:
            raise
        except Exception as exc:
            if _torchvision_missing(exc):
                raise _missing_torchvision(exc, f"handler {spec!r} failed to initialize") from None
            log.warning("Handler %r of model %r failed to initialize", spec, self.name, exc_info=True)
            detail = public_reason(f"{type(exc).__name__}: {exc}", [self.model_dir])
            raise ModelLoadError(f"handler {spec!r} failed to initialize: {detail}") from None
        self.entry = entry
        set_torch_threads(extra.get("threads"))
        self.ready = True

    def _locate(self) -> tuple[Path, Manifest]:
        path = self.settings.resolved_uri()
        if path is None:
            raise ModelLoadError(f"model {self.name!r} has no parameters.uri and no folder")
        if path.is_dir() and not is_archive(path):
            archives = sorted(p for p in path.iterdir() if p.is_file() and is_archive(p))
            if len(archives) == 1:
                path = archives[0]
            elif self.settings.parameters.extra.get("handler"):
                return path, _manifest_from_settings(self.name, self.settings.parameters.extra)
        return open_archive(path)

    def unload(self) -> None:
        self.entry = None
        self.context = None

    def predict(self, request: InferenceRequest) -> InferenceResponse:
        assert self.entry is not None and self.context is not None
        bodies = _column(request, "data") if _has(request, "data") else _column(request, request.inputs[0].name)
        metas = _column(request, "meta") if _has(request, "meta") else [b""] * len(bodies)
        rows, infos = [], []
        for body, meta_bytes in zip(bodies, metas, strict=True):
            row, info = _row(body, meta_bytes)
            rows.append(row)
            infos.append(info)
        # a failing chunk fails the call; the batcher then runs each request on its own
        results: list[Any] = []
        for start in range(0, len(rows), self.batch_size):
            end = start + self.batch_size
            results += self._handle(rows[start:end], infos[start:end])
        outputs = np.empty((len(rows), 1), dtype=object)
        meta_out = np.empty((len(rows), 1), dtype=object)
        for i, (result, info) in enumerate(zip(results, infos, strict=True)):
            body, content_type = encode_result(result)
            headers = dict(info.response_headers)
            meta = {"content_type": headers.pop("content-type", content_type), "status": info.status}
            if headers:
                meta["headers"] = headers
            outputs[i, 0] = body
            meta_out[i, 0] = orjson.dumps(meta)
        return self.response(
            request, [Tensor("output", outputs, "BYTES"), Tensor("meta", meta_out, "BYTES")]
        )

    def _handle(self, rows: list[dict[str, Any]], infos: list[RequestInfo]) -> list[Any]:
        """One ``handle(data, context)`` call, TorchServe's way."""
        assert self.entry is not None and self.context is not None
        self.context.begin(infos)
        try:
            results = self.entry(rows, self.context)
        except ServekitError:
            raise
        except Exception as exc:
            log.info("Handler of %r failed: %s: %s", self.name, type(exc).__name__, exc)
            raise InvalidInput(
                f"the handler of model {self.name!r} could not process the request: "
                f"{type(exc).__name__}: {exc}"
            ) from None
        if not isinstance(results, list) or len(results) != len(rows):
            got = len(results) if isinstance(results, list) else type(results).__name__
            raise ServekitError(
                f"the handler of model {self.name!r} returned {got} results for {len(rows)} "
                "requests; handle() must return a list with one result per request"
            )
        return results

    def input_specs(self) -> list[TensorSpec]:
        return super().input_specs() or [TensorSpec("data", "BYTES", [-1, 1])]

    def output_specs(self) -> list[TensorSpec]:
        return super().output_specs() or [
            TensorSpec("output", "BYTES", [-1, 1]),
            TensorSpec("meta", "BYTES", [-1, 1]),
        ]


def _torchvision_missing(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or what caused it) is torchvision failing to import."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] == "torchvision":
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _missing_torchvision(exc: Exception, message: str) -> Exception:
    """The load failure, saying how to install torchvision when that is what is missing."""
    if not _torchvision_missing(exc):
        return exc
    return ModelLoadError(
        f"{message}: torchvision is not installed, and this model's handler or model file imports it; "
        "install the torch extra, which brings the torchvision built for servekit's torch: "
        "pip install 'servekit[torch]'"
    )


def set_torch_threads(threads: Any) -> None:
    """torch's intra-op threads for handler models (when the handler uses torch):
    ``threads`` if given, else one fewer than the worker's share of the cores."""
    torch = sys.modules.get("torch")
    if torch is None:
        return
    if threads:
        try:
            torch.set_num_threads(max(1, int(threads)))
        except (TypeError, ValueError):
            raise ModelLoadError(f"parameters.extra.threads must be a number, got {threads!r}") from None
        return
    share = int(os.environ.get("OMP_NUM_THREADS") or 0) or (os.cpu_count() or 1)
    torch.set_num_threads(max(1, share - 1))


def encode_result(result: Any) -> tuple[bytes, str]:
    """A handler's result for one request as a body and its content type."""
    if isinstance(result, bytes | bytearray):
        return bytes(result), "application/octet-stream"
    if isinstance(result, str):
        return result.encode("utf-8"), "text/plain; charset=utf-8"
    if hasattr(result, "tolist"):
        result = result.tolist()
    return orjson.dumps(result, option=orjson.OPT_SERIALIZE_NUMPY), "application/json"


def resolve_handler(spec: str, model_dir: Path) -> tuple[Entry, Callable[[Any], Any]]:
    """(entry point ``fn(data, context)``, initializer) for a manifest's handler:
    a built-in name, or a ``.py`` file inside ``model_dir`` (``file.py``, or
    the module name ``file``) with one handler class or a module-level
    ``handle``, or ``file.py:function``. Anything else (a file elsewhere on
    disk, an installed module such as ``builtins:print``) is refused."""
    alias_ts_package()
    try:
        parsed = check_handler(spec, model_dir)
    except InvalidInput as exc:
        raise ModelLoadError(exc.message) from None
    path = parsed.path_in(model_dir)
    if path is None:  # a built-in handler, not shadowed by a file of the archive
        module_name, _, cls_name = BUILTIN_HANDLERS[str(parsed.builtin)].partition(":")
        cls = getattr(importlib.import_module(module_name), cls_name)
        return _instance_entry(cls())
    from servekit.runtimes.torch import import_file

    module = import_file(path)
    function = parsed.function
    if function:
        fn = getattr(module, function, None)
        if not callable(fn):
            raise ModelLoadError(f"handler file {parsed.file} has no function {function!r}")
        return fn, lambda context: fn(None, context)
    classes = [
        obj for _, obj in inspect.getmembers(module, inspect.isclass)
        if obj.__module__ == module.__name__ and callable(getattr(obj, "handle", None))
    ]
    if len(classes) == 1:
        return _instance_entry(classes[0]())
    fn = getattr(module, "handle", None)
    if not classes and callable(fn):
        return fn, lambda context: fn(None, context)
    found = ", ".join(c.__name__ for c in classes) or "none"
    raise ModelLoadError(
        f"handler {spec!r} must define exactly one handler class or a handle(data, context) "
        f"function (classes found: {found}); or name one as 'file.py:function'"
    )


def _instance_entry(instance: Any) -> tuple[Entry, Callable[[Any], Any]]:
    initialize = getattr(instance, "initialize", None)
    return instance.handle, (initialize if callable(initialize) else (lambda context: None))


def _manifest_from_settings(name: str, extra: dict[str, Any]) -> Manifest:
    return Manifest(
        model_name=name,
        handler=str(extra["handler"]),
        serialized_file=extra.get("serialized_file"),
        model_file=extra.get("model_file"),
        config_file=extra.get("config_file"),
    )


def _read_yaml(folder: Path, name: str | None) -> dict[str, Any]:
    if not name:
        return {}
    import yaml

    path = file_inside(folder, name, "configFile")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ModelLoadError(f"cannot read the model config {name}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ModelLoadError(f"cannot read the model config {name}: {exc}") from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"the model config {name} must be a YAML mapping")
    return data


def _has(request: InferenceRequest, name: str) -> bool:
    return any(t.name == name for t in request.inputs)


def _column(request: InferenceRequest, name: str) -> list[bytes | bytearray]:
    tensor = request.input(name)
    if tensor.data.dtype != object:
        raise InvalidInput(
            f"input {name!r} must be BYTES: one request body per element (this model runs a handler)"
        )
    # bodies may come as bytearray (servekit's HTTP server), as TorchServe hands them to handlers
    return [v if isinstance(v, bytes | bytearray) else str(v).encode() for v in tensor.data.reshape(-1)]


def _row(body: bytes | bytearray, meta_bytes: bytes | bytearray) -> tuple[dict[str, Any], RequestInfo]:
    """TorchServe's per-request dict: the payload under its field name, JSON
    decoded for JSON content, text decoded for text content."""
    if not meta_bytes:
        return {"data": body}, RequestInfo()
    meta = orjson.loads(meta_bytes)
    headers = {str(k).lower(): str(v) for k, v in (meta.get("headers") or {}).items()}
    info = RequestInfo(headers=headers, request_id=str(meta.get("request_id") or ""))
    row: dict[str, Any] = dict(meta.get("fields") or {})
    row[str(meta.get("field") or "body")] = decode_payload(body, meta.get("content_type") or headers.get("content-type"))
    return row, info


def decode_payload(body: bytes | bytearray, content_type: str | None) -> Any:
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind == "application/json":
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            return body
    if kind.startswith("text/"):
        return body.decode("utf-8", "replace")
    return body


class NoWorkers(Runtime):
    """A registered TorchServe model with no workers: it imports nothing (not
    its handler, not torch) and answers 503 until it is scaled up, when the
    registry loads the archive's handler in its place
    (:func:`servekit.archive.store.effective`)."""

    platform: ClassVar[str] = "torchserve"

    def load(self) -> None:
        self.ready = True

    def predict(self, request: InferenceRequest) -> InferenceResponse:
        raise ModelNotReady(
            f"No worker is available to serve request for model {self.name!r}: it is scaled to 0 workers "
            f"(PUT /models/{self.name}?min_worker=1 on the management API)"
        )

    def input_specs(self) -> list[TensorSpec]:
        return [TensorSpec("data", "BYTES", [-1, 1])]

    def output_specs(self) -> list[TensorSpec]:
        return [TensorSpec("output", "BYTES", [-1, 1]), TensorSpec("meta", "BYTES", [-1, 1])]
