"""One step of our LSTM and GRU, forward and backward, for the whole-sequence kernels with a
hand-written backward pass (`layers/jax_recurrent.py`, `layers/tf_recurrent.py`).

Autodiff of a loop over time differentiates each step on its own: the backward loop adds a
rank-`batch` product into the full weight gradients at every step (`x_t^T dz_t`, `h_{t-1}^T
dz_t`). The kernels instead run only what must be sequential in their backward loop, the states'
and the gates' gradients (`backward` below), and compute the weight and input gradients after
it, one matrix product over all steps each, as cuDNN does. Written with `keras.ops`, so that the
JAX and TensorFlow kernels share the math; each backend's module brings the loops.

`forward(a, recurrent_kernel, bias, states) -> (new_states, saved)`: `a (batch, gates units)` is
    the step's input product `x_t W`, bias excluded; `saved`, a tuple of `(batch, width)` tensors
    (`saved_widths` of units), is what the backward step reads.
`backward(h_prev, saved, recurrent_kernel, d_states) -> (d_states_prev, d_a, d_inner)`: from the
    cotangents of the step's new states, those of its old states (unmasked), of `a` and of the
    recurrent product `h_{t-1} U` (`None` where it equals `d_a`: `inner_differs` False).
`gates`: blocks of `units` in the products; `bias_shape(width)`, `bias_grad(sum_d_a,
    sum_d_inner)`: the bias' shape and gradient.
"""

from typing import Callable, NamedTuple

import keras
from keras import ops


class CellSteps(NamedTuple):
    """One cell kind's step, forward and backward (see the module docstring)."""

    name: str
    gates: int
    inner_differs: bool
    forward: Callable
    backward: Callable
    saved_widths: Callable
    bias_shape: Callable
    bias_grad: Callable


def supported(cell, recurrent_mask):
    """Whether a kernel of these steps computes `cell`: an `LSTMCell`, or a `GRUCell` with
    `reset_after` (the Keras and cuDNN default), with tanh and sigmoid, float32, and no recurrent
    dropout (the layers fall back to their generic loop otherwise)."""
    from layers.cells import GRUCell, LSTMCell

    kind = isinstance(cell, LSTMCell) or (isinstance(cell, GRUCell) and cell.reset_after)
    return (kind and recurrent_mask is None and cell.compute_dtype == "float32"
            and cell.activation is keras.activations.tanh
            and cell.recurrent_activation is keras.activations.sigmoid)


def cell_steps(cell):
    """The `CellSteps` of an `LSTMCell` or a `GRUCell`."""
    from layers.cells import LSTMCell

    return LSTM_STEPS if isinstance(cell, LSTMCell) else GRU_STEPS


def _lstm_forward(a, recurrent_kernel, bias, states):
    h, c = states
    z_i, z_f, z_c, z_o = ops.split(ops.matmul(h, recurrent_kernel) + bias + a, 4, axis=-1)
    i, f, g, o = ops.sigmoid(z_i), ops.sigmoid(z_f), ops.tanh(z_c), ops.sigmoid(z_o)
    c_new = f * c + i * g
    tanh_c = ops.tanh(c_new)
    return (o * tanh_c, c_new), (c, ops.concatenate([i, f, g, o], axis=-1), tanh_c)


def _lstm_backward(h_prev, saved, recurrent_kernel, d_states):
    c_prev, activations, tanh_c = saved
    d_h, d_c = d_states
    i, f, g, o = ops.split(activations, 4, axis=-1)
    d_c = d_c + d_h * o * (1.0 - tanh_c * tanh_c)
    d_z = ops.concatenate([d_c * g * i * (1.0 - i), d_c * c_prev * f * (1.0 - f),
                           d_c * i * (1.0 - g * g), d_h * tanh_c * o * (1.0 - o)], axis=-1)
    return (ops.matmul(d_z, ops.transpose(recurrent_kernel)), d_c * f), d_z, None


def _gru_forward(a, recurrent_kernel, bias, states):
    (h,) = states
    a_z, a_r, a_n = ops.split(a + bias[0], 3, axis=-1)
    u_z, u_r, u_n = ops.split(ops.matmul(h, recurrent_kernel) + bias[1], 3, axis=-1)
    z, r = ops.sigmoid(a_z + u_z), ops.sigmoid(a_r + u_r)
    n = ops.tanh(a_n + r * u_n)
    return (n + z * (h - n),), (ops.concatenate([z, r, n, u_n], axis=-1),)


def _gru_backward(h_prev, saved, recurrent_kernel, d_states):
    z, r, n, u_n = ops.split(saved[0], 4, axis=-1)
    (d_h,) = d_states
    d_pre_z = d_h * (h_prev - n) * z * (1.0 - z)
    d_pre_n = d_h * (1.0 - z) * (1.0 - n * n)
    d_pre_r = d_pre_n * u_n * r * (1.0 - r)
    d_inner = ops.concatenate([d_pre_z, d_pre_r, d_pre_n * r], axis=-1)  # of h_{t-1} U + b'
    d_a = ops.concatenate([d_pre_z, d_pre_r, d_pre_n], axis=-1)  # of x_t W + b
    return (d_h * z + ops.matmul(d_inner, ops.transpose(recurrent_kernel)),), d_a, d_inner


LSTM_STEPS = CellSteps("lstm", 4, False, _lstm_forward, _lstm_backward, lambda units: (units, 4 * units, units),
                       lambda width: (width,), lambda d_a, d_inner: d_a)
GRU_STEPS = CellSteps("gru", 3, True, _gru_forward, _gru_backward, lambda units: (4 * units,),
                      lambda width: (2, width), lambda d_a, d_inner: ops.stack([d_a, d_inner]))
