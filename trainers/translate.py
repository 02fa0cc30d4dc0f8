"""Train and score the Spanish -> English translator (or English -> Spanish).

    python -m trainers.translate                      # default run, then BLEU/chrF on the test split
    python -m trainers.translate --quick --out /tmp/translate-quick
    python -m trainers.translate --evaluate --model saved_models/translate-spa-eng --test-file f.tsv
    python -m trainers.translate --model saved_models/translate-spa-eng --translate in.txt > out.txt
    cat in.txt | python -m trainers.translate --translate - --beam-width 5 --n-best 3

Data: `spa-eng.zip` (Tatoeba via manythings.org/anki), normalised, duplicates dropped, split by
source sentence (seeded) so that no validation or test source occurs in training. Vocabularies and
the casing model come from the training split only. Scores are sacrebleu corpus BLEU and chrF of
the detokenised, cased output against the raw references (default 13a tokenisation,
case-sensitive); a source with several translations is scored against all of them.
"""

from trainers import cli  # noqa: I001 - first: sets environment variables read when Keras/TensorFlow load

import collections
import dataclasses
import os
import time

import numpy as np
import sacrebleu

from models.config import setting
from models.seq2seq import Seq2SeqAttention, Seq2SeqConfig, masked_accuracy, smoothed_masked_loss
from runtime.text import TrueCaser, Vocabulary, tokenize
from models.translator import Translator
from trainers import data
from trainers.batching import LengthBatches, graded_width, pad
from trainers.subwords import learn_pieces
from trainers import cluster
from trainers.training import TrainingRun, data_parallel_setting, precision_setting, training_setting

LENGTH_PENALTIES = (0.0, 0.5, 1.0)  # alphas of beam search tried on the validation split after training
AVERAGED_TAILS = (0.1, 0.2, 0.3, 0.5)  # shares of the last training steps whose mean weights are tried
VALIDATION_FRACTION = TEST_FRACTION = 0.03  # of the unique source sentences


@dataclasses.dataclass
class TranslateConfig(Seq2SeqConfig):
    """Every setting of a translation run: the network's (`Seq2SeqConfig`), then these.

    Defaults sized by measurement on a 2-core CPU with KERAS_BACKEND=jax so that the run fits in
    an hour with the data and the scoring: 12 epochs of about 4 minutes, 53 minutes in all
    (benchmarks/RESULTS.md, "Translation: choosing the defaults"). The target side
    has fewer pieces than the source: the output softmax is most of a training step's work (4,000
    target pieces train 17% faster than 6,838), and smaller subword vocabularies suit a corpus of
    this size (Sennrich & Zhang, 2019).
    """

    direction: str = setting("spa-eng", "source-target languages", choices=("spa-eng", "eng-spa"))
    tokenizer: str = setting("sentencepiece", "how words become ids: SentencePiece subword pieces learnt on the "
                                              "training split (keras_hub's tokenizer) or whole words",
                             choices=("sentencepiece", "word"))
    source_vocab: int = setting(8000, "most source pieces (or words) kept", quick=3000)
    target_vocab: int = setting(4000, "most target pieces (or words) kept", quick=2000)
    min_count: int = setting(2, "with --tokenizer word: words seen fewer times in training are unknown")
    max_length: int = setting(20, "longest training sentence in words; longer pairs are left out of training",
                              quick=12)
    max_source_length: int = setting(60, "longest input translated, in words (the rest is cut, with a notice)")
    max_target_length: int = setting(60, "most words of a translation")
    beam_width: int = setting(5, "beam width of the evaluation")
    length_penalty: float | None = setting(
        None, "alpha of the GNMT length normalisation of beam search, 0 to 2", kind="nonnegative",
        shown=f"training picks the best of {LENGTH_PENALTIES} on the validation split; --evaluate uses the model's")
    label_smoothing: float = setting(0.1, "share of each target's probability spread over the vocabulary in the "
                                          "training loss", kind="fraction")
    average_weights: bool = setting(
        True, f"average the weights over the last {'/'.join(str(round(t * 100)) for t in AVERAGED_TAILS)}% of "
              "training (trainers/averaging.py) and keep the checkpoint or mean with the lowest validation loss")
    epochs: int = training_setting("epochs", 12, quick=3)
    batch_size: int = training_setting("batch_size", 64, quick=32)
    learning_rate: float = training_setting("learning_rate", 2e-3, quick=5e-3)
    clipnorm: float = training_setting("clipnorm", 1.0)
    patience: int = training_setting("patience", 2)
    seed: int = training_setting("seed", 42)
    max_examples: int | None = training_setting("max_examples", None, quick=10000, shown="all")
    precision: str = precision_setting()
    data_parallel: bool = data_parallel_setting()


def build_parser():
    p = cli.config_parser(TranslateConfig, "python -m trainers.translate", __doc__.split("\n\n")[0],
                          "saved_models/translate-DIRECTION",
                          "a UTF-8 file of source<TAB>reference[<TAB>reference...] lines")
    p.add_argument("--show", type=int, default=5, help="examples to print (default 5)")
    p.add_argument("--translate", metavar="FILE",
                   help="translate each line of a UTF-8 FILE (- for stdin) with the model in --model, one output line "
                        "per input line (with --n-best: K lines 'line<TAB>score<TAB>translation' each)")
    p.add_argument("--n-best", type=cli.positive_int, default=1, metavar="K",
                   help="with --translate and beam search: the K best translations of each line (default 1)")
    return p


# --- data -------------------------------------------------------------------------------------------

def load_pairs(config):
    """`(source, target)` pairs of the chosen direction, deduplicated (and subsampled)."""
    english_spanish, info = data.load_spa_eng()
    pairs = [(s, e) for e, s in english_spanish] if config.direction == "spa-eng" else english_spanish
    pairs = data.drop_duplicates(pairs, key=lambda p: (tuple(tokenize(p[0])), tuple(tokenize(p[1]))))
    info["pairs"], info["duplicates_dropped"] = len(english_spanish), len(english_spanish) - len(pairs)
    if config.max_examples and config.max_examples < len(pairs):
        keep = np.sort(np.random.default_rng(config.seed).choice(len(pairs), config.max_examples, replace=False))
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
    targets wrapped as `[START] ... [END]` (ids of pieces with a subword vocabulary)."""
    sources, targets = [], []
    for source, target in pairs:
        s, t = tokenize(source), tokenize(target)
        if 0 < len(s) <= max_length and 0 < len(t) <= max_length:
            sources.append(source_vocab.encode(s))
            targets.append([Vocabulary.start_id] + target_vocab.encode(t) + [Vocabulary.end_id])
    return sources, targets


def pair_batches(sources, targets, batch_size, seed, shuffle=True):
    """`LengthBatches` of `((source (b, S), target_in (b, T)), target_out (b, T))`, int32,
    zero-padded to `graded_width` steps. XLA compiles each batch shape (about 3.5 s for a training
    and an evaluation step): the even widths used before made 61 shapes over 6 epochs of batch 32
    (about 3 minutes of compiling in a 20-minute run), the graded ones 25, for 1.4% more padded
    steps (`python -m benchmarks.translate_step --skip-step --padding-batch-size 32`)."""
    lengths = [max(len(s), len(t)) for s, t in zip(sources, targets)]

    def make_batch(rows):
        source = pad([sources[i] for i in rows], width=graded_width(max(len(sources[i]) for i in rows)))
        target_steps = max(len(targets[i]) for i in rows) - 1  # [START] ... [END]: steps in and out
        target = pad([targets[i] for i in rows], width=graded_width(target_steps) + 1)
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


def score(translator, sources, streams, beam_width, length_penalty=None, subsets=None):
    """Translate and score: `{"bleu", "chrf", "bleu_signature", "chrf_signature", "seconds"}` and the
    hypotheses. `subsets` (`{name: source indices}`) adds the BLEU and chrF of those sources alone."""
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
    for name, keep in (subsets or {}).items():
        chosen, references = [hypotheses[i] for i in keep], [[stream[i] for i in keep] for stream in streams]
        result.setdefault("subsets", {})[name] = {
            "sentences": len(keep), "bleu": round(bleu.corpus_score(chosen, references).score, 2),
            "chrf": round(chrf.corpus_score(chosen, references).score, 2)}
    return result, hypotheses


def novel_word_subsets(train_pairs, sources):
    """`{"unseen word": indices, "rare word": indices}` of the `sources` with a word never seen in
    the training sources, or seen there at most once: the situation of newer sentences, where the
    open vocabulary has to earn its keep."""
    seen = collections.Counter(word for source, _ in train_pairs for word in tokenize(source))
    words = [tokenize(source) for source in sources]
    return {"unseen word": [i for i, w in enumerate(words) if any(seen[x] == 0 for x in w)],
            "rare word": [i for i, w in enumerate(words) if any(seen[x] <= 1 for x in w)]}


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
        for subset, m in metrics.get("subsets", {}).items():
            print(f"  sources with a {subset}: BLEU {m['bleu']:.2f}  chrF {m['chrf']:.2f}  "
                  f"({m['sentences']} sentences)")
    for i in np.unique(np.linspace(0, len(sources) - 1, min(max(show, 0), len(sources))).astype(int)):
        print(f"  source:    {sources[i]}\n  reference: {streams[0][i]}\n  output:    {hypotheses[i]}")


def read_test_file(path):
    """`(sources, reference_streams)` of a `source<TAB>reference[<TAB>reference...]` file."""
    pairs = []
    for number, line in enumerate(cli.read_text(path, "test file").split("\n"), 1):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split("\t")]
        if len(fields) < 2 or not fields[0] or not all(fields[1:]):
            raise cli.UsageError(f"{path} line {number}: expected 'source<TAB>reference', got {line.strip()[:60]!r}")
        pairs.extend((fields[0], ref) for ref in fields[1:])
    if not pairs:
        raise cli.UsageError(f"test file {path!r} has no source<TAB>reference lines")
    return group_references(pairs)


def score_widths(translator, sources, streams, beam_width, length_penalty=None, subsets=None):
    """`({"greedy": scores, "beam k": scores}, hypotheses of the widest search)`."""
    results, hypotheses = {}, None
    for width in sorted({1, beam_width}):
        label = "greedy" if width == 1 else f"beam {width}"
        results[label], hypotheses = score(translator, sources, streams, width, length_penalty, subsets)
    return results, hypotheses


def evaluate(config, args):
    sources, streams = read_test_file(args.test_file)  # before the model: a bad file fails at once
    translator = Translator.load(args.model)
    results, hypotheses = score_widths(translator, sources, streams, config.beam_width, config.length_penalty)
    report(os.path.basename(args.test_file), results, sources, streams, hypotheses, args.show)
    return 0


# --- training ---------------------------------------------------------------------------------------

def train(config, args):
    # first: starts the multi-process engine, and refuses a clash with an interrupted run at once
    run = TrainingRun(config, args.out, args.resume, cluster.from_args(args))
    pairs, corpus = load_pairs(config)
    train_pairs, validation_pairs, test_pairs = split_pairs(pairs, config.seed)
    sizes = split_sizes(train_pairs, validation_pairs, test_pairs)
    print(f"{corpus['pairs']} pairs, {corpus['duplicates_dropped']} duplicates dropped, {len(pairs)} used; split by "
          f"source sentence (seed {config.seed}): " + ", ".join(f"{k} {v['pairs']} pairs / {v['sources']} sources"
                                                                for k, v in sizes.items()))
    source_vocab, target_vocab = (build_vocabulary(config, [tokenize(pair[side]) for pair in train_pairs], size)
                                  for side, size in ((0, config.source_vocab), (1, config.target_vocab)))
    config = dataclasses.replace(config, source_vocab_size=len(source_vocab), target_vocab_size=len(target_vocab))
    train_data, validation_data = (
        pair_batches(*encode_pairs(part, source_vocab, target_vocab, config.max_length), config.batch_size,
                     config.seed, shuffle) for part, shuffle in ((train_pairs, True), (validation_pairs, False)))
    print(f"vocabularies ({config.tokenizer}): source {len(source_vocab)}, target {len(target_vocab)}; "
          f"{len(train_data)} training batches of {config.batch_size}")

    model = run.fit(lambda: Seq2SeqAttention(config), train_data, validation_data,
                    smoothed_masked_loss(config.label_smoothing), [masked_accuracy],
                    average_tails=AVERAGED_TAILS if config.average_weights else ())
    translator = Translator(model, source_vocab, target_vocab, TrueCaser.build(t for _, t in train_pairs),
                            translator_settings(config))
    tuning = choose_length_penalty(translator, config, validation_pairs)
    sources, streams = group_references(test_pairs)
    subsets = novel_word_subsets(train_pairs, sources)
    results, hypotheses = score_widths(translator, sources, streams, config.beam_width, subsets=subsets)
    report("test", results, sources, streams, hypotheses, args.show)
    run.save(translator, run.card(model, **card_entries(config, corpus, sizes, translator, tuning, results)))
    return 0


def card_entries(config, corpus, sizes, translator, tuning, results):
    """What the card says of this task besides the shared entries (`TrainingRun.card`)."""
    return {"task": f"translation {config.direction}",
            "model": "Seq2SeqAttention: embedding + bidirectional encoder, decoder with Bahdanau attention",
            "corpus": {"name": "spa-eng (Tatoeba via manythings.org/anki)", **corpus},
            "split": {"by": "source sentence", "seed": config.seed,
                      "fractions": {"validation": VALIDATION_FRACTION, "test": TEST_FRACTION}, **sizes},
            "vocabulary": {"kind": config.tokenizer, "source": len(translator.source_vocab),
                           "target": len(translator.target_vocab)},
            "length_penalty": {"alpha": translator.settings["length_penalty"], "validation_bleu_by_alpha": tuning},
            "test": results}


def build_vocabulary(config, sentences, size):
    """The vocabulary of one side from its training sentences (lists of lowercased words)."""
    if config.tokenizer == "sentencepiece":
        return learn_pieces(sentences, size)
    return Vocabulary.build(sentences, size, config.min_count)


def split_sizes(*parts):
    """Pairs and distinct sources of the train, validation and test splits, for the log and the card."""
    return {name: {"pairs": len(part), "sources": len({source_key(p) for p in part})}
            for name, part in zip(("train", "validation", "test"), parts)}


def translator_settings(config):
    """What `Translator` needs besides the network (its `translator.json`)."""
    return {"direction": config.direction, "max_source_length": config.max_source_length,
            "max_target_length": config.max_target_length, "length_penalty": config.length_penalty or 1.0}


def choose_length_penalty(translator, config, validation_pairs):
    """Set the translator's length penalty: `--length-penalty`, else the best of `LENGTH_PENALTIES`
    on the validation split (beam search only). Returns the validation BLEU of each alpha tried."""
    if config.length_penalty is not None or config.beam_width == 1:
        return {}
    translator.settings["length_penalty"], tuning = tune_length_penalty(translator, validation_pairs,
                                                                        config.beam_width)
    return tuning


def translate_lines(config, args):
    """`--translate FILE`: every line of FILE (or stdin) translated in batches, in order, to stdout."""
    if args.evaluate:
        raise cli.UsageError("--translate and --evaluate are two different runs: give one")
    if args.n_best > config.beam_width:
        raise cli.UsageError(f"--n-best {args.n_best} needs --beam-width of at least {args.n_best}")
    lines = cli.read_text(args.translate, "file to translate").splitlines()  # before the model: fails at once
    translator = Translator.load(args.model)
    results = translator.translate([line.strip() for line in lines], beam_width=config.beam_width,
                                   length_penalty=config.length_penalty, n_best=args.n_best)
    for number, result in enumerate(results, 1):
        if args.n_best == 1:
            print(result.text)
        else:
            for text, score in result.alternatives or [(result.text, result.score)]:
                print(f"{number}\t{'' if score is None else f'{score:.4f}'}\t{text}")
    return 0


def main(argv=None):
    args = build_parser().parse_args(argv)
    config = cli.config_from_args(TranslateConfig, args)
    cli.output_folders(args, f"translate-{config.direction}")
    if args.translate:
        return translate_lines(config, args)
    return evaluate(config, args) if args.evaluate else train(config, args)


if __name__ == "__main__":
    cli.run(main)
