"""Hyperparameters as dataclasses: each field's default, help text, `--quick` value and allowed
values live in one place.

Each task's network has a config (`Seq2SeqConfig`, `SentimentNetConfig`, `CharLMConfig`): the model
takes it, and its `get_config` stores it, so a saved model rebuilds itself from it. Each trainer
extends its model's config with the training fields (`trainers.translate.TranslateConfig`, ...);
the trainer's flags, `--quick` sizes, help text and the card's settings all come from those
fields (`trainers.cli.config_parser`), so a default is written exactly once.

    units: int = setting(256, "recurrent units", quick=64)

A field's `kind` says which values are allowed (`KINDS`; by default from the default's type:
a positive whole number, a positive number, true/false, text), or its `choices` do. `Config.__post_init__` checks
them, so a bad value fails where the config is made, with the field's name.
"""

import dataclasses
import numbers

RECURRENT_CELLS = ("lstm", "gru")  # the cells the task models offer (of `layers.CELLS`; not simple_rnn)
RNN_IMPLS = ("ours", "keras")
_NO_QUICK = object()


def setting(default, help, quick=_NO_QUICK, choices=None, kind=None, flag=True, shown=None, aliases=()):
    """A dataclass field with its documentation.

    Args:
        default: the value of a default run.
        help: what the field is, for `--help` (the defaults are appended there).
        quick: the value under `--quick` (a smoke run), if it differs.
        choices: the allowed values, if a fixed list.
        kind: one of `KINDS`; `None` takes it from the default's type (`kind_of`).
        flag: whether the trainers offer it as a command-line flag (`False`: set from the data).
        shown: how `--help` shows the default, where the value alone does not say it.
        aliases: older flag names still accepted (`("--layers",)`).
    """
    metadata = {"help": help, "choices": choices, "kind": kind, "flag": flag, "shown": shown, "aliases": aliases}
    if quick is not _NO_QUICK:
        metadata["quick"] = quick
    if isinstance(default, list):  # a list of values (one flag takes several): a fresh copy per config
        return dataclasses.field(default_factory=lambda: list(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def cell_setting(default):
    """The recurrent cell of a task model."""
    return setting(default, "recurrent cell", choices=RECURRENT_CELLS)


def rnn_impl_setting():
    """Our recurrent layers or Keras' built-ins; both hold the same weights."""
    return setting("ours", "recurrent layers: ours (layers/) or Keras' built-ins, cuDNN on a GPU; same weights",
                   choices=RNN_IMPLS)


@dataclasses.dataclass
class Config:
    """Base of the config dataclasses: checks the values and reads older saved configs."""

    # Field names that older saved models used, mapped to the current names.
    RENAMED = {}

    def __post_init__(self):
        for field in dataclasses.fields(self):
            problem = check_value(field, getattr(self, field.name))
            if problem:
                raise ValueError(f"{field.name} must be {problem}, got {getattr(self, field.name)!r}")

    @classmethod
    def from_dict(cls, values):
        """`(config, rest)`: the config made of the entries of `values` that are its fields
        (older names accepted, see `RENAMED`), and the other entries."""
        values = {cls.RENAMED.get(k, k): v for k, v in values.items()}
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names}), {
            k: v for k, v in values.items() if k not in names}

    @classmethod
    def of(cls, config):
        """This class's part of `config` (an instance of a subclass, such as a trainer's config)."""
        return cls(**{f.name: getattr(config, f.name) for f in dataclasses.fields(cls)})

    def to_dict(self):
        return dataclasses.asdict(self)


KINDS = ("bool", "int", "positive_int", "positive", "nonnegative", "fraction", "text")


def default_of(field):
    """The field's default value (also for a list field, made by a factory)."""
    return field.default_factory() if field.default is dataclasses.MISSING else field.default


def kind_of(field):
    """The field's kind (of each item, for a list): given, or from its default (true/false, a
    positive whole number, a positive number, text)."""
    kind = field.metadata.get("kind")
    if kind:
        return kind
    default = default_of(field)
    if isinstance(default, list):
        default = default[0]
    if isinstance(default, bool):
        return "bool"
    if isinstance(default, int):
        return "positive_int"
    return "positive" if isinstance(default, float) else "text"


def check_value(field, value):
    """`None` if `value` suits `field` (every item, for a list field), else what it must be (for
    an error message)."""
    if not field.metadata:
        return None
    if isinstance(default_of(field), list) and isinstance(value, (list, tuple)):
        problems = [check_value(field, item) for item in value]
        return next((p for p in problems if p), None if value else "at least one value")
    if field.metadata.get("choices") is not None:
        return None if value in field.metadata["choices"] else f"one of {list(field.metadata['choices'])}"
    if value is None and field.default is None:
        return None
    number = isinstance(value, numbers.Real) and not isinstance(value, bool)
    kind = kind_of(field)
    if kind == "bool":
        return None if isinstance(value, bool) else "true or false"
    if kind in ("int", "positive_int"):
        if not number or not isinstance(value, numbers.Integral):
            return "a whole number"
        return None if kind == "int" or value > 0 else "a positive whole number"
    if kind == "fraction":
        return None if number and 0 <= value < 1 else "a number in [0, 1)"
    if kind == "positive":
        return None if number and 0 < value < float("inf") else "a positive number"
    if kind == "nonnegative":
        return None if number and 0 <= value < float("inf") else "a number >= 0"
    return None
