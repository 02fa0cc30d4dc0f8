"""Batches of examples of similar length, for recurrent models on variable-length text.

Padding a batch to its longest example wastes the recurrent loop's time on padding; sorting the
whole corpus by length makes batches too uniform to learn from. The middle road used here: each
epoch shuffles the examples, sorts them by length within chunks of `chunk_batches` batches, cuts
batches and shuffles the order of the batches. Padded widths are rounded up to a multiple so
that XLA (JAX, TensorFlow) compiles only a few batch shapes.

Batches of varying width must say so to TensorFlow: `fit_input` is the one place where a
`PyDataset` becomes what `fit` and `evaluate` read on the current backend.
"""

import keras
import numpy as np

from runtime.text import bucket


def pad(sequences, multiple=1, extra=0, width=None):
    """Zero-padded int32 matrix `(len(sequences), width)`.

    The width is the longest sequence rounded up so that `width - extra` is a multiple of
    `multiple` (with `extra=1`, a target sequence shifted by one step still has a round length);
    `width` overrides it.
    """
    if width is None:
        longest = max((len(s) for s in sequences), default=0)
        width = -(-(longest - extra) // multiple) * multiple + extra
    out = np.zeros((len(sequences), width), dtype=np.int32)
    for row, sequence in enumerate(sequences):
        out[row, : len(sequence)] = sequence[:width]
    return out


def graded_width(steps):
    """`steps` rounded up to a grid that is fine where batches are common and coarse where they are
    rare (even up to 14, a multiple of 4 up to 24, of 8 beyond), so that XLA compiles few batch
    shapes for little padding: over 6 epochs of translation batches of 32, 25 shapes instead of the
    61 of even widths, for 1.4% more padded steps (`benchmarks/RESULTS.md`, session 18)."""
    return bucket(steps, 2 if steps <= 14 else 4 if steps <= 24 else 8)


def fit_input(batches):
    """What `model.fit` / `model.evaluate` should read from the `PyDataset` `batches`.

    JAX and PyTorch take each batch as it comes, whatever its shape: `batches` is returned as is.
    On TensorFlow, Keras' `PyDataset` adapter builds a `tf.data` pipeline whose element shapes
    it guesses from the first two batches, so a later batch of another width fails with
    "generator yielded an element of shape (32, 12) where (None, 8) was expected". Our
    datasets (`SeededEpochs`: `LengthBatches`, the character windows) are therefore wrapped
    here in a `tf.data.Dataset` that declares every axis as variable (`tf_dataset`), also when
    their widths are fixed: one TensorFlow process and several workers (`trainers.cluster`)
    then read the same batches in the same order. Each pass after the first starts with
    `batches.on_epoch_end()`, as Keras does for a `PyDataset`.
    """
    if keras.backend.backend() != "tensorflow" or not isinstance(batches, SeededEpochs):
        return batches
    return tf_dataset(batches)


def tf_dataset(batches):
    """A `tf.data.Dataset` of the batches of the `PyDataset` `batches`, every axis declared
    variable (`fit_input`; the multi-worker input of `trainers.cluster`)."""
    import tensorflow as tf

    def spec(array):  # (batch, ...) -> every axis variable
        return tf.TensorSpec((None,) * np.ndim(array), tf.as_dtype(np.asarray(array).dtype))

    signature = keras.tree.map_structure(spec, batches[0])
    passes = [0]

    def generate():
        if passes[0]:
            batches.on_epoch_end()
        passes[0] += 1
        for index in range(len(batches)):
            yield batches[index]

    dataset = tf.data.Dataset.from_generator(generate, output_signature=signature)
    return dataset.apply(tf.data.experimental.assert_cardinality(len(batches))).prefetch(tf.data.AUTOTUNE)


class SeededEpochs(keras.utils.PyDataset):
    """A `PyDataset` whose batches are planned anew for each epoch, from `seed + epoch`
    (`_plan`); `on_epoch_end` moves to the next plan. `skip_epochs` moves on several at once: a
    run resumed at epoch e then trains on the batches an uninterrupted run had there
    (`trainers.training.ResumedDataOrder`)."""

    epoch = 0

    def _plan(self):
        raise NotImplementedError

    def on_epoch_end(self):
        self.skip_epochs(1)

    def skip_epochs(self, count):
        if count:
            self.epoch += count
            self._plan()


class LengthBatches(SeededEpochs):
    """A `PyDataset` of batches of similar-length examples; their widths vary (`fit_input`).

    Args:
        lengths: length of every example, `(n,)`.
        make_batch: `make_batch(indices) -> batch` builds one batch (inputs, targets) from the
            indices of its examples.
        batch_size: examples per batch.
        seed: seed of the shuffling; epoch e uses `seed + e`.
        shuffle: shuffle and drop a ragged last batch (training); otherwise keep the order of
            lengths within chunks and every example (evaluation).
        chunk_batches: batches per sorting chunk.
    """


    def __init__(self, lengths, make_batch, batch_size, seed=0, shuffle=True, chunk_batches=64, **kwargs):
        super().__init__(**kwargs)
        self.lengths = np.asarray(lengths)
        self.make_batch = make_batch
        self.batch_size, self.seed, self.shuffle, self.chunk_batches = batch_size, seed, shuffle, chunk_batches
        self.epoch = 0
        self._plan()

    def _plan(self):
        rng = np.random.default_rng(self.seed + self.epoch)
        n = len(self.lengths)
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        chunks = np.array_split(order, max(1, n // (self.chunk_batches * self.batch_size)))
        order = np.concatenate([c[np.argsort(self.lengths[c], kind="stable")] for c in chunks]) if n else order
        self.batches = [order[i : i + self.batch_size] for i in range(0, n, self.batch_size)]
        if self.shuffle:
            if len(self.batches) > 1 and len(self.batches[-1]) < self.batch_size:
                self.batches.pop()  # a ragged last batch would cost one more compilation
            rng.shuffle(self.batches)

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, index):
        return self.make_batch(self.batches[index])
