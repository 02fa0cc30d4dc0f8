"""The torch fast path (`layers/torch_recurrent.py`: ATen's fused RNN kernels) against the
generic loop: outputs, final states and gradients, masked and not, both directions."""

import keras
import numpy as np
import pytest
from keras import ops

import layers
from layers import recurrent, torch_recurrent

pytestmark = pytest.mark.skipif(keras.backend.backend() != "torch", reason="the fused kernels are PyTorch's")

BATCH, TIME, FEATURES, UNITS = 4, 6, 3, 5
# Right padding, an empty row and a full one: the masks this suite's models make.
LENGTHS = np.array([6, 3, 0, 1])


def cell_layers():
    return {
        "lstm": lambda **kw: layers.LSTM(UNITS, **kw),
        "gru": lambda **kw: layers.GRU(UNITS, **kw),
        "rnn_tanh": lambda **kw: layers.SimpleRNN(UNITS, **kw),
        "rnn_relu": lambda **kw: layers.SimpleRNN(UNITS, activation="relu", **kw),
    }


@pytest.fixture
def fused_calls(monkeypatch):
    """How many layer calls the fused kernels answered (the rest took the generic loop)."""
    calls = []
    fused = torch_recurrent.fused_recurrence

    def counted(*args, **kwargs):
        result = fused(*args, **kwargs)
        calls.append(result is not None)
        return result

    monkeypatch.setattr(torch_recurrent, "fused_recurrence", counted)
    return calls


def outputs_and_gradients(layer, x, mask, states):
    """The layer's outputs and the gradients of a weighted sum of them, as numpy arrays."""
    frozen = [v.value for v in layer.non_trainable_variables]

    def loss(x, *weights):
        outputs, _ = layer.stateless_call(list(weights), frozen, x, initial_state=states, mask=mask, training=True)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        return sum(ops.sum(o * ops.cos(ops.arange(ops.size(o), dtype="float32").reshape(o.shape) + i))
                   for i, o in enumerate(outputs))

    weights = [v.value for v in layer.trainable_variables]
    values = layer(x, initial_state=states, mask=mask)
    values = values if isinstance(values, (list, tuple)) else [values]
    grads = layers.value_and_grad(loss, x, *weights)[1]
    return [ops.convert_to_numpy(v) for v in list(values) + list(grads)]


@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("kind", list(cell_layers()))
def test_fused_equals_generic(kind, masked, go_backwards, fused_calls, monkeypatch):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(BATCH, TIME, FEATURES)).astype("float32")
    mask = (np.arange(TIME)[None] < LENGTHS[:, None]) if masked else None
    # The cell state of a masked LSTM is not among the kernel's outputs: no return_state there.
    state_kw = {} if masked and kind == "lstm" else {"return_state": True}
    layer = cell_layers()[kind](return_sequences=True, go_backwards=go_backwards, **state_kw)
    layer(x, mask=mask)
    sizes = layer.cell.state_size if isinstance(layer.cell.state_size, list) else [layer.cell.state_size]
    states = [ops.convert_to_tensor(rng.normal(size=(BATCH, s)).astype("float32")) for s in sizes]
    mask = None if mask is None else ops.convert_to_tensor(mask)

    fused_calls.clear()
    fast = outputs_and_gradients(layer, x, mask, states)
    assert fused_calls and all(fused_calls), "the fused kernel was not used"
    monkeypatch.setattr(recurrent, "_FORCE_GENERIC_LOOP", True)
    generic = outputs_and_gradients(layer, x, mask, states)
    assert len(fast) == len(generic)
    for a, b in zip(fast, generic):
        np.testing.assert_allclose(a, b, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("zero_output_for_mask", [False, True])
def test_bidirectional_masked_gru_with_input_dropout(zero_output_for_mask, fused_calls, monkeypatch):
    """The sentiment/translation encoder's case: both directions, right padding, input dropout
    drawn from the same seed on both paths."""
    rng = np.random.default_rng(4)
    x = ops.convert_to_tensor(rng.normal(size=(BATCH, TIME, FEATURES)).astype("float32"))
    mask = ops.convert_to_tensor(np.arange(TIME)[None] < LENGTHS[:, None])
    layer = keras.layers.Bidirectional(layers.GRU(UNITS, return_sequences=True, dropout=0.3, seed=1))
    layer(x, mask=mask)
    for sub in (layer.forward_layer, layer.backward_layer):
        sub.zero_output_for_mask = zero_output_for_mask
    seeds = [v for v in layer.non_trainable_variables if "seed" in v.path]
    start = [ops.convert_to_numpy(v) for v in seeds]

    def run():
        for v, s in zip(seeds, start):
            v.assign(s)
        return ops.convert_to_numpy(layer(x, mask=mask, training=True))

    fused_calls.clear()
    fast = run()
    assert fused_calls == [True, True]
    monkeypatch.setattr(recurrent, "_FORCE_GENERIC_LOOP", True)
    np.testing.assert_allclose(fast, run(), atol=2e-5)


def test_cases_the_kernels_do_not_compute_take_the_generic_loop(fused_calls):
    x = np.ones((2, 3, FEATURES), "float32")
    left_padded = ops.convert_to_tensor(np.array([[False, True, True], [True, True, True]]))
    cases = [
        (layers.GRU(UNITS, reset_after=False), None),
        (layers.LSTM(UNITS, recurrent_dropout=0.5), None),  # in training only
        (layers.LSTM(UNITS, activation="relu"), None),
        (layers.LSTM(UNITS, return_state=True), ops.convert_to_tensor(np.array([[True, True, False]] * 2))),
        (layers.GRU(UNITS), left_padded),
    ]
    for layer, mask in cases:
        fused_calls.clear()
        layer(x, mask=mask, training=True)
        assert fused_calls in ([], [False]), layer
