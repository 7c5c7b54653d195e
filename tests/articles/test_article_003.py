"""Article 003, "Production-ready ML models with modelkit": its NLP sentiment
tutorial in modelkit's API with `modelkit` typed as `servekit` — a tokenizer
(`_load`/`_predict`, then `_predict_batch`, `TEST_CASES`, `Model[str,
List[str]]`), a TF-IDF vocabulary trained with scikit-learn and loaded as an
asset through `self.asset_path` with `MODELKIT_ASSETS_DIR=.`, a Keras
classifier that depends on both, `library.describe()`, `SimpleProfiler`,
`cache_predictions`, serving over HTTP (the article's FastAPI app; here
`servekit serve`) and an async model.

The article shows its code as pictures; the code below follows the shapes it
describes. spaCy's English model cannot be downloaded offline (a regex and a
stop list tokenize instead) and IMDB's reviews are synthetic, built from
positive and negative words."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from articles_support import ArticleServer, Ports, python_script, sh

pytest.importorskip("tensorflow")

MODELS_PY = '''
import re
from typing import List

import numpy as np
from pydantic import BaseModel

import servekit


class Tokenizer(servekit.Model[str, List[str]]):
    CONFIGURATIONS = {"imdb_tokenizer": {}}
    TEST_CASES = [
        {"item": "", "result": []},
        {"item": "NLP 101", "result": ["nlp"]},
        {"item": "<br/>Holy.shit, it's NICE!<br/>", "result": ["holy", "shit", "it's", "nice"]},
    ]

    def _load(self):
        self.words = re.compile(r"[a-z][a-z']*")
        self.stop_words = {"a", "an", "and", "is", "of", "the", "this", "was", "to", "film", "movie"}

    def _predict_batch(self, texts):
        texts = [" ".join(text.replace("<br", "").replace("/>", "").split()) for text in texts]
        return [[w for w in self.words.findall(t.lower()) if w not in self.stop_words] for t in texts]


class Vectorizer(servekit.Model[List[str], List[int]]):
    CONFIGURATIONS = {"imdb_vectorizer": {"asset": "vocabulary.txt"}}
    TEST_CASES = [
        {"item": [], "result": [0] * 16},
        {"item": ["actors", "unknownword"], "result": [2, 1] + [0] * 14},
    ]

    def _load(self):
        self.vocabulary = {}
        with open(self.asset_path, "r", encoding="utf-8") as f:
            for i, k in enumerate(f):
                self.vocabulary[k.strip()] = i + 2  # 0: padding, 1: unknown word

    def _predict_batch(self, tokenized_texts, length=16):
        out = []
        for tokens in tokenized_texts:
            ids = [self.vocabulary.get(t, 1) for t in tokens][:length]
            out.append(ids + [0] * (length - len(ids)))
        return out


class MovieSentimentItem(BaseModel):
    label: str
    score: float


class Classifier(servekit.Model[str, MovieSentimentItem]):
    CONFIGURATIONS = {
        "imdb_classifier": {
            "asset": "imdb_model.keras",
            "model_dependencies": {"tokenizer": "imdb_tokenizer", "vectorizer": "imdb_vectorizer"},
            "model_settings": {"cache_predictions": True},
        }
    }
    def _load(self):
        from tensorflow import keras

        self.model = keras.models.load_model(self.asset_path)
        self.tokenizer = self.model_dependencies["tokenizer"]
        self.vectorizer = self.model_dependencies["vectorizer"]

    def _predict_batch(self, reviews):
        tokens = self.tokenizer.predict_batch(reviews)
        vectors = np.array(self.vectorizer.predict_batch(tokens))
        scores = self.model.predict(vectors, verbose=0)[:, 0]
        return [MovieSentimentItem(label="good" if s >= 0.5 else "bad", score=round(float(s), 4)) for s in scores]


class AsyncTokenizer(servekit.AsyncModel[str, List[str]]):
    CONFIGURATIONS = {"imdb_async_tokenizer": {"model_dependencies": {"tokenizer": "imdb_tokenizer"}}}

    async def _predict(self, text):
        return self.model_dependencies["tokenizer"].predict(text)
'''

TRAIN_PY = '''
import random

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from tensorflow import keras

import servekit
from imdb_models import Tokenizer

GOOD = ["superb", "wonderful", "moving", "brilliant", "loved", "great"]
BAD = ["boring", "terrible", "dull", "awful", "waste", "hated"]
NEUTRAL = ["plot", "actors", "music", "ending", "story", "scenes", "camera", "director"]
random.seed(0)
reviews, labels = [], []
for i in range(400):
    good = i % 2 == 0
    words = random.choices(GOOD if good else BAD, k=3) + random.choices(NEUTRAL, k=5)
    random.shuffle(words)
    reviews.append("The " + " ".join(words) + ".<br/>")
    labels.append(int(good))

# 2. the vocabulary of a TF-IDF vectorizer, the asset of the Vectorizer
tokenizer = Tokenizer()
tokens = tokenizer.predict_batch(reviews)
vectorizer = TfidfVectorizer(tokenizer=lambda x: x, lowercase=False, token_pattern=None, min_df=1)
vectorizer.fit(tokens)
vocabulary = sorted(vectorizer.vocabulary_, key=vectorizer.vocabulary_.get)
with open("vocabulary.txt", "w", encoding="utf-8") as f:
    f.write("\\n".join(vocabulary))

# 3. a small Keras classifier over the vectorized reviews
ids = {word: i + 2 for i, word in enumerate(vocabulary)}
x = np.array([([ids.get(t, 1) for t in ts] + [0] * 16)[:16] for ts in tokens])
keras.utils.set_random_seed(0)
model = keras.Sequential([
    keras.Input((16,)),
    keras.layers.Embedding(len(vocabulary) + 2, 8),
    keras.layers.GlobalAveragePooling1D(),
    keras.layers.Dense(1, activation="sigmoid"),
])
model.compile(optimizer=keras.optimizers.Adam(0.05), loss="binary_crossentropy", metrics=["accuracy"])
history = model.fit(x, np.array(labels), epochs=8, batch_size=32, verbose=0)
model.save("imdb_model.keras")
print("accuracy", history.history["accuracy"][-1])
'''

TUTORIAL_PY = '''
import asyncio
import json

from servekit import ModelLibrary, SimpleProfiler
import imdb_models

# the first model, on its own
tokenizer = imdb_models.Tokenizer()
print(json.dumps(tokenizer.predict("spaCy is a great tool")))

# the library builds each model once, dependencies first
library = ModelLibrary(models=imdb_models)
classifier = library.get("imdb_classifier")
reviews = ["A superb, wonderful and moving film.", "Boring. A dull plot and terrible actors."]
print(json.dumps([r.model_dump() for r in classifier.predict_batch(reviews)]))
assert library.get("imdb_tokenizer") is classifier.model_dependencies["tokenizer"]

# model load description
print(json.dumps(sorted(library.describe())))

# prediction profiling
profiler = SimpleProfiler(classifier)
classifier.predict_batch(reviews + ["loved it"])
print(json.dumps({row.name: row.calls for row in profiler.summary()}))

# caching: the second call of a review is answered from the cache
classifier.predict("a brilliant story")
calls = []
original = classifier._predict_batch
classifier._predict_batch = lambda items, **kw: calls.append(items) or original(items, **kw)
classifier.predict("a brilliant story")
print(json.dumps({"calls_after_cache": len(calls)}))

# async
async_tokenizer = library.get("imdb_async_tokenizer")
print(json.dumps(asyncio.run(async_tokenizer.predict("Great music!"))))
'''


@pytest.fixture(scope="module")
def tutorial(project: Path) -> Path:
    (project / "imdb_models.py").write_text(MODELS_PY)
    (project / "train.py").write_text(TRAIN_PY)
    (project / "tutorial.py").write_text(TUTORIAL_PY)
    accuracy = float(python_script(project / "train.py", env={"TF_CPP_MIN_LOG_LEVEL": "2"}).split()[-1])
    assert accuracy > 0.9
    return project


def test_tutorial_as_a_script(tutorial: Path) -> None:
    # `export MODELKIT_ASSETS_DIR=.`: the assets are the files in this folder
    out = [json.loads(line) for line in python_script(
        tutorial / "tutorial.py", env={"MODELKIT_ASSETS_DIR": ".", "TF_CPP_MIN_LOG_LEVEL": "2"}).splitlines()]
    tokens, predictions, described, profile, cache, async_tokens = out
    assert tokens == ["spacy", "great", "tool"]
    assert [p["label"] for p in predictions] == ["good", "bad"]
    assert predictions[0]["score"] > 0.5 > predictions[1]["score"]
    assert described == ["imdb_async_tokenizer", "imdb_classifier", "imdb_tokenizer", "imdb_vectorizer"]
    assert profile == {"imdb_classifier": 1, "imdb_tokenizer": 1, "imdb_vectorizer": 1}
    assert cache == {"calls_after_cache": 0}
    assert async_tokens == ["great", "music"]


def test_test_cases_run_with_pytest(tutorial: Path) -> None:
    """`TEST_CASES` beside each class run under pytest (modelkit's plugin: servekit's)."""
    done = sh("MODELKIT_ASSETS_DIR=. python -m pytest -q -p no:cacheprovider --servekit-models imdb_models",
              cwd=tutorial, env={"TF_CPP_MIN_LOG_LEVEL": "2"})
    assert "5 passed" in done.stdout, done.stdout


@pytest.fixture(scope="module")
def served(tutorial: Path, module_ports: Ports) -> Iterator[ArticleServer]:
    """The article's FastAPI service, as `servekit serve` of a folder whose
    model-settings.json names the classifier."""
    folder = tutorial / "service"
    folder.mkdir()
    (folder / "model-settings.json").write_text(
        '{"name": "imdb_classifier", "implementation": "imdb_models.Classifier"}\n')
    env = {**module_ports.env(), "MODELKIT_ASSETS_DIR": str(tutorial),
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    with ArticleServer("servekit serve service", cwd=tutorial, env=env,
                       ready_url=f"http://127.0.0.1:{module_ports.http}/v2/health/ready") as server:
        yield server


def test_served_over_http(served: ArticleServer, tutorial: Path, module_ports: Ports) -> None:
    port = module_ports.http
    one = json.loads(sh(f"curl -s -d '\"a superb film\"' localhost:{port}/predict/imdb_classifier", cwd=tutorial).stdout)
    assert one["label"] == "good" and one["score"] > 0.5
    batch = json.loads(sh(f"curl -s -d '[\"awful, a waste\", \"loved it\"]' localhost:{port}/predict/batch/imdb_classifier",
                          cwd=tutorial).stdout)
    assert [p["label"] for p in batch] == ["bad", "good"]
    # a body of the wrong type is refused with the field named, not a 500
    bad = sh(f"curl -s -w '\\n%{{http_code}}' -d '{{\"review\": 1}}' localhost:{port}/predict/imdb_classifier",
             cwd=tutorial).stdout
    body, code = bad.rsplit("\n", 1)
    assert code == "400" and "str" in json.loads(body)["error"]
