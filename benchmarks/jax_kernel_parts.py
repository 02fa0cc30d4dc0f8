"""JAX: where the training time of our recurrent kernel goes, part by part.

    KERAS_BACKEND=jax python -m benchmarks.jax_kernel_parts                 # LSTM, 64 x 100 x 128 -> 256
    KERAS_BACKEND=jax python -m benchmarks.jax_kernel_parts --cell gru --rounds 50
    KERAS_BACKEND=jax python -m benchmarks.jax_kernel_parts \
        --compare-xla-flags="--xla_cpu_enable_concurrency_optimized_scheduler=true"

Times `layers/jax_recurrent.py`'s kernel alone (no Keras model, no optimizer), each part a jitted
function of its own, timed in turn within every round (`benchmarks.rnn_speed.interleaved_times`):

- `forward`: the forward loop as inference runs it (keeps nothing);
- `forward, keeping`: the same keeping what the backward pass reads (`jax.vjp`'s forward);
- `backward`: the backward pass from those residuals (the backward loop, then the products over
  all steps);
- `products`: those products alone, `h^T dz`, `x^T dz`, `dz W^T` over all steps;
- `backward loop` = backward - products (a difference of medians, so only a guide);
- `gradient`: forward, keeping, and backward in one function, as a training step runs them;
- `chained products`: the loops' products alone, `steps` of them in a scan, each feeding the next:
  `h U` (the forward's shape, `batch x units` by `units x gates units`) and `d_z U^T` (the
  backward's, a reduction over `gates x units` into `units` columns).

The matrix-product work of each part is reported as GFLOP/s beside JAX's float32 peak (the best of
three reads of `benchmarks.rnn_speed.matmul_peak_gflops`, 2048 x 2048 products).
`--compare-xla-flags FLAGS` runs the whole table in child processes, alternately without and with
`XLA_FLAGS=FLAGS` (XLA reads its flags once per process), `--pairs` times each; write it with `=`,
as above, since the flags begin with dashes.
"""

import argparse
import json
import os
import subprocess
import sys

from benchmarks.rnn_speed import interleaved_times, matmul_peak_gflops
from trainers import allocator
from trainers.cli import positive_int

ROWS = ("forward", "forward, keeping", "backward", "products", "backward loop", "gradient",
        "chained products, forward's shape", "chained products, backward's shape")


def kernel_parts(cell_name, batch, steps, features, units, seed=0):
    """`{part: (jitted function, its arguments, matrix-product GFLOP)}` for one layer's kernel."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from layers import fused_steps, jax_recurrent
    from layers.cells import GRUCell, LSTMCell

    cell = (LSTMCell if cell_name == "lstm" else GRUCell)(units)
    cell.build((batch, features))
    kind = fused_steps.cell_steps(cell)
    whole = jax_recurrent._sequence(kind, True, False)
    rng = np.random.default_rng(seed)
    xs = jnp.asarray(rng.standard_normal((steps, batch, features), dtype=np.float32))
    states = tuple(jnp.zeros((batch, units)) for _ in range(2 if cell_name == "lstm" else 1))
    weights = tuple(jnp.asarray(w) for w in (cell.kernel, cell.recurrent_kernel, cell.bias))
    d_outputs = jnp.asarray(rng.standard_normal((steps, batch, units), dtype=np.float32))
    cotangents = (d_outputs, tuple(jnp.zeros_like(s) for s in states))

    def forward(weights, xs, states):
        return whole(*weights, xs, states, None)

    def keeping(weights, xs, states):
        return jax.vjp(lambda w, x: whole(*w, x, states, None), weights, xs)  # (outputs, backward function)

    def gradient(weights, xs, states):
        outputs, backward = keeping(weights, xs, states)
        return backward(cotangents)

    _, backward_fn = jax.jit(keeping)(weights, xs, states)
    width = cell.gates * units
    d_z = jnp.asarray(rng.standard_normal((steps * batch, width), dtype=np.float32))
    h_all = jnp.asarray(rng.standard_normal((steps * batch, units), dtype=np.float32))
    x_all = xs.reshape(steps * batch, features)

    def products(h_all, x_all, d_z, kernel):
        return h_all.T @ d_z, x_all.T @ d_z, d_z @ kernel.T

    def chained(shape):
        """`steps` products of `batch` rows in a scan, each feeding the next, as the loops run them:
        `h U` (forward's shape) or `d_z U^T` (backward's: a reduction over all gates' units)."""
        def run(start, recurrent_kernel):  # the kernel an argument, as in the layer: not a constant to fold
            def body(carry, _):
                if shape == "forward":
                    # every column read (a slice of the product would let XLA compute only that slice)
                    return jnp.tanh(jnp.sum((carry @ recurrent_kernel).reshape(batch, cell.gates, units), axis=1)), None
                return jnp.tile(jnp.tanh(carry @ recurrent_kernel.T), (1, cell.gates)), None
            return jax.lax.scan(body, start, None, length=steps)[0]
        return run

    step_flop = 2 * batch * steps * (features + units) * width / 1e9  # x W and h U over all steps
    loop_flop = 2 * batch * steps * units * width / 1e9  # h U (forward) or d_z U^T (backward) over all steps
    return {
        "forward": (jax.jit(forward), (weights, xs, states), step_flop),
        "forward, keeping": (jax.jit(keeping), (weights, xs, states), step_flop),
        "backward": (jax.jit(lambda f, ct: f(ct)), (backward_fn, cotangents), 2 * step_flop),
        "products": (jax.jit(products), (h_all, x_all, d_z, weights[0]),
                     2 * batch * steps * width * (units + 2 * features) / 1e9),
        "gradient": (jax.jit(gradient), (weights, xs, states), 3 * step_flop),
        "chained products, forward's shape": (jax.jit(chained("forward")), (h_all[:batch], weights[1]), loop_flop),
        "chained products, backward's shape": (jax.jit(chained("backward")), (d_z[:batch], weights[1]), loop_flop),
    }


def measure(args):
    """The table's rows as dicts, timed in this process."""
    allocator.reuse_freed_memory()  # as the trainers run
    import jax

    parts = kernel_parts(args.cell, args.batch, args.steps, args.features, args.units)
    calls = [lambda f=f, a=a: jax.block_until_ready(f(*a)) for f, a, _ in parts.values()]
    medians, _ = interleaved_times(calls, args.rounds)
    seconds = dict(zip(parts, medians))
    seconds["backward loop"] = seconds["backward"] - seconds["products"]
    flop = {name: gflop for name, (_, _, gflop) in parts.items()}
    flop["backward loop"] = flop["backward"] - flop["products"]  # d_z U^T each step
    peak = max(matmul_peak_gflops() for _ in range(3))  # one read is a median of 5: low when the machine stalls
    return {"peak_gflops": peak, "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "parts": {name: {"ms": 1e3 * s, "gflops": flop[name] / s} for name, s in seconds.items()}}


def format_table(result, args):
    lines = [f"JAX {args.cell.upper()} kernel, {args.batch} x {args.steps} x {args.features} -> {args.units}, "
             f"medians of {args.rounds} rounds; XLA_FLAGS={result['xla_flags'] or '(none)'}; "
             f"matmul peak {result['peak_gflops']:.0f} GFLOP/s",
             "| part | ms | product GFLOP/s (% of peak) |", "|---|---:|---:|"]
    for name in ROWS:
        row = result["parts"][name]
        share = 100 * row["gflops"] / result["peak_gflops"]
        lines.append(f"| {name} | {row['ms']:.1f} | {row['gflops']:.0f} ({share:.0f}%) |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cell", choices=("lstm", "gru"), default="lstm")
    parser.add_argument("--batch", type=positive_int, default=64)
    parser.add_argument("--steps", type=positive_int, default=100)
    parser.add_argument("--features", type=positive_int, default=128)
    parser.add_argument("--units", type=positive_int, default=256)
    parser.add_argument("--rounds", type=positive_int, default=30, help="timed rounds of every part")
    parser.add_argument("--compare-xla-flags", metavar="FLAGS",
                        help="alternate child processes without and with XLA_FLAGS=FLAGS")
    parser.add_argument("--pairs", type=positive_int, default=3,
                        help="child processes of each, with --compare-xla-flags")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # a child's output
    args = parser.parse_args(argv)
    if os.environ.get("KERAS_BACKEND") != "jax":
        parser.error("run with KERAS_BACKEND=jax (this profiles the JAX kernel)")
    if not args.compare_xla_flags:
        result = measure(args)
        print(json.dumps(result) if args.json else format_table(result, args), flush=True)
        return 0
    child_args = [f"--{name}={getattr(args, name)}"
                  for name in ("cell", "batch", "steps", "features", "units", "rounds")]
    for _ in range(args.pairs):
        for flags in ("", args.compare_xla_flags):
            env = {**os.environ, "XLA_FLAGS": flags}
            child = subprocess.run([sys.executable, "-m", "benchmarks.jax_kernel_parts", *child_args, "--json"],
                                   env=env, capture_output=True, text=True)
            if child.returncode:  # XLA aborts on a flag it does not know: say which, not a traceback
                last = (child.stderr.strip().splitlines() or ["no message"])[-1]
                parser.error(f"the run with XLA_FLAGS={flags!r} failed: {last}")
            print(format_table(json.loads(child.stdout.strip().splitlines()[-1]), args), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
