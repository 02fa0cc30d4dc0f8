"""Where a training step of the default translation model goes, and how much of its batches is padding.

    KERAS_BACKEND=jax python -m benchmarks.translate_step              # both reports
    KERAS_BACKEND=jax python -m benchmarks.translate_step --skip-padding --batch-size 64
    KERAS_BACKEND=jax python -m benchmarks.translate_step --skip-step --padding-batch-size 32

1. Parts of the step: `jax.value_and_grad` of the default `Seq2SeqAttention` (8,000 / 4,000
   pieces) cut after ever fewer parts (the whole model with its smoothed loss; without the output
   layer and loss; without attention; the encoder alone), on random ids of `--length` steps (the
   last two padding), jitted, median of `--rounds` calls; then `train_on_batch` of the compiled
   model (optimizer, clipping and metric included). JAX only: the parts are cut inside one
   `keras.StatelessScope`.
2. Padding: the share of padded source and target steps in `--padding-epochs` epochs of
   `trainers.translate`'s batches (its split and SentencePiece vocabularies, the corpus from
   `KERAS_HOME`), for widths rounded to multiples of 4, 2 and 1 and to the trainer's graded
   widths, with the number of batch shapes each one compiles over those epochs.
"""

import argparse

import numpy as np

from trainers.cli import positive_int

PARTS = ("whole step", "without output layer and loss", "without attention", "encoder only")


def part_loss(model, part, source, target_in, target_out):
    """The scalar whose gradient is timed for `part` (one of `PARTS`)."""
    from keras import ops

    if part == "whole step":
        return model.loss(target_out, model((source, target_in), training=True))  # the trainer's loss
    values, keys, mask, states = model.encode(source, training=True)
    if part == "encoder only":
        return ops.sum(values) + ops.sum(keys) + sum(ops.sum(s) for s in states)
    embedded = model.dropout(model.target_embedding(target_in), training=True)
    queries, *_ = model.decoder(embedded, initial_state=list(states), training=True)
    if part == "without attention":
        return ops.sum(queries) + ops.sum(keys)
    context, _ = model.attention(queries, values, values_mask=mask, keys=keys)
    return ops.sum(model.combine(ops.concatenate([context, queries], axis=-1)))


def step_parts(batch, length, rounds):
    """`{part: seconds}` for `PARTS` and `"train_on_batch"`."""
    import time

    import jax
    import keras

    from benchmarks.jax_backward import SOURCE_VOCABULARY, TARGET_VOCABULARY, default_model

    keras.utils.set_random_seed(0)
    model = default_model("translate")  # compiled as trainers.translate compiles it
    model.build()
    rng = np.random.default_rng(0)
    source = rng.integers(1, SOURCE_VOCABULARY, (batch, length)).astype("int32")
    target = rng.integers(1, TARGET_VOCABULARY, (batch, length + 1)).astype("int32")
    source[:, length - 2:], target[:, length - 1:] = 0, 0
    batch_arrays = (source, target[:, :-1], target[:, 1:])
    variables = model.trainable_variables

    def median_seconds(call):
        jax.block_until_ready(call())  # compile
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            jax.block_until_ready(call())
            times.append(time.perf_counter() - start)
        return float(np.median(times))

    seconds = {}
    for part in PARTS:
        def loss(values, *arrays, part=part):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return part_loss(model, part, *arrays)

        gradient = jax.jit(jax.value_and_grad(loss))
        values = [v.value for v in variables]
        seconds[part] = median_seconds(lambda: gradient(values, *batch_arrays))
    x, y = (source, target[:, :-1]), target[:, 1:]
    seconds["train_on_batch"] = median_seconds(lambda: model.train_on_batch(x, y))
    return seconds


def padding_shares(batch_size, epochs):
    """Rows `(widths, source padding share, target padding share, batch shapes)` of `epochs` epochs
    of `trainers.translate`'s training batches of `batch_size`, for widths rounded up to multiples
    of 4, 2 and 1 and to `trainers.batching.graded_width` (the trainer's); shapes are counted over
    all the epochs (each new one is compiled once)."""
    from runtime.text import bucket
    from trainers import translate
    from trainers.batching import graded_width

    config = translate.TranslateConfig()
    pairs, _ = translate.load_pairs(config)
    train_pairs = translate.split_pairs(pairs, config.seed)[0]
    vocabularies = [translate.build_vocabulary(config, [translate.tokenize(p[side]) for p in train_pairs], size)
                    for side, size in ((0, config.source_vocab), (1, config.target_vocab))]
    sources, targets = translate.encode_pairs(train_pairs, *vocabularies, config.max_length)
    source_lengths = np.array([len(s) for s in sources])
    target_lengths = np.array([len(t) for t in targets]) - 1  # the decoder reads [START] ... , predicts ... [END]
    batches = translate.pair_batches(sources, targets, batch_size, config.seed)  # the trainer's batches
    plans = []
    for _ in range(epochs):
        plans.append(list(batches.batches))
        batches.on_epoch_end()
    kept = np.concatenate([b for plan in plans for b in plan])  # a ragged last batch is left out of training
    roundings = {"multiple of 4": lambda n: bucket(n, 4), "multiple of 2": lambda n: bucket(n, 2),
                 "exact": lambda n: n, "graded (trainer)": graded_width}
    rows = []
    for name, width in roundings.items():
        source_area = sum(width(source_lengths[b].max()) * len(b) for plan in plans for b in plan)
        target_area = sum(width(target_lengths[b].max()) * len(b) for plan in plans for b in plan)
        shapes = {(width(source_lengths[b].max()), width(target_lengths[b].max())) for plan in plans for b in plan}
        rows.append((name, 1 - source_lengths[kept].sum() / source_area,
                     1 - target_lengths[kept].sum() / target_area, len(shapes)))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=positive_int, default=128)
    parser.add_argument("--length", type=positive_int, default=12, help="source and target steps of the random batch")
    parser.add_argument("--rounds", type=positive_int, default=15)
    parser.add_argument("--skip-padding", action="store_true", help="only the parts of the step (no corpus needed)")
    parser.add_argument("--skip-step", action="store_true", help="only the padding report")
    parser.add_argument("--padding-batch-size", type=positive_int, default=64, help="batch of the padding report")
    parser.add_argument("--padding-epochs", type=positive_int, default=6, help="epochs of the padding report")
    args = parser.parse_args(argv)
    if args.skip_step and args.skip_padding:
        parser.error("--skip-step and --skip-padding together leave nothing to report")
    if args.length < 3:
        parser.error("--length must be at least 3 (the last two steps are padding)")
    import keras

    if keras.backend.backend() != "jax":
        raise SystemExit(f"error: this benchmark cuts the step with JAX; run it with KERAS_BACKEND=jax "
                         f"(now {keras.backend.backend()})")
    if not args.skip_step:
        seconds = step_parts(args.batch_size, args.length, args.rounds)
        print(f"batch {args.batch_size}, {args.length} source and target steps")
        print("| part | ms | share of the whole step |\n|---|---:|---:|")
        for part, s in seconds.items():
            print(f"| {part} | {1000 * s:.1f} | {s / seconds['whole step']:.0%} |")
    if not args.skip_padding:
        print(f"\nbatches of {args.padding_batch_size}, {args.padding_epochs} epochs")
        print("| widths | source steps padded | target steps padded | batch shapes |\n|---|---:|---:|---:|")
        for widths, source, target, shapes in padding_shares(args.padding_batch_size, args.padding_epochs):
            print(f"| {widths} | {source:.1%} | {target:.1%} | {shapes} |")


if __name__ == "__main__":
    main()
