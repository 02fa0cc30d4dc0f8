"""Sequence-to-sequence translation with Bahdanau attention, built from our own layers.

    source ids -> Embedding -> Bidirectional(GRU|LSTM) -> h_1..h_S              (encoder)
    target ids -> Embedding -> GRU|LSTM (state from a tanh bridge) -> s_t        (decoder)
    c_t = BahdanauAttention(s_t, h)        a_t = tanh(W_c [c_t; s_t])
    logits_t = a_t E^T + b                 (output tied to the target embedding E)

Training feeds the whole shifted target at once (teacher forcing): one decoder layer call and one
attention call for all target steps, as in the TensorFlow NMT-with-attention tutorial. Inference
encodes once and then steps the decoder *cell* with the attention (`greedy_decode`, `beam_search`);
`Translator` wraps it all with strings in and strings out.

References: Bahdanau et al. (2015) for the attention; Luong et al. (2015) for the attentional state
a_t and unknown-word replacement through the attention; Press & Wolf (2017) for the tied output;
Wu et al. (2016, GNMT) for the length normalisation of beam search.
"""

import contextlib
import dataclasses
import math

import keras
import numpy as np
from keras import ops

from layers import BahdanauAttention, recurrent_layer_class
from models import artifacts
from models.compiled import compile_function
from models.text import TrueCaser, Vocabulary, check_text, detokenize, split_words, text_list

CELLS = ("gru", "lstm")
MAX_LENGTH_PENALTY = 2.0  # GNMT's alpha: 0 ranks by the raw score; Wu et al. (2016) tuned it within [0, 1]


@keras.saving.register_keras_serializable(package="rnn_suite")
class TiedOutput(keras.layers.Layer):
    """Logits from the target embedding matrix: `x (..., dim) @ E^T (dim, vocab) + b (vocab,)`."""

    def __init__(self, vocab_size, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = vocab_size

    def build(self, x_shape, embeddings_shape=None):
        self.bias = self.add_weight(shape=(self.vocab_size,), name="bias", initializer="zeros")

    def call(self, x, embeddings):
        # einsum contracts over the embedding axis without materialising E^T (matters in eager
        # step-by-step decoding; compiled training fuses either form).
        return ops.einsum("...d,vd->...v", x, embeddings) + self.bias

    def get_config(self):
        return {**super().get_config(), "vocab_size": self.vocab_size}


@keras.saving.register_keras_serializable(package="rnn_suite")
class Seq2SeqAttention(artifacts.PortableModel, keras.Model):
    """Encoder-decoder with additive attention.

    Args:
        source_vocab_size, target_vocab_size: Vocabulary sizes (id 0 is padding).
        embedding_dim: Size of both embeddings and of the attentional state a_t.
        units: Decoder state size; each encoder direction has `units` too.
        attention_units: Hidden size of the attention score (default `units`).
        cell: `"gru"` or `"lstm"`.
        dropout: Dropout rate on both embeddings and on a_t, in training only.
        rnn_impl: `"ours"` (the layers of `layers/`) or `"keras"` (Keras' built-ins, cuDNN on a
            GPU); the weights are the same, so a trained model can switch (`artifacts.rebuild`).

    Call: `model((source (batch, S) int, target_in (batch, T) int))` -> logits `(batch, T, vocab)`.
    """

    TASK = "translation"  # what a saved folder of this class holds (`artifacts.check_model_class`)

    def __init__(self, source_vocab_size, target_vocab_size, embedding_dim=128, units=256,
                 attention_units=None, cell="gru", dropout=0.0, rnn_impl="ours", **kwargs):
        super().__init__(**kwargs)
        if cell not in CELLS:
            raise ValueError(f"`cell` must be one of {list(CELLS)}, got {cell!r}.")
        rnn = recurrent_layer_class(cell, rnn_impl)
        self.settings = dict(source_vocab_size=source_vocab_size, target_vocab_size=target_vocab_size,
                             embedding_dim=embedding_dim, units=units,
                             attention_units=attention_units or units, cell=cell, dropout=dropout,
                             rnn_impl=rnn_impl)
        # N(0, 1/embedding_dim): Keras' default uniform(+-0.05) stalls training with the tied output
        # (measured on 10k pairs: loss stuck near the unigram entropy, 5.2 after 2 epochs; 2.0 with this).
        init = keras.initializers.RandomNormal(stddev=embedding_dim**-0.5)
        self.source_embedding = keras.layers.Embedding(source_vocab_size, embedding_dim,
                                                       embeddings_initializer=init, name="source_embedding")
        self.encoder = keras.layers.Bidirectional(
            rnn(units, return_sequences=True, return_state=True), name="encoder")
        states = ["h", "c"] if cell == "lstm" else ["h"]
        self.bridges = [keras.layers.Dense(units, activation="tanh", name=f"bridge_{s}") for s in states]
        self.target_embedding = keras.layers.Embedding(target_vocab_size, embedding_dim,
                                                       embeddings_initializer=init, name="target_embedding")
        self.decoder = rnn(units, return_sequences=True, name="decoder")
        self.attention = BahdanauAttention(attention_units or units, name="attention")
        self.combine = keras.layers.Dense(embedding_dim, activation="tanh", name="combine")
        self.output_layer = TiedOutput(target_vocab_size, name="output", dtype="float32")  # float32 logits
        self.drop = keras.layers.Dropout(dropout, name="dropout")

    def encode(self, source, training=False):
        """`source (batch, S)` -> `(values (batch, S, 2 units), keys (batch, S, attention_units),
        mask (batch, S) bool, decoder initial states [(batch, units), ...])`."""
        mask = ops.not_equal(source, 0)  # (batch, S)
        embedded = self.drop(self.source_embedding(source), training=training)  # (batch, S, embedding_dim)
        values, *final = self.encoder(embedded, mask=mask, training=training)
        half = len(final) // 2  # forward states, then backward states
        states = [bridge(ops.concatenate([f, b], axis=-1))
                  for bridge, f, b in zip(self.bridges, final[:half], final[half:])]
        return values, self.attention.project_keys(values), mask, states

    def encode_eagerly(self, source):
        """`encode` for step-by-step decoding, with the additive score mask of
        `BahdanauAttention.step` in place of the boolean mask. The encoder's time loop runs as a
        Python loop over the cell (see `python_time_loops`)."""
        with self.python_time_loops():
            values, keys, mask, states = self.encode(source)
        return values, keys, self.attention.score_bias(mask), states

    @contextlib.contextmanager
    def python_time_loops(self):
        """Run the recurrent layers with `unroll=True` inside this context. Outside a compiled
        function, `keras.ops.scan` on JAX traces and compiles its loop again on every call (seconds
        for the first shapes, about 0.5 s after); a Python loop over the cell costs about 1 ms a
        step. Compiled training keeps the scan."""
        recurrent = (self.encoder.forward_layer, self.encoder.backward_layer, self.decoder)
        saved = [layer.unroll for layer in recurrent]
        try:
            for layer in recurrent:
                layer.unroll = True
            yield
        finally:
            for layer, unroll in zip(recurrent, saved):
                layer.unroll = unroll

    def readout(self, context, query, training=False):
        """Logits from the context and the decoder output: `(..., 2 units), (..., units) -> (..., vocab)`."""
        attentional = self.combine(ops.concatenate([context, query], axis=-1))  # (..., embedding_dim)
        attentional = self.drop(attentional, training=training)
        return self.output_layer(attentional, self.target_embedding.embeddings)

    def call(self, inputs, training=False):
        source, target_in = inputs
        values, keys, mask, states = self.encode(source, training)
        embedded = self.drop(self.target_embedding(target_in), training=training)  # (batch, T, embedding_dim)
        queries = self.decoder(embedded, initial_state=states, training=training)  # (batch, T, units)
        context, _ = self.attention.attend(queries, keys, values, mask)  # (batch, T, 2 units)
        return self.readout(context, queries, training)  # (batch, T, vocab)

    def decode_step(self, tokens, states, encoded):
        """One decoder step for `tokens (n,)` given `encoded = encode_eagerly(source)`.

        Returns `(logits (n, vocab), states, weights (n, S))`. Eager decoding runs this once per
        output word, so it uses the layers' math directly: a Keras `Layer.__call__` costs about
        1 ms of bookkeeping on JAX, more than the math of a step.
        """
        values, keys, score_bias, _ = encoded
        x = ops.take(self.target_embedding.embeddings, tokens, axis=0)  # (n, embedding_dim)
        query, states = self.decoder.cell.call(x, states)  # (n, units)
        context, weights = self.attention.step(query, keys, values, score_bias)  # (n, 2 units), (n, S)
        combined = ops.concatenate([context, query], axis=-1)  # (n, 3 units)
        attentional = ops.tanh(ops.matmul(combined, self.combine.kernel) + self.combine.bias)
        logits = self.output_layer.call(attentional, self.target_embedding.embeddings)  # (n, vocab)
        return logits, states, weights

    def build(self, input_shape=None):
        # Every layer is built from shapes (creating the weights runs no forward pass: on JAX each
        # eager operation on a new shape costs a compilation). `attend`, `project_keys` and the
        # decode step call plain methods, so nothing would build these layers lazily anyway.
        s = self.settings
        embedding, units = s["embedding_dim"], s["units"]
        self.source_embedding.build((None, None))
        self.encoder.build((None, None, embedding))
        for bridge in self.bridges:
            bridge.build((None, 2 * units))
        self.target_embedding.build((None, None))
        self.decoder.build((None, None, embedding))
        self.attention.build((None, None, units), (None, None, 2 * units))
        self.combine.build((None, 3 * units))
        self.output_layer.build((None, embedding))
        self.built = True

    def get_config(self):
        return {**super().get_config(), **self.settings}


@keras.saving.register_keras_serializable(package="rnn_suite")
def masked_loss(y_true, y_pred):
    """Cross-entropy of logits `(batch, T, vocab)` averaged over the real (non-padding) tokens."""
    mask = ops.cast(ops.not_equal(y_true, 0), "float32")
    loss = keras.losses.sparse_categorical_crossentropy(y_true, y_pred, from_logits=True)
    return ops.sum(loss * mask) / ops.maximum(ops.sum(mask), 1.0)


@keras.saving.register_keras_serializable(package="rnn_suite")
def masked_accuracy(y_true, y_pred):
    """Token accuracy over the real (non-padding) target positions."""
    mask = ops.cast(ops.not_equal(y_true, 0), "float32")
    hits = ops.cast(ops.equal(ops.cast(y_true, "int32"), ops.cast(ops.argmax(y_pred, axis=-1), "int32")), "float32")
    return ops.sum(hits * mask) / ops.maximum(ops.sum(mask), 1.0)


# --- inference: ids in, ids and attention out -------------------------------------------------------

# Padding and the start token are never targets in training; keep them out of the output too.
NEVER_OUTPUT = [Vocabulary.pad_id, Vocabulary.start_id]


def _row_limits(max_length, n):
    limits = np.broadcast_to(np.asarray(max_length, dtype=np.int64), (n,))
    return limits, int(limits.max())


def greedy_decode(model, source, max_length):
    """Most probable next word at every step, for a batch.

    Args:
        model: `Seq2SeqAttention`.
        source: `(batch, S)` int array, right-padded with 0.
        max_length: int or `(batch,)` ints: the most output tokens per sentence, end token included.

    Returns:
        `(tokens (batch, T) int, attention (batch, T, S) float)`; after the end token, or past a
        sentence's limit, tokens are 0 and attention rows are 0.
    """
    n = source.shape[0]
    limits, steps = _row_limits(max_length, n)
    encoded = model.encode_eagerly(ops.convert_to_tensor(source))
    states, tokens = encoded[3], np.full(n, Vocabulary.start_id)
    done = limits <= 0
    out, attention = [], []
    for t in range(steps):
        logits, states, weights = model.decode_step(ops.convert_to_tensor(tokens), states, encoded)
        logits = ops.convert_to_numpy(logits)
        logits[:, NEVER_OUTPUT] = -np.inf
        tokens = np.where(done, Vocabulary.pad_id, np.argmax(logits, axis=-1))
        out.append(tokens)
        attention.append(np.where(done[:, None], 0.0, ops.convert_to_numpy(weights)))
        done = done | (tokens == Vocabulary.end_id) | (t + 1 >= limits)
        if done.all():
            break
    return _stack(out, n), _stack(attention, n, source.shape[1])


def beam_search(model, source, beam_width, max_length, length_penalty=1.0):
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

    Returns:
        `(tokens (batch, T), attention (batch, T, S), scores (batch,))`: the best hypothesis per
        sentence, padded as in `greedy_decode`, and its normalised score.
    """
    n, k = source.shape[0], int(beam_width)
    vocab = model.settings["target_vocab_size"]
    if not 1 <= k <= vocab:
        raise ValueError(f"beam_width must be between 1 and {vocab}, got {beam_width!r}.")
    check_length_penalty(length_penalty)
    limits, steps = _row_limits(max_length, n)
    encoded = model.encode_eagerly(ops.convert_to_tensor(source))
    rows = ops.convert_to_tensor(np.repeat(np.arange(n), k))  # beam b of sentence i is row i*k+b
    values, keys, mask, states = [ops.take(x, rows, axis=0) for x in encoded[:3]] + [
        [ops.take(s, rows, axis=0) for s in encoded[3]]]
    encoded = (values, keys, mask, states)
    scores = np.full((n, k), -np.inf, dtype=np.float64)
    scores[:, 0] = 0.0  # only the first beam is alive at the start: no duplicate hypotheses
    finished = np.repeat((limits <= 0)[:, None], k, axis=1)
    lengths = np.zeros((n, k), dtype=np.int64)
    history = np.zeros((n, k, 0), dtype=np.int64)
    attention = np.zeros((n, k, 0, source.shape[1]), dtype=np.float32)
    tokens, sentence = np.full(n * k, Vocabulary.start_id), np.arange(n)[:, None]
    for t in range(steps):
        logits, states, weights = model.decode_step(ops.convert_to_tensor(tokens), states, encoded)
        log_probs = _log_softmax(ops.convert_to_numpy(logits).astype(np.float64)).reshape(n, k, vocab)
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
        step_weights = ops.convert_to_numpy(weights).reshape(n, k, -1)[sentence, parent]
        history = np.concatenate([history[sentence, parent], word[..., None]], axis=2)
        attention = np.concatenate(
            [attention[sentence, parent], np.where(was_finished[..., None], 0.0, step_weights)[:, :, None]], axis=2)
        flat = ops.convert_to_tensor((sentence * k + parent).reshape(-1))
        states = [ops.take(s, flat, axis=0) for s in states]
        tokens = word.reshape(-1)
        if finished.all():
            break
    normalised = scores / ((5.0 + np.maximum(lengths, 1)) / 6.0) ** length_penalty
    best = np.argmax(normalised, axis=1)
    return history[np.arange(n), best], attention[np.arange(n), best], normalised[np.arange(n), best]


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


# --- strings in, strings out ----------------------------------------------------------------------

class CompiledDecoding:
    """`encode_eagerly` and `decode_step` of a `Seq2SeqAttention`, each compiled once per input
    shape (`models.compiled`): what `greedy_decode` and `beam_search` call, so that a sentence
    costs a few compiled calls instead of hundreds of eager operations (on JAX about 400 ms
    eager against tens of milliseconds compiled). Same results as the model's own methods
    (tested)."""

    def __init__(self, model):
        self.settings = model.settings

        def encode(source):
            values, keys, mask, states = model.encode(source)
            return (values, keys, model.attention.score_bias(mask), *states)

        def step(tokens, values, keys, score_bias, *states):
            logits, states, weights = model.decode_step(tokens, list(states), (values, keys, score_bias, None))
            return (logits, weights, *states)

        self._encode = compile_function(encode, model.weights)
        self._step = compile_function(step, model.weights)

    def encode_eagerly(self, source):
        values, keys, score_bias, *states = self._encode(source)
        return values, keys, score_bias, states

    def decode_step(self, tokens, states, encoded):
        logits, weights, *states = self._step(tokens, *encoded[:3], *states)
        return logits, states, weights


@dataclasses.dataclass
class Translation:
    """One translation.

    Attributes:
        text: The translation as normal text (detokenised, cased).
        words: Its words, one per row of `attention`.
        source_words: The input words the model read (after truncation), one per column.
        attention: `(len(words), len(source_words))` attention weights; each row sums to 1.
        notice: Why the input was changed or could not be translated, else `None`.
    """

    text: str
    words: list
    source_words: list
    attention: np.ndarray
    notice: str | None = None


class Translator:
    """A trained `Seq2SeqAttention` with its vocabularies and casing: strings in, strings out.

    Args:
        model: `Seq2SeqAttention`.
        source_vocab, target_vocab: `Vocabulary` of each side.
        truecaser: `TrueCaser` for the output.
        settings: dict with `direction`, `max_source_length` (longer inputs are truncated, with a
            notice), `max_target_length` (the cap of output words) and `length_penalty`.
        compiled: decode through `CompiledDecoding` (default) or eagerly step by step.
    """

    SIDE_FILES = ("source_vocab.json", "target_vocab.json", "truecase.json", "translator.json")

    def __init__(self, model, source_vocab, target_vocab, truecaser, settings, compiled=True):
        self.model, self.source_vocab, self.target_vocab = model, source_vocab, target_vocab
        self.truecaser, self.settings = truecaser, dict(settings)
        # Decoding through compiled calls (`CompiledDecoding`), or step by step eagerly (`compiled=False`).
        self.decoder = CompiledDecoding(model) if compiled else model

    @classmethod
    def load(cls, directory):
        """Load a folder written by `save` (any backend).

        Raises:
            artifacts.ArtifactError: the folder is missing, damaged or holds another task's model.
        """
        model, sides, card = artifacts.load(directory, cls.SIDE_FILES, model_class=Seq2SeqAttention)
        translator = cls(model, Vocabulary.from_json(sides["source_vocab.json"]),
                         Vocabulary.from_json(sides["target_vocab.json"]),
                         TrueCaser.from_json(sides["truecase.json"]), sides["translator.json"])
        translator.card = card
        return translator

    def save(self, directory, card=None):
        """Write `model.keras`, the vocabularies, the casing, the settings and `card.json`."""
        sides = dict(zip(self.SIDE_FILES, (self.source_vocab.to_json(), self.target_vocab.to_json(),
                                           self.truecaser.to_json(), self.settings)))
        return artifacts.save(directory, self.model, sides, card)

    def __call__(self, text, **options):
        """Translate one string (`str`; anything else raises `TypeError`) -> one `Translation`;
        the options are those of `translate`."""
        return self.translate([check_text(text, "the text to translate")], **options)[0]

    def translate(self, texts, beam_width=1, length_penalty=None, batch_size=64):
        """Translate a batch: a list (or any iterable) of strings -> a list of `Translation`.

        Like Keras' `predict`, this takes a batch: a single string raises `TypeError` (it would be
        read as one sentence per character); translate one with `translator(text)`. An item that
        is not a string (None, a number) raises `TypeError` too, rather than being translated as
        its printed form.

        An empty (or blank) input gives an empty translation with a notice; an input longer than
        `max_source_length` words is truncated, with a notice; unknown words are read as `[UNK]`
        and an unknown word in the output is replaced by the source word it attends to most.

        Args:
            texts: the sentences.
            beam_width: 1 for greedy decoding, else the beam width of `beam_search`.
            length_penalty: GNMT's alpha for beam search, from 0 to `MAX_LENGTH_PENALTY`
                (`ValueError` otherwise); `None` uses the model's setting.
            batch_size: sentences decoded together.

        Returns:
            A list of `Translation`, in the order of `texts`.
        """
        texts = text_list(texts, "sentence", "translator(text)")
        if length_penalty is not None:
            check_length_penalty(length_penalty)
        max_source = int(self.settings["max_source_length"])
        penalty = self.settings.get("length_penalty", 1.0) if length_penalty is None else length_penalty
        results, sources = [None] * len(texts), []
        for i, text in enumerate(texts):
            words = split_words(text)
            if not words:
                results[i] = Translation("", [], [], np.zeros((0, 0), np.float32),
                                         "The input is empty: nothing to translate.")
                continue
            notes = []
            if len(words) > max_source:
                notes.append(f"The input has {len(words)} words; only the first {max_source} were translated.")
                words = words[:max_source]
            ids = self.source_vocab.encode([w.lower() for w in words])
            unknown = [w for w, i_ in zip(words, ids) if i_ == Vocabulary.unk_id]
            if unknown:
                notes.append("Not in the vocabulary: " + ", ".join(dict.fromkeys(unknown)) + ".")
            sources.append((i, words, ids, " ".join(notes) or None))
        sources.sort(key=lambda item: len(item[2]))  # similar lengths together: less padding
        for start in range(0, len(sources), batch_size):
            batch = sources[start:start + batch_size]
            # Width rounded up to a multiple of 4 (padding is masked): fewer distinct shapes, so
            # fewer one-off compilations of eager operations on JAX.
            ids = np.zeros((len(batch), -(-max(len(item[2]) for item in batch) // 4) * 4), dtype=np.int32)
            for row, item in enumerate(batch):
                ids[row, : len(item[2])] = item[2]
            limits = [min(2 * len(item[2]) + 10, int(self.settings["max_target_length"])) for item in batch]
            if beam_width == 1:
                tokens, attention = greedy_decode(self.decoder, ids, limits)
            else:
                tokens, attention, _ = beam_search(self.decoder, ids, beam_width, limits, penalty)
            for row, (i, words, _, notice) in enumerate(batch):
                results[i] = self._finish(tokens[row], attention[row, :, : len(words)], words, notice)
        return results

    def _finish(self, ids, attention, source_words, notice):
        """Ids to text: cut at the end token, copy source words for `[UNK]`, restore case."""
        ids = [int(i) for i in ids]
        # The words end at the end token, or at the padding after a sentence that hit its limit.
        length = next((j for j, i in enumerate(ids) if i in (Vocabulary.end_id, Vocabulary.pad_id)), len(ids))
        attention = attention[:length]  # one row per output word; the end token's row dropped
        words = [source_words[int(np.argmax(attention[j]))] if i == Vocabulary.unk_id
                 else self.target_vocab.tokens[i] for j, i in enumerate(ids[:length])]
        words = self.truecaser(words)
        return Translation(detokenize(words), words, list(source_words), attention, notice)
