"""Word vectors from raw text, by the SVD of a positive PMI matrix (Levy, Goldberg and Dagan, 2015).

    id rows -> co-occurrence counts in a window -> positive PMI (smoothed contexts) -> truncated SVD

A count-based alternative to word2vec that needs nothing but numpy and scipy and a minute or two
on a CPU. The sentiment trainer starts its embedding from these vectors, computed from the
training reviews and IMDB's 50,000 unlabelled ones, so that rare words arrive with a meaning
learnt from far more text than the labelled reviews hold (Maas et al., 2011, the paper of the
data set, learn their word vectors from the same unlabelled reviews).
"""

import numpy as np
from scipy import sparse

WINDOW = 5  # words either side that count as context
CONTEXT_POWER = 0.75  # smoothing of the context distribution (Levy et al.; word2vec's 3/4)
METHOD = f"SVD of positive PMI (window {WINDOW}, 1/distance weights, context power {CONTEXT_POWER})"


def cooccurrences(id_rows, vocab_size, window=WINDOW, skip_ids=(0, 1)):
    """Symmetric co-occurrence counts `(vocab_size, vocab_size)` (sparse CSR, float64) of words at
    most `window` positions apart in the same row, weighted `1 / distance` (as GloVe does: near
    words say more). Ids in `skip_ids` (padding, unknown) are neither words nor contexts."""
    ids = np.concatenate([np.asarray(row, dtype="int64") for row in id_rows] + [np.zeros(0, "int64")])
    # Row boundaries: a pair must not straddle two rows.
    row_of = np.repeat(np.arange(len(id_rows)), [len(row) for row in id_rows])
    counts = sparse.csr_matrix((vocab_size, vocab_size))
    keep = ~np.isin(ids, skip_ids)
    for distance in range(1, window + 1):
        left, right = ids[:-distance], ids[distance:]
        same = (row_of[:-distance] == row_of[distance:]) & keep[:-distance] & keep[distance:]
        pairs = sparse.coo_matrix((np.full(int(same.sum()), 1.0 / distance), (left[same], right[same])),
                                  shape=(vocab_size, vocab_size)).tocsr()
        counts = counts + pairs + pairs.T
    return counts


def positive_pmi(counts, context_power=CONTEXT_POWER):
    """Positive pointwise mutual information of a co-occurrence matrix (sparse CSR); context
    probabilities are raised to `context_power` (smoothing that tames PMI's bias to rare words)."""
    counts = sparse.csr_matrix(counts, dtype="float64")
    total = counts.sum()
    word = np.asarray(counts.sum(axis=1)).ravel() / total  # p(w)
    context = np.asarray(counts.sum(axis=0)).ravel() ** context_power
    context /= context.sum()  # smoothed p(c)
    coo = counts.tocoo()
    pmi = np.log(coo.data / total) - np.log(word[coo.row]) - np.log(context[coo.col])
    positive = pmi > 0
    return sparse.csr_matrix((pmi[positive], (coo.row[positive], coo.col[positive])), shape=counts.shape)


def truncated_svd(matrix, rank, seed=0, oversample=16, power_iterations=4):
    """`(U, s)`: the leading `rank` left singular vectors `(n, rank)` and singular values `(rank,)`
    of a sparse matrix, by randomised range finding (Halko, Martinsson and Tropp, 2011)."""
    rng = np.random.default_rng(seed)
    basis = matrix @ rng.standard_normal((matrix.shape[1], rank + oversample))
    for _ in range(power_iterations):  # sharpen the spectrum; QR keeps the columns independent
        basis, _ = np.linalg.qr(basis)
        basis, _ = np.linalg.qr(matrix.T @ basis)
        basis = matrix @ basis
    basis, _ = np.linalg.qr(basis)
    u_small, s, _ = np.linalg.svd(basis.T @ matrix, full_matrices=False)  # (rank + oversample, ...)
    return (basis @ u_small)[:, :rank], s[:rank]


def ppmi_svd_vectors(id_rows, vocab_size, dim, window=WINDOW, seed=0, scale=0.05):
    """Word vectors `(vocab_size, dim)` float32 from rows of token ids.

    Each vector is `U * sqrt(s)` of the positive PMI matrix (the symmetric weighting of Levy et al.),
    then the whole table is scaled so its entries have standard deviation `scale` (about that of
    Keras' default embedding initialiser, so training starts at the usual step sizes). Words that
    never co-occur (padding, unknown, unseen) get zero vectors.
    """
    u, s = truncated_svd(positive_pmi(cooccurrences(id_rows, vocab_size, window)), dim, seed)
    vectors = u * np.sqrt(s)
    return (vectors * (scale / max(vectors.std(), 1e-12))).astype("float32")


def nearest(vectors, vocabulary, word, count=8):
    """The `count` words whose vectors are nearest to `word`'s by cosine, for inspection."""
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    own = vocabulary.index[word]
    scores = unit @ unit[own]
    return [vocabulary.tokens[i] for i in np.argsort(-scores, kind="stable") if i != own][:count]
