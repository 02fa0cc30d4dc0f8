"""JAX's fused CPU LSTM kernel (`layers/native_lstm.py`) against the generic loop and XLA's."""

import os
import platform
import shutil

import keras
import numpy as np
import pytest
from keras import ops

import layers

pytestmark = pytest.mark.skipif(keras.backend.backend() != "jax", reason="a JAX kernel")


def _builds_here():
    if platform.machine().lower() not in ("x86_64", "amd64") or shutil.which(os.environ.get("CXX", "g++")) is None:
        return False
    with open("/proc/cpuinfo") as f:
        flags = f.read()
    return " avx2" in flags and " fma" in flags


@pytest.fixture
def native_calls(monkeypatch):
    """Counts the layer calls that the native kernel computes."""
    from layers import native_lstm

    if not native_lstm.available():
        pytest.skip("the native kernel cannot run on this machine")
    calls = []
    original = native_lstm.sequence
    monkeypatch.setattr(native_lstm, "sequence", lambda *args, **kw: calls.append(1) or original(*args, **kw))
    return calls


@pytest.mark.skipif(not _builds_here(), reason="needs x86-64 with AVX2 and FMA and a C++ compiler")
def test_kernel_builds_and_registers_where_it_can():
    """On the reference machine and CI the kernel must run, so the tests below cannot pass by skipping."""
    from layers import native_lstm

    assert native_lstm.available()


@pytest.mark.parametrize("batch, time, units, masked, backwards, sequences", [
    (3, 7, 16, True, False, True),     # one thread (under 64 units), a masked last step
    (7, 9, 200, True, True, True),     # two threads with slices of 96 and 104 units, rows not a multiple of 6
    (64, 6, 256, False, False, False),  # the benchmark's batch and width
    (1, 5, 128, False, True, True),    # one row
    (5, 4, 8, True, False, False)])    # the smallest width
def test_native_equals_generic_loop(batch, time, units, masked, backwards, sequences, native_calls, monkeypatch):
    """Outputs, states and the gradients of the weights, inputs and initial states."""
    from layers import recurrent

    rng = np.random.default_rng(3)
    x = rng.normal(size=(batch, time, 6)).astype("float32")
    mask = rng.random((batch, time)) > 0.3
    mask[0, -1] = False
    mask = ops.convert_to_tensor(mask) if masked else None
    layer = layers.LSTM(units, return_sequences=sequences, return_state=True, go_backwards=backwards,
                        zero_output_for_mask=backwards)
    layer(x, mask=mask)
    layer.cell.bias.assign(rng.normal(size=layer.cell.bias.shape).astype("float32"))
    states = [rng.normal(size=(batch, units)).astype("float32") for _ in range(2)]
    frozen = [v.value for v in layer.non_trainable_variables]

    def loss(x, h, c, *weights):
        outputs, _ = layer.stateless_call(list(weights), frozen, x, initial_state=[h, c], mask=mask)
        return sum(ops.sum(o * ops.cos(ops.arange(o.shape[-1], dtype="float32") + i)) for i, o in enumerate(outputs))

    weights = [v.value for v in layer.trainable_variables]

    def run():
        outputs = [ops.convert_to_numpy(o) for o in layer(x, initial_state=states, mask=mask)]
        return outputs + [ops.convert_to_numpy(g) for g in layers.value_and_grad(loss, x, *states, *weights)[1]]

    fast = run()
    assert native_calls, "the native kernel did not run"
    monkeypatch.setattr(recurrent, "_FORCE_GENERIC_LOOP", True)
    generic = run()
    for f, g in zip(fast, generic):
        np.testing.assert_allclose(f, g, atol=2e-5, rtol=1e-5)


def test_native_training_equals_xla_loop(native_calls, monkeypatch):
    """A compiled training step (`train_on_batch`, under `jax.jit`) with the kernel and with XLA's loop."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 10, 5)).astype("float32")
    y = rng.normal(size=(16, 1)).astype("float32")

    def trained():
        keras.utils.set_random_seed(1)
        model = keras.Sequential([keras.Input((10, 5)), layers.LSTM(64), keras.layers.Dense(1)])
        model.compile(keras.optimizers.Adam(1e-2), "mse")
        losses = [model.train_on_batch(x, y) for _ in range(3)]
        return losses, model.predict_on_batch(x)

    native = trained()
    assert native_calls
    calls = len(native_calls)
    monkeypatch.setenv("RNN_SUITE_NATIVE_LSTM", "0")
    xla = trained()
    assert len(native_calls) == calls, "RNN_SUITE_NATIVE_LSTM=0 did not turn the kernel off"
    np.testing.assert_allclose(native[0], xla[0], rtol=1e-5)
    np.testing.assert_allclose(native[1], xla[1], atol=1e-5)


def test_units_not_a_multiple_of_8_keep_xla_loop(native_calls):
    layers.LSTM(12)(np.zeros((2, 3, 4), "float32"))
    assert not native_calls


def test_a_failing_build_warns_and_falls_back(tmp_path, monkeypatch):
    from layers import native_lstm

    monkeypatch.setenv("RNN_SUITE_NATIVE_CACHE", str(tmp_path))
    with pytest.warns(UserWarning, match="could not be built"):
        assert native_lstm._load(shutil.which("false")) is None


@pytest.mark.parametrize("masked", [False, True])
def test_kernel_calls_equal_their_references(masked, native_calls):
    """Each FFI call against its `jax.numpy` reference (which also gives its derivatives), every result."""
    import jax.numpy as jnp

    from layers import native_lstm

    rng = np.random.default_rng(4)
    steps, batch, units = 6, 7, 136  # two threads on 2 cores: slices of 64 and 72 units
    a, rk = rng.normal(size=(steps, batch, 4 * units)), rng.normal(size=(units, 4 * units)) * 0.2
    h0, c0, d_h, d_c = (rng.normal(size=(batch, units)) for _ in range(4))
    d_out = rng.normal(size=(steps, batch, units))
    mask = jnp.asarray(rng.random((steps, batch)) > 0.3) if masked else jnp.zeros((0,), bool)
    a, rk, h0, c0, d_h, d_c, d_out = (jnp.asarray(t, "float32") for t in (a, rk, h0, c0, d_h, d_c, d_out))
    kernel_forward, kernel_backward = native_lstm._kernel_calls()
    forward = kernel_forward(a, rk, h0, c0, mask, True)
    for kernel, reference in zip(forward, native_lstm._forward_reference(a, rk, h0, c0, mask, True)):
        np.testing.assert_allclose(kernel, reference, atol=2e-6)
    gates, cells = forward[3], forward[4]
    backward = kernel_backward(rk, gates, cells, c0, d_out, d_h, d_c, mask)
    references = native_lstm._backward_reference(rk, gates, cells, c0, d_out, d_h, d_c, mask)
    for kernel, reference in zip(backward, references):
        np.testing.assert_allclose(kernel, reference, atol=2e-5, rtol=1e-5)


def test_gradient_of_a_gradient_equals_xla_loop(native_calls, monkeypatch):
    """A derivative of a gradient (adversarial training's perturbation inside a training step) runs
    through the references' derivatives."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(4, 5, 3)).astype("float32")
    mask = ops.convert_to_tensor(rng.random((4, 5)) > 0.2)
    layer = layers.LSTM(16)
    layer(x, mask=mask)
    frozen = [v.value for v in layer.non_trainable_variables]

    def outer(x, *weights):
        def inner(x):
            return ops.sum(layer.stateless_call(list(weights), frozen, x, mask=mask)[0] ** 2)
        gradient = layers.value_and_grad(inner, x)[1][0]
        return ops.sum(layer.stateless_call(list(weights), frozen, x + 0.1 * gradient, mask=mask)[0])

    weights = [v.value for v in layer.trainable_variables]
    native = [ops.convert_to_numpy(g) for g in layers.value_and_grad(outer, x, *weights)[1]]
    assert native_calls
    monkeypatch.setenv("RNN_SUITE_NATIVE_LSTM", "0")
    xla = [ops.convert_to_numpy(g) for g in layers.value_and_grad(outer, x, *weights)[1]]
    for n, g in zip(native, xla):
        np.testing.assert_allclose(n, g, atol=2e-5, rtol=1e-5)
