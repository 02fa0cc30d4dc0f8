"""One source per setting: the config dataclasses, the flags made from them, the models that take
them and the saved configs they write and read (models/config.py, trainers/cli.py)."""

import ast
import dataclasses
import importlib
import inspect
import re

import pytest

from models.char_lm import CharLM, CharLMConfig
from models.config import Config, setting
from models.sentiment import SentimentNet, SentimentNetConfig
from models.seq2seq import Seq2SeqAttention, Seq2SeqConfig
from trainers import cli

TRAINERS = {"translate": "TranslateConfig", "sentiment": "SentimentConfig", "generate": "GenerateConfig",
            "gradients": "GradientsConfig"}


def trainer_and_config(task):
    trainer = importlib.import_module(f"trainers.{task}")
    return trainer, getattr(trainer, TRAINERS[task])


def help_text(trainer, capsys):
    with pytest.raises(SystemExit):
        trainer.build_parser().parse_args(["--help"])
    return " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("task", sorted(TRAINERS))
def test_every_setting_is_a_flag_whose_help_states_the_config_default(task, capsys):
    trainer, config_class = trainer_and_config(task)
    text = help_text(trainer, capsys)
    defaults = config_class()
    for field in dataclasses.fields(config_class):
        flag = "--" + field.name.replace("_", "-")
        if not field.metadata.get("flag"):
            assert flag not in text, flag  # set from the data, not by the user
            continue
        default = getattr(defaults, field.name)
        shown = field.metadata.get("shown") or (" ".join(map(str, default)) if isinstance(default, list)
                                                else {True: "on", False: "off"}.get(default, default))
        pattern = re.escape(flag) + r"\b[^-]*?.*?\(default " + re.escape(" ".join(str(shown).split()))
        assert re.search(pattern, text), f"{flag}: default {shown} not stated"
        if "quick" in field.metadata:
            assert "with --quick" in text


@pytest.mark.parametrize("task", ["translate", "sentiment", "generate"])
def test_a_flag_beats_quick_and_quick_beats_the_default(task):
    trainer, config_class = trainer_and_config(task)
    parser = trainer.build_parser()
    assert cli.config_from_args(config_class, parser.parse_args([])) == config_class()
    quick = cli.config_from_args(config_class, parser.parse_args(["--quick"]))
    assert quick.units == dataclasses.fields(config_class)[
        [f.name for f in dataclasses.fields(config_class)].index("units")].metadata["quick"]
    assert quick.max_examples is not None and config_class().max_examples is None
    explicit = cli.config_from_args(config_class, parser.parse_args(["--quick", "--units", "7"]))
    assert explicit.units == 7 and explicit.max_examples == quick.max_examples


@pytest.mark.parametrize("task", ["translate", "sentiment", "generate"])
def test_evaluate_scores_the_out_folder_unless_model_is_given(task):
    trainer, _ = trainer_and_config(task)
    parser = trainer.build_parser()
    args = cli.output_folders(parser.parse_args(["--evaluate", "--test-file", "t"]), task)
    assert args.model == args.out == f"saved_models/{task}"
    args = cli.output_folders(parser.parse_args(["--evaluate", "--test-file", "t", "--model", "m"]), task)
    assert args.model == "m"
    with pytest.raises(cli.UsageError, match="--evaluate needs --test-file"):
        cli.output_folders(parser.parse_args(["--evaluate"]), task)
    with pytest.raises(cli.UsageError, match="only used with --evaluate"):
        cli.output_folders(parser.parse_args(["--test-file", "t"]), task)


@pytest.mark.parametrize("model_class, config", [
    (Seq2SeqAttention, Seq2SeqConfig(source_vocab_size=9, target_vocab_size=7, embedding_dim=4, units=6, cell="lstm")),
    (SentimentNet, SentimentNetConfig(vocab_size=9, embedding_dim=4, units=3, dropout=0.1, max_length=20)),
    (CharLM, CharLMConfig(vocab_size=9, embedding_dim=4, units=5, num_layers=3, cell="gru")),
])
def test_a_model_stores_its_config_and_is_rebuilt_from_it(model_class, config):
    model = model_class(config)
    saved = model.get_config()
    assert {k: saved[k] for k in config.to_dict()} == config.to_dict()
    assert model_class.from_config(saved).config == config


def test_a_trainer_config_gives_the_model_only_the_model_fields():
    from trainers.translate import TranslateConfig

    model = Seq2SeqAttention(TranslateConfig(source_vocab_size=9, target_vocab_size=7, epochs=3))
    assert type(model.config) is Seq2SeqConfig and "epochs" not in model.get_config()


def test_configs_saved_under_older_names_still_load():
    sentiment = SentimentNet.from_config({"vocab_size": 9, "embed_dim": 4, "units": 3, "name": "old"})
    assert sentiment.config.embedding_dim == 4 and sentiment.name == "old"
    assert CharLM.from_config({"vocab_size": 9, "layers": 3}).config.num_layers == 3


@pytest.mark.parametrize("config_class, values, message", [
    (SentimentNetConfig, {"dropout": 1.0}, r"dropout must be a number in \[0, 1\), got 1.0"),
    (Seq2SeqConfig, {"cell": "rnn"}, r"cell must be one of \['lstm', 'gru'\], got 'rnn'"),
    (CharLMConfig, {"units": 0}, "units must be a positive whole number, got 0"),
    (CharLMConfig, {"units": 2.5}, "units must be a whole number, got 2.5"),
    (Seq2SeqConfig, {"rnn_impl": "cudnn"}, r"rnn_impl must be one of \['ours', 'keras'\]"),
])
def test_a_bad_value_fails_where_the_config_is_made(config_class, values, message):
    with pytest.raises(ValueError, match=message):
        config_class(**values)


def test_list_fields_check_each_item_and_take_several_values():
    @dataclasses.dataclass
    class Lab(Config):
        lengths: list = setting([5, 10], "lengths", kind="positive_int")

    assert Lab().lengths == [5, 10] and Lab().lengths is not Lab().lengths
    with pytest.raises(ValueError, match="lengths must be a positive whole number"):
        Lab(lengths=[5, -1])
    parser = cli.config_parser(Lab, "lab", "a lab", "runs/lab")
    assert cli.config_from_args(Lab, parser.parse_args(["--lengths", "3", "4"])).lengths == [3, 4]


@pytest.mark.parametrize("task", ["translate", "sentiment", "generate"])
def test_train_reads_as_the_task_story_in_well_under_40_lines(task):
    """The shared skeleton (seed, checkpoints, devices, optimizer, fit, best weights, save) lives
    in trainers/training.py; each `train()` keeps only its task's data, model, evaluation, card."""
    trainer, _ = trainer_and_config(task)
    source = inspect.getsource(trainer.train)
    assert len(source.splitlines()) <= 30
    called = {node.func.attr for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Call)
              and isinstance(node.func, ast.Attribute)}
    assert {"fit", "save"} <= called and not {"compile", "set_random_seed", "restore_best"} & called
