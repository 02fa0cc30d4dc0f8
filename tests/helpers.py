"""What several test modules share: running a script under another backend."""

import os
import subprocess
import sys

import keras

OTHER_BACKEND = {"tensorflow": "jax", "jax": "torch", "torch": "tensorflow"}[keras.backend.backend()]
OTHER_BACKENDS = [b for b in ("tensorflow", "jax", "torch") if b != keras.backend.backend()]


def run_on_other_backend(script, timeout=300, backend=OTHER_BACKEND):
    """Run Python `script` in a fresh process with `KERAS_BACKEND=backend` (by default the next
    one of tensorflow -> jax -> torch -> tensorflow); returns its stdout and fails the test with
    the end of its stderr if it fails."""
    env = dict(os.environ, KERAS_BACKEND=backend)
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"under {backend}:\n{result.stderr[-2000:]}"
    return result.stdout


def export_model(saved, out, formats=("onnx",)):
    """Export the saved model `saved` to `out` (`trainers.export`): in this process on JAX and
    TensorFlow, in a JAX subprocess on torch (which cannot export)."""
    if keras.backend.backend() == "torch":
        process = export_under("jax", saved, out, "--format", *formats)
        assert process.returncode == 0, process.stderr[-2000:]
        return out
    from trainers import export

    export.export(str(saved), str(out), formats=formats)
    return out


def export_under(backend, model, out, *flags):
    """`python -m trainers.export` in a fresh process on `backend`; returns the completed process."""
    env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=os.getcwd())
    return subprocess.run([sys.executable, "-m", "trainers.export", "--model", str(model), "--out", str(out), *flags],
                          env=env, capture_output=True, text=True, timeout=600)
