"""Gradient-flow lab: `python -m trainers.gradients`.

    python -m trainers.gradients --quick          # about a minute on a 2-core CPU
    python -m trainers.gradients                  # lengths 25, 50, 100, 200; both tasks; all cells

For SimpleRNN, LSTM and GRU from `layers/` on the adding and recall tasks (models/gradient_flow.py),
at each sequence length: the mean ||dL/dh_t|| for every step t at initialisation and after a fixed
budget of training steps, and the task score reached. Then exploding gradients: a SimpleRNN whose
recurrent matrix starts at 3x an orthogonal one, trained with and without clipping the global
gradient norm. Writes PNG plots and `results.json` to `--out`.
"""

from trainers import cli  # noqa: I001 - sets the environment before TensorFlow/Keras load

import dataclasses
import json
import os
import time

import keras

from models import gradient_flow as gf
from models.config import Config, setting

EXPLODING_GAIN, EXPLODING_LR = 3.0, 0.05
PROBE_BATCH, EVAL_EXAMPLES, TRAIN_EXAMPLES = 128, 512, 4096


@dataclasses.dataclass
class GradientsConfig(Config):
    """Every setting of the lab."""

    lengths: list = setting([25, 50, 100, 200], "sequence lengths", quick=[25, 50], kind="positive_int")
    tasks: list = setting(list(gf.TASKS), "tasks", quick=["adding"], choices=gf.TASKS)
    cells: list = setting(list(gf.CELLS), "cells", choices=gf.CELLS)
    steps: int = setting(300, "training steps per cell and length", quick=40)
    units: int = setting(32, "recurrent units")
    batch_size: int = setting(32, "examples per training step")
    seed: int = setting(0, "seed of the data and the weights", kind="int")
    clipnorm: float = setting(1.0, "global gradient norm to clip at")
    learning_rate: float = setting(3e-3, "Adam learning rate")


def build_parser():
    return cli.config_parser(GradientsConfig, "python -m trainers.gradients", __doc__.splitlines()[0],
                             "runs/gradients", out_help="folder for the plots and results.json")


def measure(task, length, cell, args):
    """Norms at initialisation and after training, the training curve and the held-out score."""
    probe = gf.make_probe(cell, task, args.units, seed=args.seed)
    x, y = gf.make_task(task, TRAIN_EXAMPLES, length, args.seed)
    probe_x, probe_y = gf.make_task(task, PROBE_BATCH, length, args.seed + 1)
    eval_x, eval_y = gf.make_task(task, EVAL_EXAMPLES, length, args.seed + 2)
    initial = gf.hidden_gradient_norms(probe, probe_x, probe_y)
    start = time.perf_counter()
    history = gf.train_probe(probe, x, y, args.steps, args.batch_size, args.learning_rate, args.clipnorm, args.seed)
    trained = gf.hidden_gradient_norms(probe, probe_x, probe_y)
    return {"initial_norms": initial.tolist(), "trained_norms": trained.tolist(),
            "score": probe.score(eval_x, eval_y), "loss": history["loss"], "grad_norm": history["grad_norm"],
            "seconds": round(time.perf_counter() - start, 1)}


def exploding(args, length=50):
    """SimpleRNN with a 3x orthogonal recurrent matrix on the adding task, trained by plain SGD
    with and without clipping the global gradient norm."""
    x, y = gf.make_task("adding", TRAIN_EXAMPLES, length, args.seed)
    runs = {}
    for label, clip in (("no clipping", None), (f"clipnorm {args.clipnorm}", args.clipnorm)):
        probe = gf.make_probe("simple_rnn", "adding", args.units, seed=args.seed,
                              recurrent_initializer=keras.initializers.Orthogonal(gain=EXPLODING_GAIN))
        runs[label] = gf.train_probe(probe, x, y, args.steps, args.batch_size, EXPLODING_LR, clip, args.seed, "sgd")
    return {"length": length, "gain": EXPLODING_GAIN, "optimizer": f"SGD {EXPLODING_LR}", "runs": runs}


def plot_clipping(result, path):
    import matplotlib.pyplot as plt

    figure, (norms, losses) = plt.subplots(1, 2, figsize=(10, 3.6), dpi=100)
    for label, run in result["runs"].items():
        norms.semilogy(run["grad_norm"], label=f"{label}: before clipping")
        if run["clipped_norm"] != run["grad_norm"]:
            norms.semilogy(run["clipped_norm"], "--", label=f"{label}: applied")
        losses.semilogy(run["loss"], label=label + (" (diverged)" if run["diverged"] else ""))
    norms.set(xlabel="training step", ylabel="global gradient norm",
              title=f"SimpleRNN, recurrent init {result['gain']}x orthogonal, {result['optimizer']}")
    losses.set(xlabel="training step", ylabel="adding-task loss (MSE)", title=f"length {result['length']}")
    for axes in (norms, losses):
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def main(argv=None):
    parsed = build_parser().parse_args(argv)
    args = cli.config_from_args(GradientsConfig, parsed)
    out = cli.output_folders(parsed, "gradients", folder="runs").out
    os.makedirs(out, exist_ok=True)
    started = time.time()
    results = {"settings": args.to_dict(), "backend": keras.backend.backend(), "tasks": {}}
    for task in args.tasks:
        for length in args.lengths:
            cells = {cell: measure(task, length, cell, args) for cell in args.cells}
            results["tasks"].setdefault(task, {})[str(length)] = cells
            for when in ("initial", "trained"):
                moment = "at initialisation" if when == "initial" else f"after {args.steps} steps"
                gf.plot_gradient_norms({gf.LABELS[c]: r[f"{when}_norms"] for c, r in cells.items()},
                                       f"{task}, length {length}, {moment}",
                                       os.path.join(out, f"{task}-{length}-{when}.png"))
            print(f"{task} length {length}: " + "; ".join(
                f"{gf.LABELS[c]} |dL/dh_0| {r['initial_norms'][0]:.2e} -> {r['trained_norms'][0]:.2e}, "
                f"{'MSE' if task == 'adding' else 'accuracy'} {r['score']:.3f}" for c, r in cells.items()), flush=True)
    results["exploding"] = exploding(args)
    plot_clipping(results["exploding"], os.path.join(out, "clipping.png"))
    for label, run in results["exploding"]["runs"].items():
        largest, final = max(run["grad_norm"], default=float("nan")), run["loss"][-1] if run["loss"] else float("nan")
        print(f"exploding SimpleRNN, {label}: largest gradient norm {largest:.3g}, final loss {final:.3g}"
              + (", diverged" if run["diverged"] else ""))
    results["seconds"] = round(time.time() - started, 1)
    with open(os.path.join(out, "results.json"), "w") as handle:
        json.dump(results, handle, indent=1)
    print(f"done in {results['seconds']} s; plots and results.json in {out}")
    return 0


if __name__ == "__main__":
    cli.run(main)
