"""Train the character-level Shakespeare model: `python -m trainers.generate`.

    python -m trainers.generate                 # defaults: about 60 minutes on a 2-core CPU (JAX)
    python -m trainers.generate --quick         # smoke run of a few minutes
    python -m trainers.generate --source tfds   # read TensorFlow Datasets' tiny_shakespeare instead
    python -m trainers.generate --evaluate --model saved_models/generate-shakespeare --text-file my.txt

Tiny Shakespeare (1,115,394 characters): the first 90% trains, the last 10% validates (nanoGPT's
shakespeare_char split). Each epoch cuts the training text into windows of `--sequence-length`
characters from a new random offset and learns to predict every next character. The reported
loss reads the whole validation text with the state carried from window to window (every
character sees all the text before it, as in generation), in nats per character, with bits per
character and perplexity.
"""

from trainers import cli  # noqa: I001 - sets the environment before TensorFlow/Keras load

import math
import os
import time

import keras
import numpy as np

from models.char_lm import CharGenerator, CharLM, CharVocabulary, bits_per_character
from models.compiled import compile_function
from trainers import data, devices
from trainers.batching import fit_input

# Defaults, measured on a 2-core CPU with JAX: batch 32 x 100 trains more characters per second than
# 64 x 128 (3,411 against 2,929) and makes three times the updates per epoch; 10 epochs took 66 minutes.
DEFAULTS = {
    "epochs": 10, "batch_size": 32, "units": 512, "seed": 1337, "out": None, "max_examples": None,
    "layers": 2, "cell": "lstm", "embedding_dim": 64, "dropout": 0.2, "sequence_length": 100,
    "learning_rate": 3e-3, "clipnorm": 1.0, "patience": 3,
}
QUICK = {"epochs": 2, "max_examples": 100_000, "units": 64, "layers": 1, "embedding_dim": 16,
         "sequence_length": 64, "batch_size": 32}
SAMPLE_PROMPT = "ROMEO:\n"


def build_parser():
    notes = {"max_examples": "training characters to use (default all, 100000 with --quick)",
             "out": "default saved_models/generate-shakespeare, runs/generate-shakespeare-quick with --quick"}
    p = cli.parser("python -m trainers.generate", __doc__.splitlines()[0], DEFAULTS, QUICK, notes)

    def flag(name, help, **kwargs):
        dest = name[2:].replace("-", "_")
        p.add_argument(name, help=f"{help} ({cli.default_text(dest, DEFAULTS, QUICK)})", **kwargs)

    p.add_argument("--source", choices=["keras", "tfds"], default="keras",
                   help="corpus reader: shakespeare.txt through the Keras cache (default) or TFDS tiny_shakespeare")
    p.add_argument("--text-file", help="with --evaluate: a UTF-8 text file to score")
    flag("--cell", "recurrent cell", choices=["lstm", "gru"])
    flag("--layers", "stacked recurrent layers", type=cli.positive_int)
    flag("--embedding-dim", "character embedding size", type=cli.positive_int)
    flag("--dropout", "dropout after the embedding and each recurrent layer", type=float)
    flag("--sequence-length", "characters per training window", type=cli.positive_int)
    flag("--learning-rate", "initial Adam learning rate, cosine-decayed to 5%%", type=cli.positive_float)
    flag("--clipnorm", "gradient clipping norm", type=cli.positive_float)
    flag("--patience", "epochs without a better validation loss before stopping", type=cli.positive_int)
    return p


class Windows(keras.utils.PyDataset):
    """`(inputs (batch, length), targets (batch, length))` windows of a character-id array; the
    targets are the inputs shifted by one. Each epoch starts the cut at a new seeded random
    offset (so window edges move) and shuffles the windows; `shuffle=False` keeps offset 0 and
    the text's order."""

    def __init__(self, ids, length, batch_size, seed=0, shuffle=True, **kwargs):
        super().__init__(**kwargs)
        self.ids, self.length, self.batch_size = np.asarray(ids, "int32"), length, batch_size
        self.seed, self.shuffle, self.epoch = seed, shuffle, 0
        if len(self.ids) < length + 2:
            raise cli.UsageError(f"the text has {len(self.ids)} characters, fewer than one window of {length + 1}")
        self._plan()

    def _plan(self):
        rng = np.random.default_rng(self.seed + self.epoch)
        offset = int(rng.integers(self.length)) if self.shuffle else 0
        starts = np.arange(offset, len(self.ids) - self.length - 1, self.length)
        if self.shuffle:
            rng.shuffle(starts)
        batches = len(starts) // self.batch_size if self.shuffle else math.ceil(len(starts) / self.batch_size)
        self.starts = [starts[i * self.batch_size : (i + 1) * self.batch_size] for i in range(max(batches, 1))]

    def __len__(self):
        return len(self.starts)

    def __getitem__(self, index):
        rows = self.starts[index][:, None] + np.arange(self.length + 1)[None]  # (batch, length + 1)
        window = self.ids[rows]
        return window[:, :-1], window[:, 1:]

    def on_epoch_end(self):
        self.epoch += 1
        self._plan()


def text_loss(model, ids, streams=32, chunk=256):
    """Mean cross-entropy in nats per character of `ids` under `model`, every character predicted
    from all the text before it within its stream: the text is cut into `streams` contiguous
    parts read side by side in chunks of `chunk` characters, the state carried between chunks.
    Only the first character of each part has no context and is not scored."""
    ids = np.asarray(ids, "int32")
    streams = max(1, min(streams, (len(ids) - 1) // 2))
    per = (len(ids) - 1) // streams  # characters predicted per stream
    inputs = ids[: streams * per].reshape(streams, per)
    targets = ids[1 : streams * per + 1].reshape(streams, per)

    def chunk_loss(x, y, mask, *states):
        logits, states = model.run(x, list(states), mask=mask)
        nll = keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)  # (streams, chunk)
        return (keras.ops.sum(nll * keras.ops.cast(mask, nll.dtype)), *states)

    step = compile_function(chunk_loss, model.weights)
    states = [keras.ops.convert_to_numpy(s) for s in model.initial_states(streams)]
    total = 0.0
    for start in range(0, per, chunk):
        x = np.zeros((streams, chunk), "int32")
        y = np.zeros((streams, chunk), "int32")
        mask = np.zeros((streams, chunk), bool)
        width = min(chunk, per - start)
        x[:, :width], y[:, :width] = inputs[:, start : start + width], targets[:, start : start + width]
        mask[:, :width] = True
        nll, *states = step(x, y, mask, *states)
        total += float(nll)
    return total / (streams * per)


def loss_report(nats):
    """`{"nats_per_char", "bits_per_char", "perplexity"}` of a loss in nats per character."""
    return {"nats_per_char": round(nats, 4), "bits_per_char": round(float(bits_per_character(nats)), 4),
            "perplexity": round(math.exp(nats), 3)}


def print_loss(name, report, characters, unknown=0):
    extra = f"; {unknown} characters outside the vocabulary skipped" if unknown else ""
    print(f"{name} ({characters} characters): {report['nats_per_char']:.4f} nats/char, "
          f"{report['bits_per_char']:.4f} bits/char, perplexity {report['perplexity']:.3f}{extra}")


def evaluate(args):
    if not args.model:
        raise cli.UsageError("--evaluate needs --model DIR (for example saved_models/generate-shakespeare)")
    if not args.text_file:
        raise cli.UsageError("--evaluate needs --text-file FILE (UTF-8 text)")
    if not os.path.isfile(args.text_file):
        raise cli.UsageError(f"text file {args.text_file!r} does not exist")
    try:  # before the model: a bad file fails at once
        with open(args.text_file, encoding="utf-8") as handle:
            text = handle.read()
    except UnicodeDecodeError:
        raise cli.UsageError(f"text file {args.text_file!r} is not UTF-8 text") from None
    generator = CharGenerator.load(args.model)
    ids, unknown = generator.vocabulary.encode(text)
    if len(ids) < 2:
        raise cli.UsageError(f"text file {args.text_file!r} has fewer than 2 characters the model knows")
    print_loss(os.path.basename(args.text_file), loss_report(text_loss(generator.model, ids)), len(text), unknown)
    return 0


def train(args):
    checkpoints = cli.RunCheckpoints(args)  # first: refuses a clash with an interrupted run at once
    keras.utils.set_random_seed(args.seed)
    cli.flush_denormals()
    started = time.time()
    corpus = data.load_shakespeare(args.source)
    train_text, val_text = corpus["train"], corpus["validation"]
    if args.max_examples:
        train_text = train_text[: args.max_examples]
        val_text = val_text[: max(args.max_examples // 9, 10 * args.sequence_length)]
    vocabulary = CharVocabulary.build(train_text)
    train_ids, _ = vocabulary.encode(train_text)
    val_ids, val_unknown = vocabulary.encode(val_text)
    train_data = Windows(train_ids, args.sequence_length, args.batch_size, args.seed)
    val_data = Windows(val_ids, args.sequence_length, args.batch_size, shuffle=False)
    print(f"Tiny Shakespeare ({args.source}): train {len(train_text)} / validation {len(val_text)} characters, "
          f"vocabulary {len(vocabulary)} characters; {len(train_data)} batches of {args.batch_size} x "
          f"{args.sequence_length} per epoch")

    scope, hardware = devices.setup(args)
    with scope:  # --data-parallel (TensorFlow) builds the model inside its strategy
        model = CharLM(len(vocabulary), args.embedding_dim, args.units, args.layers, args.cell, args.dropout,
                       args.rnn_impl)
        model.build()
        schedule = keras.optimizers.schedules.CosineDecay(args.learning_rate, args.epochs * len(train_data), alpha=0.05)
        model.compile(keras.optimizers.Adam(schedule, clipnorm=args.clipnorm),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    callbacks = checkpoints.callbacks(args.patience)
    fit_start = time.time()
    # shuffle=False: the batches shuffle themselves each epoch (Keras would only reorder them again)
    model.fit(fit_input(train_data), shuffle=False, validation_data=fit_input(val_data), epochs=args.epochs,
              callbacks=callbacks, verbose=1)
    train_seconds = time.time() - fit_start
    checkpoints.restore_best(model)

    validation = loss_report(text_loss(model, val_ids))
    print_loss("validation, full context", validation, len(val_text), val_unknown)
    generator = CharGenerator(model, vocabulary)
    sample_start = time.perf_counter()
    sample = generator.generate(SAMPLE_PROMPT, length=400, temperature=0.8, seed=args.seed)
    sample_seconds = time.perf_counter() - sample_start
    print(f"sample (temperature 0.8, seed {args.seed}, {400 / sample_seconds:.0f} characters/s):\n"
          f"{SAMPLE_PROMPT}{sample}")

    settings = {k: getattr(args, k) for k in DEFAULTS if k != "out"} | {"source": args.source, "quick": args.quick}
    card = {
        "task": "character-level language model (text generation)",
        "model": f"CharLM: embedding + {args.layers} x {args.cell.upper()} {args.units} (ours) + dense over characters",
        "corpus": {"name": "Tiny Shakespeare (karpathy/char-rnn)", **corpus["info"]},
        "split": {"rule": "first 90% train, last 10% validation", "train_characters": len(train_text),
                  "validation_characters": len(val_text)},
        "vocabulary": len(vocabulary),
        "settings": settings,
        "hardware": hardware,
        "parameters": int(model.count_params()),
        "training": checkpoints.record(),
        "validation": {**validation, "measured": "whole validation text, state carried across windows"},
        "sample": {"prompt": SAMPLE_PROMPT, "temperature": 0.8, "seed": args.seed, "text": sample},
    }
    generator.save(args.out, card)
    checkpoints.finish()
    print(f"training {train_seconds / 60:.1f} min (total {(time.time() - started) / 60:.1f} min); saved to {args.out}")
    return 0


def main(argv=None):
    args = cli.resolve(build_parser().parse_args(argv), DEFAULTS, QUICK)
    cli.default_out(args, "generate-shakespeare")
    if args.evaluate:
        return evaluate(args)
    if args.text_file:
        raise cli.UsageError("--text-file is only used with --evaluate")
    if not 0.0 <= args.dropout < 1.0:
        raise cli.UsageError(f"--dropout must be in [0, 1), got {args.dropout}")
    return train(args)


if __name__ == "__main__":
    cli.run(main)
