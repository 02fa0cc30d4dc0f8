"""What the demos share: flags, input cleaning, loading a saved model with a useful message, the
model card as text, and serving with a queue.

Every demo module (`apps.translate`, `apps.sentiment`, `apps.generate`) has `load(directory)`
(a model or an explanation of why there is none) and `render(model)` (its components, inside the
current `gr.Blocks`/`gr.Tab`). `python -m apps` puts them all in tabs; `python -m apps.<demo>` serves
one.
"""

import argparse
import os
import socket
import threading
import unicodedata

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")  # plots are rendered to images, never to a window

import gradio as gr  # noqa: E402

from runtime.files import ArtifactError  # noqa: E402

RUNTIMES = ("keras", "onnx")  # the saved model through Keras, or its export through ONNX Runtime (no Keras)

INPUT_LIMIT = 5000  # characters of text accepted per request; the rest is cut with a notice
SEED_LIMIT = 2**32 - 1  # the largest seed NumPy's global generator (keras.utils.set_random_seed) accepts
QUEUE_SIZE = 64  # requests waiting at most; more get "queue full"
CONCURRENCY = 1  # requests of one kind running at once (a 2-core CPU gains nothing from more)
THEME = gr.themes.Soft(primary_hue="indigo")
CSS = ".notice {color: #b45309} footer {visibility: hidden}"


class Unavailable:
    """Stands in for a model that could not be loaded; `message` says how to get one."""

    def __init__(self, message):
        self.message = message


def export_folder(saved_model):
    """Where `python -m trainers.export` puts the export of a saved-model folder: `exports/<name>`."""
    return os.path.join("exports", os.path.basename(os.path.normpath(saved_model)))


def load_model(keras_loader, directory, train_command, runtime="keras", saved_model=None):
    """The model folder `directory` loaded for `runtime` (`loader_of`), or an `Unavailable` whose
    message says how to train (or, with the ONNX runtime, export) a model or where to put one, when
    the folder is missing or broken. `saved_model` is the saved-model folder an export is made from."""
    if runtime == "onnx":
        source = saved_model or os.path.join("saved_models", os.path.basename(os.path.normpath(directory)))
        make, what = f"python -m trainers.export --model {source} --out {directory}", "an export folder"
    else:
        make, what = train_command, "a saved-model folder"
    if not os.path.isdir(directory):
        return Unavailable(f"No model at `{directory}`. Make one with `{make}`, or start the demo with `--model DIR` "
                           f"pointing to {what}.")
    try:
        return loader_of(runtime, keras_loader)(directory)
    except (ArtifactError, OSError, ValueError, KeyError) as error:
        return Unavailable(f"The model at `{directory}` could not be loaded ({error}). Make it again with `{make}`.")


def loader_of(runtime, keras_loader):
    """The function that loads a model folder for `runtime`: `keras_loader()` (imported only when
    used, so that the ONNX runtime imports no Keras) or `runtime.load`."""
    if runtime == "onnx":
        import runtime as onnx_runtime

        return onnx_runtime.load
    return keras_loader()


def clean_text(text, limit=INPUT_LIMIT):
    """`(text, notice)`: the input as a string without control characters (tabs and newlines
    kept), cut to `limit` characters; `notice` says what was changed, or is `None`."""
    if text is None:
        text = ""
    if not isinstance(text, str):
        text = str(text)
    cleaned = "".join(c for c in text if c in "\n\t" or unicodedata.category(c)[0] != "C")
    notes = []
    if len(cleaned) != len(text):
        notes.append(f"{len(text) - len(cleaned)} control characters removed.")
    if len(cleaned) > limit:
        notes.append(f"The input has {len(cleaned):,} characters; only the first {limit:,} were used.")
        cleaned = cleaned[:limit]
    return cleaned, " ".join(notes) or None


def seed_value(seed, blank=None):
    """`(seed, notice)`: a Seed field's value as an int (`blank` when the field is empty) and `None`,
    or `(None, notice)` saying what a seed may be when it is not a whole number from 0 to
    `SEED_LIMIT` (-1, 1e20): the handler shows the notice instead of failing with Gradio's bare
    "Error"."""
    if seed is None or seed == "":
        return blank, None
    if isinstance(seed, (int, float)) and not isinstance(seed, bool) and float(seed).is_integer() \
            and 0 <= seed <= SEED_LIMIT:
        return int(seed), None
    empty = " (empty = random)" if blank is None else ""
    return None, f"The seed must be a whole number from 0 to {SEED_LIMIT:,}{empty}; got {seed}."


def notice_markdown(*notices):
    """One line of notices for a `gr.Markdown`, or an empty string."""
    notices = [n for n in notices if n]
    return " ".join(f"⚠ {n}" for n in notices)


def card_markdown(card, metrics):
    """The card's headline numbers as Markdown: `metrics` is a list of `(label, value)` where value
    is a path of keys into the card (`("test", "accuracy")`) or a string."""
    parts = []
    for label, path in metrics:
        value = card
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, float):
            value = f"{value:.4g}"
        if value is not None:
            parts.append(f"**{label}** {value}")
    environment = card.get("environment", {})
    trained = f"trained on {environment.get('backend', '?')}" if environment else ""
    return " · ".join(parts + ([trained] if trained else []))


def backend_markdown(runtime="keras"):
    if runtime == "onnx":
        import onnxruntime

        return f"Runtime: **ONNX Runtime {onnxruntime.__version__}** (exported graphs, no Keras)"
    import keras

    return f"Backend: **{keras.backend.backend()}** (set `KERAS_BACKEND` to change) · Keras {keras.__version__}"


def model_lock():
    """A lock per loaded model: Gradio runs handlers in threads, and one model serves one request
    at a time (Keras layers keep per-call state)."""
    return threading.Lock()


def parser(description, default_model):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument("--port", type=int, default=None, help="port (default: Gradio's, 7860 or the next free one)")
    p.add_argument("--share", action="store_true",
                   help="also publish a temporary public gradio.live link (off by default)")
    p.add_argument("--runtime", choices=RUNTIMES, default="keras",
                   help="keras (default: the saved models, on KERAS_BACKEND) or onnx (their exports from "
                        "python -m trainers.export, served by ONNX Runtime without Keras)")
    if default_model is not None:
        p.add_argument("--model", default=None, help=f"saved-model folder (default {default_model}; with --runtime "
                                                     f"onnx, its export {export_folder(default_model)})")
    return p


def with_queue(demo):
    """Requests go through a queue: at most `CONCURRENCY` at a time per kind, `QUEUE_SIZE` waiting."""
    return demo.queue(default_concurrency_limit=CONCURRENCY, max_size=QUEUE_SIZE)


def launch(demo, args):
    with_queue(demo).launch(server_name=args.host, server_port=args.port, share=args.share, theme=THEME, css=CSS)


def single_demo(title, render, model, runtime="keras"):
    """A Blocks app of one demo: a title, the backend line and the demo's components."""
    with gr.Blocks(title=f"{title} · rnn-suite") as demo:
        gr.Markdown(f"# {title}\n" + backend_markdown(runtime))
        render(model)
    return demo


def serve_one(module, title, argv=None):
    """`python -m apps.<demo>`: parse the flags, load the model of `module` and serve its demo."""
    args = parser(f"Serve the {title.lower()} demo.", module.DEFAULT_MODEL).parse_args(argv)
    launch(single_demo(title, module.render, module.load(getattr(args, "model", None), args.runtime),
                       args.runtime), args)


def model_folder(directory, default, runtime):
    """`directory`, else the default folder of `runtime`: `default` or its export."""
    if directory:
        return directory
    return export_folder(default) if runtime == "onnx" else default


def start_local(demo):
    """Serve `demo` through the queue on a free local port, in the background (tests,
    benchmarks, screenshots); returns its URL. Stop it with `demo.close()`."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with_queue(demo).launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                            theme=THEME, css=CSS)
    return f"http://127.0.0.1:{port}/"
