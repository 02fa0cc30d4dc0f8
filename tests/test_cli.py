"""The trainers' shared command-line machinery (trainers/cli.py, trainers/checkpoints.py,
trainers/batching.py) and what a
hostile user tried against it: batches of several widths, one-line errors, checkpoints that
belong to their run, bad test files, help texts and the declared dependencies."""

import ast
import importlib.metadata
import os
import pathlib
import re
import sys

import keras
import numpy as np
import pytest

from trainers import cli
from trainers.batching import LengthBatches, fit_input, pad
from trainers.checkpoints import RunCheckpoints

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = pathlib.Path(__file__).resolve().parent.parent


# --- batches of several widths ----------------------------------------------------------------------

def test_batches_of_several_widths_train_and_evaluate_on_every_backend():
    """The first two batches have one width and later ones others: TensorFlow's PyDataset
    adapter fixed the width from the first batches and failed on the third."""
    lengths = [3] * 8 + [7] * 4 + [12] * 4  # batches of 4, sorted by length: widths 4, 4, 8, 12

    def make_batch(rows):
        ids = pad([[1 + (i % 5)] * lengths[i] for i in rows], multiple=4)
        return ids, np.asarray([[lengths[i] % 2] for i in rows], "float32")

    batches = LengthBatches(lengths, make_batch, batch_size=4, shuffle=False, chunk_batches=1)
    assert [batches[i][0].shape[1] for i in range(len(batches))] == [4, 4, 8, 12]
    model = keras.Sequential([keras.layers.Embedding(8, 4, mask_zero=True), keras.layers.GlobalAveragePooling1D(),
                              keras.layers.Dense(1)])
    model.compile("adam", keras.losses.BinaryCrossentropy(from_logits=True))
    history = model.fit(fit_input(batches), validation_data=fit_input(batches), epochs=2, verbose=0,
                        shuffle=False)
    assert len(history.history["val_loss"]) == 2
    assert np.isfinite(model.evaluate(fit_input(batches), verbose=0))


def test_fit_input_reshuffles_every_pass_as_keras_does():
    lengths = list(range(1, 33))
    seen = []

    def make_batch(rows):
        seen.append(tuple(rows))
        return pad([[1] * lengths[i] for i in rows]), np.zeros((len(rows), 1), "float32")

    batches = LengthBatches(lengths, make_batch, batch_size=4, seed=0)
    model = keras.Sequential([keras.layers.Embedding(4, 2), keras.layers.GlobalAveragePooling1D(),
                              keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    model.fit(fit_input(batches), epochs=2, verbose=0, shuffle=False)  # as the trainers do
    epochs = seen[-16:-8], seen[-8:]  # TensorFlow reads two batches more first, for their shapes
    assert sorted(map(sorted, epochs[0])) == sorted(map(sorted, epochs[1])) and epochs[0] != epochs[1]


# --- one-line errors ----------------------------------------------------------------------------------

@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow's op errors")
def test_tensorflow_graph_errors_carry_their_cause_in_one_line():
    import tensorflow as tf

    def mismatched():
        yield np.zeros((2, 3), "int32")
        yield np.zeros((2, 4), "int32")

    dataset = tf.data.Dataset.from_generator(mismatched, output_signature=tf.TensorSpec((None, 3), tf.int32))
    with pytest.raises(tf.errors.OpError) as raised:
        list(dataset)
    assert cli.error_line(raised.value) == (
        "TypeError: `generator` yielded an element of shape (2, 4) where an element of shape (None, 3) was expected.")

    @tf.function
    def gather(indices):
        return tf.gather(tf.zeros((3, 2)), indices)

    with pytest.raises(tf.errors.OpError) as raised:
        gather(tf.constant([5]))
    assert cli.error_line(raised.value) == "Graph execution error: indices[0] = 5 is not in [0, 3)"


def test_error_line_is_the_first_line_of_an_ordinary_message():
    assert cli.error_line(ValueError("bad value\nmore detail")) == "bad value"
    assert cli.error_line(KeyError()) == "KeyError"


# --- checkpoints belong to their run -------------------------------------------------------------------

def flags(out, resume=False, **changes):
    """`RunCheckpoints` arguments: the settings of a run, its folder and --resume."""
    return {"units": 8, "seed": 1, **changes}, str(out), resume


def test_checkpoints_live_under_the_run_output_and_refuse_to_be_discarded(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = RunCheckpoints(*flags(tmp_path / "a" / "model"))
    assert pathlib.Path(run.folder) == tmp_path / "a" / "model" / "checkpoints" and os.path.isdir(run.folder)
    assert not (tmp_path / "checkpoints").exists()
    run.epoch_seconds["0"] = 1.0  # one epoch done
    run._write_run()
    with pytest.raises(cli.UsageError, match="holds the checkpoints of an interrupted run: add --resume"):
        RunCheckpoints(*flags(tmp_path / "a" / "model"))
    assert os.path.isdir(run.folder)  # nothing deleted
    other = RunCheckpoints(*flags(tmp_path / "b" / "model", resume=True))  # same last name, other run
    assert other.sessions == 1 and other.folder != run.folder


def test_a_run_stopped_before_its_first_epoch_does_not_block_the_next(tmp_path, capsys):
    """The newcomer's path: a run fails on missing data after writing run.json; once the data is
    there, the same command must start, not ask for --resume."""
    RunCheckpoints(*flags(tmp_path / "model"))  # the failed run: run.json only
    again = RunCheckpoints(*flags(tmp_path / "model", units=16))
    assert again.sessions == 1 and "stopped before its first epoch; starting afresh" in capsys.readouterr().err
    (tmp_path / "model" / "checkpoints" / "best.weights.h5").write_bytes(b"")  # an epoch's best weights
    with pytest.raises(cli.UsageError, match="interrupted run"):
        RunCheckpoints(*flags(tmp_path / "model", units=16))


def test_resume_refuses_a_checkpoint_made_with_other_settings(tmp_path):
    RunCheckpoints(*flags(tmp_path / "model"))
    with pytest.raises(cli.UsageError, match=r"other settings: --units 8 \(now 16\)"):
        RunCheckpoints(*flags(tmp_path / "model", units=16, resume=True))
    resumed = RunCheckpoints(*flags(tmp_path / "model", resume=True))
    assert resumed.sessions == 2
    resumed.finish()
    assert not os.path.exists(resumed.folder)


def test_a_foreign_checkpoints_folder_is_left_alone(tmp_path):
    (tmp_path / "model" / "checkpoints").mkdir(parents=True)
    (tmp_path / "model" / "checkpoints" / "precious.txt").write_text("keep me")
    with pytest.raises(cli.UsageError, match="not a checkpoint folder of ours"):
        RunCheckpoints(*flags(tmp_path / "model"))
    assert (tmp_path / "model" / "checkpoints" / "precious.txt").read_text() == "keep me"


def test_the_record_of_a_resumed_run_covers_every_session(tmp_path):
    x, y = np.random.default_rng(0).normal(size=(32, 3)), np.zeros((32, 1))

    def session(epochs, resume):
        run = RunCheckpoints(*flags(tmp_path / "model", resume=resume))
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
        model.compile("sgd", "mse")
        model.fit(x, y, validation_data=(x, y), epochs=epochs, verbose=0, callbacks=run.callbacks(patience=5))
        return run

    session(2, resume=False)  # as if interrupted after epoch 2 of 3
    record = session(3, resume=True).record()
    assert record["epochs_run"] == 3 and record["sessions"] == 2
    assert len(record["history"]["loss"]) == len(record["history"]["val_loss"]) == 3
    assert record["best_epoch"] in (1, 2, 3) and record["seconds"] >= 0


def test_an_interrupt_just_after_an_epoch_is_backed_up_loses_none_of_its_record(tmp_path, monkeypatch):
    """The backup marks an epoch as done, so everything else about the epoch is written before it."""
    x, y = np.random.default_rng(0).normal(size=(32, 3)), np.zeros((32, 1))
    save_backup = keras.callbacks.BackupAndRestore._save_model

    def save_then_interrupt(self, *args, **kwargs):
        save_backup(self, *args, **kwargs)
        raise KeyboardInterrupt  # Ctrl-C at the first moment the resumed run would skip this epoch

    def session(epochs, resume):
        run = RunCheckpoints(*flags(tmp_path / "model", resume=resume))
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
        model.compile("sgd", "mse")
        model.fit(x, y, validation_data=(x, y), epochs=epochs, verbose=0, callbacks=run.callbacks(patience=5))
        return run

    with monkeypatch.context() as patched:
        patched.setattr(keras.callbacks.BackupAndRestore, "_save_model", save_then_interrupt)
        with pytest.raises(KeyboardInterrupt):
            session(3, resume=False)
    run = session(3, resume=True)
    record = run.record()
    assert record["epochs_run"] == 3 and sorted(run.epoch_seconds) == ["0", "1", "2"]
    assert os.path.exists(run.best_path)


# --- --evaluate and its files ------------------------------------------------------------------------------

@pytest.mark.parametrize("task, file_flag", [("translate", "--test-file"), ("sentiment", "--test-file"),
                                             ("generate", "--test-file"), ("generate", "--text-file")])
def test_a_missing_test_file_is_reported_before_the_model_loads(task, file_flag, tmp_path, monkeypatch):
    import importlib

    trainer = importlib.import_module(f"trainers.{task}")

    def too_early(*args, **kwargs):
        raise AssertionError("the model was loaded before the test file was checked")

    for name in ("Translator", "SentimentClassifier", "CharGenerator"):
        if hasattr(trainer, name):
            monkeypatch.setattr(getattr(trainer, name), "load", too_early)
    with pytest.raises(cli.UsageError, match="does not exist"):
        trainer.main(["--evaluate", "--model", str(tmp_path), file_flag, str(tmp_path / "missing.tsv")])


def test_sentiment_test_file_in_latin1_or_with_a_third_column_is_refused(tmp_path):
    from trainers import sentiment

    latin1 = tmp_path / "latin1.tsv"
    latin1.write_bytes("1\tUn film émouvant.\n".encode("latin-1"))
    with pytest.raises(cli.UsageError, match="is not UTF-8 text"):
        sentiment.read_test_file(str(latin1))
    three = tmp_path / "three.tsv"
    three.write_text("1\tGreat film.\tsource: imdb\n", encoding="utf-8")
    with pytest.raises(cli.UsageError, match=r"three.tsv:1: .* got 3 tab-separated fields"):
        sentiment.read_test_file(str(three))
    good = tmp_path / "good.tsv"
    good.write_text("1\tGreat film.\r\n0\tAwful.\n", encoding="utf-8")
    assert sentiment.read_test_file(str(good))[0] == ["Great film.", "Awful."]


@pytest.mark.parametrize("task", ["translate", "sentiment", "generate"])
def test_help_names_the_default_output_folder(task, capsys):
    import importlib

    with pytest.raises(SystemExit):
        importlib.import_module(f"trainers.{task}").build_parser().parse_args(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "(default None" not in help_text
    assert re.search(r"--out OUT saved-model folder to write \(default saved_models/", help_text)


# --- the install ---------------------------------------------------------------------------------------------

def declared_distributions():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    return project, {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements}


def test_every_third_party_import_of_the_suite_is_a_declared_dependency():
    """A package that only arrives with an extra (scipy with jax) breaks a plain install: what a
    module imports when it loads must be a dependency; a function may import an extra's package
    (the backends, onnx for `trainers.export`) when it needs it."""
    project, _ = declared_distributions()
    required = {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower().replace("_", "-") for r in project["dependencies"]}
    extras = {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower().replace("_", "-")
              for name, extra in project["optional-dependencies"].items() if name != "all" for r in extra}
    providers = importlib.metadata.packages_distributions()
    ours = {"runtime", "layers", "models", "trainers", "apps", "benchmarks"}
    missing = set()
    for package in ("runtime", "layers", "models", "trainers", "apps"):  # what `pip install rnn-suite` must run
        for path in (ROOT / package).glob("*.py"):
            tree = ast.parse(path.read_text())
            lazy = {id(node) for function in ast.walk(tree) if isinstance(function, ast.FunctionDef)
                    for node in ast.walk(function)}
            for node in ast.walk(tree):
                absolute_from = isinstance(node, ast.ImportFrom) and node.module and not node.level
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module] if absolute_from else [])
                for name in names:
                    top = name.split(".")[0]
                    if top in ours or top in sys.stdlib_module_names:
                        continue
                    distributions = {d.lower().replace("_", "-") for d in providers.get(top, [top])}
                    if not distributions & (required | extras if id(node) in lazy else required):
                        missing.add(f"{top} ({path.relative_to(ROOT)})")
    assert not missing, f"imported but not in [project.dependencies]: {sorted(missing)}"


def test_declared_gradio_has_the_launch_arguments_the_apps_use():
    """apps/common.py passes theme= and css= to launch(); Gradio 5's launch() has neither."""
    project, _ = declared_distributions()
    requirement = next(r for r in project["dependencies"] if r.startswith("gradio"))
    minimum = re.search(r">=\s*(\d+)", requirement)
    assert minimum and int(minimum.group(1)) >= 6, requirement
    import inspect

    import gradio

    source = (ROOT / "apps" / "common.py").read_text()
    used = {keyword for keyword in ("theme", "css") if re.search(rf"launch\([^)]*\b{keyword}=", source, re.S)}
    assert used <= set(inspect.signature(gradio.Blocks.launch).parameters)


# --- corpora in the Keras cache ---------------------------------------------------------------------------

def tiny_corpus(tmp_path, monkeypatch):
    """A one-file zip 'corpus' in a fresh Keras cache under `tmp_path`."""
    import zipfile

    from trainers import data

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    (tmp_path / "datasets").mkdir()
    with zipfile.ZipFile(tmp_path / "datasets" / "tiny.zip", "w") as archive:
        archive.writestr("tiny/a.txt", "first")
    corpus = data.Corpus("tiny.zip", "http://localhost:9/tiny.zip", None, "tiny/a.txt")
    monkeypatch.setitem(data.CORPORA, "tiny", corpus)
    return data


def test_a_corpus_is_extracted_once_not_on_every_call(tmp_path, monkeypatch):
    """keras.utils.get_file(extract=True) rewrites the whole extraction on every call (100,000 IMDB
    files), under the feet of other processes reading it."""
    data = tiny_corpus(tmp_path, monkeypatch)
    path = data.corpus_file("tiny")
    assert open(path).read() == "first"
    with open(path, "w") as handle:
        handle.write("changed")  # a second call must not extract again
    assert open(data.corpus_file("tiny")).read() == "changed"
    archive = tmp_path / "datasets" / "tiny.zip"
    os.utime(archive, (1, 1))  # a new archive (other time stamp) is extracted again
    assert open(data.corpus_file("tiny")).read() == "first"


def test_corpus_fetching_is_one_process_at_a_time(tmp_path, monkeypatch):
    import threading
    import time

    data = tiny_corpus(tmp_path, monkeypatch)
    inside, overlaps, real_get_file = [0], [], keras.utils.get_file

    def slow_get_file(*args, **kwargs):
        inside[0] += 1
        overlaps.append(inside[0])
        time.sleep(0.2)
        try:
            return real_get_file(*args, **kwargs)
        finally:
            inside[0] -= 1

    monkeypatch.setattr(keras.utils, "get_file", slow_get_file)
    threads = [threading.Thread(target=data.corpus_file, args=("tiny",)) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert overlaps == [1]  # the first extracts; the others wait, then find the marker


def test_a_quick_run_says_that_its_scores_are_a_smoke_test(capsys):
    from trainers import sentiment

    cli.output_folders(sentiment.build_parser().parse_args(["--quick"]), "sentiment-imdb")
    assert "--quick: a smoke run" in capsys.readouterr().out
    cli.output_folders(sentiment.build_parser().parse_args([]), "sentiment-imdb")
    cli.output_folders(sentiment.build_parser().parse_args(["--quick", "--evaluate", "--test-file", "x"]), "s")
    assert "smoke" not in capsys.readouterr().out
