"""Text in, sentiment and explanations out: `SentimentClassifier` wraps a trained `SentimentNet`
with its vocabulary (the text side is `runtime.classification.TextClassifier`).

`predict(texts)` gives probabilities and `explain(text)` each word's contribution by integrated
gradients (Sundararajan et al., 2017): the logit's gradient with respect to the word embeddings,
averaged along the straight path from an all-padding input (zero embeddings) to the review, times
the embedding. The contributions add up to `logit(review) - logit(empty input)`, so a word's
score is its share of the decision in logit units: positive pushes towards "positive".

A review in which no word is in the vocabulary (Chinese, emoji, ...) still gets a probability,
but it is a guess from unknown-word tokens: `predict` warns (`UnknownTextWarning`), `explain` and
`notice` say so.
"""

import warnings

import numpy as np
from keras import ops

import layers
from models import artifacts
from models.compiled import bucket, compile_function
from models.sentiment import SentimentNet
from runtime.classification import PAD_MULTIPLE, TextClassifier
from runtime.text import UnknownTextWarning, Vocabulary, truncate


class SentimentClassifier(TextClassifier):
    """A trained `SentimentNet` with its vocabulary: text in, probabilities and explanations out.

    Args:
        model: a built `SentimentNet`.
        vocabulary: the `Vocabulary` the model was trained with.
        card: the model card (metrics, settings), shown by the apps.
    """

    def __init__(self, model, vocabulary, card=None):
        super().__init__(vocabulary, model.config.max_length, card)
        self.model = model
        # Compiled once per padded shape (models.compiled): eager JAX re-traces the recurrent
        # scan on every call, about 0.5 s.
        self.probabilities = compile_function(
            lambda ids: ops.sigmoid(ops.reshape(model(ids, training=False), (-1,))), model.weights)
        self._end_logits = compile_function(
            lambda ends, mask: ops.reshape(model.call_embedded(ends, mask, training=False), (-1,)), model.weights)
        self._logit_gradients = compile_function(self._logit_gradients_of, model.weights, differentiates=True)

    @classmethod
    def load(cls, directory):
        """Load a saved-model folder written by `save` (any backend)."""
        model, sides, card = artifacts.load(directory, cls.SIDE_FILES, model_class=SentimentNet)
        return cls(model, Vocabulary.from_json(sides["vocabulary.json"]), card)

    def save(self, directory, card=None):
        """Write `model.keras`, `vocabulary.json` and `card.json` to `directory`."""
        return artifacts.save(directory, self.model, {"vocabulary.json": self.vocabulary.to_json()}, card)

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
        embedded = ops.convert_to_numpy(self.model.embedding(ids))[0]  # (time, embedding_dim)
        width = bucket(len(words), PAD_MULTIPLE)  # padded (and masked) to few shapes for the compiled calls
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
