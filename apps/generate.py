"""Generate demo: Shakespeare-like text from a prompt, streamed as it is written.

    python -m apps.generate [--model saved_models/generate-shakespeare] [--host H] [--port P] [--share]
    python -m apps.generate --runtime onnx     # the export in exports/generate-shakespeare, without Keras
"""

import os
import sys
import time

import gradio as gr

from apps import common
from runtime.sampling import MAX_GENERATE, check_sampling

DEFAULT_MODEL = os.path.join("saved_models", "generate-shakespeare")
TRAIN = "python -m trainers.generate"
EXAMPLES = [["ROMEO:\n", 400, 0.8], ["KING HENRY:\nWhat news", 300, 0.6], ["To be, or not", 200, 1.0]]
METRICS = [("validation nats/char", ("validation", "nats_per_char")),
           ("bits/char", ("validation", "bits_per_char")), ("training minutes", ("training", "minutes"))]
UPDATE_EVERY = 0.05  # seconds between screen updates while streaming
LENGTH_LIMIT = 2000  # characters per request in the demo (the model allows up to MAX_GENERATE)


def keras_loader():
    from models.generator import CharGenerator

    return CharGenerator.load


def load(directory=None, runtime="keras"):
    """The generator in `directory` (default: the default folder of `runtime`), or a
    `common.Unavailable`."""
    return common.load_model(keras_loader, common.model_folder(directory, DEFAULT_MODEL, runtime), TRAIN, runtime)


def make_handler(generator):
    lock = common.model_lock()

    def generate(prompt, length, temperature, top_k, top_p, seed):
        """Yields `(text so far, notice markdown)` while the text is being generated."""
        prompt, notice = common.clean_text(prompt)
        if isinstance(generator, common.Unavailable):
            yield "", common.notice_markdown(generator.message)
            return
        settings = dict(length=int(min(max(length or 0, 1), LENGTH_LIMIT, MAX_GENERATE)),
                        temperature=float(temperature or 0.0),
                        top_k=int(top_k) if top_k else None,
                        top_p=float(top_p) if top_p and top_p < 1.0 else None)
        seed, problem = common.seed_value(seed)
        try:
            check_sampling(**settings)  # the sliders keep to the ranges; the HTTP API need not
        except ValueError as error:
            problem = problem or str(error)[:1].upper() + str(error)[1:] + "."
        if problem:
            yield "", common.notice_markdown(notice, problem)
            return
        with lock:
            session = generator.start(prompt, seed=seed)
            notice = " ".join(filter(None, [notice, session.notice]))  # skipped characters, as start() warns
            if not prompt.strip():
                notice = " ".join(filter(None, [notice, "Empty prompt: starting from a new line."]))
            text, shown = prompt, float("-inf")  # the first character goes out at once, then every UPDATE_EVERY
            yield text, common.notice_markdown(notice)
            for character in session.stream(**settings):
                text += character
                if time.perf_counter() - shown >= UPDATE_EVERY:
                    shown = time.perf_counter()
                    yield text, common.notice_markdown(notice)
        yield text, common.notice_markdown(notice)

    return generate


def render(generator):
    """The Generate tab's components and events, inside the current Blocks."""
    if isinstance(generator, common.Unavailable):
        gr.Markdown(common.notice_markdown(generator.message))
        return
    gr.Markdown(common.card_markdown(generator.card, METRICS))
    with gr.Row():
        with gr.Column(scale=1):
            prompt = gr.Textbox(label="Prompt", lines=3, value="ROMEO:\n")
            length = gr.Slider(1, LENGTH_LIMIT, value=400, step=1, label="Characters to generate")
            temperature = gr.Slider(0.0, 2.0, value=0.8, step=0.05, label="Temperature (0 = always the likeliest)")
            with gr.Row():
                top_k = gr.Slider(0, 60, value=0, step=1, label="Top-k (0 = off)")
                top_p = gr.Slider(0.05, 1.0, value=1.0, step=0.05, label="Top-p (1 = off)")
            seed = gr.Number(value=None, precision=0, label="Seed (empty = random)")
            button = gr.Button("Generate", variant="primary")
        with gr.Column(scale=2):
            output = gr.Textbox(label="Text", lines=18, interactive=False)
            notice = gr.Markdown(elem_classes="notice")
    gr.Examples(EXAMPLES, inputs=[prompt, length, temperature])
    button.click(make_handler(generator), [prompt, length, temperature, top_k, top_p, seed], [output, notice],
                 api_name="generate")


def main(argv=None):
    common.serve_one(sys.modules[__name__], "Generate", argv)


if __name__ == "__main__":
    main()
