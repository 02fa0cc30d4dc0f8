"""Movie-review sentiment with text in and probabilities and explanations out, over any classifier
of token ids (`TextClassifier`): the Keras `SentimentNet` (`models.classifier.SentimentClassifier`)
or its ONNX export (`runtime.onnx.OnnxClassifier`).

`explain(text)` gives each word's contribution by integrated gradients (Sundararajan et al., 2017):
the logit's gradient with respect to the word embeddings, averaged along the straight path from an
all-padding input (zero embeddings) to the review, times the embedding. The contributions add up to
`logit(review) - logit(empty input)`, so a word's score is its share of the decision in logit
units: positive pushes towards "positive".

A review in which no word is in the vocabulary (Chinese, emoji, ...) still gets a probability,
but it is a guess from unknown-word tokens: `predict` warns (`UnknownTextWarning`), `explain` and
`notice` say so.
"""

import warnings

import numpy as np

from runtime.text import (
    RESERVED,
    UnknownTextWarning,
    Vocabulary,
    bucket,
    check_text,
    review_words,
    text_list,
    truncate,
)

PAD_MULTIPLE = 32  # reviews are padded to a multiple of this many words: few shapes to compile


class TextClassifier:
    """Reviews in, probabilities and explanations out. A subclass gives the model, as NumPy in and out:

    - `probabilities(ids (batch, time) int32) -> (batch,)`: that each review is positive;
    - for `explain` (`explains` says whether it can): `embed(ids) -> (batch, time, dim)` word
      embeddings, `embedded_logits(points (n, time, dim), mask (n, time)) -> (n,)` logits of
      embedded reviews, and `logit_gradients(points, mask) -> (n, time, dim)` the gradients of
      those logits with respect to `points`.

    Args:
        vocabulary: the `Vocabulary` the model was trained with.
        max_length: the most words read of a review (the rest is cut).
        card: the model card (metrics, settings), shown by the apps.
    """

    SIDE_FILES = ("vocabulary.json",)
    NO_KNOWN_WORD = "None of its words is in the model's vocabulary: the probability is a guess, not a reading of it."

    def __init__(self, vocabulary, max_length, card=None):
        self.vocabulary, self.max_length, self.card = vocabulary, int(max_length), card or {}
        # Ids of known words (with a letter or digit; not [UNK]): punctuation alone tells nothing.
        self._word_ids = np.asarray([i for i, token in enumerate(vocabulary.tokens)
                                     if i >= len(RESERVED) and any(c.isalnum() for c in token)], "int32")

    def encode(self, texts):
        """Token ids `(batch, time)`, zero-padded, each review truncated to `max_length`.

        Raises:
            TypeError: `texts` is a single string, or a review is not a string. ValueError: a review
                has no words.
        """
        texts = text_list(texts, "review", "encode([text])")
        rows = [truncate(self.vocabulary.encode(self._tokens(text)), self.max_length) for text in texts]
        width = bucket(max(len(r) for r in rows), PAD_MULTIPLE)  # padding is masked
        ids = np.zeros((len(rows), width), dtype="int32")
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
            probabilities.append(self.probabilities(ids))
        if blind:
            shown = ", ".join(map(str, blind[:5])) + (", ..." if len(blind) > 5 else "")
            warnings.warn(f"{len(blind)} of {len(texts)} reviews (index {shown}) have no word in the model's "
                          "vocabulary: their probabilities are guesses, not readings of them", UnknownTextWarning,
                          stacklevel=2)
        return np.concatenate(probabilities).astype("float32")

    explains = True

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
        embedded = np.asarray(self.embed(ids), "float32")[0]  # (time, embedding_dim)
        width = bucket(len(words), PAD_MULTIPLE)  # padded (and masked) to few shapes for the compiled calls
        embedded = np.pad(embedded, ((0, width - len(words)), (0, 0)))
        mask = np.arange(width) < len(words)  # (width,)
        ends = np.stack([embedded, np.zeros_like(embedded)])  # the review and the baseline
        logit, baseline_logit = np.asarray(self.embedded_logits(ends, np.stack([mask, mask])), "float64").tolist()
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
            gradient_sum += np.asarray(self.logit_gradients(points, np.broadcast_to(mask, points.shape[:2]))).sum(0)
        return (gradient_sum / steps * embedded).sum(-1).astype("float64")  # (time,)

    def notice(self, text):
        """`None`, or why the probability of review `text` means little: none of its words (after
        truncation) is in the vocabulary. For a user interface; `predict` warns instead."""
        return None if self._reads_a_word(self.encode([text]))[0] else self.NO_KNOWN_WORD

    def _reads_a_word(self, ids):
        """`(batch,)` bool: whether each row of ids `(batch, time)` holds a known word."""
        return np.isin(ids, self._word_ids).any(axis=1)

    def _words(self, text):
        words = review_words(check_text(text, "a review"))
        if not words:
            raise ValueError("the review is empty: type a few words about a movie")
        return words

    def _tokens(self, text):
        return [word.lower() for word in self._words(text)]
