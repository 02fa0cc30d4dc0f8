"""Bahdanau attention: the score formula, masking of padded source positions, the one-step path
used in decoding (precomputed keys), gradients and serialisation."""

import keras
import numpy as np
import pytest
from keras import ops

import layers


def sample(batch=3, target=4, source=5, query_dim=6, value_dim=7, seed=0):
    rng = np.random.default_rng(seed)
    query = rng.normal(size=(batch, target, query_dim)).astype("float32")
    values = rng.normal(size=(batch, source, value_dim)).astype("float32")
    mask = np.ones((batch, source), bool)
    mask[0, 3:] = False  # two padded positions
    mask[1, 1:] = False  # only one real position
    return query, values, mask


def numpy_attention(layer, query, values, mask):
    """The formula, written out: score_tj = v . tanh(W1 h_j + W2 s_t), softmax over real j."""
    w1, w2, v = (ops.convert_to_numpy(w) for w in (layer.key_kernel, layer.query_kernel, layer.score_kernel))
    hidden = np.tanh((values @ w1)[:, None, :, :] + (query @ w2)[:, :, None, :])
    scores = np.where(mask[:, None, :], hidden @ v, -np.inf)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    return weights @ values, weights


def test_matches_the_formula_and_masks_padding():
    query, values, mask = sample()
    layer = layers.BahdanauAttention(8)
    context, weights = (ops.convert_to_numpy(x) for x in layer(query, values, values_mask=mask))
    expected_context, expected_weights = numpy_attention(layer, query, values, mask)
    np.testing.assert_allclose(weights, expected_weights, atol=1e-5)
    np.testing.assert_allclose(context, expected_context, atol=1e-5)
    assert context.shape == (3, 4, 7) and weights.shape == (3, 4, 5)


def test_weights_sum_to_one_over_real_positions_and_are_zero_on_padding():
    query, values, mask = sample()
    _, weights = layers.BahdanauAttention(8)(query, values, values_mask=mask)
    weights = ops.convert_to_numpy(weights)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
    assert np.all(weights[~np.broadcast_to(mask[:, None, :], weights.shape)] == 0.0)
    np.testing.assert_allclose(weights[1, :, 0], 1.0, atol=1e-6)  # one real position: all weight


def test_padding_values_do_not_change_the_context():
    query, values, mask = sample()
    layer = layers.BahdanauAttention(8)
    context = ops.convert_to_numpy(layer(query, values, values_mask=mask)[0])
    garbage = values.copy()
    garbage[~mask] = 1e3
    np.testing.assert_allclose(ops.convert_to_numpy(layer(query, garbage, values_mask=mask)[0]), context, atol=1e-5)


def test_fully_masked_row_gives_zeros_not_nan():
    query, values, mask = sample()
    mask[2] = False
    context, weights = (ops.convert_to_numpy(x) for x in layers.BahdanauAttention(8)(query, values, values_mask=mask))
    assert np.all(np.isfinite(context)) and np.all(weights[2] == 0) and np.all(context[2] == 0)


def test_single_query_with_precomputed_keys_equals_the_sequence_path():
    query, values, mask = sample()
    layer = layers.BahdanauAttention(8)
    context, weights = (ops.convert_to_numpy(x) for x in layer(query, values, values_mask=mask))
    keys = layer.project_keys(values)
    for t in range(query.shape[1]):
        one = [ops.convert_to_numpy(x) for x in layer(query[:, t], values, values_mask=mask)]
        step = [ops.convert_to_numpy(x) for x in layer(query[:, t], values, values_mask=mask, keys=keys)]
        for got in (one, step):
            np.testing.assert_allclose(got[0], context[:, t], atol=1e-5)
            np.testing.assert_allclose(got[1], weights[:, t], atol=1e-6)
        assert np.all(step[1][~mask] == 0.0)


def test_gradients_reach_every_weight_and_not_the_padding():
    query, values, mask = sample()
    layer = layers.BahdanauAttention(8)
    layer(query, values, values_mask=mask)

    def loss(values, *weights):
        (context, _), _ = layer.stateless_call(list(weights), [], query, values, values_mask=mask)
        return ops.sum(context**2)

    _, grads = layers.value_and_grad(loss, values, *[w.value for w in layer.trainable_weights])
    grads = [ops.convert_to_numpy(g) for g in grads]
    assert np.all(grads[0][~mask] == 0.0)  # padded values get no gradient
    assert all(np.abs(g).sum() > 0 for g in grads[1:])


def test_config_round_trip_and_saving(tmp_path):
    layer = layers.BahdanauAttention(5, name="att")
    assert layers.BahdanauAttention.from_config(layer.get_config()).get_config() == layer.get_config()
    query_in, values_in = keras.Input((4, 6)), keras.Input((5, 7))
    context, weights = layers.BahdanauAttention(5)(query_in, values_in)
    model = keras.Model([query_in, values_in], [context, weights])
    query, values, _ = sample()
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    for a, b in zip(loaded([query, values]), model([query, values])):
        np.testing.assert_allclose(ops.convert_to_numpy(a), ops.convert_to_numpy(b), atol=1e-6)


def test_bad_units_raise():
    with pytest.raises(ValueError, match="units"):
        layers.BahdanauAttention(0)
