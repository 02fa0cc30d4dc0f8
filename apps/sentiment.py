"""Sentiment demo: positive/negative confidence of a movie review, and each word's contribution.

    python -m apps.sentiment [--model saved_models/sentiment-imdb] [--host H] [--port P] [--share]
    python -m apps.sentiment --runtime onnx     # the export in exports/sentiment-imdb, without Keras

The label comes first (one forward pass); the per-word highlighting (integrated gradients, a few
dozen gradient passes) follows as a second step, so the answer does not wait for the explanation.
An export has no gradients: with `--runtime onnx` the demo classifies and says that the per-word
explanation needs the Keras runtime.
"""

import os
import sys

import gradio as gr

from apps import common
from runtime.text import review_tokens

DEFAULT_MODEL = os.path.join("saved_models", "sentiment-imdb")
TRAIN = "python -m trainers.sentiment"
EXAMPLES = [
    ["A moving, beautifully acted film. The ending stayed with me for days."],
    ["Two hours of my life I will never get back. Wooden acting and a plot full of holes."],
    ["The first half drags, but the last act is superb and the music is wonderful."],
    ["Not bad at all, although I expected more from this director."],
]
METRICS = [("test accuracy", ("test", "accuracy")), ("F1", ("test", "f1")), ("ROC-AUC", ("test", "roc_auc")),
           ("training minutes", ("training", "minutes"))]


def keras_loader():
    from models.classifier import SentimentClassifier

    return SentimentClassifier.load


def load(directory=None, runtime="keras"):
    """The classifier in `directory` (default: the default folder of `runtime`), or a
    `common.Unavailable`."""
    return common.load_model(keras_loader, common.model_folder(directory, DEFAULT_MODEL, runtime), TRAIN, runtime)


def make_handlers(classifier):
    lock = common.model_lock()

    def classify(text):
        """`(label confidences or None, notice markdown)`."""
        text, notice = common.clean_text(text)
        if isinstance(classifier, common.Unavailable):
            return None, common.notice_markdown(classifier.message)
        if not review_tokens(text):
            return None, common.notice_markdown(notice, "Type or paste a review (it has no words yet).")
        with lock:
            positive = float(classifier.predict([text])[0])
            unknown = classifier.notice(text)  # no word of the review is known (predict warns): a guess
        return {"positive": positive, "negative": 1.0 - positive}, common.notice_markdown(notice, unknown)

    def explain(text):
        """Words with their contribution scaled to [-1, 1] (positive: towards "positive")."""
        text, _ = common.clean_text(text)
        if isinstance(classifier, common.Unavailable) or not review_tokens(text):
            return None
        with lock:
            result = classifier.explain(text)
        largest = max((abs(s) for s in result["scores"]), default=0.0) or 1.0
        return [(word + " ", round(score / largest, 3)) for word, score in zip(result["words"], result["scores"])]

    return classify, explain


def render(classifier):
    """The Sentiment tab's components and events, inside the current Blocks."""
    if isinstance(classifier, common.Unavailable):
        gr.Markdown(common.notice_markdown(classifier.message))
        return
    gr.Markdown(common.card_markdown(classifier.card, METRICS))
    with gr.Row():
        with gr.Column():
            review = gr.Textbox(label="Movie review", lines=6, placeholder="Paste a movie review…")
            button = gr.Button("Classify", variant="primary")
        with gr.Column():
            label = gr.Label(label="Sentiment", num_top_classes=2)
            notice = gr.Markdown(elem_classes="notice")
    explains = classifier.explains  # an ONNX export made on TensorFlow has no gradient graph
    if explains:
        words = gr.HighlightedText(label="Why: each word's push towards positive (red) or negative (blue), "
                                         "by integrated gradients", show_legend=False, combine_adjacent=False)
    else:
        gr.Markdown("Per-word explanations need the gradient graph, which an export made on TensorFlow lacks: "
                    "export the model with `KERAS_BACKEND=jax`, or start the demo with `--runtime keras`.")
    gr.Examples(EXAMPLES, inputs=[review])
    classify, explain = make_handlers(classifier)
    for trigger in (button.click, review.submit):
        event = trigger(classify, review, [label, notice], api_name="classify" if trigger == button.click else False)
        if explains:
            event.then(explain, review, words, api_name="explain" if trigger == button.click else False)


def main(argv=None):
    common.serve_one(sys.modules[__name__], "Sentiment", argv)


if __name__ == "__main__":
    main()
