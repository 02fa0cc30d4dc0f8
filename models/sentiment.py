"""Sentiment of movie reviews: a bidirectional recurrent classifier.

    ids (batch, time) -> Embedding -> word dropout -> Bidirectional(our LSTM or GRU)
      -> masked mean+max pooling -> Dropout -> Dense(1): the logit of "positive"

`call_embedded` is the network from the embeddings on, written once: `call` (training and
prediction) and the integrated-gradients explanations (`runtime.classification`, through
`logit_gradients`) both run it, in Keras or exported.
"""

import dataclasses

import keras
from keras import ops

import layers
from models import artifacts
from models.config import Config, cell_setting, rnn_impl_setting, setting
from models.losses import replica_share


@dataclasses.dataclass
class SentimentNetConfig(Config):
    """Hyperparameters of `SentimentNet` (a trainer extends them: `trainers.sentiment`)."""

    RENAMED = {"embed_dim": "embedding_dim"}  # the name before 2026-11

    vocab_size: int = setting(20000, "vocabulary size (id 0 is padding, 1 unknown); from the data", flag=False)
    embedding_dim: int = setting(128, "embedding size", quick=32)
    units: int = setting(64, "recurrent units of each direction", quick=16)
    cell: str = cell_setting("lstm")
    dropout: float = setting(0.5, "dropout before the output layer, in training", kind="fraction")
    word_dropout: float = setting(0.25, "fraction of words whose whole embedding is zeroed in training",
                                  kind="fraction")
    adversarial: float = setting(0.0, "adversarial training: size of the perturbation of each embedded review, in "
                                      "standard deviations of the embedding (Miyato et al. 2016; 0: off)",
                                 kind="nonnegative")
    max_length: int = setting(600, "words read per review (a longer one keeps its beginning and end)", quick=200)
    rnn_impl: str = rnn_impl_setting()


@keras.saving.register_keras_serializable(package="rnn_suite")
class SentimentNet(artifacts.PortableModel, keras.Model):
    """Bidirectional recurrent classifier over token ids; `call` returns logits `(batch, 1)` (the
    Keras convention for one output: losses then average over the batch axis, which
    `tf.distribute` relies on to scale the loss per replica).

    Args:
        config: `SentimentNetConfig`. `max_length` is recorded for inference (the network takes any
            length). `word_dropout` drops whole words (their full embedding vector, noise shape
            `(batch, time, 1)`), so the classifier cannot lean on a few rare words, such as the
            names of the films in the training reviews, that never occur in the test reviews.
    """

    TASK = "sentiment classification"  # what a saved folder of this class holds (`artifacts.check_model_class`)
    CONFIG = SentimentNetConfig

    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        self.config = c = SentimentNetConfig.of(config)
        rnn = layers.recurrent_layer_class(c.cell, c.rnn_impl)
        self.embedding = keras.layers.Embedding(c.vocab_size, c.embedding_dim, name="embedding")
        self.encoder = keras.layers.Bidirectional(rnn(c.units, return_sequences=True), name="encoder")
        self.pooling = layers.MaskedMeanMaxPooling(name="pooling")
        self.word_dropout = keras.layers.Dropout(c.word_dropout, noise_shape=(None, None, 1), name="word_dropout")
        self.dropout = keras.layers.Dropout(c.dropout)
        self.head = keras.layers.Dense(1, name="head", dtype="float32")  # float32 logit under mixed precision

    def build(self, input_shape=(None, None)):
        """Create every weight from the ids' shape `(batch, time)`."""
        batch, time = input_shape[0], input_shape[1]
        self.embedding.build(input_shape)
        self.encoder.build((batch, time, self.config.embedding_dim))
        self.pooling.build((batch, time, 2 * self.config.units))  # no weights; built so that `quantize` runs
        self.head.build((batch, 4 * self.config.units))
        self.built = True

    def call(self, ids, training=False):
        mask = ops.not_equal(ids, 0)  # (batch, time): padding id 0
        return self.call_embedded(self.embedding(ids), mask, training=training)

    def call_embedded(self, embedded, mask, training=False):
        """Logits `(batch, 1)` from embeddings `(batch, time, embedding_dim)` and a `(batch, time)` mask."""
        embedded = self.word_dropout(embedded, training=training)  # (batch, time, embedding_dim)
        h = self.encoder(embedded, mask=mask, training=training)  # (batch, time, 2 units)
        pooled = self.dropout(self.pooling(h, mask=mask), training=training)  # (batch, 4 units)
        return self.head(pooled)  # (batch, 1)

    def logit_gradients(self, points, mask):
        """Gradients `(n, time, embedding_dim)` of the logits with respect to embeddings `points (n,
        time, embedding_dim)` under a `(n, time)` mask (integrated gradients sum them on a path)."""

        def total_logit(points):  # each logit depends on its own row only: one gradient for all
            return ops.sum(self.call_embedded(points, mask, training=False))

        return layers.value_and_grad(total_logit, points)[1][0]

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The compiled loss, plus in training with `adversarial` > 0 the loss of the same reviews
        under the embedding perturbation that raises it most (`adversarial_loss`)."""
        loss = super().compute_loss(x, y, y_pred, sample_weight, training=training)
        if training and self.config.adversarial > 0:
            loss = loss + replica_share(self.adversarial_loss(x, y))  # scaled as the compiled loss is
        return loss

    def adversarial_loss(self, ids, labels):
        """Mean cross-entropy of `labels (batch, 1)` for `ids (batch, time)` whose embeddings are
        moved by `r = eps * g / ||g||` (Goodfellow et al. 2015 on images; Miyato et al. 2016 on the
        embedded words of a text classifier): `g (batch, time, embedding_dim)` is the gradient of
        the review's loss, a first-order guess at the worst move of length `eps` (`adversarial`
        times the embedding's standard deviation, as Miyato et al. normalise the embedding to unit
        variance). `r` is a constant: the training gradient flows through the perturbed loss only."""
        labels = ops.cast(labels, "float32")
        mask = ops.not_equal(ids, 0)
        embedded = self.embedding(ids)  # (batch, time, embedding_dim)

        def losses(points, training):  # (batch,): one cross-entropy per review
            logits = ops.cast(self.call_embedded(points, mask, training=training), "float32")
            return keras.losses.binary_crossentropy(labels, logits, from_logits=True)

        def clean_loss(points):  # each review's loss depends on its own row only: one gradient for all
            return ops.sum(losses(points, training=False))

        gradient = ops.stop_gradient(layers.value_and_grad(clean_loss, ops.stop_gradient(embedded))[1][0])
        gradient = ops.cast(gradient, "float32")
        norm = ops.sqrt(ops.sum(ops.square(gradient), axis=(1, 2), keepdims=True))  # (batch, 1, 1)
        size = self.config.adversarial * ops.stop_gradient(ops.std(ops.cast(self.embedding.embeddings, "float32")))
        perturbation = ops.cast(size * gradient / (norm + 1e-12), embedded.dtype)
        return ops.mean(losses(embedded + perturbation, training=True))
