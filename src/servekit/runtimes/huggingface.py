"""Hugging Face models from a local folder: a ``transformers`` pipeline of a text
task, or a ``sentence-transformers`` model.

Settings are MLServer's HuggingFace runtime's, under ``parameters.extra``:
``task`` (and ``task_suffix``), ``pretrained_model``, ``pretrained_tokenizer``,
``model_kwargs``, ``framework`` (``pt``), ``device``, ``inter_op_threads``,
``intra_op_threads``; ``MLSERVER_MODEL_HUGGINGFACE_<NAME>`` variables fill the
ones a model's settings leave out. The model is the folder of
``pretrained_model`` (relative to the model's folder), else ``parameters.uri``,
else the model's folder. Nothing is downloaded, ever: the process runs with the
Hub's offline mode on (``HF_HUB_OFFLINE``, ``TRANSFORMERS_OFFLINE``), and a
``pretrained_model`` that is no folder is looked up as a Hub id in the local
Hugging Face cache only (where ``hf download`` put it); missing there, the model
does not load and says how to fetch it.

Requests carry strings (BYTES): one input is the list of texts (shape ``[n]``
or ``[n, 1]``); with several inputs, each is a keyword argument of the
pipeline, row by row. Each request is one pipeline call over its strings, and
concurrent requests are merged by the adaptive batcher into one call
(``batch_vectors``). A pipeline answers ``output``: one JSON document per
string (BYTES ``[n, 1]``, ``content_type: hg_jsonlist``, as MLServer's runtime);
a sentence-transformers model answers ``embedding``, FP32 ``[n, dim]``.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import orjson

from servekit.errors import InvalidInput, ModelLoadError, ServekitError
from servekit.runtimes.base import Runtime
from servekit.tensors import InferenceRequest, InferenceResponse, Tensor, TensorSpec

log = logging.getLogger(__name__)

# the text tasks of transformers' pipelines that servekit serves (their inputs are strings)
TEXT_TASKS = frozenset({
    "text-classification", "token-classification", "fill-mask", "feature-extraction",
    "zero-shot-classification", "text-generation",
})
TASK_ALIASES = {"sentiment-analysis": "text-classification", "ner": "token-classification"}
# a sentence-transformers model (KServe's huggingface server calls the task text_embedding)
EMBEDDING_TASKS = frozenset({"sentence-transformers", "sentence-embedding", "text_embedding"})
# files that only a sentence-transformers folder has
SENTENCE_TRANSFORMERS_FILES = ("config_sentence_transformers.json", "modules.json")
MLSERVER_ENV_PREFIX = "MLSERVER_MODEL_HUGGINGFACE_"
MLSERVER_SETTINGS = (
    "task", "task_suffix", "pretrained_model", "pretrained_tokenizer", "model_kwargs",
    "framework", "optimum_model", "device", "inter_op_threads", "intra_op_threads",
)
# input names that hold the texts (MLServer's: args, array_inputs)
TEXT_INPUTS = ("args", "array_inputs", "inputs", "text", "texts", "sentences")
DEFAULT_MAX_STRINGS = 256
DEFAULT_MAX_STRING_BYTES = 65536
DEFAULT_MAX_NEW_TOKENS = 256
# a Hub id: "name" or "owner/name"
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,95})?$")
# a tokenizer without a length limit says so with a huge number
_NO_LIMIT = 10**9
# keyword arguments that keep a string longer than the model takes from failing the call
TRUNCATE: dict[str, dict[str, Any]] = {
    "text-classification": {"truncation": True},
    "feature-extraction": {"tokenize_kwargs": {"truncation": True}},
    "fill-mask": {"tokenizer_kwargs": {"truncation": True}},
    "text-generation": {"truncation": True},
}


def offline() -> None:
    """The Hub's offline mode for the whole process, before and after the
    libraries read it: no call can download (or send telemetry)."""
    for variable in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY"):
        os.environ[variable] = "1"
    import huggingface_hub.constants

    huggingface_hub.constants.HF_HUB_OFFLINE = True  # read at import: an earlier import missed the variable


class HuggingFaceRuntime(Runtime):
    """A pipeline (JSON per string) or a sentence-transformers model (embeddings)."""

    platform: ClassVar[str] = "huggingface"
    batch_axis: ClassVar[int | None] = 0
    batch_vectors: ClassVar[bool] = True  # a list of strings: each string is a row
    # torch's and the tokenizers' thread pools are not to be forked: each worker loads its own
    fork_safe: ClassVar[bool] = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.options = self._options()
        self.task = ""
        self.folder: Path | None = None
        self.pipeline: Any = None  # transformers.Pipeline
        self.encoder: Any = None  # sentence_transformers.SentenceTransformer
        self.dimension = -1
        self.max_strings = _positive_int(self.options, "max_strings", DEFAULT_MAX_STRINGS)
        self.max_string_bytes = _positive_int(self.options, "max_string_bytes", DEFAULT_MAX_STRING_BYTES)
        self.max_new_tokens = _positive_int(self.options, "max_new_tokens", DEFAULT_MAX_NEW_TOKENS)
        self.call_kwargs: dict[str, Any] = {}
        self.calls = 0  # pipeline (or encode) calls: a merged batch is one

    # -- settings -------------------------------------------------------------
    def _options(self) -> dict[str, Any]:
        """``parameters.extra``, with MLServer's variables for the keys it leaves out."""
        options = dict(self.settings.parameters.extra)
        for key in MLSERVER_SETTINGS:
            value = os.environ.get(MLSERVER_ENV_PREFIX + key.upper())
            if value is not None and key not in options:
                options[key] = _env_value(value)
        return options

    def _resolve_task(self, folder: Path) -> str:
        task = str(self.options.get("task") or "").strip()
        task = TASK_ALIASES.get(task, task)
        if task == "translation" or self.options.get("task_suffix"):
            raise ModelLoadError(
                f"model {self.name!r}: task {task + str(self.options.get('task_suffix') or '')!r} is not "
                f"served; servekit serves {', '.join(sorted(TEXT_TASKS | EMBEDDING_TASKS))}"
            )
        if not task:
            if any((folder / name).is_file() for name in SENTENCE_TRANSFORMERS_FILES):
                return "sentence-transformers"
            raise ModelLoadError(
                f"model {self.name!r}: set parameters.extra.task to the pipeline's task (one of "
                f"{', '.join(sorted(TEXT_TASKS))}, or sentence-transformers); {folder} is no "
                "sentence-transformers folder (no modules.json)"
            )
        if task in EMBEDDING_TASKS:
            return "sentence-transformers"
        if task not in TEXT_TASKS:
            raise ModelLoadError(
                f"model {self.name!r}: task {task!r} is not served; servekit serves the text tasks "
                f"{', '.join(sorted(TEXT_TASKS))} and sentence-transformers models"
            )
        return task

    def _base_folder(self) -> Path:
        path = self.settings.resolved_uri()
        if path is None:
            raise ModelLoadError(f"model {self.name!r} has no parameters.uri and no folder")
        return path.parent if path.is_file() else path

    def _local(self, value: Any, key: str, base: Path) -> Path:
        """The folder that ``value`` (a ``pretrained_*`` setting) names: a folder
        (relative to the model's), or a Hub id already in the local cache."""
        name = str(value).removeprefix("file://")
        candidate = Path(name).expanduser()
        if not candidate.is_absolute():
            candidate = base / candidate
        if candidate.is_dir():
            return self._inside(candidate, key, name)
        if not _HUB_ID.match(name):
            raise ModelLoadError(f"model {self.name!r}: {key} {name!r} is not a folder ({candidate})")
        from huggingface_hub import constants, snapshot_download

        try:
            return Path(snapshot_download(repo_id=name, local_files_only=True))
        except Exception:  # not in the cache (the library's errors vary by version)
            raise ModelLoadError(
                f"model {self.name!r}: {key} {name!r} is neither a folder ({candidate}) nor in the "
                f"Hugging Face cache ({constants.HF_HUB_CACHE}); servekit never downloads models: "
                f"fetch it once (`hf download {name}`) with HF_HOME where the server reads it, or "
                f"set {key} to a folder that holds the model"
            ) from None

    def _inside(self, folder: Path, key: str, name: str) -> Path:
        """``folder`` when it is inside the model's folder: like ``parameters.uri``,
        which must stay inside the repository, a ``pretrained_*`` folder may not
        reach elsewhere (use ``parameters.uri`` for a folder elsewhere in the repository)."""
        own = self.settings.source_dir
        if not own:
            return folder
        root = Path(own).resolve()
        resolved = folder.resolve()
        if resolved != root and root not in resolved.parents:
            raise ModelLoadError(
                f"model {self.name!r}: {key} {name!r} resolves outside the model's folder; put the "
                "files inside it, or name the folder in parameters.uri (inside the repository)"
            )
        return folder

    # -- loading ----------------------------------------------------------------
    def load(self) -> None:
        offline()
        options = self.options
        if _truthy(options.get("optimum_model")):
            raise ModelLoadError(
                f"model {self.name!r}: optimum_model is not supported; export the model to ONNX "
                "and serve it with the onnx runtime, or leave optimum_model out"
            )
        framework = options.get("framework")
        if framework not in (None, "", "pt"):
            raise ModelLoadError(
                f"model {self.name!r}: framework {framework!r} is not served; servekit runs "
                "PyTorch models (framework 'pt')"
            )
        base = self._base_folder()
        pretrained = options.get("pretrained_model")
        folder = self._local(pretrained, "pretrained_model", base) if pretrained else base
        if not folder.is_dir():
            raise ModelLoadError(f"model {self.name!r}: {folder} is not a folder")
        self.folder = folder
        self.task = self._resolve_task(folder)
        self._threads()
        device = _device(options.get("device"), self.name)
        if self.task == "sentence-transformers":
            self._load_encoder(folder, device)
        else:
            self._load_pipeline(folder, base, device)
        self.ready = True

    def _threads(self) -> None:
        import torch

        intra = self.options.get("intra_op_threads") or self.options.get("threads")
        if intra:
            torch.set_num_threads(int(intra))
        inter = self.options.get("inter_op_threads")
        if inter:
            try:
                torch.set_num_interop_threads(int(inter))
            except RuntimeError:  # settable once per process, before any parallel work
                log.warning("model %r: inter_op_threads not applied (torch allows it once, early)", self.name)

    def _load_pipeline(self, folder: Path, base: Path, device: str) -> None:
        import transformers

        pipeline: Any = transformers.pipeline  # its overloads name every task literally
        tokenizer_setting = self.options.get("pretrained_tokenizer")
        tokenizer = self._local(tokenizer_setting, "pretrained_tokenizer", base) if tokenizer_setting else folder
        model_kwargs = self.options.get("model_kwargs") or {}
        if not isinstance(model_kwargs, dict):
            raise ModelLoadError(f"model {self.name!r}: model_kwargs must be an object")
        batch_size = self._batch_size()
        try:
            self.pipeline = pipeline(
                self.task,
                model=str(folder),
                tokenizer=str(tokenizer),
                device=device,
                batch_size=batch_size,
                trust_remote_code=False,
                model_kwargs=model_kwargs,
            )
        except Exception as exc:
            raise ModelLoadError(
                f"model {self.name!r}: cannot load {folder} as a {self.task} pipeline: {_first_line(exc)}"
            ) from exc
        self._limit_length()
        if _truthy(self.options.get("truncation", True)):
            self.call_kwargs = dict(TRUNCATE.get(self.task, {}))
        if batch_size > 1 and self.pipeline.tokenizer is not None and self.pipeline.tokenizer.pad_token is None:
            eos = self.pipeline.tokenizer.eos_token
            if eos is None:
                raise ModelLoadError(
                    f"model {self.name!r}: its tokenizer has no padding token, so the pipeline "
                    "cannot batch strings; set parameters.extra.batch_size to 1"
                )
            self.pipeline.tokenizer.pad_token = eos

    def _batch_size(self) -> int:
        """Strings the pipeline runs through the model at once (within one call)."""
        explicit = self.options.get("batch_size")
        if self.task == "feature-extraction":
            # batches pad every string to the longest: one string's answer would depend on the others
            if explicit not in (None, 1):
                raise ModelLoadError(
                    f"model {self.name!r}: feature-extraction answers every token of a string, and a "
                    "batch would pad each to the longest string in it; leave batch_size out (1)"
                )
            return 1
        if self.task == "text-generation":
            return int(explicit or 1)
        return int(explicit or self.settings.max_batch_size or 8)

    def _limit_length(self) -> None:
        """A tokenizer saved without a length limit gets the model's position count,
        so that truncation keeps long strings inside what the model takes."""
        tokenizer = self.pipeline.tokenizer
        positions = getattr(self.pipeline.model.config, "max_position_embeddings", None)
        if tokenizer is not None and positions and (tokenizer.model_max_length or 0) > _NO_LIMIT:
            tokenizer.model_max_length = int(positions)

    def _load_encoder(self, folder: Path, device: str) -> None:
        from sentence_transformers import SentenceTransformer

        try:
            self.encoder = SentenceTransformer(
                str(folder), device=device, local_files_only=True, trust_remote_code=False
            )
        except Exception as exc:
            raise ModelLoadError(
                f"model {self.name!r}: cannot load {folder} as a sentence-transformers model: "
                f"{_first_line(exc)}"
            ) from exc
        measure = getattr(self.encoder, "get_embedding_dimension", None) or (
            self.encoder.get_sentence_embedding_dimension
        )
        self.dimension = int(measure() or -1)

    def unload(self) -> None:
        self.pipeline = None
        self.encoder = None

    # -- inference ---------------------------------------------------------------
    def predict(self, request: InferenceRequest) -> InferenceResponse:
        texts, keywords, rows = self._decode(request)
        wanted = request.output_names
        name = "embedding" if self.encoder is not None else "output"
        if wanted and wanted != [name]:
            other = next(n for n in wanted if n != name)
            raise InvalidInput(f"model {self.name!r} has no output {other!r}; it answers {name!r}")
        call = self._call_parameters(request.parameters)
        self.calls += 1
        if self.encoder is not None:
            return self.response(request, [self._embed(texts, call)])
        if rows == 0:
            out = np.empty((0, 1), dtype=object)
        else:
            try:
                results = self.pipeline(*([texts] if texts is not None else []), **keywords,
                                        **self.call_kwargs, **call)
            except (RuntimeError, ValueError, TypeError, IndexError, KeyError) as exc:
                raise InvalidInput(f"model {self.name!r} rejected the strings: {_first_line(exc)}") from None
            if rows == 1 and not (isinstance(results, list) and len(results) == 1):
                results = [results]  # some pipelines answer one string without the list
            if not isinstance(results, list) or len(results) != rows:
                raise ServekitError(f"model {self.name!r}: the pipeline did not answer once per string")
            out = np.empty((rows, 1), dtype=object)
            for i, result in enumerate(results):
                out[i, 0] = orjson.dumps(result, default=_plain, option=orjson.OPT_SERIALIZE_NUMPY)
        return self.response(request, [Tensor("output", out, "BYTES", {"content_type": "hg_jsonlist"})])

    def _embed(self, texts: list[str] | None, call: dict[str, Any]) -> Tensor:
        if texts is None:
            raise InvalidInput(f"model {self.name!r} embeds one input of strings; send one BYTES input")
        normalize = call.get("normalize_embeddings", _truthy(self.options.get("normalize_embeddings")))
        if not texts:
            return Tensor("embedding", np.empty((0, max(self.dimension, 0)), np.float32), "FP32")
        batch = int(self.options.get("batch_size") or 32)
        vectors = self.encoder.encode(texts, batch_size=batch, convert_to_numpy=True,
                                      normalize_embeddings=bool(normalize), show_progress_bar=False)
        return Tensor("embedding", np.asarray(vectors, dtype=np.float32), "FP32")

    def _decode(self, request: InferenceRequest) -> tuple[list[str] | None, dict[str, list[str]], int]:
        """(the texts, or None when every input is a keyword; keyword inputs; rows)."""
        if not request.inputs:
            raise InvalidInput(
                f"model {self.name!r} takes strings: send a BYTES input such as "
                '{"name": "args", "datatype": "BYTES", "shape": [1], "data": ["some text"]}'
            )
        if len(request.inputs) > 8:
            raise InvalidInput(f"model {self.name!r} takes at most 8 inputs; the request has {len(request.inputs)}")
        texts: list[str] | None = None
        keywords: dict[str, list[str]] = {}
        rows = -1
        for tensor in request.inputs:
            strings = self._strings(tensor, request.batch_size)
            if rows >= 0 and len(strings) != rows:
                raise InvalidInput(
                    f"inputs of model {self.name!r} are rows of one table: input {tensor.name!r} has "
                    f"{len(strings)} strings, another {rows}"
                )
            rows = len(strings)
            if len(request.inputs) == 1 or tensor.name in TEXT_INPUTS:
                if texts is not None:
                    raise InvalidInput(f"model {self.name!r}: send the texts in one input, not two")
                texts = strings
            elif tensor.name.isidentifier():
                keywords[tensor.name] = strings
            else:
                raise InvalidInput(f"model {self.name!r}: an input's name must be an identifier")
        return texts, keywords, rows

    def _strings(self, tensor: Tensor, merged: int) -> list[str]:
        """The strings of ``tensor``; ``merged`` requests (the batcher's) may hold
        ``max_strings`` each."""
        data = tensor.data
        if tensor.datatype != "BYTES":
            raise InvalidInput(
                f"input {tensor.name!r} is {tensor.datatype}; model {self.name!r} takes strings: "
                "send datatype BYTES"
            )
        if data.ndim == 2 and data.shape[1] == 1:
            data = data[:, 0]
        elif data.ndim != 1:
            raise InvalidInput(
                f"input {tensor.name!r} has shape {list(tensor.data.shape)}; send a list of strings, "
                "shape [n] (or [n, 1])"
            )
        if len(data) > self.max_strings * max(merged, 1):
            raise InvalidInput(
                f"input {tensor.name!r} has {len(data)} strings; model {self.name!r} takes at most "
                f"{self.max_strings} in one request (max_strings): split it into several requests"
            )
        strings = []
        for i, value in enumerate(data):
            raw = value if isinstance(value, bytes) else str(value).encode()
            if len(raw) > self.max_string_bytes:
                raise InvalidInput(
                    f"string {i} of input {tensor.name!r} is {len(raw)} bytes; model {self.name!r} "
                    f"takes strings of at most {self.max_string_bytes} bytes (max_string_bytes): "
                    "shorten it"
                )
            try:
                strings.append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                raise InvalidInput(f"string {i} of input {tensor.name!r} is not UTF-8 text") from None
        return strings

    def _call_parameters(self, parameters: dict[str, Any]) -> dict[str, Any]:
        """The request's parameters that are the task's call options, checked."""
        found: dict[str, Any] = {}
        task = self.task
        for key, value in parameters.items():
            if key == "top_k" and task in ("text-classification", "fill-mask"):
                found[key] = _bounded_int(key, value, 1, 1000)
            elif key == "function_to_apply" and task == "text-classification":
                found[key] = _choice(key, value, ("softmax", "sigmoid", "none"))
            elif key == "aggregation_strategy" and task == "token-classification":
                found[key] = _choice(key, value, ("none", "simple", "first", "average", "max"))
            elif key == "candidate_labels" and task == "zero-shot-classification":
                found[key] = _labels(value)
            elif key == "multi_label" and task == "zero-shot-classification":
                found[key] = _boolean(key, value)
            elif key == "hypothesis_template" and task == "zero-shot-classification":
                if not isinstance(value, str) or "{}" not in value or len(value) > 512:
                    raise InvalidInput("parameter 'hypothesis_template' must be a string of at most 512 "
                                       "characters holding {} where the label goes")
                found[key] = value
            elif key == "max_new_tokens" and task == "text-generation":
                found[key] = _bounded_int(key, value, 1, self.max_new_tokens)
            elif (key, task) in (("return_full_text", "text-generation"),
                                 ("normalize_embeddings", "sentence-transformers")):
                found[key] = _boolean(key, value)
        if task == "zero-shot-classification" and "candidate_labels" not in found:
            raise InvalidInput(
                f"model {self.name!r} (zero-shot-classification) needs the request parameter "
                'candidate_labels, e.g. "parameters": {"candidate_labels": ["sports", "politics"]}'
            )
        if task == "text-generation" and "max_new_tokens" not in found:
            found["max_new_tokens"] = min(self.max_new_tokens, 32)
        return found

    # -- metadata ----------------------------------------------------------------
    def input_specs(self) -> list[TensorSpec]:
        return super().input_specs() or [TensorSpec("args", "BYTES", [-1], {"content_type": "str"})]

    def output_specs(self) -> list[TensorSpec]:
        declared = super().output_specs()
        if declared:
            return declared
        if self.encoder is not None or self.task == "sentence-transformers":
            return [TensorSpec("embedding", "FP32", [-1, self.dimension])]
        return [TensorSpec("output", "BYTES", [-1, 1], {"content_type": "hg_jsonlist"})]


def _plain(value: Any) -> Any:
    """What orjson cannot write itself: torch tensors and numpy scalars of other kinds."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def _env_value(value: str) -> Any:
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return value


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _positive_int(options: dict[str, Any], key: str, default: int) -> int:
    value = options.get(key, default)
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ModelLoadError(f"parameters.extra.{key} must be a positive integer, not {value!r}") from None
    if number < 1:
        raise ModelLoadError(f"parameters.extra.{key} must be a positive integer, not {value!r}")
    return number


def _device(value: Any, name: str) -> str:
    if value is None or value == "" or value == -1 or value == "-1":
        return "cpu"
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        value = f"cuda:{value}"
    text = str(value)
    if text.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ModelLoadError(f"model {name!r}: device {text!r} asks for a GPU and there is none")
    return text


def _bounded_int(key: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInput(f"parameter {key!r} must be an integer from {low} to {high}")
    return value


def _choice(key: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise InvalidInput(f"parameter {key!r} must be one of {', '.join(choices)}")
    return str(value)


def _boolean(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidInput(f"parameter {key!r} must be true or false")
    return value


def _labels(value: Any) -> list[str]:
    labels = [value] if isinstance(value, str) else value
    if (not isinstance(labels, list) or not 1 <= len(labels) <= 64
            or not all(isinstance(v, str) and 0 < len(v) <= 256 for v in labels)):
        raise InvalidInput("parameter 'candidate_labels' must be 1 to 64 strings of 1 to 256 characters")
    return labels


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text[:300] or type(exc).__name__)
