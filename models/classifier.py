"""Text in, sentiment and explanations out: `SentimentClassifier` wraps a trained `SentimentNet`
with its vocabulary. The text side, `predict` and `explain` (integrated gradients) are
`runtime.classification.TextClassifier`; this gives it the network's probabilities, embeddings,
logits of embedded reviews and their gradients, compiled.
"""

from keras import ops

from models import artifacts
from models.compiled import compile_function
from models.sentiment import SentimentNet
from runtime.classification import TextClassifier
from runtime.text import Vocabulary


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
        self.embed = lambda ids: ops.convert_to_numpy(model.embed(ids))  # a lookup: nothing to compile
        self.embedded_logits = compile_function(
            lambda points, mask: ops.reshape(model.call_embedded(points, mask, training=False), (-1,)), model.weights)
        self.logit_gradients = compile_function(model.logit_gradients, model.weights, differentiates=True)

    @classmethod
    def load(cls, directory):
        """Load a saved-model folder written by `save` (any backend)."""
        model, sides, card = artifacts.load(directory, cls.SIDE_FILES, model_class=SentimentNet)
        return cls(model, Vocabulary.from_json(sides["vocabulary.json"]), card)

    def save(self, directory, card=None):
        """Write `model.keras`, `vocabulary.json` and `card.json` to `directory`."""
        return artifacts.save(directory, self.model, {"vocabulary.json": self.vocabulary.to_json()}, card)
