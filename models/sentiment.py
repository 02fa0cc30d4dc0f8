"""Sentiment of movie reviews: a bidirectional recurrent classifier with per-word explanations.

    ids (batch, time) -> Embedding -> Bidirectional(our LSTM or GRU) -> masked mean+max pooling
      -> Dropout -> Dense(1): the logit of "positive"

`SentimentClassifier` wraps a trained `SentimentNet` with its vocabulary: `predict(texts)` gives
probabilities and `explain(text)` each word's contribution by integrated gradients (Sundararajan et
al., 2017): the logit's gradient with respect to the word embeddings, averaged along the straight
path from an all-padding input (zero embeddings) to the review, times the embedding. The
contributions add up to `logit(review) - logit(empty input)`, so a word's score is its share of
the decision in logit units: positive pushes towards "positive".

A review in which no word is in the vocabulary (Chinese, emoji, ...) still gets a probability,
but it is a guess from unknown-word tokens: `predict` warns (`UnknownTextWarning`), `explain` and
`notice` say so.
"""

import dataclasses
import html
import re
import warnings

import keras
import numpy as np
from keras import ops

import layers
from models import artifacts
from models.compiled import compile_function
from models.text import RESERVED, UnknownTextWarning, Vocabulary, check_text, split_words, text_list

_TAG = re.compile(r"<[^>]*>")


def clean_review(text):
    """Review text without HTML: tags (IMDB's `<br />`) become spaces, entities are decoded."""
    return _TAG.sub(" ", html.unescape(str(text)))


def review_words(text):
    """Display words of a review (original case): words, numbers and punctuation marks."""
    return split_words(clean_review(text))


def review_tokens(text):
    """Lowercased model tokens of a review (HTML removed)."""
    return [word.lower() for word in review_words(text)]


def _bucket(length, multiple=32):
    """`length` rounded up to a multiple of 32: few padded shapes, so few compilations."""
    return max(multiple, -(-length // multiple) * multiple)


def truncate(ids, max_length):
    """At most `max_length` ids: a longer review keeps its beginning and its end (where reviews
    tend to sum up), half each."""
    if len(ids) <= max_length:
        return list(ids)
    head = max_length // 2
    return list(ids[:head]) + list(ids[len(ids) - (max_length - head):])


@dataclasses.dataclass
class SentimentConfig:
    """Hyperparameters of `SentimentNet` (the trainer's defaults live in trainers/sentiment.py)."""

    vocab_size: int = 20000
    embed_dim: int = 128
    units: int = 64
    cell: str = "lstm"  # "lstm" or "gru"
    dropout: float = 0.3
    max_length: int = 400
    word_dropout: float = 0.0  # fraction of words whose whole embedding is zeroed in training
    rnn_impl: str = "ours"  # "ours" (layers/) or "keras" (Keras' built-ins: cuDNN on a GPU); same weights


@keras.saving.register_keras_serializable(package="rnn_suite")
class SentimentNet(artifacts.PortableModel, keras.Model):
    """Bidirectional recurrent classifier over token ids; `call` returns logits `(batch, 1)` (the
    Keras convention for one output: losses then average over the batch axis, which
    `tf.distribute` relies on to scale the loss per replica).

    Args:
        vocab_size, embed_dim, units, cell, dropout, max_length, word_dropout: see
            `SentimentConfig` (`max_length` is recorded for inference; the network takes any length).
            `word_dropout` drops whole words (their full embedding vector, noise shape
            `(batch, time, 1)`), so the classifier cannot lean on a few rare words, such as the
            names of the films in the training reviews, that never occur in the test reviews.
            `rnn_impl` picks our recurrent layers or Keras' built-ins (see `SentimentConfig`).
    """

    TASK = "sentiment classification"  # what a saved folder of this class holds (`artifacts.check_model_class`)

    def __init__(self, vocab_size, embed_dim, units, cell="lstm", dropout=0.3, max_length=400, word_dropout=0.0,
                 rnn_impl="ours", **kwargs):
        super().__init__(**kwargs)
        if cell not in ("lstm", "gru"):
            raise ValueError(f"cell must be 'lstm' or 'gru', got {cell!r}")
        self.config = SentimentConfig(vocab_size, embed_dim, units, cell, dropout, max_length, word_dropout, rnn_impl)
        rnn = layers.recurrent_layer_class(cell, rnn_impl)
        self.embedding = keras.layers.Embedding(vocab_size, embed_dim, name="embedding")
        self.encoder = keras.layers.Bidirectional(rnn(units, return_sequences=True), name="encoder")
        self.pooling = layers.MaskedMeanMaxPooling(name="pooling")
        self.word_dropout = keras.layers.Dropout(word_dropout, noise_shape=(None, None, 1), name="word_dropout")
        self.dropout = keras.layers.Dropout(dropout)
        self.head = keras.layers.Dense(1, name="head", dtype="float32")  # float32 logit under mixed precision

    def build(self, input_shape=(None, None)):
        """Create every weight from the ids' shape `(batch, time)`."""
        batch, time = input_shape[0], input_shape[1]
        self.embedding.build(input_shape)
        self.encoder.build((batch, time, self.config.embed_dim))
        self.head.build((batch, 4 * self.config.units))
        self.built = True

    def call(self, ids, training=False):
        mask = ops.not_equal(ids, 0)  # (batch, time): padding id 0
        return self.call_embedded(self.embedding(ids), mask, training=training)

    def call_embedded(self, embedded, mask, training=False):
        """Logits `(batch, 1)` from embeddings `(batch, time, embed_dim)` and a `(batch, time)` mask."""
        embedded = self.word_dropout(embedded, training=training)  # (batch, time, embed_dim)
        h = self.encoder(embedded, mask=mask, training=training)  # (batch, time, 2 units)
        pooled = self.dropout(self.pooling(h, mask=mask), training=training)  # (batch, 4 units)
        return self.head(pooled)  # (batch, 1)

    def get_config(self):
        return {**super().get_config(), **dataclasses.asdict(self.config)}


class SentimentClassifier:
    """A trained `SentimentNet` with its vocabulary: text in, probabilities and explanations out.

    Args:
        model: a built `SentimentNet`.
        vocabulary: the `Vocabulary` the model was trained with.
        card: the model card (metrics, settings), shown by the apps.
    """

    side_files = ("vocabulary.json",)
    NO_KNOWN_WORD = "None of its words is in the model's vocabulary: the probability is a guess, not a reading of it."

    def __init__(self, model, vocabulary, card=None):
        self.model = model
        self.vocabulary = vocabulary
        self.card = card or {}
        self.max_length = model.config.max_length
        # Ids of known words (with a letter or digit; not [UNK]): punctuation alone tells nothing.
        self._word_ids = np.asarray([i for i, token in enumerate(vocabulary.tokens)
                                     if i >= len(RESERVED) and any(c.isalnum() for c in token)], "int32")
        # Compiled once per padded shape (models.compiled): eager JAX re-traces the recurrent
        # scan on every call, about 0.5 s.
        self._probabilities = compile_function(
            lambda ids: ops.sigmoid(ops.reshape(model(ids, training=False), (-1,))), model.weights)
        self._end_logits = compile_function(
            lambda ends, mask: ops.reshape(model.call_embedded(ends, mask, training=False), (-1,)), model.weights)
        self._logit_gradients = compile_function(self._logit_gradients_of, model.weights, differentiates=True)

    @classmethod
    def load(cls, directory):
        """Load a saved-model folder written by `save` (any backend)."""
        model, sides, card = artifacts.load(directory, cls.side_files, model_class=SentimentNet)
        return cls(model, Vocabulary.from_json(sides["vocabulary.json"]), card)

    def save(self, directory, card=None):
        """Write `model.keras`, `vocabulary.json` and `card.json` to `directory`."""
        return artifacts.save(directory, self.model, {"vocabulary.json": self.vocabulary.to_json()}, card)

    def encode(self, texts):
        """Token ids `(batch, time)`, zero-padded, each review truncated to `max_length`.

        Raises:
            TypeError: `texts` is a single string, or a review is not a string. ValueError: a review
                has no words.
        """
        texts = text_list(texts, "review", "encode([text])")
        rows = [truncate(self.vocabulary.encode(self._tokens(text)), self.max_length) for text in texts]
        ids = np.zeros((len(rows), _bucket(max(len(r) for r in rows))), dtype="int32")  # padding is masked
        for i, row in enumerate(rows):
            ids[i, : len(row)] = row
        return ids

    def predict(self, texts, batch_size=64):
        """Probability that each review is positive, `(len(texts),)` float array.

        `texts` is a list of strings (a single string or a non-string item raises `TypeError`).
        Reviews in which no word is in the vocabulary still get a probability, with an
        `UnknownTextWarning` naming them.
        """
        texts = text_list(texts, "review", "predict([text])")
        if not texts:
            return np.zeros((0,), "float32")
        probabilities, blind = [], []
        for start in range(0, len(texts), batch_size):
            ids = self.encode(texts[start : start + batch_size])
            blind += [start + int(i) for i in np.flatnonzero(~self._reads_a_word(ids))]
            probabilities.append(self._probabilities(ids))
        if blind:
            shown = ", ".join(map(str, blind[:5])) + (", ..." if len(blind) > 5 else "")
            warnings.warn(f"{len(blind)} of {len(texts)} reviews (index {shown}) have no word in the model's "
                          "vocabulary: their probabilities are guesses, not readings of them", UnknownTextWarning,
                          stacklevel=2)
        return np.concatenate(probabilities).astype("float32")

    def notice(self, text):
        """`None`, or why the probability of review `text` means little: none of its words (after
        truncation) is in the vocabulary. For a user interface; `predict` warns instead."""
        return None if self._reads_a_word(self.encode([text]))[0] else self.NO_KNOWN_WORD

    def _reads_a_word(self, ids):
        """`(batch,)` bool: whether each row of ids `(batch, time)` holds a known word."""
        return np.isin(ids, self._word_ids).any(axis=1)

    def explain(self, text, steps=32, max_steps=1024, tolerance=0.05):
        """Each word's contribution to the decision, by integrated gradients.

        The path integral is a midpoint sum over `steps` points; where the scores do not add up to
        `logit - baseline_logit` within `tolerance` (relative, at least 0.05 logits) the number of
        points doubles, up to `max_steps` (a trained network can have steep stretches on the path).

        Args:
            text: one review.
            steps: first number of points on the path from the empty input to the review.

        Returns:
            dict with `words` (the display words the model read, after truncation), `scores`
            (contribution of each word to the logit; positive = towards "positive"), `logit` and
            `probability` of the review, `baseline_logit` of the empty input (zero embeddings),
            `steps` used, `completeness_error` = `sum(scores) - (logit - baseline_logit)`,
            `unknown_words` (the words read as `[UNK]`, once each) and `notice` (`None`, or why the
            probability means little; it is also given as an `UnknownTextWarning`).
        """
        words = self._words(text)
        kept = truncate(list(range(len(words))), self.max_length)
        words = [words[i] for i in kept]
        ids = np.asarray([self.vocabulary.encode([w.lower() for w in words])], dtype="int32")
        embedded = ops.convert_to_numpy(self.model.embedding(ids))[0]  # (time, embed_dim)
        width = _bucket(len(words))  # padded (and masked) to few shapes for the compiled calls
        embedded = np.pad(embedded, ((0, width - len(words)), (0, 0)))
        mask = np.arange(width) < len(words)  # (width,)
        ends = np.stack([embedded, np.zeros_like(embedded)])  # the review and the baseline
        logit, baseline_logit = self._end_logits(ends, np.stack([mask, mask])).astype("float64").tolist()
        unknown = [w for w, i in zip(words, ids[0]) if i == Vocabulary.unk_id]
        notice = None if self._reads_a_word(ids)[0] else self.NO_KNOWN_WORD
        if notice:
            warnings.warn(f"explain(): {notice}", UnknownTextWarning, stacklevel=2)
        target = logit - baseline_logit
        while True:
            scores = self._path_integral(embedded, mask, steps)[: len(words)]
            error = float(scores.sum()) - target
            if abs(error) <= tolerance * max(1.0, abs(target)) or steps >= max_steps:
                break
            steps *= 2
        return {"words": words, "scores": scores.tolist(), "logit": logit,
                "probability": 1.0 / (1.0 + np.exp(-logit)), "baseline_logit": baseline_logit,
                "steps": steps, "completeness_error": error, "unknown_words": list(dict.fromkeys(unknown)),
                "notice": notice}

    def _path_integral(self, embedded, mask, steps, chunk=128):
        """Integrated gradients of the logit, `(time,)`, over `steps` midpoints from zero."""
        alphas = (np.arange(steps, dtype="float32") + 0.5) / steps  # midpoint rule on [0, 1]
        gradient_sum = np.zeros_like(embedded)
        for start in range(0, steps, chunk):
            points = alphas[start : start + chunk, None, None] * embedded[None]  # (n, time, dim)
            gradient_sum += self._logit_gradients(points, np.broadcast_to(mask, points.shape[:2])).sum(0)
        return (gradient_sum / steps * embedded).sum(-1).astype("float64")  # (time,)

    def _logit_gradients_of(self, points, mask):
        """Gradients of the summed logits with respect to `points (n, time, dim)` embeddings."""

        def total_logit(points):
            return ops.sum(self.model.call_embedded(points, mask, training=False))

        return layers.value_and_grad(total_logit, points)[1][0]

    def _words(self, text):
        words = review_words(check_text(text, "a review"))
        if not words:
            raise ValueError("the review is empty: type a few words about a movie")
        return words

    def _tokens(self, text):
        return [word.lower() for word in self._words(text)]
