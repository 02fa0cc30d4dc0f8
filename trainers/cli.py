"""What every trainer shares: the flags, the training callbacks and one-line errors.

Flags (docs/DESIGN.md, "Command-line conventions"): `--epochs --batch-size --units --seed --out
--max-examples --quick --resume --evaluate --model`; each trainer adds its own (a test-file flag
for `--evaluate`, model sizes, ...). Import this module before Keras: it sets the environment
variables that must be set before TensorFlow or Gradio load.
"""

import argparse
import csv
import json
import os
import re
import shutil
import sys
import time

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
                   help="recurrent layers: ours (layers/) or Keras' built-ins, cuDNN on a GPU; same weights "
                        "(default ours)")
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


# Flags that steer this invocation but not what is trained: a resumed run may change them.
RUN_CONTROL = ("resume", "evaluate", "model", "test_file", "text_file", "show", "out")


class RunCheckpoints:
    """The checkpoints of one training run: `<out>/checkpoints/`, beside the model it will save.

    Keyed by the run's own output folder, so two runs never share or delete each other's
    checkpoints, whatever the current folder. `run.json` records the settings (every flag but
    `RUN_CONTROL`, and the backend) and the time trained; `--resume` continues only a run made
    with the same settings, and a new run refuses to discard an interrupted one. `finish()`
    removes the folder once the model is saved.

    Args:
        args: the parsed flags (`out` and `resume` are read; the rest are the settings).
    """

    def __init__(self, args):
        import keras

        self.folder = os.path.join(args.out, "checkpoints")
        self.resume = args.resume
        self.best_path = os.path.join(self.folder, "best.weights.h5")
        self.log_path = os.path.join(self.folder, "history.csv")
        self.run_path = os.path.join(self.folder, "run.json")
        settings = {k: v for k, v in sorted(vars(args).items()) if k not in RUN_CONTROL}
        settings["backend"] = keras.backend.backend()
        self.settings = json.loads(json.dumps(settings))  # as run.json stores them (lists, not tuples)
        earlier = self._read_run()
        if earlier is None and os.path.exists(self.folder):
            raise UsageError(f"{self.folder} is not a checkpoint folder of ours (no readable run.json); "
                             "move it away or choose another --out")
        if earlier is not None and not self.resume:
            raise UsageError(f"{args.out} holds the checkpoints of an interrupted run: add --resume to continue "
                             f"it, or delete {self.folder} to start afresh")
        if earlier is not None:
            changed = [f"{'KERAS_BACKEND' if k == 'backend' else '--' + k.replace('_', '-')} "
                       f"{earlier['settings'].get(k)!r} (now {v!r})"
                       for k, v in self.settings.items() if earlier["settings"].get(k) != v]
            if changed:
                raise UsageError(f"--resume: the checkpoint in {self.folder} was made with other settings: "
                                 + ", ".join(changed) + "; resume with the same flags, or choose another --out")
        elif self.resume:
            print(f"warning: --resume: no interrupted run in {self.folder}; starting afresh", file=sys.stderr)
        self.sessions = (earlier or {}).get("sessions", 0) + 1
        self.epoch_seconds = (earlier or {}).get("epoch_seconds", {})
        os.makedirs(self.folder, exist_ok=True)
        self._write_run()

    def _read_run(self):
        try:
            with open(self.run_path, encoding="utf-8") as handle:
                run = json.load(handle)
            return run if isinstance(run.get("settings"), dict) else None
        except (OSError, ValueError, AttributeError):
            return None

    def _write_run(self):
        from models.artifacts import write_json  # atomic; imported late: Keras loads after cli

        write_json(self.run_path, {"settings": self.settings, "sessions": self.sessions,
                                   "epoch_seconds": self.epoch_seconds})

    def callbacks(self, patience, monitor="val_loss"):
        """Callbacks for `fit`: resumable, early-stopping training that remembers its best weights.

        * `BackupAndRestore` writes weights, optimizer state and epoch after every epoch, so a
          `--resume` run starts where an interrupted one stopped.
        * `ModelCheckpoint` keeps the weights of the best `monitor` so far (across interruptions:
          the best value of the earlier sessions is read back from the CSV log).
        * `EarlyStopping` ends training after `patience` epochs without improvement.
        * `TerminateOnNaN`, a `CSVLogger` of the history and the time of every epoch (both kept
          across sessions, for `record`).
        """
        import keras

        checkpoints = self

        class EpochClock(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.started = time.time()

            def on_epoch_end(self, epoch, logs=None):
                checkpoints.epoch_seconds[str(epoch)] = round(time.time() - self.started, 1)
                checkpoints._write_run()

        best_so_far = min(_logged_history(self.log_path).get(monitor, []), default=None) if self.resume else None
        return [
            keras.callbacks.BackupAndRestore(os.path.join(self.folder, "backup")),
            keras.callbacks.ModelCheckpoint(self.best_path, monitor=monitor, save_best_only=True,
                                            save_weights_only=True, initial_value_threshold=best_so_far),
            keras.callbacks.EarlyStopping(monitor=monitor, patience=patience, verbose=1),
            keras.callbacks.TerminateOnNaN(),
            keras.callbacks.CSVLogger(self.log_path, append=self.resume),
            EpochClock(),
        ]

    def restore_best(self, model):
        """Load the best weights into `model`, if any epoch was checkpointed."""
        if os.path.exists(self.best_path):
            model.load_weights(self.best_path)

    def record(self, monitor="val_loss"):
        """The card's `"training"` entry for the whole run, over every session: time trained
        (the sum of the epochs), epochs run, the best epoch by `monitor` and the history."""
        history = _logged_history(self.log_path)
        values = history.get(monitor, [])
        seconds = sum(self.epoch_seconds.values())
        return {"seconds": round(seconds, 1), "minutes": round(seconds / 60, 1),
                "epochs_run": len(next(iter(history.values()), [])), "sessions": self.sessions,
                "best_epoch": values.index(min(values)) + 1 if values else None,
                f"best_{monitor}": round(min(values), 4) if values else None,
                "history": {k: [round(x, 4) for x in v] for k, v in history.items()}}

    def finish(self):
        """Remove the checkpoints once the model is saved: the run is complete."""
        shutil.rmtree(self.folder, ignore_errors=True)


def _logged_history(log_path):
    """`{metric: [value per epoch]}` from a CSVLogger file; an epoch logged twice keeps its last row."""
    try:
        with open(log_path, newline="", encoding="utf-8") as handle:
            rows = {row["epoch"]: row for row in csv.DictReader(handle) if row.get("epoch")}
    except (OSError, ValueError, KeyError):
        return {}
    rows = [rows[k] for k in sorted(rows, key=int)]
    names = [k for k in (rows[0] if rows else {}) if k != "epoch"]
    return {k: [float(row[k]) for row in rows if row.get(k) not in (None, "")] for k in names}


def default_out(args, name):
    """`args.out`, or `saved_models/<name>` (`runs/<name>-quick` under `--quick`, so that a smoke
    run never overwrites a real model)."""
    if args.out is None:
        args.out = os.path.join("runs", f"{name}-quick") if args.quick else os.path.join("saved_models", name)
    return args.out


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
        print(f"error: {error_line(error)}", file=sys.stderr)
        sys.exit(code)


# A Python exception raised inside a TensorFlow graph (a data generator, a py_function) comes back
# as one line "SomeError: message" inside the op error's text.
_RAISED = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?([A-Z]\w*(?:Error|Exception)): (.+)")


def error_line(error):
    """One line that says what went wrong.

    Usually the first line of the message. TensorFlow's op errors open with a line that names no
    cause ("Graph execution error:") followed by the graph's node trace; the cause is the Python
    exception raised inside the graph (`TypeError: ...`) or, for an op that failed, the line
    before the `[[{{node ...}}]]` marker.
    """
    # Eager op errors start with the failing function's `{{function_node ...}}` tag.
    lines = [re.sub(r"^\{\{[^}]*\}\}\s*", "", line.strip()) for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    if not lines[0].endswith(":"):
        return lines[0]
    raised = [match for match in map(_RAISED.match, lines[1:]) if match]
    if raised:
        return f"{raised[-1].group(1)}: {raised[-1].group(2)}"
    for before, line in zip(lines[1:], lines[2:]):
        if line.startswith("[[{{node"):
            return f"{lines[0]} {before}"
    return " ".join(lines[:2])
