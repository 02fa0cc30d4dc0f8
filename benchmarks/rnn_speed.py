"""Speed of our LSTM/GRU against Keras' built-ins, on every backend.

    python -m benchmarks.rnn_speed                 # all three backends, each in its own process
    python -m benchmarks.rnn_speed --backends jax  # one backend
    python -m benchmarks.rnn_speed --backends jax --jax-input-product-steps 1  # JAX's loop as before session 22

Shapes: batch 64, 100 timesteps, 128 input features, 256 units (LSTM and GRU, with and without a
mask). For each, a training step (forward, backward and an Adam update of a model made of the
recurrent layer and a Dense head, through `train_on_batch`) and inference (`predict_on_batch`) are
timed for ours and for the built-in with its default settings. The table gives samples per second,
the ratio ours / built-in, and the achieved GFLOP/s of the recurrent layer against a large float32
matrix product timed in the same process. `torch.nn.LSTM`/`torch.nn.GRU` run as an outside
reference, and on JAX also timed in the same process as ours, in turn (the last column: the
paired ratio, above 1 where ours is faster). On JAX our LSTM runs the fused CPU kernel of
`layers/native_lstm.py` where it applies; `RNN_SUITE_NATIVE_LSTM=0` times XLA's loop instead.
Use `--json FILE` to keep the raw numbers.
"""

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time

from trainers import allocator
from trainers.cli import positive_int

BATCH, TIME, FEATURES, UNITS = 64, 100, 128, 256
FIT_BATCHES = 20  # batches of one timed `fit` epoch
GATES = {"LSTM": 4, "GRU": 3}


def recurrent_gflop(kind, training):
    """Matrix-product work of one batch: 2 flops per multiply-add, backward = 2x forward."""
    forward = 2 * BATCH * TIME * (FEATURES + UNITS) * GATES[kind] * UNITS
    return (3 if training else 1) * forward / 1e9


def best_time(fn, repeats, warmup=2):
    """Median seconds of `fn()` over `repeats` runs after `warmup` runs."""
    return interleaved_times([fn], repeats, warmup)[0][0]


def interleaved_times(fns, repeats, warmup=5):
    """Time `fns` in turn within every round, so that a slow phase of the machine (another
    process, thermal drift) hits all of them alike.

    Returns `(medians, paired)`: the median seconds of each function, and for each function the
    median over rounds of `time of fns[0] / time of this function` within the same round (the
    paired ratio, steadier than a ratio of medians on a noisy machine).
    """
    for fn in fns:
        for _ in range(warmup):
            fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, bucket in zip(fns, times):
            start = time.perf_counter()
            fn()
            bucket.append(time.perf_counter() - start)
    median = lambda values: sorted(values)[len(values) // 2]  # noqa: E731
    paired = [median([a / b for a, b in zip(times[0], bucket)]) for bucket in times]
    return [median(bucket) for bucket in times], paired


def matmul_peak_gflops(n=2048):
    """float32 GFLOP/s of an n x n matrix product with the current backend."""
    import keras
    from keras import ops

    a = keras.random.normal((n, n))
    b = keras.random.normal((n, n))
    seconds = best_time(lambda: ops.convert_to_numpy(ops.matmul(a, b)[0, 0]), repeats=5)
    return 2 * n**3 / seconds / 1e9


def keras_model(kind, ours, masked):
    import keras

    import layers

    layer_cls = getattr(layers, kind) if ours else getattr(keras.layers, kind)
    x = keras.Input((TIME, FEATURES))
    mask = keras.Input((TIME,), dtype="bool") if masked else None
    h = layer_cls(UNITS)(x, mask=mask)
    y = keras.layers.Dense(1)(h)
    model = keras.Model([x, mask] if masked else x, y)
    model.compile(keras.optimizers.Adam(1e-3), "mse")
    return model


def synthetic_batch(n, masked, seed):
    """`(inputs, y)`: `n` random sequences (n, TIME, FEATURES) and targets (n, 1); with `masked`,
    inputs are `[x, mask (n, TIME)]`, each row valid on a prefix of TIME/2 to TIME steps."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, TIME, FEATURES)).astype("float32")
    y = rng.normal(size=(n, 1)).astype("float32")
    lengths = rng.integers(TIME // 2, TIME + 1, size=n)
    return ([x, np.arange(TIME)[None] < lengths[:, None]] if masked else x), y


def time_keras(kind, masked, repeats):
    """Seconds per training step and per inference batch, ours and built-in, interleaved.

    Returns `{"ours_train_s", "builtin_train_s", "ours_infer_s", "builtin_infer_s"}`."""
    inputs, y = synthetic_batch(BATCH, masked, seed=0)
    models = {"ours": keras_model(kind, True, masked), "builtin": keras_model(kind, False, masked)}
    # The built-in runs first in each round: paired[1] = built-in time / our time = our speed-up.
    order = [models["builtin"], models["ours"]]
    train, train_paired = interleaved_times([lambda m=m: m.train_on_batch(inputs, y) for m in order], repeats)
    infer, infer_paired = interleaved_times([lambda m=m: m.predict_on_batch(inputs) for m in order], repeats)
    return {
        "ours_train_s": train[1], "builtin_train_s": train[0], "train_ratio": train_paired[1],
        "ours_infer_s": infer[1], "builtin_infer_s": infer[0], "infer_ratio": infer_paired[1],
    }


def time_fit_epochs(kind, masked, epochs, batches=FIT_BATCHES):
    """Seconds of whole `model.fit` epochs over `batches` batches, ours and built-in in turn
    (after one warm-up epoch each): a second way to time them, with Keras' own loop, data
    adapter and callbacks in the measurement. Each epoch is timed twice: the whole `fit` call,
    and from the epoch's start to its end as Keras' callbacks see them, which leaves out the
    teardown of the epoch's data iterator after its last batch (on TensorFlow, `tf.data` takes
    0-1.5 s there at random, as long for either layer: benchmarks/RESULTS.md, session 19).

    Returns `{"ours_fit_s", "builtin_fit_s", "ours_epoch_s", "builtin_epoch_s"}`, lists of seconds."""
    import keras

    class EpochClock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds = time.perf_counter() - self.start

    inputs, y = synthetic_batch(batches * BATCH, masked, seed=1)
    models = {"builtin": keras_model(kind, False, masked), "ours": keras_model(kind, True, masked)}
    times = {f"{name}_{what}": [] for name in models for what in ("fit_s", "epoch_s")}
    for round_ in range(epochs + 1):
        for name, model in models.items():
            clock = EpochClock()
            start = time.perf_counter()
            model.fit(inputs, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0, callbacks=[clock])
            if round_:  # the first epoch compiles
                times[f"{name}_fit_s"].append(time.perf_counter() - start)
                times[f"{name}_epoch_s"].append(clock.seconds)
    return times


def torch_reference_steps(kind):
    """`(train_step, infer_step)` of `torch.nn.LSTM`/`GRU` (oneDNN's fused kernels on a CPU) with
    the same Dense head, loss and Adam update as `keras_model`, on a random batch."""
    import torch

    rnn = getattr(torch.nn, kind)(FEATURES, UNITS, batch_first=True)
    head = torch.nn.Linear(UNITS, 1)
    params = list(rnn.parameters()) + list(head.parameters())
    optimizer = torch.optim.Adam(params, 1e-3)
    x = torch.randn(BATCH, TIME, FEATURES)
    y = torch.randn(BATCH, 1)

    def train_step():
        optimizer.zero_grad()
        out, _ = rnn(x)
        loss = torch.nn.functional.mse_loss(head(out[:, -1]), y)
        loss.backward()
        optimizer.step()

    def infer_step():
        with torch.no_grad():
            head(rnn(x)[0][:, -1])

    return train_step, infer_step


def time_torch_reference(kind, repeats):
    train_step, infer_step = torch_reference_steps(kind)
    return best_time(train_step, repeats), best_time(infer_step, repeats)


def time_against_torch_nn(kind, repeats):
    """Ours (unmasked) against `torch.nn` in the same process, in turn within every round: the
    paired ratios `torch.nn time / our time` (above 1: ours faster), steadier than comparing
    timings from two processes minutes apart on a machine that drifts."""
    inputs, y = synthetic_batch(BATCH, False, seed=0)
    model = keras_model(kind, True, False)
    train_step, infer_step = torch_reference_steps(kind)
    _, train = interleaved_times([train_step, lambda: model.train_on_batch(inputs, y)], repeats)
    _, infer = interleaved_times([infer_step, lambda: model.predict_on_batch(inputs)], repeats)
    return {"torchnn_train_ratio": train[1], "torchnn_infer_ratio": infer[1]}


def child(repeats, fit_epochs, input_product_steps=None):
    """Runs in a process whose KERAS_BACKEND is already set; prints one JSON line per result."""
    allocator.reuse_freed_memory()  # as the trainers run (both layers and torch.nn alike)
    import keras

    backend = keras.backend.backend()
    if input_product_steps is not None:
        from layers import jax_recurrent

        jax_recurrent.INPUT_PRODUCT_STEPS = input_product_steps
    print(json.dumps({"backend": backend, "peak_gflops": matmul_peak_gflops()}), flush=True)
    for kind in ("LSTM", "GRU"):
        for masked in (False, True):
            row = {"backend": backend, "kind": kind, "masked": masked}
            row.update(time_keras(kind, masked, repeats))
            if fit_epochs:
                row.update(time_fit_epochs(kind, masked, fit_epochs))
            if backend == "jax" and not masked and importlib.util.find_spec("torch") is not None:
                row.update(time_against_torch_nn(kind, repeats))
            print(json.dumps(row), flush=True)
        if backend == "torch":
            train, infer = time_torch_reference(kind, repeats)
            print(json.dumps({"backend": "torch.nn", "kind": kind, "masked": False, "ref_train_s": train,
                              "ref_infer_s": infer}), flush=True)


def run_backends(backends, repeats, fit_epochs, input_product_steps=None):
    rows = []
    for backend in backends:
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
        cmd = [sys.executable, "-m", "benchmarks.rnn_speed", "--child", "--repeats", str(repeats),
               "--fit-epochs", str(fit_epochs)]
        if input_product_steps is not None:
            cmd += ["--jax-input-product-steps", str(input_product_steps)]
        result = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            sys.exit(f"benchmark failed on {backend}:\n{result.stderr[-3000:]}")
        rows += [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return rows


def format_table(rows):
    peaks = {r["backend"]: r["peak_gflops"] for r in rows if "peak_gflops" in r}
    lines = [
        "| backend | layer | mask | train ours (samples/s) | train built-in | train ratio | "
        "infer ours (samples/s) | infer built-in | infer ratio | ours train GFLOP/s (% of matmul peak) | "
        "ours / torch.nn, train, infer (paired) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "ours_train_s" in r:
            peak = peaks[r["backend"]]
            gflops = recurrent_gflop(r["kind"], True) / r["ours_train_s"]
            lines.append(
                f"| {r['backend']} | {r['kind']} | {'yes' if r['masked'] else 'no'} "
                f"| {BATCH / r['ours_train_s']:.0f} | {BATCH / r['builtin_train_s']:.0f} "
                f"| **{r['train_ratio']:.2f}** "
                f"| {BATCH / r['ours_infer_s']:.0f} | {BATCH / r['builtin_infer_s']:.0f} "
                f"| {r['infer_ratio']:.2f} "
                f"| {gflops:.1f} ({100 * gflops / peak:.0f}% of {peak:.0f}) "
                + (f"| {r['torchnn_train_ratio']:.2f}, {r['torchnn_infer_ratio']:.2f} |" if "torchnn_train_ratio" in r
                   else "| |")
            )
        elif "ref_train_s" in r:
            gflops = recurrent_gflop(r["kind"], True) / r["ref_train_s"]
            lines.append(
                f"| torch.nn (reference) | {r['kind']} | no | {BATCH / r['ref_train_s']:.0f} | | "
                f"| {BATCH / r['ref_infer_s']:.0f} | | | "
                f"{gflops:.1f} ({100 * gflops / peaks['torch']:.0f}% of {peaks['torch']:.0f}) | |"
            )
    return "\n".join(lines)


def format_fit_table(rows):
    """Whole-epoch timings: for the whole `fit` calls and for the epochs inside them (see
    `time_fit_epochs`), the best seconds of ours and the built-in, the ratio built-in / ours (ours'
    speed-up) of the best epochs, and its range over the rounds (each round times both in turn)."""
    lines = ["| backend | layer | mask | fit call: ours s (min-max) | built-in s (min-max) | ratio of bests "
             "| per round | epoch inside fit: ours s | built-in s | ratio of bests | per round |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "ours_fit_s" not in r:
            continue
        cells = []
        for what, with_range in (("fit_s", True), ("epoch_s", False)):
            ours, builtin = r[f"ours_{what}"], r[f"builtin_{what}"]
            best = lambda v: f"{min(v):.2f}" + (f" ({min(v):.2f}-{max(v):.2f})" if with_range else "")  # noqa: E731
            per_round = [b / o for o, b in zip(ours, builtin)]
            cells.append(f"| {best(ours)} | {best(builtin)} | **{min(builtin) / min(ours):.2f}** "
                         f"| {min(per_round):.2f}-{max(per_round):.2f}")
        lines.append(f"| {r['backend']} | {r['kind']} | {'yes' if r['masked'] else 'no'} {' '.join(cells)} |")
    return "\n".join(lines) if len(lines) > 2 else ""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=["tensorflow", "jax", "torch"],
                        choices=["tensorflow", "jax", "torch"])
    parser.add_argument("--repeats", type=int, default=15, help="timed runs per measurement (median)")
    parser.add_argument("--fit-epochs", type=int, default=3,
                        help=f"also time this many whole fit epochs of {FIT_BATCHES} batches each, ours and built-in "
                             "in turn (0: skip)")
    parser.add_argument("--jax-input-product-steps", type=positive_int, metavar="N",
                        help="JAX on a CPU: steps per iteration of our forward loop, sharing one input product "
                             "(default: layers/jax_recurrent.INPUT_PRODUCT_STEPS; 1 is the per-step loop of before)")
    parser.add_argument("--json", help="also write the raw rows to this file")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.repeats, args.fit_epochs, args.jax_input_product_steps)
    rows = run_backends(args.backends, args.repeats, args.fit_epochs, args.jax_input_product_steps)
    print(f"batch {BATCH}, {TIME} steps, {FEATURES} inputs, {UNITS} units; ratio = ours / built-in throughput "
          "(median over rounds of the paired ratio)")
    print(format_table(rows))
    fits = format_fit_table(rows)
    if fits:
        print(f"\nwhole fit epochs of {FIT_BATCHES} batches ({args.fit_epochs} per layer after a warm-up epoch); "
              "ratio = built-in / ours seconds; 'epoch inside fit' leaves out the data iterator's teardown")
        print(fits)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
