"""The networks of the three tasks and what serves them: text in, text out, saved folders.

Per task, the network (a Keras model taking one config dataclass) and the object that serves it:

- translation: `models.seq2seq` (`Seq2SeqAttention`, `Seq2SeqConfig`, the masked loss), decoded by
  `runtime.search` (greedy, beam search, n-best) through `models.decoding` (`CompiledDecoding`),
  served by `models.translator` (`Translator`: strings in, strings out) over the subword pieces
  of `models.subwords` (`SubwordVocabulary`, keras_hub's SentencePiece tokenizer).
- sentiment: `models.sentiment` (`SentimentNet`, `SentimentNetConfig`), served by
  `models.classifier` (`SentimentClassifier`: probabilities and explanations), its encoder
  pretrained by `models.review_lm` (`ReviewLM`: forward and backward language models of reviews).
- generation: `models.char_lm` (`CharLM`, `CharLMConfig`, `CharVocabulary`), served by
  `models.generator` (`CharGenerator`, sampling, streaming `Session`s).
- gradient lab: `models.gradient_flow` (the adding and recall tasks and the gradient-norm probes).

What serves a network as text is Keras-free and lives in `runtime` (text, pieces, search,
sampling, each task's text side), shared with the ONNX runtime; `models.export` names what each
task exports. Shared here: `models.config` (the config dataclasses' fields: defaults, help,
`--quick` values), `models.compiled` (`compile_function`, one compiled inference function per backend;
`bucket`, padded lengths), `models.losses` (`replica_share`: losses reduced by hand, scaled per
replica under `tf.distribute` as Keras' own are) and `models.artifacts` (saved-model folders:
`model.keras`, JSON side files, `card.json`).

`import models` imports the three network modules, which registers every class our `.keras` files
name (`rnn_suite>Seq2SeqAttention`, ...) with Keras: after it, `keras.saving.load_model(path,
compile=False)` loads any of our saved models on any backend. (Keras imports only its own packages
by itself when it meets a class name.) These modules import Keras, layers/ and NumPy, nothing
else, and do no work at import.
"""

from models import char_lm, review_lm, sentiment, seq2seq  # noqa: F401 - registers the saved classes
from models.char_lm import CharLM
from models.classifier import SentimentClassifier
from models.generator import CharGenerator
from models.review_lm import ReviewLM
from models.sentiment import SentimentNet
from models.seq2seq import Seq2SeqAttention
from models.translator import Translator

__all__ = ["CharGenerator", "CharLM", "ReviewLM", "Seq2SeqAttention", "SentimentClassifier", "SentimentNet",
           "Translator"]
