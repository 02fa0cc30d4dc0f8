"""`python -m trainers.pretrain`: pretrain the sentiment encoder as forward and backward language
models of the IMDB reviews (`models.review_lm.ReviewLM`), on the training split's reviews and the
50,000 unlabelled ones; the held-out validation films' reviews measure it.

    python -m trainers.pretrain                  # -> saved_models/sentiment-lm, 83 min (--resume continues)

The vocabulary is the sentiment trainer's (the same split, `--vocab` and `--min-films`), saved
beside the model, so that `trainers.sentiment` can start its encoder from this one.
"""

from trainers import cli  # noqa: I001 - first: sets environment variables read when Keras/TensorFlow load

import dataclasses

from models import artifacts
from models.config import setting
from models.review_lm import ReviewLM, ReviewLMConfig
from runtime.text import review_tokens, truncate
from trainers import cluster, sentiment
from trainers.batching import LengthBatches, pad
from trainers.training import TrainingRun, data_parallel_setting, precision_setting, training_setting


@dataclasses.dataclass
class PretrainConfig(ReviewLMConfig):
    """Every setting of a pretraining run: the network's (`ReviewLMConfig`), then these. 128 units:
    validation 4.2307 nats per word after 2 epochs against 4.4403 with 64 (benchmarks/RESULTS.md)."""

    units: int = setting(128, "recurrent units of each direction (the classifier then has as many)", quick=16)

    source: str = setting("keras", "corpus reader (the aclImdb archive through the Keras cache; its unlabelled "
                                    "reviews are what this learns from)", choices=("keras",))
    vocab: int = setting(20000, "most frequent training words kept (as trainers.sentiment)", quick=5000)
    min_films: int = setting(5, "keep only words used in reviews of at least this many films (as trainers.sentiment)",
                             quick=1)
    embedding_init: str = setting("ppmi", "start the embedding from word vectors of the same reviews (as "
                                          "trainers.sentiment) or at random", choices=("ppmi", "random"))
    max_length: int = setting(400, "words read per review (a longer one keeps its beginning and end)", quick=200)
    epochs: int = training_setting("epochs", 2)
    batch_size: int = training_setting("batch_size", 64)
    learning_rate: float = training_setting("learning_rate", 2e-3)
    clipnorm: float = training_setting("clipnorm", 1.0)
    patience: int = training_setting("patience", 2)
    seed: int = training_setting("seed", 1337)
    max_examples: int | None = training_setting("max_examples", None, quick=2000, shown="all")
    precision: str = precision_setting()
    data_parallel: bool = data_parallel_setting()


class PretrainedEncoder:
    """What the run saves: the language model with the vocabulary it reads."""

    def __init__(self, model, vocabulary):
        self.model, self.vocabulary = model, vocabulary

    def save(self, directory, card=None):
        return artifacts.save(directory, self.model, {"vocabulary.json": self.vocabulary.to_json()}, card)


def build_parser():
    p = cli.config_parser(PretrainConfig, "python -m trainers.pretrain", __doc__.split("\n\n")[0],
                          "saved_models/sentiment-lm")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its last epoch checkpoint")
    cluster.add_flags(p)
    return p


def review_batches(vocabulary, token_lists, config, shuffle):
    """`LengthBatches` of `(ids, ids)`: the model's loss reads its targets from the ids."""
    rows = [truncate(vocabulary.encode(tokens), config.max_length) for tokens in token_lists]
    rows = [row for row in rows if len(row) > 1]

    def make_batch(indices):
        ids = pad([rows[i] for i in indices], multiple=sentiment.PAD_MULTIPLE)
        return ids, ids

    return LengthBatches([len(r) for r in rows], make_batch, config.batch_size, config.seed, shuffle)


def build_model(config, vectors=None):
    """A built `ReviewLM`, its embedding started from `vectors` `(vocab, embedding_dim)` if given."""
    model = ReviewLM(config)
    model.build()
    if vectors is not None:
        model.embedding.embeddings.assign(vectors)
    return model


def train(config, args):
    run = TrainingRun(config, args.out, args.resume, cluster.from_args(args))  # first: the multi-process engine
    splits, corpus = sentiment.load_splits(sentiment.SentimentConfig(
        source=config.source, vocab=config.vocab, min_films=config.min_films, seed=config.seed,
        max_examples=config.max_examples))
    train_tokens = [review_tokens(t) for t in splits["train"][0]]
    vocabulary = sentiment.build_vocabulary(train_tokens, splits["train"][2], config.vocab, config.min_films)
    config = dataclasses.replace(config, vocab_size=len(vocabulary))
    unlabelled = [review_tokens(t) for t in corpus.get("unlabelled", [])]
    train_data = review_batches(vocabulary, train_tokens + unlabelled, config, True)
    val_data = review_batches(vocabulary, [review_tokens(t) for t in splits["validation"][0]], config, False)
    print(f"{len(train_tokens)} training and {len(unlabelled)} unlabelled reviews; vocabulary {len(vocabulary)} words, "
          f"{config.head_words} output classes; {len(train_data)} batches of {config.batch_size}")
    vectors, vector_seconds = sentiment.initial_embedding(config, vocabulary, train_tokens + unlabelled)
    model = run.fit(lambda: build_model(config, vectors), train_data, val_data, loss=None)
    run.save(PretrainedEncoder(model, vocabulary), run.card(
        model, task="review language model (pretrains trainers.sentiment's encoder)",
        corpus={"training reviews": len(train_tokens), "unlabelled reviews": len(unlabelled),
                "validation reviews": len(splits["validation"][0])}, vocabulary=len(vocabulary),
        embedding_init=({"method": sentiment.word_vectors.METHOD, "seconds": round(vector_seconds, 1)}
                        if vectors is not None else "random")))
    return 0


def main(argv=None):
    args = cli.output_folders(build_parser().parse_args(argv), "sentiment-lm")
    return train(cli.config_from_args(PretrainConfig, args), args)


if __name__ == "__main__":
    cli.run(main)
