"""Subword vocabularies: SentencePiece (unigram) pieces of words, so that a word never seen in
training is still read and written piece by piece (`ciclista` -> `▁cicl ista`) instead of
becoming `[UNK]`.

The pieces of a word come from a SentencePiece model: here through the `sentencepiece` library
(`SubwordVocabulary`, Keras-free, what the ONNX runtime uses), in `models.subwords` through
keras_hub's `SentencePieceTokenizer` (what training and the Keras models use); the two give the
same ids (tested). The rest, below, is shared.

The translator keeps working in words: its text pipeline (`runtime.text`: normalisation, words,
lowercasing, casing, detokenising) is unchanged, and each word is cut into pieces only on its way
into and out of the network. `encode_words` says which word each piece belongs to, and
`decode_words` which pieces make each output word, so attention over pieces is merged back into
attention over words (`runtime.translation`). `Vocabulary` (whole words) has the same two methods,
so a translator of either kind serves the same way.

The piece model is learnt by `trainers.subwords` on the training split only; a saved folder holds
it base64-encoded in `source_vocab.json` / `target_vocab.json`. Ids 0-3 are `[PAD]`, `[UNK]`,
`[START]`, `[END]`, as in `Vocabulary`.
"""

import base64

from runtime.text import Vocabulary

WORD_START = "\u2581"  # "▁": SentencePiece's mark of a piece that begins a word


class SubwordVocabulary:
    """SentencePiece pieces of words.

    Args:
        proto: the serialised SentencePiece model (bytes), with ids 0-3 reserved as above.
    """

    KIND = "sentencepiece"
    pad_id, unk_id, start_id, end_id = Vocabulary.pad_id, Vocabulary.unk_id, Vocabulary.start_id, Vocabulary.end_id

    def __init__(self, proto):
        self.proto = bytes(proto)
        self.tokens = self._load(self.proto)
        if self.tokens[: len(RESERVED_PIECES)] != list(RESERVED_PIECES):
            raise ValueError(f"the piece model must reserve ids 0-3 for {list(RESERVED_PIECES)}, "
                             f"got {self.tokens[:4]}")
        self._pieces_of = {}  # word -> piece ids: each distinct word is cut once

    def __len__(self):
        return len(self.tokens)

    def pieces(self, word):
        """The piece ids of one (lowercased) word, the first one marked as a word start (either
        `▁x...` or a lone `▁`); characters the model never saw are `[UNK]`."""
        ids = self._pieces_of.get(word)
        if ids is None:
            ids = [int(i) for i in self._cut(word)] or [self.unk_id]
            self._pieces_of[word] = ids
        return ids

    def _load(self, proto):
        """Make the piece model of `proto`; return its pieces in id order."""
        import sentencepiece

        self.processor = sentencepiece.SentencePieceProcessor(model_proto=proto)
        return [self.processor.id_to_piece(i) for i in range(self.processor.get_piece_size())]

    def _cut(self, word):
        """The piece ids of one word."""
        return self.processor.encode(word)

    def encode_words(self, words):
        """`(ids, owners)`: the piece ids of `words`, and for each piece the index of its word."""
        ids, owners = [], []
        for index, word in enumerate(words):
            pieces = self.pieces(word)
            ids += pieces
            owners += [index] * len(pieces)
        return ids, owners

    def encode(self, words):
        """The piece ids of `words` (as `Vocabulary.encode`)."""
        return self.encode_words(words)[0]

    def decode_words(self, ids):
        """`(words, owners)`: output piece ids joined into words (a piece with the word-start mark
        begins a word), and for each piece the index of its word. A word with an `[UNK]` piece is
        `[UNK]` as a whole, which the translator replaces by a source word. (Every character of
        the training targets is a piece, so a trained model writes `[UNK]` seldom if ever.)"""
        unknown = self.tokens[self.unk_id]
        words, owners = [], []
        for i in ids:
            token = self.tokens[int(i)]
            if int(i) == self.unk_id:
                if words:
                    words[-1] = unknown
                else:
                    words.append(unknown)
            elif token.startswith(WORD_START) or not words:
                words.append(token.removeprefix(WORD_START))
            elif words[-1] != unknown:
                words[-1] += token
            owners.append(len(words) - 1)
        # A word-start piece with nothing after it makes no word: it joins the word before (owner
        # -1 if there is none).
        kept = [j for j, word in enumerate(words) if word]
        if len(kept) < len(words):
            new_index = {old: new for new, old in enumerate(kept)}
            owners = [new_index.get(o, max([new_index[k] for k in kept if k < o], default=-1)) for o in owners]
            words = [words[j] for j in kept]
        return words, owners

    def to_json(self):
        return {"kind": self.KIND, "size": len(self), "proto": base64.b64encode(self.proto).decode("ascii")}

    @classmethod
    def from_json(cls, data):
        return cls(base64.b64decode(data["proto"]))


RESERVED_PIECES = ("[PAD]", "[UNK]", "[START]", "[END]")


def vocabulary_from_json(data, subwords=SubwordVocabulary):
    """A `subwords` vocabulary or a word `Vocabulary`, whichever the JSON of `to_json` holds."""
    if isinstance(data, dict) and data.get("kind") == SubwordVocabulary.KIND:
        return subwords.from_json(data)
    return Vocabulary.from_json(data)
