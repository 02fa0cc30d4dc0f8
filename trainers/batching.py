"""Batches of examples of similar length, for recurrent models on variable-length text.

Padding a batch to its longest example wastes the recurrent loop's time on padding; sorting the
whole corpus by length makes batches too uniform to learn from. The middle road used here: each
epoch shuffles the examples, sorts them by length within chunks of `chunk_batches` batches, cuts
batches and shuffles the order of the batches. Padded widths are rounded up to a multiple so
that XLA (JAX, TensorFlow) compiles only a few batch shapes.
"""

import keras
import numpy as np


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


class LengthBatches(keras.utils.PyDataset):
    """A `PyDataset` of batches of similar-length examples.

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

    def on_epoch_end(self):
        self.epoch += 1
        self._plan()
