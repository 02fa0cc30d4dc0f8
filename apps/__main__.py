"""All demos in one app, one tab each: `python -m apps [--host H] [--port P] [--share]`.

`--translate-model`, `--sentiment-model` and `--generate-model` choose other saved-model folders;
the Gradients tab builds its small probes on demand. `--runtime onnx` serves the exports
(`python -m trainers.export`) through ONNX Runtime instead.
A tab whose model is missing says how to train it; the other tabs work.
"""

import gradio as gr

from apps import common, generate, gradients, sentiment, translate

DEMOS = {"Translate": translate, "Sentiment": sentiment, "Generate": generate, "Gradients": gradients}


def build(models, runtime="keras"):
    """One Blocks app; `models` maps a tab name to what that demo's `load` returned."""
    with gr.Blocks(title="rnn-suite demos") as demo:
        gr.Markdown("# rnn-suite: recurrent networks on every Keras backend\n" + common.backend_markdown(runtime))
        for name, module in DEMOS.items():
            with gr.Tab(name):
                module.render(models.get(name))
    return demo


def load_all(runtime="keras"):
    """Every tab's model from its default folder."""
    return {name: module.load(None, runtime) for name, module in DEMOS.items()}


def main(argv=None):
    p = common.parser("Serve all demos as tabs.", None)
    for name, module in DEMOS.items():
        if module.DEFAULT_MODEL is None:
            continue
        p.add_argument(f"--{name.lower()}-model", default=None,
                       help=f"saved-model folder of the {name} tab (default {module.DEFAULT_MODEL}; with --runtime "
                            f"onnx, {common.export_folder(module.DEFAULT_MODEL)})")
    args = p.parse_args(argv)
    models = {name: module.load(getattr(args, f"{name.lower()}_model", None), args.runtime)
              for name, module in DEMOS.items()}
    common.launch(build(models, args.runtime), args)


if __name__ == "__main__":
    main()
