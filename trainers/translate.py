"""Train and score the Spanish -> English translator (or English -> Spanish).

    python -m trainers.translate                      # default run, then BLEU/chrF on the test split
    python -m trainers.translate --quick --out /tmp/translate-quick
    python -m trainers.translate --evaluate --model saved_models/translate-spa-eng --test-file f.tsv

Data: `spa-eng.zip` (Tatoeba via manythings.org/anki), normalised, duplicates dropped, split by
source sentence (seeded) so that no validation or test source occurs in training. Vocabularies and
the casing model come from the training split only. Scores are sacrebleu corpus BLEU and chrF of
the detokenised, cased output against the raw references (default 13a tokenisation,
case-sensitive); a source with several translations is scored against all of them.
"""

from trainers import cli  # noqa: I001 - first: sets environment variables read when Keras/TensorFlow load

import os
import time

import keras
import numpy as np
import sacrebleu

from models.text import TrueCaser, Vocabulary, tokenize
from models.translator import Seq2SeqAttention, Translator, masked_accuracy, masked_loss
from trainers import data, devices
from trainers.batching import LengthBatches, fit_input, pad

# Defaults, sized by measurement on a 2-core CPU with KERAS_BACKEND=jax: 8 epochs of about 5.8
# minutes, 48.5 minutes in all with the data and the scoring. A 10-epoch run took 70 minutes and
# lowered the validation loss by only 0.005 after epoch 8 (0.919 -> 0.915).
DEFAULTS = dict(
    epochs=8, batch_size=64, units=256, seed=42, out=None, max_examples=None,
    embedding_dim=128, source_vocab=16000, target_vocab=8000, min_count=2, max_length=20, dropout=0.2,
    learning_rate=2e-3, clipnorm=1.0, patience=2, beam_width=5,
)
LENGTH_PENALTIES = (0.0, 0.5, 1.0)  # alphas of beam search tried on the validation split after training
QUICK = dict(epochs=3, units=64, embedding_dim=64, max_examples=10000, source_vocab=3000, target_vocab=2000,
             max_length=12, batch_size=32, learning_rate=5e-3)
VALIDATION_FRACTION = TEST_FRACTION = 0.03  # of the unique source sentences


def build_parser():
    notes = {"out": "default saved_models/translate-DIRECTION, runs/translate-DIRECTION-quick with --quick",
             "max_examples": f"default all, {QUICK['max_examples']} with --quick"}
    p = cli.parser("python -m trainers.translate", __doc__.split("\n\n")[0], DEFAULTS, QUICK, notes)

    def flag(name, help, **kwargs):
        dest = name[2:].replace("-", "_")
        p.add_argument(name, help=f"{help} ({cli.default_text(dest, DEFAULTS, QUICK)})", **kwargs)

    p.add_argument("--direction", choices=["spa-eng", "eng-spa"], default="spa-eng",
                   help="source-target languages (default spa-eng)")
    p.add_argument("--cell", choices=["gru", "lstm"], default="gru", help="recurrent cell (default gru)")
    flag("--embedding-dim", "embedding size", type=cli.positive_int)
    flag("--source-vocab", "most source words kept", type=cli.positive_int)
    flag("--target-vocab", "most target words kept", type=cli.positive_int)
    flag("--min-count", "words seen fewer times in training are unknown", type=cli.positive_int)
    flag("--max-length", "longest training sentence in words; longer pairs are left out of training",
         type=cli.positive_int)
    flag("--dropout", "dropout on the embeddings and the attentional state", type=float)
    flag("--learning-rate", "initial Adam learning rate, cosine-decayed to 5%%", type=cli.positive_float)
    flag("--clipnorm", "gradient clipping norm", type=cli.positive_float)
    flag("--patience", "epochs without a better validation loss before stopping", type=cli.positive_int)
    flag("--beam-width", "beam width of the evaluation", type=cli.positive_int)
    p.add_argument("--length-penalty", type=float,
                   help="alpha of the GNMT length normalisation of beam search (default: training picks the "
                        f"best of {LENGTH_PENALTIES} on the validation split; --evaluate uses the model's)")
    p.add_argument("--test-file", help="with --evaluate: a UTF-8 file of source<TAB>reference[<TAB>reference...] lines")
    p.add_argument("--show", type=int, default=5, help="examples to print (default 5)")
    return p


# --- data -------------------------------------------------------------------------------------------

def load_pairs(args):
    """`(source, target)` pairs of the chosen direction, deduplicated (and subsampled)."""
    english_spanish, info = data.load_spa_eng()
    pairs = [(s, e) for e, s in english_spanish] if args.direction == "spa-eng" else english_spanish
    pairs = data.drop_duplicates(pairs, key=lambda p: (tuple(tokenize(p[0])), tuple(tokenize(p[1]))))
    info["pairs"], info["duplicates_dropped"] = len(english_spanish), len(english_spanish) - len(pairs)
    if args.max_examples and args.max_examples < len(pairs):
        keep = np.sort(np.random.default_rng(args.seed).choice(len(pairs), args.max_examples, replace=False))
        pairs = [pairs[i] for i in keep]
    return pairs, info


def source_key(pair):
    """Split key: the source as the model reads it (case and spacing ignored)."""
    return " ".join(tokenize(pair[0]))


def split_pairs(pairs, seed):
    """`(train, validation, test)`, grouped by source sentence."""
    return data.split_by_key(pairs, source_key, (VALIDATION_FRACTION, TEST_FRACTION), seed)


def encode_pairs(pairs, source_vocab, target_vocab, max_length):
    """Id lists of the pairs whose sides have at most `max_length` words: `(sources, targets)`,
    targets wrapped as `[START] ... [END]`."""
    sources, targets = [], []
    for source, target in pairs:
        s, t = tokenize(source), tokenize(target)
        if 0 < len(s) <= max_length and 0 < len(t) <= max_length:
            sources.append(source_vocab.encode(s))
            targets.append([Vocabulary.start_id] + target_vocab.encode(t) + [Vocabulary.end_id])
    return sources, targets


def pair_batches(sources, targets, batch_size, seed, shuffle=True):
    """`LengthBatches` of `((source (b, S), target_in (b, T)), target_out (b, T))`, int32,
    zero-padded to a multiple of 4 steps so that XLA compiles only a few batch shapes."""
    lengths = [max(len(s), len(t)) for s, t in zip(sources, targets)]

    def make_batch(rows):
        source = pad([sources[i] for i in rows], multiple=4)
        target = pad([targets[i] for i in rows], multiple=4, extra=1)  # [START] ... [END]
        return (source, target[:, :-1]), target[:, 1:]

    return LengthBatches(lengths, make_batch, batch_size, seed, shuffle)


# --- scoring ----------------------------------------------------------------------------------------

def group_references(pairs):
    """`(sources, reference_streams)`: one source text per distinct source, and sacrebleu reference
    streams padded with `None` where a source has fewer references than the most (sacrebleu skips
    `None`; an empty string would count as a real, empty reference)."""
    groups = {}
    for source, target in pairs:
        groups.setdefault(source_key((source, target)), (source, []))[1].append(target)
    sources = [source for source, _ in groups.values()]
    width = max((len(refs) for _, refs in groups.values()), default=0)
    streams = [[refs[i] if i < len(refs) else None for _, refs in groups.values()] for i in range(width)]
    return sources, streams


def score(translator, sources, streams, beam_width, length_penalty=None):
    """Translate and score: `{"bleu", "chrf", "bleu_signature", "chrf_signature", "seconds"}` and the
    hypotheses."""
    start = time.perf_counter()
    hypotheses = [t.text for t in translator.translate(sources, beam_width=beam_width,
                                                       length_penalty=length_penalty)]
    seconds = time.perf_counter() - start
    bleu, chrf = sacrebleu.metrics.BLEU(), sacrebleu.metrics.CHRF()
    result = {
        "bleu": round(bleu.corpus_score(hypotheses, streams).score, 2),
        "chrf": round(chrf.corpus_score(hypotheses, streams).score, 2),
        "bleu_signature": str(bleu.get_signature()), "chrf_signature": str(chrf.get_signature()),
        "sentences": len(sources), "seconds": round(seconds, 1),
    }
    return result, hypotheses


def tune_length_penalty(translator, pairs, beam_width, limit=800):
    """The alpha of `LENGTH_PENALTIES` with the best beam-search BLEU on `limit` evenly spaced
    sources of the validation split (the corpus runs from short to long sentences). Returns
    `(alpha, {alpha: bleu})`."""
    sources, streams = group_references(pairs)
    keep = np.unique(np.linspace(0, len(sources) - 1, min(limit, len(sources))).astype(int))
    sources, streams = [sources[i] for i in keep], [[s[i] for i in keep] for s in streams]
    bleu = {alpha: score(translator, sources, streams, beam_width, alpha)[0]["bleu"] for alpha in LENGTH_PENALTIES}
    best = max(bleu, key=lambda alpha: (bleu[alpha], -abs(alpha - 1.0)))
    print("length penalty on validation (beam %d): " % beam_width
          + ", ".join(f"alpha {a}: BLEU {b:.2f}" for a, b in bleu.items()) + f" -> {best}")
    return best, {str(a): b for a, b in bleu.items()}


def report(name, results, sources, streams, hypotheses, show):
    for label, metrics in results.items():
        print(f"{name} {label}: BLEU {metrics['bleu']:.2f}  chrF {metrics['chrf']:.2f}  "
              f"({metrics['sentences']} sentences, {metrics['seconds']} s)")
    for i in np.unique(np.linspace(0, len(sources) - 1, min(max(show, 0), len(sources))).astype(int)):
        print(f"  source:    {sources[i]}\n  reference: {streams[0][i]}\n  output:    {hypotheses[i]}")


def read_test_file(path):
    """`(sources, reference_streams)` of a `source<TAB>reference[<TAB>reference...]` file."""
    if not os.path.isfile(path):
        raise cli.UsageError(f"test file {path!r} does not exist")
    pairs = []
    try:
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                fields = [f.strip() for f in line.rstrip("\n").split("\t")]
                if len(fields) < 2 or not fields[0] or not all(fields[1:]):
                    raise cli.UsageError(f"{path} line {number}: expected 'source<TAB>reference', "
                                         f"got {line.strip()[:60]!r}")
                pairs.extend((fields[0], ref) for ref in fields[1:])
    except UnicodeDecodeError:
        raise cli.UsageError(f"test file {path!r} is not UTF-8 text") from None
    if not pairs:
        raise cli.UsageError(f"test file {path!r} has no source<TAB>reference lines")
    return group_references(pairs)


def evaluate(args):
    directory = args.model or args.out
    sources, streams = read_test_file(args.test_file)  # before the model: a bad file fails at once
    translator = Translator.load(directory)
    results, shown = {}, None
    for width in sorted({1, args.beam_width}):
        label = "greedy" if width == 1 else f"beam {width}"
        results[label], hypotheses = score(translator, sources, streams, width, args.length_penalty)
        shown = hypotheses
    report(os.path.basename(args.test_file), results, sources, streams, shown, args.show)
    return 0


# --- training ---------------------------------------------------------------------------------------

def train(args):
    checkpoints = cli.RunCheckpoints(args)  # first: refuses a clash with an interrupted run at once
    keras.utils.set_random_seed(args.seed)
    cli.flush_denormals()
    started = time.time()
    pairs, corpus = load_pairs(args)
    train_pairs, validation_pairs, test_pairs = split_pairs(pairs, args.seed)
    sizes = {name: {"pairs": len(part), "sources": len({source_key(p) for p in part})}
             for name, part in (("train", train_pairs), ("validation", validation_pairs), ("test", test_pairs))}
    print(f"{corpus['pairs']} pairs, {corpus['duplicates_dropped']} duplicates dropped, "
          f"{len(pairs)} used; split by source sentence (seed {args.seed}): "
          + ", ".join(f"{k} {v['pairs']} pairs / {v['sources']} sources" for k, v in sizes.items()))

    source_vocab = Vocabulary.build((tokenize(s) for s, _ in train_pairs), args.source_vocab, args.min_count)
    target_vocab = Vocabulary.build((tokenize(t) for _, t in train_pairs), args.target_vocab, args.min_count)
    truecaser = TrueCaser.build(t for _, t in train_pairs)
    train_data = pair_batches(*encode_pairs(train_pairs, source_vocab, target_vocab, args.max_length),
                         args.batch_size, args.seed)
    validation_data = pair_batches(*encode_pairs(validation_pairs, source_vocab, target_vocab, args.max_length),
                              args.batch_size, args.seed, shuffle=False)
    print(f"vocabularies: source {len(source_vocab)}, target {len(target_vocab)} words; "
          f"{len(train_data)} training batches of {args.batch_size}")

    scope, hardware = devices.setup(args)
    with scope:  # --data-parallel (TensorFlow) builds the model inside its strategy
        model = Seq2SeqAttention(len(source_vocab), len(target_vocab), args.embedding_dim, args.units,
                                 cell=args.cell, dropout=args.dropout, rnn_impl=args.rnn_impl)
        model.build()
        # Cosine decay to 5% over the planned epochs: the last epochs refine instead of bouncing.
        schedule = keras.optimizers.schedules.CosineDecay(args.learning_rate, args.epochs * len(train_data), alpha=0.05)
        model.compile(keras.optimizers.Adam(schedule, clipnorm=args.clipnorm), loss=masked_loss,
                      metrics=[masked_accuracy])
    callbacks = checkpoints.callbacks(args.patience)
    fit_start = time.time()
    # shuffle=False: the batches shuffle themselves each epoch (Keras would only reorder them again)
    model.fit(fit_input(train_data), shuffle=False, validation_data=fit_input(validation_data),
              epochs=args.epochs, callbacks=callbacks, verbose=1)
    train_seconds = time.time() - fit_start
    checkpoints.restore_best(model)

    settings = {"direction": args.direction, "max_source_length": 60, "max_target_length": 60,
                "length_penalty": 1.0}
    translator = Translator(model, source_vocab, target_vocab, truecaser, settings)
    tuning = {}
    if args.length_penalty is None and args.beam_width > 1:
        translator.settings["length_penalty"], tuning = tune_length_penalty(translator, validation_pairs,
                                                                            args.beam_width)
    elif args.length_penalty is not None:
        translator.settings["length_penalty"] = args.length_penalty
    sources, streams = group_references(test_pairs)
    results = {}
    for width in sorted({1, args.beam_width}):
        label = "greedy" if width == 1 else f"beam {width}"
        results[label], hypotheses = score(translator, sources, streams, width)
    report("test", results, sources, streams, hypotheses, args.show)

    hyper = {k: getattr(args, k) for k in ("epochs", "batch_size", "units", "embedding_dim", "cell",
                                           "source_vocab", "target_vocab", "min_count", "max_length", "dropout",
                                           "learning_rate", "clipnorm", "patience", "seed", "max_examples",
                                           "quick", "beam_width")}
    card = {
        "task": f"translation {args.direction}",
        "model": "Seq2SeqAttention: embedding + bidirectional encoder, decoder with Bahdanau attention",
        "corpus": {"name": "spa-eng (Tatoeba via manythings.org/anki)", **corpus},
        "split": {"by": "source sentence", "seed": args.seed,
                  "fractions": {"validation": VALIDATION_FRACTION, "test": TEST_FRACTION}, **sizes},
        "vocabulary": {"source": len(source_vocab), "target": len(target_vocab), "min_count": args.min_count},
        "settings": hyper,
        "hardware": hardware,
        "parameters": int(model.count_params()),
        "training": checkpoints.record(),
        "length_penalty": {"alpha": translator.settings["length_penalty"], "validation_bleu_by_alpha": tuning},
        "test": results,
    }
    translator.save(args.out, card)
    checkpoints.finish()
    print(f"training {train_seconds / 60:.1f} min (total {(time.time() - started) / 60:.1f} min); "
          f"saved to {args.out}")
    return 0


def main(argv=None):
    args = cli.resolve(build_parser().parse_args(argv), DEFAULTS, QUICK)
    cli.default_out(args, f"translate-{args.direction}")
    if args.evaluate:
        if not args.test_file:
            raise cli.UsageError("--evaluate needs --test-file FILE.tsv")
        return evaluate(args)
    if args.test_file:
        raise cli.UsageError("--test-file is only used with --evaluate")
    return train(args)


if __name__ == "__main__":
    cli.run(main)
