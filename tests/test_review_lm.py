"""The review language model that pretrains the sentiment encoder (`models.review_lm`)."""

import dataclasses

import keras
import numpy as np
import pytest

from models.review_lm import ReviewLM, ReviewLMConfig, language_model_targets
from models.sentiment import SentimentNet, SentimentNetConfig

IDS = np.array([[5, 9, 3, 12, 7, 0, 0], [4, 4, 8, 2, 6, 11, 13]], dtype="int32")  # right-padded


def small_lm(**changes):
    model = ReviewLM(ReviewLMConfig(**{"vocab_size": 16, "embedding_dim": 6, "units": 5, "head_words": 10,
                                       "dropout": 0.0, **changes}))
    model.build()
    return model


def test_targets_are_the_next_and_previous_words_in_head_classes():
    following, preceding, next_weight, previous_weight = (keras.ops.convert_to_numpy(t)
                                                          for t in language_model_targets(IDS, 10))
    np.testing.assert_array_equal(following[0], [9, 3, 9, 7, 0, 0, 0])  # 12 -> "other" (class 9)
    np.testing.assert_array_equal(next_weight[0], [1, 1, 1, 1, 0, 0, 0])  # nothing follows the last word
    np.testing.assert_array_equal(preceding[1], [0, 4, 4, 8, 2, 6, 9])  # 11 -> "other"
    np.testing.assert_array_equal(previous_weight[1], [0, 1, 1, 1, 1, 1, 1])


def test_the_backward_logits_at_a_word_read_only_the_words_after_it():
    model = small_lm()
    forward, backward = (keras.ops.convert_to_numpy(t) for t in model(IDS))
    assert forward.shape == backward.shape == (2, 7, 10)
    changed = IDS.copy()
    changed[1, 2] = 15  # a word in the middle
    forward2, backward2 = (keras.ops.convert_to_numpy(t) for t in model(changed))
    np.testing.assert_allclose(forward2[1, :2], forward[1, :2], atol=1e-6)  # forward: only later positions move
    np.testing.assert_allclose(backward2[1, 3:], backward[1, 3:], atol=1e-6)  # backward: only earlier ones
    assert np.abs(forward2[1, 2:] - forward[1, 2:]).max() > 1e-4
    assert np.abs(backward2[1, :3] - backward[1, :3]).max() > 1e-4


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_transfer_hands_the_encoder_to_the_classifier(cell):
    model = small_lm(cell=cell)
    net = SentimentNet(SentimentNetConfig(vocab_size=16, embedding_dim=6, units=5, cell=cell))
    net.build()
    model.transfer_to(net)
    mask = IDS != 0
    embedded = model.embedding(IDS)
    ours = keras.ops.convert_to_numpy(net.encoder(net.embedding(IDS), mask=keras.ops.convert_to_tensor(mask)))
    forward = keras.ops.convert_to_numpy(model.forward_rnn(embedded, mask=mask))
    backward = keras.ops.convert_to_numpy(keras.ops.flip(model.backward_rnn(embedded, mask=mask), axis=1))
    np.testing.assert_allclose(ours[mask], np.concatenate([forward, backward], -1)[mask], atol=1e-5)
    with pytest.raises(ValueError, match="does not fit the classifier"):
        model.transfer_to(SentimentNet(SentimentNetConfig(vocab_size=16, embedding_dim=6, units=7, cell=cell)))


def test_a_few_steps_learn_a_repeating_text():
    keras.utils.set_random_seed(0)
    model = small_lm()
    ids = np.tile(np.array([[3, 4, 5, 6, 7, 8]], "int32"), (8, 1))
    following, preceding, next_weight, previous_weight = language_model_targets(ids, 10)
    model.compile(keras.optimizers.Adam(0.05), [keras.losses.SparseCategoricalCrossentropy(from_logits=True)] * 2)
    history = model.fit(ids, (following, preceding), sample_weight=(next_weight, previous_weight), epochs=30,
                        verbose=0)
    assert history.history["loss"][-1] < 0.2 * history.history["loss"][0]


def test_the_sentiment_trainer_starts_from_a_pretrained_folder(tmp_path):
    """`trainers.sentiment --pretrained FOLDER`: the classifier's embedding and encoder are the
    language model's, with its sizes."""
    from runtime.text import Vocabulary
    from trainers import pretrain, sentiment

    model = small_lm()
    pretrain.PretrainedEncoder(model, Vocabulary.build([[f"w{i}" for i in range(14)]])).save(tmp_path / "lm", {})
    loaded, sides, _ = sentiment.artifacts.load(tmp_path / "lm", ("vocabulary.json",), model_class=ReviewLM)
    config = sentiment.SentimentConfig(vocab_size=16, embedding_dim=6, units=5, pretrained=str(tmp_path / "lm"))
    net = sentiment.build_model(config, None, loaded)
    for ours, theirs in zip(net.encoder.forward_layer.get_weights() + net.embedding.get_weights(),
                            model.forward_rnn.get_weights() + model.embedding.get_weights()):
        np.testing.assert_array_equal(ours, theirs)


def test_head_warmup_trains_the_output_layer_alone_then_unfreezes(tmp_path):
    """`--head-warmup N`: N steps move the head only; the pretrained embedding and encoder are
    untouched by them and trainable again for the run itself."""
    from runtime.text import Vocabulary
    from trainers import sentiment

    model = small_lm()
    vocabulary = Vocabulary.build([[f"w{i}" for i in range(12)]])  # 16 ids with the specials
    rng = np.random.default_rng(0)
    reviews = [[f"w{i}" for i in rng.integers(0, 12, size=int(rng.integers(3, 9)))] for _ in range(32)]
    data = sentiment.batches(vocabulary, 10, reviews, rng.integers(0, 2, size=32), 8, 0, True)
    config = sentiment.SentimentConfig(vocab_size=16, embedding_dim=6, units=5, pretrained="lm", head_warmup=3)
    keras.utils.set_random_seed(3)
    start = sentiment.build_model(dataclasses.replace(config, head_warmup=0), None, model, data)
    keras.utils.set_random_seed(3)
    net = sentiment.build_model(config, None, model, data)
    for ours, theirs in zip(net.encoder.forward_layer.get_weights() + net.embedding.get_weights(),
                            model.forward_rnn.get_weights() + model.embedding.get_weights()):
        np.testing.assert_array_equal(ours, theirs)
    assert not np.allclose(net.head.get_weights()[0], start.head.get_weights()[0])
    assert net.encoder.trainable and net.embedding.trainable


def states_net(model, **changes):
    """A built `SentimentNet` reading `model`'s states beside its embeddings (`lm_units`)."""
    net = SentimentNet(SentimentNetConfig(**{"vocab_size": 16, "embedding_dim": 6, "units": 4, "lm_units": 5,
                                             "word_dropout": 0.0, "dropout": 0.0, **changes}))
    net.build()
    model.transfer_to(net)
    return net


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_the_classifier_reads_the_fixed_language_models_states(cell):
    """`--pretrained-use states`: the language model's two directions sit beside the classifier's
    own encoder, fixed, and their states in text order are what the model computes."""
    model = small_lm(cell=cell)
    net = states_net(model, cell=cell)
    frozen = net.lm_embedding.weights + net.lm_forward.weights + net.lm_backward.weights
    trained = {id(w) for w in net.trainable_weights}
    assert len(frozen) > 3 and not any(id(w) in trained for w in frozen)
    np.testing.assert_array_equal(net.lm_embedding.get_weights()[0], model.embedding.get_weights()[0])
    assert not np.allclose(net.embedding.get_weights()[0], model.embedding.get_weights()[0])  # its own
    mask = IDS != 0
    embedded = model.embedding(IDS)
    both = keras.ops.convert_to_numpy(net.embed(IDS))
    assert both.shape == (2, 7, 12)
    np.testing.assert_array_equal(both[..., 6:], keras.ops.convert_to_numpy(embedded))
    states = keras.ops.convert_to_numpy(net.language_model_states(embedded, keras.ops.convert_to_tensor(mask)))
    forward = keras.ops.convert_to_numpy(model.forward_rnn(embedded, mask=mask))
    backward = keras.ops.convert_to_numpy(keras.ops.flip(model.backward_rnn(embedded, mask=mask), axis=1))
    np.testing.assert_allclose(states[mask], np.concatenate([forward, backward], -1)[mask], atol=1e-5)
    assert net.encoder.forward_layer.get_weights()[0].shape[0] == 6 + 2 * 5  # embedding + both states
    with pytest.raises(ValueError, match="does not fit the classifier"):
        model.transfer_to(SentimentNet(SentimentNetConfig(vocab_size=16, embedding_dim=6, units=5, lm_units=7,
                                                          cell=cell)))


def test_explanations_see_the_language_model_path_and_training_does_not():
    """Outside training the logit's gradient to the embeddings runs through the language model's
    states too (integrated gradients then add up); in training it stops at them (the embeddings
    learn through the encoder, and the model's backward pass is saved)."""
    keras.utils.set_random_seed(0)
    net = states_net(small_lm())
    mask = keras.ops.convert_to_tensor(IDS != 0)
    points = keras.ops.convert_to_tensor(keras.ops.convert_to_numpy(net.embed(IDS)))
    full = keras.ops.convert_to_numpy(net.logit_gradients(points, mask))

    def gradient(lm_gradient):
        total = lambda p: keras.ops.sum(net.call_embedded(p, mask, training=False, lm_gradient=lm_gradient))  # noqa: E731
        from layers import value_and_grad
        return keras.ops.convert_to_numpy(value_and_grad(total, points)[1][0])

    np.testing.assert_allclose(full, gradient(True), atol=1e-6)
    assert np.abs(full - gradient(False)).max() > 1e-4
    # a central difference along one coordinate of the language model's half (small: max pooling has kinks)
    step, row, word, dim = 1e-3, 1, 2, 9
    shifted = keras.ops.convert_to_numpy(points).copy()
    values = []
    for sign in (1, -1):
        shifted[row, word, dim] = keras.ops.convert_to_numpy(points)[row, word, dim] + sign * step
        values.append(keras.ops.convert_to_numpy(net.call_embedded(keras.ops.convert_to_tensor(shifted), mask))[row, 0])
    np.testing.assert_allclose((values[0] - values[1]) / (2 * step), full[row, word, dim], rtol=2e-2, atol=1e-4)


def test_a_classifier_with_states_saves_and_loads(tmp_path):
    from models import artifacts

    net = states_net(small_lm())
    artifacts.save(tmp_path / "m", net, {}, {})
    loaded, _, _ = artifacts.load(tmp_path / "m", (), model_class=SentimentNet)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(IDS)), keras.ops.convert_to_numpy(net(IDS)),
                               atol=1e-6)
