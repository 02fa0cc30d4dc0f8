"""JAX fast path of our LSTM and GRU layers: the whole sequence with a hand-written backward pass.

Autodiff of a `lax.scan` differentiates each step on its own: the backward loop adds a rank-`batch`
product into the full weight gradients at every step (`x_t^T dz_t`, `h_{t-1}^T dz_t`) and computes
each step's input gradient (`dz_t W^T`) there too. With 512 units that is a read and a write of an
8 MB gradient per step, memory-bound work (a 2 x 512 LSTM over 32 x 100: 350 ms of autodiff, of
which 100 ms go to those sums, against 68 ms for one product over all steps;
`benchmarks/RESULTS.md`). Here the backward loop does only what must be sequential, the state
gradients and the gates' gradients, and the weight and input gradients come after it, each one
matrix product over all steps, as cuDNN does.

`sequence` computes what `run_recurrence` computes for an `LSTMCell` or a `GRUCell` with
`reset_after=True` (the Keras and cuDNN default), with the default activations (tanh, sigmoid), any
mask (a masked step carries the states over and outputs the carried `h`), float32, without
recurrent dropout: the layer falls back to the generic loop otherwise (`applies`). Forward alone
(inference) keeps nothing for a backward pass. Tested equal to the generic path, values and
gradients (`tests/test_layers_behaviour.py`).

Each cell brings two functions (`_LSTM`, `_GRU`): one step forward, and one step backward from the
step's saved activations; `_sequence` builds the scan, the `jax.custom_vjp` and the products over
all steps around them.
"""

import functools
from typing import Callable, NamedTuple

import keras
from keras import ops

# Time steps per iteration of the scans' loops. Unrolling by 4 saves the loop's per-step work:
# JAX on a 2-core CPU, a training step 4% faster for the translation model at batch 32 (50.1 against
# 52.3 ms) and 3% for the character model at batch 16 (258.6 against 265.8 ms), for about 1 s more
# compiling per batch shape (benchmarks/RESULTS.md, session 18).
SCAN_UNROLL = 4


def applies(cell, steps, recurrent_mask):
    """Whether `sequence` computes this layer call: an `LSTMCell`, or a `GRUCell` with
    `reset_after`, with tanh and sigmoid, float32, no recurrent dropout, a known number of steps
    above one (a symbolic one, in an export, takes the generic loop), and no `keras.distribution`
    (a two-process run under `trainers.launch` was slower with it, 33 s against 23 s for
    `generate --quick`; not yet understood, so multi-device runs keep the generic loop)."""
    from layers.cells import GRUCell, LSTMCell

    supported = isinstance(cell, LSTMCell) or (isinstance(cell, GRUCell) and cell.reset_after)
    return (supported and recurrent_mask is None and isinstance(steps, int) and steps > 1
            and cell.compute_dtype == "float32" and cell.activation is keras.activations.tanh
            and cell.recurrent_activation is keras.activations.sigmoid
            and keras.distribution.distribution() is None)


def sequence(cell, xs, initial_states, masks=None, project_inputs=True):
    """`(outputs (time, batch, units), states)` of `cell` over time-major `xs`.

    Args:
        cell: an `LSTMCell` or `GRUCell` (its kernel, recurrent kernel and bias are read).
        xs: `(time, batch, input_dim)` inputs with `project_inputs`, else `(time, batch, gates units)`
            products `x_t @ kernel` already computed (on a GPU, one product hoisted out of the loop).
        initial_states: the cell's states, each `(batch, units)` (`[h, c]` for an LSTM, `[h]` for a GRU).
        masks: optional `(time, batch, 1)` booleans, in processing order.
        project_inputs: whether each step multiplies its input by the kernel (on a CPU).
    """
    import jax.numpy as jnp

    from layers.cells import LSTMCell

    kind = _LSTM if isinstance(cell, LSTMCell) else _GRU
    width = cell.gates * cell.units
    bias = ops.convert_to_tensor(cell.bias) if cell.use_bias else jnp.zeros(kind.bias_shape(width), "float32")
    # With hoisted products the loop never reads the kernel (its gradient is the caller's product's):
    # an empty stand-in keeps one signature for the custom_vjp function.
    kernel = ops.convert_to_tensor(cell.kernel) if project_inputs else jnp.zeros((0, width), "float32")
    outputs, states = _sequence(kind, project_inputs, masks is not None)(
        kernel, ops.convert_to_tensor(cell.recurrent_kernel), bias, xs, tuple(initial_states), masks)
    return outputs, list(states)


class _Cell(NamedTuple):
    """One cell's step, forward and backward, for `_sequence`.

    forward(a, recurrent_kernel, bias, states) -> (new_states, saved): `a (batch, gates units)` is the
        step's input product `x_t W`, bias excluded; `saved` is what the backward step reads.
    backward(h_prev, saved, recurrent_kernel, d_states) -> (d_states_prev, d_a, d_inner): from the
        cotangents of the step's new states, those of its old states (unmasked), of `a` and of the
        recurrent product `h_{t-1} U` (`None` where it equals `d_a`).
    bias_shape(width) -> shape; bias_grad(sum_d_a, sum_d_inner) -> the bias' gradient.
    """

    forward: Callable
    backward: Callable
    bias_shape: Callable
    bias_grad: Callable


def _lstm_forward(a, recurrent_kernel, bias, states):
    import jax
    import jax.numpy as jnp

    h, c = states
    z_i, z_f, z_c, z_o = jnp.split(h @ recurrent_kernel + bias + a, 4, axis=-1)
    i, f, g, o = jax.nn.sigmoid(z_i), jax.nn.sigmoid(z_f), jnp.tanh(z_c), jax.nn.sigmoid(z_o)
    c_new = f * c + i * g
    tanh_c = jnp.tanh(c_new)
    return (o * tanh_c, c_new), (c, jnp.concatenate([i, f, g, o], axis=-1), tanh_c)


def _lstm_backward(h_prev, saved, recurrent_kernel, d_states):
    import jax.numpy as jnp

    c_prev, activations, tanh_c = saved
    d_h, d_c = d_states
    i, f, g, o = jnp.split(activations, 4, axis=-1)
    d_c = d_c + d_h * o * (1.0 - tanh_c * tanh_c)
    d_z = jnp.concatenate([d_c * g * i * (1.0 - i), d_c * c_prev * f * (1.0 - f),
                           d_c * i * (1.0 - g * g), d_h * tanh_c * o * (1.0 - o)], axis=-1)
    return (d_z @ recurrent_kernel.T, d_c * f), d_z, None


def _gru_forward(a, recurrent_kernel, bias, states):
    import jax
    import jax.numpy as jnp

    (h,) = states
    a_z, a_r, a_n = jnp.split(a + bias[0], 3, axis=-1)
    u_z, u_r, u_n = jnp.split(h @ recurrent_kernel + bias[1], 3, axis=-1)
    z, r = jax.nn.sigmoid(a_z + u_z), jax.nn.sigmoid(a_r + u_r)
    n = jnp.tanh(a_n + r * u_n)
    return (n + z * (h - n),), jnp.concatenate([z, r, n, u_n], axis=-1)


def _gru_backward(h_prev, saved, recurrent_kernel, d_states):
    import jax.numpy as jnp

    z, r, n, u_n = jnp.split(saved, 4, axis=-1)
    (d_h,) = d_states
    d_pre_z = d_h * (h_prev - n) * z * (1.0 - z)
    d_pre_n = d_h * (1.0 - z) * (1.0 - n * n)
    d_pre_r = d_pre_n * u_n * r * (1.0 - r)
    d_inner = jnp.concatenate([d_pre_z, d_pre_r, d_pre_n * r], axis=-1)  # of h_{t-1} U + b'
    d_a = jnp.concatenate([d_pre_z, d_pre_r, d_pre_n], axis=-1)  # of x_t W + b
    return (d_h * z + d_inner @ recurrent_kernel.T,), d_a, d_inner


def _stack_bias_grads(d_a, d_inner):
    import jax.numpy as jnp

    return jnp.stack([d_a, d_inner])


_LSTM = _Cell(_lstm_forward, _lstm_backward, lambda width: (width,), lambda d_a, d_inner: d_a)
_GRU = _Cell(_gru_forward, _gru_backward, lambda width: (2, width), _stack_bias_grads)


@functools.cache
def _sequence(kind, project_inputs, masked):
    """The `jax.custom_vjp` function `(kernel, recurrent_kernel, bias, xs, states, masks) ->
    (outputs, states)` for one cell kind, one way of taking the inputs (see `sequence`), and with
    or without masks (`masks` is None without: no per-step selects)."""
    import jax
    import jax.numpy as jnp

    def select(m_t, new, old):
        return jnp.where(m_t, new, old) if masked else new

    def run(kernel, recurrent_kernel, bias, xs, states, masks, keep):
        """The forward loop; with `keep`, also what the backward pass reads, per step."""
        def step(states, inputs):
            x_t, m_t = inputs
            new_states, saved = kind.forward(x_t @ kernel if project_inputs else x_t, recurrent_kernel, bias,
                                             states)
            new_states = tuple(select(m_t, new, old) for new, old in zip(new_states, states))
            return new_states, (new_states[0], (states[0], saved) if keep else None)

        # masks None: m_t is None
        states, (outputs, saved) = jax.lax.scan(step, states, (xs, masks), unroll=SCAN_UNROLL)
        return outputs, states, saved

    @jax.custom_vjp
    def whole(kernel, recurrent_kernel, bias, xs, states, masks):
        return run(kernel, recurrent_kernel, bias, xs, states, masks, keep=False)[:2]

    def forward(kernel, recurrent_kernel, bias, xs, states, masks):
        outputs, states, saved = run(kernel, recurrent_kernel, bias, xs, states, masks, keep=True)
        return (outputs, states), (kernel, recurrent_kernel, xs, masks, saved)

    def backward(residuals, cotangents):
        kernel, recurrent_kernel, xs, masks, (h_prev, saved) = residuals
        d_outputs, d_states = cotangents

        def step(d_states, inputs):
            """Cotangents of the states after step t -> before it, and of the step's products."""
            d_out, m_t, h_t, saved_t = inputs
            d_states = (d_states[0] + d_out,) + tuple(d_states[1:])
            d_prev, d_a, d_inner = kind.backward(h_t, saved_t, recurrent_kernel, d_states)
            # A masked step passes its states' cotangents through and has no gradient of its own.
            d_prev = tuple(select(m_t, prev, d) for prev, d in zip(d_prev, d_states))
            d_a = select(m_t, d_a, 0.0)
            d_inner = None if d_inner is None else select(m_t, d_inner, 0.0)
            return d_prev, (d_a, d_inner)

        d_states0, (d_a, d_inner) = jax.lax.scan(step, tuple(d_states), (d_outputs, masks, h_prev, saved),
                                                 reverse=True, unroll=SCAN_UNROLL)
        flat_a = d_a.reshape(-1, d_a.shape[-1])  # (time * batch, gates units): every step in one product
        flat_inner = flat_a if d_inner is None else d_inner.reshape(-1, d_inner.shape[-1])
        d_recurrent = h_prev.reshape(-1, h_prev.shape[-1]).T @ flat_inner
        d_bias = kind.bias_grad(jnp.sum(flat_a, axis=0), jnp.sum(flat_inner, axis=0))
        if project_inputs:
            d_kernel = xs.reshape(-1, xs.shape[-1]).T @ flat_a
            d_xs = d_a @ kernel.T
        else:
            d_kernel, d_xs = jnp.zeros_like(kernel), d_a
        return d_kernel, d_recurrent, d_bias, d_xs, d_states0, None

    whole.defvjp(forward, backward)
    return whole
