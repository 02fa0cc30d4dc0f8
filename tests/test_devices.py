"""--rnn-impl, --precision and --data-parallel on a CPU: switching between our recurrent layers and
Keras' built-ins keeps the predictions, mixed-precision models load and run in float32, and data
parallelism over two virtual CPU devices trains like one device."""

import json
import os
import subprocess
import sys
import types

import keras
import numpy as np
import pytest

from models import artifacts
from models.char_lm import CharLM, CharLMConfig, CharVocabulary
from models.generator import CharGenerator
from models.sentiment import SentimentNet, SentimentNetConfig
from models.seq2seq import Seq2SeqAttention, Seq2SeqConfig
from trainers import cli, devices

RNG = np.random.default_rng(0)
IDS = RNG.integers(1, 20, size=(3, 9)).astype("int32")
IDS[1, 6:] = 0  # padding: masks must behave the same in both implementations


def tiny_models(rnn_impl):
    sentiment = SentimentNet(SentimentNetConfig(vocab_size=20, embedding_dim=8, units=6, cell="lstm", dropout=0.0,
                                                word_dropout=0.0, max_length=16, rnn_impl=rnn_impl))
    translator = Seq2SeqAttention(Seq2SeqConfig(source_vocab_size=20, target_vocab_size=20, embedding_dim=8, units=6,
                                                cell="lstm", dropout=0.0, rnn_impl=rnn_impl))
    char_lm = CharLM(CharLMConfig(vocab_size=20, embedding_dim=8, units=6, num_layers=2, cell="gru", rnn_impl=rnn_impl))
    for model in (sentiment, translator, char_lm):
        model.build()
    return {"sentiment": sentiment, "translator": translator, "char_lm": char_lm}


def outputs(name, model):
    if name == "translator":
        return keras.ops.convert_to_numpy(model((IDS, IDS[:, :5])))
    return keras.ops.convert_to_numpy(model(IDS))


@pytest.mark.parametrize("start, other", [("ours", "keras"), ("keras", "ours")])
def test_switching_recurrent_implementation_keeps_predictions(start, other):
    for name, model in tiny_models(start).items():
        converted = artifacts.rebuild(model, rnn_impl=other)
        assert converted.get_config()["rnn_impl"] == other
        np.testing.assert_allclose(outputs(name, converted), outputs(name, model), atol=1e-5, err_msg=name)


def test_saved_model_records_its_recurrent_implementation(tmp_path):
    model = tiny_models("keras")["char_lm"]
    generator = CharGenerator(model, CharVocabulary([chr(97 + i) for i in range(20)]))
    generator.save(str(tmp_path / "lm"))
    loaded = CharGenerator.load(str(tmp_path / "lm"))
    assert loaded.model.config.rnn_impl == "keras"
    assert isinstance(loaded.model.rnns[0], keras.layers.GRU)
    ours = artifacts.rebuild(loaded.model, rnn_impl="ours")  # serve a built-in-trained model with ours
    np.testing.assert_allclose(outputs("char_lm", ours), outputs("char_lm", model), atol=1e-5)


def test_mixed_precision_model_loads_and_runs_in_float32(tmp_path):
    policy = "mixed_float16" if keras.backend.backend() == "torch" else "mixed_bfloat16"
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = CharLM(CharLMConfig(vocab_size=20, embedding_dim=8, units=16, num_layers=1))
        model.build()
        model.compile(keras.optimizers.Adam(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        history = model.fit(IDS[:, :-1] % 19 + 1, IDS[:, 1:] % 19 + 1, epochs=3, verbose=0)
        assert np.all(np.isfinite(history.history["loss"]))
        assert model.rnns[0].compute_dtype != "float32" and model.head.compute_dtype == "float32"
        mixed = keras.ops.convert_to_numpy(model(IDS))
        CharGenerator(model, CharVocabulary([chr(97 + i) for i in range(20)])).save(str(tmp_path / "lm"))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    loaded = CharGenerator.load(str(tmp_path / "lm"))
    assert all(layer.compute_dtype == "float32" for layer in loaded.model.rnns)
    full = keras.ops.convert_to_numpy(loaded.model(IDS))
    assert full.dtype == np.float32
    np.testing.assert_allclose(full, mixed, atol=0.05)  # the same weights; only the arithmetic differs
    assert len(loaded.generate("abc", length=5, seed=0)) == 5


def test_setup_reports_devices_and_precision(capsys):
    args = types.SimpleNamespace(precision="float32", data_parallel=False, batch_size=8, rnn_impl="ours")
    scope, info = devices.setup(args)
    assert info["backend"] == keras.backend.backend() and info["devices"] and info["precision"] == "float32"
    assert "devices:" in capsys.readouterr().out


DATA_PARALLEL_SCRIPT = """
import json, os, sys, types
import numpy as np
import keras
from models.review_lm import ReviewLM, ReviewLMConfig
from models.sentiment import SentimentNet, SentimentNetConfig
from models.seq2seq import Seq2SeqAttention, Seq2SeqConfig, masked_loss
from trainers import devices

rng = np.random.default_rng(0)
ids = rng.integers(1, 30, size=(32, 12)).astype("int32")
labels = (ids[:, :1] > 15).astype("float32")  # (batch, 1), as the trainer gives them
bce = lambda: keras.losses.BinaryCrossentropy(from_logits=True)
# Each case: a network, its loss, its data. Sentiment with adversarial training, the translator's
# token mean and the review language model reduce a loss by hand (models/losses.py); no padding,
# so that every replica's share has as many tokens and N replicas equal one exactly.
cases = {
    "sentiment": (lambda: SentimentNet(SentimentNetConfig(vocab_size=30, embedding_dim=8, units=8, dropout=0.0,
                                                          word_dropout=0.0, max_length=12)), bce, ids, labels),
    "sentiment_adversarial": (lambda: SentimentNet(SentimentNetConfig(
        vocab_size=30, embedding_dim=8, units=8, dropout=0.0, word_dropout=0.0, max_length=12, adversarial=0.3)),
        bce, ids, labels),
    "translator": (lambda: Seq2SeqAttention(Seq2SeqConfig(source_vocab_size=30, target_vocab_size=30, embedding_dim=8,
                                                          units=6, cell="gru", dropout=0.0)),
                   lambda: masked_loss, (ids, ids[:, :6]), ids[:, 1:7]),
    "review_lm": (lambda: ReviewLM(ReviewLMConfig(vocab_size=30, embedding_dim=8, units=6, dropout=0.0,
                                                  head_words=30)), lambda: None, ids, None),
}

def train(scope, name):
    build, loss, x, y = cases[name]
    keras.utils.set_random_seed(0)
    with scope:
        model = build()
        model.build()
        model.set_weights(initial[name])
        model.compile(keras.optimizers.SGD(0.5), loss())
    history = model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    return [float(v) for v in history.history["loss"]]

initial = {}
for name, (build, *_) in cases.items():
    keras.utils.set_random_seed(0)
    reference = build()
    reference.build()
    initial[name] = reference.get_weights()
names = sys.argv[1:] or list(cases)
single = {name: train(devices.contextlib.nullcontext(), name) for name in names}
scope, replicas = devices.data_parallel_scope()
parallel = {name: train(scope, name) for name in names}
print(json.dumps({"replicas": replicas, "devices": devices.list_devices(), "single": single, "parallel": parallel}))
"""


DATA_PARALLEL_CASES = ["sentiment", "sentiment_adversarial", "translator", "review_lm"]


def test_data_parallel_on_two_cpu_devices_matches_one_device():
    backend = keras.backend.backend()
    if backend == "torch":
        with pytest.raises(cli.UsageError, match="not supported on the torch backend"):
            devices.data_parallel_scope()
        return
    env = dict(os.environ, KERAS_BACKEND=backend, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    prelude = ""
    if backend == "tensorflow":  # two logical CPUs, configured before TensorFlow starts
        prelude = ("import tensorflow as tf\ncpu = tf.config.list_physical_devices('CPU')[0]\n"
                   "tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)\n")
    # TensorFlow: one model per process, as in the trainers: a second model's collectives clash with
    # the first's under a new strategy (tensorflow/tensorflow#62790).
    groups = [[name] for name in DATA_PARALLEL_CASES] if backend == "tensorflow" else [DATA_PARALLEL_CASES]
    for names in groups:
        result = subprocess.run([sys.executable, "-c", prelude + DATA_PARALLEL_SCRIPT, *names], env=env,
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-2000:]
        out = json.loads(result.stdout.strip().splitlines()[-1])
        assert out["replicas"] == 2, out["devices"]
        for name, losses in out["single"].items():
            np.testing.assert_allclose(out["parallel"][name], losses, rtol=1e-4, err_msg=name)
            # it trained (the adversarial term rises while the clean loss falls in these few steps)
            assert name == "sentiment_adversarial" or losses[1] < losses[0], name
