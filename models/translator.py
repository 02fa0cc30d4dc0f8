"""`Translator`: a trained `Seq2SeqAttention` (`models.seq2seq`) with its vocabularies, casing and
settings, strings in and strings out (`runtime.translation`), decoded through the model's own
layers (`models.decoding`); it saves and loads the whole folder.
"""

from models import artifacts
from models.decoding import CompiledDecoding, EagerDecoding
from models.seq2seq import Seq2SeqAttention
from models.subwords import vocabulary_from_json
from runtime.text import TrueCaser
from runtime.translation import TextTranslator, Translation, merge_attention  # noqa: F401 - part of this API


class Translator(TextTranslator):
    """A trained `Seq2SeqAttention` with its vocabularies and casing: strings in, strings out
    (`TextTranslator.translate`).

    Args:
        model: `Seq2SeqAttention`.
        source_vocab, target_vocab, truecaser, settings: as `TextTranslator`.
        compiled: decode through `CompiledDecoding` (default) or eagerly step by step.
    """

    def __init__(self, model, source_vocab, target_vocab, truecaser, settings, compiled=True):
        super().__init__(CompiledDecoding(model) if compiled else EagerDecoding(model), source_vocab, target_vocab,
                         truecaser, settings)
        self.model = model

    @classmethod
    def load(cls, directory):
        """Load a folder written by `save` (any backend).

        Raises:
            artifacts.ArtifactError: the folder is missing, damaged or holds another task's model.
        """
        model, sides, card = artifacts.load(directory, cls.SIDE_FILES, model_class=Seq2SeqAttention)
        translator = cls(model, vocabulary_from_json(sides["source_vocab.json"]),
                         vocabulary_from_json(sides["target_vocab.json"]),
                         TrueCaser.from_json(sides["truecase.json"]), sides["translator.json"])
        translator.card = card
        return translator

    def save(self, directory, card=None):
        """Write `model.keras`, the vocabularies, the casing, the settings and `card.json`."""
        sides = dict(zip(self.SIDE_FILES, (self.source_vocab.to_json(), self.target_vocab.to_json(),
                                           self.truecaser.to_json(), self.settings)))
        return artifacts.save(directory, self.model, sides, card)
