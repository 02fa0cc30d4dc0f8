"""Recurrent cells written from their equations with `keras.ops`.

Each cell splits one recurrent step into two parts:

* `project_inputs(x)`: the input projection `x @ kernel`. It has no time dependency, so the
  layers in `layers/recurrent.py` can apply it to every timestep at once, in one matrix product
  (on a CPU, JAX and TensorFlow measured faster with it inside each step: `layers/recurrent.py`).
* `recurrent_step(projected_t, states)`: the part that must run step by step: the bias,
  `h_{t-1} @ recurrent_kernel` and the gate nonlinearities. The bias is added here rather than
  in the projection because here it fuses with the gate arithmetic, while in the projection it
  costs one more pass over the large `(time, batch, gates * units)` tensor (measured: about 15%
  of a JAX training step on CPU).

`call(inputs, states)` chains the two for a single step, so a cell also works inside
`keras.layers.RNN` (alone or stacked, dropout included) and in step-by-step decoding.

Dropout masks are drawn once per sequence and shared by all its steps (variational dropout). As
Keras' built-in cells, ours are `DropoutRNNCell`s: `get_dropout_mask` and
`get_recurrent_dropout_mask` draw the masks on first use and cache them, and `keras.layers.RNN`
(and so our layers, which subclass it) draws them before its time loop and resets them after, so
the loop reads fixed tensors (no tracer of a JAX scan or jit is cached across calls).

Weights have the names, shapes, order and gate layout of Keras' built-in cells, so
`ours.set_weights(builtin.get_weights())` and the reverse just work:

    SimpleRNN  h = tanh(x W + b + h_{t-1} U)
    LSTM       [i f g o] = x W + b + h_{t-1} U               (gate order i, f, c, o)
               c = sigmoid(f) c_{t-1} + sigmoid(i) tanh(g);   h = sigmoid(o) tanh(c)
    GRU        [z r n] layout (update, reset, candidate)
               reset_after=True : n = tanh(x W_n + b_n + r * (h_{t-1} U_n + b'_n))   (bias: (2, 3 units))
               reset_after=False: n = tanh(x W_n + b_n + (r * h_{t-1}) U_n)         (bias: (3 units,))
               h = z h_{t-1} + (1 - z) n

References: Elman (1990); Hochreiter & Schmidhuber (1997), Gers et al. (2000) for the forget gate;
Cho et al. (2014) for the GRU; Gal & Ghahramani (2016) for dropout masks shared across timesteps.
"""

import keras
from keras import activations, constraints, initializers, ops, regularizers

# Not exported by Keras, but keras.layers.RNN only draws and resets the masks of cells that are
# instances of it (`isinstance(cell, DropoutRNNCell)` in keras/src/layers/rnn/rnn.py).
from keras.src.layers.rnn.dropout_rnn_cell import DropoutRNNCell


class RecurrentCell(keras.layers.Layer, DropoutRNNCell):
    """Base class: the arguments, weights and dropout masks that all three cells share.

    Args:
        units: Positive integer, size of the hidden state.
        activation: Activation of the candidate state. Default: `"tanh"`.
        use_bias: Whether the input projection has a bias vector. Default: `True`.
        kernel_initializer: Initializer of `kernel`, shape `(input_dim, gates * units)`.
            Default: `"glorot_uniform"`.
        recurrent_initializer: Initializer of `recurrent_kernel`, shape `(units, gates * units)`.
            Default: `"orthogonal"`.
        bias_initializer: Initializer of `bias`. Default: `"zeros"`.
        kernel_regularizer, recurrent_regularizer, bias_regularizer: Optional regularizers.
        kernel_constraint, recurrent_constraint, bias_constraint: Optional constraints.
        dropout: Fraction of the input units dropped, in [0, 1). One mask per sequence,
            `(batch, input_dim)`.
        recurrent_dropout: Fraction of the state units dropped before the recurrent product,
            in [0, 1). One mask per sequence, `(batch, units)`.
        seed: Seed of the dropout masks.
    """

    #: Number of gate blocks stacked in the kernels (1 for SimpleRNN, 4 for LSTM, 3 for GRU).
    gates = 1

    def __init__(
        self,
        units,
        activation="tanh",
        use_bias=True,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        bias_initializer="zeros",
        kernel_regularizer=None,
        recurrent_regularizer=None,
        bias_regularizer=None,
        kernel_constraint=None,
        recurrent_constraint=None,
        bias_constraint=None,
        dropout=0.0,
        recurrent_dropout=0.0,
        seed=None,
        **kwargs,
    ):
        if not isinstance(units, int) or isinstance(units, bool) or units <= 0:
            raise ValueError(f"`units` must be a positive integer, got {units!r}.")
        for name, rate in (("dropout", dropout), ("recurrent_dropout", recurrent_dropout)):
            if not 0.0 <= rate < 1.0:
                raise ValueError(f"`{name}` must be in [0, 1), got {rate!r}.")
        super().__init__(**kwargs)
        self.units = units
        self.activation = activations.get(activation)
        self.use_bias = use_bias
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.recurrent_initializer = initializers.get(recurrent_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.recurrent_regularizer = regularizers.get(recurrent_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.kernel_constraint = constraints.get(kernel_constraint)
        self.recurrent_constraint = constraints.get(recurrent_constraint)
        self.bias_constraint = constraints.get(bias_constraint)
        self.dropout = float(dropout)
        self.recurrent_dropout = float(recurrent_dropout)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    # --- sizes, read by keras.layers.RNN and by our layers -----------------------------------------
    @property
    def state_size(self):
        return self.units

    @property
    def output_size(self):
        return self.units

    def get_initial_state(self, batch_size=None):
        """Zero states: a list of `(batch_size, units)` tensors, one per state."""
        sizes = self.state_size if isinstance(self.state_size, (list, tuple)) else [self.state_size]
        return [ops.zeros((batch_size, size), dtype=self.compute_dtype) for size in sizes]

    # --- weights ---------------------------------------------------------------------------------
    def build(self, input_shape):
        input_dim = input_shape[-1]
        self.kernel = self.add_weight(
            shape=(input_dim, self.gates * self.units),
            name="kernel",
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        self.recurrent_kernel = self.add_weight(
            shape=(self.units, self.gates * self.units),
            name="recurrent_kernel",
            initializer=self.recurrent_initializer,
            regularizer=self.recurrent_regularizer,
            constraint=self.recurrent_constraint,
        )
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                shape=self.bias_shape(),
                name="bias",
                initializer=self.bias_init_fn(),
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )

    def bias_shape(self):
        return (self.gates * self.units,)

    def bias_init_fn(self):
        return self.bias_initializer

    # --- the two halves of a step ----------------------------------------------------------------
    def project_inputs(self, inputs):
        """Input projection, bias excluded, of any number of timesteps:
        `(..., input_dim) -> (..., gates * units)`."""
        return ops.matmul(inputs, self.kernel)

    def add_input_bias(self, projected):
        """`projected + b` (the input bias; GRU with `reset_after` has a second, recurrent one)."""
        return projected + self.bias if self.use_bias else projected

    def recurrent_step(self, projected, states, recurrent_mask=None):
        """One step from projected inputs `x_t W`, `(batch, gates * units)`, and a list of states.

        Returns `(output, new_states)`; the output is always `new_states[0]` (the hidden state h).
        """
        raise NotImplementedError

    # --- dropout -----------------------------------------------------------------------------------
    # `get_dropout_mask(x_t)` -> `(batch, input_dim)` and `get_recurrent_dropout_mask(h_t)` ->
    # `(batch, units)` (or `None` where that dropout is off) come from `DropoutRNNCell`: cached
    # until `reset_dropout_mask()` / `reset_recurrent_dropout_mask()`, which keras.layers.RNN
    # calls after each sequence. `dropout_masks` below draws a fresh pair without caching.

    def dropout_masks(self, step_input, training=False):
        """Draw fresh input and recurrent dropout masks for one sequence, for step-by-step callers
        that pass them to every `call` of the sequence (`dropout_masks=...`); nothing is cached.

        Args:
            step_input: One timestep of inputs, `(batch, input_dim)`; gives the batch size and dtype.
            training: Masks are drawn only in training.

        Returns:
            `(input_mask, recurrent_mask)`: `(batch, input_dim)` and `(batch, units)` tensors scaled
            by `1 / (1 - rate)`, or `None` where that dropout is off. The same masks serve every
            timestep of the sequence (variational dropout, as in Keras' built-in cells).
        """
        if not training:
            return None, None
        input_mask = recurrent_mask = None
        if self.dropout > 0:
            input_mask = keras.random.dropout(
                ops.ones_like(step_input), self.dropout, seed=self.seed_generator
            )
        if self.recurrent_dropout > 0:
            batch = ops.shape(step_input)[0]
            ones = ops.ones((batch, self.units), dtype=step_input.dtype)
            recurrent_mask = keras.random.dropout(ones, self.recurrent_dropout, seed=self.seed_generator)
        return input_mask, recurrent_mask

    def call(self, inputs, states, training=False, dropout_masks=None):
        """One step: `inputs (batch, input_dim)`, `states` list of `(batch, units)` tensors.

        Returns `(output (batch, units), new_states)`.

        In training, dropout uses `dropout_masks=(input_mask, recurrent_mask)` if given (from
        `cell.dropout_masks(x_0, training=True)`), else the cell's cached masks, drawn at the
        first step as Keras' built-in cells do. Inside `keras.layers.RNN` those are drawn before
        and reset after each sequence; a caller stepping by hand without `dropout_masks` resets
        them between sequences (`reset_dropout_mask()`, `reset_recurrent_dropout_mask()`).
        """
        states = list(states) if isinstance(states, (list, tuple)) else [states]
        input_mask, recurrent_mask = dropout_masks or (None, None)
        if training and dropout_masks is None:
            input_mask = self.get_dropout_mask(inputs)
            recurrent_mask = self.get_recurrent_dropout_mask(states[0])
        if input_mask is not None:
            inputs = inputs * input_mask
        return self.recurrent_step(self.project_inputs(inputs), states, recurrent_mask)

    def get_config(self):
        config = {
            "units": self.units,
            "activation": activations.serialize(self.activation),
            "use_bias": self.use_bias,
            "kernel_initializer": initializers.serialize(self.kernel_initializer),
            "recurrent_initializer": initializers.serialize(self.recurrent_initializer),
            "bias_initializer": initializers.serialize(self.bias_initializer),
            "kernel_regularizer": regularizers.serialize(self.kernel_regularizer),
            "recurrent_regularizer": regularizers.serialize(self.recurrent_regularizer),
            "bias_regularizer": regularizers.serialize(self.bias_regularizer),
            "kernel_constraint": constraints.serialize(self.kernel_constraint),
            "recurrent_constraint": constraints.serialize(self.recurrent_constraint),
            "bias_constraint": constraints.serialize(self.bias_constraint),
            "dropout": self.dropout,
            "recurrent_dropout": self.recurrent_dropout,
            "seed": self.seed,
        }
        return {**super().get_config(), **config}


class GatedCell(RecurrentCell):
    """A cell with sigmoid-style gates: adds `recurrent_activation` (default `"sigmoid"`)."""

    def __init__(self, units, recurrent_activation="sigmoid", **kwargs):
        super().__init__(units, **kwargs)
        self.recurrent_activation = activations.get(recurrent_activation)

    def get_config(self):
        return {
            **super().get_config(),
            "recurrent_activation": activations.serialize(self.recurrent_activation),
        }


@keras.saving.register_keras_serializable(package="rnn_suite")
class SimpleRNNCell(RecurrentCell):
    """Elman cell: `h_t = activation(x_t W + b + h_{t-1} U)`.

    Arguments as in `RecurrentCell`. Weights: `kernel (input_dim, units)`,
    `recurrent_kernel (units, units)`, `bias (units,)`. One state `h (batch, units)`.
    """

    gates = 1

    def recurrent_step(self, projected, states, recurrent_mask=None):
        h_prev = states[0]  # (batch, units)
        if recurrent_mask is not None:
            h_prev = h_prev * recurrent_mask
        h = self.activation(ops.matmul(h_prev, self.recurrent_kernel) + self.add_input_bias(projected))
        return h, [h]


@keras.saving.register_keras_serializable(package="rnn_suite")
class LSTMCell(GatedCell):
    """Long short-term memory cell, gate layout `i, f, c, o` as in `keras.layers.LSTMCell`.

    Args:
        units, recurrent_activation and the arguments of `RecurrentCell`.
        unit_forget_bias: Initialise the forget-gate bias to 1 (Jozefowicz et al., 2015); the other
            bias blocks then use `bias_initializer`. Default: `True`.

    Weights: `kernel (input_dim, 4 units)`, `recurrent_kernel (units, 4 units)`, `bias (4 units,)`.
    States: `[h, c]`, each `(batch, units)`.
    """

    gates = 4

    def __init__(self, units, unit_forget_bias=True, **kwargs):
        super().__init__(units, **kwargs)
        self.unit_forget_bias = unit_forget_bias

    @property
    def state_size(self):
        return [self.units, self.units]

    def bias_init_fn(self):
        if not self.unit_forget_bias:
            return self.bias_initializer
        units, base = self.units, self.bias_initializer

        def forget_bias_one(shape, dtype=None):
            return ops.concatenate(
                [base((units,), dtype), ops.ones((units,), dtype), base((2 * units,), dtype)]
            )

        return forget_bias_one

    def recurrent_step(self, projected, states, recurrent_mask=None):
        h_prev, c_prev = states  # (batch, units) each
        if recurrent_mask is not None:
            h_prev = h_prev * recurrent_mask
        z = ops.matmul(h_prev, self.recurrent_kernel) + self.add_input_bias(projected)  # (batch, 4 units)
        # Four activations on the four blocks. One sigmoid over all of z plus a slice for the
        # candidate block was measured slower with TensorFlow's loop (training 0.76 vs 0.91 of
        # the built-in's speed) and no faster elsewhere.
        z_i, z_f, z_c, z_o = ops.split(z, 4, axis=-1)
        i, f, o = self.recurrent_activation(z_i), self.recurrent_activation(z_f), self.recurrent_activation(z_o)
        c = f * c_prev + i * self.activation(z_c)
        h = o * self.activation(c)
        return h, [h, c]

    def get_config(self):
        return {**super().get_config(), "unit_forget_bias": self.unit_forget_bias}


@keras.saving.register_keras_serializable(package="rnn_suite")
class GRUCell(GatedCell):
    """Gated recurrent unit, gate layout `z, r, h` as in `keras.layers.GRUCell`.

    Args:
        units, recurrent_activation and the arguments of `RecurrentCell`.
        reset_after: Apply the reset gate after the recurrent matrix product (the cuDNN
            convention, Keras' default, with separate input and recurrent biases of shape
            `(2, 3 units)`), or before it (the original formulation, bias `(3 units,)`).
            Default: `True`.

    Weights: `kernel (input_dim, 3 units)`, `recurrent_kernel (units, 3 units)`, `bias`.
    One state `h (batch, units)`.
    """

    gates = 3

    def __init__(self, units, reset_after=True, **kwargs):
        super().__init__(units, **kwargs)
        self.reset_after = reset_after

    def bias_shape(self):
        return (2, 3 * self.units) if self.reset_after else (3 * self.units,)

    def add_input_bias(self, projected):
        if not self.use_bias:
            return projected
        return projected + (self.bias[0] if self.reset_after else self.bias)

    def recurrent_step(self, projected, states, recurrent_mask=None):
        h_prev = states[0]  # (batch, units)
        h_dropped = h_prev if recurrent_mask is None else h_prev * recurrent_mask
        x_z, x_r, x_n = ops.split(self.add_input_bias(projected), 3, axis=-1)
        units = self.units
        if self.reset_after:
            inner = ops.matmul(h_dropped, self.recurrent_kernel)  # (batch, 3 units)
            if self.use_bias:
                inner = inner + self.bias[1]
            h_z, h_r, h_n = ops.split(inner, 3, axis=-1)
            z = self.recurrent_activation(x_z + h_z)
            r = self.recurrent_activation(x_r + h_r)
            n = self.activation(x_n + r * h_n)
        else:
            inner = ops.matmul(h_dropped, self.recurrent_kernel[:, : 2 * units])  # (batch, 2 units)
            h_z, h_r = ops.split(inner, 2, axis=-1)
            z = self.recurrent_activation(x_z + h_z)
            r = self.recurrent_activation(x_r + h_r)
            n = self.activation(x_n + ops.matmul(r * h_dropped, self.recurrent_kernel[:, 2 * units :]))
        h = z * h_prev + (1.0 - z) * n
        return h, [h]

    def get_config(self):
        return {**super().get_config(), "reset_after": self.reset_after}
