"""JAX on a CPU: the LSTM recurrence as one fused native kernel (`layers/native/lstm_cpu.cc`).

XLA runs each step of a scan as separate operations: a matrix product that packs the recurrent
kernel anew at every step, then element-wise fusions, each dispatched to the thread pool. The
native kernel packs the recurrent kernel once, gives each core a slice of the units for the whole
sequence and joins the cores once a step; the rest stays in XLA: the input products of all steps
(one product before the loop), and after the backward loop the weight and input gradients (the
products over all steps of `layers/jax_recurrent.py`). Training an LSTM 64 x 100 x 128 -> 256 on 2
cores, timed in turn with `torch.nn.LSTM` (oneDNN's fused kernel): 0.82-0.86x its speed with XLA's
loop, 1.10-1.23x with this kernel (`benchmarks/RESULTS.md`, session 28).

The library is compiled from its source on first use, with the C++ compiler on the PATH (`$CXX`,
else `g++`), into a cache folder keyed by the source and JAX's version (`RNN_SUITE_NATIVE_CACHE`,
else `~/.cache/rnn_suite`), and registered as an XLA FFI target for the CPU. Where that cannot be
done (no compiler, not x86-64 with AVX2 and FMA), or with `RNN_SUITE_NATIVE_LSTM=0`, the layers
keep the XLA loop: same results, tested equal (`tests/test_native_lstm.py`).
"""

import ctypes
import functools
import hashlib
import importlib.util
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

SOURCE = Path(__file__).parent / "native" / "lstm_cpu.cc"
FLAGS = ["-O3", "-mavx2", "-mfma", "-std=c++17", "-shared", "-fPIC", "-pthread"]
_FORWARD, _BACKWARD = "rnn_suite_lstm_forward", "rnn_suite_lstm_backward"


def enabled():
    """Whether the kernel is wanted (`RNN_SUITE_NATIVE_LSTM=0` turns it off)."""
    return os.environ.get("RNN_SUITE_NATIVE_LSTM", "1") != "0"


def applies(cell, xs):
    """Whether `sequence` computes this call: an LSTM cell (of those `layers.fused_steps` takes),
    units a multiple of 8, every dimension of `xs` known (a traced export keeps XLA's loop, which
    converters read), the kernel wanted and available."""
    from layers.cells import LSTMCell

    return (isinstance(cell, LSTMCell) and cell.units % 8 == 0
            and all(isinstance(d, int) for d in xs.shape) and enabled() and available())


@functools.cache
def available():
    """Build (once per source and JAX version) and register the kernel; False where it cannot run."""
    if platform.machine().lower() not in ("x86_64", "amd64") or importlib.util.find_spec("jax.ffi") is None:
        return False  # (jax.ffi: JAX 0.4.32 and later)
    compiler = shutil.which(os.environ.get("CXX", "g++"))
    library = None if compiler is None else _load(compiler)
    if library is None or not library.RnnSuiteCpuSupported():
        return False
    import jax

    jax.ffi.register_ffi_target(_FORWARD, jax.ffi.pycapsule(library.RnnSuiteLstmForward), platform="cpu")
    jax.ffi.register_ffi_target(_BACKWARD, jax.ffi.pycapsule(library.RnnSuiteLstmBackward), platform="cpu")
    return True


def _load(compiler):
    """The library built with `compiler`, or None with a warning where building or loading fails."""
    try:
        return ctypes.CDLL(str(_build(compiler)))
    except (OSError, subprocess.CalledProcessError) as error:
        detail = (getattr(error, "stderr", None) or b"").decode(errors="replace").strip()[-300:]
        warnings.warn(f"the fused CPU LSTM kernel could not be built ({error}{'; ' + detail if detail else ''}); "
                      "LSTM layers keep XLA's loop", stacklevel=3)
        return None


def _build(compiler):
    """Path of the compiled library, compiling it first unless the cache holds this version."""
    import jax

    source = SOURCE.read_bytes()
    key = hashlib.sha256(source + jax.__version__.encode() + " ".join(FLAGS).encode()).hexdigest()[:16]
    folder = Path(os.environ.get("RNN_SUITE_NATIVE_CACHE") or Path.home() / ".cache" / "rnn_suite")
    target = folder / f"lstm_cpu-{key}.so"
    if not target.exists():
        folder.mkdir(parents=True, exist_ok=True)
        # Compiled beside the target, then renamed: processes building at once never read half a file.
        with tempfile.TemporaryDirectory(dir=folder) as scratch:
            built = Path(scratch) / target.name
            subprocess.run([compiler, *FLAGS, "-isystem", jax.ffi.include_dir(), str(SOURCE), "-o", str(built)],
                           check=True, capture_output=True)
            os.replace(built, target)
    return target


def sequence(cell, xs, initial_states, masks=None):
    """`(outputs (time, batch, units), [h, c])` of an `LSTMCell` over time-major `xs (time, batch,
    features)`, as `layers.jax_recurrent.sequence` computes them; `masks`: optional `(time, batch,
    1)` booleans in processing order."""
    import jax.numpy as jnp
    from keras import ops

    steps, batch, _ = xs.shape
    kernel = ops.convert_to_tensor(cell.kernel)
    a = xs.reshape(steps * batch, -1) @ kernel  # every step's input product in one, as on a GPU
    if cell.use_bias:
        a = a + ops.convert_to_tensor(cell.bias)
    mask = jnp.zeros((0,), bool) if masks is None else masks.reshape(steps, batch)
    h0, c0 = initial_states
    recurrent_kernel = ops.convert_to_tensor(cell.recurrent_kernel)
    outputs, h, c = _fused_function()(a.reshape(steps, batch, -1), recurrent_kernel, h0, c0, mask)
    return outputs, [h, c]


def _forward_reference(a, recurrent_kernel, h0, c0, mask, keep):
    """What the kernel's forward loop computes, with `layers.fused_steps`' LSTM step: `(outputs (T,
    B, U), h, c, gates (T, B, 4U) the activations [i f g o], zero on masked steps, cells (T, B, U)
    every c_t)`, the last two empty unless `keep`. Differentiated where the kernel is (a derivative
    of a gradient)."""
    import jax
    import jax.numpy as jnp

    from layers import fused_steps

    masked = mask.size > 0

    def step(states, inputs):
        a_t, m_t = inputs
        (h_new, c_new), (_, gates, _) = fused_steps.LSTM_STEPS.forward(a_t, recurrent_kernel, 0.0, states)
        if masked:
            keep_row = m_t[:, None]
            h_new, c_new = jnp.where(keep_row, h_new, states[0]), jnp.where(keep_row, c_new, states[1])
            gates = gates * keep_row
        return (h_new, c_new), (h_new, gates, c_new)

    (h, c), (outputs, gates, cells) = jax.lax.scan(step, (h0, c0), (a, mask if masked else None))
    empty = jnp.zeros((0,), a.dtype)
    return outputs, h, c, gates if keep else empty, cells if keep else empty


def _backward_reference(recurrent_kernel, gates, cells, c0, d_outputs, d_h, d_c, mask):
    """What the kernel's backward loop computes, with `layers.fused_steps`' LSTM step: `(d_z (T, B,
    4U) the cotangents of the pre-activations, zero on masked steps, d_h0, d_c0)`."""
    import jax
    import jax.numpy as jnp

    from layers import fused_steps

    masked = mask.size > 0
    c_prev = jnp.concatenate([c0[None], cells[:-1]], axis=0)

    def step(d_states, inputs):
        d_out, gates_t, c_t, c_prev_t, m_t = inputs
        d_in = (d_states[0] + d_out, d_states[1])
        saved = (c_prev_t, gates_t, jnp.tanh(c_t))
        (d_h_prev, d_c_prev), d_z, _ = fused_steps.LSTM_STEPS.backward(None, saved, recurrent_kernel, d_in)
        if masked:  # a masked step passes its cotangents through and has no gradient of its own
            keep_row = m_t[:, None]
            d_h_prev, d_c_prev = jnp.where(keep_row, d_h_prev, d_in[0]), jnp.where(keep_row, d_c_prev, d_in[1])
            d_z = d_z * keep_row
        return (d_h_prev, d_c_prev), d_z

    (d_h0, d_c0), d_z = jax.lax.scan(step, (d_h, d_c), (d_outputs, gates, cells, c_prev, mask if masked else None),
                                     reverse=True)
    return d_z, d_h0, d_c0


def _with_reference_derivative(kernel_call, reference, float_args):
    """`kernel_call`, differentiable: forward-mode derivatives (and so any derivative of a gradient,
    e.g. adversarial training's) come from `reference`, the same function in `jax.numpy`; its first
    `float_args` arguments are differentiated, the rest (the mask) are not."""
    import jax

    @jax.custom_jvp
    def call(*args):
        return kernel_call(*args)

    @call.defjvp
    def call_jvp(primals, tangents):
        fixed = primals[float_args:]
        _, tangents_out = jax.jvp(lambda *p: reference(*p, *fixed), primals[:float_args], tangents[:float_args])
        return call(*primals), tangents_out

    return call


@functools.cache
def _kernel_calls():
    """`(forward(a, rk, h0, c0, mask, keep) -> (outputs, h, c, gates, cells),
    backward(rk, gates, cells, c0, d_outputs, d_h, d_c, mask) -> (d_z, d_h0, d_c0))`: the FFI
    calls, the mask last (not differentiated), each differentiable through its reference."""
    import jax
    import numpy as np

    def forward(a, recurrent_kernel, h0, c0, mask, keep):
        steps, batch, width = a.shape

        def result(*shape, kept=True):
            return jax.ShapeDtypeStruct(shape if kept else (0,), np.float32)

        units = width // 4
        results = (result(steps, batch, units), result(batch, units), result(batch, units),
                   result(steps, batch, width, kept=keep), result(steps, batch, units, kept=keep))
        return jax.ffi.ffi_call(_FORWARD, results)(a, recurrent_kernel, h0, c0, mask, keep=np.int32(keep))

    def backward(recurrent_kernel, gates, cells, c0, d_outputs, d_h, d_c, mask):
        results = tuple(jax.ShapeDtypeStruct(t.shape, np.float32) for t in (gates, d_h, d_c))
        return jax.ffi.ffi_call(_BACKWARD, results)(recurrent_kernel, gates, cells, c0, mask, d_outputs, d_h, d_c)

    forwards = {keep: _with_reference_derivative(functools.partial(forward, keep=keep),
                                                 functools.partial(_forward_reference, keep=keep), 4)
                for keep in (False, True)}
    return (lambda a, rk, h0, c0, mask, keep: forwards[keep](a, rk, h0, c0, mask),
            _with_reference_derivative(backward, _backward_reference, 7))


@functools.cache
def _fused_function():
    """The `jax.custom_vjp` function `(a, recurrent_kernel, h0, c0, mask) -> (outputs, h, c)`."""
    import jax
    import jax.numpy as jnp

    kernel_forward, kernel_backward = _kernel_calls()

    @jax.custom_vjp
    def fused(a, recurrent_kernel, h0, c0, mask):
        return kernel_forward(a, recurrent_kernel, h0, c0, mask, False)[:3]

    def forward(a, recurrent_kernel, h0, c0, mask):
        outputs, h, c, gates, cells = kernel_forward(a, recurrent_kernel, h0, c0, mask, True)
        return (outputs, h, c), (recurrent_kernel, h0, c0, mask, outputs, gates, cells)

    def backward(residuals, cotangents):
        recurrent_kernel, h0, c0, mask, outputs, gates, cells = residuals
        d_outputs, d_h, d_c = cotangents
        d_z, d_h0, d_c0 = kernel_backward(recurrent_kernel, gates, cells, c0, d_outputs, d_h, d_c, mask)
        # h_{t-1} of every step (a masked step's output is the carried h, so this holds there too).
        h_prev = jnp.concatenate([h0[None], outputs[:-1]], axis=0)
        d_recurrent = h_prev.reshape(-1, h_prev.shape[-1]).T @ d_z.reshape(-1, d_z.shape[-1])
        return d_z, d_recurrent, d_h0, d_c0, None

    fused.defvjp(forward, backward)
    return fused
