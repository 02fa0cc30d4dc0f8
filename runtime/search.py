"""Greedy decoding and beam search of an encoder-decoder with attention, in NumPy: token ids in,
token ids and attention out.

Both take a *decoder*, anything with
- `target_vocab_size`,
- `encode(source (batch, S) int32) -> (values, keys, mask, states)`, NumPy arrays (`states` a list),
- `decode_step(tokens (batch,) int32, states, (values, keys, mask, ...)) -> (logits (batch, vocab),
  states, attention (batch, S))`, NumPy arrays.
The Keras models are decoded through `models.decoding` (compiled or eager calls of the layers
training runs), the exported ones through `runtime.onnx` (ONNX Runtime sessions): the same search,
so the same translations wherever the steps agree.

Reference: Wu et al. (2016, GNMT) for the length normalisation of beam search.
"""

import math

import numpy as np

from runtime.text import Vocabulary

MAX_LENGTH_PENALTY = 2.0  # GNMT's alpha: 0 ranks by the raw score; Wu et al. (2016) tuned it within [0, 1]

NEVER_OUTPUT = [Vocabulary.pad_id, Vocabulary.start_id]


def _row_limits(max_length, n):
    limits = np.broadcast_to(np.asarray(max_length, dtype=np.int64), (n,))
    return limits, int(limits.max())


def greedy_decode(model, source, max_length):
    """Most probable next word at every step, for a batch.

    Args:
        model: a decoder (see the module's docstring).
        source: `(batch, S)` int array, right-padded with 0.
        max_length: int or `(batch,)` ints: the most output tokens per sentence, end token included.

    Returns:
        `(tokens (batch, T) int, attention (batch, T, S) float)`; after the end token, or past a
        sentence's limit, tokens are 0 and attention rows are 0.
    """
    n = source.shape[0]
    limits, steps = _row_limits(max_length, n)
    encoded = model.encode(source)
    states, tokens = encoded[3], np.full(n, Vocabulary.start_id)
    done = limits <= 0
    out, attention = [], []
    for t in range(steps):
        logits, states, weights = model.decode_step(tokens, states, encoded)
        logits = np.array(logits)
        logits[:, NEVER_OUTPUT] = -np.inf
        tokens = np.where(done, Vocabulary.pad_id, np.argmax(logits, axis=-1))
        out.append(tokens)
        attention.append(np.where(done[:, None], 0.0, np.asarray(weights)))
        done = done | (tokens == Vocabulary.end_id) | (t + 1 >= limits)
        if done.all():
            break
    return _stack(out, n), _stack(attention, n, source.shape[1])


def beam_search(model, source, beam_width, max_length, length_penalty=1.0, n_best=None):
    """Beam search for a batch, all beams of all sentences in one decoder call per step.

    Hypotheses are ranked by their summed log-probability while searching; a finished one keeps
    its place and score. The best of the final beams is chosen by score / lp with the GNMT length
    normalisation lp = ((5 + length) / 6) ** length_penalty (length counts the end token).
    `beam_width=1` gives exactly `greedy_decode`.

    Args:
        model, source, max_length: As in `greedy_decode`.
        beam_width: Hypotheses kept per sentence (at most the target vocabulary size).
        length_penalty: alpha of lp, a number from 0 (ranks by the raw score) to
            `MAX_LENGTH_PENALTY` (2); anything else (negative, nan, inf) raises `ValueError`.

        n_best: `None` for the best hypothesis only, else how many of the final beams to return,
            best first (at most `beam_width`; a beam that never came alive scores -inf).

    Returns:
        `(tokens (batch, T), attention (batch, T, S), scores (batch,))`: the best hypothesis per
        sentence, padded as in `greedy_decode`, and its normalised score; with `n_best`, an axis of
        `n_best` hypotheses after the batch axis of each.
    """
    n, k = source.shape[0], int(beam_width)
    vocab = model.target_vocab_size
    if not 1 <= k <= vocab:
        raise ValueError(f"beam_width must be between 1 and {vocab}, got {beam_width!r}.")
    check_length_penalty(length_penalty)
    limits, steps = _row_limits(max_length, n)
    encoded = model.encode(source)
    rows = np.repeat(np.arange(n), k)  # beam b of sentence i is row i*k+b
    values, keys, mask, states = [np.take(x, rows, axis=0) for x in encoded[:3]] + [
        [np.take(s, rows, axis=0) for s in encoded[3]]]
    encoded = (values, keys, mask, states)
    scores = np.full((n, k), -np.inf, dtype=np.float64)
    scores[:, 0] = 0.0  # only the first beam is alive at the start: no duplicate hypotheses
    finished = np.repeat((limits <= 0)[:, None], k, axis=1)
    lengths = np.zeros((n, k), dtype=np.int64)
    history = np.zeros((n, k, 0), dtype=np.int64)
    attention = np.zeros((n, k, 0, source.shape[1]), dtype=np.float32)
    tokens, sentence = np.full(n * k, Vocabulary.start_id), np.arange(n)[:, None]
    for t in range(steps):
        logits, states, weights = model.decode_step(tokens, states, encoded)
        log_probs = _log_softmax(np.asarray(logits, np.float64)).reshape(n, k, vocab)
        log_probs[:, :, NEVER_OUTPUT] = -np.inf
        log_probs[finished] = -np.inf  # a finished hypothesis only continues with padding, free
        log_probs[finished, Vocabulary.pad_id] = 0.0
        candidates = (scores[:, :, None] + log_probs).reshape(n, k * vocab)
        top = np.argpartition(-candidates, k - 1, axis=1)[:, :k]  # (n, k), unordered
        top = np.take_along_axis(top, np.argsort(-np.take_along_axis(candidates, top, 1), 1, kind="stable"), 1)
        parent, word = np.divmod(top, vocab)  # (n, k) each
        was_finished = np.take_along_axis(finished, parent, 1)
        scores = np.take_along_axis(candidates, top, 1)
        lengths = np.take_along_axis(lengths, parent, 1) + ~was_finished
        finished = was_finished | (word == Vocabulary.end_id) | (t + 1 >= limits)[:, None]
        step_weights = np.asarray(weights).reshape(n, k, -1)[sentence, parent]
        history = np.concatenate([history[sentence, parent], word[..., None]], axis=2)
        attention = np.concatenate(
            [attention[sentence, parent], np.where(was_finished[..., None], 0.0, step_weights)[:, :, None]], axis=2)
        flat = (sentence * k + parent).reshape(-1)
        states = [np.take(s, flat, axis=0) for s in states]
        tokens = word.reshape(-1)
        if finished.all():
            break
    normalised = scores / ((5.0 + np.maximum(lengths, 1)) / 6.0) ** length_penalty
    if n_best is None:
        best = np.argmax(normalised, axis=1)
        return history[np.arange(n), best], attention[np.arange(n), best], normalised[np.arange(n), best]
    order = np.argsort(-normalised, axis=1, kind="stable")[:, :n_best]  # (n, n_best), best first
    return history[sentence, order], attention[sentence, order], np.take_along_axis(normalised, order, 1)


def check_length_penalty(alpha):
    """Raise a one-line `ValueError` unless `alpha` is a number from 0 to `MAX_LENGTH_PENALTY`:
    a negative alpha prefers the shortest hypotheses, nan or inf make every score nan or 0."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.integer, np.floating)) \
            or not math.isfinite(alpha) or not 0 <= alpha <= MAX_LENGTH_PENALTY:
        raise ValueError(f"length_penalty must be a number from 0 to {MAX_LENGTH_PENALTY:g} (GNMT's alpha; 0 ranks "
                         f"by the raw score), got {alpha!r}")


def _log_softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def _stack(steps, n, width=None):
    if steps:
        return np.stack(steps, axis=1)
    return np.zeros((n, 0) if width is None else (n, 0, width))
