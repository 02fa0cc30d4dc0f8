"""Export (`trainers.export`) and the Keras-free runtime (`runtime`): small models of the three tasks
are saved, exported from this test's backend (JAX: jax2onnx; TensorFlow: Keras' own exporter; torch
cannot export, so its exports are made under JAX in a subprocess, and the refusal is tested), and
served by ONNX Runtime with the same results as Keras: the same translations (greedy, beam,
n-best), the same generated text and nats per character, the same probabilities."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import onnx
import pytest

from models.char_lm import CharLM, CharLMConfig
from models.classifier import SentimentClassifier
from models.generator import CharGenerator
from models.sentiment import SentimentNet, SentimentNetConfig
from models.seq2seq import Seq2SeqAttention, Seq2SeqConfig
from models.translator import Translator
from runtime.files import ArtifactError
from runtime.text import CharVocabulary, TrueCaser, Vocabulary, tokenize
from trainers import export as exporter
from trainers.subwords import learn_pieces

from helpers import export_model, export_under

pytestmark = pytest.mark.slow

BACKEND = keras.backend.backend()
SPANISH = ["¿Dónde está la estación de tren?", "Me gustaría aprender a tocar el piano.", "Tom es libre.",
           "El ciclista ganó la carrera a pesar de la lluvia.", "La biblioteca municipal cierra los domingos.",
           "Mi abuela cultiva tomates y berenjenas en el huerto.", "¿Puedes bajar el volumen?", "Sabía que pasaría."]
ENGLISH = ["Where is the train station?", "I would like to learn to play the piano.", "Tom is free.",
           "The cyclist won the race despite the rain.", "The city library closes on Sundays.",
           "My grandmother grows tomatoes and eggplants in the garden.", "Can you turn down the volume?",
           "I knew it would happen."]
REVIEWS = ["A wonderful film", "terrible , boring plot", "good good good bad", "漢字 only ☃", "x " * 300]
TEXT = "ROMEO:\nBut soft, what light through yonder window breaks?\nIt is the east, and Juliet is the sun.\n" * 4


def random_weights(model, seed, scale=0.5):
    """Seeded weights, the same on every backend, large enough that the outputs vary."""
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0, scale / np.sqrt(max(w.shape[0], 1)), w.shape).astype("float32")
                       for w in model.get_weights()])


def saved_models(folder):
    """A translator (subword pieces, LSTM), a classifier and a character model (2 GRU layers),
    untrained but seeded, saved under `folder`: `{task: path}`."""
    source = learn_pieces([tokenize(s) for s in SPANISH * 4], 60)
    target = learn_pieces([tokenize(s) for s in ENGLISH * 4], 60)
    net = Seq2SeqAttention(Seq2SeqConfig(source_vocab_size=len(source), target_vocab_size=len(target),
                                         embedding_dim=16, units=16, cell="lstm"))
    net.build()
    random_weights(net, 0)
    settings = {"direction": "spa-eng", "max_source_length": 12, "max_target_length": 16, "length_penalty": 0.6}
    paths = {"translation": Translator(net, source, target, TrueCaser.build(ENGLISH), settings).save(
        folder / "translate", card={"task": "translation"})}
    vocabulary = Vocabulary.build([r.split() for r in REVIEWS[:3]])
    classifier = SentimentNet(SentimentNetConfig(vocab_size=len(vocabulary), embedding_dim=8, units=8, max_length=32))
    classifier.build()
    random_weights(classifier, 1, scale=2.0)
    paths["sentiment"] = SentimentClassifier(classifier, vocabulary).save(folder / "sentiment", card={})
    chars = CharVocabulary.build(TEXT)
    lm = CharLM(CharLMConfig(vocab_size=len(chars), embedding_dim=8, units=16, num_layers=2, cell="gru"))
    lm.build()
    random_weights(lm, 2, scale=2.0)
    paths["generation"] = CharGenerator(lm, chars).save(folder / "generate", card={})
    return paths


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """`{task: (saved folder, export folder)}`, exported on this backend (torch: under JAX)."""
    folder = tmp_path_factory.mktemp("export")
    result = {}
    for task, path in saved_models(folder).items():
        formats = ("onnx", "keras-int8", "savedmodel") if BACKEND != "torch" else ("onnx", "keras-int8")
        formats = formats if task == "translation" else ("onnx",)
        result[task] = (path, export_model(path, folder / f"{task}-export", formats))
    return result


def test_the_runtime_imports_no_framework():
    script = ("import sys, runtime, runtime.onnx; "
              "print(sorted({m.split('.')[0] for m in sys.modules} & {'keras', 'tensorflow', 'jax', 'torch'}))")
    output = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, PYTHONPATH=os.getcwd()))
    assert output.returncode == 0 and output.stdout.strip() == "[]", output.stderr[-2000:]


def test_subword_pieces_are_the_same_through_sentencepiece_and_keras_hub(exported):
    import runtime.subwords
    from models.subwords import vocabulary_from_json

    data = json.loads((exported["translation"][1] / "source_vocab.json").read_text())
    keras_hub_pieces, plain_pieces = vocabulary_from_json(data), runtime.subwords.vocabulary_from_json(data)
    assert type(plain_pieces) is runtime.subwords.SubwordVocabulary
    words = tokenize(" ".join(SPANISH)) + ["ciclista", "pingüino", "ﬁn", "日本", "🙂", "xylófono", "a", "ñandú"]
    assert plain_pieces.tokens == keras_hub_pieces.tokens
    assert plain_pieces.encode_words(words) == keras_hub_pieces.encode_words(words)


@pytest.mark.parametrize("int8", [False, True])
def test_translations_are_the_same_through_onnx(exported, int8):
    import runtime

    saved, out = exported["translation"]
    keras_translator, onnx_translator = Translator.load(saved), runtime.load(out, int8=int8)
    texts = SPANISH + ["", "carrera " * 20]
    for width in (1, 3):
        ours = keras_translator.translate(texts, beam_width=width, n_best=min(width, 2))
        theirs = onnx_translator.translate(texts, beam_width=width, n_best=min(width, 2))
        if int8:  # int8 weights change the numbers: only the form is the same
            assert [t.notice for t in theirs] == [o.notice for o in ours]
            continue
        assert [t.text for t in theirs] == [o.text for o in ours]
        assert [t.notice for t in theirs] == [o.notice for o in ours]
        assert [[a for a, _ in t.alternatives] for t in theirs] == [[a for a, _ in o.alternatives] for o in ours]
        for o, t in zip(ours, theirs):
            np.testing.assert_allclose(t.attention, o.attention, atol=1e-4)
            assert (o.score is None) == (t.score is None) and (o.score is None or abs(o.score - t.score) < 1e-4)


def test_probabilities_are_the_same_through_onnx(exported):
    import runtime

    saved, out = exported["sentiment"]
    keras_classifier, onnx_classifier = SentimentClassifier.load(saved), runtime.load(out)
    with pytest.warns(UserWarning, match="no word in the model's vocabulary"):
        ours = keras_classifier.predict(REVIEWS)
    with pytest.warns(UserWarning, match="no word in the model's vocabulary"):
        theirs = onnx_classifier.predict(REVIEWS)
    assert np.abs(ours - theirs).max() <= 1e-4 and ours.std() > 0.01  # not a constant
    assert onnx_classifier.notice("漢字") == keras_classifier.notice("漢字") is not None
    assert np.abs(runtime.load(out, int8=True).predict(REVIEWS[:3]) - ours[:3]).max() < 0.1


def test_explanations_are_the_same_through_onnx(exported, tmp_path):
    """Integrated gradients through the exported gradient graph: the same scores, steps and logits.
    An export made on TensorFlow has no gradient graph: `explain` says how to get one."""
    import runtime

    saved, out = exported["sentiment"]
    if BACKEND == "tensorflow":
        assert not runtime.load(out).explains
        with pytest.raises(ArtifactError, match="KERAS_BACKEND=jax"):
            runtime.load(out).explain("a wonderful film")
        out = tmp_path / "made-on-jax"
        process = export_under("jax", saved, out, "--format", "onnx", "--no-int8")
        assert process.returncode == 0, process.stderr[-2000:]
    keras_classifier, onnx_classifier = SentimentClassifier.load(saved), runtime.load(out)
    largest = 0.0
    for review in REVIEWS[:3] + ["x " * 300]:
        ours, theirs = keras_classifier.explain(review, steps=8), onnx_classifier.explain(review, steps=8)
        assert theirs["words"] == ours["words"] and theirs["steps"] == ours["steps"]
        np.testing.assert_allclose(theirs["scores"], ours["scores"], atol=1e-4)
        assert abs(theirs["logit"] - ours["logit"]) < 1e-4
        assert abs(theirs["baseline_logit"] - ours["baseline_logit"]) < 1e-4
        assert abs(theirs["completeness_error"]) <= 0.05 * max(1.0, abs(theirs["logit"] - theirs["baseline_logit"])) \
            or theirs["steps"] == 1024
        largest = max(largest, np.abs(ours["scores"]).max())
    assert largest > 1e-3  # the words move the logit: the comparison is not of zeros


def test_generation_is_the_same_through_onnx(exported):
    import runtime

    saved, out = exported["generation"]
    keras_generator, onnx_generator = CharGenerator.load(saved), runtime.load(out)
    for prompt in ("ROMEO:\n", "", "But soft, what light " * 3):
        ours = keras_generator.generate(prompt, length=60, temperature=0.8, seed=3)
        assert onnx_generator.generate(prompt, length=60, temperature=0.8, seed=3) == ours
    session = onnx_generator.start("Juliet", seed=1)  # streaming continues where it stopped
    assert session.generate(20) + session.generate(20) == keras_generator.generate("Juliet", length=40, seed=1)
    ids, _ = keras_generator.vocabulary.encode(TEXT)
    nats = keras_generator.text_loss(ids, streams=4, chunk=32)
    assert abs(onnx_generator.text_loss(ids, streams=4, chunk=32) - nats) < 1e-5 and nats > 0.5


@pytest.mark.skipif(BACKEND == "torch", reason="a SavedModel is written from the JAX or TensorFlow backend")
def test_saved_model_signatures_compute_what_keras_computes(exported):
    import tensorflow as tf

    saved, out = exported["translation"]
    model = Translator.load(saved).model
    loaded = tf.saved_model.load(str(out / "saved_model"))
    source = np.array([[5, 6, 7, 0], [8, 9, 0, 0]], "int32")
    encoded = loaded.signatures["encode"](source=tf.constant(source))  # as TF Serving calls it
    values, keys, mask, states = model.encode(keras.ops.convert_to_tensor(source))
    np.testing.assert_allclose(np.asarray(encoded["values"]), keras.ops.convert_to_numpy(values), atol=1e-5)
    np.testing.assert_allclose(np.asarray(encoded["state_1"]), keras.ops.convert_to_numpy(states[1]), atol=1e-5)


def test_export_folder_records_what_the_runtime_needs(exported):
    manifest = json.loads((exported["translation"][1] / "export.json").read_text())
    assert manifest["task"] == "translation" and manifest["onnx"] and manifest["int8"]
    assert set(manifest["endpoints"]) == {"encode", "decode_step"}
    assert [i["name"] for i in manifest["endpoints"]["decode_step"]["inputs"]] == [
        "tokens", "values", "keys", "mask", "state_0", "state_1"]
    quantized = Translator.load(exported["translation"][1] / "keras-int8")  # Keras' int8, as a saved model
    assert quantized.model.weight_quantization() == "int8" and isinstance(quantized("Tom es libre.").text, str)
    sizes = {p.name: p.stat().st_size for p in (exported["generation"][1]).glob("*.onnx")}
    small = {p.name: p.stat().st_size for p in (exported["generation"][1] / "int8").glob("*.onnx")}
    assert set(sizes) == set(small) == {"run.onnx", "step.onnx"}
    # every matrix product of one step is quantised (an Einsum would not be: int8 would keep float32 weights)
    for task, graph in (("translation", "decode_step"), ("generation", "step"), ("sentiment", "probabilities")):
        ops = [node.op_type for node in onnx.load(exported[task][1] / "int8" / f"{graph}.onnx").graph.node]
        assert "MatMulInteger" in ops and "Einsum" not in ops, (task, sorted(set(ops)))
    if BACKEND != "tensorflow":  # made on JAX: the recurrent layers are ONNX's own operators, not Loops
        for task, graph, operator in (("translation", "encode", "LSTM"), ("generation", "run", "GRU"),
                                      ("sentiment", "probabilities", "LSTM")):
            ops = [node.op_type for node in onnx.load(exported[task][1] / f"{graph}.onnx").graph.node]
            assert operator in ops and "Loop" not in ops, (task, sorted(set(ops)))


def test_bad_exports_and_flags_get_one_line(exported, tmp_path):
    import runtime

    with pytest.raises(ArtifactError, match="no export at"):
        runtime.load(tmp_path / "nothing")
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for item in exported["sentiment"][1].iterdir():
        if item.is_file():
            (damaged / item.name).write_bytes(item.read_bytes())
    (damaged / "probabilities.onnx").write_bytes(b"not a graph")
    with pytest.raises(ArtifactError, match="not a readable ONNX graph") as error:
        runtime.load(damaged)
    assert "\n" not in str(error.value)
    with pytest.raises(ArtifactError, match="no int8 graphs"):
        (damaged / "export.json").write_text(json.dumps({**json.loads((damaged / "export.json").read_text()),
                                                         "int8": False}))
        runtime.load(damaged, int8=True)
    generator = runtime.load(exported["generation"][1])
    with pytest.raises(ValueError, match="prefix of each row"):  # the exported LSTM reads lengths
        generator.run(np.ones((1, 3), "int32"), np.array([[True, False, True]]), generator.initial_states())
    backend = "jax" if BACKEND == "torch" else BACKEND
    process = export_under(backend, tmp_path / "missing", tmp_path / "out")
    assert process.returncode == 2 and "no saved model at" in process.stderr.strip().splitlines()[-1]
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "mine.txt").write_text("keep me")
    process = export_under(backend, exported["sentiment"][0], tmp_path / "notes")
    assert process.returncode == 2 and "not an export folder" in process.stderr
    assert (tmp_path / "notes" / "mine.txt").read_text() == "keep me"


@pytest.mark.skipif(BACKEND != "torch", reason="the refusal of the torch backend")
def test_torch_backend_refuses_to_export_with_the_way_out(exported, tmp_path):
    with pytest.raises(ValueError, match="KERAS_BACKEND=jax"):
        exporter.export(str(exported["sentiment"][0]), str(tmp_path / "out"))


@pytest.mark.parametrize("task", ["translation", "generation", "sentiment"])
def test_keras_int8_quantize_serves_saves_and_loads(exported, task, tmp_path):
    """Keras' own `quantize("int8")` (its Dense and Embedding layers): the quantised network stays
    near the float one (the tied output reads the dequantised embedding), and its folder loads
    again with the quantised layers."""
    loader = {"translation": Translator, "generation": CharGenerator, "sentiment": SentimentClassifier}[task]
    servable = loader.load(exported[task][0])
    model = servable.model
    if task == "translation":
        inputs = (np.array([[5, 6, 7, 0], [8, 9, 10, 11]], "int32"), np.array([[2, 5, 6], [2, 7, 8]], "int32"))
    else:
        inputs = np.array([[3, 4, 5, 6, 0], [7, 8, 9, 1, 2]], "int32")
    before = keras.ops.convert_to_numpy(model(inputs))
    model.quantize("int8")
    after = keras.ops.convert_to_numpy(model(inputs))
    assert model.weight_quantization() == "int8"
    assert np.abs(after - before).max() <= 0.05 * max(1.0, np.abs(before).max())
    folder = servable.save(tmp_path / "int8", card={})
    again = loader.load(folder)
    assert again.model.weight_quantization() == "int8"
    np.testing.assert_allclose(keras.ops.convert_to_numpy(again.model(inputs)), after, atol=1e-6)


NATIVE_CASES = {  # name: (layer class, cell arguments, wrapped in Bidirectional, layer arguments)
    "lstm": ("LSTM", {}, False, {"return_sequences": True, "return_state": True}),
    "gru-reset-after": ("GRU", {}, False, {"return_sequences": True, "return_state": True}),
    "gru-reset-before": ("GRU", {"reset_after": False}, False, {"return_sequences": True, "return_state": True}),
    "simple-rnn": ("SimpleRNN", {}, False, {"return_sequences": True, "return_state": True}),
    "lstm-backwards": ("LSTM", {}, False, {"return_sequences": True, "return_state": True, "go_backwards": True}),
    "lstm-no-bias": ("LSTM", {"use_bias": False}, False, {"return_sequences": True}),
    "bidirectional-gru": ("GRU", {}, True, {"return_sequences": True}),
    "relu-simple-rnn (generic loop)": ("SimpleRNN", {"activation": "relu"}, False, {"return_sequences": True}),
}


@pytest.mark.skipif(BACKEND != "jax", reason="the native recurrent operators are written by the JAX export")
@pytest.mark.parametrize("case", list(NATIVE_CASES))
def test_native_recurrent_operators_equal_the_layers(case, tmp_path):
    """`layers.onnx_recurrent`: a recurrent layer exported as ONNX's LSTM/GRU/RNN operator computes
    what the layer computes: outputs (zeros or the carried state at masked steps, processing order
    with `go_backwards`) and final states, right-padded masks, initial states given."""
    import onnxruntime

    import layers
    from models.export import Endpoint, write_onnx

    name, cell_arguments, bidirectional, arguments = NATIVE_CASES[case]
    layer = getattr(layers, name)(6, **cell_arguments, **arguments)
    if bidirectional:
        layer = keras.layers.Bidirectional(layer)
    layer.build((None, None, 5))
    random_weights(layer, 7, scale=2.0)
    states = 0 if bidirectional else (2 if name == "LSTM" else 1)

    def fn(x, mask, *initial):
        out = layer(x, mask=mask, initial_state=list(initial) or None)
        return tuple(out) if isinstance(out, (list, tuple)) else (out,)

    inputs = [("x", ("batch", "time", 5), "float32"), ("mask", ("batch", "time"), "bool"),
              *[(f"state_{i}", ("batch", 6), "float32") for i in range(states)]]
    outputs = [f"out_{i}" for i in range(1 + (states if arguments.get("return_state") else 0))]
    path = write_onnx(Endpoint("layer", fn, inputs, outputs, layer), tmp_path / "layer.onnx")
    operators = {node.op_type for node in onnx.load(path).graph.node}
    native = "generic" not in case
    assert bool(operators & {"LSTM", "GRU", "RNN"}) == native and ("Loop" in operators) != native, operators
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 7, 5)).astype("float32")
    mask = np.arange(7)[None] < np.array([[7], [4], [1]])  # right padding, one row of one step
    initial = [rng.normal(size=(3, 6)).astype("float32") for _ in range(states)]
    ours = [keras.ops.convert_to_numpy(t) for t in fn(x, mask, *initial)]
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    theirs = session.run(None, dict(zip([n for n, _, _ in inputs], [x, mask, *initial])))
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(b, a, atol=1e-5)
