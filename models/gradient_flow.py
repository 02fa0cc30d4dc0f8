"""Gradient-flow lab: how much of the loss's gradient reaches a step t steps back, per cell type.

Two long-memory tasks (Hochreiter & Schmidhuber, 1997):

- adding: each step holds a random number in [0, 1) and a marker; two steps are marked (one in
  the first half, one in the second) and the target is the sum of their numbers. Predicting 1.0
  always gives a mean squared error of 1/6 = 0.167; solving it needs memory of the first mark.
- recall: the first step shows one of 8 symbols, the rest is noise; the answer, at the end, is
  that symbol. Chance accuracy is 1/8.

The probe is `x (batch, T, features) -> our SimpleRNN | LSTM | GRU -> Dense` on the last state.
`hidden_gradient_norms` measures ||dL/dh_t|| for every step t: the recurrence is stepped with a
zero added to each h_t, and the gradient with respect to those zeros is the gradient that flows
back to h_t through all later steps (LSTM: through h and c). `train_probe` trains with Adam and
records the global gradient norm of every step before and after clipping.
"""

import dataclasses

import keras
import numpy as np
from keras import ops

import layers
from layers import recurrent_layer_class, value_and_grad
from models.compiled import compile_function

CELLS = tuple(layers.CELLS)  # every cell of layers/: simple_rnn, lstm, gru
LABELS = {"simple_rnn": "SimpleRNN", "lstm": "LSTM", "gru": "GRU"}
TASKS = ("adding", "recall")
SYMBOLS = 8


def make_task(task, batch, length, seed):
    """`(x (batch, length, features) float32, y)`: adding -> y `(batch, 1)` float32 sums;
    recall -> y `(batch,)` int32 symbols."""
    rng = np.random.default_rng(seed)
    if task == "adding":
        values = rng.random((batch, length), dtype=np.float32)
        marks = np.zeros((batch, length), np.float32)
        first = rng.integers(0, max(1, length // 2), batch)
        second = rng.integers(length // 2, length, batch)
        marks[np.arange(batch), first] = marks[np.arange(batch), second] = 1.0
        y = (values[np.arange(batch), first] + values[np.arange(batch), second])[:, None]
        return np.stack([values, marks], axis=-1), y.astype(np.float32)
    if task == "recall":
        symbols = rng.integers(0, SYMBOLS, batch)
        x = np.zeros((batch, length, SYMBOLS + 1), np.float32)
        x[np.arange(batch), 0, symbols] = 1.0
        x[:, 1:, SYMBOLS] = rng.random((batch, length - 1), dtype=np.float32)  # noise channel
        return x, symbols.astype(np.int32)
    raise ValueError(f"task must be one of {TASKS}, got {task!r}")


@dataclasses.dataclass
class Probe:
    """A recurrent layer (ours) and a dense head on its last state, for one task."""

    cell: str
    task: str
    layer: keras.layers.Layer
    head: keras.layers.Dense
    compiled: dict = dataclasses.field(default_factory=dict)  # compiled functions, made on first use

    @property
    def weights(self):
        return self.layer.trainable_weights + self.head.trainable_weights

    def loss(self, h_last, y):
        """Mean loss of the head on `h_last (batch, units)`."""
        out = self.head(h_last)
        if self.task == "adding":
            return ops.mean(ops.square(out - y))
        return ops.mean(keras.losses.sparse_categorical_crossentropy(y, out, from_logits=True))

    def score(self, x, y):
        """Adding: mean squared error (lower is better); recall: accuracy."""
        out = ops.convert_to_numpy(self.head(self.layer(x)))
        if self.task == "adding":
            return float(np.mean((out - y) ** 2))
        return float(np.mean(out.argmax(-1) == y))


def make_probe(cell, task, units=32, seed=0, **layer_kwargs):
    """A `Probe` with our layer of kind `cell` and Keras' default initialisers (override them
    through `layer_kwargs`, e.g. `recurrent_initializer=...`)."""
    if cell not in CELLS:
        raise ValueError(f"cell must be one of {CELLS}, got {cell!r}")
    keras.utils.set_random_seed(seed)
    features = 2 if task == "adding" else SYMBOLS + 1
    layer = recurrent_layer_class(cell)(units, **layer_kwargs)
    head = keras.layers.Dense(1 if task == "adding" else SYMBOLS)
    layer.build((None, None, features))
    head.build((None, units))
    return Probe(cell, task, layer, head)


def hidden_gradient_norms(probe, x, y):
    """`(steps,)` array: mean over the batch of ||dL/dh_t||, t = 0 .. steps - 1 (the loss is at the
    last step). Scans the cell over time with a zero added to every h_t and differentiates with
    respect to those zeros. Compiled once per shape (JAX, TensorFlow)."""
    if "norms" not in probe.compiled:
        probe.compiled["norms"] = compile_function(lambda xs, ys: _hidden_norms(probe, xs, ys), probe.weights,
                                                   differentiates=True)
    return probe.compiled["norms"](x, y).astype("float64")


def _hidden_norms(probe, x, y):
    cell = probe.layer.cell
    batch, steps, units = x.shape[0], x.shape[1], cell.units
    time_major = ops.transpose(x, (1, 0, 2))  # (steps, batch, features)

    def loss_of(perturbations):  # (steps, batch, units) zeros
        def step(states, inputs):
            x_t, eps_t = inputs
            h, states = cell.call(x_t, list(states))
            states = [h + eps_t, *states[1:]]
            return states, states  # TensorFlow's scan wants its outputs shaped like the carry

        initial = [ops.zeros((batch, units)) for _ in range(2 if probe.cell == "lstm" else 1)]
        final, _ = ops.scan(step, initial, (time_major, perturbations))
        return probe.loss(final[0], y)

    _, (grads,) = value_and_grad(loss_of, ops.zeros((steps, batch, units)))
    return ops.mean(ops.sqrt(ops.sum(ops.square(grads), axis=-1)), axis=1)  # (steps,)


def train_probe(probe, x, y, steps, batch_size=32, learning_rate=1e-3, clipnorm=None, seed=0, optimizer="adam"):
    """Train `probe` for `steps` steps of `optimizer` (`"adam"` or `"sgd"`) on random batches of
    `(x, y)`. (Adam divides each update by a running gradient scale, which hides exploding
    gradients; plain SGD shows them, as in Pascanu et al., 2013.)

    Returns dict of per-step lists: `loss`, `grad_norm` (global norm before clipping) and
    `clipped_norm` (after scaling the gradients to global norm `clipnorm` at most; the same as
    `grad_norm` when `clipnorm` is None), and `diverged` (training stopped at a non-finite loss).
    """
    optimizer = {"adam": keras.optimizers.Adam, "sgd": keras.optimizers.SGD}[optimizer](learning_rate)
    weights = probe.weights
    optimizer.build(weights)
    if "train" not in probe.compiled:
        probe.compiled["train"] = compile_function(lambda xb, yb: _loss_and_grads(probe, xb, yb), weights,
                                                   differentiates=True)
    rng = np.random.default_rng(seed)
    history = {"loss": [], "grad_norm": [], "clipped_norm": [], "diverged": False}
    for _ in range(steps):
        rows = rng.integers(0, len(x), batch_size)
        loss, grads = probe.compiled["train"](x[rows], y[rows])
        loss, norm = float(loss), float(np.sqrt(sum(float(np.sum(np.square(g))) for g in grads)))
        if not (np.isfinite(loss) and np.isfinite(norm)):
            history["diverged"] = True
            break
        scale = min(1.0, clipnorm / norm) if clipnorm and norm > 0 else 1.0
        optimizer.apply([ops.convert_to_tensor(g * scale) for g in grads], weights)
        history["loss"].append(loss)
        history["grad_norm"].append(norm)
        history["clipped_norm"].append(norm * scale)
    return history


def _loss_and_grads(probe, xb, yb):
    """Loss and gradients with respect to the probe's trainable weights, on any backend."""
    weights = probe.weights

    def loss_of(*values):
        with keras.StatelessScope(state_mapping=list(zip(weights, values))):
            return probe.loss(probe.layer(xb), yb)

    loss, grads = value_and_grad(loss_of, *[w.value for w in weights])
    return loss, list(grads)


def plot_gradient_norms(curves, title, path=None):
    """Log-scale ||dL/dh_t|| against the distance from the loss, one line per curve.

    `curves`: dict label -> `(steps,)` norms (step 0 first). Returns the matplotlib figure, saved
    to `path` as PNG when given.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.4, 3.8), dpi=100)
    for label, norms in curves.items():
        norms = np.asarray(norms)
        distance = np.arange(len(norms))[::-1]  # steps between h_t and the loss
        axes.semilogy(distance, np.maximum(norms, 1e-30), label=label)
    axes.set_xlabel("distance from the loss (steps back)")
    axes.set_ylabel("mean ||dL/dh_t||")
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    if path:
        figure.savefig(path)
    plt.close(figure)
    return figure
