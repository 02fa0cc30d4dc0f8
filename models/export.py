"""What each task's servable exports, and writing those graphs as ONNX.

A whole inference is more than `call()`: translation needs the encoder and one decoder step with
attention (`runtime.search` runs greedy decoding and beam search around them), generation the
reading of a prompt and a single step (streaming stays one step per character), sentiment the
probabilities. `endpoints(servable)` names those functions of the model's own layers with their
inputs and outputs; each becomes one ONNX graph (`write_onnx`).

Exporters, by backend:
- TensorFlow: Keras' own `model.export(format="onnx")` (tf2onnx under it).
- JAX: jax2onnx directly. Keras' JAX path gives every unknown dimension its own name, so the
  source length of the values and of the mask are two different symbols and the attention
  cannot broadcast them; here the dimensions are named (`batch`, `source`, ...) and shared.
- PyTorch: refused with a message. Keras' torch path traces the model, and tracing a recurrent
  layer (a Python loop over the time steps on torch) records the loop unrolled for the example's
  length, so a graph for every length would be needed. The saved model is the same file on every
  backend: export it with `KERAS_BACKEND=jax` or `tensorflow`.
"""

import dataclasses
import logging

import keras
import numpy as np
from keras import ops

EXPORT_BACKENDS = ("jax", "tensorflow")


@dataclasses.dataclass
class Endpoint:
    """One exported function of a model.

    Attributes:
        name: the graph's name (its file is `<name>.onnx`).
        fn: a function of tensors, using the model's layers, returning a tuple of tensors.
        inputs: `[(name, shape, dtype)]`; a shape holds ints and names of dimensions that vary
            (`"batch"`, `"source"`), one name per dimension shared by every input that has it.
        outputs: the names of `fn`'s results, in order.
        model: the Keras model whose weights `fn` reads.
    """

    name: str
    fn: object
    inputs: list
    outputs: list
    model: object

    def manifest(self):
        """The endpoint as `export.json` records it (the runtime feeds and reads by position)."""
        return {"file": f"{self.name}.onnx", "inputs": [{"name": n, "shape": list(s), "dtype": d}
                                                        for n, s, d in self.inputs], "outputs": list(self.outputs)}


def translation_endpoints(model):
    """`encode` and `decode_step` of a `Seq2SeqAttention` (`runtime.search`'s decoder contract)."""
    c = model.config
    states = [f"state_{i}" for i in range(2 if c.cell == "lstm" else 1)]
    attention_units = c.attention_units or c.units

    def encode(source):
        values, keys, mask, initial = model.encode(source)
        return (values, keys, mask, *initial)

    def decode_step(tokens, values, keys, mask, *states):
        logits, states, weights = model.decode_step(tokens, list(states), (values, keys, mask))
        return (logits, weights, *states)

    encoded = [("values", ("batch", "source", 2 * c.units), "float32"),
               ("keys", ("batch", "source", attention_units), "float32"), ("mask", ("batch", "source"), "bool")]
    return [
        Endpoint("encode", encode, [("source", ("batch", "source"), "int32")],
                 ["values", "keys", "mask", *states], model),
        Endpoint("decode_step", decode_step,
                 [("tokens", ("batch",), "int32"), *encoded, *[(s, ("batch", c.units), "float32") for s in states]],
                 ["logits", "attention", *[f"next_{s}" for s in states]], model),
    ]


def classification_endpoints(model):
    """`probabilities` of a `SentimentNet`: ids `(batch, time)` -> `(batch,)` positive probability."""

    def probabilities(ids):
        return (ops.sigmoid(ops.reshape(model(ids, training=False), (-1,))),)

    return [Endpoint("probabilities", probabilities, [("ids", ("batch", "time"), "int32")], ["probabilities"],
                     model)]


def generation_endpoints(model):
    """`run` (a masked stretch of characters from given states: logits and final states) and `step`
    (one character) of a `CharLM`."""
    c = model.config
    states = [f"state_{i}" for i in range(c.num_layers * model.states_per_layer)]
    state_inputs = [(s, ("batch", c.units), "float32") for s in states]
    next_states = [f"next_{s}" for s in states]  # output names differ from input names (jax2onnx needs it)

    def run(ids, mask, *states):
        logits, final = model.run(ids, list(states), mask=mask)
        return (logits, *final)

    def step(ids, *states):
        return tuple(model.step(ids, *states))

    return [
        Endpoint("run", run, [("ids", ("batch", "time"), "int32"), ("mask", ("batch", "time"), "bool"),
                              *state_inputs], ["logits", *next_states], model),
        Endpoint("step", step, [("ids", ("batch",), "int32"), *state_inputs], ["logits", *next_states], model),
    ]


class _Graph(keras.Model):
    """A Keras model whose `call` is one endpoint's function, for Keras' own exporter."""

    def __init__(self, endpoint):
        super().__init__(name=endpoint.name)
        self.endpoint, self.wrapped = endpoint, endpoint.model
        self.built = True  # the wrapped model is built; this adds no weights

    def call(self, *args):
        return self.endpoint.fn(*args)


def check_backend():
    """Raise a one-line `ValueError` on a backend that cannot export (see the module docstring)."""
    backend = keras.backend.backend()
    if backend not in EXPORT_BACKENDS:
        raise ValueError(
            f"ONNX export runs on the JAX or TensorFlow backend, not {backend}: tracing a recurrent layer on torch "
            "records its loop for one length only. The saved model is the same on every backend: run the export "
            "again with KERAS_BACKEND=jax (or tensorflow)")


def write_onnx(endpoint, path):
    """Write `endpoint` as an ONNX graph at `path` (float32 weights inside, no outside data)."""
    check_backend()
    if keras.backend.backend() == "jax":
        import jax
        import jax2onnx
        import onnx

        shapes = [jax.ShapeDtypeStruct(tuple(shape), np.dtype(dtype)) for _, shape, dtype in endpoint.inputs]
        logging.getLogger("onnx_ir.serde").setLevel(logging.ERROR)  # notes on symbolic shapes, not problems
        graph = jax2onnx.to_onnx(lambda *args: endpoint.fn(*args), inputs=shapes, return_mode="proto",
                                 input_names=[n for n, _, _ in endpoint.inputs], output_names=list(endpoint.outputs))
        onnx.save_model(graph, str(path), save_as_external_data=False)  # one file: weights inside (< 2 GB)
        return path
    signature = [keras.InputSpec(shape=tuple(d if isinstance(d, int) else None for d in shape), dtype=dtype, name=n)
                 for n, shape, dtype in endpoint.inputs]
    _Graph(endpoint).export(str(path), format="onnx", input_signature=signature, verbose=False)
    return path
