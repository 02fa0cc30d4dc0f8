"""Movie-review sentiment with text in and probabilities out, over any classifier of token ids
(`TextClassifier`): the Keras `SentimentNet` (`models.classifier.SentimentClassifier`, which also
explains its decisions) or its ONNX export (`runtime.onnx.OnnxClassifier`).

A review in which no word is in the vocabulary (Chinese, emoji, ...) still gets a probability,
but it is a guess from unknown-word tokens: `predict` warns (`UnknownTextWarning`) and `notice`
says so.
"""

import warnings

import numpy as np

from runtime.text import RESERVED, UnknownTextWarning, bucket, check_text, review_words, text_list, truncate

PAD_MULTIPLE = 32  # reviews are padded to a multiple of this many words: few shapes to compile


class TextClassifier:
    """Reviews in, probabilities out. A subclass gives the model: `probabilities(ids (batch, time)
    int32) -> (batch,)` NumPy probabilities that each review is positive.

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
