"""Keras' own test cases for its recurrent cells and layers, run on ours (the drop-in promise).

Adapted from `keras/src/layers/rnn/`: `dropout_rnn_cell_test.test_basics` (a cell with dropout
and recurrent dropout inside `keras.layers.RNN`, called in training; here our three cells, with
the dropout arguments of the `test_basics` of `simple_rnn_test`, `lstm_test` and `gru_test`),
`stacked_rnn_cells_test.test_basics` (its stacked cells with dropout) and
`bidirectional_test.test_keeps_use_cudnn`. `run_layer_test` is Keras' own checker: symbolic and
eager calls, serialization, masking and a compiled training step (jitted on JAX and TensorFlow),
so masks cached by a cell must not leak tracers out of a traced call.

The other cases of `simple_rnn_test`, `lstm_test`, `gru_test` and `stacked_rnn_cells_test`
(correctness, statefulness, initial states, masking) also pass with our layers and cells swapped
in; `tests/test_layers_equal.py` covers them more thoroughly. Of `bidirectional_test`, only the
eligibility checks of Keras' fused cuDNN path fail: `Bidirectional` takes that path for
instances of Keras' own `LSTM`/`GRU` only, which ours are not (we have no cuDNN path).
"""

import keras
import numpy as np
import pytest
from absl.testing import parameterized
from keras import ops
from keras.src import testing

import layers

CELLS = [
    ("simple_rnn", layers.SimpleRNNCell, {}),
    ("lstm", layers.LSTMCell, {}),
    ("gru", layers.GRUCell, {}),
    ("gru_reset_before", layers.GRUCell, {"reset_after": False}),
]


class KerasCases(testing.TestCase):
    @parameterized.named_parameters(CELLS)
    def test_cell_with_dropout_in_keras_rnn(self, cell_cls, extra):
        # dropout_rnn_cell_test.test_basics, with our cells.
        self.run_layer_test(
            keras.layers.RNN,
            init_kwargs={"cell": cell_cls(5, dropout=0.5, recurrent_dropout=0.5, seed=1337, **extra)},
            input_shape=(3, 2, 4),
            call_kwargs={"training": True},
            expected_output_shape=(3, 5),
            expected_num_trainable_weights=3,
            expected_num_non_trainable_weights=0,
            expected_num_non_trainable_variables=1,  # the seed generator's state
            supports_masking=True,
            run_mixed_precision_check=False,
        )

    @parameterized.named_parameters(CELLS)
    def test_stacked_cells_with_dropout(self, cell_cls, extra):
        # stacked_rnn_cells_test.test_basics (its dropout cases), with our cells.
        self.run_layer_test(
            keras.layers.RNN,
            init_kwargs={
                "cell": [cell_cls(units, dropout=0.1, recurrent_dropout=0.1, **extra) for units in (3, 4, 5)],
                "return_sequences": True,
            },
            # As in Keras' case, no `training=True` call: the training step of run_layer_test is
            # where dropout runs. (A direct mixed_float16 call in training fails on TensorFlow
            # with Keras' own cells too: the stacked cells' masks stay float32.)
            input_shape=(2, 3, 4),
            expected_output_shape=(2, 3, 5),
            expected_num_trainable_weights=9,
            expected_num_non_trainable_weights=0,
            expected_num_seed_generators=3,
            supports_masking=True,
        )

    @parameterized.named_parameters(("lstm", layers.LSTM), ("gru", layers.GRU))
    def test_keeps_use_cudnn(self, layer_cls):
        # bidirectional_test.test_keeps_use_cudnn, with our layers.
        for use_cudnn in [True, False, "auto"]:
            rnn = layer_cls(1, use_cudnn=use_cudnn)
            self.assertEqual(rnn.use_cudnn, use_cudnn)
            bidi = keras.layers.Bidirectional(rnn)
            self.assertEqual(bidi.forward_layer.use_cudnn, use_cudnn)
            self.assertEqual(bidi.backward_layer.use_cudnn, use_cudnn)
        self.assertEqual(layer_cls(1).use_cudnn, "auto")
        bidi = keras.layers.Bidirectional(layers.SimpleRNN(1))
        self.assertFalse(hasattr(bidi.forward_layer, "use_cudnn"))
        self.assertFalse(hasattr(bidi.backward_layer, "use_cudnn"))


# --- what the Keras cases imply, checked directly -------------------------------------------------


@pytest.mark.parametrize("name, cell_cls, extra", CELLS, ids=[c[0] for c in CELLS])
def test_cell_masks_redrawn_for_each_sequence_and_only_in_training(name, cell_cls, extra):
    cell = cell_cls(8, dropout=0.5, recurrent_dropout=0.5, seed=3, **extra)
    rnn = keras.layers.RNN(cell, return_sequences=True)
    x = np.ones((2, 5, 6), "float32")
    first = ops.convert_to_numpy(rnn(x, training=True))
    second = ops.convert_to_numpy(rnn(x, training=True))
    assert not np.allclose(first, second), "the masks of the first sequence were reused"
    inference = ops.convert_to_numpy(rnn(x))
    assert not np.allclose(first, inference)
    np.testing.assert_allclose(inference, ops.convert_to_numpy(rnn(x, training=False)), atol=1e-6)


def test_cell_masks_shared_by_the_steps_of_a_sequence():
    # Constant inputs and a zero recurrent kernel: h_t = tanh((x * input_mask) W) at every t, so
    # one input mask per sequence gives the same output at every step.
    cell = layers.SimpleRNNCell(8, dropout=0.5, recurrent_initializer="zeros", seed=3)
    rnn = keras.layers.RNN(cell, return_sequences=True)
    outputs = ops.convert_to_numpy(rnn(np.ones((2, 5, 6), "float32"), training=True))
    np.testing.assert_allclose(outputs, np.repeat(outputs[:, :1], 5, axis=1), atol=1e-6)


def test_cell_step_in_training_caches_its_masks_until_reset():
    # What keras.layers.RNN relies on: a step without explicit masks draws them once and reuses
    # them; `reset_dropout_mask()` (called by keras.layers.RNN after each sequence) clears them.
    cell = layers.SimpleRNNCell(16, dropout=0.5, recurrent_dropout=0.5, recurrent_initializer="zeros")
    x = ops.ones((2, 4))
    states = cell.get_initial_state(2)
    h1, _ = cell(x, states, training=True)
    h2, _ = cell(x, states, training=True)
    np.testing.assert_allclose(ops.convert_to_numpy(h1), ops.convert_to_numpy(h2))
    cell.reset_dropout_mask()
    cell.reset_recurrent_dropout_mask()
    h3, _ = cell(x, states, training=True)
    assert not np.allclose(ops.convert_to_numpy(h1), ops.convert_to_numpy(h3))
    # The explicit path, for step-by-step callers, is unchanged: h = tanh((x * input_mask) W).
    masks = cell.dropout_masks(x, training=True)
    h4, _ = cell(x, states, training=True, dropout_masks=masks)
    expected = ops.tanh(ops.matmul(x * masks[0], cell.kernel))
    np.testing.assert_allclose(ops.convert_to_numpy(h4), ops.convert_to_numpy(expected), atol=1e-6)


# Keras' LSTM and GRU cells draw one recurrent mask per gate, so they share our single mask only
# for input dropout; its SimpleRNN cell draws one of each, as ours do.
SAME_MASKS = [
    ("simple_rnn", "SimpleRNN", {"dropout": 0.3, "recurrent_dropout": 0.4}),
    ("lstm", "LSTM", {"dropout": 0.3}),
    ("gru", "GRU", {"dropout": 0.3}),
    ("gru_reset_before", "GRU", {"dropout": 0.3, "reset_after": False}),
]


@pytest.mark.parametrize("name, keras_name, options", SAME_MASKS, ids=[c[0] for c in SAME_MASKS])
def test_training_with_dropout_equals_keras_with_the_same_seed(name, keras_name, options):
    """Our cells in keras.layers.RNN, and our layers, draw the masks Keras' built-ins draw."""
    x = np.random.default_rng(5).normal(size=(3, 6, 4)).astype("float32")
    keras_cell = getattr(keras.layers, keras_name + "Cell")(5, seed=7, **options)
    our_cell = getattr(layers, keras_name + "Cell")(5, seed=7, **options)
    builtin = keras.layers.RNN(keras_cell, return_sequences=True)
    ours_cell = keras.layers.RNN(our_cell, return_sequences=True)
    ours_layer = getattr(layers, keras_name)(5, seed=7, return_sequences=True, **options)
    for layer in (builtin, ours_cell, ours_layer):
        layer.build(x.shape)
    ours_cell.set_weights(builtin.get_weights())
    ours_layer.set_weights(builtin.get_weights())
    expected = ops.convert_to_numpy(builtin(x, training=True))
    np.testing.assert_allclose(ops.convert_to_numpy(ours_cell(x, training=True)), expected, atol=1e-5)
    np.testing.assert_allclose(ops.convert_to_numpy(ours_layer(x, training=True)), expected, atol=1e-5)


def test_fit_stacked_cells_with_dropout_twice_then_predict():
    # Several compiled training steps and calls (jitted on JAX and TensorFlow): a mask cached in
    # one traced call must not be reused, as a stale tracer, by the next.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 5, 3)).astype("float32")
    y = rng.normal(size=(16, 1)).astype("float32")
    cells = [cell_cls(4, dropout=0.2, recurrent_dropout=0.2) for cell_cls in (layers.LSTMCell, layers.GRUCell)]
    rnn = keras.layers.RNN(keras.layers.StackedRNNCells(cells))
    model = keras.Sequential([keras.Input((5, 3)), rnn, keras.layers.Dense(1)])
    model.compile("adam", "mse")
    history = model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert np.all(np.isfinite(model.predict(x, verbose=0)))
    assert np.all(np.isfinite(ops.convert_to_numpy(model(x, training=True))))


@pytest.mark.parametrize("layer_cls", [layers.LSTM, layers.GRU])
def test_use_cudnn_checked_kept_out_of_config_and_our_loop_runs(layer_cls):
    # As Keras: validated, kept as an attribute, not serialized. Unlike Keras, `True` never needs
    # a GPU: we have no cuDNN path and always run our own loop.
    with pytest.raises(ValueError, match="use_cudnn"):
        layer_cls(2, use_cudnn="yes")
    layer = layer_cls(2, use_cudnn=True)
    assert "use_cudnn" not in layer.get_config()
    assert tuple(layer(np.ones((1, 3, 2), "float32")).shape) == (1, 2)
