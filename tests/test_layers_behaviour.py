"""Our recurrent layers beyond equality: stateful runs, dropout in training, configs,
`.keras` save/load (also under another backend) and clear errors for bad arguments."""

import keras
import numpy as np
import pytest
from keras import ops

import layers

from helpers import run_on_other_backend


def small_model(seed=0):
    """Embedding-free model that uses all three layers, Bidirectional and masking."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6, 3))
    x = keras.layers.Masking(0.0)(inputs)
    x = layers.SimpleRNN(4, return_sequences=True)(x)
    x = keras.layers.Bidirectional(layers.LSTM(5, return_sequences=True))(x)
    x = layers.GRU(3, reset_after=False)(x)
    return keras.Model(inputs, keras.layers.Dense(1)(x))


def sample_inputs(n=4):
    x = np.random.default_rng(0).normal(size=(n, 6, 3)).astype("float32")
    x[0, 4:] = 0.0  # padded tail, masked by Masking
    return x


@pytest.mark.parametrize("layer_cls", [layers.SimpleRNN, layers.LSTM, layers.GRU])
def test_stateful_two_halves_equal_one_pass(layer_cls):
    x = np.random.default_rng(1).normal(size=(2, 8, 3)).astype("float32")
    whole = layer_cls(4, return_sequences=True)
    stateful = layer_cls(4, return_sequences=True, stateful=True)
    whole(x)
    stateful(x[:, :4])
    stateful.set_weights(whole.get_weights())
    stateful.reset_state()
    halves = np.concatenate([ops.convert_to_numpy(stateful(x[:, :4])), ops.convert_to_numpy(stateful(x[:, 4:]))], 1)
    np.testing.assert_allclose(halves, ops.convert_to_numpy(whole(x)), atol=1e-5)
    stateful.reset_state()
    np.testing.assert_allclose(
        ops.convert_to_numpy(stateful(x[:, :4])), ops.convert_to_numpy(whole(x))[:, :4], atol=1e-5
    )


def test_dropout_only_in_training_and_masks_shared_over_time():
    # Constant inputs and a SimpleRNN with zero recurrent kernel: h_t = tanh(x W) at every t, so
    # variational dropout (one mask per sequence) must give the same output at every step.
    layer = layers.SimpleRNN(8, return_sequences=True, dropout=0.5, recurrent_initializer="zeros", seed=3)
    x = np.ones((2, 5, 6), "float32")
    inference = ops.convert_to_numpy(layer(x, training=False))
    training = ops.convert_to_numpy(layer(x, training=True))
    assert not np.allclose(inference, training)
    np.testing.assert_allclose(training, np.repeat(training[:, :1], 5, axis=1), atol=1e-6)
    np.testing.assert_allclose(inference, ops.convert_to_numpy(layer(x)), atol=1e-6)


def test_fit_with_dropout_and_recurrent_dropout_learns():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 10, 2)).astype("float32")
    y = (x[:, :, 0].sum(1) > 0).astype("float32")
    model = keras.Sequential(
        [
            keras.Input((10, 2)),
            layers.LSTM(16, dropout=0.1, recurrent_dropout=0.1, seed=1),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    model.compile(keras.optimizers.Adam(0.02), "binary_crossentropy")
    history = model.fit(x, y, epochs=15, batch_size=32, verbose=0)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < 0.7 * losses[0]


@pytest.mark.parametrize("layer_cls", [layers.SimpleRNN, layers.LSTM, layers.GRU])
def test_config_round_trip(layer_cls):
    layer = layer_cls(7, return_sequences=True, go_backwards=True, dropout=0.25, seed=5, name="rnn")
    config = layer.get_config()
    clone = layer_cls.from_config(config)
    assert clone.get_config() == config
    assert clone.units == 7 and clone.cell.dropout == 0.25 and clone.go_backwards


def test_keras_file_round_trip_same_backend(tmp_path):
    model = small_model()
    x = sample_inputs()
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(ops.convert_to_numpy(loaded(x)), ops.convert_to_numpy(model(x)), atol=1e-6)


def test_keras_file_loads_under_another_backend(tmp_path):
    model = small_model()
    x = sample_inputs()
    model.save(tmp_path / "model.keras")
    np.save(tmp_path / "x.npy", x)
    script = (
        "import numpy as np, keras, layers\n"
        f"m = keras.saving.load_model(r'{tmp_path / 'model.keras'}', compile=False, safe_mode=True)\n"
        f"x = np.load(r'{tmp_path / 'x.npy'}')\n"
        f"np.save(r'{tmp_path / 'y.npy'}', keras.ops.convert_to_numpy(m(x)))\n"
    )
    run_on_other_backend(script)
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), ops.convert_to_numpy(model(x)), atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [({"units": 0}, "units"), ({"units": 4, "dropout": 1.5}, "dropout"),
     ({"units": 4, "recurrent_dropout": -0.1}, "recurrent_dropout")],
)
def test_bad_arguments_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        layers.LSTM(**kwargs)


def test_cell_step_in_training_with_dropout_explicit_or_cached_masks():
    cell = layers.GRUCell(3, dropout=0.5)
    x = np.ones((2, 4), "float32")
    states = cell.get_initial_state(2)
    cell(x, states)  # inference: fine
    masks = cell.dropout_masks(x, training=True)  # explicit masks, drawn by the caller
    h, _ = cell(x, states, training=True, dropout_masks=masks)
    assert tuple(h.shape) == (2, 3)
    # Without them, the cell draws and caches its own, as Keras' cells do (more in
    # tests/test_layers_keras_cases.py).
    h, _ = cell(x, states, training=True)
    assert tuple(h.shape) == (2, 3)


@pytest.mark.parametrize("time, sequences, backwards, hoisted, masked, training", [
    (7, True, False, False, True, False), (1, True, False, False, True, False), (7, False, False, False, True, False),
    (7, False, True, False, True, False), (7, True, True, True, True, False), (7, True, True, False, False, False),
    (7, True, False, False, True, True), (7, False, True, False, False, True),
    # even lengths: JAX's forward loop takes two steps an iteration, one input product for both
    (6, True, False, False, True, True), (6, False, True, False, False, False), (6, True, True, False, True, False)])
@pytest.mark.parametrize("layer_cls", [layers.LSTM, layers.GRU])
def test_backend_fast_path_equals_generic_scan(layer_cls, time, sequences, backwards, hoisted, masked, training,
                                               monkeypatch):
    """The torch and TensorFlow loops (TensorFlow's without the outputs when only the last is
    read), the input product in each step (JAX and TensorFlow on a CPU), JAX's LSTM and GRU with their
    own backward pass (`layers/jax_recurrent.py`, input products in each step, two steps at a time,
    or hoisted),
    TensorFlow's XLA-compiled loops with theirs (`layers/tf_recurrent.py`: in training, the forward
    loop keeps what the backward loop reads; outside it, the gradient recomputes it) and the
    loop-free single step (decoding) are fast paths; keras.ops.scan over hoisted products is the
    generic one. Without dropout, `training` changes nothing in the values."""
    from layers import recurrent

    monkeypatch.setattr(recurrent, "_HOIST_INPUT_PRODUCTS", hoisted)

    rng = np.random.default_rng(2)
    x = rng.normal(size=(3, time, 4)).astype("float32")
    mask = rng.random((3, time)) > 0.3
    mask[0, -1] = False  # a masked last step: its output repeats the state, or is zero
    mask = ops.convert_to_tensor(mask) if masked else None
    layer = layer_cls(5, return_sequences=sequences, return_state=True, go_backwards=backwards,
                      zero_output_for_mask=backwards)
    states = [rng.normal(size=(3, 5)).astype("float32") for _ in range(2 if layer_cls is layers.LSTM else 1)]
    layer(x, mask=mask)
    frozen = [v.value for v in layer.non_trainable_variables]

    def loss(x, *states_and_weights):
        n = len(states)
        outputs, _ = layer.stateless_call(list(states_and_weights[n:]), frozen, x, training=training,
                                          initial_state=list(states_and_weights[:n]), mask=mask)
        return sum(ops.sum(o * (i + 1.0)) for i, o in enumerate(outputs))

    weights = [v.value for v in layer.trainable_variables]
    fast_outputs = [ops.convert_to_numpy(o) for o in layer(x, initial_state=states, mask=mask, training=training)]
    fast_grads = [ops.convert_to_numpy(g) for g in layers.value_and_grad(loss, x, *states, *weights)[1]]
    monkeypatch.setattr(recurrent, "_FORCE_GENERIC_LOOP", True)
    generic_outputs = [ops.convert_to_numpy(o) for o in layer(x, initial_state=states, mask=mask, training=training)]
    generic_grads = [ops.convert_to_numpy(g) for g in layers.value_and_grad(loss, x, *states, *weights)[1]]
    for fast, generic in zip(fast_outputs + fast_grads, generic_outputs + generic_grads):
        np.testing.assert_allclose(fast, generic, atol=1e-5)
