"""Gradients demo: how much of the loss's gradient reaches each earlier step, per cell type.

    python -m apps.gradients [--host H] [--port P] [--share]

Computed on demand with small probes (32 units, batch 64): ||dL/dh_t|| at initialisation, and
after a few training steps when asked (`python -m trainers.gradients` runs the full study).
"""

import sys

import gradio as gr

from apps import common
from models import gradient_flow as gf

DEFAULT_MODEL = None  # nothing to load: the probes are built on demand
LENGTH_LIMIT, STEPS_LIMIT = 200, 200


def load(directory=None, runtime="keras"):
    return None  # the lab trains its small probes on demand, with Keras, whatever the runtime


def compute(task, length, cells, steps, seed):
    """`(figure, summary markdown)` for the chosen settings (an empty seed is 0)."""
    cells = [c for c in gf.CELLS if gf.LABELS[c] in (cells or [])]
    if not cells:
        return None, common.notice_markdown("Pick at least one cell type.")
    seed, problem = common.seed_value(seed, blank=0)
    if problem:
        return None, common.notice_markdown(problem)
    length, steps = int(min(max(length, 2), LENGTH_LIMIT)), int(min(max(steps, 0), STEPS_LIMIT))
    x, y = gf.make_task(task, 64, length, seed)
    curves, lines = {}, []
    for cell in cells:
        probe = gf.make_probe(cell, task, 32, seed=seed)
        if steps:
            train_x, train_y = gf.make_task(task, 2048, length, seed + 1)
            gf.train_probe(probe, train_x, train_y, steps, 32, 3e-3, 1.0, seed)
        norms = gf.hidden_gradient_norms(probe, x, y)
        curves[gf.LABELS[cell]] = norms
        lines.append(f"**{gf.LABELS[cell]}**: ||dL/dh|| {norms[-1]:.2e} at the last step, {norms[0]:.2e} at the first "
                     f"({length - 1} steps back), a factor of {norms[0] / norms[-1]:.1e}")
    when = "at initialisation" if not steps else f"after {steps} training steps"
    figure = gf.plot_gradient_norms(curves, f"{task} task, length {length}, {when}")
    return figure, "\n\n".join(lines)


def render(_=None):
    """The Gradients tab's components and events, inside the current Blocks."""
    gr.Markdown("How much of the loss's gradient reaches a hidden state *t* steps back, for our SimpleRNN, LSTM "
                "and GRU (Keras' default initialisers). Straight lines on this log scale are exponential decay.")
    with gr.Row():
        with gr.Column(scale=1):
            task = gr.Radio(list(gf.TASKS), value="adding", label="Task")
            length = gr.Slider(5, LENGTH_LIMIT, value=100, step=5, label="Sequence length")
            cells = gr.CheckboxGroup(list(gf.LABELS.values()), value=list(gf.LABELS.values()), label="Cells")
            steps = gr.Slider(0, STEPS_LIMIT, value=0, step=10, label="Training steps first (0 = at initialisation)")
            seed = gr.Number(value=0, precision=0, label="Seed")
            button = gr.Button("Measure", variant="primary")
        with gr.Column(scale=2):
            plot = gr.Plot(label="Gradient norm by distance from the loss")
            summary = gr.Markdown()
    button.click(compute, [task, length, cells, steps, seed], [plot, summary], api_name="gradients")


def main(argv=None):
    common.serve_one(sys.modules[__name__], "Gradients", argv)


if __name__ == "__main__":
    main()
