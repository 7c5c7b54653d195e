"""Lower-cased word tokens without HTML breaks and stop words (no spaCy download)."""

from __future__ import annotations

import re

from servekit import Model

STOP_WORDS = frozenset(
    ["a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "from", "has", "have", "i", "in", "is", "it", "its", "of", "on", "or", "so", "that", "the", "this", "to", "was", "were", "with", "movie", "film"]
)
_TAGS = re.compile(r"<[^>]+>")
_WORDS = re.compile(r"[a-z']+")


def tokenize(text: str) -> list[str]:
    words = _WORDS.findall(_TAGS.sub(" ", text.lower()))
    return [w.strip("'") for w in words if w.strip("'") and w not in STOP_WORDS]


class Tokenizer(Model[str, list[str]]):
    CONFIGURATIONS = {"tokenizer": {}}
    TEST_CASES = [
        {"item": "", "result": []},
        {"item": "NLP 101", "result": ["nlp"]},
        {"item": "I'm loving the spaCy 101 course !!!\u00f9*`^@\U0001d49f", "result": ["i'm", "loving", "spacy", "course"]},
        {"item": "<br/>Holy.shit, it's NICE!<br/>", "result": ["holy", "shit", "it's", "nice"]},
    ]

    def _predict_batch(self, items: list[str]) -> list[list[str]]:
        return [tokenize(text) for text in items]
