"""The translator: a tiny model learns to reverse token sequences; training and step-by-step
decoding agree; beam 1 equals greedy; odd inputs give sensible results; saved folders load on
every backend; the split never leaks; the CLI fails with one clear line."""

import json
import os

import keras
import numpy as np
import pytest
from keras import ops

from models import artifacts
from models.decoding import CompiledDecoding, EagerDecoding, beam_search, greedy_decode
from models.seq2seq import Seq2SeqAttention, Seq2SeqConfig, masked_accuracy, masked_loss, smoothed_masked_loss
from models.translator import Translator
from runtime.text import RESERVED, TrueCaser, Vocabulary
from trainers import cli, data, training
from trainers import translate as trainer
from trainers.batching import graded_width

from helpers import OTHER_BACKENDS, run_on_other_backend

SYMBOLS = ["a", "b", "c", "d", "e", "f"]  # ids 4..9 in both vocabularies


def reversal_data(n, seed, max_length=4):
    """Sequences of 2..max_length symbols and their reversals: `(source, target, lengths)`."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, max_length + 1, n)
    source = np.zeros((n, max_length), "int32")
    target = np.zeros((n, max_length + 2), "int32")  # [START] reversed [END]
    for i, length in enumerate(lengths):
        sequence = rng.integers(4, 4 + len(SYMBOLS), length)
        source[i, :length] = sequence
        target[i, : length + 2] = [Vocabulary.start_id, *sequence[::-1], Vocabulary.end_id]
    return source, target, lengths


def numpy_init(model, seed=0):
    """Same initial weights on every backend (Keras' random streams differ between backends):
    Glorot-uniform matrices, zero vectors. A zero score vector v starts the attention uniform,
    which also makes the tiny task learn faster and more reliably."""
    rng = np.random.default_rng(seed)
    weights = []
    for w in model.get_weights():
        if w.ndim == 2 and w.shape[0] != 2:  # GRU biases are (2, 3 units)
            limit = np.sqrt(6.0 / sum(w.shape))
            weights.append(rng.uniform(-limit, limit, w.shape).astype("float32"))
        else:
            weights.append(np.zeros_like(w))
    model.set_weights(weights)


def tiny_model(cell="gru", vocab=10, seed=0):
    model = Seq2SeqAttention(Seq2SeqConfig(source_vocab_size=vocab, target_vocab_size=vocab, embedding_dim=16,
                                           units=32, cell=cell, dropout=0.0))
    model.build()
    numpy_init(model, seed)
    return model


@pytest.fixture(scope="module")
def trained():
    """The reversal model, trained once per module: 4 epochs of 1,024 sequences (128 steps), with
    the learning rate decaying to 5% (without the decay the end of training is bumpy)."""
    keras.utils.set_random_seed(0)
    model = tiny_model()
    source, target, _ = reversal_data(1024, seed=0)  # full batches only: one compiled shape
    schedule = keras.optimizers.schedules.CosineDecay(0.02, decay_steps=4 * 32, alpha=0.05)
    model.compile(keras.optimizers.Adam(schedule, clipnorm=1.0), loss=masked_loss, metrics=[masked_accuracy])
    training.flush_denormals(True)  # torch: 25x slower near convergence without it
    try:
        history = model.fit((source, target[:, :-1]), target[:, 1:], batch_size=32, epochs=4, shuffle=False,
                            verbose=0)
    finally:
        training.flush_denormals(False)
    return model, history.history


@pytest.fixture(scope="module")
def translator(trained):
    vocab = Vocabulary(list(RESERVED) + SYMBOLS)
    settings = {"direction": "x-y", "max_source_length": 8, "max_target_length": 12, "length_penalty": 1.0}
    return Translator(trained[0], vocab, vocab, TrueCaser({"a": "A"}), settings)


@pytest.fixture(scope="module")
def saved(translator, tmp_path_factory):
    """The translator saved once: a saved-model folder."""
    return translator.save(tmp_path_factory.mktemp("saved") / "model", card={"task": "test"})


def test_tiny_model_learns_to_reverse_sequences(trained):
    model, history = trained
    assert history["masked_accuracy"][-1] > 0.98
    source, _, lengths = reversal_data(16, seed=1)  # 16 rows like the other tests: one JAX shape
    tokens, attention = greedy_decode(EagerDecoding(model), source, 7)
    exact = [list(tokens[i, : n + 1]) == [*source[i, :n][::-1], Vocabulary.end_id] for i, n in enumerate(lengths)]
    assert np.mean(exact) >= 15 / 16
    # Reversal attends to the mirrored position: output word j looks at source word n - 1 - j.
    i = int(np.argmax(lengths))
    n = lengths[i]
    assert list(np.argmax(attention[i, :n, :n], axis=1)) == list(range(n - 1, -1, -1))


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_teacher_forced_call_equals_step_by_step_decoding(cell, trained):
    """Training (one call over the whole target) and decoding (one token at a time, eagerly and
    compiled) run the same layers: their logits and attention agree at every step."""
    model = trained[0] if cell == "gru" else tiny_model("lstm")  # same sizes: fewer JAX compilations
    source, target, _ = reversal_data(16, seed=5)  # right-padded sources of 2..4 words
    target_in = target[:, :-1]
    logits = ops.convert_to_numpy(model((source, target_in)))  # the training path: one call
    for decoder in (EagerDecoding(model), CompiledDecoding(model)):
        encoded = decoder.encode(source)
        states = encoded[3]
        for t in range(target_in.shape[1]):
            step_logits, states, weights = decoder.decode_step(target_in[:, t], states, encoded)
            np.testing.assert_allclose(ops.convert_to_numpy(step_logits), logits[:, t], atol=1e-4)
            weights = ops.convert_to_numpy(weights)
            np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
            assert np.all(weights[source == 0] == 0.0)


def test_beam_width_one_equals_greedy(trained):
    source, _, _ = reversal_data(16, seed=2)
    for model in (trained[0], tiny_model(seed=3)):  # trained, and untrained (long, odd outputs)
        greedy_tokens, greedy_attention = greedy_decode(EagerDecoding(model), source, [5, 9] * 8)
        beam_tokens, beam_attention, _ = beam_search(EagerDecoding(model), source, 1, [5, 9] * 8)
        np.testing.assert_array_equal(beam_tokens, greedy_tokens)
        np.testing.assert_allclose(beam_attention, greedy_attention, atol=1e-6)


def test_beam_search_reverses_and_ranks(trained):
    source, _, lengths = reversal_data(16, seed=4)
    tokens, attention, scores = beam_search(EagerDecoding(trained[0]), source, 2, 7, length_penalty=0.6)
    exact = [list(tokens[i, : n + 1]) == [*source[i, :n][::-1], Vocabulary.end_id] for i, n in enumerate(lengths)]
    assert np.mean(exact) > 0.9
    assert np.all(np.isfinite(scores)) and np.all(scores <= 0)
    with pytest.raises(ValueError, match="beam_width"):
        beam_search(EagerDecoding(trained[0]), source, 11, 7)


def test_translator_strings_and_attention(translator):
    result = translator("a b c d")
    assert result.text == "D c b A" and result.notice is None  # reversed, cased, first letter up
    assert result.words == ["D", "c", "b", "A"] and result.source_words == ["a", "b", "c", "d"]
    assert result.attention.shape == (4, 4)
    np.testing.assert_allclose(result.attention.sum(1), 1.0, atol=1e-5)
    batch = translator.translate(["a b c d", "f e"], beam_width=2)
    assert [r.text for r in batch] == ["D c b A", "E f"]  # order kept despite sorting by length


def test_compiled_decoding_equals_eager_decoding(translator):
    eager = Translator(translator.model, translator.source_vocab, translator.target_vocab, translator.truecaser,
                       translator.settings, compiled=False)
    texts = ["a b c d", "f e", "c c a b e"]
    for width in (1, 3):
        fast, slow = translator.translate(texts, beam_width=width), eager.translate(texts, beam_width=width)
        assert [r.text for r in fast] == [r.text for r in slow]
        for f, s in zip(fast, slow):
            np.testing.assert_allclose(f.attention, s.attention, atol=1e-5)


def test_empty_unknown_and_very_long_inputs(translator):
    for text in ("", "   ", "\u200b"):
        result = translator(text)
        assert result.text == "" and result.words == [] and "empty" in result.notice
    unknown = translator("zzz qqq")  # only words outside the vocabulary: still a translation
    assert isinstance(unknown.text, str) and "zzz, qqq" in unknown.notice
    assert all(w.lower() in SYMBOLS + ["zzz", "qqq"] for w in unknown.words)
    long = translator(" ".join(["a", "b", "c"] * 334))  # 1,002 words
    assert "1002 words" in long.notice and "first 8" in long.notice
    assert len(long.source_words) == 8 and long.attention.shape[1] == 8 and len(long.words) <= 12
    mixed = translator.translate(["", "a b", "zzz"])  # two to translate, one empty
    assert [m.text for m in mixed][:2] == ["", "B A"] and mixed[0].notice and "zzz" in mixed[2].notice


def test_unknown_output_word_copies_the_attended_source_word(translator):
    ids = np.array([4, Vocabulary.unk_id, Vocabulary.end_id, 0])
    attention = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5], [0, 0]], "float32")
    result = translator._finish(ids, attention, ["Pedro", "Álvarez"], [0, 1], None, np.nan)
    assert result.words == ["A", "Álvarez"] and result.attention.shape == (2, 2)


def test_masked_loss_and_accuracy_ignore_padding():
    rng = np.random.default_rng(0)
    y_true = np.array([[5, 6, 3, 0, 0]], "int32")
    logits = rng.normal(size=(1, 5, 8)).astype("float32")
    short_true, short_logits = y_true[:, :3], logits[:, :3]
    assert np.isclose(float(masked_loss(y_true, logits)), float(masked_loss(short_true, short_logits)), atol=1e-6)
    logits[0, 3:, 0] = 100.0  # "predicting padding" on padding must not count as a hit
    assert np.isclose(float(masked_accuracy(y_true, logits)), float(masked_accuracy(short_true, short_logits)))


def test_masked_accuracy_is_the_argmax_accuracy():
    """`masked_accuracy` compares the true logit with the maximum instead of taking an argmax."""
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(4, 6, 50)).astype("float32")
    y_true = rng.integers(1, 50, size=(4, 6)).astype("int32")
    y_true[:, :3] = logits[:, :3].argmax(-1)  # half of the positions hit
    y_true[0, 0] = logits[0, 0].argsort()[-2]  # a near miss: the second largest
    y_true[:, 5] = 0  # padding
    real = y_true != 0
    expected = (logits.argmax(-1) == y_true)[real].mean()
    assert 0.4 < expected < 0.7
    assert np.isclose(float(masked_accuracy(y_true, logits)), expected)


def test_save_load_same_backend_and_card(translator, saved, tmp_path):
    assert sorted(os.listdir(saved)) == sorted(["model.keras", "card.json", *Translator.SIDE_FILES])
    card = json.loads((saved / "card.json").read_text())
    assert card["task"] == "test" and card["environment"]["backend"] == keras.backend.backend()
    loaded = Translator.load(saved)
    texts = ["a b c", "f e d c"]
    assert [t.text for t in loaded.translate(texts)] == [t.text for t in translator.translate(texts)]
    with pytest.raises(artifacts.ArtifactError, match="no saved model"):
        Translator.load(tmp_path / "missing")


def test_saved_folder_gives_the_same_greedy_translations_under_the_other_backends(translator, saved):
    texts = ["a b c", "f e d c"]  # few shapes: each new one costs compilations on JAX
    script = (
        "import json\n"
        "from models.translator import Translator\n"
        f"t = Translator.load(r'{saved}')\n"
        f"print(json.dumps([r.text for r in t.translate({texts!r})]))\n"
    )
    expected = [t.text for t in translator.translate(texts)]
    for backend in OTHER_BACKENDS:
        assert json.loads(run_on_other_backend(script, backend=backend).strip().splitlines()[-1]) == expected, backend


# --- data, batching and scoring -----------------------------------------------------------------------

def test_split_by_source_has_no_leakage_and_is_deterministic():
    pairs = [(f"source {i % 50}", f"target {i}") for i in range(400)]  # 8 translations per source
    parts = trainer.split_pairs(pairs, seed=7)
    assert sum(map(len, parts)) == 400 and parts == trainer.split_pairs(pairs, seed=7)
    train_sources = {trainer.source_key(p) for p in parts[0]}
    assert parts[1] and parts[2]
    assert not train_sources & {trainer.source_key(p) for p in parts[1] + parts[2]}
    assert parts != trainer.split_pairs(pairs, seed=8)


def test_split_of_a_real_corpus_slice_has_no_leakage():
    try:
        path = data.corpus_file("spa-eng")
    except RuntimeError as error:
        pytest.skip(str(error))
    pairs = [(s, e) for e, s in data.read_pairs(path)[::25]]  # every 25th pair: about 4,800
    pairs = pairs + [(s.upper(), e) for s, e in pairs[:100]]  # the same sources in other case
    train, validation, test = trainer.split_pairs(pairs, seed=42)
    held_out = {trainer.source_key(p) for p in validation + test}
    assert len(validation) > 100 and len(test) > 100
    assert not held_out & {trainer.source_key(p) for p in train}
    assert not {s.lower() for s, _ in validation + test} & {s.lower() for s, _ in train}


def test_graded_widths_are_fine_for_short_batches_and_coarse_for_long_ones():
    widths = [graded_width(n) for n in range(0, 50)]
    assert widths[:15] == [2, 2, 2, 4, 4, 6, 6, 8, 8, 10, 10, 12, 12, 14, 14]
    assert widths[15:25] == [16] * 2 + [20] * 4 + [24] * 4
    assert widths[25:33] == [32] * 8 and widths[33:41] == [40] * 8
    assert all(w >= n for n, w in enumerate(widths)) and sorted(widths) == widths
    assert len(set(widths)) == 14  # up to 56 for 49 steps


def test_batches_pad_to_few_shapes_and_shift_targets():
    rng = np.random.default_rng(0)
    sources = [list(rng.integers(4, 9, rng.integers(1, 11))) for _ in range(100)]
    targets = [[Vocabulary.start_id, *rng.integers(4, 9, rng.integers(1, 11)), Vocabulary.end_id] for _ in range(100)]
    batches = trainer.pair_batches(sources, targets, batch_size=16, seed=0, shuffle=False)
    seen = 0
    for i in range(len(batches)):
        (source, target_in), target_out = batches[i]
        assert source.shape[1] == graded_width(max(len(sources[i]) for i in batches.batches[i]))
        assert target_in.shape[1] == graded_width(max(len(targets[i]) for i in batches.batches[i]) - 1)
        assert target_in.shape[1] % 2 == 0 and target_out.shape == target_in.shape
        assert np.all(target_in[:, 0] == Vocabulary.start_id)
        seen += len(source)
    assert seen == 100
    first = batches.batches[0][0]
    (source, target_in), target_out = batches[0]
    assert list(source[0, : len(sources[first])]) == sources[first]
    assert list(target_out[0, : len(targets[first]) - 1]) == targets[first][1:]
    training = trainer.pair_batches(sources, targets, batch_size=16, seed=0)
    assert len(training) == 6 and all(len(b) == 16 for b in training.batches)  # ragged last dropped


def test_references_are_grouped_by_source_and_padded_with_none():
    pairs = [("Hola.", "Hello."), ("Hola.", "Hi."), ("hola .", "Hey."), ("Adiós.", "Goodbye.")]
    sources, streams = trainer.group_references(pairs)
    assert sources == ["Hola.", "Adiós."]
    # "hola ." differs only in case and spacing: a third reference of the first source.
    assert streams == [["Hello.", "Goodbye."], ["Hi.", None], ["Hey.", None]]
    import sacrebleu

    # None marks a missing reference (an empty string would be scored as a real, empty one).
    long = [["Hello there my friend.", "Goodbye my old friend."], ["Hi there my friend.", None]]
    assert sacrebleu.corpus_bleu(["Hi there my friend.", "Goodbye my old friend."], long).score == pytest.approx(100.0)


# --- command line -------------------------------------------------------------------------------------

def run_cli(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.run(trainer.main, argv)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def test_cli_evaluate_scores_a_saved_model(saved, tmp_path, capsys):
    test_file = tmp_path / "test.tsv"  # the second source has two references, one of them right
    test_file.write_text("a b c d\tD c b A\n\nb a c d\tD c b A\tD c A b\n", encoding="utf-8")
    code, out, err = run_cli(["--evaluate", "--model", str(saved), "--test-file", str(test_file),
                              "--beam-width", "2"], capsys)
    assert code == 0, err
    assert "greedy: BLEU 100.00" in out and "beam 2: BLEU 100.00" in out and "chrF" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--evaluate", "--model", "/nonexistent/model", "--test-file", "GOOD"], "no saved model"),
        (["--evaluate", "--model", "MODEL", "--test-file", "/nonexistent.tsv"], "does not exist"),
        (["--evaluate", "--model", "MODEL", "--test-file", "GARBLED"], "line 2"),
        (["--evaluate", "--model", "MODEL", "--test-file", "BINARY"], "UTF-8"),
        (["--evaluate", "--model", "MODEL"], "--test-file"),
        (["--epochs", "0"], "--epochs: expected a positive whole number, got '0'"),
        (["--dropout", "1.5"], "--dropout: expected a number in [0, 1), got '1.5'"),
        (["--length-penalty", "-1"], "--length-penalty: expected a number >= 0"),
        (["--learning-rate", "nan"], "--learning-rate: expected a positive number"),
        (["--direction", "fra-eng"], "invalid choice"),
        (["--no-such-flag"], "unrecognized"),
    ],
)
def test_cli_errors_are_one_line_and_non_zero(argv, message, saved, tmp_path, capsys):
    (tmp_path / "garbled.tsv").write_text("a b\tB a\nno tab here\n", encoding="utf-8")
    (tmp_path / "binary.tsv").write_bytes(b"\xff\xfe\x00garbage\tx\n")
    (tmp_path / "good.tsv").write_text("a b\tB a\n", encoding="utf-8")  # the file is checked before the model
    replace = {"MODEL": str(saved), "GARBLED": str(tmp_path / "garbled.tsv"),
               "BINARY": str(tmp_path / "binary.tsv"), "GOOD": str(tmp_path / "good.tsv")}
    code, out, err = run_cli([replace.get(a, a) for a in argv], capsys)
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in err


# --- subword pieces, n-best and --translate ------------------------------------------------------------

CORPUS = [["el", "ciclista", "ganó", "la", "carrera"], ["la", "biblioteca", "cierra", "los", "domingos"],
          ["mi", "abuela", "cultiva", "tomates"], ["los", "tomates", "rojos"]] * 40


@pytest.fixture(scope="module")
def pieces():
    from trainers.subwords import learn_pieces

    return learn_pieces(CORPUS, 40)


def test_pieces_read_unseen_words_and_give_back_words(pieces):
    from models.subwords import SubwordVocabulary

    assert pieces.tokens[:4] == ["[PAD]", "[UNK]", "[START]", "[END]"] and len(pieces) <= 40
    words = ["la", "abuelas", "cultivan", "domingo"]  # the last three never seen whole
    ids, owners = pieces.encode_words(words)
    assert Vocabulary.unk_id not in ids and owners == sorted(owners) and set(owners) == {0, 1, 2, 3}
    assert pieces.decode_words(ids) == (words, owners)
    ids, _ = pieces.encode_words(["ñandú"])  # letters never seen: [UNK]
    assert Vocabulary.unk_id in ids and pieces.decode_words(ids)[0] == ["[UNK]"]
    again = SubwordVocabulary.from_json(json.loads(json.dumps(pieces.to_json())))
    assert again.encode_words(words) == pieces.encode_words(words)


def test_attention_over_pieces_merges_into_attention_over_words():
    from models.translator import merge_attention

    weights = np.array([[0.5, 0.25, 0.25], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]], np.float32)  # 3 out x 3 in pieces
    merged = merge_attention(weights, [0, 0, 1], 2, [0, 0, 1], 2)  # pieces 0-1 make word 0 on both sides
    np.testing.assert_allclose(merged, [[0.875, 0.125], [1.0, 0.0]])
    np.testing.assert_allclose(merge_attention(weights, [0, 1, 2], 3, [0, 1, 2], 3), weights)  # words: as is


def test_a_subword_translator_speaks_in_words_and_survives_saving(pieces, tmp_path):
    model = Seq2SeqAttention(Seq2SeqConfig(source_vocab_size=len(pieces), target_vocab_size=len(pieces),
                                           embedding_dim=8, units=8, dropout=0.0))
    model.build()
    settings = {"direction": "x-y", "max_source_length": 8, "max_target_length": 9, "length_penalty": 1.0}
    translator = Translator(model, pieces, pieces, TrueCaser({}), settings)
    result = translator("Mi abuela cultivaba tomates")  # "cultivaba": never seen whole
    assert result.notice is None and result.source_words == ["Mi", "abuela", "cultivaba", "tomates"]
    assert result.attention.shape == (len(result.words), 4)
    if result.words:
        np.testing.assert_allclose(result.attention.sum(1), 1.0, atol=1e-5)
    loaded = Translator.load(translator.save(str(tmp_path / "model")))
    assert loaded("Mi abuela cultivaba tomates").text == result.text


def test_n_best_lists_the_best_hypotheses_with_their_scores(translator):
    (result,) = translator.translate(["a b c d"], beam_width=3, n_best=3)
    texts, scores = zip(*result.alternatives)
    assert texts[0] == result.text == "D c b A" and scores[0] == result.score
    assert len(texts) <= 3 and list(scores) == sorted(scores, reverse=True)
    assert translator("a b c d").score is None  # greedy decoding scores nothing
    with pytest.raises(ValueError, match="n_best must be a whole number from 1 to the beam width 2"):
        translator.translate(["a b"], beam_width=2, n_best=3)


def test_cli_translates_a_file_or_stdin_line_by_line(saved, tmp_path, capsys, monkeypatch):
    source = tmp_path / "in.txt"
    source.write_text("a b c d\n\nf e\n", encoding="utf-8")
    code, out, err = run_cli(["--model", str(saved), "--translate", str(source)], capsys)
    assert code == 0, err
    assert out.splitlines() == ["D c b A", "", "E f"]  # one line per input line, blank kept
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("f e\n"))
    code, out, err = run_cli(["--model", str(saved), "--translate", "-", "--beam-width", "2", "--n-best", "2"],
                             capsys)
    assert code == 0, err
    lines = [line.split("\t") for line in out.splitlines()]
    assert lines[0][0] == "1" and lines[0][2] == "E f" and float(lines[0][1]) >= float(lines[-1][1])
    code, _, err = run_cli(["--model", str(saved), "--translate", str(tmp_path / "none.txt")], capsys)
    assert code == 2 and "does not exist" in err
    code, _, err = run_cli(["--model", str(saved), "--translate", str(source), "--beam-width", "2", "--n-best", "3"],
                           capsys)
    assert code == 2 and "--n-best 3 needs --beam-width of at least 3" in err


def test_label_smoothing_is_cross_entropy_against_the_smoothed_target():
    rng = np.random.default_rng(1)
    y_true = np.array([[5, 6, 3, 0]], "int32")
    logits = rng.normal(size=(1, 4, 8)).astype("float32")
    smoothed = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1, reduction=None)(
        np.eye(8, dtype="float32")[y_true[:, :3]], logits[:, :3])
    got = float(smoothed_masked_loss(0.1)(y_true, logits))
    assert np.isclose(got, float(np.mean(keras.ops.convert_to_numpy(smoothed))), atol=1e-5)
    assert smoothed_masked_loss(0.0) is masked_loss
