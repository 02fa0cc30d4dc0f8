"""Proof that our SimpleRNN, LSTM and GRU compute what Keras' built-ins compute.

For random shapes, seeds and masks, with and without `Bidirectional`, our layers carrying the
built-ins' weights give the same outputs and final states (within 1e-5) and the same gradients
with respect to the inputs and every weight (within 1e-4). The built-ins run their generic path
(`use_cudnn=False`), which processes every step, so all steps are compared.
"""

import keras
import numpy as np
import pytest
from keras import ops

import layers

ATOL_VALUES = 1e-5
ATOL_GRADS = 1e-4

# (name, our class, built-in class, extra constructor arguments)
KINDS = {
    "simple_rnn": (layers.SimpleRNN, keras.layers.SimpleRNN, {}),
    "lstm": (layers.LSTM, keras.layers.LSTM, {}),
    "gru": (layers.GRU, keras.layers.GRU, {}),
    "gru_reset_before": (layers.GRU, keras.layers.GRU, {"reset_after": False}),
}
MASKS = ["none", "right_padded", "any"]


def random_case(seed, mask_kind):
    """Random shapes, inputs and a mask for one test case."""
    rng = np.random.default_rng(seed)
    batch, time, features, units = (int(rng.integers(1, n)) for n in (5, 10, 7, 8))
    x = rng.normal(size=(batch, time, features)).astype("float32")
    if mask_kind == "none":
        mask = None
    elif mask_kind == "right_padded":
        lengths = rng.integers(1, time + 1, size=batch)
        mask = np.arange(time)[None, :] < lengths[:, None]
    else:
        mask = rng.random((batch, time)) > 0.35
    return x, mask, units, rng


def make_pair(kind, units, bidirectional=False, **options):
    ours_cls, builtin_cls, extra = KINDS[kind]
    builtin_options = dict(options, **extra)
    if builtin_cls is not keras.layers.SimpleRNN:
        builtin_options["use_cudnn"] = False
    ours = ours_cls(units, **options, **extra)
    builtin = builtin_cls(units, **builtin_options)
    if bidirectional:
        ours, builtin = keras.layers.Bidirectional(ours), keras.layers.Bidirectional(builtin)
    return ours, builtin


def as_list(outputs):
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


def weighted_sum_loss(layer, projections, **call_kwargs):
    """A scalar that depends on every output and state, through fixed random projections."""

    frozen = [v.value for v in layer.non_trainable_variables]  # the dropout seed state

    def loss(x, *weights):
        outputs, _ = layer.stateless_call(list(weights), frozen, x, **call_kwargs)
        return sum(ops.sum(o * ops.convert_to_tensor(p)) for o, p in zip(as_list(outputs), projections))

    return loss


def assert_same_layers(ours, builtin, x, mask=None, initial_state=None, rng=None):
    """Build both, copy the built-in's weights into ours, compare values and gradients."""
    call_kwargs = {"mask": ops.convert_to_tensor(mask)} if mask is not None else {}
    if initial_state is not None:
        call_kwargs["initial_state"] = initial_state
    expected = as_list(builtin(x, **call_kwargs))
    ours(x, **call_kwargs)
    assert [w.shape for w in ours.get_weights()] == [w.shape for w in builtin.get_weights()]
    ours.set_weights(builtin.get_weights())
    got = as_list(ours(x, **call_kwargs))
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(ops.convert_to_numpy(g), ops.convert_to_numpy(e), atol=ATOL_VALUES)

    rng = rng or np.random.default_rng(0)
    projections = [rng.normal(size=tuple(e.shape)).astype("float32") for e in expected]
    weights = [ops.convert_to_tensor(w) for w in builtin.get_weights()]
    _, grads_ours = layers.value_and_grad(weighted_sum_loss(ours, projections, **call_kwargs), x, *weights)
    _, grads_builtin = layers.value_and_grad(weighted_sum_loss(builtin, projections, **call_kwargs), x, *weights)
    for g, e in zip(grads_ours, grads_builtin):
        np.testing.assert_allclose(ops.convert_to_numpy(g), ops.convert_to_numpy(e), atol=ATOL_GRADS)


def case_seed(*names):
    """A different, reproducible random case for every parameter combination."""
    return sum(ord(c) * (i + 1) for i, c in enumerate("/".join(names)))


@pytest.mark.parametrize("mask_kind", MASKS)
@pytest.mark.parametrize("kind", list(KINDS))
def test_outputs_states_and_gradients_equal(kind, mask_kind):
    x, mask, units, rng = random_case(case_seed(kind, mask_kind), mask_kind)
    ours, builtin = make_pair(kind, units, return_sequences=True, return_state=True)
    assert_same_layers(ours, builtin, x, mask, rng=rng)


@pytest.mark.parametrize("kind", list(KINDS))
def test_go_backwards_equal(kind):
    x, mask, units, rng = random_case(case_seed(kind, "backwards"), "any")
    ours, builtin = make_pair(kind, units, go_backwards=True, return_sequences=True, return_state=True)
    assert_same_layers(ours, builtin, x, mask, rng=rng)


@pytest.mark.parametrize(
    "mask_kind, options",
    [("any", {"return_sequences": True}), ("right_padded", {"return_state": True})],
    ids=["sequences-any_mask", "states-right_padded"],
)
@pytest.mark.parametrize("kind", list(KINDS))
def test_bidirectional_equal(kind, mask_kind, options):
    x, mask, units, rng = random_case(case_seed(kind, mask_kind, "bidi"), mask_kind)
    ours, builtin = make_pair(kind, units, bidirectional=True, **options)
    assert_same_layers(ours, builtin, x, mask, rng=rng)


@pytest.mark.parametrize("kind", list(KINDS))
def test_initial_state_equal(kind):
    x, _, units, rng = random_case(3, "none")
    n_states = 2 if kind == "lstm" else 1
    initial = [rng.normal(size=(x.shape[0], units)).astype("float32") for _ in range(n_states)]
    ours, builtin = make_pair(kind, units, return_sequences=True, return_state=True)
    assert_same_layers(ours, builtin, x, initial_state=initial, rng=rng)


@pytest.mark.parametrize("kind", list(KINDS))
def test_unroll_equal(kind):
    x, mask, units, rng = random_case(case_seed(kind, "unroll"), "any")
    ours, builtin = make_pair(kind, units, unroll=True, return_sequences=True, return_state=True)
    assert_same_layers(ours, builtin, x, mask, rng=rng)


@pytest.mark.parametrize("kind", list(KINDS))
def test_builtin_accepts_our_weights(kind):
    x, mask, units, _ = random_case(9, "any")
    ours, builtin = make_pair(kind, units, return_sequences=True)
    ours(x, mask=mask)
    builtin(x, mask=mask)
    builtin.set_weights(ours.get_weights())
    np.testing.assert_allclose(
        ops.convert_to_numpy(builtin(x, mask=mask)), ops.convert_to_numpy(ours(x, mask=mask)), atol=ATOL_VALUES
    )


@pytest.mark.parametrize("kind", list(KINDS))
def test_cell_in_keras_rnn_equals_our_layer(kind):
    """Our cells also run one step at a time inside `keras.layers.RNN`."""
    x, mask, units, _ = random_case(4, "any")
    ours_cls, _, extra = KINDS[kind]
    layer = ours_cls(units, return_sequences=True, **extra)
    wrapped = keras.layers.RNN(ours_cls.cell_class(units, **extra), return_sequences=True)
    layer(x, mask=mask)
    wrapped(x, mask=mask)
    wrapped.set_weights(layer.get_weights())
    np.testing.assert_allclose(
        ops.convert_to_numpy(wrapped(x, mask=mask)), ops.convert_to_numpy(layer(x, mask=mask)), atol=ATOL_VALUES
    )
