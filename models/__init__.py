"""One module per task: the Keras model, its tokenizer/vocabulary and inference, plus save/load.

- `models.translator`: `Seq2SeqAttention`, greedy and beam-search decoding, `Translator`.
- `models.sentiment`: `SentimentNet`, `SentimentClassifier`.
- `models.char_lm`: `CharLM`, `CharGenerator`.
- `models.gradient_flow`: the adding and recall tasks and the gradient-norm probes of the lab.
- `models.text`: normalisation, tokenisation, `Vocabulary`, `TrueCaser`, `detokenize`, text checks.
- `models.compiled`: `compile_function`, one compiled inference function per backend.
- `models.artifacts`: saved-model folders (`model.keras`, JSON side files, `card.json`).

`import models` imports the three task modules, which registers every class our `.keras` files
name (`rnn_suite>Seq2SeqAttention`, ...) with Keras: after it, `keras.saving.load_model(path,
compile=False)` loads any of our saved models on any backend. (Keras imports only its own packages
by itself when it meets a class name.) The task modules import Keras, layers/ and NumPy, nothing
else, and do no work at import.
"""

from models import char_lm, sentiment, translator  # noqa: F401 - registers the saved classes
from models.char_lm import CharGenerator, CharLM
from models.sentiment import SentimentClassifier, SentimentNet
from models.translator import Seq2SeqAttention, Translator

__all__ = ["CharGenerator", "CharLM", "Seq2SeqAttention", "SentimentClassifier", "SentimentNet", "Translator"]
