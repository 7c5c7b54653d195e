"""Train the sentiment pipeline's assets offline and push them to an asset store.

    python examples/sentiment/train.py --storage /tmp/store     # or s3://bucket/assets

Reviews are generated from word lists with a fixed seed (no download). The
TF-IDF vectorizer is fitted with scikit-learn on the tokenizer's tokens and
exported as its vocabulary and IDF weights; a logistic regression on those
vectors is exported as its coefficients. Both are pushed as version 1.0.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

POSITIVE = ["great", "wonderful", "brilliant", "moving", "superb", "enjoyable", "delightful", "masterpiece", "loved", "fun"]
NEGATIVE = ["awful", "boring", "terrible", "dull", "waste", "poor", "bad", "disappointing", "hated", "mess"]
NEUTRAL = ["plot", "actors", "story", "scenes", "director", "script", "ending", "music", "camera", "characters"]


def make_reviews(n: int = 400, seed: int = 0) -> tuple[list[str], list[int]]:
    """``n`` synthetic reviews and their labels (1 positive, 0 negative)."""
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        label = i % 2
        strong = POSITIVE if label else NEGATIVE
        weak = NEGATIVE if label else POSITIVE
        words = rng.choices(strong, k=4) + rng.choices(weak, k=1) + rng.choices(NEUTRAL, k=6)
        rng.shuffle(words)
        texts.append("The " + " ".join(words) + ".<br /> " + rng.choice(["Really.", "Honestly!", ""]))
        labels.append(label)
    return texts, labels


def train(folder: Path) -> dict[str, Path]:
    """Fit both assets into ``folder``; returns asset name -> local folder."""
    from sentiment.tokenizer import tokenize
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    texts, labels = make_reviews()
    vectorizer = TfidfVectorizer(analyzer=tokenize)
    features = vectorizer.fit_transform(texts)
    classifier = LogisticRegression(C=10.0, max_iter=1000).fit(features, labels)
    out = {"sentiment/vectorizer": folder / "vectorizer", "sentiment/classifier": folder / "classifier"}
    for path in out.values():
        path.mkdir(parents=True, exist_ok=True)
    vocabulary = {word: int(column) for word, column in vectorizer.vocabulary_.items()}
    (out["sentiment/vectorizer"] / "vectorizer.json").write_text(
        json.dumps({"vocabulary": vocabulary, "idf": vectorizer.idf_.tolist()})
    )
    (out["sentiment/classifier"] / "classifier.json").write_text(
        json.dumps({"coef": classifier.coef_[0].tolist(), "intercept": float(classifier.intercept_[0])})
    )
    return out


def push(storage: str, s3_endpoint_url: str | None = None, version: str = "1.0") -> None:
    """Train and push both assets to ``storage`` as ``version``."""
    from servekit.library import AssetStore

    store = AssetStore(storage, s3_endpoint_url)
    with tempfile.TemporaryDirectory() as tmp:
        for name, folder in train(Path(tmp)).items():
            store.push(folder, name, version)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", required=True, help="asset store: folder, s3://… or gs://…")
    parser.add_argument("--s3-endpoint-url", default=None)
    args = parser.parse_args()
    push(args.storage, args.s3_endpoint_url)
    print(f"pushed sentiment/vectorizer:1.0 and sentiment/classifier:1.0 to {args.storage}")


if __name__ == "__main__":
    main()
