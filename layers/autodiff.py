"""One small function for gradients on every backend.

Keras has no backend-neutral `grad`; each backend has its own API. `value_and_grad` hides them
behind one call so that tests, explanations (gradient x input) and the gradient-flow lab are written
once. Use it with pure functions of tensors, e.g. `layer.stateless_call(weights, [], x)`.
"""

import keras
from keras import ops


def value_and_grad(fn, *args):
    """Value of `fn(*args)` (a scalar tensor) and its gradients with respect to every argument.

    Args:
        fn: function of tensors returning a scalar tensor.
        *args: tensors or arrays; gradients are taken with respect to each of them.

    Returns:
        `(value, grads)`, where `grads` is a list shaped like `args` (zeros where `fn` does not
        depend on an argument).
    """
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        args = [ops.convert_to_tensor(a) for a in args]
        value, grads = jax.value_and_grad(fn, argnums=tuple(range(len(args))))(*args)
        return value, list(grads)
    if backend == "tensorflow":
        import tensorflow as tf

        args = [tf.convert_to_tensor(a) for a in args]
        with tf.GradientTape() as tape:
            tape.watch(args)
            value = fn(*args)
        grads = tape.gradient(value, args, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return value, list(grads)
    if backend == "torch":
        import torch

        args = [ops.convert_to_tensor(a).detach().requires_grad_(True) for a in args]
        value = fn(*args)
        grads = torch.autograd.grad(value, args, allow_unused=True)
        grads = [torch.zeros_like(a) if g is None else g for a, g in zip(args, grads)]
        return value.detach(), grads
    raise NotImplementedError(f"value_and_grad does not support the {backend!r} backend.")
