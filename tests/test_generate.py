"""Character language model: memorising, state carried across calls, sampling controls, seeds,
awkward prompts, save/load across backends, the trainer's data and scoring."""

import json

import keras
import numpy as np
import pytest

from models.char_lm import CharLM, CharLMConfig, CharVocabulary
from models.generator import CharGenerator, check_sampling, sample
from trainers import generate as trainer

from helpers import run_on_other_backend

TEXT = "to be or not to be, that is the question.\n" * 4


@pytest.fixture(scope="module")
def memorised():
    """A tiny LSTM trained until it recites TEXT."""
    keras.utils.set_random_seed(0)
    vocabulary = CharVocabulary.build(TEXT)
    ids, _ = vocabulary.encode(TEXT)
    model = CharLM(CharLMConfig(vocab_size=len(vocabulary), embedding_dim=16, units=64, num_layers=1, dropout=0.0))
    model.build()
    model.compile(keras.optimizers.Adam(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    windows = trainer.Windows(ids, 32, batch_size=16, seed=0)
    model.fit(windows, epochs=60, verbose=0)
    return CharGenerator(model, vocabulary)


def test_tiny_model_memorises_a_short_text(memorised):
    line = "to be or not to be, that is the question.\n"
    assert memorised.generate("to be or ", length=len(line) - 9, temperature=0) == line[9:]


def test_two_calls_that_carry_the_state_equal_one(memorised):
    session = memorised.start("to be", seed=7)
    two = session.generate(30, temperature=1.0) + session.generate(30, temperature=1.0)
    assert two == memorised.generate("to be", length=60, temperature=1.0, seed=7)


def test_streaming_yields_each_character(memorised):
    pieces = list(memorised.stream("to", length=12, temperature=0))
    assert len(pieces) == 12 and all(len(p) == 1 for p in pieces)
    assert "".join(pieces) == memorised.generate("to", length=12, temperature=0)


def test_near_zero_temperature_is_argmax(memorised):
    assert memorised.generate("that ", length=40, temperature=1e-4, seed=1) == \
        memorised.generate("that ", length=40, temperature=0)


def test_same_seed_same_text_other_seed_other_text(memorised):
    kwargs = dict(length=80, temperature=3.0)
    a = memorised.generate("the", seed=3, **kwargs)
    assert a == memorised.generate("the", seed=3, **kwargs)
    assert a != memorised.generate("the", seed=4, **kwargs)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_teacher_forced_logits_equal_step_by_step_logits(cell):
    """Training reads a whole window at once; generation feeds one character at a time (the
    model's `step`, eagerly and compiled): the same layers, so the same logits at every step."""
    keras.utils.set_random_seed(1)
    model = CharLM(CharLMConfig(vocab_size=11, embedding_dim=6, units=8, num_layers=2, cell=cell, dropout=0.3))
    model.build()
    ids = np.random.default_rng(0).integers(0, 11, (3, 9)).astype("int32")
    logits = keras.ops.convert_to_numpy(model(ids))  # the training path (dropout off outside training)
    generator = CharGenerator(model, CharVocabulary("abcdefghijk"))
    for step in (model.step, generator.compiled_step):
        states = model.initial_states(3)
        for t in range(ids.shape[1]):
            step_logits, *states = step(ids[:, t], *states)
            np.testing.assert_allclose(keras.ops.convert_to_numpy(step_logits), logits[:, t], atol=1e-5)


def test_priming_at_once_equals_stepping(memorised):
    prompt = "or not to be, that"
    ids, _ = memorised.vocabulary.encode(prompt)
    states = [keras.ops.convert_to_numpy(s) for s in memorised.model.initial_states(1)]
    for token in ids:
        logits, *states = memorised.compiled_step(np.asarray([token], "int32"), *states)
    np.testing.assert_allclose(memorised.start(prompt).logits, keras.ops.convert_to_numpy(logits)[0], atol=1e-4)


def test_empty_prompt_and_unknown_characters(memorised):
    assert len(memorised.generate("", length=10, seed=0)) == 10
    session = memorised.start("to bé ☃ or 漢字", seed=0)
    assert session.unknown == 4 and len(session.generate(10)) == 10
    assert len(memorised.generate("☃☃☃", length=5, seed=0)) == 5  # nothing known: starts afresh
    with pytest.raises(TypeError, match="text"):
        memorised.start(42)


@pytest.mark.parametrize("kwargs, message", [
    ({"length": -1}, "length"), ({"length": 10**9}, "length"), ({"length": 2.5}, "length"),
    ({"temperature": -1}, "temperature"), ({"top_k": 0}, "top_k"), ({"top_p": 0.0}, "top_p"),
    ({"top_p": 1.5}, "top_p"),
])
def test_bad_sampling_settings_raise_clear_errors(kwargs, message):
    settings = {"length": 10, "temperature": 1.0, "top_k": None, "top_p": None, **kwargs}
    with pytest.raises(ValueError, match=message):
        check_sampling(**settings)


def test_top_k_and_top_p_keep_only_the_likely_ids():
    logits = np.log(np.asarray([0.5, 0.3, 0.15, 0.05]))
    rng = np.random.default_rng(0)
    assert {sample(logits, rng, top_k=2) for _ in range(300)} == {0, 1}
    assert {sample(logits, rng, top_p=0.7) for _ in range(300)} == {0, 1}  # 0.5 + 0.3 >= 0.7
    assert {sample(logits, rng, top_p=0.5) for _ in range(100)} == {0}
    assert {sample(logits, rng) for _ in range(2000)} == {0, 1, 2, 3}


def test_saved_model_generates_the_same_text_under_another_backend(memorised, tmp_path):
    memorised.save(tmp_path / "lm", card={"task": "test"})
    expected = memorised.generate("to be", length=40, temperature=0.5, top_k=5, seed=11)
    script = (
        "from models.generator import CharGenerator\n"
        f"g = CharGenerator.load(r'{tmp_path / 'lm'}')\n"
        "import json\n"
        "print(json.dumps(g.generate('to be', length=40, temperature=0.5, top_k=5, seed=11)))\n"
    )
    assert json.loads(run_on_other_backend(script).strip().splitlines()[-1]) == expected


def test_text_loss_reads_the_text_with_full_context(memorised):
    ids, _ = memorised.vocabulary.encode(TEXT)
    full = memorised.text_loss(ids, streams=1, chunk=16)
    logits = memorised.model(ids[None, :-1])
    direct = keras.losses.sparse_categorical_crossentropy(ids[None, 1:], logits, from_logits=True)
    np.testing.assert_allclose(full, float(keras.ops.mean(direct)), rtol=1e-4)
    assert full < 0.1  # memorised


def test_windows_shift_targets_and_cover_the_text():
    ids = np.arange(1000) % 50
    windows = trainer.Windows(ids, 20, batch_size=8, seed=0, shuffle=False)
    x, y = windows[0]
    assert x.shape == (8, 20) and np.array_equal(x[:, 1:], y[:, :-1])
    assert sum(len(s) for s in windows.starts) == len(range(0, 1000 - 21, 20))
    training = trainer.Windows(ids, 20, batch_size=8, seed=0)
    first = np.concatenate(training.starts)
    training.on_epoch_end()
    assert not np.array_equal(np.sort(first), np.sort(np.concatenate(training.starts)))  # new offset


def test_evaluate_scores_a_file_and_counts_unknown_characters(memorised, tmp_path, capsys):
    memorised.save(tmp_path / "lm")
    (tmp_path / "t.txt").write_text(TEXT + "¿qué?", encoding="utf-8")
    assert trainer.main(["--evaluate", "--model", str(tmp_path / "lm"), "--test-file", str(tmp_path / "t.txt")]) == 0
    out = capsys.readouterr().out
    assert "nats/char" in out and "3 characters outside the vocabulary" in out


def test_tfds_source_gives_the_same_split_as_the_keras_file(tmp_path, monkeypatch):
    from trainers import data

    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))  # prepared offline from the Keras cache
    keras_split, tfds_split = data.load_shakespeare("keras"), data.load_shakespeare("tfds")
    assert len(keras_split["train"]) == 1_003_854 and len(keras_split["validation"]) == 111_540
    assert tfds_split["train"] == keras_split["train"] and tfds_split["validation"] == keras_split["validation"]
