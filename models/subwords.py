"""The translator's subword pieces through keras_hub's `SentencePieceTokenizer` (the tokenizer of
the design's keras-nlp, now keras-hub); everything else about them is `runtime.subwords`.
"""

from runtime import subwords
from runtime.subwords import RESERVED_PIECES, WORD_START  # noqa: F401 - for the trainers


class SubwordVocabulary(subwords.SubwordVocabulary):
    """`runtime.subwords.SubwordVocabulary` whose pieces come from keras_hub's tokenizer."""

    def _load(self, proto):
        import keras_hub  # imported here: loading it costs a second, and only subword models need it

        self.tokenizer = keras_hub.tokenizers.SentencePieceTokenizer(proto=proto, dtype="int32")
        return list(self.tokenizer.get_vocabulary())

    def _cut(self, word):
        return self.tokenizer.tokenize([word])[0]


def vocabulary_from_json(data):
    """A `SubwordVocabulary` (keras_hub's pieces) or a word `Vocabulary`, whichever `data` holds."""
    return subwords.vocabulary_from_json(data, SubwordVocabulary)
