"""Serving an export (`python -m trainers.export`) with ONNX Runtime: the same Python API as the
Keras servables in `models/`, with NumPy, ONNX Runtime and (for subword translators)
SentencePiece only.

    import runtime
    translator = runtime.load("exports/translate-spa-eng")        # int8=True: the quantised graphs
    translator.translate(["¿Dónde está la estación?"], beam_width=5)[0].text

- `OnnxTranslator` (`runtime.translation.TextTranslator`): greedy and beam search of
  `runtime.search` over the `encode` and `decode_step` graphs.
- `OnnxClassifier` (`runtime.classification.TextClassifier`): `predict`, `notice`, and `explain`
  (integrated gradients) over the `embed`, `embedded_logits` and `logit_gradients` graphs (an
  export made on TensorFlow has no gradient graph: `explains` is then False).
- `OnnxGenerator` (`runtime.sampling.TextGenerator`): `start`, `stream`, `generate`, and
  `text_loss` (nats per character) over the `run` and `step` graphs.
"""

import os

import numpy as np

from runtime import files
from runtime.classification import TextClassifier
from runtime.sampling import TextGenerator
from runtime.subwords import vocabulary_from_json
from runtime.text import CharVocabulary, TrueCaser, Vocabulary
from runtime.translation import TextTranslator

EXPORT_FILE = "export.json"
FORMAT_VERSION = 1


class Graph:
    """One exported function: an ONNX Runtime session fed and read by position.

    Args:
        path: the `.onnx` file.
        threads: intra-op threads (`None`: ONNX Runtime's default, one per core).
    """

    def __init__(self, path, threads=None):
        import onnxruntime

        if not os.path.isfile(path):
            raise files.ArtifactError(f"{path} is missing: export the model again (python -m trainers.export)")
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only: not the notes on unused initialisers of every load
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        except Exception as error:  # noqa: BLE001 - a damaged file gets a one-line message
            raise files.ArtifactError(f"{path} is not a readable ONNX graph ({str(error).splitlines()[0][:200]}): "
                                      "export the model again") from None
        self.inputs = [i.name for i in self.session.get_inputs()]

    def __call__(self, *arrays):
        return self.session.run(None, dict(zip(self.inputs, arrays)))


class Export:
    """An export folder: its manifest, side files, card and graphs (float32 or `int8`)."""

    def __init__(self, directory, int8=False, threads=None):
        path = os.path.join(directory, EXPORT_FILE)
        if not os.path.isdir(directory) or not os.path.isfile(path):
            raise files.ArtifactError(f"no export at {str(directory)!r} (expected a folder with {EXPORT_FILE}; "
                                      "make one with python -m trainers.export --model saved_models/NAME)")
        self.manifest = files.read_json(path)
        if self.manifest.get("format_version") != FORMAT_VERSION:
            raise files.ArtifactError(f"{path} is of export format {self.manifest.get('format_version')!r}, this "
                                      f"runtime reads {FORMAT_VERSION}: export the model again")
        if not self.manifest.get("onnx"):
            raise files.ArtifactError(f"{directory!r} has no ONNX graphs (a SavedModel-only export): export it again "
                                      "with --format onnx")
        if int8 and not self.manifest.get("int8"):
            raise files.ArtifactError(f"{directory!r} has no int8 graphs: export it again without --no-int8")
        self.task, self.config = self.manifest["task"], self.manifest["config"]
        self.sides = {name: files.read_json(os.path.join(directory, name)) for name in self.manifest["side_files"]}
        card = os.path.join(directory, "card.json")
        self.card = files.read_json(card) if os.path.exists(card) else {}
        folder = os.path.join(directory, "int8") if int8 else directory
        self.graphs = {name: Graph(os.path.join(folder, spec["file"]), threads)
                       for name, spec in self.manifest["endpoints"].items()}

    def state_shapes(self, endpoint):
        """The `(units,)` of each state input of `endpoint` (its inputs named `state_i`)."""
        return [spec["shape"][1:] for spec in self.manifest["endpoints"][endpoint]["inputs"]
                if spec["name"].startswith("state_")]


class OnnxDecoding:
    """`runtime.search`'s decoder over the `encode` and `decode_step` graphs."""

    def __init__(self, export):
        self._encode, self._step = export.graphs["encode"], export.graphs["decode_step"]
        self.target_vocab_size = int(export.config["target_vocab_size"])

    def encode(self, source):
        values, keys, mask, *states = self._encode(np.asarray(source, np.int32))
        return values, keys, mask, states

    def decode_step(self, tokens, states, encoded):
        logits, weights, *states = self._step(np.asarray(tokens, np.int32), *encoded[:3], *states)
        return logits, states, weights


class OnnxTranslator(TextTranslator):
    """`TextTranslator` over an exported `Seq2SeqAttention`."""

    @classmethod
    def from_export(cls, export):
        s = export.sides
        translator = cls(OnnxDecoding(export), vocabulary_from_json(s["source_vocab.json"]),
                         vocabulary_from_json(s["target_vocab.json"]), TrueCaser.from_json(s["truecase.json"]),
                         s["translator.json"])
        translator.card = export.card
        return translator


class OnnxClassifier(TextClassifier):
    """`TextClassifier` over an exported `SentimentNet`."""

    @classmethod
    def from_export(cls, export):
        classifier = cls(Vocabulary.from_json(export.sides["vocabulary.json"]), export.config["max_length"],
                         export.card)
        classifier._graphs = export.graphs
        classifier.explains = "logit_gradients" in export.graphs
        return classifier

    def explain(self, text, *args, **kwargs):
        if not self.explains:
            raise files.ArtifactError("this export has no gradient graph (made on TensorFlow, whose ONNX exporter "
                                      "cannot write it): export it with KERAS_BACKEND=jax for explanations")
        return super().explain(text, *args, **kwargs)

    def probabilities(self, ids):
        return self._graphs["probabilities"](np.asarray(ids, np.int32))[0]

    def embed(self, ids):
        return self._graphs["embed"](np.asarray(ids, np.int32))[0]

    def embedded_logits(self, points, mask):
        return self._graphs["embedded_logits"](np.asarray(points, np.float32), np.asarray(mask, bool))[0]

    def logit_gradients(self, points, mask):
        return self._graphs["logit_gradients"](np.asarray(points, np.float32), np.asarray(mask, bool))[0]


class OnnxGenerator(TextGenerator):
    """`TextGenerator` over an exported `CharLM`."""

    @classmethod
    def from_export(cls, export):
        generator = cls(CharVocabulary.from_json(export.sides["vocabulary.json"]), export.card)
        generator._run, generator._step = export.graphs["run"], export.graphs["step"]
        generator._state_shapes = export.state_shapes("step")
        return generator

    def initial_states(self, batch=1):
        return [np.zeros((batch, *shape), np.float32) for shape in self._state_shapes]

    def step(self, ids, states):
        logits, *states = self._step(np.asarray(ids, np.int32), *states)
        return logits[0], states

    def run(self, ids, mask, states):
        """Logits `(batch, time, vocab)` and final states of `ids` read from `states`; `mask (batch,
        time)` must be True on a prefix of each row (the exported LSTM reads it as lengths)."""
        mask = np.asarray(mask, bool)
        if mask.shape[1] > 1 and (mask[:, 1:] & ~mask[:, :-1]).any():
            raise ValueError("the mask of run() must be True on a prefix of each row (padding on the right)")
        logits, *states = self._run(np.asarray(ids, np.int32), mask, *states)
        return logits, states


SERVABLES = {"translation": OnnxTranslator, "sentiment classification": OnnxClassifier,
             "character generation": OnnxGenerator}


def load(directory, int8=False, threads=None):
    """The servable of an export folder: an `OnnxTranslator`, `OnnxClassifier` or `OnnxGenerator`.

    Args:
        directory: a folder written by `python -m trainers.export`.
        int8: serve the int8 graphs (smaller; see the README's "Deploy" table for what they lose).
        threads: ONNX Runtime's intra-op threads (`None`: one per core).

    Raises:
        ArtifactError: the folder is missing, incomplete or damaged (a one-line message).
    """
    export = Export(directory, int8, threads)
    if export.task not in SERVABLES:
        raise files.ArtifactError(f"{directory!r} holds a {export.task!r} export, which this runtime does not serve")
    return SERVABLES[export.task].from_export(export)
