"""How much sentiment a frozen encoder's pooled states carry: a linear probe.

    python -m benchmarks.encoder_probe                        # saved_models/sentiment-lm's encoder
    python -m benchmarks.encoder_probe --random-encoder       # the same embedding, a fresh encoder

The encoder of a review language model (`trainers.pretrain`) is copied into a `SentimentNet`
(`ReviewLM.transfer_to`), the masked mean+max pooling of its states is computed for training
reviews, and a logistic regression on the standardised features (plain gradient descent with an
L2 penalty: numpy suffices for 2,000 x 512) is scored on reviews it did not see. It says whether
fine-tuning starts from features a classifier can use (benchmarks/RESULTS.md, "Sentiment:
pretraining").
"""

from trainers import cli  # noqa: I001 - sets the environment before TensorFlow/Keras load

import argparse
import dataclasses

import keras
import numpy as np
from keras import ops

from runtime.text import review_tokens, truncate
from trainers import sentiment
from trainers.batching import pad


def pooled_features(model, vocabulary, texts, max_length, batch_size=100):
    """`(len(texts), 4 units)` masked mean+max pooled encoder states of each review."""
    features = []
    for start in range(0, len(texts), batch_size):
        ids = pad([truncate(vocabulary.encode(review_tokens(t)), max_length) for t in texts[start:start + batch_size]])
        mask = ops.not_equal(ids, 0)
        states = model.encoder(model.embedding(ids), mask=mask)
        features.append(ops.convert_to_numpy(model.pooling(states, mask=mask)))
    return np.concatenate(features)


def probe_accuracy(features, labels, train, steps=500, learning_rate=0.5, l2=1e-2):
    """Accuracy on the rows after the first `train` of a logistic regression fitted on those."""
    x = (features - features.mean(0)) / (features.std(0) + 1e-6)
    weights, bias = np.zeros(x.shape[1]), 0.0
    for _ in range(steps):
        p = 1 / (1 + np.exp(-(x[:train] @ weights + bias)))
        weights -= learning_rate * (x[:train].T @ (p - labels[:train]) / train + l2 * weights)
        bias -= learning_rate * float(np.mean(p - labels[:train]))
    return float(np.mean(((x[train:] @ weights + bias) > 0) == labels[train:]))


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.encoder_probe", description=__doc__.splitlines()[0])
    p.add_argument("--pretrained", default="saved_models/sentiment-lm", help="review language model folder")
    p.add_argument("--random-encoder", action="store_true", help="a freshly initialised encoder instead")
    p.add_argument("--examples", type=int, default=3000, help="training reviews used (2/3 fit, 1/3 scored)")
    args = p.parse_args(argv)
    keras.utils.set_random_seed(0)  # the fresh encoder's weights
    config, vocabulary, language_model = sentiment.starting_point(
        sentiment.SentimentConfig(pretrained=args.pretrained, self_training=False))
    splits, _ = sentiment.load_splits(dataclasses.replace(config, embedding_init="random"))
    texts, labels, _ = splits["train"]
    rows = np.random.default_rng(0).permutation(len(texts))[:args.examples]
    model = sentiment.SentimentNet(config)
    model.build()
    language_model.transfer_to(model)
    if args.random_encoder:
        fresh = sentiment.SentimentNet(config)
        fresh.build()
        model.encoder.set_weights(fresh.encoder.get_weights())
    features = pooled_features(model, vocabulary, [texts[i] for i in rows], config.max_length)
    accuracy = probe_accuracy(features, np.asarray(labels)[rows], train=2 * len(rows) // 3)
    print(f"{'random' if args.random_encoder else 'pretrained'} encoder ({config.units} units): feature standard "
          f"deviation {features.std(0).mean():.3f}; linear probe accuracy {accuracy:.3f} on {len(rows) // 3} reviews")
    return 0


if __name__ == "__main__":
    cli.run(main)
