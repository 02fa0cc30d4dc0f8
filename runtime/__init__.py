"""Serving without Keras: NumPy, ONNX Runtime and SentencePiece only (importing it imports no Keras,
TensorFlow, JAX or PyTorch).

    import runtime
    translator = runtime.load("exports/translate-spa-eng")    # made by python -m trainers.export
    print(translator("¿Dónde está la estación de tren?").text)

`runtime.load(folder, int8=False)` gives the servable of an export folder: an `OnnxTranslator`,
`OnnxClassifier` or `OnnxGenerator` (`runtime.onnx`), with the Python API of `models.Translator`,
`models.SentimentClassifier` and `models.CharGenerator`.

The package is also the Keras-free base that `models/` builds on, so that both read text, search
and sample with the same code:
- `runtime.text`: normalisation, words, vocabularies, casing, detokenising, review text, checks.
- `runtime.subwords`: SentencePiece pieces of words (`sentencepiece`; `models.subwords` serves the
  same pieces through keras_hub).
- `runtime.search`: greedy decoding and beam search over any decoder.
- `runtime.translation`, `runtime.classification`, `runtime.sampling`: text in and text out of each
  task over any model (`TextTranslator`, `TextClassifier`, `TextGenerator`).
- `runtime.files`: JSON side files and `ArtifactError`.
"""


def load(directory, int8=False, threads=None):
    """The servable of an export folder (`runtime.onnx.load`)."""
    from runtime.onnx import load as load_export

    return load_export(directory, int8, threads)
