"""Sentiment model: learning, padding invariance, HTML, explanations, save/load across backends,
and awkward inputs (empty, huge, non-English, emoji)."""

import dataclasses

import keras
import numpy as np
import pytest
from keras import ops

from models.classifier import SentimentClassifier
from models.sentiment import SentimentNet, SentimentNetConfig
from runtime.text import Vocabulary, clean_review, review_words, truncate

from helpers import run_on_other_backend

POSITIVE, NEGATIVE = ["great", "wonderful", "superb"], ["awful", "boring", "terrible"]
FILLER = ["the", "movie", "plot", "actor", "scene", "and", "was", "a", "it", "film"]


def synthetic_reviews(n, seed=0):
    """Filler words with one or two sentiment words: the label is which kind they are."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for _ in range(n):
        label = int(rng.integers(2))
        words = list(rng.choice(FILLER, size=int(rng.integers(4, 12))))
        for _ in range(int(rng.integers(1, 3))):
            words.insert(int(rng.integers(len(words) + 1)), rng.choice(POSITIVE if label else NEGATIVE))
        texts.append(" ".join(words) + " .")
        labels.append(label)
    return texts, np.asarray(labels, "float32")


@pytest.fixture(scope="module")
def trained():
    keras.utils.set_random_seed(0)
    texts, labels = synthetic_reviews(512)
    vocabulary = Vocabulary.build([t.split() for t in texts])
    model = SentimentNet(SentimentNetConfig(vocab_size=len(vocabulary), embedding_dim=8, units=8, dropout=0.0,
                                            word_dropout=0.0, max_length=32))
    classifier = SentimentClassifier(model, vocabulary)
    model.compile(keras.optimizers.Adam(0.02), keras.losses.BinaryCrossentropy(from_logits=True),
                  metrics=[keras.metrics.BinaryAccuracy(threshold=0.0)])
    model.fit(classifier.encode(texts), labels, epochs=6, batch_size=64, verbose=0)
    return classifier


def test_tiny_model_learns_synthetic_sentiment(trained):
    texts, labels = synthetic_reviews(200, seed=1)
    accuracy = np.mean((trained.predict(texts) > 0.5) == labels)
    assert accuracy >= 0.95


def test_padding_does_not_change_prediction(trained):
    ids = trained.encode(["the movie was superb and the plot great ."])
    padded = np.concatenate([ids, np.zeros((1, 9), "int32")], axis=1)
    np.testing.assert_allclose(ops.convert_to_numpy(trained.model(padded)), ops.convert_to_numpy(trained.model(ids)),
                               atol=1e-5)


def test_html_is_stripped():
    assert review_words("Loved it.<br /><br />Really &amp; truly!") == ["Loved", "it", ".", "Really", "&", "truly", "!"]
    assert "<" not in clean_review("a<br/>b<i>c</i>")


def test_truncate_keeps_head_and_tail():
    assert truncate(list(range(10)), 4) == [0, 1, 8, 9]
    assert truncate([1, 2], 4) == [1, 2]


def test_explanations_add_up_and_point_the_right_way(trained):
    result = trained.explain("the plot was awful but the actor was superb .")
    words, scores = result["words"], np.asarray(result["scores"])
    assert len(words) == len(scores) == 10
    difference = result["logit"] - result["baseline_logit"]
    np.testing.assert_allclose(scores.sum(), difference, atol=0.05 * max(1.0, abs(difference)))
    assert abs(result["completeness_error"]) <= 0.05 * max(1.0, abs(difference))
    assert scores[words.index("superb")] > 0 > scores[words.index("awful")]


@pytest.mark.parametrize(
    "text",
    ["x" * 100_000, "word " * 20_000, "Это был ужасный фильм", "映画はとても良かった", "😀😀😀 🎬", "a"],
    ids=["100k-chars", "20k-words", "russian", "japanese", "emoji", "one-letter"],
)
def test_awkward_inputs_give_a_probability(trained, text):
    (probability,) = trained.predict([text])
    assert 0.0 <= probability <= 1.0
    assert len(trained.explain(text, steps=4, max_steps=8)["words"]) <= trained.max_length


def test_adversarial_perturbation_raises_the_loss_more_than_a_random_one(trained):
    config = dataclasses.replace(trained.model.config, adversarial=3.0)
    model = SentimentNet(config)
    model.build()
    model.set_weights(trained.model.get_weights())
    texts, labels = synthetic_reviews(64, seed=2)
    ids, labels = trained.encode(texts), labels[:, None]

    def loss_of(embedded):
        logits = model.call_embedded(embedded, ops.not_equal(ids, 0))
        return float(ops.mean(keras.losses.binary_crossentropy(labels, logits, from_logits=True)))

    embedded = model.embedding(ids)
    size = 3.0 * float(ops.std(model.embedding.embeddings))
    noise = np.random.default_rng(0).normal(size=embedded.shape) * (ids != 0)[..., None]
    noise *= size / np.sqrt((noise ** 2).sum(axis=(1, 2), keepdims=True))
    adversarial = float(model.adversarial_loss(ids, labels))  # no dropout in this model: deterministic
    assert adversarial > loss_of(embedded + ops.convert_to_tensor(noise, embedded.dtype)) + 0.01
    assert adversarial > loss_of(embedded) + 0.01
    # Training adds it to the compiled loss; evaluation does not.
    model.compile(loss=keras.losses.BinaryCrossentropy(from_logits=True))
    clean = float(model.compute_loss(ids, labels, model(ids), training=False))
    assert float(model.compute_loss(ids, labels, model(ids), training=True)) == pytest.approx(clean + adversarial,
                                                                                              rel=1e-4)


def test_adversarial_training_learns_on_every_backend():
    keras.utils.set_random_seed(1)
    texts, labels = synthetic_reviews(256)
    vocabulary = Vocabulary.build([t.split() for t in texts])
    model = SentimentNet(SentimentNetConfig(vocab_size=len(vocabulary), embedding_dim=8, units=8, max_length=32,
                                            adversarial=2.0))
    classifier = SentimentClassifier(model, vocabulary)
    model.compile(keras.optimizers.Adam(0.02), keras.losses.BinaryCrossentropy(from_logits=True))
    model.fit(classifier.encode(texts), labels[:, None], epochs=6, batch_size=64, verbose=0)
    test_texts, test_labels = synthetic_reviews(200, seed=1)
    assert np.mean((classifier.predict(test_texts) > 0.5) == test_labels) >= 0.95


@pytest.mark.parametrize("text", ["", "   \n\t ", "<br /><br />"])
def test_empty_review_gets_a_clear_message(trained, text):
    with pytest.raises(ValueError, match="empty"):
        trained.predict([text])


def test_wrong_types_get_a_clear_message(trained):
    with pytest.raises(TypeError, match="list of reviews"):
        trained.predict("a single string")
    with pytest.raises(TypeError, match="string"):
        trained.predict([42])


def test_save_load_under_another_backend_gives_same_probabilities(trained, tmp_path):
    texts = ["the movie was great .", "boring and terrible", "superb film"]
    trained.save(tmp_path / "model", card={"task": "test"})
    expected = trained.predict(texts)
    script = (
        "import json, sys\n"
        "from models.classifier import SentimentClassifier\n"
        f"c = SentimentClassifier.load(r'{tmp_path / 'model'}')\n"
        f"print(json.dumps(c.predict({texts!r}).tolist()))\n"
    )
    stdout = run_on_other_backend(script)
    np.testing.assert_allclose(np.asarray(eval(stdout.strip().splitlines()[-1])), expected, atol=1e-5)


# --- validation by film --------------------------------------------------------------------------

def test_validation_holds_out_whole_films():
    from trainers import data

    films = [f"tt{i % 40}" for i in range(400)]  # 40 films, 10 reviews each
    texts, labels = [f"review {i}" for i in range(400)], np.arange(400) % 2
    (train, _), (held, held_labels) = data.holdout(texts, labels, 0.1, seed=3, groups=films)
    film_of = dict(zip(texts, films))
    assert not {film_of[t] for t in train} & {film_of[t] for t in held}
    assert len(held) == 40 and len(train) == 360 and len(held_labels) == 40  # 4 of the 40 films
    again = data.holdout(texts, labels, 0.1, seed=3, groups=films)
    assert again[1][0] == held  # seeded


def test_vocabulary_can_drop_words_of_a_single_film():
    from trainers.sentiment import build_vocabulary

    reviews = [["great", "gandalf"], ["great", "gandalf"], ["great", "boring"], ["boring"]]
    films = ["tt1", "tt1", "tt2", "tt3"]
    assert "gandalf" in build_vocabulary(reviews, films, 100, min_films=1).index
    vocabulary = build_vocabulary(reviews, films, 100, min_films=2)
    assert "gandalf" not in vocabulary.index and {"great", "boring"} <= set(vocabulary.index)


def test_imdb_train_and_test_films_are_all_but_disjoint():
    """The property that makes validation by film the honest choice (real archive: 3,456 training
    and 3,581 test films; one film, tt0406816, has reviews on both sides)."""
    from trainers import data

    corpus = data.load_imdb("keras")
    train_films, test_films = corpus["films"]["train"], corpus["films"]["test"]
    assert len(train_films) == len(corpus["train"][0]) == 25000 and len(test_films) == 25000
    assert all(f.startswith("tt") and f[2:].isdigit() for f in train_films[:100] + test_films[-100:])
    assert len(set(train_films) & set(test_films)) <= 1


# --- word vectors from unlabelled text ------------------------------------------------------------

def test_cooccurrences_stay_inside_a_review_and_weigh_by_distance():
    from trainers import word_vectors

    counts = word_vectors.cooccurrences([[2, 3, 4], [5, 6]], vocab_size=7, window=2).toarray()
    np.testing.assert_allclose(counts, counts.T)
    assert counts[2, 3] == 1.0 and counts[2, 4] == 0.5  # neighbours, then two apart
    assert counts[4, 5] == 0.0  # the end of one review is not next to the start of the next
    assert counts[0].sum() == counts[1].sum() == 0.0  # padding and unknown are skipped


def test_word_vectors_put_words_of_like_contexts_together():
    """Synthetic corpus: 'great' and 'superb' share their contexts, 'awful' has others."""
    from trainers import word_vectors

    rng = np.random.default_rng(0)
    reviews = []
    for _ in range(400):
        praise = rng.random() < 0.5
        if praise:
            reviews.append(["loved", "this", rng.choice(["great", "superb"]), "wonderful", "story"])
        else:
            reviews.append(["hated", "this", "awful", "dull", "story"])
    vocabulary = Vocabulary.build(reviews)
    rows = [vocabulary.encode(review) for review in reviews]
    vectors = word_vectors.ppmi_svd_vectors(rows, len(vocabulary), dim=4, window=2)
    assert vectors.shape == (len(vocabulary), 4) and vectors.dtype == np.float32
    assert word_vectors.nearest(vectors, vocabulary, "great", count=1) == ["superb"]
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    index = vocabulary.index
    assert unit[index["great"]] @ unit[index["superb"]] > unit[index["great"]] @ unit[index["awful"]] + 0.2


def test_trainer_runs_end_to_end_on_a_slice_of_imdb(tmp_path, capsys, monkeypatch):
    """`python -m trainers.sentiment` on 300 real reviews (word vectors from 300 unlabelled ones),
    then `--evaluate` on a label<TAB>review file: the wiring, not the quality."""
    import json

    from trainers import sentiment as trainer

    monkeypatch.chdir(tmp_path)  # the trainer's checkpoints/ folder

    out = tmp_path / "sentiment"
    tiny = ["--max-examples", "300", "--epochs", "1", "--units", "4", "--embedding-dim", "8", "--vocab", "500",
            "--max-length", "60"]
    assert trainer.main([*tiny, "--out", str(out)]) == 0
    card = json.loads((out / "card.json").read_text())
    assert 100 < card["vocabulary"] <= 500 and card["split"]["validation"] > 0 and card["test"]["examples"] == 300
    assert card["embedding_init"]["reviews"] == "training split + unlabelled"
    assert card["settings"]["freeze_embedding"] is False and "used" in card["weight_average"]
    teaching = card["self_training"]  # the default: a teacher trained first, its labels on 300 unlabelled reviews
    assert teaching["unlabelled_reviews"] == 300 and 0 < teaching["mean_probability"] < 1
    assert teaching["teacher_val_loss"] > 0 and not (out / "teacher").exists()  # kept in the card only
    assert len(card["training"]["history"]["loss"]) == 1  # --student-epochs 1
    opinion = teaching["ngram_opinion"]  # the teacher's logits mixed with an n-gram regression's
    assert opinion["order"] == 3 and opinion["ngrams"] > 0 and 0 <= opinion["teacher_share"] <= 1
    alone = min(opinion["teacher"]["val_loss"], opinion["ngram_model"]["val_loss"])
    assert opinion["mixed"]["val_loss"] <= alone + 1e-4  # a share of 0 or 1 is either alone
    student = tmp_path / "student"  # a saved classifier as the teacher
    assert trainer.main([*tiny, "--teacher", str(out), "--out", str(student), "--no-test", "--student-units", "6",
                         "--student-adversarial", "0", "--teacher-ngrams", "0"]) == 0
    card = json.loads((student / "card.json").read_text())
    assert card["self_training"]["teacher"] == str(out) and card["test"] is None and out.exists()
    assert card["self_training"]["student_units"] == 6 and card["self_training"]["student_adversarial"] == 0
    assert card["self_training"]["ngram_opinion"] == "off"
    from models.classifier import SentimentClassifier

    assert SentimentClassifier.load(student).model.config.units == 6  # the student's size, not the teacher's 4
    reviews = tmp_path / "reviews.tsv"
    reviews.write_text("1\tA wonderful, moving film.\n0\tDull and far too long.<br />Avoid.\n", encoding="utf-8")
    capsys.readouterr()
    assert trainer.main(["--evaluate", "--model", str(out), "--test-file", str(reviews)]) == 0
    assert "reviews.tsv (2 reviews): accuracy" in capsys.readouterr().out


def test_bad_flag_combinations_are_one_line_usage_errors():
    from trainers import cli
    from trainers import sentiment as trainer

    with pytest.raises(cli.UsageError, match="only --source keras"):
        trainer.main(["--source", "tfds", "--min-films", "3"])
    with pytest.raises(cli.UsageError, match="needs --embedding-init ppmi"):
        trainer.main(["--embedding-init", "random", "--freeze-embedding"])
    with pytest.raises(cli.UsageError, match="--teacher needs --self-training"):
        trainer.main(["--no-self-training", "--teacher", "saved_models/sentiment-imdb"])
    with pytest.raises(cli.UsageError, match="--student-units needs --self-training"):
        trainer.main(["--no-self-training", "--student-units", "128"])
    with pytest.raises(cli.UsageError, match="--student-adversarial needs --self-training"):
        trainer.main(["--no-self-training", "--student-adversarial", "0"])
    with pytest.raises(cli.UsageError, match="--teacher-ngrams takes 0"):
        trainer.main(["--teacher-ngrams", "4"])
    with pytest.raises(cli.UsageError, match="size of a --pretrained encoder"):
        trainer.main(["--pretrained", "saved_models/sentiment-lm", "--student-units", "128"])
    with pytest.raises(cli.UsageError, match="--pretrained-use states needs --pretrained"):
        trainer.main(["--pretrained-use", "states"])
    with pytest.raises(cli.UsageError, match="--lm-dropout needs --pretrained-use states"):
        trainer.main(["--pretrained", "saved_models/sentiment-lm", "--lm-dropout", "0.5"])
    with pytest.raises(cli.UsageError, match="--head-warmup needs --pretrained with --pretrained-use encoder"):
        trainer.main(["--pretrained", "saved_models/sentiment-lm", "--pretrained-use", "states", "--head-warmup", "5"])
    if keras.backend.backend() == "tensorflow":  # one model per distributed run (README, several machines)
        for flags in (["--processes", "2", "--process-index", "0"], ["--data-parallel"]):
            with pytest.raises(cli.UsageError, match="trains one model"):
                trainer.main(flags)


def test_student_config_takes_the_teachers_settings_unless_given():
    from trainers.sentiment import SentimentConfig, student_config

    teacher = SentimentConfig(units=32, adversarial=2.5)
    assert (student_config(teacher).units, student_config(teacher).adversarial) == (32, 2.5)
    student = student_config(SentimentConfig(units=32, adversarial=2.5, student_units=64, student_adversarial=0.0,
                                             epochs=2, student_epochs=3))
    assert (student.units, student.adversarial, student.epochs) == (64, 0.0, 3)


def test_accuracy_counts_a_soft_label_as_its_rounded_choice():
    from trainers.sentiment import accuracy

    labels = np.array([[0.9], [0.2], [1.0], [0.4]], "float32")
    hits = accuracy(labels, np.array([[2.0], [-1.0], [-3.0], [0.5]], "float32"))
    assert float(keras.ops.mean(hits)) == pytest.approx(0.5)  # right, right, wrong, wrong


def test_tail_weight_average_is_the_mean_of_the_last_steps():
    from trainers.averaging import TailWeightAverage

    class Recorder(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seen = []

        def on_train_batch_end(self, batch, logs=None):
            self.seen.append([ops.convert_to_numpy(v) for v in self.model.trainable_weights])

    x = np.random.default_rng(0).normal(size=(64, 3)).astype("float32")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.Adam(0.1), loss="mse")
    recorder, averager = Recorder(), TailWeightAverage(total_steps=8, fractions=(0.5, 0.25), every=2)
    assert averager.averaged() is None
    model.fit(x, x[:, :1], batch_size=8, epochs=1, verbose=0, callbacks=[recorder, averager])
    expected = [np.mean([recorder.seen[i][k] for i in (5, 7)], axis=0) for k in range(2)]  # steps 6 and 8
    assert averager.counts == {0.5: 2, 0.25: 1}
    for got, want in zip(averager.averaged(), expected):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    for got, want in zip(averager.averaged(0.25), recorder.seen[7]):  # the last quarter: step 8 only
        np.testing.assert_allclose(got, want, rtol=1e-6)
