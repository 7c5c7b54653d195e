"""PyTorch models: a model class file plus a state dict or a checkpoint dict
(``{"model_state_dict": …}``), TorchScript files and ``torch.export`` programs
(``.pt2``).

Settings (``parameters.extra``): ``model_class`` (``"model.py:Net"`` or
``"Net"``; by default the only ``nn.Module`` subclass in the folder's ``.py``
files), ``init_kwargs`` for its constructor, ``threads`` (torch CPU threads),
``input_dtype`` (default: the dtype of the model's parameters, float32).
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import sys
import zipfile
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from servekit.errors import InvalidInput, ModelLoadError
from servekit.runtimes.base import Runtime
from servekit.tensors import InferenceRequest, InferenceResponse, Tensor, TensorSpec

log = logging.getLogger("servekit.runtimes.torch")

TORCH_SUFFIXES = (".pt", ".pth", ".pt2", ".bin")
STATE_DICT_KEYS = ("model_state_dict", "state_dict", "model")
# float32 holds every integer up to 2**24 exactly; larger ones would silently change
_FLOAT32_EXACT_INT = 2**24


class TorchRuntime(Runtime):
    """Serves one ``torch.nn.Module`` (eager, TorchScript or exported)."""

    platform: ClassVar[str] = "pytorch"
    batch_axis: ClassVar[int | None] = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.module: Any = None
        self.kind = ""
        self.input_dtype: np.dtype[Any] = np.dtype(np.float32)

    # -- loading ------------------------------------------------------------
    def load(self) -> None:
        import torch

        extra = self.settings.parameters.extra
        threads = extra.get("threads") or extra.get("num_threads")
        if threads:
            torch.set_num_threads(int(threads))
        path = self.model_path()
        self.module = load_module(path, extra)
        if path.suffix != ".pt2":  # exported programs are already in inference form
            self.module.eval()
        self.input_dtype = np.dtype(str(extra.get("input_dtype") or _param_dtype(self.module)))
        self.ready = True

    def model_path(self) -> Path:
        path = self.settings.resolved_uri()
        if path is None:
            raise ModelLoadError(f"model {self.name!r} has no parameters.uri and no folder")
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in TORCH_SUFFIXES)
            if not found:
                raise ModelLoadError(f"no PyTorch file ({', '.join(TORCH_SUFFIXES)}) in {path}")
            path = found[0]
        if not path.exists():
            raise ModelLoadError(f"model file {path} does not exist")
        return path

    def unload(self) -> None:
        self.module = None

    # -- inference ----------------------------------------------------------
    def predict(self, request: InferenceRequest) -> InferenceResponse:
        import torch

        if not request.inputs:
            raise InvalidInput("the request has no inputs; send the model's input tensors")
        args = [torch.from_numpy(self.cast(t)) for t in request.inputs]
        with torch.inference_mode():
            try:
                result = self.module(*args)
            except (RuntimeError, ValueError, TypeError, IndexError) as exc:
                shapes = ", ".join(f"{t.name}{list(t.data.shape)}" for t in request.inputs)
                raise InvalidInput(
                    f"model {self.name!r} rejected inputs {shapes}: {_first_line(exc)}"
                ) from None
        outputs = [Tensor(name, array) for name, array in named_outputs(result)]
        wanted = request.output_names
        if wanted:
            by_name = {t.name: t for t in outputs}
            missing = [n for n in wanted if n not in by_name]
            if missing:
                raise InvalidInput(
                    f"model {self.name!r} has no output {missing[0]!r}; available: "
                    f"{', '.join(by_name)}"
                )
            outputs = [by_name[n] for n in wanted]
        return self.response(request, outputs)

    def cast(self, tensor: Tensor) -> np.ndarray:
        """The input as the model's dtype, refusing casts that would change values."""
        return cast_input(tensor, self.input_dtype)

    def output_specs(self) -> list[TensorSpec]:
        return super().output_specs() or [TensorSpec("output-0", "FP32", [-1, -1])]

    def input_specs(self) -> list[TensorSpec]:
        return super().input_specs() or [TensorSpec("input-0", "FP32", [-1, -1])]


def cast_input(tensor: Tensor, dtype: np.dtype[Any]) -> np.ndarray:
    data = tensor.data
    if data.dtype == dtype:
        return np.ascontiguousarray(data)
    if data.dtype == object:
        raise InvalidInput(
            f"input {tensor.name!r} is BYTES; this PyTorch model takes numbers "
            f"({dtype.name}) - send FP32 data"
        )
    if dtype.kind == "f":
        if data.dtype.kind in "iu" and data.size and dtype.itemsize <= 4:
            largest = int(np.abs(data).max())
            if largest > _FLOAT32_EXACT_INT:
                raise InvalidInput(
                    f"input {tensor.name!r} holds integers up to {largest}, which {dtype.name} "
                    "cannot represent exactly; send FP32 data"
                )
        elif data.dtype.kind == "f" and data.dtype.itemsize > dtype.itemsize and data.size:
            finite = data[np.isfinite(data)]
            if finite.size and float(np.abs(finite).max()) > float(np.finfo(dtype).max):
                raise InvalidInput(
                    f"input {tensor.name!r} has values beyond the range of {dtype.name}"
                )
        elif data.dtype.kind not in "biuf":
            raise InvalidInput(f"cannot cast input {tensor.name!r} ({tensor.datatype}) to {dtype.name}")
        return data.astype(dtype)
    if dtype.kind in "iu" and data.dtype.kind in "biu":
        return data.astype(dtype)
    raise InvalidInput(
        f"input {tensor.name!r} is {tensor.datatype} but the model takes {dtype.name}; "
        "send integers"
    )


def named_outputs(result: Any) -> list[tuple[str, np.ndarray]]:
    """Tensors, tuples/lists of tensors and dicts of tensors as named numpy arrays."""
    if isinstance(result, dict):
        return [(str(k), _to_numpy(v)) for k, v in result.items()]
    if isinstance(result, list | tuple):
        return [(f"output-{i}", _to_numpy(v)) for i, v in enumerate(result)]
    return [("output-0", _to_numpy(result))]


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        return np.asarray(value.detach().cpu().numpy())
    return np.asarray(value)


# -- loading helpers (shared with the TorchServe BaseHandler) ------------------
def load_module(path: Path, extra: dict[str, Any] | None = None, model_file: Path | None = None) -> Any:
    """Load ``path`` as an ``nn.Module``: TorchScript, exported program, or weights
    for the class found in ``model_file`` (or the ``.py`` files next to ``path``)."""
    import torch

    extra = extra or {}
    if path.suffix == ".pt2":
        try:
            return torch.export.load(str(path)).module()
        except Exception as exc:  # torch raises many types for a bad program
            raise ModelLoadError(f"cannot load {path.name} as a torch.export program: {exc}") from exc
    if is_torchscript(path):
        try:
            return torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
        except Exception as exc:
            raise ModelLoadError(f"cannot load {path.name} as TorchScript: {exc}") from exc
    try:
        loaded = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelLoadError(
            f"cannot load {path.name} with torch.load(weights_only=True): {_first_line(exc)}. "
            "servekit does not unpickle whole modules; save model.state_dict() (or a checkpoint "
            "dict with 'model_state_dict'), TorchScript or torch.export instead"
        ) from None
    state = state_dict_of(loaded, path)
    cls = find_model_class(extra.get("model_class"), model_file, path.parent)
    kwargs = dict(extra.get("init_kwargs") or {})
    try:
        module = cls(**kwargs)
    except TypeError as exc:
        raise ModelLoadError(
            f"cannot create {cls.__name__}(): {exc}; give its arguments in "
            "parameters.extra.init_kwargs"
        ) from None
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelLoadError(
            f"{path.name} does not fit {cls.__name__}: {_first_line(exc)}"
        ) from None
    return module


def is_torchscript(path: Path) -> bool:
    """TorchScript archives are zips holding ``code/`` and ``constants.pkl``."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(n.endswith("/constants.pkl") or "/code/" in n for n in archive.namelist())


def state_dict_of(loaded: Any, path: Path) -> dict[str, Any]:
    if not isinstance(loaded, dict):
        raise ModelLoadError(f"{path.name} holds a {type(loaded).__name__}, not a state dict")
    for key in STATE_DICT_KEYS:
        inner = loaded.get(key)
        if isinstance(inner, dict):
            return strip_prefixes(inner)
    if all(hasattr(v, "shape") for v in loaded.values()):
        return strip_prefixes(loaded)
    raise ModelLoadError(
        f"{path.name} is a dict without tensors or any of {', '.join(STATE_DICT_KEYS)} "
        f"(keys: {', '.join(map(str, list(loaded)[:8]))})"
    )


def strip_prefixes(state: dict[str, Any]) -> dict[str, Any]:
    """Weights saved from ``torch.compile(model)`` or ``DataParallel(model)`` carry
    ``_orig_mod.`` / ``module.`` before every key; the plain class has none."""
    for prefix in ("_orig_mod.", "module."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def find_model_class(spec: str | None, model_file: Path | None, folder: Path) -> type[Any]:
    """The ``nn.Module`` class to fill with the weights."""
    import torch

    class_name: str | None = None
    if spec:
        file_part, _, name_part = spec.rpartition(":")
        if file_part:
            model_file, class_name = folder / file_part, name_part or None
        elif spec.endswith(".py"):
            model_file = folder / spec
        else:
            class_name = spec
    files = [model_file] if model_file is not None else sorted(folder.glob("*.py"))
    candidates: list[type[Any]] = []
    for file in files:
        module = import_file(file)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            ours = issubclass(obj, torch.nn.Module) and obj.__module__ == module.__name__
            if ours and (class_name is None or obj.__name__ == class_name):
                candidates.append(obj)
    if len(candidates) == 1:
        return candidates[0]
    where = ", ".join(f.name for f in files) or f"no .py file in {folder}"
    if not candidates:
        raise ModelLoadError(
            f"no nn.Module subclass{' named ' + class_name if class_name else ''} in {where}; "
            "give the model class file (parameters.extra.model_class = 'model.py:Net')"
        )
    names = ", ".join(c.__name__ for c in candidates)
    raise ModelLoadError(
        f"several nn.Module classes in {where} ({names}); choose one with "
        "parameters.extra.model_class"
    )


def import_file(path: Path) -> Any:
    """Import a user's ``.py`` file by path (its folder goes on ``sys.path`` so
    that it can import its neighbours)."""
    if not path.is_file():
        raise ModelLoadError(f"model class file {path} does not exist")
    folder = str(path.parent.resolve())
    if folder not in sys.path:
        sys.path.insert(0, folder)
    name = f"servekit_user_{abs(hash(str(path.resolve())))}_{path.stem}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ModelLoadError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise ModelLoadError(f"importing {path.name} failed: {type(exc).__name__}: {exc}") from exc
    return module


def _param_dtype(module: Any) -> str:
    try:
        for param in module.parameters():
            return str(param.dtype).replace("torch.", "")
    except (AttributeError, RuntimeError):
        pass
    return "float32"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
