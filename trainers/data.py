"""Corpora: download through the Keras cache, parse, deduplicate and split deterministically.

Each corpus is one `Corpus` entry (canonical origin, checksum, the file inside the archive) and one
small parser, so the IMDB and Shakespeare loaders slot in beside `load_spa_eng`. On a machine with
internet `keras.utils.get_file` downloads the archive on first use; offline it finds the copy in
`$KERAS_HOME/datasets` (see docs/DATA.md).
"""

import collections.abc
import dataclasses
import hashlib
import os

import numpy as np

from runtime.text import normalize


@dataclasses.dataclass(frozen=True)
class Corpus:
    """Where a corpus comes from: the archive name, its canonical origin, its sha256 (or `None`
    where only a repacked copy exists) and the path of the data file inside the extracted folder."""

    fname: str
    origin: str
    sha256: str | None
    member: str
    extract: bool = True


CORPORA = {
    "spa-eng": Corpus(
        fname="spa-eng.zip",
        origin="http://storage.googleapis.com/download.tensorflow.org/data/spa-eng.zip",
        sha256="0c4fd7825d3d872488d38c157f784e035edab4f2ff0df25a2a208790ecb5b58f",
        member="spa-eng/spa.txt",
    ),
}


def corpus_file(name):
    """Local path of the data file of corpus `name`, downloading the archive if it is not cached.

    `keras.utils.get_file(..., extract=True)` extracts the archive again on every call: 100,000
    IMDB files rewritten each time a trainer starts, under the feet of any other process reading
    them (two test workers, a trainer and a test). Here one process at a time fetches and extracts
    (a lock file in the cache), and a marker written after a complete extraction, naming the
    archive's size and time, lets later calls skip both.

    Raises:
        RuntimeError: with a one-line explanation when the archive is neither cached nor reachable.
    """
    import keras  # imported here: data.py must not fix the backend for callers that only parse

    corpus = CORPORA[name]
    cache = _keras_cache()
    with _cache_lock(cache, corpus.fname):
        extracted = _extracted_folder(cache, corpus) if corpus.extract else None
        if extracted is None:
            try:
                path = keras.utils.get_file(corpus.fname, corpus.origin, file_hash=corpus.sha256,
                                            extract=corpus.extract, cache_dir=_keras_home())
            except Exception as error:  # noqa: BLE001 - any download failure gets the same advice
                raise RuntimeError(
                    f"could not get {corpus.fname} from {corpus.origin} ({type(error).__name__}); offline, "
                    f"copy it into {cache}/ first"
                ) from None
            if not corpus.extract:
                return path
            extracted = path
            _write_marker(os.path.join(os.path.dirname(path), corpus.fname), extracted)
    return os.path.join(extracted, corpus.member)


_MARKER = ".rnn-suite-extracted"


def _keras_home():
    """`$KERAS_HOME` (default `~/.keras`), read at each call (Keras reads it once, at import)."""
    return os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")


def _keras_cache():
    """`<_keras_home()>/datasets`: the folder given to `keras.utils.get_file`."""
    return os.path.join(_keras_home(), "datasets")


def _archive_stamp(archive):
    status = os.stat(archive)
    return f"{status.st_size} {int(status.st_mtime)}"


def _extracted_folder(cache, corpus):
    """Keras' extraction folder of `corpus` if our marker says it holds a complete extraction of
    the archive as it is now, else `None`."""
    archive = os.path.join(cache, corpus.fname)
    folder = os.path.join(cache, corpus.fname.split(".")[0] + "_extracted")  # get_file's name for it
    try:
        with open(os.path.join(folder, _MARKER), encoding="utf-8") as handle:
            return folder if handle.read().strip() == _archive_stamp(archive) else None
    except OSError:
        return None


def _write_marker(archive, folder):
    try:
        with open(os.path.join(folder, _MARKER), "w", encoding="utf-8") as handle:
            handle.write(_archive_stamp(archive))
    except OSError:  # a read-only cache: the next call extracts again, as Keras alone would
        pass


class _cache_lock:
    """An exclusive lock on `<cache>/.<fname>.lock` for the `with` block (POSIX `flock`; where
    there is none, or the cache is not writable, no lock)."""

    def __init__(self, cache, fname):
        self.path, self.handle = os.path.join(cache, f".{fname}.lock"), None

    def __enter__(self):
        try:
            import fcntl

            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            self.handle = open(self.path, "a")
            fcntl.flock(self.handle, fcntl.LOCK_EX)
        except (ImportError, OSError):
            self.handle = None
        return self

    def __exit__(self, *exc):
        if self.handle is not None:
            self.handle.close()  # releases the lock


def file_sha256(path):
    """Hex sha256 of a file (recorded in model cards)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_pairs(path, columns=2):
    """Tab-separated sentence pairs, normalised (NFC, invisible characters dropped, whitespace
    collapsed; accents, case and inverted marks kept). Lines with an empty side are skipped."""
    pairs = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            fields = line.rstrip("\n").split("\t")
            if len(fields) < columns:
                continue
            pair = tuple(normalize(field) for field in fields[:columns])
            if all(pair):
                pairs.append(pair)
    return pairs


def load_spa_eng():
    """The 118,964 (English, Spanish) pairs of `spa-eng.zip`, normalised, in file order.

    Returns:
        `(pairs, info)`: a list of `(english, spanish)` strings and `{"file", "sha256", "origin"}`.
    """
    path = corpus_file("spa-eng")
    info = {"file": "spa-eng.zip:" + CORPORA["spa-eng"].member, "origin": CORPORA["spa-eng"].origin,
            "sha256": CORPORA["spa-eng"].sha256, "member_sha256": file_sha256(path)}
    return read_pairs(path), info


def drop_duplicates(items, key=None):
    """Items without repeats (equal `key(item)`, default the item itself), first occurrence kept,
    order preserved."""
    seen, kept = set(), []
    for item in items:
        k = item if key is None else key(item)
        if k not in seen:
            seen.add(k)
            kept.append(item)
    return kept


def split_by_key(items, key, fractions, seed):
    """Split `items` into `len(fractions) + 1` parts so that all items with the same `key(item)`
    land in the same part (for translation: one source sentence is never both in training and in
    validation or test). The groups are shuffled with `seed`; part i > 0 gets `fractions[i - 1]`
    of the groups, part 0 (training) the rest.

    Returns:
        A list of lists of items, each in the original order.
    """
    keys = list(dict.fromkeys(key(item) for item in items))  # unique, in first-seen order
    rank = np.empty(len(keys), dtype=np.int64)
    rank[np.random.default_rng(seed).permutation(len(keys))] = np.arange(len(keys))
    bounds = np.cumsum([int(round(f * len(keys))) for f in fractions])
    # rank < bounds[0] -> part 1, bounds[0] <= rank < bounds[1] -> part 2, ..., the rest -> part 0
    part = (np.searchsorted(bounds, rank, side="right") + 1) % (len(fractions) + 1)
    part_of_key = dict(zip(keys, part.tolist()))
    parts = [[] for _ in range(len(fractions) + 1)]
    for item in items:
        parts[part_of_key[key(item)]].append(item)
    return parts


# --- IMDB reviews ------------------------------------------------------------------------------

CORPORA["imdb"] = Corpus(
    fname="aclImdb_v1.tar.gz",
    origin="https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz",
    sha256=None,  # shared/data holds a faithful repack whose hash differs from the original's
    member="aclImdb",
)
IMDB_TFDS_URL = "http://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"


def load_imdb(source="keras", unlabelled=False, max_unlabelled=None):
    """The Large Movie Review Dataset: official train and test splits of labelled reviews.

    Args:
        source: `"keras"` reads the extracted archive from the Keras cache (downloading it if
            needed); `"tfds"` reads TensorFlow Datasets' `imdb_reviews`, prepared offline from the
            same archive when it is not prepared yet.
        unlabelled: also read the 50,000 unlabelled reviews (`train/unsup`, TFDS' `unsupervised`
            split) into `"unlabelled"`, a list of texts; the first `max_unlabelled` of them when
            given (in file-name order; TFDS' order for tfds).

    Returns:
        dict with `"train"` and `"test"`: `(texts, labels)` (texts a `TextFiles` sequence read
        as indexed, labels 1 positive, 0 negative, in a fixed order: negatives then positives,
        files sorted by name), `"films"` (keras source
        only: `{"train": [...], "test": [...]}`, the IMDB title id of each review's film, from the
        archive's urls_*.txt) and `"info"` for the card.
    """
    if source == "tfds":
        return _load_imdb_tfds(unlabelled, max_unlabelled)
    root = corpus_file("imdb")
    splits, films = {}, {}
    for split in ("train", "test"):
        paths, labels, titles = [], [], []
        for label, folder in ((0, "neg"), (1, "pos")):
            # urls_<folder>.txt: line i is the IMDB page of the film that review i (file i_<stars>.txt) is about
            with open(os.path.join(root, split, f"urls_{folder}.txt"), encoding="utf-8") as handle:
                urls = handle.read().split()
            names = sorted(os.listdir(os.path.join(root, split, folder)))
            paths += [os.path.join(root, split, folder, name) for name in names]
            labels += [label] * len(names)
            titles += [urls[int(name.split("_")[0])].split("/title/")[-1].split("/")[0] for name in names]
        splits[split] = (TextFiles(paths), np.asarray(labels, dtype="int32"))
        films[split] = titles
    if unlabelled:
        unsup = os.path.join(root, "train", "unsup")
        names = sorted(os.listdir(unsup))[:max_unlabelled]
        splits["unlabelled"] = list(TextFiles(os.path.join(unsup, name) for name in names))
    info = {"source": "keras", "origin": CORPORA["imdb"].origin, "file": CORPORA["imdb"].fname}
    return {**splits, "films": films, "info": info}


class TextFiles(collections.abc.Sequence):
    """The texts of a list of UTF-8 files, each read when it is indexed: a seeded subset of 300
    reviews (`--max-examples`) reads 300 of the 25,000 files, not all of them."""

    def __init__(self, paths):
        self.paths = list(paths)

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        with open(self.paths[index], encoding="utf-8") as handle:
            return handle.read()


def _load_imdb_tfds(unlabelled=False, max_unlabelled=None):
    """`imdb_reviews` from TFDS, prepared offline from the Keras cache when needed. The shared
    copy of the archive is a repack (see docs/DATA.md), so TFDS is told its checksum."""
    import tensorflow_datasets as tfds

    builder = tfds_builder("imdb_reviews", "imdb", CORPORA["imdb"].fname, replace_checksum_of=IMDB_TFDS_URL)
    splits = {}
    wanted = {"train": "train", "test": "test"}
    if unlabelled:
        wanted["unlabelled"] = "unsupervised" + (f"[:{max_unlabelled}]" if max_unlabelled else "")
    for name, split in wanted.items():
        batch = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
        texts = [t.decode("utf-8") for t in batch["text"]]
        splits[name] = (texts, np.asarray(batch["label"], dtype="int32"))
    if unlabelled:
        splits["unlabelled"] = splits["unlabelled"][0]
    return {**splits, "info": {"source": "tfds imdb_reviews", "data_dir": builder.data_dir, "origin": IMDB_TFDS_URL}}


def tfds_builder(name, corpus, manual_name, replace_checksum_of=None):
    """A prepared TFDS builder for dataset `name`.

    Offline, TFDS looks for its download in `<data_dir>/downloads/manual/<manual_name>`: the Keras
    cache's copy of `corpus` is linked there (downloaded first if needed). `replace_checksum_of`
    names a URL whose expected checksum is replaced by the local file's, in this process only
    (the installed package is untouched). `data_dir` is `$TFDS_DATA_DIR` or
    `$KERAS_HOME/tensorflow_datasets`.
    """
    import keras
    import tensorflow_datasets as tfds
    from tensorflow_datasets.core.download import checksums

    data_dir = os.environ.get("TFDS_DATA_DIR") or os.path.join(_keras_home(), "tensorflow_datasets")
    builder = tfds.builder(name, data_dir=data_dir)
    if not builder.is_prepared():
        manual = os.path.join(data_dir, "downloads", "manual")
        os.makedirs(manual, exist_ok=True)
        target = os.path.join(manual, manual_name)
        if not os.path.exists(target):
            os.symlink(keras.utils.get_file(CORPORA[corpus].fname, CORPORA[corpus].origin,
                                            cache_dir=_keras_home()), target)
        if replace_checksum_of:
            local = checksums.compute_url_info(target)
            infos = dict(type(builder).url_infos or {})
            infos[replace_checksum_of] = checksums.UrlInfo(size=local.size, checksum=local.checksum,
                                                           filename=manual_name)
            type(builder).url_infos = infos
        builder.download_and_prepare()
    return builder


def subset(texts, labels, size, seed):
    """A seeded random subset of at most `size` examples, in their original order."""
    if size >= len(texts):
        return texts, labels
    keep = np.sort(np.random.default_rng(seed).choice(len(texts), size, replace=False))
    return [texts[i] for i in keep], np.asarray(labels)[keep]


def holdout(texts, labels, fraction, seed, groups=None):
    """Split off a seeded random `fraction` (validation) from training examples. With `groups`
    (a key per example, such as the film a review is about), a `fraction` of the groups is held
    out whole, so no group is on both sides.

    Returns:
        `((train_texts, train_labels), (held_texts, held_labels))`.
    """
    if groups is None:
        order = np.random.default_rng(seed).permutation(len(texts))
        cut = int(round(fraction * len(texts)))
        held, kept = np.sort(order[:cut]), np.sort(order[cut:])
    else:
        kept, held = split_by_key(range(len(texts)), lambda i: groups[i], [fraction], seed)
    labels = np.asarray(labels)
    return ([texts[i] for i in kept], labels[kept]), ([texts[i] for i in held], labels[held])


# --- Tiny Shakespeare ---------------------------------------------------------------------------

CORPORA["shakespeare"] = Corpus(
    fname="shakespeare.txt",
    origin="https://storage.googleapis.com/download.tensorflow.org/data/shakespeare.txt",
    sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
    member="",
    extract=False,
)
SHAKESPEARE_TRAIN_FRACTION = 0.9  # first 90% train, last 10% validation (nanoGPT's shakespeare_char split)


def load_shakespeare(source="keras"):
    """Tiny Shakespeare (1,115,394 characters): `{"train", "validation", "info"}`, the first 90%
    of the text and the last 10%.

    Args:
        source: `"keras"` reads `shakespeare.txt` through the Keras cache; `"tfds"` reads TensorFlow
            Datasets' `tiny_shakespeare` (whose 90/5/5 split has the same first 90%; its
            validation and test parts together are our validation text).
    """
    if source == "tfds":
        import tensorflow_datasets as tfds

        builder = tfds_builder("tiny_shakespeare", "shakespeare", "input.txt")
        parts = {split: tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))["text"][0].decode("utf-8")
                 for split in ("train", "validation", "test")}
        return {"train": parts["train"], "validation": parts["validation"] + parts["test"],
                "info": {"source": "tfds tiny_shakespeare", "data_dir": builder.data_dir}}
    path = corpus_file("shakespeare")
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    cut = int(len(text) * SHAKESPEARE_TRAIN_FRACTION)
    corpus = CORPORA["shakespeare"]
    info = {"source": "keras", "file": corpus.fname, "origin": corpus.origin, "sha256": file_sha256(path)}
    return {"train": text[:cut], "validation": text[cut:], "info": info}
