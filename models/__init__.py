"""One module per task: the Keras model, its tokenizer/vocabulary and inference, plus save/load.

- `models.translator`: `Seq2SeqAttention`, greedy and beam-search decoding, `Translator`.
- `models.text`: normalisation, tokenisation, `Vocabulary`, `TrueCaser`, `detokenize`.
- `models.artifacts`: saved-model folders (`model.keras`, JSON side files, `card.json`).
"""
