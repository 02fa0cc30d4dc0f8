"""Text to token ids and back, in plain Python (strings never enter a Keras model).

* `normalize`: Unicode NFC, invisible characters removed, whitespace collapsed. Accents, case and
  the Spanish inverted marks stay: this is the text a user sees.
* `split_words`: words, numbers (`3.5`, `10,000`, `2:30`) and single punctuation marks, in their
  original case; `tokenize` lowercases them for the model.
* `Vocabulary`: token <-> id with reserved ids for padding, unknown words, start and end.
* `detokenize` + `TrueCaser`: model tokens back to normal text, so that BLEU is computed on text
  like the references (spacing around punctuation, capital letters restored).
* `check_text`, `text_list`: the argument checks of every text entry point (one-line `TypeError`s),
  and `UnknownTextWarning` for input the model has no vocabulary for.
* Movie reviews (sentiment): `clean_review` (HTML out), `review_words`, `review_tokens`, `truncate`.
* `CharVocabulary`: the characters of the character model.
* `bucket`: padded lengths, so that compiled calls see few distinct shapes.

Everything but the review helpers is task-neutral. Keras-free: the Keras models (`models/`) and the
ONNX runtime (`runtime.onnx`) read text the same way.
"""

import collections
import html
import re
import unicodedata

import numpy as np

from runtime.files import ArtifactError

PAD, UNK, START, END = "", "[UNK]", "[START]", "[END]"
RESERVED = (PAD, UNK, START, END)  # ids 0, 1, 2, 3

# Abbreviations ("p.m.", "L.A.") and numbers with inner separators ("3.5", "10,000", "2:30") first,
# then words with inner apostrophes ("don't", "Tom's": one token, as sacrebleu's 13a tokenizer keeps
# them), then any other single non-space character.
_TOKEN = re.compile(r"(?:[^\W\d_]\.){2,}|\d+(?:[.,:]\d+)+|\w+(?:'\w+)*|[^\w\s]")
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'"})
_NO_SPACE_BEFORE = set(".,;:!?)]}%»…'")
_NO_SPACE_AFTER = set("¿¡([{«$")
_JOINERS = set("-/")  # "well-known", "24/7": no space on either side


class UnknownTextWarning(UserWarning):
    """The input is (partly) outside the model's vocabulary: no word it knows, or characters
    skipped. The output is still computed, but is a guess rather than a reading of the input."""


def check_text(text, what="the text"):
    """`text` itself if it is a `str`; anything else (None, a number, a list, bytes) raises a
    one-line `TypeError` naming `what`, rather than being translated or scored as its printed form."""
    if not isinstance(text, str):
        raise TypeError(f"{what} must be a string (text), got {type(text).__name__}")
    return text


def text_list(texts, what, one):
    """`texts`, an iterable of strings, as a list. A single string is refused (it would be read as
    one text per character), as are a non-iterable and an item that is not a string, each with a
    one-line `TypeError`. `what` names one item (`"review"`); `one` says how to pass a single one."""
    if isinstance(texts, (str, bytes)):
        raise TypeError(f"expected a list of {what}s, got a single string; for one {what} use {one}")
    try:
        texts = list(texts)
    except TypeError:
        raise TypeError(f"expected a list of {what}s, got {type(texts).__name__}") from None
    for i, text in enumerate(texts):
        check_text(text, f"{what} {i}")
    return texts


def normalize(text):
    """NFC, zero-width and control characters removed, runs of whitespace -> one space."""
    text = unicodedata.normalize("NFC", str(text))
    text = "".join(ch for ch in text if unicodedata.category(ch) not in ("Cf", "Cc") or ch in "\t\n")
    return " ".join(text.split())


def split_words(text):
    """Tokens of `normalize(text)` in their original case, e.g. `'¿Dónde está Tom?'` ->
    `['¿', 'Dónde', 'está', 'Tom', '?']`. Curly apostrophes become straight ones."""
    return _TOKEN.findall(normalize(text).translate(_APOSTROPHES))


def tokenize(text):
    """Lowercased model tokens of `text`."""
    return [token.lower() for token in split_words(text)]


class Vocabulary:
    """Token <-> id mapping; ids 0-3 are padding, `[UNK]`, `[START]` and `[END]`.

    Args:
        tokens: The full token list, reserved tokens first (as `tokens` returns it).
    """

    pad_id, unk_id, start_id, end_id = 0, 1, 2, 3

    def __init__(self, tokens):
        tokens = list(tokens)
        if tuple(tokens[: len(RESERVED)]) != RESERVED:
            raise ValueError(f"A vocabulary must start with the reserved tokens {RESERVED}.")
        self.tokens = tokens
        self.index = {token: i for i, token in enumerate(tokens)}

    @classmethod
    def build(cls, token_lists, max_size=None, min_count=1):
        """Most frequent tokens of an iterable of token lists (the training split only), at most
        `max_size` entries including the 4 reserved ones, each seen at least `min_count` times.
        Ties are broken alphabetically so that the vocabulary is deterministic."""
        counts = collections.Counter(token for tokens in token_lists for token in tokens)
        ranked = sorted((t for t, c in counts.items() if c >= min_count and t not in RESERVED),
                        key=lambda t: (-counts[t], t))
        if max_size is not None:
            ranked = ranked[: max(0, max_size - len(RESERVED))]
        return cls(list(RESERVED) + ranked)

    def __len__(self):
        return len(self.tokens)

    def encode(self, tokens):
        """List of ids; unknown tokens map to `unk_id`."""
        return [self.index.get(token, self.unk_id) for token in tokens]

    def encode_words(self, words):
        """`(ids, owners)`: one id per word, each its own owner (the interface of
        `models.subwords.SubwordVocabulary`, whose words may take several ids)."""
        return self.encode(words), list(range(len(words)))

    def decode_words(self, ids):
        """`(words, owners)`: one word per id (as `SubwordVocabulary.decode_words`)."""
        return [self.tokens[int(i)] for i in ids], list(range(len(ids)))

    def decode(self, ids):
        """Tokens of `ids`, stopping at the end id and skipping padding and the start id."""
        out = []
        for i in ids:
            i = int(i)
            if i == self.end_id:
                break
            if i not in (self.pad_id, self.start_id):
                out.append(self.tokens[i])
        return out

    def to_json(self):
        return {"tokens": self.tokens}

    @classmethod
    def from_json(cls, data):
        return cls(data["tokens"])


class TrueCaser:
    """Restores case: each word's most frequent cased form in the training targets, counted away
    from the start of a sentence (where every word is capitalised), and a capital first letter.

    Args:
        forms: dict lowercased token -> cased form (only entries that differ are needed).
    """

    def __init__(self, forms=None):
        self.forms = dict(forms or {})

    @classmethod
    def build(cls, sentences):
        """Learn the cased forms from raw target sentences (training split only)."""
        counts = collections.Counter()
        for sentence in sentences:
            words = split_words(sentence)
            first = next((i for i, w in enumerate(words) if w[:1].isalnum()), None)
            counts.update(w for i, w in enumerate(words) if i != first)
        best = {}  # lowercased -> (count, form); ties go to the lowercase-first form for stability
        for form, count in sorted(counts.items()):
            low = form.lower()
            if low not in best or count > best[low][0]:
                best[low] = (count, form)
        return cls({low: form for low, (_, form) in best.items() if form != low})

    def __call__(self, tokens):
        """Cased tokens for lowercased `tokens`, the first word capitalised."""
        cased = [self.forms.get(token, token) for token in tokens]
        for i, token in enumerate(cased):
            if token[:1].isalnum():
                cased[i] = token[:1].upper() + token[1:]
                break
        return cased

    def to_json(self):
        return {"forms": self.forms}

    @classmethod
    def from_json(cls, data):
        return cls(data["forms"])


def detokenize(tokens):
    """Join tokens into normal text: `['¿', 'dónde', 'está', 'tom', '?']` -> `'¿dónde está tom?'`.

    Closing punctuation hugs the word before it, opening marks the word after, hyphens and slashes
    both; straight double quotes alternate between opening and closing.
    """
    text, glue_next, quotes = "", True, 0
    for token in tokens:
        opening_quote = token == '"' and quotes % 2 == 0
        if token == '"':
            quotes += 1
        glue = glue_next or token in _JOINERS or (token in _NO_SPACE_BEFORE) or (token == '"' and not opening_quote)
        text += token if glue else " " + token
        glue_next = token in _NO_SPACE_AFTER or token in _JOINERS or opening_quote
    return text


# --- movie reviews (sentiment) ----------------------------------------------------------------------

_TAG = re.compile(r"<[^>]*>")


def clean_review(text):
    """Review text without HTML: tags (IMDB's `<br />`) become spaces, entities are decoded."""
    return _TAG.sub(" ", html.unescape(str(text)))


def review_words(text):
    """Display words of a review (original case): words, numbers and punctuation marks."""
    return split_words(clean_review(text))


def review_tokens(text):
    """Lowercased model tokens of a review (HTML removed)."""
    return [word.lower() for word in review_words(text)]


def truncate(ids, max_length):
    """At most `max_length` ids: a longer review keeps its beginning and its end (where reviews
    tend to sum up), half each."""
    if len(ids) <= max_length:
        return list(ids)
    head = max_length // 2
    return list(ids[:head]) + list(ids[len(ids) - (max_length - head):])


def bucket(n, multiple=None, smallest=1):
    """`n` rounded up so that a compiled function sees few distinct shapes: to a multiple of
    `multiple`, or without one to a power of two; at least `smallest`. (Padding is masked, so
    the results do not change; only the number of compilations does.)"""
    n = max(n, smallest, 1)
    if multiple:
        return -(-n // multiple) * multiple
    return 1 << (n - 1).bit_length()


class CharVocabulary:
    """The characters of the training text, sorted; id = position. Characters outside it are
    skipped when encoding, and counted."""

    def __init__(self, chars):
        self.chars = list(chars)
        self.index = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def build(cls, text):
        return cls(sorted(set(text)))

    def __len__(self):
        return len(self.chars)

    def encode(self, text):
        """`(ids (n,) int32, unknown)`: ids of the known characters and the number skipped."""
        ids = [self.index.get(c, -1) for c in text]
        known = np.asarray([i for i in ids if i >= 0], dtype="int32")
        return known, len(ids) - len(known)

    def decode(self, ids):
        return "".join(self.chars[int(i)] for i in ids)

    def to_json(self):
        return {"chars": self.chars}

    @classmethod
    def from_json(cls, data):
        if not isinstance(data, dict) or not isinstance(data.get("chars"), list):
            raise ArtifactError("vocabulary.json has no 'chars' list")
        return cls(data["chars"])
