"""What a hostile new user tries (issue 14): non-text input, text the model has no words for, a
huge prompt, bad decoding settings, a damaged or wrong saved-model folder, and loading a `.keras`
file with plain Keras after `import models`. Every refusal is one short line.

The models are tiny and untrained (random weights): these tests check the entry points, not quality.
"""

import json
import math
import os
import time
import warnings

import keras
import numpy as np
import pytest

from models import artifacts
from models.char_lm import CharLM, CharLMConfig, CharVocabulary
from models.classifier import SentimentClassifier
from models.decoding import MAX_LENGTH_PENALTY, beam_search
from models.generator import MAX_PROMPT, CharGenerator
from models.sentiment import SentimentNet, SentimentNetConfig
from models.seq2seq import Seq2SeqAttention, Seq2SeqConfig
from models.translator import Translator
from runtime.text import RESERVED, TrueCaser, UnknownTextWarning, Vocabulary

from helpers import run_on_other_backend

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAVED = os.path.join(ROOT, "saved_models")
TEXT = "to be or not to be, that is the question.\n"


def one_line(error):
    message = str(error.value)
    assert "\n" not in message and len(message) < 250, message
    return message


@pytest.fixture(scope="module")
def translator():
    keras.utils.set_random_seed(0)
    vocab = Vocabulary(list(RESERVED) + ["a", "b", "c"])
    model = Seq2SeqAttention(Seq2SeqConfig(source_vocab_size=len(vocab), target_vocab_size=len(vocab),
                                           embedding_dim=8, units=8, dropout=0.0))
    model.build()
    settings = {"direction": "x-y", "max_source_length": 8, "max_target_length": 6, "length_penalty": 1.0}
    return Translator(model, vocab, vocab, TrueCaser({}), settings)


@pytest.fixture(scope="module")
def classifier():
    keras.utils.set_random_seed(0)
    words = Vocabulary.build([["a", "great", "film", "awful", ".", "!"]])
    model = SentimentNet(SentimentNetConfig(vocab_size=len(words), embedding_dim=8, units=8, dropout=0.0,
                                            word_dropout=0.0, max_length=16))
    model.build()
    return SentimentClassifier(model, words)


@pytest.fixture(scope="module")
def generator():
    keras.utils.set_random_seed(0)
    characters = CharVocabulary.build(TEXT)
    model = CharLM(CharLMConfig(vocab_size=len(characters), embedding_dim=8, units=16, num_layers=1, dropout=0.0))
    model.build()
    return CharGenerator(model, characters)


@pytest.fixture(scope="module")
def folders(translator, classifier, generator, tmp_path_factory):
    """The three tiny models saved: `{kind: folder}`."""
    root = tmp_path_factory.mktemp("saved")
    return {kind: str(model.save(str(root / kind))) for kind, model in
            (("translate", translator), ("sentiment", classifier), ("generate", generator))}


# --- 1. non-text input ----------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [None, 123, 1.5, ["a", "b"], b"a b"], ids=["None", "int", "float", "list", "bytes"])
def test_non_text_input_is_a_one_line_type_error(translator, classifier, generator, bad):
    with pytest.raises(TypeError, match="must be a string") as error:
        translator(bad)  # was translated as its printed form: "They None."
    one_line(error)
    with pytest.raises(TypeError, match="sentence 1 must be a string"):
        translator.translate(["a b", bad])
    with pytest.raises(TypeError, match="review 0 must be a string"):
        classifier.predict([bad])
    with pytest.raises(TypeError, match="must be a string"):
        classifier.explain(bad)
    for entry in (generator.start, generator.generate, generator.stream):
        with pytest.raises(TypeError, match="prompt must be a string"):
            entry(bad)


def test_batch_methods_refuse_a_single_string_and_non_lists(translator, classifier):
    with pytest.raises(TypeError, match="list of sentences.*translator\\(text\\)") as error:
        translator.translate("a b c")  # was translated character by character
    one_line(error)
    for bad in (None, 123):
        with pytest.raises(TypeError, match="list of sentences"):
            translator.translate(bad)
        with pytest.raises(TypeError, match="list of reviews"):
            classifier.predict(bad)
    with pytest.raises(TypeError, match="list of reviews"):
        classifier.encode("a great film")
    assert [t.text for t in translator.translate(("a b", "c"))] == [translator(t).text for t in ("a b", "c")]
    assert translator.translate([]) == [] and classifier.predict([]).shape == (0,)


# --- 2. text with no known word -------------------------------------------------------------------

def test_review_without_a_known_word_warns_and_says_so(classifier):
    with pytest.warns(UnknownTextWarning, match=r"2 of 3 reviews \(index 0, 2\).*vocabulary") as caught:
        probabilities = classifier.predict(["映画はとても良かった", "a great film", "😀😀😀 !"])
    assert [w.category for w in caught].count(UnknownTextWarning) == 1  # one warning for the batch
    assert probabilities.shape == (3,)  # still a probability for each: nothing lost
    assert "vocabulary" in classifier.notice("映画はとても良かった") and classifier.notice("great film !") is None
    with pytest.warns(UnknownTextWarning, match="vocabulary"):
        result = classifier.explain("🎬 映画 !")  # punctuation alone is no word
    assert "vocabulary" in result["notice"] and result["unknown_words"] == ["🎬", "映画"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnknownTextWarning)  # a review with one known word: no warning
        classifier.predict(["映画 great"])
        known = classifier.explain("映画 great")
    assert known["notice"] is None and known["unknown_words"] == ["映画"]


def test_prompt_of_unknown_characters_warns_and_says_so(generator):
    with pytest.warns(UnknownTextWarning, match="no character the model knows.*new line"):
        text = generator.generate("漢字☃", length=5, seed=0)
    assert len(text) == 5
    with pytest.warns(UnknownTextWarning, match="no character"):
        generator.stream("🙂", length=3)  # warned at the call, before the first character
    with pytest.warns(UnknownTextWarning, match="2 prompt characters .* skipped: '漢', '☃'"):
        session = generator.start("to 漢be☃", seed=0)
    assert session.unknown == 2 and "skipped" in session.notice
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnknownTextWarning)
        assert generator.start("to be", seed=0).notice is None
        assert generator.start("", seed=0).notice is None  # empty: documented, starts from a new line


# --- 3. prompt limit ------------------------------------------------------------------------------

def test_prompt_longer_than_max_prompt_is_refused_at_once(generator):
    started = time.perf_counter()
    for entry in (generator.start, generator.generate, generator.stream):
        with pytest.raises(ValueError, match="100,000 characters.*MAX_PROMPT") as error:
            entry("to be " * (100_000 // 6) + "to be "[: 100_000 % 6])  # used to block for about a minute
        one_line(error)
    assert time.perf_counter() - started < 2.0
    session = generator.start("to be or " * (MAX_PROMPT // 9), seed=0)  # within the limit: read
    assert session.unknown == 0 and len(session.generate(3)) == 3


# --- 4. seeds -------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [-1, 2.5, True, "1"])
def test_bad_seed_is_a_one_line_value_error(generator, seed):
    with pytest.raises(ValueError, match="seed must be None") as error:
        generator.generate("to", length=3, seed=seed)
    one_line(error)


# --- 5. damaged or wrong folders, length penalty ----------------------------------------------------

def test_truncated_model_file_is_reported_as_damaged(folders, tmp_path):
    broken = tmp_path / "sentiment"
    broken.mkdir()
    for name in os.listdir(folders["sentiment"]):
        data = open(os.path.join(folders["sentiment"], name), "rb").read()
        (broken / name).write_bytes(data[: len(data) // 2] if name == "model.keras" else data)
    with pytest.raises(artifacts.ArtifactError, match="damaged or truncated.*train the model again or copy") as error:
        SentimentClassifier.load(str(broken))
    assert "not found" not in one_line(error).lower()


LOADERS = {"translate": (Translator, "translation"), "sentiment": (SentimentClassifier, "sentiment classification"),
           "generate": (CharGenerator, "character generation")}


@pytest.mark.parametrize("wanted, held", [(w, h) for w in LOADERS for h in LOADERS if w != h])
def test_folder_of_another_task_names_both_tasks(folders, wanted, held):
    loader, task = LOADERS[wanted]
    with pytest.raises(artifacts.ArtifactError) as error:
        loader.load(folders[held])
    message = one_line(error)
    assert f"holds a {LOADERS[held][1]} model" in message and f"not a {task} model" in message


def test_committed_folders_of_another_task_are_refused_quickly():
    if not os.path.isdir(os.path.join(SAVED, "translate-spa-eng")):
        pytest.skip("no committed models")
    started = time.perf_counter()  # the class is read from the file's config: no weights loaded
    with pytest.raises(artifacts.ArtifactError, match=r"holds a translation model \(Seq2SeqAttention\), not a "
                                                      r"sentiment classification model \(SentimentNet\)"):
        SentimentClassifier.load(os.path.join(SAVED, "translate-spa-eng"))
    with pytest.raises(artifacts.ArtifactError, match="holds a sentiment classification model.*not a translation"):
        Translator.load(os.path.join(SAVED, "sentiment-imdb"))
    with pytest.raises(artifacts.ArtifactError, match="holds a translation model.*not a character generation"):
        CharGenerator.load(os.path.join(SAVED, "translate-spa-eng"))
    assert time.perf_counter() - started < 5.0


@pytest.mark.parametrize("alpha", [math.nan, math.inf, -math.inf, -0.5, MAX_LENGTH_PENALTY + 0.5, "1", True, None])
def test_length_penalty_must_be_a_number_from_0_to_2(translator, alpha):
    if alpha is not None:  # None in translate means "the model's setting"
        with pytest.raises(ValueError, match="length_penalty must be a number from 0 to 2") as error:
            translator.translate(["a b"], beam_width=2, length_penalty=alpha)
        one_line(error)
    with pytest.raises(ValueError, match="length_penalty"):
        beam_search(translator.decoder, np.array([[4, 5]], "int32"), 2, 5, length_penalty=alpha)


def test_valid_length_penalties_are_accepted(translator):
    for alpha in (0, 0.6, np.float32(1.0), MAX_LENGTH_PENALTY):
        (result,) = translator.translate(["a b"], beam_width=2, length_penalty=alpha)
        assert isinstance(result.text, str)


# --- 6. plain Keras loads our .keras files after `import models` -------------------------------------

def test_import_models_lets_plain_keras_load_every_saved_model(folders):
    paths = {kind: os.path.join(folder, "model.keras") for kind, folder in folders.items()}
    for kind, name in (("translate", "translate-spa-eng"), ("sentiment", "sentiment-imdb"),
                       ("generate", "generate-shakespeare")):
        if os.path.isfile(os.path.join(SAVED, name, "model.keras")):
            paths["committed " + kind] = os.path.join(SAVED, name, "model.keras")
    script = (  # a fresh process: nothing imported but keras and the package
        "import json, keras, models\n"
        f"paths = {paths!r}\n"
        "print(json.dumps({k: type(keras.saving.load_model(p, compile=False)).__name__ for k, p in paths.items()}))\n"
    )
    loaded = json.loads(run_on_other_backend(script, backend=keras.backend.backend()).strip().splitlines()[-1])
    expected = {"translate": "Seq2SeqAttention", "sentiment": "SentimentNet", "generate": "CharLM"}
    assert loaded == {k: expected[k.split()[-1]] for k in paths}
