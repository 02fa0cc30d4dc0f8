"""Train and evaluate the IMDB sentiment classifier: `python -m trainers.sentiment`.

    python -m trainers.sentiment                       # defaults: about 22 minutes on a 2-core CPU (JAX)
    python -m trainers.sentiment --quick               # smoke run of a few minutes
    python -m trainers.sentiment --source tfds         # read TensorFlow Datasets' imdb_reviews instead
    python -m trainers.sentiment --evaluate --model saved_models/sentiment-imdb --test-file my.tsv

The Large Movie Review Dataset (Maas et al., 2011): 25,000 training and 25,000 test reviews. A seeded
10% of the training films is held out whole for validation (early stopping; the test films are
disjoint from the training films too; TFDS's copy has no film ids, so there 10% of the reviews);
the test reviews are only used once, at the end. `--test-file` takes `label<TAB>review` lines,
label 1 positive and 0 negative.
"""

from trainers import cli  # noqa: I001 - sets the environment before TensorFlow/Keras load

import collections
import dataclasses
import os
import shutil
import time

import keras
import numpy as np
from keras import ops
from scipy import special

from models import artifacts
from models.classifier import SentimentClassifier
from models.config import setting
from models.review_lm import ReviewLM
from models.sentiment import SentimentNet, SentimentNetConfig
from runtime.text import Vocabulary, review_tokens, truncate
from trainers import data, word_vectors
from trainers import cluster
from trainers.batching import LengthBatches, fit_input, pad
from trainers.ngram_teacher import NgramLogisticRegression, log_loss, mixture_weight
from trainers.training import TrainingRun, data_parallel_setting, precision_setting, training_setting

VALIDATION_FRACTION = 0.1
PAD_MULTIPLE = 50  # batch widths are multiples of this: at most max_length / 50 shapes to compile


@dataclasses.dataclass
class SentimentConfig(SentimentNetConfig):
    """Every setting of a sentiment run: the network's (`SentimentNetConfig`), then these.

    Chosen on the film-held-out validation split (benchmarks/RESULTS.md lists every run): with the
    embedding started from word vectors, a second pass at a high learning rate already memorises
    the training reviews; two epochs with the cosine decay ending in the second had the lowest
    loss, and the mean of the weights over the second epoch lower still. Adversarial training
    (2.5 embedding standard deviations) and then self-training on the unlabelled reviews (one
    epoch of a fresh student) lowered it further: validation loss 0.2692 -> 0.2593 -> 0.2469,
    accuracy 0.8886 -> 0.8948 -> 0.9059; then 600 words per review and every word of at least
    5 films' reviews (not only the 20,000 most frequent) to 0.2408 (student runs of the same
    teacher); then the teacher's labels mixed with an n-gram model's (`--teacher-ngrams`) to
    0.2304, accuracy 0.9128. A pretrained language model did not help (`--pretrained`).
    """

    adversarial: float = setting(2.5, "adversarial training: size of the perturbation of each embedded review, in "
                                      "standard deviations of the embedding (Miyato et al. 2016; 0: off)",
                                 kind="nonnegative")

    source: str = setting("keras", "corpus reader: the aclImdb archive through the Keras cache or TFDS imdb_reviews",
                          choices=("keras", "tfds"))
    vocab: int = setting(40000, "most frequent training words kept (--min-films bounds it first: 23,557 words "
                                "with the defaults)", quick=5000)
    min_films: int = setting(5, "keep only words used in reviews of at least this many films, so no film's names "
                                "(--source keras only; 1: all words)", quick=1)
    embedding_init: str = setting("ppmi", "start the embedding from word vectors of the training and the 50,000 "
                                          "unlabelled reviews (ppmi: SVD of positive PMI, trainers/word_vectors.py) "
                                          "or at random", choices=("ppmi", "random"))
    pretrained: str | None = setting(None, "start the embedding and the encoder from a review language model folder "
                                           "(python -m trainers.pretrain); its vocabulary and sizes then hold",
                                     kind="text", shown="none")
    pretrained_use: str = setting("encoder", "with --pretrained: start the classifier's encoder from the language "
                                             "model's (Dai & Le 2015), or keep the model fixed beside it and feed "
                                             "its states to the encoder with the embeddings (ELMo)",
                                  choices=("encoder", "states"))
    head_warmup: int = setting(0, "with --pretrained: steps that train only the output layer before the whole network "
                                  "(a random head's first gradients would otherwise scramble the pretrained "
                                  "encoder; ULMFiT's gradual unfreezing, first stage)", kind="int")
    self_training: bool = setting(True, "self-training: train a first model (the teacher) on the labelled reviews, "
                                        "label the 50,000 unlabelled reviews with its probabilities, then train the "
                                        "final model afresh on both", quick=False)
    student_epochs: int = setting(1, "with --self-training: epochs of the final model over the labelled and "
                                     "unlabelled reviews", kind="positive_int")
    student_units: int | None = setting(None, "with --self-training: recurrent units of each direction of the final "
                                              "model", kind="positive_int", shown="--units, the teacher's")
    student_adversarial: float | None = setting(None, "with --self-training: --adversarial of the final model",
                                                kind="nonnegative", shown="--adversarial, the teacher's")
    teacher: str | None = setting(None, "with --self-training: label the unlabelled reviews with this saved classifier "
                                        "instead of training a teacher", kind="text", shown="none")
    teacher_ngrams: int = setting(3, "with --self-training: mix the teacher's logits with those of a logistic "
                                     "regression on NB-weighted n-grams of up to this many words "
                                     "(trainers/ngram_teacher.py), fitted on the labelled reviews, its share chosen on "
                                     "validation (0: off)",
                                  kind="int")
    freeze_embedding: bool = setting(False, "keep the ppmi word vectors fixed in training (no: they are fine-tuned)")
    average_weights: bool = setting(True, "average the weights over the second half of training "
                                          "(trainers/averaging.py) and keep the mean if its validation loss is lower")
    epochs: int = training_setting("epochs", 2)
    batch_size: int = training_setting("batch_size", 32)
    learning_rate: float = training_setting("learning_rate", 2e-3)
    clipnorm: float = training_setting("clipnorm", 1.0)
    patience: int = training_setting("patience", 2)
    seed: int = training_setting("seed", 1337)
    max_examples: int | None = training_setting("max_examples", None, quick=2000, shown="all")
    precision: str = precision_setting()
    data_parallel: bool = data_parallel_setting()


def build_parser():
    p = cli.config_parser(SentimentConfig, "python -m trainers.sentiment", __doc__.splitlines()[0],
                          "saved_models/sentiment-imdb", "label<TAB>review lines (1 positive, 0 negative)")
    p.add_argument("--no-test", action="store_true", help="leave the test split unread (runs that choose settings "
                                                            "on validation; the card then has no test entry)")
    return p


def build_vocabulary(token_lists, films, max_size, min_films):
    """The `max_size` most frequent words of the training reviews, among the words used in reviews
    of at least `min_films` different films when `films` (one per review) is known: a name that
    only one film's reviews use says which film it is, not whether the review liked it."""
    if films is None or min_films <= 1:
        return Vocabulary.build(token_lists, max_size)
    words_of_film = collections.defaultdict(set)
    for tokens, film in zip(token_lists, films):
        words_of_film[film].update(tokens)
    film_counts = collections.Counter(word for words in words_of_film.values() for word in words)
    return Vocabulary.build(([t for t in tokens if film_counts[t] >= min_films] for tokens in token_lists), max_size)


def batches(vocabulary, max_length, token_lists, labels, batch_size, seed, shuffle):
    """`LengthBatches` of `(ids, labels)` from tokenised reviews, each truncated to `max_length`."""
    rows = [truncate(vocabulary.encode(tokens), max_length) for tokens in token_lists]
    labels = np.asarray(labels, dtype="float32")

    def make_batch(indices):
        return pad([rows[i] for i in indices], multiple=PAD_MULTIPLE), labels[indices, None]  # (batch, 1)

    return LengthBatches([len(r) for r in rows], make_batch, batch_size, seed, shuffle)


def metrics(labels, probabilities):
    """Accuracy, precision, recall, F1, ROC-AUC and the confusion matrix of binary predictions."""
    labels = np.asarray(labels).astype(int)
    probabilities = np.asarray(probabilities, dtype="float64")
    predicted = (probabilities > 0.5).astype(int)
    tp = int(np.sum((predicted == 1) & (labels == 1)))
    tn = int(np.sum((predicted == 0) & (labels == 0)))
    fp = int(np.sum((predicted == 1) & (labels == 0)))
    fn = int(np.sum((predicted == 0) & (labels == 1)))
    precision = tp / max(tp + fp, 1)
    recall = tp / max(tp + fn, 1)
    return {
        "examples": int(len(labels)),
        "accuracy": (tp + tn) / max(len(labels), 1),
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / max(precision + recall, 1e-12),
        "roc_auc": roc_auc(labels, probabilities),
        "confusion_matrix": {"true_negative": tn, "false_positive": fp, "false_negative": fn, "true_positive": tp},
    }


def roc_auc(labels, scores):
    """Area under the ROC curve: the probability that a random positive outscores a random
    negative (Mann-Whitney U with average ranks for ties); `None` if a class is missing."""
    positives, negatives = int(np.sum(labels == 1)), int(np.sum(labels == 0))
    if positives == 0 or negatives == 0:
        return None
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores))
    sorted_scores = np.asarray(scores)[order]
    start = 0
    for end in range(1, len(scores) + 1):  # average ranks over runs of equal scores
        if end == len(scores) or sorted_scores[end] != sorted_scores[start]:
            ranks[order[start:end]] = (start + end + 1) / 2
            start = end
    return float((ranks[labels == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def print_metrics(name, result):
    cm = result["confusion_matrix"]
    auc = "n/a" if result["roc_auc"] is None else f"{result['roc_auc']:.4f}"
    print(f"{name} ({result['examples']} reviews): accuracy {result['accuracy']:.4f}, precision "
          f"{result['precision']:.4f}, recall {result['recall']:.4f}, F1 {result['f1']:.4f}, ROC-AUC {auc}")
    print(f"  confusion matrix: true neg {cm['true_negative']}, false pos {cm['false_positive']}, "
          f"false neg {cm['false_negative']}, true pos {cm['true_positive']}")


def read_test_file(path):
    """`(texts, labels)` from `label<TAB>review` lines; a bad line is a one-line `UsageError`."""
    texts, labels = [], []
    for number, line in enumerate(cli.read_text(path, "test file").split("\n"), 1):
        if not line.strip():
            continue
        fields = line.rstrip("\r").split("\t")
        if len(fields) != 2 or fields[0].strip() not in ("0", "1") or not fields[1].strip():
            found = f"{len(fields)} tab-separated fields" if len(fields) != 2 else repr(line.strip()[:60])
            raise cli.UsageError(f"{path}:{number}: expected 'label<TAB>review' with label 0 or 1 and no "
                                 f"other tab, got {found}")
        labels.append(int(fields[0]))
        texts.append(fields[1])
    if not texts:
        raise cli.UsageError(f"test file {path!r} has no reviews")
    return texts, np.asarray(labels)


def evaluate(config, args):
    texts, labels = read_test_file(args.test_file)  # before the model: a bad file fails at once
    classifier = SentimentClassifier.load(args.model)
    print_metrics(os.path.basename(args.test_file), metrics(labels, classifier.predict(texts)))
    return 0


def load_splits(config):
    """`(splits, corpus)`: `splits` maps train / validation / test to `(texts, labels, films)`
    (`films` `None` but for training with `--source keras`); `corpus` is `data.load_imdb`'s.

    The film of each training review (keras source): the official test films are disjoint from
    the training films, so validation holds out whole films too, and early stopping sees the
    situation of the test. TFDS's copy has no film ids; it falls back to random reviews.
    """
    corpus = data.load_imdb(config.source, unlabelled=config.self_training or (config.embedding_init == "ppmi"
                                                                            and not pretrained_encoder(config)),
                            max_unlabelled=config.max_examples)
    texts, labels = corpus["train"]
    test_texts, test_labels = corpus["test"]
    films = corpus.get("films", {}).get("train")
    rows = list(range(len(texts)))
    if config.max_examples:
        rows, labels = data.subset(rows, labels, config.max_examples, config.seed)
        test_texts, test_labels = data.subset(test_texts, test_labels, config.max_examples, config.seed + 1)
    row_films = [films[i] for i in rows] if films else None
    (train_rows, train_labels), (val_rows, val_labels) = data.holdout(
        rows, labels, VALIDATION_FRACTION, config.seed, groups=row_films)
    def part(rows, labels):
        return [texts[i] for i in rows], labels, [films[i] for i in rows] if films else None

    splits = {"train": part(train_rows, train_labels), "validation": part(val_rows, val_labels),
              "test": (test_texts, test_labels, None)}
    return splits, corpus


def starting_point(config):
    """`(config, vocabulary, language model)` of `--pretrained FOLDER`: its `ReviewLM`, its vocabulary
    and its sizes (the encoder's or, with `--pretrained-use states`, the fixed model's beside it);
    `(config, None, None)` without it (the vocabulary is then the training reviews')."""
    if not config.pretrained:
        return config, None, None
    language_model, sides, _ = artifacts.load(config.pretrained, ("vocabulary.json",), model_class=ReviewLM)
    vocabulary, c = Vocabulary.from_json(sides["vocabulary.json"]), language_model.config
    sizes = {"lm_units": c.units} if config.pretrained_use == "states" else {"units": c.units}
    config = dataclasses.replace(config, vocab_size=len(vocabulary), embedding_dim=c.embedding_dim, cell=c.cell,
                                 **sizes)
    return config, vocabulary, language_model


def pretrained_encoder(config):
    """Whether the embedding and encoder start from `--pretrained` (else from the word vectors)."""
    return bool(config.pretrained) and config.pretrained_use == "encoder"


def initial_embedding(config, vocabulary, token_lists):
    """`(vectors (vocab, embedding_dim) or None, seconds)`: with `--embedding-init ppmi`, PPMI-SVD
    word vectors of tokenised reviews, the training and unlabelled ones (here and in
    `trainers.pretrain`)."""
    if config.embedding_init != "ppmi":
        return None, 0.0
    start = time.time()
    rows = [vocabulary.encode(tokens) for tokens in token_lists]
    vectors = word_vectors.ppmi_svd_vectors(rows, len(vocabulary), config.embedding_dim, seed=config.seed)
    seconds = time.time() - start
    print(f"word vectors from {len(rows)} reviews ({sum(map(len, rows))} words) in {seconds:.0f} s")
    return vectors, seconds


def build_model(config, vectors, language_model=None, train_data=None):
    """A built `SentimentNet`: its embedding and encoder from `language_model` (a `ReviewLM`), the
    head then warmed up on `train_data` (`--head-warmup`), or its embedding from `vectors` (frozen
    with `--freeze-embedding`) and, with `--pretrained-use states`, the fixed language model beside it."""
    model = SentimentNet(config)
    model.build()
    if language_model is not None:
        language_model.transfer_to(model)
        if config.head_warmup > 0:
            warm_up_head(model, train_data, config)
    if vectors is not None and not pretrained_encoder(config):
        model.embedding.embeddings.assign(vectors)
        model.embedding.trainable = not config.freeze_embedding
    return model


def warm_up_head(model, train_data, config):
    """Train only the output layer for `config.head_warmup` steps (Adam at the run's learning rate),
    the embedding and the pretrained encoder frozen; then everything is trainable again."""
    frozen = (model.embedding, model.encoder)
    for layer in frozen:
        layer.trainable = False
    model.compile(keras.optimizers.Adam(config.learning_rate), keras.losses.BinaryCrossentropy(from_logits=True))
    print(f"head warm-up: {config.head_warmup} steps with the embedding and the encoder frozen")
    model.fit(fit_input(train_data), steps_per_epoch=config.head_warmup, epochs=1, verbose=2)
    for layer in frozen:
        layer.trainable = True


def train(config, args):
    # first: starts the multi-process engine, and refuses a clash with an interrupted run at once
    run = TrainingRun(config, args.out, args.resume, cluster.from_args(args))
    config, vocabulary, language_model = starting_point(config)  # before the corpus: a bad folder fails at once
    splits, corpus = load_splits(config)
    config, vocabulary, tokens = tokenise(config, splits, corpus, vocabulary)
    train_data, val_data = (batches(vocabulary, config.max_length, tokens[k], splits[k][1], config.batch_size,
                                    config.seed, k == "train") for k in ("train", "validation"))
    vectors, vector_seconds = (None, 0.0) if pretrained_encoder(config) else initial_embedding(
        config, vocabulary, tokens["train"] + tokens["unlabelled"])

    def fit(run, data, student=False):  # self-training's student: its own size, noise and epochs
        c = student_config(config) if student else config
        return run.fit(lambda: build_model(c, vectors, language_model, train_data), data, val_data,
                       keras.losses.BinaryCrossentropy(from_logits=True), [accuracy], epochs=c.epochs,
                       average_tails=(0.5,) if config.average_weights else ())

    teaching = None
    if config.self_training:  # the teacher fits on the labelled reviews, the student on both
        train_data, teaching = student_data(config, args, fit, train_data, vocabulary, tokens, splits, corpus)
    model = fit(run, train_data, student=config.self_training)
    classifier = SentimentClassifier(model, vocabulary)
    result = None if args.no_test else score_test_split(classifier, *splits["test"][:2])
    run.save(classifier, run.card(model, **card_entries(config, corpus, splits, vocabulary, vector_seconds, result,
                                                        teaching)))
    if teaching and not config.teacher and run.cluster.is_chief:
        shutil.rmtree(teacher_folder(config, args), ignore_errors=True)  # its record is in the card
    return 0


def tokenise(config, splits, corpus, vocabulary=None):
    """`(config, vocabulary, tokens)`: the words of the training, validation and unlabelled reviews
    (`tokens[split]`), and the vocabulary of the training reviews unless one is given."""
    films = splits["train"][2]
    print(f"IMDB ({config.source}): " + ", ".join(f"{k} {len(v[0])}" for k, v in splits.items()) + " reviews"
          + (f"; validation holds out {len(set(splits['validation'][2]))} whole films" if films else ""))
    tokens = {k: [review_tokens(t) for t in splits[k][0]] for k in ("train", "validation")}
    tokens["unlabelled"] = [review_tokens(t) for t in corpus.get("unlabelled", [])]
    if vocabulary is None:
        vocabulary = build_vocabulary(tokens["train"], films, config.vocab, config.min_films)
        config = dataclasses.replace(config, vocab_size=len(vocabulary))
    print(f"vocabulary {len(vocabulary)} words; reviews truncated to {config.max_length} words")
    return config, vocabulary, tokens


def student_data(config, args, fit, labelled, vocabulary, tokens, splits, corpus):
    """`(batches, record)` of self-training's second stage: the labelled reviews and the
    unlabelled ones with the probabilities of the teacher (`teach`; `fit(run, labelled)` trains
    it), and the card's record."""
    probabilities, teaching = teach(config, args, lambda run: SentimentClassifier(fit(run, labelled), vocabulary),
                                    corpus["unlabelled"], tokens, splits)
    keras.utils.set_random_seed(config.seed)  # the student starts alike, whether the teacher was trained or loaded
    data = batches(vocabulary, config.max_length, tokens["train"] + tokens["unlabelled"],
                   np.concatenate([np.asarray(splits["train"][1], "float32"), probabilities]),
                   config.batch_size, config.seed, True)
    print(f"student: {len(data)} batches of labelled and teacher-labelled reviews, {config.student_epochs} epoch(s)")
    return data, teaching


def student_config(config):
    """The settings of self-training's final model: the teacher's, but for its epochs
    (`--student-epochs`), and `--student-units` and `--student-adversarial` where given."""
    units = config.units if config.student_units is None else config.student_units
    adversarial = config.adversarial if config.student_adversarial is None else config.student_adversarial
    return dataclasses.replace(config, units=units, adversarial=adversarial, epochs=config.student_epochs)


def score_test_split(classifier, texts, labels):
    """`metrics` of the classifier on the test reviews, printed."""
    result = metrics(labels, classifier.predict(texts, 128))
    print_metrics("test", result)
    return result


def accuracy(labels, logits):
    """Accuracy against the labels rounded to 0 or 1: a teacher's probability counts as its
    choice (Keras' `BinaryAccuracy` would count a label of 0.8 wrong whatever the prediction). A
    function, so that `compile` makes its metric inside the devices' scope (`TrainingRun.fit`)."""
    return keras.metrics.binary_accuracy(ops.cast(ops.greater(labels, 0.5), "float32"), logits, threshold=0.0)


def teacher_folder(config, args):
    return config.teacher or os.path.join(args.out, "teacher")


def teach(config, args, fit_teacher, unlabelled_texts, tokens, splits):
    """`(probabilities (n,), record)` of self-training's first stage: the probability that each
    unlabelled review is positive, by the teacher, and the card's record of it.

    The teacher is `--teacher FOLDER`, or a classifier trained here on the labelled reviews alone
    (`fit_teacher(run)`, with this run's settings) and saved in `<out>/teacher` until the final
    model is saved: a `--resume`d run then reuses it. Soft labels (probabilities, not 0 or 1) carry
    the teacher's doubt to the student, as in knowledge distillation (Hinton et al. 2015); the
    student, trained afresh with dropout and adversarial noise, learns from 50,000 more reviews
    (noisy-student self-training, Xie et al. 2020)."""
    folder = teacher_folder(config, args)
    start = time.time()
    if config.teacher or os.path.exists(os.path.join(folder, "card.json")):
        teacher = SentimentClassifier.load(folder)
        print(f"self-training: teacher {folder} (trained earlier)")
    else:
        teacher_config = dataclasses.replace(config, self_training=False)
        run = TrainingRun(teacher_config, folder, args.resume, cluster.from_args(args))
        print("self-training: the teacher, on the labelled reviews")
        teacher = fit_teacher(run)
        teacher.card = run.card(teacher.model, task="self-training teacher (trainers.sentiment)")
        run.save(teacher, teacher.card)
    trained_seconds = time.time() - start
    start = time.time()
    probabilities = np.asarray(teacher.predict(unlabelled_texts, 128), dtype="float32").reshape(-1)
    print(f"self-training: {len(probabilities)} unlabelled reviews labelled by the teacher in "
          f"{time.time() - start:.0f} s")
    second_opinion = None
    if config.teacher_ngrams:
        probabilities, second_opinion = mix_with_ngrams(config, teacher, probabilities, tokens, splits)
    confident = float(np.mean((probabilities > 0.9) | (probabilities < 0.1)))
    print(f"self-training: labels' mean probability {probabilities.mean():.3f}; {confident:.1%} beyond 0.9 or 0.1")
    training, average = teacher.card.get("training", {}), teacher.card.get("weight_average")
    average = average if isinstance(average, dict) else {}  # "off" with --no-average-weights
    kept_loss = (average.get("val_loss") or {}).get(average.get("kept"), training.get("best_val_loss"))
    student = student_config(config)
    return probabilities, {
        "teacher": config.teacher or "trained in this run on the labelled reviews (this run's settings)",
        "teacher_val_loss": kept_loss, "teacher_minutes": round(trained_seconds / 60, 1),
        "unlabelled_reviews": len(probabilities), "labels": "teacher probabilities (soft)",
        "mean_probability": round(float(probabilities.mean()), 4), "confident_share": round(confident, 4),
        "student_epochs": student.epochs, "student_units": student.units, "student_adversarial": student.adversarial,
        "ngram_opinion": second_opinion or "off"}


def mix_with_ngrams(config, teacher, probabilities, tokens, splits):
    """`(probabilities (n,), record)`: the teacher's probabilities of the unlabelled reviews mixed,
    in logits, with an n-gram logistic regression's (`trainers.ngram_teacher`) fitted on the
    labelled reviews, the teacher's share the one with the lowest validation loss."""
    start = time.time()
    # at least 2 films (or reviews, without film ids): an n-gram seen once says nothing about others
    opinion = NgramLogisticRegression(config.teacher_ngrams, max(config.min_films, 2)).fit(
        tokens["train"], splits["train"][1], splits["train"][2])
    val_texts, val_labels = splits["validation"][:2]
    ngram_val, ngram_unlabelled = opinion.logits(tokens["validation"]), opinion.logits(tokens["unlabelled"])
    teacher_val = logits_of(teacher.predict(val_texts, 128))
    share = mixture_weight(teacher_val, ngram_val, val_labels)
    mixed = share * logits_of(probabilities) + (1 - share) * ngram_unlabelled
    scores = {name: {"val_loss": round(log_loss(val_labels, z), 4),
                     "val_accuracy": round(metrics(val_labels, special.expit(z))["accuracy"], 4)}
              for name, z in (("teacher", teacher_val), ("ngram_model", ngram_val),
                              ("mixed", share * teacher_val + (1 - share) * ngram_val))}
    print(f"self-training: n-grams of up to {config.teacher_ngrams} words ({len(opinion.codes)}) in "
          f"{time.time() - start:.0f} s; teacher's share {share:.1f}; validation loss / accuracy " +
          ", ".join(f"{k} {v['val_loss']:.4f} / {v['val_accuracy']:.4f}" for k, v in scores.items()))
    return special.expit(mixed).astype("float32"), {
        "model": "logistic regression on NB-weighted n-grams (Wang & Manning 2012)", "order": config.teacher_ngrams,
        "ngrams": len(opinion.codes), "teacher_share": share, **scores, "seconds": round(time.time() - start)}


def logits_of(probabilities):
    """Log-odds `(n,)` of probabilities, clipped away from 0 and 1 (a float32 sigmoid saturates)."""
    return special.logit(np.clip(np.asarray(probabilities, "float64").reshape(-1), 1e-7, 1 - 1e-7))


def card_entries(config, corpus, splits, vocabulary, vector_seconds, result, teaching=None):
    """What the card says of this task besides the shared entries (`TrainingRun.card`)."""
    films = splits["train"][2]
    return {"task": "sentiment classification (positive / negative movie reviews)",
            "model": f"SentimentNet: embedding + bidirectional {config.cell.upper()} + masked mean/max pooling",
            "corpus": {"name": "IMDB Large Movie Review Dataset (Maas et al., 2011)", **corpus["info"]},
            "split": {"official": "25,000 train / 25,000 test", "seed": config.seed,
                      "validation_from": f"seeded {VALIDATION_FRACTION:.0%} of the training "
                                         + ("films (whole films held out)" if films else "reviews"),
                      **{k: len(v[0]) for k, v in splits.items()}},
            "vocabulary": len(vocabulary),
            "embedding_init": ({"method": "pretrained review language model (trainers.pretrain): embedding "
                                          "and encoder", "folder": config.pretrained} if pretrained_encoder(config)
                               else {"method": word_vectors.METHOD, "reviews": "training split + unlabelled",
                                     "seconds": round(vector_seconds, 1)} if config.embedding_init == "ppmi"
                               else "random"),
            "language_model_states": ({"folder": config.pretrained, "units": config.lm_units,
                                       "use": "fixed; its forward and backward states join the embeddings"}
                                      if config.lm_units else "off"),
            "self_training": teaching,
            "explanation": "integrated gradients on the word embeddings (zero baseline), scores in logits",
            "test": result}


def main(argv=None):
    args = build_parser().parse_args(argv)
    fixed = {}
    if args.source == "tfds":  # TFDS's copy has no film ids: all words are kept
        if args.min_films is not None and args.min_films > 1:
            raise cli.UsageError("--min-films needs the film of each review, which only --source keras has")
        fixed["min_films"] = 1
    config = cli.config_from_args(SentimentConfig, args, **fixed)
    cli.output_folders(args, "sentiment-imdb")
    if args.evaluate:
        return evaluate(config, args)
    if not 0 <= config.teacher_ngrams <= 3:
        raise cli.UsageError(f"--teacher-ngrams takes 0 (off) to 3 words, got {config.teacher_ngrams}")
    if config.head_warmup < 0:
        raise cli.UsageError(f"--head-warmup must be 0 or more steps, got {config.head_warmup}")
    if pretrained_encoder(config) and config.freeze_embedding:
        raise cli.UsageError("--freeze-embedding freezes ppmi word vectors; with --pretrained the embedding is the "
                             "language model's and is fine-tuned")
    for name in ("teacher", "student_units", "student_adversarial"):
        if getattr(config, name) is not None and not config.self_training:
            raise cli.UsageError(f"--{name.replace('_', '-')} needs --self-training (off with --quick or "
                                 "--no-self-training): it sets the teacher or the final model of self-training")
    if config.pretrained and config.pretrained_use == "encoder" and config.student_units is not None:
        raise cli.UsageError("--student-units cannot change the size of a --pretrained encoder (its sizes hold)")
    if (config.self_training and not config.teacher and keras.backend.backend() == "tensorflow"
            and (cluster.from_args(args).distributed or config.data_parallel)):
        raise cli.UsageError("on TensorFlow, a distributed run trains one model (a second model's collectives clash "
                             "with the first's, tensorflow/tensorflow#62790): add --no-self-training, or --teacher "
                             "FOLDER with a teacher trained first")
    if config.head_warmup and cluster.from_args(args).distributed:
        raise cli.UsageError("--head-warmup runs in a single process (its short fit is not distributed)")
    if config.pretrained_use == "states" and not config.pretrained:
        raise cli.UsageError("--pretrained-use states needs --pretrained FOLDER (the language model to read)")
    if config.lm_dropout and config.pretrained_use != "states":
        raise cli.UsageError("--lm-dropout needs --pretrained-use states (it drops the language model's states)")
    if config.head_warmup and (not config.pretrained or config.pretrained_use != "encoder"):
        raise cli.UsageError("--head-warmup needs --pretrained with --pretrained-use encoder (it protects a "
                             "pretrained encoder)")
    if config.freeze_embedding and config.embedding_init == "random":
        raise cli.UsageError("--freeze-embedding needs --embedding-init ppmi (a random embedding must learn)")
    return train(config, args)


if __name__ == "__main__":
    cli.run(main)
