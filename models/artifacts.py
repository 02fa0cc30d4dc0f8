"""Saved-model folders: `model.keras`, JSON side files (vocabularies, tokenizers) and `card.json`.

Layout (docs/DESIGN.md, "A saved model"):

    saved_models/<name>/model.keras    the Keras model, without optimizer state (smaller, and a
                                       compiled torch optimizer would not load on other backends)
    saved_models/<name>/<side>.json    whatever the task needs to turn text into ids and back
    saved_models/<name>/card.json      task, corpus, split sizes, settings, environment, metrics

Task-neutral: the translator, the sentiment classifier and the character model all use it.
"""

import datetime
import json
import os
import platform
import warnings
import zipfile

import keras

from runtime.files import ArtifactError, read_json, write_json  # noqa: F401 - part of this module's API

MODEL_FILE = "model.keras"
CARD_FILE = "card.json"


def environment():
    """Backend, library versions and hardware, for the card."""
    return {
        "backend": keras.backend.backend(),
        "keras": keras.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": _cpu_name(),
        "cpu_count": os.cpu_count(),
    }


def _cpu_name():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


class PortableModel:
    """Mixin for our subclassed models, which take one config dataclass (`models.config`).

    * `get_config` stores that config, and `from_config` makes the model from it again (accepting
      the older field names of the config's `RENAMED`), so a saved model rebuilds itself.
    * `build()` needs no input shape (every weight's shape follows from the config), so a saved
      model is rebuilt by calling it.
    * The config carries no dtype policy: a model trained under `mixed_float16` or
      `mixed_bfloat16` (whose weights are float32 anyway) loads under the policy of the loading
      process, float32 by default, and runs on a CPU. The card records the training precision.
    """

    CONFIG = None  # the model's config dataclass

    def get_build_config(self):
        config = {"input_shape": None}
        mode = self.weight_quantization()
        return {**config, "quantization": mode} if mode else config

    def build_from_config(self, config):
        self.build()
        if config.get("quantization"):  # quantised weights are stored: quantise the built layers to match
            self.quantize(config["quantization"])

    def weight_quantization(self):
        """The mode of Keras' `quantize` (`"int8"`, ...) applied to this model, or `None`."""
        modes = {getattr(layer, "quantization_mode", None) for layer in self._flatten_layers(include_self=False)}
        return next(iter(modes - {None}), None)

    def quantize(self, mode, **kwargs):
        """Keras' `quantize` (its `Dense` and `Embedding` layers; our recurrent cells keep float32
        weights), without a warning for each layer it leaves as it is."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*does not have a `quantize` method", category=UserWarning)
            super().quantize(mode, **kwargs)

    def get_config(self):
        config = super().get_config()
        config.pop("dtype", None)
        return {**config, **self.config.to_dict()}

    @classmethod
    def from_config(cls, config):
        settings, rest = cls.CONFIG.from_dict(config)
        return cls(settings, **rest)


def rebuild(model, **settings):
    """A copy of `model` with the same weights, some constructor settings changed (for example
    `rnn_impl="keras"` to swap our recurrent layers for Keras' built-ins, which hold the same
    weights), built under the current dtype policy, without optimizer or compile state."""
    clone = model.__class__.from_config({**model.get_config(), **settings})
    clone.build_from_config(model.get_build_config())
    clone.set_weights(model.get_weights())
    return clone


def without_optimizer(model):
    """A copy of `model` with the same architecture and weights and no optimizer/compile state."""
    return rebuild(model)


def save(directory, model, side_files=None, card=None):
    """Write a saved-model folder.

    Args:
        directory: The folder; created if needed. Files of the same names are replaced.
        model: A built Keras model; saved without its optimizer.
        side_files: dict `file name -> JSON-serialisable data`, e.g. `{"source_vocab.json": {...}}`.
        card: dict for `card.json`; `saved_at` and `environment` are added when missing.

    Returns:
        The folder path.
    """
    os.makedirs(directory, exist_ok=True)
    # Save to a temporary name first so an interrupted save never leaves a broken model.keras.
    temporary = os.path.join(directory, MODEL_FILE + ".tmp.keras")
    without_optimizer(model).save(temporary)
    os.replace(temporary, os.path.join(directory, MODEL_FILE))
    for name, data in (side_files or {}).items():
        write_json(os.path.join(directory, name), data)
    if card is not None:
        card = {"saved_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "environment": environment(), **card}
        write_json(os.path.join(directory, CARD_FILE), card)
    return directory


def saved_config(path):
    """The model config inside a `.keras` file (its `config.json`), read without loading weights.

    Raises:
        ArtifactError: the file is not a complete `.keras` archive (truncated, damaged, another format).
    """
    try:
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read("config.json"))
    except (zipfile.BadZipFile, KeyError, ValueError, EOFError):
        raise ArtifactError(f"{path} is damaged or truncated (not a complete .keras archive): train the model "
                            "again or copy the file again") from None
    except OSError as error:
        raise ArtifactError(f"{path} is not readable ({error.strerror or error})") from None


def check_model_class(directory, config, expected):
    """Raise a one-line `ArtifactError` unless `config` (of `saved_config`) is a model of class
    `expected` (or a subclass). Our model classes name their task in `TASK`, so the message says
    which task the folder holds and which one was expected."""
    name = config.get("registered_name") or config.get("class_name") or "unknown"
    found = keras.saving.get_registered_object(name)
    if isinstance(found, type) and issubclass(found, expected):
        return
    held = f"{getattr(found, 'TASK', 'Keras')} model ({name.split('>')[-1]})"
    raise ArtifactError(f"{str(directory)!r} holds a {held}, not a {expected.TASK} model ({expected.__name__})")


def load(directory, side_files=(), model_class=None):
    """Load a saved-model folder on the current backend (safe mode, `compile=False`).

    Args:
        directory: The folder written by `save`.
        side_files: Names of the JSON side files to read.
        model_class: The model class the caller needs (with a `TASK` attribute), or `None` for any;
            checked from the file's config before the weights or side files are read.

    Returns:
        `(model, sides, card)`: the Keras model, dict `name -> data`, and the card (`{}` if absent).

    Raises:
        ArtifactError: the folder, `model.keras` or a side file is missing, damaged or unreadable,
            or the folder holds a model of another class (another task).
    """
    if not os.path.isdir(directory):
        raise ArtifactError(f"no saved model at {str(directory)!r} (expected a folder with {MODEL_FILE})")
    path = os.path.join(directory, MODEL_FILE)
    if not os.path.isfile(path):
        raise ArtifactError(f"{str(directory)!r} has no {MODEL_FILE}")
    config = saved_config(path)
    if model_class is not None:
        check_model_class(directory, config, model_class)
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as error:  # noqa: BLE001 - a broken file gets a one-line message
        reason = (str(error).strip().splitlines() or [""])[0][:200]
        raise ArtifactError(f"could not load {path} ({type(error).__name__}: {reason}); the file may be damaged: "
                            "train the model again or copy the file again") from None
    sides = {name: read_json(os.path.join(directory, name)) for name in side_files}
    card_path = os.path.join(directory, CARD_FILE)
    card = read_json(card_path) if os.path.exists(card_path) else {}
    return model, sides, card
