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
  cannot broadcast them; here the dimensions are named (`batch`, `source`, ...) and shared. Our
  recurrent layers become ONNX's native `LSTM`/`GRU`/`RNN` operators (`layers.onnx_recurrent`),
  not a `Loop` of small nodes: a short review is classified about three times faster.
- The gradient graph of integrated gradients (`logit_gradients`) is written from JAX only: tf2onnx
  cannot freeze the gradient of a TensorFlow while loop. An export made on TensorFlow serves
  everything but `explain`, and says so.
- PyTorch: refused with a message. Keras' torch path traces the model, and tracing a recurrent
  layer (a Python loop over the time steps on torch) records the loop unrolled for the example's
  length, so a graph for every length would be needed. The saved model is the same file on every
  backend: export it with `KERAS_BACKEND=jax` or `tensorflow`.
"""

import contextlib
import dataclasses
import logging

import keras
import numpy as np
from keras import ops

from layers.onnx_recurrent import native_recurrences
from layers.recurrent import input_products_hoisted

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
        backends: the backends whose exporter writes it.
        gradient: `fn` takes a gradient (traced by JAX before jax2onnx; see `write_onnx`).
        quantize: whether the int8 export quantises it (False: the int8 folder holds it as float32).
    """

    name: str
    fn: object
    inputs: list
    outputs: list
    model: object
    backends: tuple = EXPORT_BACKENDS
    gradient: bool = False
    quantize: bool = True

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
    """`probabilities` of a `SentimentNet` (ids `(batch, time)` -> `(batch,)` positive probability)
    and what integrated gradients need (`runtime.classification.TextClassifier.explain`): `embed`,
    `embedded_logits` and `logit_gradients`. Those three stay float32 in the int8 export: the path
    integral needs a smooth network, so an int8 classifier's words are explained by the float32
    network it approximates."""
    dim = model.config.embedding_dim * (2 if model.config.lm_units else 1)  # `SentimentNet.embed`'s width
    embedded = [("points", ("n", "time", dim), "float32"), ("mask", ("n", "time"), "bool")]

    def probabilities(ids):
        return (ops.sigmoid(ops.reshape(model(ids, training=False), (-1,))),)

    return [
        Endpoint("probabilities", probabilities, [("ids", ("batch", "time"), "int32")], ["probabilities"], model),
        Endpoint("embed", lambda ids: (model.embed(ids),), [("ids", ("batch", "time"), "int32")],
                 ["embedded"], model, quantize=False),
        Endpoint("embedded_logits", lambda points, mask: (ops.reshape(model.call_embedded(points, mask), (-1,)),),
                 embedded, ["logits"], model, quantize=False),
        # tf2onnx cannot freeze the gradient of a TensorFlow while loop (its variables come back as
        # floats where resources are expected); JAX writes the gradient as plain scans.
        Endpoint("logit_gradients", lambda points, mask: (model.logit_gradients(points, mask),), embedded,
                 ["gradients"], model, backends=("jax",), gradient=True, quantize=False),
    ]


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

        logging.getLogger("onnx_ir.serde").setLevel(logging.ERROR)  # notes on symbolic shapes, not problems
        if endpoint.gradient:
            shapes, program = _traced(endpoint)
            fn = lambda *args: _eval_with_forward_scans(program, *args)  # noqa: E731
        else:  # jax2onnx's own tracing: matrix products become MatMul (what int8 quantises), not Einsum
            shapes, fn = [jax.ShapeDtypeStruct(tuple(shape), np.dtype(dtype)) for _, shape, dtype in endpoint.inputs], \
                lambda *args: endpoint.fn(*args)
        # Recurrent layers as ONNX's LSTM/GRU/RNN operators (not for a gradient, which needs the loop).
        with contextlib.nullcontext() if endpoint.gradient else native_recurrences():
            graph = jax2onnx.to_onnx(fn, inputs=shapes, return_mode="proto", output_names=list(endpoint.outputs),
                                     input_names=[n for n, _, _ in endpoint.inputs])
        onnx.save_model(graph, str(path), save_as_external_data=False)  # one file: weights inside (< 2 GB)
        return path
    signature = [keras.InputSpec(shape=tuple(d if isinstance(d, int) else None for d in shape), dtype=dtype, name=n)
                 for n, shape, dtype in endpoint.inputs]
    with input_products_hoisted():  # the per-step form, int8-quantised, aborts ONNX Runtime
        _Graph(endpoint).export(str(path), format="onnx", input_signature=signature, verbose=False)
    return path


def _traced(endpoint):
    """`(input shapes, jaxpr)` of `endpoint.fn`, traced by JAX itself with the varying dimensions
    named and shared (one symbolic scope).

    For a gradient: jax2onnx's own tracing swaps `jax.numpy` functions for its primitives, which do
    not broadcast under `jax.grad` (a Dense bias add fails); a jaxpr traced first holds JAX's own.
    """
    import jax
    from jax import export as jax_export

    names = list(dict.fromkeys(d for _, shape, _ in endpoint.inputs for d in shape if isinstance(d, str)))
    symbols = dict(zip(names, jax_export.symbolic_shape(", ".join(names)))) if names else {}
    shapes = [jax.ShapeDtypeStruct(tuple(symbols.get(d, d) for d in shape), np.dtype(dtype))
              for _, shape, dtype in endpoint.inputs]
    return shapes, jax.make_jaxpr(lambda *args: tuple(endpoint.fn(*args)))(*shapes)


def _eval_with_forward_scans(program, *args):
    """Evaluate the closed jaxpr `program` on `args`, running every reverse scan (the backward pass
    of a recurrent layer) as a forward scan over the flipped sequences: jax2onnx converts forward
    scans only. Every other equation is bound as it is."""
    import jax
    from jax.extend import core

    env = dict(zip(program.jaxpr.constvars, program.consts))
    env.update(zip(program.jaxpr.invars, args))

    def read(atom):
        return atom.val if isinstance(atom, core.Literal) else env[atom]

    for eqn in program.jaxpr.eqns:
        values, params = [read(v) for v in eqn.invars], eqn.params
        if eqn.primitive.name == "scan":
            consts, carry = values[: params["num_consts"]], values[params["num_consts"] :][: params["num_carry"]]
            xs = values[params["num_consts"] + params["num_carry"] :]
            flip = params["reverse"]

            def body(carry, x, consts=consts, body=params["jaxpr"], num_carry=params["num_carry"]):
                out = _eval_with_forward_scans(body, *consts, *carry, *x)
                return tuple(out[:num_carry]), tuple(out[num_carry:])

            xs = tuple(jax.numpy.flip(x, 0) if flip else x for x in xs)
            carry, ys = jax.lax.scan(body, tuple(carry), xs, length=None if xs else params["length"])
            outs = [*carry, *(jax.numpy.flip(y, 0) if flip else y for y in ys)]
        else:
            outs = eqn.primitive.bind(*values, **eqn.primitive.get_bind_params(params))
            outs = outs if eqn.primitive.multiple_results else [outs]
        env.update(zip(eqn.outvars, outs))
    return [read(v) for v in program.jaxpr.outvars]
