"""A second opinion for self-training's teacher: logistic regression on naive-Bayes-weighted word
n-grams (NBSVM's features, Wang & Manning 2012), fitted on the labelled reviews in about a minute.

    tokens -> binary presence of every word, word pair and triple -> times its NB log-count ratio
           -> L2-regularised logistic regression (L-BFGS) -> logit

A bag of n-grams and a recurrent network err on different reviews, so the mean of their logits
labels the unlabelled reviews better than either alone (Mesnil et al. 2014 ensemble the two for
IMDB). Only the teacher uses it: the student, the saved model, stays the recurrent network.
Written on scipy, already a dependency (trainers/word_vectors.py): scikit-learn would add a package
for one vectoriser and one L-BFGS fit.
"""

import collections

import numpy as np
from scipy import optimize, sparse, special

ORDER = 3  # words per n-gram at most (validation accuracy 0.9178 with pairs, 0.9182 with triples)
INVERSE_REGULARISATION = 0.3  # C: chosen among 0.1, 0.3, 1 on validation loss (benchmarks/RESULTS.md)


class NgramLogisticRegression:
    """Binary classifier of tokenised reviews on NB-weighted n-gram presence.

    Args:
        order: longest n-gram (1: words only).
        min_films: an n-gram counts only if reviews of at least this many films use it (so no
            film's names or quotes; with `films=None` in `fit`, reviews instead of films).
        c: inverse strength of the L2 penalty (as scikit-learn's `C`), per training review.
    """

    def __init__(self, order=ORDER, min_films=2, c=INVERSE_REGULARISATION):
        if order < 1 or min_films < 1 or c <= 0:
            raise ValueError(f"bad n-gram model settings: order {order}, min_films {min_films}, c {c}")
        self.order, self.min_films, self.c = order, min_films, c

    def fit(self, token_lists, labels, films=None):
        """Learn the n-grams, their NB weights and the regression from tokenised reviews and 0/1
        labels; returns `self`."""
        labels = np.asarray(labels, dtype="float64")
        self.words = {w: i + 1 for i, w in enumerate(sorted({w for tokens in token_lists for w in tokens}))}
        if (len(self.words) + 1) ** self.order * self.order >= 2 ** 63:
            raise ValueError(f"{len(self.words)} words: n-grams of {self.order} do not fit 64-bit codes")
        grams = [self._gram_codes(tokens) for tokens in token_lists]
        self.codes = _shared_codes(grams, films, self.min_films)  # sorted: searched by `_features`
        x = self._features(grams)  # (reviews, n-grams), 0/1
        positive = 1.0 + np.asarray(x[labels > 0.5].sum(axis=0)).ravel()  # add-one smoothed counts
        negative = 1.0 + np.asarray(x[labels <= 0.5].sum(axis=0)).ravel()
        self.ratios = np.log(positive / positive.sum()) - np.log(negative / negative.sum())
        self.weights, self.bias = _logistic_regression(x @ sparse.diags(self.ratios), labels, self.c)
        return self

    def logits(self, token_lists, chunk=4096):
        """`(n,)` logits (log-odds of positive) of tokenised reviews, `chunk` reviews at a time (so
        that 50,000 reviews need no 50,000-row matrix)."""
        scale = self.ratios * self.weights
        parts = [self._features([self._gram_codes(tokens) for tokens in token_lists[i:i + chunk]]) @ scale
                 for i in range(0, len(token_lists), chunk)]
        return np.concatenate(parts + [np.zeros(0)]) + self.bias

    def _gram_codes(self, tokens):
        """Distinct int64 codes of the review's n-grams: word ids in base `len(words) + 1`, offset by
        order so that a pair never equals a word; unknown words (id 0) end every n-gram they are in."""
        ids = np.asarray([self.words.get(w, 0) for w in tokens], dtype="int64")
        base, codes, code = len(self.words) + 1, [], np.zeros(len(ids), "int64")
        known = np.ones(len(ids), bool)
        for n in range(self.order):  # code[i] covers ids[i : i + n + 1]
            width = len(ids) - n
            code, known = code[:width] * base + ids[n:], known[:width] & (ids[n:] > 0)
            codes.append(code[known] * self.order + n)
        return np.unique(np.concatenate(codes))

    def _features(self, grams):
        """Sparse `(len(grams), n-grams)` 0/1 matrix of each review's known n-grams."""
        columns, rows = [], []
        for row, codes in enumerate(grams):
            at = np.searchsorted(self.codes, codes)
            hit = at < len(self.codes)
            hit[hit] = self.codes[at[hit]] == codes[hit]
            columns.append(at[hit])
            rows.append(np.full(int(hit.sum()), row))
        columns, rows = np.concatenate(columns + [np.zeros(0, "int64")]), np.concatenate(rows + [np.zeros(0, "int64")])
        return sparse.csr_matrix((np.ones(len(rows)), (rows, columns)), shape=(len(grams), len(self.codes)))


def _shared_codes(grams, films, min_films):
    """Sorted codes of the n-grams that reviews of at least `min_films` films (or reviews) use."""
    groups = collections.defaultdict(list)
    for i, codes in enumerate(grams):
        groups[films[i] if films is not None else i].append(codes)
    per_group = np.concatenate([np.unique(np.concatenate(c)) for c in groups.values()] + [np.zeros(0, "int64")])
    codes, counts = np.unique(per_group, return_counts=True)
    return codes[counts >= min_films]


def _logistic_regression(x, labels, c):
    """`(weights, bias)` minimising the mean log loss plus `||weights||^2 / (2 c n)` by L-BFGS."""
    n = len(labels)
    penalty = 1.0 / (c * n)

    def loss_and_gradient(theta):
        w, b = theta[:-1], theta[-1]
        z = x @ w + b
        error = special.expit(z) - labels  # d loss / d z
        loss = np.mean(np.logaddexp(0.0, z) - labels * z) + 0.5 * penalty * (w @ w)
        return loss, np.append(x.T @ error / n + penalty * w, error.mean())

    theta = optimize.minimize(loss_and_gradient, np.zeros(x.shape[1] + 1), jac=True, method="L-BFGS-B",
                              options={"maxiter": 500}).x
    return theta[:-1], theta[-1]


def mixture_weight(first, second, labels, steps=11):
    """The share `w` in `0, 0.1, ..., 1` whose logits `w * first + (1 - w) * second` have the
    lowest log loss against 0/1 `labels` (the validation reviews')."""
    shares = np.linspace(0.0, 1.0, steps)
    return float(shares[np.argmin([log_loss(labels, w * first + (1 - w) * second) for w in shares])])


def log_loss(labels, logits):
    """Mean binary cross-entropy of logits `(n,)` against 0/1 labels `(n,)`."""
    labels = np.asarray(labels, dtype="float64")
    return float(np.mean(np.logaddexp(0.0, logits) - labels * logits))
