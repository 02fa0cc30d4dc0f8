"""Compile a small function of tensors once, on whichever backend Keras runs.

Step-by-step decoding (a character at a time, a word at a time) calls the same few operations
hundreds of times from Python. Run eagerly, JAX dispatches every operation on its own (tens of
microseconds each) and TensorFlow likewise, so the bookkeeping costs more than the math. Keras'
own `predict` compiles, but it is built for batches, not for a loop that must hand back every
step. `compile_function` is the small piece in between:

- JAX: `jax.jit` of a stateless function; the model's weights are passed in as arguments through
  `keras.StatelessScope` (the way Keras' JAX trainer runs a model), so they are not baked into the
  compiled program and a change of weights is seen.
- TensorFlow: `tf.function` (weights are read from the variables).
- PyTorch: eager (eager PyTorch is already cheap per operation), under `torch.no_grad()` unless
  the function takes gradients itself (`differentiates=True`, e.g. the gradient-flow lab).

The function must use `keras.ops` and the model's layers only, take tensors and return a tensor
or a tuple/list of tensors; results come back as NumPy arrays, or as the backend's tensors with
`to_numpy=False` (a loop that feeds a state back in then leaves it where it is: at batch 1 the
copies to and from NumPy cost as much as the step itself).
"""

import keras
import numpy as np

from runtime.text import bucket  # noqa: F401 - padded lengths, with the compiled calls that need them


def compile_function(fn, variables, differentiates=False, to_numpy=True):
    """A compiled version of `fn(*tensors)` that reads `variables` (a list of Keras variables);
    `differentiates=True` when `fn` computes gradients inside (`layers.value_and_grad`).

    Returns a callable taking NumPy arrays or tensors and returning the same structure as `fn` with
    NumPy arrays in place of tensors (`to_numpy=False`: the backend's tensors). Each new input
    shape compiles once (JAX, TensorFlow).
    """
    backend = keras.backend.backend()
    out = _to_numpy if to_numpy else (lambda result: result)
    if backend == "jax":
        import jax

        variables = list(variables)

        def stateless(values, *args):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return fn(*args)

        jitted = jax.jit(stateless)
        return lambda *args: out(jitted([v.value for v in variables], *args))
    if backend == "tensorflow":
        import tensorflow as tf

        traced = tf.function(fn, reduce_retracing=True)
        return lambda *args: out(traced(*args))
    if backend == "torch":
        import torch

        def eager(*args):
            with torch.enable_grad() if differentiates else torch.no_grad():
                return out(fn(*[keras.ops.convert_to_tensor(a) for a in args]))

        return eager
    return lambda *args: out(fn(*args))  # any other backend: eager


def _to_numpy(result):
    if isinstance(result, (list, tuple)):
        return type(result)(_to_numpy(r) for r in result)
    return np.asarray(keras.ops.convert_to_numpy(result))
