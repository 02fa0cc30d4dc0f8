"""JAX: one training step of the character model with our LSTM backward pass and without it.

    KERAS_BACKEND=jax python -m benchmarks.lstm_backward                 # batch 32 and 64
    KERAS_BACKEND=jax python -m benchmarks.lstm_backward --batch-sizes 32 --rounds 20

Builds the default `CharLM` (2 x LSTM 512, the `trainers.generate` model) twice with the same
weights: one traces its training step through `layers/jax_recurrent.py` (the loop computes only the
state and gate gradients; weight and input gradients are one product over all steps), the other
through the generic loop (autodiff of `lax.scan`). The two then alternate, step for step, on the
same random batch of 100 characters, so that a change in the machine's speed hits both; the
report is each one's median step time and the median and range of the per-round speed-up.
"""

import argparse

import numpy as np

from trainers.cli import positive_int

SEQUENCE_LENGTH, VOCABULARY = 100, 65


def compiled_model(batch, use_kernel):
    """The default `CharLM`, compiled as the trainer does and traced with or without the kernel."""
    import keras

    from layers import jax_recurrent
    from models.char_lm import CharLM, CharLMConfig

    keras.utils.set_random_seed(0)
    model = CharLM(CharLMConfig(vocab_size=VOCABULARY))
    model.compile(optimizer=keras.optimizers.Adam(3e-3, clipnorm=1.0),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    ids = np.random.default_rng(0).integers(0, VOCABULARY, (batch, SEQUENCE_LENGTH + 1))
    applies = jax_recurrent.applies
    if not use_kernel:  # the training step is traced on its first call, and kept
        jax_recurrent.applies = lambda *args: False
    try:
        for _ in range(3):
            model.train_on_batch(ids[:, :-1], ids[:, 1:])
    finally:
        jax_recurrent.applies = applies
    return model, (ids[:, :-1], ids[:, 1:])


def paired_steps(batch, rounds):
    """`{"kernel": seconds per step, "generic": ..., "speedups": per-round generic / kernel}`."""
    import time

    models = {name: compiled_model(batch, name == "kernel") for name in ("kernel", "generic")}
    seconds = {name: [] for name in models}
    for r in range(rounds):
        for name in (("kernel", "generic") if r % 2 else ("generic", "kernel")):  # alternate who goes first
            model, (x, y) = models[name]
            start = time.perf_counter()
            model.train_on_batch(x, y)
            seconds[name].append(time.perf_counter() - start)
    return {**{name: float(np.median(s)) for name, s in seconds.items()},
            "speedups": [g / k for k, g in zip(seconds["kernel"], seconds["generic"])]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=positive_int, nargs="+", default=[32, 64])
    parser.add_argument("--rounds", type=positive_int, default=12, help="paired steps per batch size")
    args = parser.parse_args(argv)
    import keras

    if keras.backend.backend() != "jax":
        raise SystemExit(f"error: this benchmark is of the JAX kernel; run it with KERAS_BACKEND=jax "
                         f"(now {keras.backend.backend()})")
    print("| batch | ours, own backward (ms/step) | ours, autodiff of the scan "
          "| speed-up per round, median (min-max) |")
    print("|---:|---:|---:|---:|")
    for batch in args.batch_sizes:
        r = paired_steps(batch, args.rounds)
        s = r["speedups"]
        print(f"| {batch} | {1000 * r['kernel']:.0f} | {1000 * r['generic']:.0f} | "
              f"**{np.median(s):.2f}** ({min(s):.2f}-{max(s):.2f}) |", flush=True)


if __name__ == "__main__":
    main()
