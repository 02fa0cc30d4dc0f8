"""Sequence-to-sequence translation network with Bahdanau attention, built from our own layers.

    source ids -> Embedding -> Bidirectional(GRU|LSTM) -> h_1..h_S              (encoder)
    target ids -> Embedding -> GRU|LSTM (state from a tanh bridge) -> s_t        (decoder)
    c_t = BahdanauAttention(s_t, h)        a_t = tanh(W_c [c_t; s_t])
    logits_t = a_t E^T + b                 (output tied to the target embedding E)

`decode` is the decoder, written once: training feeds it the whole shifted target (teacher
forcing: one recurrent-layer call and one attention call for all target steps, as in the
TensorFlow NMT-with-attention tutorial); inference feeds it one token per sentence at a time
(`decode_step`), through the same layers. Decoding strategies are in `models.decoding`, strings in
`models.translator`.

References: Bahdanau et al. (2015) for the attention; Luong et al. (2015) for the attentional state
a_t; Press & Wolf (2017) for the tied output.
"""

import dataclasses

import keras
from keras import ops

from layers import BahdanauAttention, recurrent_layer_class
from models import artifacts
from models.config import Config, cell_setting, rnn_impl_setting, setting
from models.losses import replica_share


@dataclasses.dataclass
class Seq2SeqConfig(Config):
    """Hyperparameters of `Seq2SeqAttention` (a trainer extends them: `trainers.translate`)."""

    source_vocab_size: int = setting(1, "source vocabulary size (id 0 is padding); from the data", flag=False)
    target_vocab_size: int = setting(1, "target vocabulary size (id 0 is padding); from the data", flag=False)
    embedding_dim: int = setting(128, "size of both embeddings and of the attentional state", quick=64)
    units: int = setting(256, "recurrent units (the decoder state; each encoder direction too)", quick=64)
    attention_units: int | None = setting(None, "hidden size of the attention score (default: units)",
                                          kind="positive_int", flag=False)
    cell: str = cell_setting("gru")
    dropout: float = setting(0.2, "dropout on the embeddings and the attentional state, in training",
                             kind="fraction")
    rnn_impl: str = rnn_impl_setting()


@keras.saving.register_keras_serializable(package="rnn_suite")
def embedding_matrix(embedding):
    """The float `(vocab, dim)` matrix of a Keras `Embedding`, also after `quantize("int8")` (or
    "int4"), when `embeddings` holds the integer values and `embeddings_scale` one scale per row."""
    matrix = embedding.embeddings
    if embedding.quantization_mode in ("int8", "int4"):
        matrix = ops.divide(ops.cast(matrix, embedding.compute_dtype), ops.expand_dims(embedding.embeddings_scale, -1))
    return matrix


class TiedOutput(keras.layers.Layer):
    """Logits from the target embedding matrix: `x (..., dim) @ E^T (dim, vocab) + b (vocab,)`."""

    def __init__(self, vocab_size, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = vocab_size

    def build(self, x_shape, embeddings_shape=None):
        self.bias = self.add_weight(shape=(self.vocab_size,), name="bias", initializer="zeros")

    def call(self, x, embeddings):
        # A matmul with E^T rather than an einsum: ONNX exporters make it one MatMul, which int8
        # quantisation covers (tf2onnx cannot even optimise the einsum's "..." form).
        return ops.matmul(x, ops.transpose(embeddings)) + self.bias

    def get_config(self):
        return {**super().get_config(), "vocab_size": self.vocab_size}


@keras.saving.register_keras_serializable(package="rnn_suite")
class Seq2SeqAttention(artifacts.PortableModel, keras.Model):
    """Encoder-decoder with additive attention.

    Args:
        config: `Seq2SeqConfig`; `rnn_impl="keras"` swaps in Keras' built-in recurrent layers
            (cuDNN on a GPU) with the same weights, so a trained model can switch
            (`artifacts.rebuild`).

    Call: `model((source (batch, S) int, target_in (batch, T) int))` -> logits `(batch, T, vocab)`.
    """

    TASK = "translation"  # what a saved folder of this class holds (`artifacts.check_model_class`)
    CONFIG = Seq2SeqConfig

    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        self.config = c = Seq2SeqConfig.of(config)
        attention_units = c.attention_units or c.units
        rnn = recurrent_layer_class(c.cell, c.rnn_impl)
        # N(0, 1/embedding_dim): Keras' default uniform(+-0.05) stalls training with the tied output
        # (measured on 10k pairs: loss stuck near the unigram entropy, 5.2 after 2 epochs; 2.0 with this).
        init = keras.initializers.RandomNormal(stddev=c.embedding_dim**-0.5)
        self.source_embedding = keras.layers.Embedding(c.source_vocab_size, c.embedding_dim,
                                                       embeddings_initializer=init, name="source_embedding")
        self.encoder = keras.layers.Bidirectional(
            rnn(c.units, return_sequences=True, return_state=True), name="encoder")
        states = ["h", "c"] if c.cell == "lstm" else ["h"]
        self.bridges = [keras.layers.Dense(c.units, activation="tanh", name=f"bridge_{s}") for s in states]
        self.target_embedding = keras.layers.Embedding(c.target_vocab_size, c.embedding_dim,
                                                       embeddings_initializer=init, name="target_embedding")
        self.decoder = rnn(c.units, return_sequences=True, return_state=True, name="decoder")
        self.attention = BahdanauAttention(attention_units, name="attention")
        self.combine = keras.layers.Dense(c.embedding_dim, activation="tanh", name="combine")
        self.output_layer = TiedOutput(c.target_vocab_size, name="output", dtype="float32")  # float32 logits
        self.dropout = keras.layers.Dropout(c.dropout, name="dropout")

    def encode(self, source, training=False):
        """`source (batch, S)` -> `(values (batch, S, 2 units), keys (batch, S, attention_units),
        mask (batch, S) bool, decoder initial states [(batch, units), ...])`."""
        mask = ops.not_equal(source, 0)  # (batch, S)
        embedded = self.dropout(self.source_embedding(source), training=training)  # (batch, S, embedding_dim)
        values, *final = self.encoder(embedded, mask=mask, training=training)
        half = len(final) // 2  # forward states, then backward states
        states = [bridge(ops.concatenate([f, b], axis=-1))
                  for bridge, f, b in zip(self.bridges, final[:half], final[half:])]
        return values, self.attention.project_keys(values), mask, states

    def decode(self, target_in, states, encoded, training=False):
        """The decoder over `target_in (batch, T)` from `states`, attending to `encoded` (the first
        three items of `encode`'s result). Returns `(logits (batch, T, vocab), final states,
        attention weights (batch, T, S))`."""
        values, keys, mask = encoded[:3]
        embedded = self.dropout(self.target_embedding(target_in), training=training)  # (batch, T, embedding_dim)
        queries, *states = self.decoder(embedded, initial_state=list(states), training=training)  # (batch, T, units)
        context, weights = self.attention(queries, values, values_mask=mask, keys=keys)  # (batch, T, 2 units)
        attentional = self.combine(ops.concatenate([context, queries], axis=-1))  # (batch, T, embedding_dim)
        attentional = self.dropout(attentional, training=training)
        return self.output_layer(attentional, embedding_matrix(self.target_embedding)), states, weights

    def decode_step(self, tokens, states, encoded):
        """`decode` for one token per sentence, `tokens (n,)`: `(logits (n, vocab), states,
        weights (n, S))`."""
        logits, states, weights = self.decode(tokens[:, None], states, encoded)
        return logits[:, 0], states, weights[:, 0]

    def call(self, inputs, training=False):
        source, target_in = inputs
        values, keys, mask, states = self.encode(source, training)
        return self.decode(target_in, states, (values, keys, mask), training)[0]  # (batch, T, vocab)

    def build(self, input_shape=None):
        # Every layer is built from shapes (creating the weights runs no forward pass: on JAX each
        # eager operation on a new shape costs a compilation).
        c = self.config
        self.source_embedding.build((None, None))
        self.encoder.build((None, None, c.embedding_dim))
        for bridge in self.bridges:
            bridge.build((None, 2 * c.units))
        self.target_embedding.build((None, None))
        self.decoder.build((None, None, c.embedding_dim))
        self.attention.build((None, None, c.units), (None, None, 2 * c.units))
        self.combine.build((None, 3 * c.units))
        self.output_layer.build((None, c.embedding_dim))
        self.built = True


@keras.saving.register_keras_serializable(package="rnn_suite")
def masked_loss(y_true, y_pred, label_smoothing=0.0):
    """Cross-entropy of logits `y_pred (batch, T, vocab)` against ids `y_true (batch, T)`, averaged
    over the real (non-padding) tokens. With `label_smoothing` e the target is (1 - e) on the true
    id plus e spread evenly over the vocabulary (Szegedy et al., 2016), computed from the
    log-probabilities rather than a one-hot target of the whole vocabulary. A replica's share under
    a TensorFlow strategy (`models.losses.replica_share`), as Keras' own losses are."""
    mask = ops.cast(ops.not_equal(y_true, 0), "float32")
    log_probs = ops.log_softmax(ops.cast(y_pred, "float32"), axis=-1)
    true_log_prob = ops.squeeze(ops.take_along_axis(log_probs, ops.expand_dims(ops.cast(y_true, "int32"), -1), -1), -1)
    loss = -true_log_prob
    if label_smoothing:
        loss = (1.0 - label_smoothing) * loss - label_smoothing * ops.mean(log_probs, axis=-1)
    return replica_share(ops.sum(loss * mask) / ops.maximum(ops.sum(mask), 1.0))


def smoothed_masked_loss(label_smoothing):
    """`masked_loss` with `label_smoothing`, as a loss function for `compile`."""
    if not label_smoothing:
        return masked_loss

    def masked_loss_smoothed(y_true, y_pred):
        return masked_loss(y_true, y_pred, label_smoothing)

    return masked_loss_smoothed


@keras.saving.register_keras_serializable(package="rnn_suite")
def masked_accuracy(y_true, y_pred):
    """Token accuracy over the real (non-padding) target positions: a hit where the true id's
    logit is the largest. Compared with the maximum rather than through `argmax`, which XLA
    runs on a CPU as a serial reduction: 13.6 against 0.6 ms for 128 x 12 x 4,000 logits in JAX,
    6% of a translation training step (a tie with the maximum counts as a hit)."""
    mask = ops.cast(ops.not_equal(y_true, 0), "float32")
    true_logit = ops.take_along_axis(y_pred, ops.expand_dims(ops.cast(y_true, "int32"), -1), axis=-1)
    hits = ops.cast(ops.greater_equal(ops.squeeze(true_logit, -1), ops.max(y_pred, axis=-1)), "float32")
    return ops.sum(hits * mask) / ops.maximum(ops.sum(mask), 1.0)
