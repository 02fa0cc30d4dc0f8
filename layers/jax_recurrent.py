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

On an x86-64 CPU an LSTM's loops run instead as one fused native kernel where it can be built
(`layers/native_lstm.py`: 1.3x this loop's training step, tested equal); this module's loop is the
fallback there and the path for a GRU everywhere.

Each cell's step forward and backward comes from `layers/fused_steps.py` (shared with the
TensorFlow kernel, `layers/tf_recurrent.py`); `_sequence` builds the scan, the `jax.custom_vjp`
and the products over all steps around them.
"""

import functools

import keras
from keras import ops

from layers import fused_steps, native_lstm

# Time steps per iteration of the backward loop (and of a forward loop that `INPUT_PRODUCT_STEPS`
# below does not take), by cell: unrolling saves the loop's per-step work,
# but past a point the larger loop body runs slower. Gradient of a layer, idle, 10-15 paired rounds
# (benchmarks/RESULTS.md, sessions 18-19): GRU 64 x 100 x 128 -> 256 unroll 1 / 4: 120.2 / 115.4
# ms, the translation model's training step at batch 32 52.3 / 50.1 ms; LSTM 64 x 100 x 128 -> 256
# unroll 1 / 2 / 4: 128.3 / 130.1 / 143.1 ms, LSTM 16 x 100 x 512 -> 512 (the character model's
# second layer): 134.0 / 127.0 / 135.6 ms. Each unrolled step adds compiling (~1 s a batch shape).
SCAN_UNROLL = {"lstm": 2, "gru": 4}

# On a CPU (`project_inputs`), each iteration of the forward loop runs this many steps, and their
# input products are one matrix product of `steps x batch` rows (fewer, larger products run nearer
# the matmul peak; hoisting the product over all steps is slower, `layers/recurrent.py`). Against
# the unrolled per-step loop, paired rounds against the built-in, JAX, idle, 64 x 100 x 128 -> 256
# (benchmarks/RESULTS.md, session 22): LSTM inference 0.94-1.01 -> 1.04-1.11, training 1.03-1.08
# -> 1.08-1.12; GRU inference (masked) 1.05 -> 1.26, training unchanged; 4 steps a product was
# slower than 2. A sequence of odd length takes the per-step loop.
INPUT_PRODUCT_STEPS = 2


def applies(cell, steps, recurrent_mask):
    """Whether `sequence` computes this layer call: a cell that `fused_steps.supported` takes, a
    known number of steps above one (a symbolic one, in an export, takes the generic loop), and no
    `keras.distribution` (a two-process run under `trainers.launch` was slower with it, 33 s
    against 23 s for `generate --quick`; not yet understood, so multi-device runs keep the generic
    loop)."""
    return (fused_steps.supported(cell, recurrent_mask) and isinstance(steps, int) and steps > 1
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

    if project_inputs and native_lstm.applies(cell, xs):
        return native_lstm.sequence(cell, xs, initial_states, masks)
    kind = fused_steps.cell_steps(cell)
    width = cell.gates * cell.units
    bias = ops.convert_to_tensor(cell.bias) if cell.use_bias else jnp.zeros(kind.bias_shape(width), "float32")
    # With hoisted products the loop never reads the kernel (its gradient is the caller's product's):
    # an empty stand-in keeps one signature for the custom_vjp function.
    kernel = ops.convert_to_tensor(cell.kernel) if project_inputs else jnp.zeros((0, width), "float32")
    outputs, states = _sequence(kind, project_inputs, masks is not None)(
        kernel, ops.convert_to_tensor(cell.recurrent_kernel), bias, xs, tuple(initial_states), masks)
    return outputs, list(states)


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
            a_t, m_t = inputs
            new_states, saved = kind.forward(a_t, recurrent_kernel, bias, states)
            new_states = tuple(select(m_t, new, old) for new, old in zip(new_states, states))
            return new_states, (new_states[0], (states[0], saved) if keep else None)

        steps, batch = xs.shape[0], xs.shape[1]
        chunk = INPUT_PRODUCT_STEPS if project_inputs and steps % INPUT_PRODUCT_STEPS == 0 else 1
        if chunk == 1:
            def projected_step(states, inputs):
                x_t, m_t = inputs
                return step(states, (x_t @ kernel if project_inputs else x_t, m_t))

            # masks None: m_t is None
            states, (outputs, saved) = jax.lax.scan(projected_step, states, (xs, masks),
                                                    unroll=SCAN_UNROLL[kind.name])
            return outputs, states, saved

        def chunk_step(states, inputs):
            x_c, m_c = inputs  # (chunk, batch, features), (chunk, batch, 1) or None
            a_c = (x_c.reshape(chunk * batch, -1) @ kernel).reshape(chunk, batch, -1)
            return jax.lax.scan(step, states, (a_c, m_c), unroll=chunk)  # the chunk's steps, unrolled

        def split(t):  # (steps, ...) -> (steps / chunk, chunk, ...), a view
            return None if t is None else t.reshape(steps // chunk, chunk, *t.shape[1:])

        states, ys = jax.lax.scan(chunk_step, states, (split(xs), split(masks)))
        outputs, saved = jax.tree_util.tree_map(lambda t: t.reshape(steps, *t.shape[2:]), ys)
        return outputs, states, saved

    @jax.custom_vjp
    def whole(kernel, recurrent_kernel, bias, xs, states, masks):
        return run(kernel, recurrent_kernel, bias, xs, states, masks, keep=False)[:2]

    def forward(kernel, recurrent_kernel, bias, xs, states, masks):
        outputs, states, saved = run(kernel, recurrent_kernel, bias, xs, states, masks, keep=True)
        return (outputs, states), (kernel, recurrent_kernel, xs, masks, saved)

    def backward(residuals, cotangents):
        unroll = SCAN_UNROLL[kind.name]
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
                                                 reverse=True, unroll=unroll)
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
