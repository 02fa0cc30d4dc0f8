"""Generation speed of the saved character model, batch 1, on every backend.

    python -m benchmarks.generate_speed                       # saved_models/generate-shakespeare
    python -m benchmarks.generate_speed --model DIR --backends jax torch

Each backend runs in its own process: load the model, generate once to compile, then time
`--repeats` generations of `--length` characters after a short prompt (temperature 0.8, top-k 40,
new seed each time) through the streaming generator, and report the median characters per
second and the time to the first character (priming the prompt included).
"""

import argparse
import json
import os
import subprocess
import sys
import time

PROMPT = "ROMEO:\nWhat light through yonder window breaks?\n"


def child(model_dir, length, repeats):
    import keras

    from models.generator import CharGenerator

    generator = CharGenerator.load(model_dir)
    "".join(generator.stream(PROMPT, length=20, seed=0))  # compile the prime and the step
    rates, first = [], []
    for seed in range(repeats):
        start = time.perf_counter()
        stream = generator.stream(PROMPT, length=length, temperature=0.8, top_k=40, seed=seed)
        next(stream)
        first.append(time.perf_counter() - start)
        for _ in stream:
            pass
        rates.append(length / (time.perf_counter() - start))
    median = lambda values: sorted(values)[len(values) // 2]  # noqa: E731
    print(json.dumps({"backend": keras.backend.backend(), "chars_per_s": median(rates),
                      "first_char_ms": 1000 * median(first), "length": length, "repeats": repeats}))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=os.path.join("saved_models", "generate-shakespeare"))
    parser.add_argument("--backends", nargs="+", default=["jax", "tensorflow", "torch"],
                        choices=["tensorflow", "jax", "torch"])
    parser.add_argument("--length", type=int, default=1000, help="characters per generation (default 1000)")
    parser.add_argument("--repeats", type=int, default=5, help="timed generations per backend (default 5)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.model, args.length, args.repeats)
    if not os.path.isdir(args.model):
        sys.exit(f"no saved model at {args.model!r}: train one with `python -m trainers.generate`")
    print(f"model {args.model}, batch 1, {args.length} characters per generation, median of {args.repeats}")
    print("| backend | characters/s | first character (ms) |\n|---|---:|---:|")
    for backend in args.backends:
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
        cmd = [sys.executable, "-m", "benchmarks.generate_speed", "--child", "--model", args.model,
               "--length", str(args.length), "--repeats", str(args.repeats)]
        result = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            sys.exit(f"benchmark failed on {backend}:\n{result.stderr[-3000:]}")
        row = json.loads(result.stdout.strip().splitlines()[-1])
        print(f"| {backend} | {row['chars_per_s']:.0f} | {row['first_char_ms']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
