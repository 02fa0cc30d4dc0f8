"""`CharGenerator`: streaming generation (`runtime.sampling`) from a trained `CharLM`, whose
`run` primes the state with the prompt and whose `step` writes one character, both compiled once
per backend (`models.compiled`). It saves and loads the whole folder.
"""

from keras import ops

from models import artifacts
from models.char_lm import CharLM, CharVocabulary
from models.compiled import compile_function
from runtime.sampling import (  # noqa: F401 - part of this module's API
    MAX_GENERATE,
    MAX_PROMPT,
    Session,
    TextGenerator,
    check_sampling,
    check_seed,
    sample,
)


class CharGenerator(TextGenerator):
    """A trained `CharLM` with its vocabulary: prompt in, characters out as they are generated.

    Args:
        model: a built `CharLM`.
        vocabulary: the `CharVocabulary` it was trained with.
        card: the model card (metrics, settings), shown by the apps.
    """

    def __init__(self, model, vocabulary, card=None):
        super().__init__(vocabulary, card)
        self.model = model
        variables = model.weights
        self.compiled_step = compile_function(model.step, variables, to_numpy=False)
        self.compiled_run = compile_function(self._run, variables)

    @classmethod
    def load(cls, directory):
        """Load a saved-model folder written by `save` (any backend)."""
        model, sides, card = artifacts.load(directory, cls.SIDE_FILES, model_class=CharLM)
        return cls(model, CharVocabulary.from_json(sides["vocabulary.json"]), card)

    def save(self, directory, card=None):
        """Write `model.keras`, `vocabulary.json` and `card.json` to `directory`."""
        return artifacts.save(directory, self.model, {"vocabulary.json": self.vocabulary.to_json()}, card)

    def _run(self, ids, mask, *states):
        logits, states = self.model.run(ids, list(states), mask=mask)
        return (logits, *states)

    def initial_states(self, batch=1):
        return [ops.convert_to_numpy(s) for s in self.model.initial_states(batch)]

    def run(self, ids, mask, states):
        logits, *states = self.compiled_run(ids, mask, *states)
        return logits, states

    def step(self, ids, states):
        logits, *states = self.compiled_step(ids, *states)  # the states stay tensors
        return ops.convert_to_numpy(logits)[0], states
