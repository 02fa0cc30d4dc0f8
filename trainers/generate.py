"""Train the character-level Shakespeare model: `python -m trainers.generate`.

    python -m trainers.generate                 # defaults: about 21 minutes on a 2-core CPU (JAX)
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

import dataclasses
import math
import os
import time

import keras
import numpy as np

from models.char_lm import CharLM, CharLMConfig, CharVocabulary, bits_per_character
from models.config import setting
from models.generator import CharGenerator
from trainers import data
from trainers import cluster
from trainers.batching import SeededEpochs
from trainers.training import TrainingRun, data_parallel_setting, precision_setting, training_setting

SAMPLE_PROMPT = "ROMEO:\n"


@dataclasses.dataclass
class GenerateConfig(CharLMConfig):
    """Every setting of a character-model run: the network's (`CharLMConfig`), then these.

    Defaults measured on a 2-core CPU with JAX: batch 16 x 100, 10 epochs, 27.2 minutes idle with
    the native LSTM kernel to validation 1.4105 nats per character (7 epochs: 20.1 minutes, 1.4137-
    1.4195 in four runs; the issue-20 defaults, batch 32 and 10 epochs, took 48.1 minutes on that
    machine): half the batch costs 0.55 of a step and, with twice the updates, an epoch of batch 16
    learns about as much as 1.5 epochs of batch 32 (`benchmarks/RESULTS.md`, sessions 17 and 28).
    """

    source: str = setting("keras", "corpus reader: shakespeare.txt through the Keras cache or TFDS tiny_shakespeare",
                          choices=("keras", "tfds"))
    sequence_length: int = setting(100, "characters per training window", quick=64)
    epochs: int = training_setting("epochs", 10, quick=2)
    batch_size: int = training_setting("batch_size", 16)
    learning_rate: float = training_setting("learning_rate", 3e-3)
    clipnorm: float = training_setting("clipnorm", 1.0)
    patience: int = training_setting("patience", 3)
    seed: int = training_setting("seed", 1337)
    max_examples: int | None = setting(None, "training characters to use", kind="positive_int", quick=100_000,
                                       shown="all")
    precision: str = precision_setting()
    data_parallel: bool = data_parallel_setting()


def build_parser():
    return cli.config_parser(GenerateConfig, "python -m trainers.generate", __doc__.splitlines()[0],
                             "saved_models/generate-shakespeare", "a UTF-8 text file to score",
                             test_file_aliases=("--text-file",))


class Windows(SeededEpochs):
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


def loss_report(nats):
    """`{"nats_per_char", "bits_per_char", "perplexity"}` of a loss in nats per character."""
    return {"nats_per_char": round(nats, 4), "bits_per_char": round(float(bits_per_character(nats)), 4),
            "perplexity": round(math.exp(nats), 3)}


def print_loss(name, report, characters, unknown=0):
    extra = f"; {unknown} characters outside the vocabulary skipped" if unknown else ""
    print(f"{name} ({characters} characters): {report['nats_per_char']:.4f} nats/char, "
          f"{report['bits_per_char']:.4f} bits/char, perplexity {report['perplexity']:.3f}{extra}")


def evaluate(config, args):
    text = cli.read_text(args.test_file, "text file")  # before the model: a bad file fails at once
    generator = CharGenerator.load(args.model)
    ids, unknown = generator.vocabulary.encode(text)
    if len(ids) < 2:
        raise cli.UsageError(f"text file {args.test_file!r} has fewer than 2 characters the model knows")
    print_loss(os.path.basename(args.test_file), loss_report(generator.text_loss(ids)), len(text), unknown)
    return 0


def train(config, args):
    # first: starts the multi-process engine, and refuses a clash with an interrupted run at once
    run = TrainingRun(config, args.out, args.resume, cluster.from_args(args))
    corpus = data.load_shakespeare(config.source)
    train_text, val_text = corpus["train"], corpus["validation"]
    if config.max_examples:
        train_text = train_text[: config.max_examples]
        val_text = val_text[: max(config.max_examples // 9, 10 * config.sequence_length)]
    vocabulary = CharVocabulary.build(train_text)
    config = dataclasses.replace(config, vocab_size=len(vocabulary))
    train_ids, _ = vocabulary.encode(train_text)
    val_ids, val_unknown = vocabulary.encode(val_text)
    train_data = Windows(train_ids, config.sequence_length, config.batch_size, config.seed)
    val_data = Windows(val_ids, config.sequence_length, config.batch_size, shuffle=False)
    print(f"Tiny Shakespeare ({config.source}): train {len(train_text)} / validation {len(val_text)} characters, "
          f"vocabulary {len(vocabulary)} characters; {len(train_data)} batches of {config.batch_size} x "
          f"{config.sequence_length} per epoch")

    model = run.fit(lambda: CharLM(config), train_data, val_data,
                    keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    generator = CharGenerator(model, vocabulary)
    validation = loss_report(generator.text_loss(val_ids))
    print_loss("validation, full context", validation, len(val_text), val_unknown)
    sample_start = time.perf_counter()
    sample = generator.generate(SAMPLE_PROMPT, length=400, temperature=0.8, seed=config.seed)
    print(f"sample (temperature 0.8, seed {config.seed}, {400 / (time.perf_counter() - sample_start):.0f} "
          f"characters/s):\n{SAMPLE_PROMPT}{sample}")
    run.save(generator, run.card(model, **card_entries(config, corpus, train_text, val_text, validation, sample)))
    return 0


def card_entries(config, corpus, train_text, val_text, validation, sample):
    """What the card says of this task besides the shared entries (`TrainingRun.card`)."""
    return {"task": "character-level language model (text generation)",
            "model": f"CharLM: embedding + {config.num_layers} x {config.cell.upper()} {config.units} + dense "
                     "over characters",
            "corpus": {"name": "Tiny Shakespeare (karpathy/char-rnn)", **corpus["info"]},
            "split": {"rule": "first 90% train, last 10% validation", "train_characters": len(train_text),
                      "validation_characters": len(val_text)},
            "vocabulary": config.vocab_size,
            "validation": {**validation, "measured": "whole validation text, state carried across windows"},
            "sample": {"prompt": SAMPLE_PROMPT, "temperature": 0.8, "seed": config.seed, "text": sample}}


def main(argv=None):
    args = build_parser().parse_args(argv)
    config = cli.config_from_args(GenerateConfig, args)
    cli.output_folders(args, "generate-shakespeare")
    return evaluate(config, args) if args.evaluate else train(config, args)


if __name__ == "__main__":
    cli.run(main)
