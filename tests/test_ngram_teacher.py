"""The n-gram second opinion of self-training's teacher (trainers/ngram_teacher.py): its n-gram
codes, the film filter, and that it learns what a word pair says."""

import numpy as np
import pytest

from trainers.ngram_teacher import NgramLogisticRegression, mixture_weight


def pair_reviews(n, seed=0):
    """Filler words and "not good" (negative) or "good" alone (positive): only the pair tells."""
    rng = np.random.default_rng(seed)
    filler = ["the", "movie", "was", "plot", "a", "and"]
    reviews, labels = [], []
    for _ in range(n):
        label = int(rng.integers(2))
        words = list(rng.choice(filler, size=6))
        at = int(rng.integers(7))
        words[at:at] = ["good"] if label else ["not", "good"]
        words += ["not"] if label else []  # "not" alone says nothing: every review has one
        reviews.append(words)
        labels.append(label)
    return reviews, np.asarray(labels)


def test_learns_the_word_pair_that_decides():
    reviews, labels = pair_reviews(400)
    model = NgramLogisticRegression(order=2, min_films=2).fit(reviews, labels)
    test_reviews, test_labels = pair_reviews(200, seed=1)
    assert np.mean((model.logits(test_reviews) > 0) == test_labels) > 0.95
    words_only = NgramLogisticRegression(order=1, min_films=2).fit(reviews, labels)
    assert np.mean((words_only.logits(test_reviews) > 0) == test_labels) < 0.9  # the pair is what tells


def test_codes_tell_words_pairs_and_triples_apart_and_unknown_words_break_them():
    model = NgramLogisticRegression(order=3).fit([["a", "b", "c"], ["c", "b", "a"]], [1, 0])
    codes = model._gram_codes(["a", "b", "c"])
    assert len(codes) == 3 + 2 + 1 and len(set(codes)) == 6
    assert len(model._gram_codes(["a", "zzz", "b"])) == 2  # the words a and b; no pair or triple spans zzz
    assert set(model._gram_codes(["b", "a"])) <= set(model._gram_codes(["c", "b", "a"]))


def test_ngrams_of_one_films_reviews_are_dropped():
    reviews = [["great", "titanic"], ["great", "fun"], ["titanic", "dull"], ["dull", "fun"]]
    films = ["titanic", "other", "titanic", "other2"]
    model = NgramLogisticRegression(order=1, min_films=2).fit(reviews, [1, 1, 0, 0], films)
    kept = {w for w in model.words if model._gram_codes([w])[0] in model.codes}
    assert kept == {"great", "fun", "dull"}  # titanic: two reviews, one film
    assert model.logits([["titanic"], []]).shape == (2,)  # unknown and empty reviews: the bias alone


def test_mixture_weight_chooses_the_better_opinion():
    rng = np.random.default_rng(0)
    labels = rng.integers(2, size=500)
    good = (2 * labels - 1) * 2.0 + rng.normal(size=500)
    assert mixture_weight(good, rng.normal(size=500), labels) >= 0.9
    assert mixture_weight(rng.normal(size=500), good, labels) <= 0.1


@pytest.mark.parametrize("settings", [dict(order=0), dict(min_films=0), dict(c=0)])
def test_bad_settings_are_refused(settings):
    with pytest.raises(ValueError, match="bad n-gram model settings"):
        NgramLogisticRegression(**settings)
