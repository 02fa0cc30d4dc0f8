"""Sentiment of movie reviews: a bidirectional recurrent classifier.

    ids (batch, time) -> Embedding -> word dropout -> Bidirectional(our LSTM or GRU)
      -> masked mean+max pooling -> Dropout -> Dense(1): the logit of "positive"

With `lm_units` > 0 a frozen review language model (`models.review_lm`, pretrained by
`trainers.pretrain`) reads the review in both directions through its own embedding, and its states
join the classifier's embeddings before the word dropout: the encoder reads `(batch, time,
embedding_dim + 2 lm_units)` (ELMo's use of a pretrained bidirectional language model, Peters et
al. 2018, with the model's weights fixed). Its own embedding, not the classifier's: a language
model's word vectors put antonyms side by side (great ~ terrible, awful ~ awesome), the worst
start for a sentiment classifier. `embed(ids)` returns both embeddings side by side, `(batch,
time, 2 embedding_dim)`, so that explanations integrate along both.

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
    lm_units: int = setting(0, "units of each direction of the frozen language model whose states join the "
                                "embeddings (0: none); from the pretrained folder", kind="int", flag=False)
    lm_dropout: float = setting(0.0, "with a language model: dropout on its states, in training", kind="fraction")
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
        if c.lm_units:  # the language model, fixed: fine-tuning would forget what it learnt
            self.lm_embedding = keras.layers.Embedding(c.vocab_size, c.embedding_dim, name="lm_embedding")
            self.lm_forward = rnn(c.lm_units, return_sequences=True, name="lm_forward")
            self.lm_backward = rnn(c.lm_units, return_sequences=True, go_backwards=True, name="lm_backward")
            for layer in (self.lm_embedding, self.lm_forward, self.lm_backward):
                layer.trainable = False
            self.lm_dropout = keras.layers.Dropout(c.lm_dropout, name="lm_dropout")
        self.pooling = layers.MaskedMeanMaxPooling(name="pooling")
        self.word_dropout = keras.layers.Dropout(c.word_dropout, noise_shape=(None, None, 1), name="word_dropout")
        self.dropout = keras.layers.Dropout(c.dropout)
        self.head = keras.layers.Dense(1, name="head", dtype="float32")  # float32 logit under mixed precision

    def build(self, input_shape=(None, None)):
        """Create every weight from the ids' shape `(batch, time)`."""
        batch, time = input_shape[0], input_shape[1]
        c = self.config
        self.embedding.build(input_shape)
        if c.lm_units:
            self.lm_embedding.build(input_shape)
            self.lm_forward.build((batch, time, c.embedding_dim))
            self.lm_backward.build((batch, time, c.embedding_dim))
        self.encoder.build((batch, time, c.embedding_dim + 2 * c.lm_units))
        self.pooling.build((batch, time, 2 * self.config.units))  # no weights; built so that `quantize` runs
        self.head.build((batch, 4 * self.config.units))
        self.built = True

    def call(self, ids, training=False):
        mask = ops.not_equal(ids, 0)  # (batch, time): padding id 0
        return self.call_embedded(self.embed(ids), mask, training=training)

    def embed(self, ids):
        """Word vectors `(batch, time, embedding_dim)` of ids `(batch, time)`, followed by the
        language model's own, `(batch, time, 2 embedding_dim)` in all, if it has one."""
        if not self.config.lm_units:
            return self.embedding(ids)
        return ops.concatenate([self.embedding(ids), ops.cast(self.lm_embedding(ids), self.compute_dtype)], axis=-1)

    def call_embedded(self, embedded, mask, training=False, lm_gradient=None):
        """Logits `(batch, 1)` from `embed`'s vectors `(batch, time, embedding_dim [x 2])` and a
        `(batch, time)` mask. `lm_gradient`: whether gradients flow back through the language
        model's states to its embedding (default: not in training, where it would cost the model's
        backward pass for a fixed embedding; yes outside it, so explanations see every path)."""
        if self.config.lm_units:
            embedded, lm_embedded = ops.split(embedded, 2, axis=-1)
            states = self.language_model_states(lm_embedded, mask)  # (batch, time, 2 lm_units)
            if not (lm_gradient if lm_gradient is not None else not training):
                states = ops.stop_gradient(states)
            states = self.lm_dropout(states, training=training)
            embedded = ops.concatenate([embedded, ops.cast(states, embedded.dtype)], axis=-1)
        embedded = self.word_dropout(embedded, training=training)  # (batch, time, embedding_dim [+ 2 lm_units])
        h = self.encoder(embedded, mask=mask, training=training)  # (batch, time, 2 units)
        pooled = self.dropout(self.pooling(h, mask=mask), training=training)  # (batch, 4 units)
        return self.head(pooled)  # (batch, 1)

    def language_model_states(self, embedded, mask):
        """The frozen language model's forward and backward states `(batch, time, 2 lm_units)`, in
        text order: at position t, what it read up to word t and from the end back to word t."""
        forward = self.lm_forward(embedded, mask=mask, training=False)
        backward = ops.flip(self.lm_backward(embedded, mask=mask, training=False), axis=1)
        return ops.concatenate([forward, backward], axis=-1)

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
        embedded = self.embed(ids)  # (batch, time, embedding_dim [x 2])

        def losses(points, training, lm_gradient=None):  # (batch,): one cross-entropy per review
            logits = ops.cast(self.call_embedded(points, mask, training=training, lm_gradient=lm_gradient), "float32")
            return keras.losses.binary_crossentropy(labels, logits, from_logits=True)

        def clean_loss(points):  # each review's loss depends on its own row only: one gradient for all
            return ops.sum(losses(points, training=False, lm_gradient=False))  # the cheap direction: see call_embedded

        gradient = ops.stop_gradient(layers.value_and_grad(clean_loss, ops.stop_gradient(embedded))[1][0])
        gradient = ops.cast(gradient, "float32")
        norm = ops.sqrt(ops.sum(ops.square(gradient), axis=(1, 2), keepdims=True))  # (batch, 1, 1)
        size = self.config.adversarial * ops.stop_gradient(ops.std(ops.cast(self.embedding.embeddings, "float32")))
        perturbation = ops.cast(size * gradient / (norm + 1e-12), embedded.dtype)
        return ops.mean(losses(embedded + perturbation, training=True))
