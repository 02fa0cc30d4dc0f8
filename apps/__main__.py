"""All demos in one app, one tab each: `python -m apps [--host H] [--port P] [--share]`.

`--translate-model`, `--sentiment-model` and `--generate-model` choose other saved-model folders;
the Gradients tab builds its small probes on demand.
A tab whose model is missing says how to train it; the other tabs work.
"""

import gradio as gr

from apps import common, generate, gradients, sentiment, translate

DEMOS = {"Translate": translate, "Sentiment": sentiment, "Generate": generate, "Gradients": gradients}


def build(models):
    """One Blocks app; `models` maps a tab name to what that demo's `load` returned."""
    with gr.Blocks(title="rnn-suite demos") as demo:
        gr.Markdown("# rnn-suite: recurrent networks on every Keras backend\n" + common.backend_markdown())
        for name, module in DEMOS.items():
            with gr.Tab(name):
                module.render(models.get(name))
    return demo


def load_all():
    """Every tab's model from its default folder."""
    return {name: module.load(module.DEFAULT_MODEL) for name, module in DEMOS.items()}


def main(argv=None):
    p = common.parser("Serve all demos as tabs.", None)
    for name, module in DEMOS.items():
        if module.DEFAULT_MODEL is None:
            continue
        p.add_argument(f"--{name.lower()}-model", default=module.DEFAULT_MODEL,
                       help=f"saved-model folder of the {name} tab (default {module.DEFAULT_MODEL})")
    args = p.parse_args(argv)
    models = {name: module.load(getattr(args, f"{name.lower()}_model", None)) for name, module in DEMOS.items()}
    common.launch(build(models), args)


if __name__ == "__main__":
    main()
