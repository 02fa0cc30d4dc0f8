"""The Gradio demos, served for real on a local port: every endpoint through `gradio_client`,
awkward inputs, 20 concurrent requests, missing models, and each tab used in headless Chromium
(Debian's package, driven by Playwright) with screenshots in tests/screenshots/.

The models are tiny and untrained (random weights, saved to a temporary folder): these tests
check the app, not translation quality.
"""

import concurrent.futures
import json
import os
import shutil

import keras
import numpy as np
import pytest

from apps import __main__ as all_demos
from apps import common
from apps import generate as generate_app
from apps import gradients as gradients_app
from apps import sentiment as sentiment_app
from apps import translate as translate_app
from models.char_lm import CharLM, CharLMConfig, CharVocabulary
from models.classifier import SentimentClassifier
from models.generator import CharGenerator
from models.sentiment import SentimentNet, SentimentNetConfig
from models.seq2seq import Seq2SeqAttention, Seq2SeqConfig
from models.translator import Translator
from runtime.text import TrueCaser, Vocabulary, tokenize

from helpers import export_model

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = os.path.join(os.path.dirname(__file__), "screenshots")
SPANISH = "¿dónde está la estación de tren ? me gustaría aprender a tocar el piano ."
ENGLISH = "where is the train station ? i would like to learn to play the piano ."
TEXT = "ROMEO:\nWhat light through yonder window breaks? It is the east.\n"


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    """Tiny untrained models of the three demos, saved under the default folder names."""
    keras.utils.set_random_seed(0)
    root = tmp_path_factory.mktemp("saved_models")
    source, target = Vocabulary.build([tokenize(SPANISH)]), Vocabulary.build([tokenize(ENGLISH)])
    model = Seq2SeqAttention(Seq2SeqConfig(source_vocab_size=len(source), target_vocab_size=len(target),
                                           embedding_dim=8, units=8, dropout=0.0))
    model.build()
    bias = np.zeros(len(target), "float32")
    bias[Vocabulary.end_id] = -20.0  # untrained, yet never stops at once: every request gets words
    model.output_layer.bias.assign(bias)
    settings = {"direction": "spa-eng", "max_source_length": 40, "max_target_length": 20, "length_penalty": 1.0}
    card = {"test": {"greedy": {"bleu": 1.0}, "beam 5": {"bleu": 2.0, "chrf": 3.0}}}
    Translator(model, source, target, TrueCaser({}), settings).save(str(root / "translate-spa-eng"), card)
    words = Vocabulary.build([("a great film wonderful boring awful plot " * 3).split()])
    classifier = SentimentClassifier(SentimentNet(SentimentNetConfig(vocab_size=len(words), embedding_dim=8, units=8,
                                                                     dropout=0.0, word_dropout=0.0, max_length=64)),
                                                                     words)
    classifier.model.build()
    classifier.save(str(root / "sentiment-imdb"), {"test": {"accuracy": 0.5}})
    characters = CharVocabulary.build(TEXT)
    lm = CharLM(CharLMConfig(vocab_size=len(characters), embedding_dim=8, units=16, num_layers=1))
    lm.build()
    CharGenerator(lm, characters).save(str(root / "generate-shakespeare"), {"validation": {"nats_per_char": 4.0}})
    return root


@pytest.fixture(scope="module")
def server(model_dirs):
    """The all-tabs app on a free local port: yields its URL."""
    models = {"Translate": translate_app.load(str(model_dirs / "translate-spa-eng")),
              "Sentiment": sentiment_app.load(str(model_dirs / "sentiment-imdb")),
              "Generate": generate_app.load(str(model_dirs / "generate-shakespeare"))}
    demo = all_demos.build(models)
    yield common.start_local(demo)
    demo.close()


@pytest.fixture(scope="module")
def client(server):
    from gradio_client import Client

    return Client(server, verbose=False)


# --- every endpoint ----------------------------------------------------------------------------------

def test_translate_endpoint_returns_text_and_a_heatmap(client):
    text, plot, notice = client.predict("¿Dónde está la estación?", "spa-eng", "greedy", 1, api_name="/translate")
    assert isinstance(text, str) and notice == ""
    figure = json.loads(plot["plot"])  # a plotly.js spec: output words down, source words across
    weights = figure["data"][0]["z"]
    assert len(weights) == len(figure["layout"]["yaxis"]["ticktext"]) >= 1
    assert all(len(row) == len(figure["layout"]["xaxis"]["ticktext"]) for row in weights)
    assert all(abs(sum(row) - 1.0) < 0.02 for row in weights)  # each output word's weights sum to 1
    beam_text, _, _ = client.predict("¿Dónde está la estación?", "spa-eng", "beam search", 3, api_name="/translate")
    assert isinstance(beam_text, str)


def test_sentiment_endpoints_return_confidences_and_word_scores(client):
    label, notice = client.predict("a great film , wonderful plot", api_name="/classify")
    confidences = {c["label"]: c["confidence"] for c in label["confidences"]}
    assert set(confidences) == {"positive", "negative"} and abs(sum(confidences.values()) - 1) < 1e-5
    words = client.predict("a great film , wonderful plot", api_name="/explain")
    assert [w["token"].strip() for w in words] == ["a", "great", "film", ",", "wonderful", "plot"]
    assert all(-1.0 <= w["class_or_confidence"] <= 1.0 for w in words)


def test_gradients_endpoint_plots_the_norms(client):
    plot, summary = client.predict("adding", 20, ["LSTM", "GRU"], 0, 0, api_name="/gradients")
    assert plot is not None and "LSTM" in summary and "GRU" in summary
    _, notice = client.predict("adding", 20, [], 0, 0, api_name="/gradients")
    assert "at least one" in notice


def test_generate_endpoint_streams(client):
    job = client.submit("ROMEO:\n", 60, 0.8, 0, 1.0, 3, api_name="/generate")
    updates = [text for text, _ in job]
    final, _ = job.result()
    assert final.startswith("ROMEO:\n") and len(final) == len("ROMEO:\n") + 60
    assert updates[0] == "ROMEO:\n"  # the prompt is shown before the first new character
    again, _ = client.predict("ROMEO:\n", 60, 0.8, 0, 1.0, 3, api_name="/generate")
    assert again == final  # same seed, same text


# --- awkward inputs --------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["", "   ", "\x00\x07\x1b[31m", "🙂🎬🍿", "Это был отличный фильм",
                                  "映画は素晴らしい"])
def test_awkward_inputs_get_an_answer_or_a_friendly_notice(client, text):
    translation, _, notice = client.predict(text, "spa-eng", "beam search", 5, api_name="/translate")
    assert isinstance(translation, str)
    if not text.strip() or not any(c.isalpha() for c in text):
        assert notice  # says what to do
    label, notice = client.predict(text, api_name="/classify")
    assert label is not None or "review" in notice
    generated, _ = client.predict(text, 20, 0.8, 0, 1.0, 1, api_name="/generate")
    assert isinstance(generated, str)


def test_text_the_models_do_not_know_is_flagged(client):
    label, notice = client.predict("映画はとても良かった 🎬", api_name="/classify")
    assert label is not None and "vocabulary" in notice and "guess" in notice  # the probability, and why it is weak
    _, notice = client.predict("a great film 映画", api_name="/classify")
    assert notice == ""  # one known word: no notice
    generated, notice = client.predict("漢字☃", 20, 0.8, 0, 1.0, 1, api_name="/generate")
    assert generated.startswith("漢字☃") and len(generated) == 3 + 20  # the prompt, then the new characters
    assert "no character the model knows" in notice and "new line" in notice
    generated, notice = client.predict("ROMEO: 漢", 20, 0.8, 0, 1.0, 1, api_name="/generate")
    assert generated.startswith("ROMEO: 漢") and "1 prompt characters" in notice and "'漢'" in notice


@pytest.mark.parametrize("seed", [-1, 2**32])
def test_out_of_range_seed_gets_a_notice_not_a_bare_error(client, model_dirs, seed):
    generated, notice = client.predict("ROMEO:\n", 20, 0.8, 0, 1.0, seed, api_name="/generate")
    assert generated == "" and "seed must be a whole number from 0 to 4,294,967,295" in notice
    plot, summary = client.predict("adding", 20, ["LSTM"], 0, seed, api_name="/gradients")
    assert plot is None and "seed must be a whole number" in summary
    # the handlers themselves, as the UI calls them
    handler = generate_app.make_handler(generate_app.load(str(model_dirs / "generate-shakespeare")))
    (text, notice), = list(handler("ROMEO:\n", 20, 0.8, 0, 1.0, seed))
    assert text == "" and "seed" in notice
    assert gradients_app.compute("adding", 20, ["LSTM"], 0, seed)[0] is None
    assert gradients_app.compute("adding", 20, ["LSTM"], 0, None)[0] is not None  # empty: seed 0


def test_sampling_settings_out_of_the_sliders_range_get_a_notice(client, model_dirs):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="less than minimum"):  # Gradio checks its sliders' ranges itself
        client.predict("ROMEO:\n", 20, 0.8, -3, 1.0, 1, api_name="/generate")
    handler = generate_app.make_handler(generate_app.load(str(model_dirs / "generate-shakespeare")))
    for settings in ((0.8, -3, 1.0), (-1.0, 0, 1.0), (0.8, 0, -0.5)):  # temperature, top_k, top_p
        (text, notice), = list(handler("ROMEO:\n", 20, *settings, 1))
        assert text == "" and notice.startswith("⚠") and "must be" in notice


def test_long_input_is_truncated_with_a_notice(client):
    long_text = "great film " * 600  # 6,600 characters
    _, notice = client.predict(long_text, api_name="/classify")
    assert "only the first 5,000" in notice
    _, _, notice = client.predict("hola " * 1200, "spa-eng", "greedy", 1, api_name="/translate")
    assert "only the first 5,000" in notice


def test_twenty_concurrent_requests_are_all_answered(client):
    texts = [f"review number {i}: a great film" for i in range(20)]
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        results = list(pool.map(lambda t: client.predict(t, api_name="/classify"), texts))
    assert len(results) == 20 and all(label is not None for label, _ in results)


def test_missing_model_says_how_to_train_one(tmp_path):
    for module, command in ((translate_app, "trainers.translate"), (sentiment_app, "trainers.sentiment"),
                            (generate_app, "trainers.generate")):
        loaded = module.load(str(tmp_path / "nowhere"))
        unavailable = loaded["spa-eng"] if isinstance(loaded, dict) else loaded
        assert isinstance(unavailable, common.Unavailable) and command in unavailable.message
    broken = tmp_path / "sentiment-imdb"
    broken.mkdir()
    (broken / "model.keras").write_bytes(b"not a zip file")
    assert "could not be loaded" in sentiment_app.load(str(broken)).message
    demo = all_demos.build({"Translate": translate_app.load(str(tmp_path / "no")),
                            "Sentiment": sentiment_app.load(str(tmp_path / "no")),
                            "Generate": generate_app.load(str(tmp_path / "no"))})
    assert demo is not None  # the page still builds, each tab showing its message


def test_onnx_runtime_serves_the_same_answers(model_dirs, tmp_path):
    """`--runtime onnx`: the demos over the exports answer as over the saved models; a missing
    export says how to make one."""
    exports = tmp_path / "exports"
    for name in ("translate-spa-eng", "sentiment-imdb", "generate-shakespeare"):
        export_model(model_dirs / name, exports / name)
    keras_models = {"Translate": translate_app.load(str(model_dirs / "translate-spa-eng")),
                    "Sentiment": sentiment_app.load(str(model_dirs / "sentiment-imdb")),
                    "Generate": generate_app.load(str(model_dirs / "generate-shakespeare"))}
    onnx_models = {"Translate": translate_app.load(str(exports / "translate-spa-eng"), "onnx"),
                   "Sentiment": sentiment_app.load(str(exports / "sentiment-imdb"), "onnx"),
                   "Generate": generate_app.load(str(exports / "generate-shakespeare"), "onnx")}
    assert type(onnx_models["Translate"]["spa-eng"]).__name__ == "OnnxTranslator"
    for width in ("greedy", "beam search"):
        ours, theirs = (translate_app.make_handler(m["Translate"])(SPANISH, "spa-eng", width, 3)
                        for m in (keras_models, onnx_models))
        assert theirs[0] == ours[0] and theirs[2] == ours[2]
    ours, theirs = (sentiment_app.make_handlers(m["Sentiment"])[0]("a great film") for m in (keras_models, onnx_models))
    assert abs(theirs[0]["positive"] - ours[0]["positive"]) < 1e-4
    if onnx_models["Sentiment"].explains:  # an export made on TensorFlow has no gradient graph (test_export)
        ours, theirs = (sentiment_app.make_handlers(m["Sentiment"])[1]("a great film , dull plot")
                        for m in (keras_models, onnx_models))
        assert [w for w, _ in theirs] == [w for w, _ in ours]
        assert np.allclose([s for _, s in theirs], [s for _, s in ours], atol=1e-3)
    else:
        assert keras.backend.backend() == "tensorflow"
    ours, theirs = (list(generate_app.make_handler(m["Generate"])("ROMEO:", 40, 0.8, 0, 1.0, 7))[-1]
                    for m in (keras_models, onnx_models))
    assert theirs == ours
    assert all_demos.build(onnx_models, "onnx") is not None
    missing = sentiment_app.load(str(tmp_path / "nowhere" / "sentiment-imdb"), "onnx")
    assert "python -m trainers.export --model saved_models/sentiment-imdb" in missing.message


def test_clean_text():
    assert common.clean_text(None) == ("", None)
    assert common.clean_text("a\x00b\tc\n") == ("ab\tc\n", "1 control characters removed.")
    text, notice = common.clean_text("x" * 6000)
    assert len(text) == 5000 and "6,000" in notice


# --- a real browser ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def page(server):
    if not os.path.exists(CHROMIUM) and not shutil.which("chromium"):
        pytest.skip("Debian's chromium is not installed (.ci/run installs it with apt-get)")
    from playwright.sync_api import sync_playwright

    os.makedirs(SCREENSHOTS, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium"),
                                    args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(60_000)
        page.goto(server)
        page.wait_for_selector("text=rnn-suite")
        yield page
        browser.close()


def screenshot(page, name):
    page.screenshot(path=os.path.join(SCREENSHOTS, f"{keras.backend.backend()}-{name}.png"), full_page=True)


def test_browser_translate_tab_shows_translation_and_heatmap(page):
    page.get_by_role("tab", name="Translate").click()
    page.get_by_label("Text", exact=True).fill("¿Dónde está la estación de tren?")
    page.get_by_role("button", name="Translate", exact=True).click()
    heatmap = page.locator(".js-plotly-plot g.hm image").first  # plotly draws a heatmap as an image in its SVG
    heatmap.wait_for()
    assert heatmap.evaluate("image => image.getBBox().width * image.getBBox().height") > 0
    assert "estación" in [t.strip() for t in page.locator(".js-plotly-plot .xtick").all_text_contents()]
    assert page.get_by_label("Translation").input_value() != ""
    screenshot(page, "translate")


def test_browser_sentiment_tab_shows_label_and_highlighted_words(page):
    page.get_by_role("tab", name="Sentiment").click()
    page.get_by_label("Movie review").fill("a great film , wonderful plot")
    page.get_by_role("button", name="Classify").click()
    page.get_by_text("positive").first.wait_for()
    highlighted = page.locator("[data-testid='highlighted-text']").get_by_text("wonderful")
    highlighted.first.wait_for()  # the explanation arrives after the label
    assert highlighted.count() >= 1
    screenshot(page, "sentiment")


def test_browser_generate_tab_streams_text(page):
    page.get_by_role("tab", name="Generate").click()
    page.get_by_role("button", name="Generate").click()
    output = page.get_by_label("Text", exact=True).last
    page.wait_for_function("el => el.value.length > 'ROMEO:\\n'.length + 100", arg=output.element_handle())
    assert output.input_value().startswith("ROMEO:")
    screenshot(page, "generate")
