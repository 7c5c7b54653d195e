"""The sentiment pipeline of the modelkit article, offline: a pure-Python
tokenizer, a TF-IDF vectorizer (an asset trained with scikit-learn) and a
classifier (an asset too) that depends on both."""

from sentiment.classifier import Classifier, MovieSentiment
from sentiment.tokenizer import Tokenizer
from sentiment.vectorizer import Vectorizer

__all__ = ["Classifier", "MovieSentiment", "Tokenizer", "Vectorizer"]
