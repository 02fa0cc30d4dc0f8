"""Training throughput of each trainer's model: ours vs Keras' fused built-ins, float32 vs mixed
precision, on every backend, with the fraction of the device's matrix-product peak reached.

    python -m benchmarks.gpu                          # all backends, each in its own process
    python -m benchmarks.gpu --backends jax --steps 5 # a quick look

On a GPU this is the measurement of record (`benchmarks/RESULTS.md`, with the GPU's name); on a
CPU it runs as a smoke test (mixed precision is skipped there: float16 arithmetic on a CPU is
emulated and says nothing). The models are the trainers' networks on synthetic batches of fixed
shapes (the trainers' defaults when this benchmark was written, kept so that tables compare; the
trainers' batches are smaller now on a CPU, e.g. `trainers.generate` 16 x 100, and translation
uses 8,000 / 4,000 subword pieces):

- translate: Seq2SeqAttention, GRU 256, vocabularies 15,000/8,000, batch 64, 16 source and 16
  target tokens;
- sentiment: SentimentNet, bidirectional LSTM 64, vocabulary 20,000, batch 32, 400 words;
- generate: CharLM, 2 x LSTM 512, 65 characters, batch 64, 128 characters.

Peak: a float32 (and, with mixed precision, float16/bfloat16) 8192x8192 matmul on the device;
achieved = the recurrent and output matrix products of a training step (forward + 2x backward)
per second. Samples/s counts sequences.
"""

import argparse
import json
import os
import subprocess
import sys
import time

CASES = {
    "translate": dict(batch=64, source=16, target=16),
    "sentiment": dict(batch=32, time=400),
    "generate": dict(batch=64, time=128),
}


def build(case, rnn_impl):
    """`(model, inputs, targets, loss, matmul flops of one training step)`."""
    import keras
    import numpy as np

    rng = np.random.default_rng(0)
    c = CASES[case]
    if case == "translate":
        from models.seq2seq import Seq2SeqAttention, Seq2SeqConfig, masked_loss

        model = Seq2SeqAttention(Seq2SeqConfig(source_vocab_size=15000, target_vocab_size=8000, rnn_impl=rnn_impl))
        x = (rng.integers(4, 15000, (c["batch"], c["source"])), rng.integers(4, 8000, (c["batch"], c["target"])))
        y = rng.integers(4, 8000, (c["batch"], c["target"]))
        b, s, t, u, e, v = c["batch"], c["source"], c["target"], 256, 128, 8000
        macs = (2 * s * 3 * u * (e + u) + t * 3 * u * (e + u)  # encoder (both directions), decoder
                + s * 2 * u * u + t * u * u + t * s * (u + 2 * u)  # attention: keys, queries, scores, context
                + t * 3 * u * e + t * e * v)  # attentional state, tied output
        forward = 2 * b * macs
        loss = masked_loss
    elif case == "sentiment":
        from models.sentiment import SentimentNet, SentimentNetConfig

        model = SentimentNet(SentimentNetConfig(vocab_size=20000, rnn_impl=rnn_impl))
        x = rng.integers(4, 20000, (c["batch"], c["time"]))
        y = rng.integers(0, 2, (c["batch"], 1)).astype("float32")
        forward = 2 * c["batch"] * c["time"] * 2 * 4 * 64 * (128 + 64)
        loss = keras.losses.BinaryCrossentropy(from_logits=True)
    else:
        from models.char_lm import CharLM, CharLMConfig

        model = CharLM(CharLMConfig(vocab_size=65, rnn_impl=rnn_impl))
        x = rng.integers(0, 65, (c["batch"], c["time"]))
        y = rng.integers(0, 65, (c["batch"], c["time"]))
        forward = 2 * c["batch"] * c["time"] * (4 * 512 * (64 + 512) + 4 * 512 * 1024 + 512 * 65)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.build()
    model.compile(keras.optimizers.Adam(1e-3), loss=loss)
    inputs = tuple(a.astype("int32") for a in x) if isinstance(x, tuple) else x.astype("int32")
    targets = y if y.dtype == "float32" else y.astype("int32")  # labels float32, token ids int32
    return model, inputs, targets, 3 * forward


def peak_tflops(dtype, n=8192, repeats=5):
    import keras

    n = n if device_kind() != "cpu" else 2048
    a = keras.ops.cast(keras.random.normal((n, n)), dtype)
    b = keras.ops.cast(keras.random.normal((n, n)), dtype)
    keras.ops.convert_to_numpy(keras.ops.matmul(a, b)[0, 0])
    start = time.perf_counter()
    for _ in range(repeats):
        keras.ops.convert_to_numpy(keras.ops.matmul(a, b)[0, 0])
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e12


def device_kind():
    from trainers.devices import list_devices

    first = list_devices()[0].lower()
    return "gpu" if first.startswith(("gpu", "cuda")) else "cpu"


def child(steps, precisions):
    import keras

    from trainers.devices import list_devices

    rows = []
    for precision in precisions:
        keras.mixed_precision.set_global_policy(precision)
        compute = keras.mixed_precision.global_policy().compute_dtype
        peak = peak_tflops(compute)
        for case in CASES:
            for impl in ("ours", "keras"):
                model, x, y, flops = build(case, impl)
                for _ in range(2):  # compile and warm up
                    model.train_on_batch(x, y)
                start = time.perf_counter()
                for _ in range(steps):
                    loss = model.train_on_batch(x, y)
                seconds = (time.perf_counter() - start) / steps
                rows.append({"backend": keras.backend.backend(), "device": list_devices()[0], "case": case,
                             "rnn_impl": impl, "precision": precision, "samples_per_s": CASES[case]["batch"] / seconds,
                             "tflops": flops / seconds / 1e12, "peak_tflops": peak, "loss": float(loss)})
                print(json.dumps(rows[-1]), flush=True)
    keras.mixed_precision.set_global_policy("float32")
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=["jax", "tensorflow", "torch"],
                        choices=["tensorflow", "jax", "torch"])
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per cell (default 20)")
    parser.add_argument("--precisions", nargs="+", default=None,
                        help="dtype policies (default: float32 and mixed_float16 on a GPU, float32 on a CPU)")
    parser.add_argument("--json", help="also write the raw rows to this file")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        precisions = args.precisions or (["float32", "mixed_float16"] if device_kind() == "gpu" else ["float32"])
        child(args.steps, precisions)
        return
    rows = []
    for backend in args.backends:
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
        cmd = [sys.executable, "-m", "benchmarks.gpu", "--child", "--steps", str(args.steps)]
        if args.precisions:
            cmd += ["--precisions", *args.precisions]
        result = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            sys.exit(f"benchmark failed on {backend}:\n{result.stderr[-3000:]}")
        rows += [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    print("| backend | device | model | precision | ours (samples/s) | built-in (samples/s) | ours / built-in "
          "| ours TFLOP/s (% of peak) | built-in TFLOP/s (% of peak) |\n|---|---|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        if r["rnn_impl"] != "ours":
            continue
        k = next(o for o in rows
                 if o["rnn_impl"] == "keras" and all(o[f] == r[f] for f in ("backend", "case", "precision")))
        print(f"| {r['backend']} | {r['device']} | {r['case']} | {r['precision']} | {r['samples_per_s']:.0f} "
              f"| {k['samples_per_s']:.0f} | {r['samples_per_s'] / k['samples_per_s']:.2f} "
              f"| {r['tflops']:.3f} ({100 * r['tflops'] / r['peak_tflops']:.0f}%) "
              f"| {k['tflops']:.3f} ({100 * k['tflops'] / k['peak_tflops']:.0f}%) |")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()
