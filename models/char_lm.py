"""Character-level language model built from our recurrent layers.

    ids (batch, time) -> Embedding -> Dropout -> [our LSTM|GRU -> Dropout] x num_layers
      -> Dense(vocab): logits of the next character at every step

`run` is the network, written once: training reads long windows with the targets shifted by one
character (`call`), scoring carries the state from window to window, and generation
(`models.generator`) primes the state with the prompt and then feeds one character at a time
(`step`), all through the same layers.

Reference: Karpathy's char-rnn (2015) for the model and corpus.
"""

import dataclasses

import keras
import numpy as np
from keras import ops

from layers import recurrent_layer_class
from models import artifacts
from models.config import Config, cell_setting, rnn_impl_setting, setting
from runtime.text import CharVocabulary  # noqa: F401 - the vocabulary of this model


@dataclasses.dataclass
class CharLMConfig(Config):
    """Hyperparameters of `CharLM` (a trainer extends them: `trainers.generate`)."""

    RENAMED = {"layers": "num_layers"}  # the name before 2026-11 (it shadowed the `layers` package)

    vocab_size: int = setting(1, "characters in the vocabulary; from the data", flag=False)
    embedding_dim: int = setting(64, "character embedding size", quick=16)
    units: int = setting(512, "recurrent units per layer", quick=64)
    num_layers: int = setting(2, "stacked recurrent layers", quick=1, aliases=("--layers",))
    cell: str = cell_setting("lstm")
    dropout: float = setting(0.2, "dropout after the embedding and each recurrent layer, in training",
                             kind="fraction")
    rnn_impl: str = rnn_impl_setting()


@keras.saving.register_keras_serializable(package="rnn_suite")
class CharLM(artifacts.PortableModel, keras.Model):
    """Stacked recurrent language model over character ids.

    Args: `config`, a `CharLMConfig`. Call: `model(ids (batch, time) int)` -> logits
    `(batch, time, vocab)`.
    """

    TASK = "character generation"  # what a saved folder of this class holds (`artifacts.check_model_class`)
    CONFIG = CharLMConfig

    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        self.config = c = CharLMConfig.of(config)
        rnn = recurrent_layer_class(c.cell, c.rnn_impl)
        self.embedding = keras.layers.Embedding(c.vocab_size, c.embedding_dim, name="embedding")
        self.rnns = [rnn(c.units, return_sequences=True, return_state=True, name=f"{c.cell}_{i}")
                     for i in range(c.num_layers)]
        self.dropout = keras.layers.Dropout(c.dropout, name="dropout")
        self.head = keras.layers.Dense(c.vocab_size, name="head", dtype="float32")  # float32 logits, mixed precision

    @property
    def states_per_layer(self):
        return 2 if self.config.cell == "lstm" else 1

    def initial_states(self, batch):
        """Zero states, flat: `num_layers * states_per_layer` tensors `(batch, units)`."""
        dtype = self.rnns[0].compute_dtype
        return [ops.zeros((batch, self.config.units), dtype) for _ in range(len(self.rnns) * self.states_per_layer)]

    def run(self, ids, states=None, mask=None, training=False):
        """`ids (batch, time)` from flat `states` (`None`: zeros) -> `(logits (batch, time, vocab),
        final flat states)`. Steps where `mask (batch, time)` is False leave the states unchanged."""
        x = self.dropout(self.embedding(ids), training=training)  # (batch, time, embedding_dim)
        k, final = self.states_per_layer, []
        for i, rnn in enumerate(self.rnns):
            initial = None if states is None else list(states[i * k : (i + 1) * k])
            x, *layer_states = rnn(x, initial_state=initial, mask=mask, training=training)
            x = self.dropout(x, training=training)  # (batch, time, units)
            final += layer_states
        return self.head(x), final

    def call(self, ids, training=False):
        return self.run(ids, training=training)[0]  # (batch, time, vocab)

    def step(self, ids, *states):
        """One character: `ids (batch,)`, flat states -> `(logits (batch, vocab), *new flat states)`."""
        logits, states = self.run(ids[:, None], states)
        return (logits[:, 0], *states)

    def build(self, input_shape=None):
        c = self.config
        self.embedding.build((None, None))
        width = c.embedding_dim
        for rnn in self.rnns:
            rnn.build((None, None, width))
            width = c.units
        self.head.build((None, None, c.units))
        self.built = True


def bits_per_character(nats):
    """Cross-entropy in nats per character -> bits per character."""
    return nats / np.log(2.0)
