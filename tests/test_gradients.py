"""Gradient-flow lab: the norms are finite and positive, what reaches the first step at
initialisation (measured), clipping bounds the global norm, and the CLI writes its plots."""

import json
import os

import keras
import numpy as np

from models import gradient_flow as gf
from trainers import gradients as lab


def test_hidden_gradient_norms_are_finite_and_positive():
    for task in gf.TASKS:
        x, y = gf.make_task(task, 16, 20, seed=0)
        for cell in gf.CELLS:
            norms = gf.hidden_gradient_norms(gf.make_probe(cell, task, units=8), x, y)
            assert norms.shape == (20,) and np.all(np.isfinite(norms)) and np.all(norms > 0), (task, cell)
            assert norms[-1] > norms[0]  # nearer the loss, more gradient (at initialisation)


def test_first_step_gradient_at_initialisation_on_the_adding_problem():
    """Length 100, 32 units, Keras' default initialisers, batch 64, seed 0. Measured (JAX, TF and
    torch agree): |dL/dh_0| = 2.1e-7 for SimpleRNN, 8.2e-11 for LSTM, below 1e-20 for GRU. At
    initialisation the *SimpleRNN* passes about 2,500x more gradient to the first step: its
    recurrent matrix starts orthogonal, which preserves norms, while the LSTM's forget gate starts
    at sigmoid(1) = 0.73 (unit_forget_bias) and the GRU's update gate at 0.5, so their memory
    decays like 0.73^t and 0.5^t until training opens the gates. The LSTM's edge is learned, not
    built in: see the trained norms of `python -m trainers.gradients`."""
    x, y = gf.make_task("adding", 64, 100, seed=0)
    first = {cell: gf.hidden_gradient_norms(gf.make_probe(cell, "adding", units=32), x, y)[0] for cell in gf.CELLS}
    assert first["simple_rnn"] / first["lstm"] > 100  # measured 2.5e3
    assert first["lstm"] / max(first["gru"], 1e-38) > 1e3  # measured > 1e9


def test_clipping_bounds_the_global_norm():
    x, y = gf.make_task("adding", 512, 30, seed=0)
    probe = gf.make_probe("simple_rnn", "adding", units=16,
                          recurrent_initializer=keras.initializers.Orthogonal(gain=3.0))
    history = gf.train_probe(probe, x, y, steps=6, batch_size=16, learning_rate=0.05, clipnorm=1.0, optimizer="sgd")
    assert max(history["grad_norm"]) > 10  # explodes
    assert max(history["clipped_norm"]) <= 1.0 + 1e-6
    assert np.all(np.isfinite(history["loss"]))


def test_cli_writes_plots_and_results(tmp_path, capsys):
    out = tmp_path / "lab"
    assert lab.main(["--quick", "--lengths", "8", "--cells", "lstm", "gru", "--steps", "3", "--units", "8",
                     "--out", str(out)]) == 0
    files = set(os.listdir(out))
    assert {"adding-8-initial.png", "adding-8-trained.png", "clipping.png", "results.json"} <= files
    results = json.loads((out / "results.json").read_text())
    assert len(results["tasks"]["adding"]["8"]["lstm"]["initial_norms"]) == 8
    assert "no clipping" in results["exploding"]["runs"]
    assert "adding length 8" in capsys.readouterr().out
