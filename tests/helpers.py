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
