"""Recurrent layers `SimpleRNN`, `LSTM` and `GRU` over the cells of `layers/cells.py`.

A layer runs a sequence in two stages:

1. the input projection of every timestep in one matrix product,
   `(batch, time, input_dim) @ (input_dim, gates * units)`, as cuDNN and Keras' fused paths do;
2. `run_recurrence`: a `keras.ops.scan` over time (or a Python loop with `unroll=True`) that does
   only the recurrent product and the gates, and holds the state at masked steps.

On a CPU, JAX and TensorFlow run faster with the input product inside each step of the loop
(`_project_in_each_step`: the hoisted product is a tensor larger than the cache), so there the
loop does both (JAX's kernel two steps at a time, one product for the pair:
`jax_recurrent.INPUT_PRODUCT_STEPS`); the hoisted form stays the generic path, tested equal.

On PyTorch both stages run instead in one of ATen's fused RNN kernels wherever those compute the
layer (`layers/torch_recurrent.py`; oneDNN on a CPU, cuDNN on a GPU): torch has no compiled loop,
so the generic path there is a Python loop of small operations.

On JAX an LSTM's or GRU's whole sequence is one function with a backward pass of our own
(`layers/jax_recurrent.py`): autodiff of the scan would add into the full weight gradients at every
step, ours computes them after the loop in one product over all steps. On TensorFlow on a CPU the
same steps run as two XLA-compiled loops, forward and backward (`layers/tf_recurrent.py`; an LSTM
always, a GRU outside training); the steps of both are `layers/fused_steps.py`.

The layers subclass `keras.layers.RNN` for its bookkeeping (stateful state variables,
`initial_state`, `return_state`, output shapes and masks, the `keras.layers.Bidirectional` protocol)
and replace its `inner_loop`, which would call the full cell, input projection included, once per
step. Arguments, weights and configs match `keras.layers.SimpleRNN/LSTM/GRU`.

Dropout: `keras.layers.RNN.call` draws the cell's masks (one per sequence: `(batch, input_dim)`
and `(batch, units)`) before calling `inner_loop` and resets them after, as for Keras' built-in
cells; `inner_loop` reads them. The random stream is thus that of the built-ins with the same seed.

Mask semantics are those of Keras' generic path: at a masked step the states are carried over
unchanged and the output repeats the carried hidden state (or is zero with
`zero_output_for_mask=True`, which `Bidirectional` sets when it returns sequences). Any mask works,
not only right-padded ones.
"""

import contextlib
import inspect

import keras
from keras import ops

from layers import jax_recurrent, tf_recurrent, torch_recurrent
from layers.cells import GRUCell, LSTMCell, SimpleRNNCell


def run_recurrence(
    step,
    projected,
    initial_states,
    mask=None,
    go_backwards=False,
    unroll=False,
    zero_output_for_mask=False,
    return_sequences=True,
    whole_sequence=None,
):
    """Run `step` over time.

    Args:
        step: `step(x_t, states) -> (output, new_states)` with `output is new_states[0]`.
        projected: `(time, batch, features)` time-major inputs of `step` (the projected inputs, or
            the inputs where `step` projects them).
        initial_states: list of `(batch, units_i)` tensors.
        mask: optional `(batch, time)` boolean; `False` steps keep the previous states.
        go_backwards: process time in reverse; the outputs are returned in processing order.
        unroll: a Python loop instead of `keras.ops.scan`.
        zero_output_for_mask: zero outputs at masked steps instead of repeating the state.
        return_sequences: whether the caller reads `outputs`; if not, a loop may skip keeping them
            and return the last output alone as `outputs` (batch, 1, units).
        whole_sequence: optional `whole_sequence(xs, masks, states) -> (outputs (time, batch, units),
            final_states)`, a backend's kernel for the whole loop (`masks` `(time, batch, 1)` or
            `None`, both in processing order); it replaces the loop over `step`.

    Returns:
        `(last_output (batch, units), outputs (batch, time, units), final_states)`.
    """
    xs = projected  # (time, batch, features)
    masks = None
    if mask is not None:
        masks = ops.expand_dims(ops.transpose(ops.cast(mask, "bool"), (1, 0)), -1)  # (time, batch, 1)
    if go_backwards:
        xs = ops.flip(xs, axis=0)
        masks = None if masks is None else ops.flip(masks, axis=0)

    def masked_step(states, x_t, m_t):
        _, new_states = step(x_t, states)
        if m_t is not None:
            new_states = [ops.where(m_t, new, old) for new, old in zip(new_states, states)]
        return new_states

    states = list(initial_states)
    backend = keras.backend.backend()
    fast_path = not _FORCE_GENERIC_LOOP
    # One step (step-by-step decoding calls the layer on one token at a time) needs no loop.
    if whole_sequence is not None and fast_path:
        outputs, states = whole_sequence(xs, masks, states)
    elif unroll or (fast_path and (xs.shape[0] == 1 or backend == "torch")):
        # torch's scan is a Python loop too; unstack/stack keeps the backward pass to one
        # gradient buffer instead of a full-size one per indexed step (2x faster training).
        history = []
        step_masks = [None] * xs.shape[0] if masks is None else ops.unstack(masks)
        for x_t, m_t in zip(ops.unstack(xs), step_masks):
            states = masked_step(states, x_t, m_t)
            history.append(states[0])
        outputs = ops.stack(history)  # (time, batch, units)
    elif backend == "tensorflow" and fast_path and not return_sequences:
        # Only the last output is read: no per-step writes (as Keras' own loop; 6% of inference).
        states = _tensorflow_loop(masked_step, xs, masks, states, keep_outputs=False)[0]
        last = states[0]  # a masked step's output repeats the state, so the last output is h
        if zero_output_for_mask and masks is not None:
            last = ops.where(masks[-1], last, ops.zeros_like(last))
        return last, ops.expand_dims(last, 1), list(states)
    elif backend == "tensorflow" and fast_path:
        states, outputs = _tensorflow_loop(masked_step, xs, masks, states)
    else:
        def scan_step(carry, inputs):
            x_t, m_t = inputs if masks is not None else (inputs, None)
            new_states = masked_step(carry, x_t, m_t)
            # keras.ops.scan on TensorFlow needs the per-step output to mirror the carry.
            return new_states, (new_states if backend == "tensorflow" else new_states[0])

        states, history = ops.scan(scan_step, states, (xs, masks) if masks is not None else xs)
        outputs = history[0] if backend == "tensorflow" else history  # (time, batch, units)
    if zero_output_for_mask and masks is not None:
        outputs = ops.where(masks, outputs, ops.zeros_like(outputs))
    return outputs[-1], ops.transpose(outputs, (1, 0, 2)), list(states)


# Tests set this to check the backend fast paths against the generic keras.ops.scan path.
_FORCE_GENERIC_LOOP = False
_HOIST_INPUT_PRODUCTS = False  # set by `input_products_hoisted`


@contextlib.contextmanager
def input_products_hoisted():
    """Within: the input product is hoisted out of the time loop on every device, in a plain loop.
    For graphs traced to be converted or served outside Keras (TensorFlow -> ONNX, SavedModel):
    once ONNX Runtime's int8 quantisation has rewritten a loop body that multiplies by the kernel
    in each step (`EnableSubgraph`), loading the graph aborts the process (the hoisted product is
    quantised outside the loop); and TensorFlow's XLA-compiled kernel (`layers/tf_recurrent.py`)
    stays out of graphs that tf2onnx or a server would have to compile."""
    global _HOIST_INPUT_PRODUCTS
    before, _HOIST_INPUT_PRODUCTS = _HOIST_INPUT_PRODUCTS, True
    try:
        yield
    finally:
        _HOIST_INPUT_PRODUCTS = before


def _project_in_each_step():
    """Whether the time loop should compute each step's input product itself (JAX and TensorFlow
    on a CPU) rather than take it from one product hoisted over all steps (the generic path, and
    on a GPU, as cuDNN does). On a CPU the hoisted `(time, batch, gates * units)` tensor is one
    more pass through memory than the cache holds, and a small product per step is cheaper:
    LSTM 64 x 100 x 128 -> 256, JAX inference 28 vs 52 ms, training 129 vs 147 ms; TensorFlow
    training 121 vs 145 ms (`benchmarks/RESULTS.md`, "Input product per step")."""
    if _FORCE_GENERIC_LOOP or _HOIST_INPUT_PRODUCTS:
        return False
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.default_backend() == "cpu"
    if backend == "tensorflow":
        import tensorflow as tf

        return not tf.config.list_logical_devices("GPU")
    return False  # torch: its fused kernels (or a Python loop, where fewer operations per step pay)


def _tensorflow_loop(masked_step, xs, masks, states, keep_outputs=True):
    """TensorFlow fast path of the scan in `run_recurrence`: a plain `tf.while_loop`.

    `keras.ops.scan` on TensorFlow keeps the carry in TensorArrays, a read and a write per state
    and step in both passes; with the states as loop variables and 32 parallel iterations (as in
    Keras' own TensorFlow RNN loop) our LSTM trains about 15% faster on CPU. Same results as the
    generic path (tested).
    """
    import tensorflow as tf

    steps = tf.shape(xs)[0]
    xs_ta = tf.TensorArray(xs.dtype, size=steps, element_shape=xs.shape[1:]).unstack(xs)
    masks_ta = None
    if masks is not None:
        masks_ta = tf.TensorArray(masks.dtype, size=steps, element_shape=masks.shape[1:]).unstack(masks)
    # Without `keep_outputs`, one slot rewritten at every step, as in Keras' own loop (tf2onnx
    # converts that form, not a loop without writes).
    outputs_ta = tf.TensorArray(states[0].dtype, size=steps if keep_outputs else 1, element_shape=states[0].shape)

    def body(t, outputs_ta, *carry):
        m_t = None if masks_ta is None else masks_ta.read(t)
        new_states = masked_step(list(carry), xs_ta.read(t), m_t)
        return (t + 1, outputs_ta.write(t if keep_outputs else 0, new_states[0]), *new_states)

    _, outputs_ta, *states = tf.while_loop(
        lambda t, *_: t < steps,
        body,
        (tf.constant(0), outputs_ta, *states),
        parallel_iterations=32,
        swap_memory=True,
    )
    return states, (outputs_ta.stack() if keep_outputs else None)  # (time, batch, units)


class Recurrent(keras.layers.RNN):
    """Base of our recurrent layers: `keras.layers.RNN` with the input projection hoisted out of
    the time loop. Subclasses set `cell_class`.

    Args:
        units: Positive integer, size of the hidden state.
        return_sequences: Return the outputs of all timesteps `(batch, time, units)` instead of the
            last one `(batch, units)`. Default: `False`.
        return_state: Also return the final states (`h`, and `c` for LSTM). Default: `False`.
        go_backwards: Process the sequence in reverse; outputs come in processing order.
        stateful: Carry the final states of batch i over as the initial states of batch i
            of the next call (needs a fixed batch size). Default: `False`.
        unroll: Unroll the time loop in Python (faster for very short sequences, more memory).
        zero_output_for_mask: Outputs at masked steps are zeros instead of the carried state.
        **kwargs: The cell's arguments (see the cell class: activation, initializers, regularizers,
            constraints, dropout, recurrent_dropout, seed, ...) and the base layer arguments
            (name, dtype, trainable, activity_regularizer).

    Call arguments:
        sequences: `(batch, time, features)`.
        initial_state: optional list of `(batch, units)` tensors.
        mask: optional `(batch, time)` boolean, `True` for the steps to process.
        training: enables dropout.
    """

    cell_class = None
    cell_name = None

    def __init__(
        self,
        units,
        return_sequences=False,
        return_state=False,
        go_backwards=False,
        stateful=False,
        unroll=False,
        zero_output_for_mask=False,
        **kwargs,
    ):
        cell_args = _cell_arguments(self.cell_class)
        cell_kwargs = {key: kwargs.pop(key) for key in list(kwargs) if key in cell_args}
        # LSTM and GRU take `use_cudnn` before this (`CudnnArgument`); SimpleRNN accepts and ignores it.
        kwargs.pop("use_cudnn", None)
        kwargs.pop("implementation", None)
        cell = self.cell_class(
            units,
            dtype=kwargs.get("dtype"),
            trainable=kwargs.get("trainable", True),
            name=self.cell_name,
            **cell_kwargs,
        )
        super().__init__(
            cell,
            return_sequences=return_sequences,
            return_state=return_state,
            go_backwards=go_backwards,
            stateful=stateful,
            unroll=unroll,
            zero_output_for_mask=zero_output_for_mask,
            **kwargs,
        )
        self.input_spec = keras.layers.InputSpec(ndim=3)

    @property
    def units(self):
        return self.cell.units

    def inner_loop(self, sequences, initial_state, mask, training=False):
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        if keras.backend.backend() == "torch" and self.stateful:
            # The state variables are updated in place after the call; autograd needs copies.
            initial_state = [ops.copy(s) for s in initial_state]
        input_mask = recurrent_mask = None
        if training:
            # Drawn by keras.layers.RNN.call for this sequence (our cell is a DropoutRNNCell), so
            # these are cached tensors; None where that dropout is off.
            input_mask = self.cell.get_dropout_mask(sequences[:, 0, :])  # (batch, input_dim)
            recurrent_mask = self.cell.get_recurrent_dropout_mask(initial_state[0])  # (batch, units)
        if keras.backend.backend() == "torch" and not _FORCE_GENERIC_LOOP and recurrent_mask is None:
            fused = torch_recurrent.fused_recurrence(
                self.cell,
                sequences if input_mask is None else sequences * ops.expand_dims(input_mask, 1),
                initial_state,
                mask=mask,
                go_backwards=self.go_backwards,
                zero_output_for_mask=self.zero_output_for_mask,
                states_used=self.return_state or self.stateful,
            )
            if fused is not None:
                return fused
        inputs = ops.transpose(sequences, (1, 0, 2))  # (time, batch, features)
        if input_mask is not None:
            inputs = inputs * input_mask
        if _project_in_each_step():
            xs = inputs  # (time, batch, features)

            def step(x_t, states):
                return self.cell.recurrent_step(self.cell.project_inputs(x_t), states, recurrent_mask)
        else:
            xs = self.cell.project_inputs(inputs)  # (time, batch, gates * units): one matmul

            def step(projected_t, states):
                return self.cell.recurrent_step(projected_t, states, recurrent_mask)

        whole_sequence = None
        backend = keras.backend.backend()
        if backend == "jax" and not self.unroll and jax_recurrent.applies(self.cell, xs.shape[0], recurrent_mask):
            project = _project_in_each_step()

            def whole_sequence(xs, masks, states):
                return jax_recurrent.sequence(self.cell, xs, states, masks, project_inputs=project)
        elif (backend == "tensorflow" and not self.unroll and _project_in_each_step()
              and tf_recurrent.applies(self.cell, recurrent_mask, training)):

            def whole_sequence(xs, masks, states):
                return tf_recurrent.sequence(self.cell, xs, states, masks, training=training)

        return run_recurrence(
            step,
            xs,
            initial_state,
            mask=mask,
            go_backwards=self.go_backwards,
            unroll=self.unroll,
            zero_output_for_mask=self.zero_output_for_mask,
            return_sequences=self.return_sequences,
            whole_sequence=whole_sequence,
        )

    def get_config(self):
        config = super().get_config()
        cell_config = config.pop("cell")["config"]
        for key in ("name", "dtype", "trainable"):
            cell_config.pop(key, None)
        return {**config, **cell_config}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**config)


def _cell_arguments(cell_class):
    """Names of the constructor arguments of `cell_class` and its bases (minus `units`)."""
    names = set()
    for klass in cell_class.__mro__:
        if klass is keras.layers.Layer:
            break
        names.update(inspect.signature(klass.__init__).parameters)
    return names - {"self", "units", "kwargs"}


@keras.saving.register_keras_serializable(package="rnn_suite")
class SimpleRNN(Recurrent):
    """Fully connected RNN, weight-compatible with `keras.layers.SimpleRNN`.

    See `Recurrent` for the layer arguments and `SimpleRNNCell` for the cell arguments.
    Input `(batch, time, features)`; output `(batch, units)` or `(batch, time, units)`.
    """

    cell_class = SimpleRNNCell
    cell_name = "simple_rnn_cell"


class CudnnArgument(Recurrent):
    """Keeps Keras' `use_cudnn` argument of `LSTM` and `GRU`: `"auto"` (default), `True` or
    `False`, checked and kept as `layer.use_cudnn` (and by `keras.layers.Bidirectional` on its
    copies) but, as in Keras, not in `get_config()`. We have no cuDNN path: every value runs our
    own loop, and `True` does not require a GPU as in Keras."""

    def __init__(self, units, use_cudnn="auto", **kwargs):
        if use_cudnn not in ("auto", True, False):
            raise ValueError(f"`use_cudnn` must be one of 'auto', True, False; got {use_cudnn!r}.")
        super().__init__(units, **kwargs)
        self.use_cudnn = use_cudnn


@keras.saving.register_keras_serializable(package="rnn_suite")
class LSTM(CudnnArgument):
    """Long short-term memory layer, weight-compatible with `keras.layers.LSTM`.

    See `Recurrent` for the layer arguments, `LSTMCell` for the cell arguments and
    `CudnnArgument` for `use_cudnn` (accepted and kept; our own loop always runs).
    Input `(batch, time, features)`; output `(batch, units)` or `(batch, time, units)`;
    states `[h, c]`.
    """

    cell_class = LSTMCell
    cell_name = "lstm_cell"


@keras.saving.register_keras_serializable(package="rnn_suite")
class GRU(CudnnArgument):
    """Gated recurrent unit layer, weight-compatible with `keras.layers.GRU`.

    See `Recurrent` for the layer arguments, `GRUCell` for the cell arguments
    (`reset_after=True` by default, as in Keras) and `CudnnArgument` for `use_cudnn`.
    Input `(batch, time, features)`; output `(batch, units)` or `(batch, time, units)`.
    """

    cell_class = GRUCell
    cell_name = "gru_cell"


CELLS = {"simple_rnn": SimpleRNN, "lstm": LSTM, "gru": GRU}  # the name of each cell -> our layer


def recurrent_layer_class(cell, impl="ours"):
    """The layer class for `cell` (a name of `CELLS`: `"simple_rnn"`, `"lstm"` or `"gru"`): ours
    (`impl="ours"`) or Keras' built-in (`impl="keras"`, which runs cuDNN's fused kernels on a
    GPU). Both take the same arguments and hold the same weights, so a model can switch."""
    if cell not in CELLS:
        raise ValueError(f"cell must be one of {sorted(CELLS)}, got {cell!r}")
    if impl == "ours":
        return CELLS[cell]
    if impl == "keras":
        return getattr(keras.layers, CELLS[cell].__name__)
    raise ValueError(f"rnn_impl must be 'ours' or 'keras', got {impl!r}")
