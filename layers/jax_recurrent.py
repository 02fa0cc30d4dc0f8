"""JAX fast path of our LSTM layer: the whole sequence with a hand-written backward pass.

Autodiff of a `lax.scan` differentiates each step on its own: the backward loop adds a rank-`batch`
product into the full weight gradients at every step (`x_t^T dz_t`, `h_{t-1}^T dz_t`) and computes
each step's input gradient (`dz_t W^T`) there too. With 512 units that is a read and a write of an
8 MB gradient per step, memory-bound work (a 2 x 512 LSTM over 32 x 100: 350 ms of autodiff, of
which 100 ms go to those sums, against 68 ms for one product over all steps;
`benchmarks/RESULTS.md`). Here the backward loop does only what must be sequential, the state
gradients and the gates' gradients `dz_t`, and the weight and input gradients come after it, each
one matrix product over all steps, as cuDNN does.

`lstm_sequence` computes what `run_recurrence` computes for an `LSTMCell` with the default
activations (tanh, sigmoid), any mask (a masked step carries the states over and outputs the carried
`h`), float32, without recurrent dropout: the layer falls back to the generic loop otherwise
(`applies`). Forward alone (inference) keeps nothing for a backward pass. Tested equal to the generic
path, values and gradients (`tests/test_layers_behaviour.py`).
"""

import functools

import keras
from keras import ops


def applies(cell, steps, recurrent_mask):
    """Whether `lstm_sequence` computes this layer call: an `LSTMCell` with tanh and sigmoid,
    float32, no recurrent dropout, a known number of steps above one (a symbolic one, in an export,
    takes the generic loop), and no `keras.distribution` (a two-process run under `trainers.launch`
    was slower with it, 33 s against 23 s for `generate --quick`; not yet understood, so
    multi-device runs keep the generic loop)."""
    from layers.cells import LSTMCell

    return (isinstance(cell, LSTMCell) and recurrent_mask is None and isinstance(steps, int) and steps > 1
            and cell.compute_dtype == "float32" and cell.activation is keras.activations.tanh
            and cell.recurrent_activation is keras.activations.sigmoid
            and keras.distribution.distribution() is None)


def lstm_sequence(cell, xs, initial_states, masks=None, project_inputs=True):
    """`(outputs (time, batch, units), [h, c])` of `cell` over time-major `xs`.

    Args:
        cell: an `LSTMCell` (its kernel, recurrent kernel and bias are read).
        xs: `(time, batch, input_dim)` inputs with `project_inputs`, else `(time, batch, 4 units)`
            products `x_t @ kernel` already computed (on a GPU, one product hoisted out of the loop).
        initial_states: `[h0, c0]`, each `(batch, units)`.
        masks: optional `(time, batch, 1)` booleans, in processing order.
        project_inputs: whether each step multiplies its input by the kernel (on a CPU).
    """
    import jax.numpy as jnp

    bias = ops.convert_to_tensor(cell.bias) if cell.use_bias else jnp.zeros((4 * cell.units,), "float32")
    kernel = ops.convert_to_tensor(cell.kernel) if project_inputs else jnp.zeros((0, 4 * cell.units), "float32")
    masks = jnp.ones(xs.shape[:2] + (1,), bool) if masks is None else masks
    outputs, h, c = _sequence(project_inputs)(kernel, ops.convert_to_tensor(cell.recurrent_kernel), bias, xs,
                                              initial_states[0], initial_states[1], masks)
    return outputs, [h, c]


@functools.cache
def _sequence(project_inputs):
    """The `jax.custom_vjp` function `(kernel, recurrent_kernel, bias, xs, h0, c0, masks) ->
    (outputs, h, c)` for one way of taking the inputs (see `lstm_sequence`)."""
    import jax
    import jax.numpy as jnp

    def gates(kernel, recurrent_kernel, bias, x_t, h):
        z = h @ recurrent_kernel + bias + (x_t @ kernel if project_inputs else x_t)  # (batch, 4 units)
        z_i, z_f, z_c, z_o = jnp.split(z, 4, axis=-1)
        return jax.nn.sigmoid(z_i), jax.nn.sigmoid(z_f), jnp.tanh(z_c), jax.nn.sigmoid(z_o)

    def run(kernel, recurrent_kernel, bias, xs, h0, c0, masks, keep):
        """The forward loop; with `keep`, also what the backward pass reads, per step."""
        def step(carry, inputs):
            h, c = carry
            x_t, m_t = inputs
            i, f, g, o = gates(kernel, recurrent_kernel, bias, x_t, h)
            c_new = f * c + i * g
            tanh_c = jnp.tanh(c_new)
            h_new = jnp.where(m_t, o * tanh_c, h)
            c_new = jnp.where(m_t, c_new, c)
            saved = (h, c, jnp.concatenate([i, f, g, o], axis=-1), tanh_c) if keep else None
            return (h_new, c_new), (h_new, saved)

        (h, c), (outputs, saved) = jax.lax.scan(step, (h0, c0), (xs, masks))
        return outputs, h, c, saved

    @jax.custom_vjp
    def sequence(kernel, recurrent_kernel, bias, xs, h0, c0, masks):
        return run(kernel, recurrent_kernel, bias, xs, h0, c0, masks, keep=False)[:3]

    def forward(kernel, recurrent_kernel, bias, xs, h0, c0, masks):
        outputs, h, c, saved = run(kernel, recurrent_kernel, bias, xs, h0, c0, masks, keep=True)
        return (outputs, h, c), (kernel, recurrent_kernel, xs, masks, saved)

    def backward(residuals, cotangents):
        kernel, recurrent_kernel, xs, masks, (h_prev, c_prev, activations, tanh_c) = residuals
        d_outputs, d_h, d_c = cotangents

        def step(carry, inputs):
            """Cotangents of the states after step t -> before it, and of the step's gates `z`."""
            d_h, d_c = carry
            d_out, m_t, c_t, a_t, tanh_t = inputs
            d_h = d_h + d_out
            i, f, g, o = jnp.split(a_t, 4, axis=-1)
            d_c_new = d_c + d_h * o * (1.0 - tanh_t * tanh_t)
            d_z = jnp.concatenate([d_c_new * g * i * (1.0 - i), d_c_new * c_t * f * (1.0 - f),
                                   d_c_new * i * (1.0 - g * g), d_h * tanh_t * o * (1.0 - o)], axis=-1)
            d_z = jnp.where(m_t, d_z, 0.0)  # a masked step passes its states' cotangents through
            d_h_prev = jnp.where(m_t, d_z @ recurrent_kernel.T, d_h)
            d_c_prev = jnp.where(m_t, d_c_new * f, d_c)
            return (d_h_prev, d_c_prev), d_z

        (d_h0, d_c0), d_z = jax.lax.scan(step, (d_h, d_c), (d_outputs, masks, c_prev, activations, tanh_c),
                                         reverse=True)
        flat_z = d_z.reshape(-1, d_z.shape[-1])  # (time * batch, 4 units): every step in one product
        d_recurrent = h_prev.reshape(-1, h_prev.shape[-1]).T @ flat_z
        d_bias = jnp.sum(flat_z, axis=0)
        if project_inputs:
            d_kernel = xs.reshape(-1, xs.shape[-1]).T @ flat_z
            d_xs = d_z @ kernel.T
        else:
            d_kernel, d_xs = jnp.zeros_like(kernel), d_z
        return d_kernel, d_recurrent, d_bias, d_xs, d_h0, d_c0, None

    sequence.defvjp(forward, backward)
    return sequence
