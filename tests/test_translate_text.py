"""Text handling of the translator: normalisation keeps what the user sees, tokens go back to
normal text, casing is restored, vocabularies are deterministic. No Keras model involved."""

import pytest
import sacrebleu

from runtime.text import RESERVED, TrueCaser, Vocabulary, detokenize, normalize, split_words, tokenize
from trainers import data


@pytest.mark.parametrize(
    "text, tokens",
    [
        ("¿Dónde está Tom?", ["¿", "Dónde", "está", "Tom", "?"]),
        ("¡Hola, señor!", ["¡", "Hola", ",", "señor", "!"]),
        ("I don't know, it's 3.5 km.", ["I", "don't", "know", ",", "it's", "3.5", "km", "."]),
        ('He said "hi" to me.', ["He", "said", '"', "hi", '"', "to", "me", "."]),
        ("A well-known fact, 24/7!", ["A", "well", "-", "known", "fact", ",", "24", "/", "7", "!"]),
        ("It costs $5 (or 10%).", ["It", "costs", "$", "5", "(", "or", "10", "%", ")", "."]),
        ("«Ya voy», dijo.", ["«", "Ya", "voy", "»", ",", "dijo", "."]),
        ("At 2 p.m. in L.A.", ["At", "2", "p.m.", "in", "L.A."]),
    ],
)
def test_split_and_detokenize_round_trip(text, tokens):
    assert split_words(text) == tokens
    assert detokenize(tokens) == text


def test_normalize_keeps_accents_and_marks_and_drops_invisible_characters():
    assert normalize("  ¿Qué\u200b  tal?\t") == "¿Qué tal?"
    assert normalize("cafe\u0301") == "café"  # NFC: one code point
    assert tokenize("Él dijo: ¡NO!") == ["él", "dijo", ":", "¡", "no", "!"]
    assert split_words("I don\u2019t") == ["I", "don't"]


def test_vocabulary_reserved_ids_unknowns_and_determinism():
    vocab = Vocabulary.build([["b", "a", "b"], ["c", "a"], ["d"]], max_size=6)
    assert vocab.tokens == list(RESERVED) + ["a", "b"]  # ties broken alphabetically
    assert vocab.encode(["a", "zzz"]) == [4, Vocabulary.unk_id]
    assert vocab.decode([4, 0, 5, Vocabulary.end_id, 4]) == ["a", "b"]
    assert Vocabulary.from_json(vocab.to_json()).tokens == vocab.tokens
    assert len(Vocabulary.build([["a", "a", "b"]], min_count=2)) == 5
    with pytest.raises(ValueError, match="reserved"):
        Vocabulary(["a", "b"])


def test_truecaser_learns_from_inner_positions_and_capitalises_the_first_word():
    casing = TrueCaser.build(["Tom is here.", "I like Tom.", "Where is Mary?", "Mary said I can go.", "Go now."])
    assert casing.forms == {"i": "I", "mary": "Mary", "tom": "Tom"}  # "go" only starts sentences
    assert casing(tokenize("tom and i saw mary.")) == ["Tom", "and", "I", "saw", "Mary", "."]
    assert casing(["¿", "dónde", "?"]) == ["¿", "Dónde", "?"]
    assert TrueCaser.from_json(casing.to_json()).forms == casing.forms


def test_detokenised_references_score_bleu_100_against_themselves():
    """The model's text round trip (lowercase tokens, cased back, joined) loses little BLEU."""
    try:
        path = data.corpus_file("spa-eng")
    except RuntimeError as error:
        pytest.skip(str(error))
    english = [e for e, _ in data.read_pairs(path)[::40]]  # about 3,000 sentences
    casing = TrueCaser.build(english)
    exact = [detokenize(split_words(s)) for s in english]
    assert sacrebleu.corpus_bleu(exact, [english]).score > 99.5
    recased = [detokenize(casing(tokenize(s))) for s in english]
    assert sacrebleu.corpus_bleu(recased, [english]).score > 97.0
