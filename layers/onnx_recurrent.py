"""Our recurrent layers as ONNX's own `LSTM`, `GRU` and `RNN` operators in a JAX export (jax2onnx).

Traced as it is, a layer's time loop (`run_recurrence`) becomes an ONNX `Loop` whose body runs
about 30 small nodes per step; ONNX Runtime spends most of a short review's time on them. Its
native operators run the same recurrence in one kernel, about ten times faster on a CPU (a
bidirectional 64-unit LSTM over 32 steps: 0.06 ms against 0.6 ms). Inside `native_recurrences()`,
a layer called for inference binds one such operator instead of the loop, with its weights
reordered to ONNX's gate layout:

- LSTM: Keras' kernel blocks `i, f, c, o` -> ONNX `i, o, f, c`, the bias as ONNX's input bias (its
  recurrent bias zero). Peepholes: none, as in Keras.
- GRU: the same `z, r, h` layout; `reset_after=True` is ONNX's `linear_before_reset=1`, with
  Keras' input and recurrent biases as ONNX's two.
- SimpleRNN: ONNX `RNN` with the cell's tanh.

ONNX reads masks as sequence lengths, so a mask must be True on a prefix of each row (right
padding), as every mask of this suite is (the runtime checks those it is given). The outputs at
masked steps then follow the layer's contract (zeros with `zero_output_for_mask`, else the carried
state). Anything else (training, dropout, other activations, one time step, which has no loop,
Keras' built-in layers) takes the generic path. Equal outputs are tested (`tests/test_export.py`).
"""

import contextlib
import warnings

import numpy as np
from keras import ops

from layers import recurrent
from layers.cells import GRUCell, LSTMCell, SimpleRNNCell

PRIMITIVE_NAME = "rnn_suite_onnx_recurrence"
_primitive = None  # made on first use: jax and jax2onnx are imported only for an export


@contextlib.contextmanager
def native_recurrences():
    """Within: our recurrent layers called for inference run as ONNX's native operators when
    traced by jax2onnx (see the module docstring). JAX backend only."""
    try:
        _register()
    except (ImportError, AttributeError, TypeError) as error:  # jax2onnx's plugin API moved: still export
        warnings.warn(f"the recurrent layers are exported as ONNX loops, not ONNX's LSTM/GRU operators (slower): "
                      f"this jax2onnx has no plugin API we know ({error})", stacklevel=3)
        yield
        return
    generic = recurrent.Recurrent.inner_loop

    def inner_loop(layer, sequences, initial_state, mask, training=False):
        weights = None if training else onnx_weights(layer.cell)
        if weights is None or layer.stateful or layer.unroll or sequences.shape[1] == 1:
            return generic(layer, sequences, initial_state, mask, training=training)
        return _native_loop(layer, weights, sequences, initial_state, mask[0] if isinstance(mask, (list, tuple))
                            else mask)

    recurrent.Recurrent.inner_loop = inner_loop
    try:
        yield
    finally:
        recurrent.Recurrent.inner_loop = generic


def onnx_weights(cell):
    """`(operator, W (1, gates units, input_dim), R (1, gates units, units), B (1, 2 gates units),
    attributes)` of `cell` in ONNX's layout, or `None` for a cell ONNX's operators do not compute
    (an activation other than tanh and sigmoid)."""
    name = lambda fn: getattr(fn, "__name__", "")  # noqa: E731
    if name(cell.activation) != "tanh" or (hasattr(cell, "recurrent_activation")
                                           and name(cell.recurrent_activation) != "sigmoid"):
        return None
    kernel, recurrent_kernel = ops.convert_to_numpy(cell.kernel), ops.convert_to_numpy(cell.recurrent_kernel)
    units = cell.units
    bias = ops.convert_to_numpy(cell.bias) if cell.use_bias else np.zeros(cell.bias_shape(), "float32")
    attributes = {"hidden_size": units}
    if isinstance(cell, LSTMCell):
        order = [0, 3, 1, 2]  # Keras i, f, c, o -> ONNX i, o, f, c
        blocks = lambda m: np.concatenate([np.split(m, 4, axis=-1)[k] for k in order], axis=-1)  # noqa: E731
        operator, kernel, recurrent_kernel = "LSTM", blocks(kernel), blocks(recurrent_kernel)
        input_bias, recurrent_bias = blocks(bias), np.zeros_like(bias)
    elif isinstance(cell, GRUCell):
        operator, attributes["linear_before_reset"] = "GRU", int(cell.reset_after)
        input_bias, recurrent_bias = (bias[0], bias[1]) if cell.reset_after else (bias, np.zeros_like(bias))
    elif isinstance(cell, SimpleRNNCell):
        operator, input_bias, recurrent_bias = "RNN", bias, np.zeros_like(bias)
    else:
        return None
    return (operator, kernel.T[None].astype("float32"), recurrent_kernel.T[None].astype("float32"),
            np.concatenate([input_bias, recurrent_bias])[None].astype("float32"), attributes)


def _native_loop(layer, weights, sequences, initial_state, mask):
    """`run_recurrence`'s result `(last_output, outputs (batch, time, units), states)` from one
    native operator over `sequences (batch, time, features)`."""
    operator, kernel, recurrent_kernel, bias, attributes = weights
    if mask is None:
        lengths = ops.sum(ops.ones_like(sequences[:, :, 0], dtype="int32"), axis=1)
    else:
        lengths = ops.sum(ops.cast(mask, "int32"), axis=1)  # (batch,): a prefix of each row
    direction = "reverse" if layer.go_backwards else "forward"
    states = [ops.expand_dims(s, 0) for s in initial_state]  # (1, batch, units): one direction
    kernel, recurrent_kernel, bias = (ops.convert_to_tensor(w) for w in (kernel, recurrent_kernel, bias))
    results = _primitive.bind(ops.transpose(sequences, (1, 0, 2)), kernel, recurrent_kernel, bias, lengths,
                              *states, operator=operator, direction=direction,
                              attributes=tuple(sorted(attributes.items())))
    outputs = ops.transpose(results[0][:, 0], (1, 0, 2))  # (batch, time, units), zero after each length
    final = [s[0] for s in results[1:]]
    if mask is not None and not layer.zero_output_for_mask:
        # A masked step repeats the state carried to it: the final one after a forward pass, the
        # initial one before a backward pass (which reads the padding first).
        carried = final[0] if direction == "forward" else initial_state[0]
        outputs = ops.where(ops.expand_dims(ops.cast(mask, "bool"), -1), outputs, ops.expand_dims(carried, 1))
    if layer.go_backwards:  # the layer returns outputs in processing order
        outputs = ops.flip(outputs, axis=1)
    return outputs[:, -1], outputs, final


def _register():
    """Make the JAX primitive and register its jax2onnx lowering (once)."""
    global _primitive
    if _primitive is not None:
        return
    from jax import core as jax_core
    from jax.extend import core
    from jax2onnx.plugins._ir_shapes import _ensure_value_metadata, _stamp_type_and_shape
    from jax2onnx.plugins.plugin_system import PrimitiveLeafPlugin, register_primitive

    primitive = core.Primitive(PRIMITIVE_NAME)
    primitive.multiple_results = True

    def abstract_eval(x, kernel, recurrent_kernel, bias, lengths, *states, operator, direction, attributes):
        time, batch, units = x.shape[0], x.shape[1], kernel.shape[1] // {"LSTM": 4, "GRU": 3, "RNN": 1}[operator]
        return [jax_core.ShapedArray((time, 1, batch, units), x.dtype),
                *[jax_core.ShapedArray((1, batch, units), x.dtype) for _ in states]]

    def impl(*args, **params):
        raise NotImplementedError(f"{PRIMITIVE_NAME} exists only to be written as ONNX (layers.onnx_recurrent)")

    primitive.def_abstract_eval(abstract_eval)
    primitive.def_impl(impl)

    @register_primitive(jaxpr_primitive=PRIMITIVE_NAME, context="primitives.rnn_suite", component="recurrence")
    class NativeRecurrence(PrimitiveLeafPlugin):
        """Writes the primitive as one ONNX LSTM, GRU or RNN node."""

        _PRIM = primitive

        def lower(self, ctx, eqn):
            inputs = [ctx.get_value_for_var(v, name_hint=ctx.fresh_name("recurrence_in")) for v in eqn.invars]
            params = eqn.params
            node = getattr(ctx.builder, params["operator"])
            results = node(*inputs, direction=params["direction"], **dict(params["attributes"]),
                           _outputs=[ctx.fresh_name(f"{params['operator']}_out") for _ in eqn.outvars])
            results = results if isinstance(results, (list, tuple)) else [results]
            for var, value in zip(eqn.outvars, results):
                value.type = inputs[0].type  # float32, as the sequences
                _stamp_type_and_shape(value, tuple(var.aval.shape))
                _ensure_value_metadata(ctx, value)
                ctx.bind_value_for_var(var, value)

    _primitive = primitive
