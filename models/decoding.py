"""The decoders of a Keras `Seq2SeqAttention` for `runtime.search` (greedy decoding and beam search):
`CompiledDecoding` (the default) compiles the model's own `encode` and `decode_step` once per input
shape (`models.compiled`) so that a sentence costs a few compiled calls instead of hundreds of
eager operations; `EagerDecoding` calls them eagerly. Either way every step runs the layers
training runs (`Seq2SeqAttention.decode`).
"""

from keras import ops

from models.compiled import compile_function
from runtime.search import MAX_LENGTH_PENALTY, beam_search, check_length_penalty, greedy_decode  # noqa: F401


class EagerDecoding:
    """`encode` and `decode_step` of a `Seq2SeqAttention`, called eagerly, with NumPy in and out."""

    def __init__(self, model):
        self.model, self.target_vocab_size = model, model.config.target_vocab_size

    def encode(self, source):
        values, keys, mask, states = self.model.encode(ops.convert_to_tensor(source))
        return (*[ops.convert_to_numpy(x) for x in (values, keys, mask)], [ops.convert_to_numpy(s) for s in states])

    def decode_step(self, tokens, states, encoded):
        logits, states, weights = self.model.decode_step(
            ops.convert_to_tensor(tokens), [ops.convert_to_tensor(s) for s in states],
            [ops.convert_to_tensor(x) for x in encoded[:3]])
        return ops.convert_to_numpy(logits), [ops.convert_to_numpy(s) for s in states], ops.convert_to_numpy(weights)


class CompiledDecoding:
    """`encode` and `decode_step` of a `Seq2SeqAttention`, each compiled once per input shape
    (`models.compiled`): on JAX about 400 ms a sentence eagerly against tens of milliseconds
    compiled. Same results as the model's own methods (tested)."""

    def __init__(self, model):
        self.target_vocab_size = model.config.target_vocab_size

        def encode(source):
            values, keys, mask, states = model.encode(source)
            return (values, keys, mask, *states)

        def step(tokens, values, keys, mask, *states):
            logits, states, weights = model.decode_step(tokens, states, (values, keys, mask))
            return (logits, weights, *states)

        self._encode = compile_function(encode, model.weights)
        self._step = compile_function(step, model.weights)

    def encode(self, source):
        values, keys, mask, *states = self._encode(source)
        return values, keys, mask, states

    def decode_step(self, tokens, states, encoded):
        logits, weights, *states = self._step(tokens, *encoded[:3], *states)
        return logits, states, weights
