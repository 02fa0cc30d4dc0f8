"""Translation with strings in and strings out, over any decoder of `runtime.search`:
`TextTranslator` holds the vocabularies, casing and settings and turns text into piece ids, ids
into `Translation`s. `models.translator.Translator` serves a Keras model through it,
`runtime.onnx.OnnxTranslator` an exported one.

The network reads and writes subword pieces (`runtime.subwords`); words go in and come out, and
the attention over pieces is merged back into attention over words. An `[UNK]` in the output is
replaced by the source word it attends to most (Luong et al., 2015).
"""

import dataclasses

import numpy as np

from runtime.search import beam_search, check_length_penalty, greedy_decode
from runtime.text import UNK as UNKNOWN
from runtime.text import Vocabulary, bucket, check_text, detokenize, split_words, text_list


@dataclasses.dataclass
class Translation:
    """One translation.

    Attributes:
        text: The translation as normal text (detokenised, cased).
        words: Its words, one per row of `attention`.
        source_words: The input words the model read (after truncation), one per column.
        attention: `(len(words), len(source_words))` attention weights; each row sums to 1
            (a subword model's attention over pieces, merged into words).
        notice: Why the input was changed or could not be translated, else `None`.
        score: Beam search's length-normalised log-probability of the translation (`None` for
            greedy decoding).
        alternatives: With `n_best`: `[(text, score), ...]`, the best hypotheses, best first
            (the first is this translation).
    """

    text: str
    words: list
    source_words: list
    attention: np.ndarray
    notice: str | None = None
    score: float | None = None
    alternatives: list = dataclasses.field(default_factory=list)


class TextTranslator:
    """Strings in, `Translation`s out, through `decoder`.

    Args:
        decoder: a decoder of `runtime.search` (`encode`, `decode_step`, `target_vocab_size`).
        source_vocab, target_vocab: `SubwordVocabulary` (pieces of words) or `Vocabulary`
            (whole words) of each side.
        truecaser: `TrueCaser` for the output.
        settings: dict with `direction`, `max_source_length` (longer inputs are truncated, with a
            notice), `max_target_length` (the cap of output words) and `length_penalty`.
    """

    SIDE_FILES = ("source_vocab.json", "target_vocab.json", "truecase.json", "translator.json")

    def __init__(self, decoder, source_vocab, target_vocab, truecaser, settings):
        self.decoder, self.source_vocab, self.target_vocab = decoder, source_vocab, target_vocab
        self.truecaser, self.settings = truecaser, dict(settings)

    def __call__(self, text, **options):
        """Translate one string (`str`; anything else raises `TypeError`) -> one `Translation`;
        the options are those of `translate`."""
        return self.translate([check_text(text, "the text to translate")], **options)[0]

    def translate(self, texts, beam_width=1, length_penalty=None, batch_size=64, n_best=1):
        """Translate a batch: a list (or any iterable) of strings -> a list of `Translation`.

        Like Keras' `predict`, this takes a batch: a single string raises `TypeError` (it would be
        read as one sentence per character); translate one with `translator(text)`. An item that
        is not a string (None, a number) raises `TypeError` too, rather than being translated as
        its printed form.

        An empty (or blank) input gives an empty translation with a notice; an input longer than
        `max_source_length` words is truncated, with a notice. A subword model reads any word
        piece by piece; a word model reads unknown words as `[UNK]` (with a notice). An `[UNK]` in
        the output is replaced by the source word it attends to most.

        Args:
            texts: the sentences.
            beam_width: 1 for greedy decoding, else the beam width of `beam_search`.
            length_penalty: GNMT's alpha for beam search, from 0 to `MAX_LENGTH_PENALTY`
                (`ValueError` otherwise); `None` uses the model's setting.
            batch_size: sentences decoded together.
            n_best: with beam search, how many hypotheses each `Translation.alternatives` lists
                (1 to `beam_width`).

        Returns:
            A list of `Translation`, in the order of `texts`.
        """
        if isinstance(n_best, bool) or not isinstance(n_best, int) or not 1 <= n_best <= max(beam_width, 1):
            raise ValueError(f"n_best must be a whole number from 1 to the beam width {beam_width}, got {n_best!r}")
        texts = text_list(texts, "sentence", "translator(text)")
        if length_penalty is not None:
            check_length_penalty(length_penalty)
        max_source = int(self.settings["max_source_length"])
        penalty = self.settings.get("length_penalty", 1.0) if length_penalty is None else length_penalty
        results, sources = [None] * len(texts), []
        for i, text in enumerate(texts):
            words = split_words(text)
            if not words:
                results[i] = Translation("", [], [], np.zeros((0, 0), np.float32),
                                         "The input is empty: nothing to translate.")
                continue
            notes = []
            if len(words) > max_source:
                notes.append(f"The input has {len(words)} words; only the first {max_source} were translated.")
                words = words[:max_source]
            ids, owners = self.source_vocab.encode_words([w.lower() for w in words])
            unknown = [words[o] for o, i_ in zip(owners, ids) if i_ == Vocabulary.unk_id]
            if unknown:
                notes.append("Not in the vocabulary: " + ", ".join(dict.fromkeys(unknown)) + ".")
            sources.append((i, words, ids, owners, " ".join(notes) or None))
        sources.sort(key=lambda item: len(item[2]))  # similar lengths together: less padding
        for start in range(0, len(sources), batch_size):
            batch = sources[start:start + batch_size]
            # Width rounded up to a multiple of 4 (padding is masked): fewer distinct shapes, so
            # fewer one-off compilations of eager operations on JAX.
            ids = np.zeros((len(batch), bucket(max(len(item[2]) for item in batch), 4)), dtype=np.int32)
            for row, item in enumerate(batch):
                ids[row, : len(item[2])] = item[2]
            limits = [min(2 * len(item[2]) + 10, int(self.settings["max_target_length"])) for item in batch]
            if beam_width == 1:
                tokens, attention = greedy_decode(self.decoder, ids, limits)
                tokens, attention, scores = tokens[:, None], attention[:, None], np.full((len(batch), 1), np.nan)
            else:
                tokens, attention, scores = beam_search(self.decoder, ids, beam_width, limits, penalty, n_best)
            for row, (i, words, piece_ids, owners, notice) in enumerate(batch):
                hypotheses = [self._finish(tokens[row, h], attention[row, h, :, : len(piece_ids)], words, owners,
                                           notice, scores[row, h]) for h in range(tokens.shape[1])
                              if h == 0 or np.isfinite(scores[row, h])]
                results[i] = hypotheses[0]
                if n_best > 1:
                    results[i].alternatives = [(h.text, h.score) for h in hypotheses]
        return results

    def _finish(self, ids, attention, source_words, source_owners, notice, score):
        """Ids to text: cut at the end token, join pieces into words, merge the attention over
        pieces into attention over words, copy source words for `[UNK]`, restore case."""
        ids = [int(i) for i in ids]
        # The pieces end at the end token, or at the padding after a sentence that hit its limit.
        length = next((j for j, i in enumerate(ids) if i in (Vocabulary.end_id, Vocabulary.pad_id)), len(ids))
        words, owners = self.target_vocab.decode_words(ids[:length])
        attention = merge_attention(attention[:length], owners, len(words), source_owners, len(source_words))
        words = [source_words[int(np.argmax(attention[j]))] if word == UNKNOWN else word
                 for j, word in enumerate(words)]
        words = self.truecaser(words)
        return Translation(detokenize(words), words, list(source_words), attention, notice,
                           None if np.isnan(score) else float(score))


def merge_attention(weights, target_owners, target_words, source_owners, source_words):
    """Attention over pieces `(target pieces, source pieces)` -> over words `(target_words,
    source_words)`: a source word gets the sum of its pieces' weights, an output word the mean of
    its pieces' rows, so each row still sums to 1. (Whole-word vocabularies pass through.)"""
    by_source = np.zeros((weights.shape[0], source_words), np.float32)
    np.add.at(by_source.T, np.asarray(source_owners, int), np.asarray(weights, np.float32).T)
    owners = np.asarray(target_owners, int)
    real = owners >= 0  # a piece of no word (a stray word-start mark) has no row
    merged = np.zeros((target_words, source_words), np.float32)
    np.add.at(merged, owners[real], by_source[real])
    counts = np.bincount(owners[real], minlength=target_words)[:, None]
    return merged / np.maximum(counts, 1)
