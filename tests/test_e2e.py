"""Every trainer's real command line, end to end, on the backend of this test process.

`python -m trainers.<task>` runs in a fresh process from an empty folder (so nothing it writes
lands in the checkout) on a slice of its real corpus from the Keras cache, with batches of
several widths where the task has them; the saved model is then loaded and scored with
`--evaluate`. Run them alone with `pytest -m e2e`. They need the corpora in the Keras cache
(`$KERAS_HOME/datasets` or `~/.keras/datasets`, see the README) and are skipped without them.
"""

import json
import os
import signal
import subprocess
import sys
import time

import keras
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DATASETS = os.path.join(os.environ.get("KERAS_HOME", os.path.expanduser("~/.keras")), "datasets")


def needs(*files):
    missing = [f for f in files if not os.path.exists(os.path.join(DATASETS, f))]
    return pytest.mark.skipif(bool(missing), reason=f"corpus not in the Keras cache {DATASETS}: {missing}")


def command(module, *args):
    return [sys.executable, "-m", f"trainers.{module}", *map(str, args)]


def environment():
    return dict(os.environ, KERAS_BACKEND=keras.backend.backend(), PYTHONUNBUFFERED="1",
                KERAS_HOME=os.path.dirname(DATASETS))


def run(module, *args, cwd, expect=0, timeout=900):
    """Run a trainer; assert its exit code; return `(stdout, stderr)`."""
    result = subprocess.run(command(module, *args), cwd=cwd, env=environment(), capture_output=True,
                            text=True, timeout=timeout)
    assert result.returncode == expect, (
        f"exit {result.returncode}, expected {expect}:\n{result.stdout[-1500:]}\n{result.stderr[-3000:]}")
    return result.stdout, result.stderr


# `python -c WAIT_AT_EPOCH_2 <task> <flags>`: the trainer's command line, with a callback that stops at
# the start of the second epoch in an (interruptible) sleep until Ctrl-C.
WAIT_AT_EPOCH_2 = """
import runpy, sys, time
import keras

class WaitAtEpoch2(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:
            print("waiting for Ctrl-C", flush=True)
            time.sleep(600)

fit = keras.Model.fit
keras.Model.fit = lambda self, *args, callbacks=(), **kwargs: fit(
    self, *args, callbacks=[*callbacks, WaitAtEpoch2()], **kwargs)
task = sys.argv.pop(1)
runpy.run_module(f"trainers.{task}", run_name="__main__", alter_sys=True)
"""


def one_line_error(stderr):
    """The error line of a failed trainer: the last line of stderr, with no traceback before it."""
    assert "Traceback" not in stderr, stderr[-3000:]
    line = stderr.strip().splitlines()[-1]
    assert line.startswith("error: "), stderr[-3000:]
    return line


@needs("spa-eng.zip")
def test_translate_trains_saves_and_evaluates(tmp_path):
    out = tmp_path / "model"
    stdout, _ = run("translate", "--quick", "--max-examples", 1500, "--epochs", 1, "--units", 32,
                    "--embedding-dim", 16, "--batch-size", 16, "--out", out, cwd=tmp_path)
    assert "test beam 5: BLEU" in stdout and f"saved to {out}" in stdout
    card = json.loads((out / "card.json").read_text())
    assert card["training"]["epochs_run"] == 1 and card["hardware"]["backend"] == keras.backend.backend()
    assert not (out / "checkpoints").exists() and not (tmp_path / "checkpoints").exists()
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("Hola.\tHello.\tHi.\n¿Dónde está la estación de tren?\tWhere is the train station?\n",
                     encoding="utf-8")
    stdout, _ = run("translate", "--evaluate", "--model", out, "--test-file", pairs, cwd=tmp_path)
    assert "pairs.tsv greedy: BLEU" in stdout and "pairs.tsv beam 5: BLEU" in stdout


@needs("aclImdb_v1.tar.gz")
def test_sentiment_trains_saves_and_evaluates(tmp_path):
    out = tmp_path / "model"
    stdout, _ = run("sentiment", "--max-examples", 300, "--epochs", 1, "--units", 4, "--embedding-dim", 8,
                    "--vocab", 500, "--max-length", 120, "--embedding-init", "random", "--out", out,
                    cwd=tmp_path)
    assert "test (300 reviews): accuracy" in stdout
    card = json.loads((out / "card.json").read_text())
    assert card["training"]["epochs_run"] == 1 and card["test"]["examples"] == 300
    reviews = tmp_path / "reviews.tsv"
    reviews.write_text("1\tA wonderful, moving film.\n0\tDull and far too long.<br />Avoid.\n", encoding="utf-8")
    stdout, _ = run("sentiment", "--evaluate", "--model", out, "--test-file", reviews, cwd=tmp_path)
    assert "reviews.tsv (2 reviews): accuracy" in stdout


@needs("shakespeare.txt")
def test_generate_trains_saves_and_evaluates(tmp_path):
    out = tmp_path / "model"
    stdout, _ = run("generate", "--quick", "--max-examples", 20000, "--epochs", 1, "--out", out, cwd=tmp_path)
    assert "validation, full context" in stdout and "ROMEO:" in stdout
    text = tmp_path / "text.txt"
    text.write_text("ROMEO:\nBut soft, what light through yonder window breaks?\n", encoding="utf-8")
    stdout, _ = run("generate", "--evaluate", "--model", out, "--test-file", text, cwd=tmp_path)
    assert "text.txt (" in stdout and "nats/char" in stdout


def test_gradients_lab_writes_plots_and_results(tmp_path):
    out = tmp_path / "lab"
    stdout, _ = run("gradients", "--lengths", 8, "--tasks", "adding", "recall", "--steps", 3, "--units", 8,
                    "--out", out, cwd=tmp_path)
    results = json.loads((out / "results.json").read_text())
    assert set(results["tasks"]) == {"adding", "recall"} and results["backend"] == keras.backend.backend()
    assert {p.name for p in out.glob("*.png")} >= {"adding-8-initial.png", "recall-8-trained.png", "clipping.png"}


@needs("shakespeare.txt")
def test_interrupted_run_resumes_only_with_its_own_settings_and_its_card_covers_all_of_it(tmp_path):
    """Ctrl-C in the second of three epochs, then: a fresh start to the same --out is refused, --resume
    with other settings is refused, --resume with the same settings finishes, and the card
    counts both sessions. A run to another folder of the same name shares nothing."""
    flags = ["--quick", "--max-examples", 20000, "--epochs", 3, "--units", 64]
    out = tmp_path / "a" / "model"
    # The child waits at the start of epoch 2 until the signal comes, so the test does not race a fast
    # backend (JAX once finished all three epochs before the signal arrived). Ctrl-C as a terminal sends
    # it: the child must not inherit an ignored SIGINT (a shell starts background jobs, `make test &`,
    # with SIGINT ignored, and Python then never raises KeyboardInterrupt).
    process = subprocess.Popen([sys.executable, "-c", WAIT_AT_EPOCH_2, "generate", *map(str, flags), "--out", out],
                               cwd=tmp_path, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen, deadline = b"", time.time() + 600
    while b"waiting for Ctrl-C" not in seen and time.time() < deadline and process.poll() is None:
        seen += os.read(process.stdout.fileno(), 4096)
    assert b"val_loss" in seen and b"waiting for Ctrl-C" in seen, seen[-2000:]  # after epoch 1
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=300)
    stderr = stderr.decode()
    assert process.returncode == 130, (stderr[-2000:], (seen + stdout)[-1500:])
    assert "run again with --resume" in stderr

    _, stderr = run("generate", *flags, "--out", out, cwd=tmp_path, expect=2)
    assert "holds the checkpoints of an interrupted run" in one_line_error(stderr)
    _, stderr = run("generate", *flags, "--units", 32, "--resume", "--out", out, cwd=tmp_path, expect=2)
    assert "other settings: --units 64 (now 32)" in one_line_error(stderr)

    stdout, _ = run("generate", *flags, "--resume", "--out", out, cwd=tmp_path)
    assert "Epoch 2/3" in stdout and "Epoch 1/3" not in stdout  # continued after the saved epoch
    training = json.loads((out / "card.json").read_text())["training"]
    assert training["epochs_run"] == 3 and training["sessions"] == 2
    assert len(training["history"]["loss"]) == 3 and training["seconds"] > 0
    assert not (out / "checkpoints").exists()

    other = tmp_path / "b" / "model"  # same last name, another run: nothing to resume there
    _, stderr = run("generate", *flags, "--resume", "--epochs", 1, "--out", other, cwd=tmp_path)
    assert "no interrupted run" in stderr
    assert json.loads((other / "card.json").read_text())["training"]["sessions"] == 1
