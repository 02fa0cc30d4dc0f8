"""What every trainer's command line shares: flags made from its config, and one-line errors.

Flags (docs/DESIGN.md, "Command-line conventions"): one per field of the trainer's config
dataclass (`--epochs --batch-size --units --seed --max-examples --learning-rate ...`, the model's
sizes), then `--quick --out --resume --evaluate --model --test-file` and the multi-process flags
(`trainers.cluster`) for every trainer. Import this
module before Keras: it sets the environment variables that must be set before TensorFlow or
Gradio load.
"""

import argparse
import dataclasses
import os
import re
import sys

from trainers import allocator

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


class UsageError(Exception):
    """A mistake of the user (bad file, bad flag combination): printed as one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    """`argparse` that reports a bad flag in one line (no usage block) and exits with 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def positive_int(text):
    """argparse type: an integer > 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def positive_float(text):
    """argparse type: a finite number > 0 (learning rates, clipping norms)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def flag_type(field):
    """argparse type of a config field: parses the text and checks it as the config does
    (`models.config.check_value`), so a bad value is one line naming the flag."""
    from models.config import check_value, kind_of

    kind = kind_of(field)
    convert = int if kind in ("int", "positive_int") else str if kind == "text" else float

    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            value = None
        problem = "a whole number" if value is None and convert is int else check_value(field, value)
        if value is None or problem:
            raise argparse.ArgumentTypeError(f"expected {problem or 'a number'}, got {text!r}")
        return value

    parse.__name__ = kind  # argparse names the type in some messages
    return parse


def config_parser(config_class, prog, description, out_default, test_file_help=None, test_file_aliases=(),
                  out_help="saved-model folder to write"):
    """The parser of a trainer: one flag per field of its config dataclass, then the flags every
    trainer shares: `--quick --out`, and for a trainer of a saved model (`test_file_help` given)
    `--resume --evaluate --model --test-file`.

    A config flag's default is `None` on the command line, so that `config_from_args` can tell an
    explicit value (which always wins) from the `--quick` value and the field's default; its help
    ends with both (docs/DESIGN.md, "Command-line conventions"). A list field takes several values.
    """
    from models.config import default_of, kind_of

    p = Parser(prog=prog, description=description)
    for field in dataclasses.fields(config_class):
        meta = field.metadata
        if not meta.get("flag"):
            continue
        names = ["--" + field.name.replace("_", "-")] + list(meta.get("aliases", ()))
        default = default_of(field)
        shown = meta.get("shown") or (" ".join(map(str, default)) if isinstance(default, list)
                                      else {True: "on", False: "off"}.get(default, default))
        quick = meta.get("quick")
        quick = "" if "quick" not in meta else f", {' '.join(map(str, quick)) if isinstance(quick, list) else quick} " \
                                               "with --quick"
        options = {"dest": field.name, "help": f"{meta['help']} (default {shown}{quick})".replace("%", "%%")}
        if isinstance(default, list):
            options["nargs"] = "+"
        if kind_of(field) == "bool":
            options["action"] = argparse.BooleanOptionalAction
        elif meta.get("choices"):
            options["choices"] = meta["choices"]
        else:
            options["type"] = flag_type(field)
        p.add_argument(*names, **options)
    p.add_argument("--quick", action="store_true", help="smoke run of a few minutes (small data and model)")
    p.add_argument("--out", help=f"{out_help} (default {out_default}, "
                                 f"runs/{os.path.basename(out_default)}-quick with --quick)")
    if test_file_help:
        p.add_argument("--resume", action="store_true",
                       help="continue an interrupted run from its last epoch checkpoint")
        p.add_argument("--evaluate", action="store_true",
                       help="score a saved model (--model, default the --out folder) on --test-file instead of "
                            "training")
        p.add_argument("--model", help="saved-model folder for --evaluate (default the --out folder)")
        p.add_argument("--test-file", *test_file_aliases, dest="test_file",
                       help=f"with --evaluate: {test_file_help}")
        from trainers import cluster  # noqa: PLC0415 - it imports this module

        cluster.add_flags(p)
    return p


def config_from_args(config_class, args, **fixed):
    """The run's config: each flag given on the command line, else its `--quick` value under
    `--quick`, else the field's default; `fixed` values win over all three."""
    values = {}
    for field in dataclasses.fields(config_class):
        given = getattr(args, field.name, None)
        if given is not None:
            values[field.name] = given
        elif args.quick and "quick" in field.metadata:
            values[field.name] = field.metadata["quick"]
    return config_class(**{**values, **fixed})


def read_text(path, what):
    """The whole of a UTF-8 text file, or of stdin for `-`; a missing, unreadable or undecodable
    file is a one-line `UsageError` that calls it `what` ("test file", ...)."""
    try:
        if path == "-":
            return sys.stdin.read()
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        raise UsageError(f"{what} {path!r} does not exist") from None
    except IsADirectoryError:
        raise UsageError(f"{what} {path!r} is a folder, not a text file") from None
    except UnicodeDecodeError:
        raise UsageError(f"{what} {'(stdin)' if path == '-' else repr(path)} is not UTF-8 text") from None


def output_folders(args, name, folder="saved_models"):
    """Fill `args.out` (default `<folder>/<name>`, `runs/<name>-quick` under `--quick`, so that
    a smoke run never overwrites a real model) and `args.model` (default `args.out`); with
    `--evaluate`, check that a test file is given, and without it, that none is."""
    if args.out is None:
        args.out = os.path.join("runs", f"{name}-quick") if args.quick else os.path.join(folder, name)
    if not hasattr(args, "evaluate"):  # a lab without a saved model
        return args
    if args.model is None:
        args.model = args.out
    if args.evaluate and not args.test_file:
        raise UsageError("--evaluate needs --test-file FILE (see --help)")
    if args.test_file and not args.evaluate:
        raise UsageError("--test-file is only used with --evaluate")
    if getattr(args, "quick", False) and not args.evaluate:  # its near-chance scores are expected
        print("--quick: a smoke run (a small model, a slice of the data, a few epochs): its scores show that "
              "the pipeline runs, not what the full run reaches (README)")
    return args


def run(main, argv=None):
    """Call `main(argv)` and turn failures into one line on stderr and a non-zero exit code.

    `UsageError`, missing files and bad values exit with 2, anything else with 1;
    `RNN_SUITE_TRACEBACK=1` shows the full traceback instead (for debugging).
    """
    prog = os.path.basename(sys.argv[0]) if argv is None else "trainer"
    allocator.reuse_freed_memory()  # before the backend starts its threads
    try:
        sys.exit(main(argv) or 0)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; run again with --resume to continue from the last epoch",
              file=sys.stderr)
        sys.exit(130)
    except Exception as error:  # noqa: BLE001 - the CLI contract: one line, no traceback
        if os.environ.get("RNN_SUITE_TRACEBACK"):
            raise
        code = 2 if isinstance(error, (UsageError, FileNotFoundError, ValueError)) else 1
        print(f"error: {error_line(error)}", file=sys.stderr)
        sys.exit(code)


# A Python exception raised inside a TensorFlow graph (a data generator, a py_function) comes back
# as one line "SomeError: message" inside the op error's text.
_RAISED = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?([A-Z]\w*(?:Error|Exception)): (.+)")


def error_line(error):
    """One line that says what went wrong.

    Usually the first line of the message. TensorFlow's op errors open with a line that names no
    cause ("Graph execution error:") followed by the graph's node trace; the cause is the Python
    exception raised inside the graph (`TypeError: ...`) or, for an op that failed, the line
    before the `[[{{node ...}}]]` marker.
    """
    # Eager op errors start with the failing function's `{{function_node ...}}` tag.
    lines = [re.sub(r"^\{\{[^}]*\}\}\s*", "", line.strip()) for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    if not lines[0].endswith(":"):
        return lines[0]
    raised = [match for match in map(_RAISED.match, lines[1:]) if match]
    if raised:
        return f"{raised[-1].group(1)}: {raised[-1].group(2)}"
    for before, line in zip(lines[1:], lines[2:]):
        if line.startswith("[[{{node"):
            return f"{lines[0]} {before}"
    return " ".join(lines[:2])
