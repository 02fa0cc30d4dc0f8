"""Tail weight averaging (Polyak averaging of the last steps; "SWA", Izmailov et al., 2018).

The weights at the end of training are one noisy point of the last steps' random walk; their mean
over the tail of the run sits nearer the middle of the valley and tends to generalise better.
Keras' own `use_ema` with `SwapEMAWeights` fails at the end of `fit` on JAX (Keras 3.15), so this
small callback keeps the means on the host instead. How long a tail to average is chosen on
validation (`choose_average`), among the tails asked for and the best checkpoint itself.
"""

import keras
from keras import ops

from trainers.batching import fit_input


class TailWeightAverage(keras.callbacks.Callback):
    """Running means of the trainable weights over the last `fractions` of `total_steps`, sampled
    every `every` steps. After `fit`, `averaged(fraction)` gives one mean (a list of arrays in
    `model.trainable_weights` order) or `None` if no step of that tail was sampled (a run that
    stopped early). Steps are the optimizer's iteration count, which `BackupAndRestore` brings back,
    so a resumed run samples at the right steps (but averages only those it ran itself).

    Args:
        total_steps: the planned training steps (epochs x batches per epoch).
        fractions: the shares of the last steps to average, each in (0, 1]; one mean each.
        every: steps between two samples.
    """

    def __init__(self, total_steps, fractions=(0.5,), every=10):
        super().__init__()
        self.fractions = tuple(fractions)
        self.starts = {f: int(round(total_steps * (1.0 - f))) for f in self.fractions}
        self.every = every
        self.totals = dict.fromkeys(self.fractions)
        self.counts = dict.fromkeys(self.fractions, 0)

    def on_train_batch_end(self, batch, logs=None):
        step = int(ops.convert_to_numpy(self.model.optimizer.iterations))  # steps done, this one included
        due = [f for f, start in self.starts.items() if step > start and not (step - start) % self.every]
        if not due:
            return
        weights = [ops.convert_to_numpy(v) for v in self.model.trainable_weights]
        for f in due:
            total = self.totals[f]
            self.totals[f] = weights if total is None else [t + w for t, w in zip(total, weights)]
            self.counts[f] += 1

    def averaged(self, fraction=None):
        """The mean over the last `fraction` of the steps (default: the first of `fractions`)."""
        fraction = self.fractions[0] if fraction is None else fraction
        count = self.counts[fraction]
        return None if not count else [t / count for t in self.totals[fraction]]


def tail_name(fraction):
    return f"last {round(fraction * 100)}%"


def choose_average(model, averager, validation_data):
    """Keep whichever has the lowest loss on `validation_data` (a `LengthBatches`): the best
    checkpoint's weights (in `model` now) or one of `averager`'s tail means, and put it in `model`.
    Returns the card's record of the comparison."""
    def validation_loss(model):
        return model.evaluate(fit_input(validation_data), verbose=0, return_dict=True)["loss"]

    weights = model.trainable_weights
    losses = {"best checkpoint": validation_loss(model)}
    kept = [ops.convert_to_numpy(v) for v in weights]
    best, best_weights = "best checkpoint", kept
    for fraction in averager.fractions:
        averaged = averager.averaged(fraction)
        if averaged is None:
            continue
        for variable, value in zip(weights, averaged):
            variable.assign(value)
        name = tail_name(fraction)
        losses[name] = validation_loss(model)
        if losses[name] < losses[best]:
            best, best_weights = name, averaged
    for variable, value in zip(weights, best_weights):
        variable.assign(value)
    print("validation loss: " + ", ".join(f"{name} {loss:.4f}" for name, loss in losses.items())
          + f": keeping the {best} weights")
    if len(losses) == 1:
        return {"used": False, "reason": "training stopped before the averaged steps"}
    return {"used": best != "best checkpoint", "kept": best,
            "samples": {tail_name(f): averager.counts[f] for f in averager.fractions},
            "val_loss": {name: round(loss, 4) for name, loss in losses.items()}}
