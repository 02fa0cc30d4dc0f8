"""Translate demo: Spanish <-> English with greedy or beam search and the attention heatmap.

    python -m apps.translate [--model saved_models/translate-spa-eng] [--host H] [--port P] [--share]
    python -m apps.translate --runtime onnx     # the export in exports/translate-spa-eng, without Keras

With the default model folder, the other direction (`translate-eng-spa`) is offered too when it
has been trained.
"""

import html
import json
import os
import sys

import gradio as gr
from gradio.components.plot import PlotData

from apps import common
from runtime.translation import TextTranslator

DEFAULT_MODEL = os.path.join("saved_models", "translate-spa-eng")
DIRECTIONS = {"spa-eng": "Spanish → English", "eng-spa": "English → Spanish"}
EXAMPLES = {"spa-eng": ["¿Dónde está la estación de tren?", "Me gustaría aprender a tocar el piano.",
                        "El ciclista ganó la carrera a pesar de la lluvia."],
            "eng-spa": ["Where is the train station?", "My grandmother grows tomatoes in the garden.",
                        "The library closes on Sunday afternoons."]}
TRAIN = {"spa-eng": "python -m trainers.translate", "eng-spa": "python -m trainers.translate --direction eng-spa"}
METRICS = [("BLEU (beam)", ("test", "beam 5", "bleu")), ("BLEU (greedy)", ("test", "greedy", "bleu")),
           ("chrF (beam)", ("test", "beam 5", "chrf")), ("training minutes", ("training", "minutes"))]


def keras_loader():
    from models.translator import Translator

    return Translator.load


def load(directory=None, runtime="keras"):
    """`{direction: translator or common.Unavailable}`: the model in `directory` (default: the
    default folder of `runtime`), plus the other direction's model when a `translate-<direction>`
    folder sits beside it. A translator is a `models.Translator` or, with `runtime="onnx"`, the
    `runtime.onnx.OnnxTranslator` of an export."""
    directory = common.model_folder(directory, DEFAULT_MODEL, runtime)
    main = common.load_model(keras_loader, directory, TRAIN["spa-eng"], runtime)
    direction = main.settings.get("direction", "spa-eng") if isinstance(main, TextTranslator) else "spa-eng"
    models = {direction: main}
    for other in DIRECTIONS:
        sibling = os.path.join(os.path.dirname(os.path.normpath(directory)), f"translate-{other}")
        if other not in models and os.path.isdir(sibling):
            models[other] = common.load_model(keras_loader, sibling, TRAIN[other], runtime)
    return models


def heatmap(translation):
    """Attention weights (output words x source words) as a Plotly heatmap: source words across,
    output words down, each cell's weight on hover.

    The figure is a plotly.js spec that the browser draws, so the server only writes a little
    JSON (a matplotlib image cost about 120 ms a request). Axes are positions labelled with the
    words, so a word that occurs twice keeps two rows."""
    rows, columns = len(translation.words), len(translation.source_words)
    target = [html.escape(w) for w in translation.words]  # plotly labels read a few HTML tags
    source = [html.escape(w) for w in translation.source_words]
    weights = [[round(float(w), 3) for w in row] for row in translation.attention]
    hover = [[f"{target[i]} ← {source[j]}: {weights[i][j]:.2f}" for j in range(columns)] for i in range(rows)]
    axis = {"tickmode": "array", "showgrid": False, "zeroline": False}
    figure = {
        "data": [{"type": "heatmap", "z": weights, "text": hover, "hoverinfo": "text", "zmin": 0.0, "zmax": 1.0,
                  "colorscale": "Viridis", "colorbar": {"title": {"text": "weight"}, "thickness": 12}}],
        "layout": {
            "xaxis": {**axis, "title": {"text": "source"}, "tickvals": list(range(columns)), "ticktext": source,
                      "tickangle": -45},
            "yaxis": {**axis, "title": {"text": "translation"}, "tickvals": list(range(rows)), "ticktext": target,
                      "autorange": "reversed"},
            "height": min(160 + 28 * rows, 720), "margin": {"l": 90, "r": 20, "t": 40, "b": 90},
        },
        "config": {"displayModeBar": False},
    }
    return PlotData(type="plotly", plot=json.dumps(figure))


def make_handler(models):
    lock = common.model_lock()

    def translate(text, direction, search, beam_width):
        """`(translation, heatmap figure or None, notice markdown)` for the UI."""
        text, notice = common.clean_text(text)
        translator = models.get(direction)
        if translator is None or isinstance(translator, common.Unavailable):
            message = translator.message if translator else f"No model for {direction}."
            return "", None, common.notice_markdown(message)
        if not text.strip():
            return "", None, common.notice_markdown("Type a sentence to translate.")
        width = 1 if search == "greedy" else int(min(max(beam_width or 5, 1), 10))
        with lock:
            result = translator(text, beam_width=width)
        figure = heatmap(result) if result.words and result.source_words else None
        return result.text, figure, common.notice_markdown(notice, result.notice)

    return translate


def render(models):
    """The Translate tab's components and events, inside the current Blocks."""
    available = [d for d, m in models.items() if isinstance(m, TextTranslator)]
    cards = [f"{DIRECTIONS[d]}: " + common.card_markdown(getattr(models[d], "card", {}), METRICS) for d in available]
    gr.Markdown("\n\n".join(cards) or "")
    missing = [m.message for m in models.values() if isinstance(m, common.Unavailable)]
    if missing and not available:
        gr.Markdown(common.notice_markdown(*missing))
        return
    with gr.Row():
        with gr.Column():
            source = gr.Textbox(label="Text", lines=3, placeholder="Escribe una frase… / Type a sentence…")
            direction = gr.Radio([(DIRECTIONS[d], d) for d in available], value=available[0], label="Direction",
                                 visible=len(available) > 1)
            with gr.Row():
                search = gr.Radio(["greedy", "beam search"], value="beam search", label="Decoding")
                width = gr.Slider(1, 10, value=5, step=1, label="Beam width")
            button = gr.Button("Translate", variant="primary")
        with gr.Column():
            output = gr.Textbox(label="Translation", lines=3, interactive=False)
            notice = gr.Markdown(elem_classes="notice")
            plot = gr.Plot(label="Attention (source words × translated words)")
    gr.Examples([[text, d] for d in available for text in EXAMPLES.get(d, [])], inputs=[source, direction])
    handler = make_handler(models)
    inputs = [source, direction, search, width]
    button.click(handler, inputs, [output, plot, notice], api_name="translate")
    source.submit(handler, inputs, [output, plot, notice], api_name=False)


def main(argv=None):
    common.serve_one(sys.modules[__name__], "Translate", argv)


if __name__ == "__main__":
    main()
