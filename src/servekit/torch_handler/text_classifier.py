"""``text_classifier``: TorchServe's built-in text classification handler
(models trained on AG_NEWS-like data: an ``EmbeddingBag`` model called as
``model(token_ids, offsets)``).

Input: one text per call (TorchServe's handler takes no batch: only the first
request of a batch is used, and one result is returned). The text is cleaned
(HTML tags and entities removed, lower case, English contractions expanded,
accents and punctuation removed), split into words the way torchtext's
``basic_english`` tokenizer does, extended with its word bigrams, and looked
up in the archive's vocabulary (``source_vocab.pt``, or the manifest's
``sourceVocab``): a ``{token: index}`` dict or any object indexed by token.
Output: ``[{label: probability, …}]`` over every class, labels from
``index_to_name.json``.
"""

from __future__ import annotations

import re
import string
import unicodedata
from pathlib import Path
from typing import Any

from servekit.errors import InvalidInput, ModelLoadError
from servekit.torch_handler.base_handler import BaseHandler, label_of
from servekit.torch_handler.spec import file_inside

VOCAB_FILE = "source_vocab.pt"
NGRAMS = 2
_MARKUP = re.compile(r"<.*?>|&([a-z0-9]+|#[0-9]{1,6}|#x[0-9a-f]{1,6});")
# the common English contractions (the rest keep their letters, apostrophe removed)
_CONTRACTIONS = {
    "can't": "cannot", "won't": "will not", "shan't": "shall not", "ain't": "is not",
    "let's": "let us", "y'all": "you all",
}
_SUFFIXES = (("n't", " not"), ("'re", " are"), ("'ll", " will"), ("'ve", " have"), ("'d", " would"),
             ("'m", " am"))
_WORD = re.compile(r"\b[\w]+'[\w]+\b")
# torchtext's basic_english: space out punctuation, drop quotes, split on white space
_SPACED = [(re.compile(p), r) for p, r in (
    (r"\'", " '  "), (r"\"", ""), (r"\.", " . "), (r"<br \/>", " "), (r",", " , "), (r"\(", " ( "),
    (r"\)", " ) "), (r"\!", " ! "), (r"\?", " ? "), (r"\;", " "), (r"\:", " "), (r"\s+", " "),
)]


def basic_english(text: str) -> list[str]:
    text = text.lower()
    for pattern, replacement in _SPACED:
        text = pattern.sub(replacement, text)
    return text.split()


def with_ngrams(tokens: list[str], n: int) -> list[str]:
    out = list(tokens)
    for size in range(2, n + 1):
        out += [" ".join(tokens[i : i + size]) for i in range(len(tokens) - size + 1)]
    return out


def _expand(match: re.Match[str]) -> str:
    word = match.group(0)
    lower = word.lower()
    if lower in _CONTRACTIONS:
        expanded = _CONTRACTIONS[lower]
    else:
        expanded = next((lower[: -len(s)] + r for s, r in _SUFFIXES if lower.endswith(s)), lower)
    return word[0] + expanded[1:]


def clean(text: str) -> str:
    text = _MARKUP.sub("", text).lower()
    text = _WORD.sub(_expand, text).replace("'", "")
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return text.translate(str.maketrans("", "", string.punctuation))


class TextClassifier(BaseHandler):
    ngrams = NGRAMS

    def __init__(self) -> None:
        super().__init__()
        self.source_vocab: Any = None

    def initialize(self, context: Any) -> None:
        super().initialize(context)
        import torch

        model_dir = str(context.system_properties.get("model_dir"))
        named = ((self.manifest or {}).get("model") or {}).get("sourceVocab")
        path = file_inside(model_dir, named, "sourceVocab") if named else Path(model_dir) / VOCAB_FILE
        if not path.is_file():
            raise ModelLoadError(
                f"text_classifier needs the vocabulary {VOCAB_FILE} in the archive (--extra-files) "
                "or named by the manifest's sourceVocab"
            )
        try:
            self.source_vocab = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # a torchtext Vocab object needs the full unpickler
            self.source_vocab = torch.load(path, map_location="cpu", weights_only=False)

    def token_index(self, token: str) -> int:
        vocab = self.source_vocab
        if isinstance(vocab, dict):
            found = vocab.get(token)
            return int(vocab.get("<unk>", 0) if found is None else found)
        return int(vocab[token])

    def preprocess(self, data: list[dict[str, Any]]) -> Any:
        import torch

        row = data[0]
        text = row.get("data") or row.get("body") if isinstance(row, dict) else row
        if isinstance(text, bytes | bytearray):
            text = bytes(text).decode("utf-8", "replace")
        if not isinstance(text, str):
            raise InvalidInput("text_classifier takes the text as the request body (plain text)")
        tokens = with_ngrams(basic_english(clean(text)), self.ngrams)
        return torch.as_tensor([self.token_index(t) for t in tokens], dtype=torch.long, device=self.device)

    def inference(self, data: Any, *args: Any, **kwargs: Any) -> Any:
        import torch

        offsets = torch.as_tensor([0], device=self.device)
        return super().inference(data, offsets)

    def postprocess(self, data: Any) -> list[Any]:
        import torch

        probabilities = torch.nn.functional.softmax(data, dim=-1).reshape(1, -1)[0].tolist()
        return [{label_of(self.mapping, i): p for i, p in enumerate(probabilities)}]
