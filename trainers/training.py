"""The training skeleton every trainer shares.

- The training fields of a trainer's config (`training_setting`: epochs, batch size, learning
  rate, ... with one help text each; every trainer picks its own defaults), plus the precision
  and data-parallel fields (`trainers.devices`).
- `TrainingRun`: seed -> checkpoints -> devices -> model -> Adam with cosine decay and gradient
  clipping -> compile -> fit (checkpoints, early stopping) -> best weights -> card -> save.

A trainer's `train()` then tells only its task's story: data, model, `run.fit`, evaluation, card.
"""

import time

import keras

from models.config import setting
from trainers import cluster as clusters
from trainers import devices
from trainers.averaging import TailWeightAverage, choose_average
from trainers.batching import fit_input
from trainers.checkpoints import RunCheckpoints

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
TRAINING_FIELDS = {  # name: (help, kind)
    "epochs": ("most epochs to train", None),
    "batch_size": ("examples per batch", None),
    "learning_rate": ("initial Adam learning rate, cosine-decayed to 5%", None),
    "clipnorm": ("gradient clipping norm", None),
    "patience": ("epochs without a better validation loss before stopping", None),
    "seed": ("seed of the split, the shuffling and the weights", "int"),
    "max_examples": ("use a seeded random subset of this many examples", "positive_int"),
}


def training_setting(name, default, **kwargs):
    """The config field `name` of `TRAINING_FIELDS` with this trainer's default (and `quick=`...)."""
    help, kind = TRAINING_FIELDS[name]
    return setting(default, help, kind=kind, **kwargs)


def precision_setting():
    return setting("float32", "Keras dtype policy (the mixed ones pay off on a GPU)", choices=PRECISIONS)


def data_parallel_setting():
    return setting(False, "one model replica per device: keras.distribution.DataParallel on JAX, "
                          "MirroredStrategy on TensorFlow (not on torch)")


def flush_denormals(enable=True):
    """Flush subnormal floats to zero on the torch backend (XLA, so JAX, and TensorFlow already do).

    Near convergence some gradients and Adam moments become subnormal, and torch on a CPU then
    runs 10 to 25 times slower: the reversal task of tests/test_translate.py took 115 s instead
    of 4.4 s. Process-wide; a no-op on the other backends. Returns whether it was applied.
    """
    if keras.backend.backend() != "torch":
        return False
    import torch

    return bool(torch.set_flush_denormal(enable))


class TrainingRun:
    """One training run: made first (it refuses at once to clash with an interrupted run), then
    `fit`, then `card` and `save`.

    Args:
        config: the trainer's config (`epochs`, `batch_size`, `learning_rate`, `clipnorm`,
            `patience`, `seed`, `precision`, `data_parallel`, `rnn_impl` and the task's fields).
        out: the saved-model folder to write; its `checkpoints/` holds the run until then.
        resume: continue an interrupted run (`--resume`).
        cluster: this process's `trainers.cluster.Cluster` (`--processes`, torchrun, ...): with
            several processes, the backend's engine starts here, before anything else touches
            the backend; only process 0 writes the checkpoints and the model.
    """

    def __init__(self, config, out, resume=False, cluster=clusters.SINGLE):
        self.config, self.out, self.cluster = config, out, cluster
        self.engine = clusters.engine_for(cluster)  # started here: before anything else touches the backend
        self.checkpoints = RunCheckpoints(config.to_dict(), out, resume, writer=cluster.is_chief,
                                          writing=self.engine.writing, begin=False)
        self.engine.barrier("checkpoints read")  # every process has read them before process 0 writes
        self.checkpoints.begin()
        keras.utils.set_random_seed(config.seed)
        flush_denormals()
        self.started = time.time()
        self.hardware, self.fit_seconds, self.averaging = None, 0.0, "off"

    def fit(self, build_model, train_data, validation_data, loss, metrics=(), callbacks=(), average_tails=(),
            epochs=None):
        """Train the model `build_model()` returns (built: `BackupAndRestore` needs its weights)
        and return it with the weights of its best validation loss.

        The model is made and compiled inside the devices' scope (`--data-parallel` on
        TensorFlow); Adam's learning rate follows a cosine decay to 5% over the planned epochs,
        so the last epochs refine instead of bouncing. With `average_tails` (shares of the last
        steps, `trainers.averaging`), the mean weights of each tail are tried against the best
        checkpoint, and whichever has the lowest validation loss is kept (the card records it).
        `epochs` replaces the config's (a second stage of a run: `trainers.sentiment`'s student).
        `metrics` are names or functions: `compile` then makes their variables inside the devices'
        scope, as several devices and processes need (a metric object made before would not be).
        """
        c = self.config
        epochs = epochs or c.epochs
        averager = TailWeightAverage(epochs * len(train_data), average_tails) if average_tails else None
        callbacks = [*callbacks, averager] if averager else list(callbacks)
        callbacks.append(ResumedDataOrder(train_data))
        scope, self.hardware = devices.setup(c, self.engine)
        with scope:
            model = build_model()
            if not model.built:
                model.build()
            schedule = keras.optimizers.schedules.CosineDecay(c.learning_rate, epochs * len(train_data), alpha=0.05)
            model.compile(keras.optimizers.Adam(schedule, clipnorm=c.clipnorm), loss=loss, metrics=list(metrics))
        engine_callbacks = self.engine.prepare(model)  # first: they may change the logs the others read
        validation_data = self.engine.validation_input(validation_data)
        start = time.time()
        # shuffle=False: the batches shuffle themselves each epoch (Keras would only reorder them again)
        model.fit(fit_input(self.engine.train_input(train_data)), shuffle=False,
                  validation_data=fit_input(validation_data), epochs=epochs,
                  callbacks=engine_callbacks + self.checkpoints.callbacks(c.patience) + list(callbacks), verbose=1)
        self.fit_seconds = time.time() - start
        self.engine.barrier("fit done")  # process 0 has written the best checkpoint
        self.checkpoints.restore_best(model)
        if averager:
            self.averaging = choose_average(model, averager, validation_data)
        return self.engine.localize(model)  # what follows (evaluation, saving) runs in each process alone

    def card(self, model, /, **entries):
        """The model card: the task's `entries`, then the settings, hardware, parameter count and
        the record of the training (over every session of a resumed run)."""
        return {**entries, "settings": self.config.to_dict(), "hardware": self.hardware,
                "parameters": int(model.count_params()), "training": self.checkpoints.record(),
                "weight_average": self.averaging}

    def save(self, servable, card):
        """Save the trained model with its side files and `card`, then drop the checkpoints
        (process 0 only: the others trained the same weights)."""
        if not self.cluster.is_chief:
            print(f"training {self.fit_seconds / 60:.1f} min; {self.cluster.describe()}: process 0 saves the model")
            return
        servable.save(self.out, card)
        self.checkpoints.finish()
        print(f"training {self.fit_seconds / 60:.1f} min (total {(time.time() - self.started) / 60:.1f} min); "
              f"saved to {self.out}")


class ResumedDataOrder(keras.callbacks.Callback):
    """With `--resume`, Keras starts at the epoch after the last checkpoint; the training batches
    must move on as many epochs (`SeededEpochs.skip_epochs`: their order is seeded by the epoch),
    so that a resumed run trains on the batches of an uninterrupted one. Later epochs follow on
    by themselves."""

    def __init__(self, batches):
        super().__init__()
        self.batches, self.first = batches, True

    def on_epoch_begin(self, epoch, logs=None):
        if self.first and hasattr(self.batches, "skip_epochs"):
            self.batches.skip_epochs(epoch)
        self.first = False
