"""Bahdanau (additive) attention, `keras.ops` only.

    score(s_t, h_j) = v^T tanh(W1 h_j + W2 s_t)          (Bahdanau et al., 2015, eq. 6)
    a_tj = softmax_j(score(s_t, h_j)) over the real (unpadded) source positions j
    c_t  = sum_j a_tj h_j

`W1 h_j` does not depend on the query, so `project_keys` can compute it once per source sentence
and `call(..., keys=...)` reuses it. Training passes all decoder outputs of a sentence as queries
at once (teacher forcing, as in the TensorFlow NMT-with-attention tutorial); step-by-step decoding
calls the same layer with one query per sentence.

Reference: D. Bahdanau, K. Cho, Y. Bengio, "Neural Machine Translation by Jointly Learning to Align
and Translate", ICLR 2015.
"""

import keras
from keras import initializers, ops


@keras.saving.register_keras_serializable(package="rnn_suite")
class BahdanauAttention(keras.layers.Layer):
    """Additive attention that masks padded source positions and returns its weights.

    Args:
        units: Size of the hidden layer of the score, the rows of `W1`, `W2` and `v`.
        kernel_initializer: Initializer of `key_kernel` (W1), `query_kernel` (W2) and
            `score_kernel` (v). Default: `"glorot_uniform"`.
        **kwargs: Base layer arguments (name, dtype, trainable).

    Weights: `key_kernel (value_dim, units)`, `query_kernel (query_dim, units)`,
    `score_kernel (units,)`.

    Call arguments:
        query: `(batch, query_dim)` for one decoder step or `(batch, target_time, query_dim)`.
        values: `(batch, source_time, value_dim)`, the encoder outputs h_j.
        values_mask: optional `(batch, source_time)` boolean, `True` at real source positions.
            (Not named `mask`: Keras would fill `mask` with the *query's* mask.)
        keys: optional `project_keys(values)`, `(batch, source_time, units)`.

    Returns:
        `(context, weights)`: `(batch, [target_time,] value_dim)` and
        `(batch, [target_time,] source_time)`. Weights sum to 1 over the real positions and are
        exactly 0 on padding; a row with no real position at all gets zero weights and context.
    """

    def __init__(self, units, kernel_initializer="glorot_uniform", **kwargs):
        if not isinstance(units, int) or isinstance(units, bool) or units <= 0:
            raise ValueError(f"`units` must be a positive integer, got {units!r}.")
        super().__init__(**kwargs)
        self.units = units
        self.kernel_initializer = initializers.get(kernel_initializer)

    def build(self, query_shape, values_shape):
        self.key_kernel = self.add_weight(
            shape=(values_shape[-1], self.units), name="key_kernel", initializer=self.kernel_initializer
        )
        self.query_kernel = self.add_weight(
            shape=(query_shape[-1], self.units), name="query_kernel", initializer=self.kernel_initializer
        )
        # v as a (units, 1) matrix would do the same; a vector keeps the einsum below simple.
        self.score_kernel = self.add_weight(
            shape=(self.units,), name="score_kernel", initializer=self.kernel_initializer
        )

    def project_keys(self, values):
        """`W1 h_j` for every source position: `(batch, source_time, value_dim) -> (..., units)`."""
        return ops.matmul(values, self.key_kernel)

    def call(self, query, values, values_mask=None, keys=None):
        """Attention of `query` over `values`; `keys` is `project_keys(values)` when the caller
        already has it (step-by-step decoding projects the source once, then calls this once per
        output word). One path for a single step and for all target steps at once."""
        single_step = len(query.shape) == 2
        if single_step:
            query = query[:, None, :]  # (batch, 1, query_dim)
        if keys is None:
            keys = self.project_keys(values)  # (batch, source_time, units)
        projected_query = ops.matmul(query, self.query_kernel)  # (batch, target_time, units)
        hidden = ops.tanh(keys[:, None, :, :] + projected_query[:, :, None, :])  # (b, tt, st, units)
        # Scores and softmax in float32 also under a mixed-precision policy: -1e9 and the
        # normalisation do not fit float16.
        scores = ops.cast(ops.matmul(hidden, self.score_kernel), "float32")  # (batch, target_time, source_time)
        if values_mask is not None:
            real = ops.cast(values_mask, "bool")[:, None, :]  # (batch, 1, source_time)
            # A large negative score, not -inf: a fully masked row stays finite (no NaN).
            scores = ops.where(real, scores, ops.full_like(scores, -1e9))
            weights = ops.softmax(scores, axis=-1) * ops.cast(real, scores.dtype)
        else:
            weights = ops.softmax(scores, axis=-1)
        context = ops.matmul(ops.cast(weights, values.dtype), values)  # (batch, target_time, value_dim)
        if single_step:
            return context[:, 0], weights[:, 0]
        return context, weights

    def compute_output_shape(self, query_shape, values_shape, values_mask_shape=None, keys_shape=None):
        prefix = tuple(query_shape[:-1])
        return prefix + (values_shape[-1],), prefix + (values_shape[1],)

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "kernel_initializer": initializers.serialize(self.kernel_initializer),
        }
