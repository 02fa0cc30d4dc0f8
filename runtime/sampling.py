"""Streaming character generation, prompt in and characters out as they come, over any
character model with `initial_states`, `prime` and `step` (`TextGenerator`): the Keras `CharLM`
(`models.generator.CharGenerator`) or its ONNX export (`runtime.onnx.OnnxGenerator`).

Generation does not re-read a sliding window for each new character the way the TensorFlow
tutorial's `OneStep` does: the network is recurrent, so it primes its state with the prompt once
and then costs one step per character. The next character is drawn on the host from the 60-odd
logits with temperature, top-k and top-p and a seeded NumPy generator, which lets a Python
generator hand back each character as it comes and gives the same text for the same seed on every
backend and runtime. (keras_hub's samplers run their whole loop inside one compiled `while_loop`,
which cannot yield characters as they come.)

Limits: a prompt of at most `MAX_PROMPT` characters (reading one costs about 0.5 ms a character on
a 2-core CPU, so 10,000 take some 5-10 s) and at most `MAX_GENERATE` new characters per call;
beyond them a one-line `ValueError`. Prompt characters outside the vocabulary are skipped with an
`UnknownTextWarning` (and `Session.notice`).

Reference: Holtzman et al. (2020) for top-p.
"""

import warnings

import numpy as np

from runtime.text import UnknownTextWarning, bucket, check_text

MAX_GENERATE = 20000  # characters per request: a bound, so a typo cannot keep a server busy for hours
MAX_PROMPT = 10000  # prompt characters read: 100,000 would block for about a minute


def sample(logits, rng, temperature=1.0, top_k=None, top_p=None):
    """One id drawn from `logits (vocab,)`.

    `temperature` 0 is argmax; `top_k` keeps the k most likely ids; `top_p` keeps the smallest set
    of most likely ids whose probabilities add up to at least p (nucleus sampling).
    """
    logits = np.asarray(logits, dtype="float64")
    if temperature <= 0:
        return int(np.argmax(logits))
    z = logits / temperature
    if top_k is not None and 0 < top_k < len(z):
        z = np.where(z < np.partition(z, -top_k)[-top_k], -np.inf, z)
    p = np.exp(z - z.max())
    p /= p.sum()
    if top_p is not None and top_p < 1.0:
        order = np.argsort(-p, kind="stable")
        before = np.cumsum(p[order]) - p[order]  # probability of the ids ranked above each one
        p[order[before >= top_p]] = 0.0
        p /= p.sum()
    return int(min(np.searchsorted(np.cumsum(p), rng.random() * p.sum(), side="right"), len(p) - 1))


class Session:
    """A generation in progress: the recurrent state after everything read or written so far.

    Calling `stream`/`generate` again continues where the last call stopped, so two calls of 100
    characters give the same text as one call of 200 with the same seed.
    """

    def __init__(self, generator, logits, states, seed, unknown, notice=None):
        self.generator, self.logits, self.states = generator, logits, states
        self.rng = np.random.default_rng(seed)
        self.unknown = unknown  # prompt characters outside the vocabulary (skipped)
        self.notice = notice  # None, or a sentence on the skipped characters (also warned)

    def stream(self, length, temperature=1.0, top_k=None, top_p=None):
        """Yield `length` characters one at a time (a Python generator)."""
        check_sampling(length, temperature, top_k, top_p)
        vocabulary, step = self.generator.vocabulary, self.generator.step
        for _ in range(length):
            token = sample(self.logits, self.rng, temperature, top_k, top_p)
            self.logits, self.states = step(np.asarray([token], "int32"), self.states)
            yield vocabulary.chars[token]

    def generate(self, length, temperature=1.0, top_k=None, top_p=None):
        """`length` new characters as one string."""
        return "".join(self.stream(length, temperature, top_k, top_p))


def check_seed(seed):
    """Raise `ValueError` with a one-line reason unless `seed` is None or a whole number >= 0."""
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
        raise ValueError(f"seed must be None (random) or a whole number >= 0, got {seed!r}")


def check_sampling(length, temperature, top_k, top_p):
    """Raise `ValueError` with a one-line reason for out-of-range generation settings."""
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or not 0 <= length <= MAX_GENERATE:
        raise ValueError(f"length must be a whole number from 0 to {MAX_GENERATE}, got {length!r}")
    if not isinstance(temperature, (int, float)) or not 0 <= temperature <= 100:
        raise ValueError(f"temperature must be a number from 0 to 100, got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1):
        raise ValueError(f"top_k must be a positive whole number or None, got {top_k!r}")
    if top_p is not None and (not isinstance(top_p, (int, float)) or not 0 < top_p <= 1):
        raise ValueError(f"top_p must be in (0, 1] or None, got {top_p!r}")


def text_loss(run, initial_states, ids, streams=32, chunk=256):
    """Mean cross-entropy in nats per character of `ids` under a character model, every character
    predicted from all the text before it within its stream: the text is cut into `streams`
    contiguous parts read side by side in chunks of `chunk` characters, the state carried between
    chunks. Only the first character of each part has no context and is not scored.

    Args:
        run: `run(ids (batch, time), mask (batch, time), states) -> (logits (batch, time, vocab),
            states)`, the model over a masked stretch (a Keras model's compiled call or a graph).
        initial_states: `initial_states(batch)`, the zero states.
        ids: the text's character ids.
    """
    ids = np.asarray(ids, "int32")
    streams = max(1, min(streams, (len(ids) - 1) // 2))
    per = (len(ids) - 1) // streams  # characters predicted per stream
    inputs = ids[: streams * per].reshape(streams, per)
    targets = ids[1 : streams * per + 1].reshape(streams, per)
    states, total = initial_states(streams), 0.0
    for start in range(0, per, chunk):
        x = np.zeros((streams, chunk), "int32")
        mask = np.zeros((streams, chunk), bool)
        width = min(chunk, per - start)
        x[:, :width], mask[:, :width] = inputs[:, start : start + width], True
        logits, states = run(x, mask, states)
        logits = np.asarray(logits, np.float64)[:, :width]
        top = logits.max(-1, keepdims=True)
        log_norm = np.log(np.exp(logits - top).sum(-1)) + top[..., 0]  # (streams, width)
        chosen = np.take_along_axis(logits, targets[:, start : start + width, None], -1)[..., 0]
        total += float((log_norm - chosen).sum())
    return total / (streams * per)


class TextGenerator:
    """Prompt in, characters out, over a character model. A subclass gives the model:
    `initial_states(batch=1)` (zero states, NumPy), `run(ids (batch, time), mask (batch, time),
    states)` (`(logits (batch, time, vocab), states)` after reading the masked ids), and
    `step(ids (1,), states)` (`(logits (vocab,) NumPy, states)`; the states may stay the backend's
    tensors).

    Args:
        vocabulary: the `CharVocabulary` the model was trained with.
        card: the model card (metrics, settings), shown by the apps.
    """

    SIDE_FILES = ("vocabulary.json",)

    def __init__(self, vocabulary, card=None):
        self.vocabulary, self.card = vocabulary, card or {}

    def prime(self, ids, mask):
        """The states after reading `ids (1, time)` where `mask` is True."""
        return self.run(ids, mask, self.initial_states(len(ids)))[1]

    def text_loss(self, ids, streams=32, chunk=256):
        """Nats per character of the character ids `ids` (`text_loss`)."""
        return text_loss(self.run, self.initial_states, ids, streams, chunk)

    def start(self, prompt="", seed=None):
        """A `Session` primed with `prompt`.

        An empty prompt starts from a new line, as the corpus does after each speech. Characters
        outside the vocabulary are skipped with an `UnknownTextWarning` (the session's `unknown`
        counts them, its `notice` says which); a prompt of nothing but such characters starts from
        a new line, with that warning.

        Raises:
            TypeError: the prompt is not a string. ValueError: it is longer than `MAX_PROMPT`
                characters (pass its end, `prompt[-MAX_PROMPT:]`), or `seed` is not None or >= 0.
        """
        return self._start(prompt, seed)

    def _start(self, prompt, seed, stacklevel=3):
        """`start`; a warning points `stacklevel` frames up (the caller of the public method)."""
        check_text(prompt, "the prompt")
        if len(prompt) > MAX_PROMPT:
            raise ValueError(f"the prompt has {len(prompt):,} characters; at most {MAX_PROMPT:,} (MAX_PROMPT) are "
                             f"read: pass its end, prompt[-{MAX_PROMPT}:]")
        check_seed(seed)
        ids, unknown = self.vocabulary.encode(prompt)
        notice = None
        if unknown:
            strange = list(dict.fromkeys(c for c in prompt if c not in self.vocabulary.index))
            skipped = ", ".join(map(repr, strange[:10])) + (", ..." if len(strange) > 10 else "")
            notice = (f"{unknown} prompt characters the model does not know were skipped: {skipped}." if len(ids)
                      else f"The prompt has no character the model knows ({skipped}): starting from a new line.")
            warnings.warn(notice, UnknownTextWarning, stacklevel=stacklevel)
        if len(ids) == 0:
            ids, _ = self.vocabulary.encode("\n" if "\n" in self.vocabulary.index else self.vocabulary.chars[0])
        states = self.initial_states()
        if len(ids) > 1:  # read all but the last character at once, padded to a bucket length
            width = bucket(len(ids) - 1, smallest=16)
            padded, mask = np.zeros((1, width), "int32"), np.zeros((1, width), bool)
            padded[0, : len(ids) - 1], mask[0, : len(ids) - 1] = ids[:-1], True
            states = self.prime(padded, mask)
        logits, states = self.step(ids[-1:], states)  # the last one gives the next logits
        return Session(self, logits, states, seed, unknown, notice)

    def stream(self, prompt="", length=500, temperature=1.0, top_k=None, top_p=None, seed=None):
        """Yield generated characters one by one after `prompt` (checked, and warned about, at the
        call, as in `start`)."""
        check_sampling(length, temperature, top_k, top_p)
        return self._start(prompt, seed).stream(length, temperature, top_k, top_p)

    def generate(self, prompt="", length=500, temperature=1.0, top_k=None, top_p=None, seed=None):
        """`length` characters generated after `prompt`, as one string (checked as in `start`)."""
        check_sampling(length, temperature, top_k, top_p)
        return self._start(prompt, seed).generate(length, temperature, top_k, top_p)
