"""A language model of movie reviews in both directions, to pretrain the sentiment encoder.

    ids (batch, time) -> Embedding -> forward LSTM  -> Dense(head) : the next word's class
                                   -> backward LSTM -> Dense(head) : the previous word's class

The two recurrent layers are the forward and backward halves of `SentimentNet`'s bidirectional
encoder, with the same shapes, so `transfer_to(sentiment_net)` hands them, with the embedding, to
the classifier (Dai & Le 2015 pretrain the classifier's LSTM as a language model; ELMo trains the
two directions as two language models sharing the embedding and the output layer, as here).

The output layer names only the words of vocabulary ids below `head_words - 1` (ids are ranked by
frequency) and gives every other word one class, `head_words - 1`: a softmax over
20,000 words costs about 14 times as much per word on a 2-core CPU (2,000 against 27,900 words
per second for a 64-unit LSTM), and what a review says of a film is in its frequent words.
"""

import dataclasses

import keras
from keras import ops

import layers
from models import artifacts
from models.config import Config, cell_setting, rnn_impl_setting, setting
from models.losses import replica_share


@dataclasses.dataclass
class ReviewLMConfig(Config):
    """Hyperparameters of `ReviewLM`; the shared ones must match the `SentimentNetConfig` it feeds."""

    vocab_size: int = setting(20000, "vocabulary size (id 0 is padding, 1 unknown); from the data", flag=False)
    embedding_dim: int = setting(128, "embedding size", quick=32)
    units: int = setting(64, "recurrent units of each direction", quick=16)
    cell: str = cell_setting("lstm")
    head_words: int = setting(2000, "output classes: the words of lower ids by name, then one for every other word",
                              quick=500)
    dropout: float = setting(0.1, "dropout on the embeddings and the recurrent outputs, in training",
                             kind="fraction")
    rnn_impl: str = rnn_impl_setting()


def head_classes(ids, head_words):
    """Output classes of word ids: the id below `head_words`, else `head_words - 1` ("other")."""
    return ops.minimum(ids, head_words - 1)


@keras.saving.register_keras_serializable(package="rnn_suite")
class ReviewLM(artifacts.PortableModel, keras.Model):
    """Forward and backward language models over token ids; `call` returns the logits of both,
    `(batch, time, head_words)` each: position t of the forward logits scores word t + 1, of the
    backward logits word t - 1.

    Args:
        config: `ReviewLMConfig`.
    """

    TASK = "review language model"
    CONFIG = ReviewLMConfig

    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        self.config = c = ReviewLMConfig.of(config)
        rnn = layers.recurrent_layer_class(c.cell, c.rnn_impl)
        self.embedding = keras.layers.Embedding(c.vocab_size, c.embedding_dim, name="embedding")
        self.forward_rnn = rnn(c.units, return_sequences=True, name="forward")
        self.backward_rnn = rnn(c.units, return_sequences=True, go_backwards=True, name="backward")
        self.dropout = keras.layers.Dropout(c.dropout)
        self.head = keras.layers.Dense(c.head_words, name="head", dtype="float32")  # shared by both directions

    def build(self, input_shape=(None, None)):
        batch, time = input_shape[0], input_shape[1]
        self.embedding.build(input_shape)
        self.forward_rnn.build((batch, time, self.config.embedding_dim))
        self.backward_rnn.build((batch, time, self.config.embedding_dim))
        self.head.build((batch, time, self.config.units))
        self.built = True

    def call(self, ids, training=False):
        mask = ops.not_equal(ids, 0)  # (batch, time): padding id 0, on the right
        x = self.dropout(self.embedding(ids), training=training)  # (batch, time, embedding_dim)
        forward = self.forward_rnn(x, mask=mask, training=training)  # (batch, time, units)
        backward = ops.flip(self.backward_rnn(x, mask=mask, training=training), axis=1)  # back in text order
        return (self.head(self.dropout(forward, training=training)),
                self.head(self.dropout(backward, training=training)))

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Mean cross-entropy of both directions over every word that has a neighbour, from the
        ids `x` alone (`y` is not read): the targets are the ids shifted (`language_model_targets`)."""
        forward, backward = y_pred
        following, preceding, next_weight, previous_weight = language_model_targets(x, self.config.head_words)
        cross_entropy = keras.losses.sparse_categorical_crossentropy
        total = ops.sum(cross_entropy(following, forward, from_logits=True) * next_weight)
        total += ops.sum(cross_entropy(preceding, backward, from_logits=True) * previous_weight)
        return replica_share(total / ops.maximum(ops.sum(next_weight) + ops.sum(previous_weight), 1.0))

    def transfer_to(self, sentiment_net):
        """Copy the embedding and both directions into a built `SentimentNet` of the same sizes: into
        its frozen language model if it has one (`lm_units`), else into its embedding and encoder."""
        c, s = self.config, sentiment_net.config
        units = s.lm_units or s.units
        if (c.vocab_size, c.embedding_dim, c.units, c.cell) != (s.vocab_size, s.embedding_dim, units, s.cell):
            raise ValueError(f"the language model ({c.vocab_size} words, {c.embedding_dim}-d embedding, {c.units} "
                             f"{c.cell} units) does not fit the classifier ({s.vocab_size}, {s.embedding_dim}, "
                             f"{units} {s.cell})")
        net = sentiment_net
        embedding, forward, backward = ((net.lm_embedding, net.lm_forward, net.lm_backward) if s.lm_units else
                                        (net.embedding, net.encoder.forward_layer, net.encoder.backward_layer))
        embedding.set_weights(self.embedding.get_weights())
        forward.set_weights(self.forward_rnn.get_weights())
        backward.set_weights(self.backward_rnn.get_weights())


def language_model_targets(ids, head_words):
    """`(next_classes, previous_classes, next_weights, previous_weights)`, each `(batch, time)`, of
    right-padded ids: the class of word t + 1 (forward) and t - 1 (backward) at position t, weight 1
    where that word exists."""
    ids = ops.convert_to_tensor(ids)
    pad = ops.zeros_like(ids[:, :1])
    following = ops.concatenate([ids[:, 1:], pad], axis=1)
    preceding = ops.concatenate([pad, ids[:, :-1]], axis=1)
    present = ops.not_equal(ids, 0)
    weight = lambda other: ops.cast(ops.logical_and(present, ops.not_equal(other, 0)), "float32")  # noqa: E731
    return (head_classes(following, head_words), head_classes(preceding, head_words),
            weight(following), weight(preceding))
