"""The checkpoints of a training run: resumable, early-stopping training that keeps its best weights.

`RunCheckpoints` owns `<out>/checkpoints/` (weights, optimizer state, the history and the time of
every epoch) from the start of a run until its model is saved; `--resume` continues an
interrupted run made with the same settings (docs/DESIGN.md, "Checkpoints and --resume").
"""

import contextlib
import csv
import json
import os
import shutil
import sys
import time

import keras

from models.artifacts import write_json
from trainers.cli import UsageError


class RunCheckpoints:
    """The checkpoints of one training run: `<out>/checkpoints/`, beside the model it will save.

    Keyed by the run's own output folder, so two runs never share or delete each other's
    checkpoints, whatever the current folder. `run.json` records the settings (the run's config
    and the backend) and the time trained; `--resume` continues only a run made with the same
    settings, and a new run refuses to discard an interrupted one. `finish()` removes the folder
    once the model is saved.

    Args:
        settings: dict of what is trained (the config's fields).
        out: the saved-model folder the run will write.
        resume: whether to continue an interrupted run (`--resume`).
        writer: whether this process writes the checkpoints (process 0 of several,
            `trainers.cluster`); the others only read them, to resume.
        begin: write `run.json` at once; `False` leaves it to `begin()`, called once every
            process has read the earlier one (`TrainingRun`).
        writing: a context manager factory that every weight save runs in (the multi-process
            engine's `Engine.writing`: a save by one process alone must not be collective).
    """

    def __init__(self, settings, out, resume=False, writer=True, writing=contextlib.nullcontext, begin=True):
        self.folder = os.path.join(out, "checkpoints")
        self.resume, self.writer, self.writing = resume, writer, writing
        self.best_path = os.path.join(self.folder, "best.weights.h5")
        self.log_path = os.path.join(self.folder, "history.csv")
        self.run_path = os.path.join(self.folder, "run.json")
        settings = dict(sorted(settings.items()))
        settings["backend"] = keras.backend.backend()
        self.settings = json.loads(json.dumps(settings))  # as run.json stores them (lists, not tuples)
        earlier = self._read_run()
        if earlier is None and os.path.exists(self.folder):
            raise UsageError(f"{self.folder} is not a checkpoint folder of ours (no readable run.json); "
                             "move it away or choose another --out")
        if earlier is not None and not self.resume:
            if self._holds_progress(earlier):
                raise UsageError(f"{out} holds the checkpoints of an interrupted run: add --resume to continue "
                                 f"it, or delete {self.folder} to start afresh")
            # Stopped before its first epoch (missing data, a bad flag, Ctrl-C while compiling): there
            # is nothing to resume or to lose, and refusing would only block the corrected command.
            print(f"note: {self.folder}: an earlier run stopped before its first epoch; starting afresh",
                  file=sys.stderr)
            earlier = None
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
        if begin:
            self.begin()

    def begin(self):
        """Start the run's record (the writing process only)."""
        if self.writer:
            os.makedirs(self.folder, exist_ok=True)
            self._write_run()

    def _holds_progress(self, run):
        """Whether the run recorded in `run` (its run.json) finished an epoch: an epoch's time, a
        backup or best weights (the history file is opened before the first epoch, so it says nothing)."""
        return bool(run.get("epoch_seconds")) or any(
            os.path.exists(path) for path in (self.best_path, os.path.join(self.folder, "backup")))

    def _read_run(self):
        try:
            with open(self.run_path, encoding="utf-8") as handle:
                run = json.load(handle)
            return run if isinstance(run.get("settings"), dict) else None
        except (OSError, ValueError, AttributeError):
            return None

    def _write_run(self):
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
        checkpoints = self

        class EpochClock(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.started = time.time()

            def on_epoch_end(self, epoch, logs=None):
                checkpoints.epoch_seconds[str(epoch)] = round(time.time() - self.started, 1)
                checkpoints._write_run()

        best_so_far = min(_logged_history(self.log_path).get(monitor, []), default=None) if self.resume else None
        if not self.writer:  # restore an interrupted run's state, write nothing
            return [RestoreOnly(os.path.join(self.folder, "backup"), delete_checkpoint=False),
                    keras.callbacks.EarlyStopping(monitor=monitor, patience=patience), keras.callbacks.TerminateOnNaN()]
        # Order matters for an interrupt between two of them: the backup (which marks an epoch as
        # done) is written last, so a resumed run never lacks the best weights, history row or time
        # of an epoch it skips; an epoch cut before its backup is run again, and its row replaced.
        return [
            _saving_in(keras.callbacks.ModelCheckpoint, self.writing)(
                self.best_path, monitor=monitor, save_best_only=True, save_weights_only=True,
                initial_value_threshold=best_so_far),
            keras.callbacks.CSVLogger(self.log_path, append=self.resume),
            EpochClock(),
            _saving_in(keras.callbacks.BackupAndRestore, self.writing)(os.path.join(self.folder, "backup")),
            keras.callbacks.EarlyStopping(monitor=monitor, patience=patience, verbose=1),
            keras.callbacks.TerminateOnNaN(),
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
        if self.writer:
            shutil.rmtree(self.folder, ignore_errors=True)


def _saving_in(callback_class, writing):
    """`callback_class` (a Keras callback that saves with `_save_model`) saving within `writing()`."""
    if writing is contextlib.nullcontext:
        return callback_class

    class Saving(callback_class):
        def _save_model(self, *args, **kwargs):
            with writing():
                return super()._save_model(*args, **kwargs)

    Saving.__name__ = callback_class.__name__
    return Saving


class RestoreOnly(keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` that restores an interrupted run's state but never writes one: the
    processes other than 0 of a multi-process run (process 0 writes the same state)."""

    def _save_model(self):
        pass


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


