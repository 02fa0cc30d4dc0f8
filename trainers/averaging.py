"""Tail weight averaging (Polyak averaging of the last steps; "SWA", Izmailov et al., 2018).

The weights at the end of training are one noisy point of the last steps' random walk; their mean
over the tail of the run sits nearer the middle of the valley and tends to generalise better.
Keras' own `use_ema` with `SwapEMAWeights` fails at the end of `fit` on JAX (Keras 3.15), so this
small callback keeps the mean on the host instead.
"""

import keras
from keras import ops


class TailWeightAverage(keras.callbacks.Callback):
    """Running mean of the trainable weights over the last `fraction` of `total_steps`, sampled
    every `every` steps. After `fit`, `averaged()` gives the mean (a list of arrays in
    `model.trainable_weights` order) or `None` if no step was sampled (a run that stopped early).
    Steps are the optimizer's iteration count, which `BackupAndRestore` brings back, so a resumed
    run samples at the right steps (but averages only those it ran itself).

    Args:
        total_steps: the planned training steps (epochs x batches per epoch).
        fraction: the share of the last steps to average, in (0, 1].
        every: steps between two samples.
    """

    def __init__(self, total_steps, fraction=0.5, every=10):
        super().__init__()
        self.start = int(round(total_steps * (1.0 - fraction)))
        self.every = every
        self.total = None
        self.count = 0

    def on_train_batch_end(self, batch, logs=None):
        step = int(ops.convert_to_numpy(self.model.optimizer.iterations))  # steps done, this one included
        if step <= self.start or (step - self.start) % self.every:
            return
        weights = [ops.convert_to_numpy(v) for v in self.model.trainable_weights]
        self.total = weights if self.total is None else [t + w for t, w in zip(self.total, weights)]
        self.count += 1

    def averaged(self):
        return None if not self.count else [t / self.count for t in self.total]
