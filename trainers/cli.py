"""What every trainer shares: the flags, the training callbacks and one-line errors.

Flags (DESIGN.md, "Command-line conventions"): `--epochs --batch-size --units --seed --out
--max-examples --quick --resume --evaluate --model`; each trainer adds its own (a test-file flag
for `--evaluate`, model sizes, ...). Import this module before Keras: it sets the environment
variables that must be set before TensorFlow or Gradio load.
"""

import argparse
import csv
import os
import shutil
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


class UsageError(Exception):
    """A mistake of the user (bad file, bad flag combination): printed as one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    """`argparse` that reports a bad flag in one line (no usage block) and exits with 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def positive_int(text):
    """argparse type: an integer > 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def positive_float(text):
    """argparse type: a finite number > 0 (learning rates, clipping norms)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def parser(prog, description, defaults, quick, notes=None):
    """A `Parser` with the shared flags.

    Flags whose default differs under `--quick` are parsed with default `None` and resolved by
    `resolve`, so that an explicit value always wins. `defaults` and `quick` map flag destinations
    (`epochs`, `batch_size`, `units`, `seed`, `out`, `max_examples`, ...) to values; `notes`
    replaces the "(default ...)" text of a flag's help where a value alone does not say it.
    """
    p = Parser(prog=prog, description=description)
    notes = notes or {}

    def shown(name):
        return notes.get(name) or default_text(name, defaults, quick)

    p.add_argument("--epochs", type=positive_int, help=f"most epochs to train ({shown('epochs')})")
    p.add_argument("--batch-size", type=positive_int, help=f"examples per batch ({shown('batch_size')})")
    p.add_argument("--units", type=positive_int, help=f"recurrent units ({shown('units')})")
    p.add_argument("--seed", type=int, help=f"seed of the split, shuffling and weights ({shown('seed')})")
    p.add_argument("--out", help=f"saved-model folder to write ({shown('out')})")
    p.add_argument("--max-examples", type=positive_int,
                   help=f"use a seeded random subset of this many examples ({shown('max_examples')})")
    p.add_argument("--quick", action="store_true", help="smoke run of a few minutes (small data and model)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run from its last epoch checkpoint")
    p.add_argument("--evaluate", action="store_true", help="score the saved model --model instead of training")
    p.add_argument("--model", help="saved-model folder for --evaluate")
    # Devices and precision: applied by trainers.devices.setup.
    p.add_argument("--rnn-impl", choices=["ours", "keras"], default="ours",
                   help="recurrent layers: ours (layers/) or Keras' built-ins, cuDNN on a GPU; same weights (default ours)")
    p.add_argument("--precision", choices=PRECISIONS, default="float32",
                   help="Keras dtype policy (default float32; the mixed ones pay off on a GPU)")
    p.add_argument("--data-parallel", action="store_true",
                   help="one model replica per device: keras.distribution.DataParallel on JAX, "
                        "MirroredStrategy on TensorFlow (not on torch)")
    return p


def default_text(name, defaults, quick):
    """`"default X, Y with --quick"` for a flag's help."""
    text = f"default {defaults.get(name)}"
    return text + (f", {quick[name]} with --quick" if name in quick else "")


def resolve(args, defaults, quick):
    """Fill the flags left at `None`: the `quick` value under `--quick`, else the default."""
    for name, value in defaults.items():
        if getattr(args, name, None) is None:
            setattr(args, name, quick[name] if args.quick and name in quick else value)
    return args


def flush_denormals(enable=True):
    """Flush subnormal floats to zero on the torch backend (XLA, so JAX, and TensorFlow already do).

    Near convergence some gradients and Adam moments become subnormal, and torch on a CPU then
    runs 10 to 25 times slower: the reversal task of tests/test_translate.py took 115 s instead
    of 4.4 s. Process-wide; a no-op on the other backends. Returns whether it was applied.
    """
    import keras

    if keras.backend.backend() != "torch":
        return False
    import torch

    return bool(torch.set_flush_denormal(enable))


def training_callbacks(checkpoint_dir, resume, patience, monitor="val_loss"):
    """Callbacks for `fit`: resumable, early-stopping training that remembers its best weights.

    * `BackupAndRestore` writes weights, optimizer state and epoch after every epoch; with `resume`
      the next run starts where an interrupted one stopped. Without `resume` the old backup is
      discarded and training starts afresh.
    * `ModelCheckpoint` keeps the weights of the best `monitor` so far (across interruptions: the
      best value of the earlier run is read back from the CSV log).
    * `EarlyStopping` ends training after `patience` epochs without improvement.
    * `TerminateOnNaN` and a `CSVLogger` (the history, appended to when resuming).

    Returns:
        `(callbacks, best_weights_path)`: load the best weights from the path after `fit`.
    """
    import keras

    if not resume:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    os.makedirs(checkpoint_dir, exist_ok=True)
    best_path = os.path.join(checkpoint_dir, "best.weights.h5")
    log_path = os.path.join(checkpoint_dir, "history.csv")
    best_so_far = _best_logged(log_path, monitor) if resume else None
    callbacks = [
        keras.callbacks.BackupAndRestore(os.path.join(checkpoint_dir, "backup")),
        keras.callbacks.ModelCheckpoint(best_path, monitor=monitor, save_best_only=True,
                                        save_weights_only=True, initial_value_threshold=best_so_far),
        keras.callbacks.EarlyStopping(monitor=monitor, patience=patience, verbose=1),
        keras.callbacks.TerminateOnNaN(),
        keras.callbacks.CSVLogger(log_path, append=resume),
    ]
    return callbacks, best_path


def training_record(history, seconds, monitor="val_loss"):
    """The card's `"training"` entry: time, epochs run, the best epoch by `monitor` and the history."""
    import numpy as np

    values = history.history.get(monitor, [])
    return {"seconds": round(seconds, 1), "minutes": round(seconds / 60, 1), "epochs_run": len(values),
            "best_epoch": int(np.argmin(values)) + 1 if values else None,
            f"best_{monitor}": round(float(min(values)), 4) if values else None,
            "history": {k: [round(float(x), 4) for x in v] for k, v in history.history.items()}}


def default_out(args, name):
    """`args.out`, or `saved_models/<name>` (`runs/<name>-quick` under `--quick`, so that a smoke
    run never overwrites a real model)."""
    if args.out is None:
        args.out = os.path.join("runs", f"{name}-quick") if args.quick else os.path.join("saved_models", name)
    return args.out


def _best_logged(log_path, monitor):
    """Lowest `monitor` value in a CSVLogger file, or `None`."""
    try:
        with open(log_path, newline="", encoding="utf-8") as handle:
            values = [float(row[monitor]) for row in csv.DictReader(handle) if row.get(monitor)]
    except (OSError, ValueError, KeyError):
        return None
    return min(values) if values else None


def run(main, argv=None):
    """Call `main(argv)` and turn failures into one line on stderr and a non-zero exit code.

    `UsageError`, missing files and bad values exit with 2, anything else with 1;
    `RNN_SUITE_TRACEBACK=1` shows the full traceback instead (for debugging).
    """
    prog = os.path.basename(sys.argv[0]) if argv is None else "trainer"
    try:
        sys.exit(main(argv) or 0)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; run again with --resume to continue from the last epoch",
              file=sys.stderr)
        sys.exit(130)
    except Exception as error:  # noqa: BLE001 - the CLI contract: one line, no traceback
        if os.environ.get("RNN_SUITE_TRACEBACK"):
            raise
        code = 2 if isinstance(error, (UsageError, FileNotFoundError, ValueError)) else 1
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"error: {message}", file=sys.stderr)
        sys.exit(code)
