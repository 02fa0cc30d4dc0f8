"""Masked pooling over time: a summary of a sequence that ignores its padding."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="rnn_suite")
class MaskedMeanMaxPooling(keras.layers.Layer):
    """Concatenated mean and max over the real (unmasked) timesteps.

    Mean pooling sees the whole sequence evenly and max pooling picks the strongest evidence; the
    pair is a robust summary for classifying long texts with a recurrent encoder. Padding changes
    neither: masked steps are left out of the mean and cannot win the max.

    Call arguments:
        inputs: `(batch, time, features)`.
        mask: optional `(batch, time)` boolean, `True` for real steps. A sequence with no real step
            pools to zeros.

    Returns:
        `(batch, 2 * features)`: `[mean, max]`.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs, mask=None):
        if mask is None:
            return ops.concatenate([ops.mean(inputs, axis=1), ops.max(inputs, axis=1)], axis=-1)
        weights = ops.expand_dims(ops.cast(mask, inputs.dtype), -1)  # (batch, time, 1)
        count = ops.maximum(ops.sum(weights, axis=1), 1.0)  # (batch, 1)
        mean = ops.sum(inputs * weights, axis=1) / count
        lowest = ops.full_like(inputs, -1e9)
        maximum = ops.max(ops.where(ops.cast(weights, "bool"), inputs, lowest), axis=1)
        maximum = ops.where(ops.sum(weights, axis=1) > 0, maximum, ops.zeros_like(maximum))
        return ops.concatenate([mean, maximum], axis=-1)

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 2 * input_shape[-1])
