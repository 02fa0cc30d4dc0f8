"""TensorFlow fast path of our LSTM and GRU layers on a CPU: the whole sequence compiled by XLA,
with a hand-written backward pass.

TensorFlow runs a `tf.while_loop` one small operation at a time, and differentiates it by keeping
every intermediate of every step and adding into the full weight gradients at every step of the
backward loop. Keras leaves XLA off for TensorFlow on a CPU, and a loop compiled on its own
cannot hand autodiff's per-step buffers out of XLA. Here the forward loop and the backward loop
are each one XLA computation (`tf.function(jit_compile=True)`), joined by `tf.custom_gradient`:
the forward loop returns plain stacked tensors (the outputs and what the backward step reads), and
the backward loop computes the states' and gates' gradients, after which the weight and input
gradients are one product over all steps each, as on JAX (`layers/jax_recurrent.py`; the steps
themselves are `layers/fused_steps.py`, shared). The gradient of an LSTM 64 x 100 x 128 -> 256
took 141-150 ms against 216-258 ms for TensorFlow's gradient of our plain loop (medians of 15
paired rounds in two runs, idle; benchmarks/RESULTS.md, session 19).

XLA compiles each new input shape once (0.2-0.3 s for a layer's forward loop; the apps pad
inputs to few lengths, as for JAX); inference with `training=False` runs
the forward loop alone, and its gradient, where one is taken (integrated gradients), runs the
forward loop again to keep what the backward loop reads. Used on a CPU only (measured there), not
in graphs traced for conversion (ONNX, SavedModel: `layers.recurrent.input_products_hoisted`),
and, as on JAX, not for other cells, activations, dtypes or recurrent dropout; a GRU uses it
outside training only (`applies`).
"""

import functools

from keras import ops

from layers import fused_steps


def applies(cell, recurrent_mask, training):
    """Whether `sequence` computes this layer call: a cell `fused_steps.supported` takes, an LSTM
    always, a GRU outside training. A GRU trains faster in TensorFlow's own loop (64 x 100 x 128
    -> 256, unmasked: 94 ms a training step in that loop against 106 with the kernel; inference
    43 against 40 ms): there the input products of later steps, which do not wait for the state,
    run beside the recurrent chain on the second core, and a GRU has less work per step than an
    LSTM to hide it."""
    from layers.cells import LSTMCell

    return fused_steps.supported(cell, recurrent_mask) and (isinstance(cell, LSTMCell) or not training)


def sequence(cell, xs, initial_states, masks=None, training=False):
    """`(outputs (time, batch, units), states)` of `cell` over time-major `xs (time, batch, input_dim)`.

    Args:
        cell: an `LSTMCell` or `GRUCell` (its kernel, recurrent kernel and bias are read).
        xs: the inputs; each step multiplies its own by the kernel (on a CPU, cheaper than one
            product hoisted over all steps: `layers.recurrent._project_in_each_step`).
        initial_states: the cell's states, each `(batch, units)`.
        masks: optional `(time, batch, 1)` booleans, in processing order.
        training: keep what the backward loop reads during the forward loop (else recomputed
            if a gradient is taken).
    """
    import tensorflow as tf

    kind = fused_steps.cell_steps(cell)
    width = cell.gates * cell.units
    # Read as tensors: a variable seen inside a custom gradient would need its gradient returned
    # separately; the reads pass theirs on to the variables.
    bias = tf.convert_to_tensor(cell.bias.value) if cell.use_bias else tf.zeros(kind.bias_shape(width), "float32")
    weights = (tf.convert_to_tensor(cell.kernel.value), tf.convert_to_tensor(cell.recurrent_kernel.value), bias)
    extra = () if masks is None else (masks,)
    whole = _whole_sequence(kind, masks is not None, bool(training), cell.kernel.shape[0], cell.units)
    outputs, *states = whole(*weights, xs, *extra, *initial_states)
    return outputs, states


@functools.cache
def _loops(kind, masked, input_dim, units):
    """`(forward, backward)`: the two XLA-compiled loops of one cell kind and size, with or without
    masks. (The sizes are Python numbers: `reduce_retracing` leaves the traced shapes unknown, the
    weights' too, and XLA compiles each call's concrete shapes.)

    forward(kernel, recurrent_kernel, bias, xs, masks, states, keep) -> (outputs, states, h_prev,
        saved): with `keep`, `h_prev (time, batch, units)` and `saved` (the tuple of `forward`'s
        per-step saved tensors, each stacked over time) for the backward loop; else `()`.
    backward(kernel, recurrent_kernel, xs, masks, h_prev, saved, d_outputs, d_states) ->
        (d_kernel, d_recurrent_kernel, d_bias, d_xs, d_initial_states).
    """
    import tensorflow as tf

    def select(m_t, new, old):
        return tf.where(m_t, new, old) if masked else new

    def read_all(tensor):
        return tf.TensorArray(tensor.dtype, size=tf.shape(tensor)[0], element_shape=tensor.shape[1:]).unstack(tensor)

    def new_array(steps, like_shape):
        return tf.TensorArray(tf.float32, size=steps, element_shape=like_shape)

    @tf.function(jit_compile=True, reduce_retracing=True)
    def forward(kernel, recurrent_kernel, bias, xs, masks, states, keep):
        steps, batch = tf.shape(xs)[0], xs.shape[1]  # symbolic until XLA compiles the call
        xs_ta, masks_ta = read_all(xs), read_all(masks) if masked else None
        kept = ([new_array(steps, (batch, units))] + [new_array(steps, (batch, w)) for w in kind.saved_widths(units)]
                if keep else [])

        def body(t, states, outputs_ta, kept):
            new_states, saved = kind.forward(ops.matmul(xs_ta.read(t), kernel), recurrent_kernel, bias, states)
            if masked:
                m_t = masks_ta.read(t)
                new_states = tuple(select(m_t, new, old) for new, old in zip(new_states, states))
            if keep:
                kept = [ta.write(t, value) for ta, value in zip(kept, (states[0], *saved))]
            return t + 1, tuple(new_states), outputs_ta.write(t, new_states[0]), kept

        _, states, outputs_ta, kept = tf.while_loop(
            lambda t, *_: t < steps, body, (tf.constant(0), tuple(states), new_array(steps, (batch, units)), kept),
            maximum_iterations=steps)  # XLA sizes the arrays from it
        kept = [ta.stack() for ta in kept]
        return outputs_ta.stack(), states, (kept[0] if kept else ()), tuple(kept[1:])

    @tf.function(jit_compile=True, reduce_retracing=True)
    def backward(kernel, recurrent_kernel, xs, masks, h_prev, saved, d_outputs, d_states):
        steps, batch, width = tf.shape(xs)[0], xs.shape[1], kind.gates * units
        d_out_ta, h_prev_ta = read_all(d_outputs), read_all(h_prev)
        saved_tas = [read_all(s) for s in saved]
        masks_ta = read_all(masks) if masked else None
        # The recurrent product's cotangents, where they differ from the input product's (GRU)
        products = [new_array(steps, (batch, width)) for _ in range(2 if kind.inner_differs else 1)]

        def body(t, d_states, products):
            """Cotangents of the states after step t -> before it, and of the step's products."""
            d_states = (d_states[0] + d_out_ta.read(t),) + tuple(d_states[1:])
            d_prev, *d_products = kind.backward(h_prev_ta.read(t), tuple(ta.read(t) for ta in saved_tas),
                                                recurrent_kernel, d_states)
            d_products = d_products[:len(products)]
            if masked:  # a masked step passes its states' cotangents through, no gradient of its own
                m_t = masks_ta.read(t)
                d_prev = tuple(select(m_t, prev, d) for prev, d in zip(d_prev, d_states))
                d_products = [tf.where(m_t, d, 0.0) for d in d_products]
            return t - 1, tuple(d_prev), [ta.write(t, d) for ta, d in zip(products, d_products)]

        _, d_states0, products = tf.while_loop(
            lambda t, *_: t >= 0, body, (steps - 1, tuple(d_states), products), maximum_iterations=steps)
        d_a = products[0].stack()  # (time, batch, gates units)
        flat_a = tf.reshape(d_a, (-1, width))
        flat_inner = tf.reshape(products[1].stack(), (-1, width)) if kind.inner_differs else flat_a
        d_recurrent = tf.matmul(tf.reshape(h_prev, (-1, units)), flat_inner, transpose_a=True)
        d_bias = kind.bias_grad(tf.reduce_sum(flat_a, 0), tf.reduce_sum(flat_inner, 0))
        d_kernel = tf.matmul(tf.reshape(xs, (-1, input_dim)), flat_a, transpose_a=True)
        d_xs = tf.einsum("tbg,ig->tbi", d_a, kernel)
        return d_kernel, d_recurrent, d_bias, d_xs, d_states0

    return forward, backward


@functools.cache
def _whole_sequence(kind, masked, keep, input_dim, units):
    """The `tf.custom_gradient` function `(kernel, recurrent_kernel, bias, xs, [masks,] *states) ->
    (outputs, *states)`; with `keep` the forward loop keeps what the backward loop reads, else the
    gradient runs the forward loop again to get it."""
    import tensorflow as tf

    forward, backward = _loops(kind, masked, input_dim, units)

    @tf.custom_gradient
    def whole(*args):
        # Unwatched copies: a tape would otherwise record the compiled loops themselves and ask for
        # their own gradient, whose per-step buffers cannot leave XLA. `gradient` below is theirs.
        kernel, recurrent_kernel, bias, xs, *rest = (tf.stop_gradient(a) for a in args)
        masks, states = (rest[0], tuple(rest[1:])) if masked else (tf.zeros((0,), tf.bool), tuple(rest))
        outputs, final_states, h_prev, saved = forward(kernel, recurrent_kernel, bias, xs, masks, states, keep)

        def gradient(d_outputs, *d_final_states):
            kept = (h_prev, saved) if keep else forward(kernel, recurrent_kernel, bias, xs, masks, states, True)[2:]
            # An output nobody read has no cotangent; the others are read, not differentiated.
            d_outputs, *d_final_states = (tf.zeros_like(value) if d is None else tf.stop_gradient(d)
                                          for value, d in zip((outputs, *final_states), (d_outputs, *d_final_states)))
            d_kernel, d_recurrent, d_bias, d_xs, d_states0 = backward(kernel, recurrent_kernel, xs, masks, *kept,
                                                                     d_outputs, tuple(d_final_states))
            return (d_kernel, d_recurrent, d_bias, d_xs, *((None,) if masked else ()), *d_states0)

        return (outputs, *final_states), gradient

    return whole
