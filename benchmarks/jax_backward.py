"""JAX: one training step of a default model with our recurrent backward pass and without it.

    KERAS_BACKEND=jax python -m benchmarks.jax_backward                      # char model, batch 16 and 32
    KERAS_BACKEND=jax python -m benchmarks.jax_backward --model translate    # translation model, batch 64
    KERAS_BACKEND=jax python -m benchmarks.jax_backward --batch-sizes 32 --rounds 20

Builds a default model twice with the same weights, compiled from its trainer's defaults:
`charlm` is the `trainers.generate` model (2 x LSTM 512, 100 characters), `translate` the
`trainers.translate` one (bidirectional GRU 256 encoder, GRU 256 decoder with attention,
8,000 / 4,000 pieces, sentences of 4-24 pieces, padded).
One copy traces its training step through `layers/jax_recurrent.py` (the loop computes only the
state and gate gradients; weight and input gradients are one product over all steps), the other
through the generic loop (autodiff of `lax.scan`). The two then alternate, step for step, on the
same random batch, so that a change in the machine's speed hits both; the report is each one's
median step time and the median and range of the per-round speed-up.
"""

import argparse

import numpy as np

from trainers.cli import positive_int

CHAR_STEPS, CHAR_VOCABULARY = 100, 65
SOURCE_VOCABULARY, TARGET_VOCABULARY, LONGEST = 8000, 4000, 24


def default_model(name):
    """The default model of `trainers.generate` (`charlm`) or `trainers.translate` (`translate`),
    compiled as its trainer compiles it, from the trainer's config defaults (a constant learning
    rate in place of the cosine schedule: the same work per step)."""
    import keras

    if name == "charlm":
        from models.char_lm import CharLM
        from trainers.generate import GenerateConfig

        config = GenerateConfig(vocab_size=CHAR_VOCABULARY)
        model, loss, metrics = CharLM(config), keras.losses.SparseCategoricalCrossentropy(from_logits=True), []
    else:
        from models.seq2seq import Seq2SeqAttention, masked_accuracy, smoothed_masked_loss
        from trainers.translate import TranslateConfig

        config = TranslateConfig(source_vocab_size=SOURCE_VOCABULARY, target_vocab_size=TARGET_VOCABULARY)
        model, loss, metrics = Seq2SeqAttention(config), smoothed_masked_loss(config.label_smoothing), [masked_accuracy]
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate, clipnorm=config.clipnorm), loss=loss,
                  metrics=metrics)
    return model


def model_and_batch(name, batch):
    """`(model, (inputs, targets))`: `default_model(name)` and one random batch of its inputs."""
    rng = np.random.default_rng(0)
    model = default_model(name)
    if name == "charlm":
        ids = rng.integers(0, CHAR_VOCABULARY, (batch, CHAR_STEPS + 1))
        return model, (ids[:, :-1], ids[:, 1:])

    def padded(vocabulary):
        ids = rng.integers(1, vocabulary, (batch, LONGEST + 1))
        lengths = rng.integers(4, LONGEST + 1, (batch, 1))
        return np.where(np.arange(LONGEST + 1) < lengths, ids, 0)

    source, target = padded(SOURCE_VOCABULARY)[:, :-1], padded(TARGET_VOCABULARY)
    return model, ((source, target[:, :-1]), target[:, 1:])


def compiled_model(name, batch, use_kernel):
    """`model_and_batch`, its training step traced with or without the kernel."""
    import keras

    from layers import jax_recurrent

    keras.utils.set_random_seed(0)
    model, (x, y) = model_and_batch(name, batch)
    applies = jax_recurrent.applies
    if not use_kernel:  # the training step is traced on its first call, and kept
        jax_recurrent.applies = lambda *args: False
    try:
        for _ in range(3):
            model.train_on_batch(x, y)
    finally:
        jax_recurrent.applies = applies
    return model, (x, y)


def paired_steps(name, batch, rounds):
    """`{"kernel": seconds per step, "generic": ..., "speedups": per-round generic / kernel}`."""
    import time

    models = {kind: compiled_model(name, batch, kind == "kernel") for kind in ("kernel", "generic")}
    seconds = {kind: [] for kind in models}
    for r in range(rounds):
        for kind in (("kernel", "generic") if r % 2 else ("generic", "kernel")):  # alternate who goes first
            model, (x, y) = models[kind]
            start = time.perf_counter()
            model.train_on_batch(x, y)
            seconds[kind].append(time.perf_counter() - start)
    return {**{kind: float(np.median(s)) for kind, s in seconds.items()},
            "speedups": [g / k for k, g in zip(seconds["kernel"], seconds["generic"])]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("charlm", "translate"), default="charlm",
                        help="charlm: trainers.generate's model (LSTM); translate: trainers.translate's (GRU)")
    parser.add_argument("--batch-sizes", type=positive_int, nargs="+",
                        help="default: 16 and 32 for charlm, 64 for translate (the trainers' defaults first)")
    parser.add_argument("--rounds", type=positive_int, default=12, help="paired steps per batch size")
    args = parser.parse_args(argv)
    import keras

    if keras.backend.backend() != "jax":
        raise SystemExit(f"error: this benchmark is of the JAX kernel; run it with KERAS_BACKEND=jax "
                         f"(now {keras.backend.backend()})")
    batch_sizes = args.batch_sizes or ([16, 32] if args.model == "charlm" else [64])
    print(f"model: {args.model}")
    print("| batch | ours, own backward (ms/step) | ours, autodiff of the scan "
          "| speed-up per round, median (min-max) |")
    print("|---:|---:|---:|---:|")
    for batch in batch_sizes:
        r = paired_steps(args.model, batch, args.rounds)
        s = r["speedups"]
        print(f"| {batch} | {1000 * r['kernel']:.0f} | {1000 * r['generic']:.0f} | "
              f"**{np.median(s):.2f}** ({min(s):.2f}-{max(s):.2f}) |", flush=True)


if __name__ == "__main__":
    main()
