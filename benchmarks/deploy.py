"""Serving the shipped models: Keras on each backend against the ONNX runtime (float32 and int8)
and Keras' own int8, side by side in one run.

    python -m trainers.export --model saved_models/translate-spa-eng     # once per model: exports/
    python -m benchmarks.deploy [--tasks translation sentiment generation] [--quality]

For every task and way of serving, a fresh process loads the model and answers one request; its
**cold start** is the time from starting the process to that first answer, and its **memory** the
peak resident set after it. The same process then times **one request** (p50 of 30: a greedy
translation of one sentence, one review's probability, 100 generated characters) and
**throughput at batch 32** (sentences translated greedily, reviews classified, characters scored
per second over 32 streams). `--quality` adds what int8 costs: test BLEU (beam 5), test accuracy,
validation nats per character of the float32 ONNX graphs (the same as Keras) and of both int8
versions, on the splits the trainers report.

The processes run one after another, so only one uses the CPU at a time; run it on an otherwise
idle machine. Results: a Markdown table on stdout and `benchmarks/results/deploy.json`.
"""

import argparse
import json
import os
import subprocess
import sys
import time

TASKS = {"translation": "translate-spa-eng", "sentiment": "sentiment-imdb", "generation": "generate-shakespeare"}
SERVINGS = ("keras-jax", "keras-tensorflow", "keras-torch", "keras-int8 (jax)", "onnx", "onnx-int8")
SENTENCES = ["¿Dónde está la estación de tren?", "Me gustaría aprender a tocar el piano.",
             "Tom no sabe nadar, pero su hermana sí.", "Hace mucho frío esta mañana.",
             "El ciclista ganó la carrera a pesar de la lluvia.", "¿Puedes ayudarme con mis deberes?",
             "Mi abuela cultiva tomates y berenjenas en el huerto.", "La biblioteca cierra los domingos."]
REVIEWS = ["A moving, beautifully acted film. The ending stayed with me for days.",
           "Two hours of my life I will never get back. Wooden acting and a plot full of holes.",
           "The first half drags, but the last act is superb and the music is wonderful.",
           "Not bad at all, although I expected more from this director."]
RESULTS = os.path.join(os.path.dirname(__file__), "results", "deploy.json")


# --- one serving, in its own process ----------------------------------------------------------------

def load(task, serving, saved, export):
    """The servable of `task` served as `serving`."""
    if serving.startswith("onnx"):
        import runtime

        return runtime.load(export, int8=serving == "onnx-int8")
    from trainers.export import load_servable

    return load_servable(os.path.join(export, "keras-int8") if "int8" in serving else saved)[0]


def request(task, servable, i=0):
    """One request of batch 1."""
    if task == "translation":
        return servable.translate([SENTENCES[i % len(SENTENCES)]])[0].text
    if task == "sentiment":
        return float(servable.predict([REVIEWS[i % len(REVIEWS)]])[0])
    return servable.generate("ROMEO:\n", length=100, temperature=0.8, seed=i)


def throughput(task, servable):
    """Items per second at batch 32 (sentences, reviews, or characters scored over 32 streams)."""
    if task == "translation":
        batch, count = (SENTENCES * 4)[:32], 32
        run = lambda: servable.translate(batch, beam_width=1, batch_size=32)  # noqa: E731
    elif task == "sentiment":
        batch, count = (REVIEWS * 8)[:32], 32
        run = lambda: servable.predict(batch, batch_size=32)  # noqa: E731
    else:
        ids, _ = servable.vocabulary.encode(("ROMEO:\nBut soft, what light through yonder window breaks?\n" * 160))
        count = len(ids) - 1
        run = lambda: servable.text_loss(ids, streams=32, chunk=256)  # noqa: E731
    run()
    start, rounds = time.perf_counter(), 0
    while time.perf_counter() - start < 3.0 or rounds < 3:
        run()
        rounds += 1
    return count * rounds / (time.perf_counter() - start)


def child(task, serving, saved, export):
    """Runs in the measured process: first answer, memory, latency, throughput; prints JSON."""
    import resource

    servable = load(task, serving, saved, export)
    request(task, servable)
    print("FIRST", flush=True)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    seconds = []
    for i in range(30):
        start = time.perf_counter()
        request(task, servable, i)
        seconds.append(time.perf_counter() - start)
    print(json.dumps({"memory_mb": round(peak_mb), "p50_ms": round(1000 * sorted(seconds)[15], 1),
                      "batch32_per_s": round(throughput(task, servable), 1)}), flush=True)


def child_env(serving):
    """The environment of a child process serving `serving` (Keras int8 runs on JAX)."""
    backend = serving.split("-")[1] if serving.startswith("keras-") and "int8" not in serving else "jax"
    return dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=os.getcwd())


def measure(task, serving, saved, export):
    """Start the child for `(task, serving)` and return its measurements with the cold start."""
    env = child_env(serving)
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "benchmarks.deploy", "--child", task, serving, saved, export],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    first = process.stdout.readline()
    cold = time.perf_counter() - start
    rest, errors = process.communicate(timeout=900)
    if process.returncode or first.strip() != "FIRST":
        return {"error": (errors.strip().splitlines() or ["?"])[-1][:200]}
    return {"cold_start_s": round(cold, 2), **json.loads(rest.strip().splitlines()[-1])}


# --- what int8 costs ------------------------------------------------------------------------------------

QUALITY_SERVINGS = ("onnx", "onnx-int8", "keras-int8 (jax)")


def score(task, servable):
    """Test BLEU (beam 5, the trainer's length penalty), test accuracy (%) or validation nats per
    character of `servable`, on the splits the trainers report."""
    if task == "translation":
        from trainers import translate

        config = translate.TranslateConfig()
        pairs, _ = translate.load_pairs(config)
        sources, streams = translate.group_references(translate.split_pairs(pairs, config.seed)[2])
        return round(translate.score(servable, sources, streams, 5)[0]["bleu"], 2)
    if task == "sentiment":
        import numpy as np

        from trainers import sentiment

        texts, labels = sentiment.load_splits(sentiment.SentimentConfig())[0]["test"][:2]
        return round(100 * float(np.mean((servable.predict(texts, batch_size=128) > 0.5) == np.asarray(labels))), 2)
    from trainers import data, generate

    ids, _ = servable.vocabulary.encode(data.load_shakespeare(generate.GenerateConfig().source)["validation"])
    return round(float(servable.text_loss(ids)), 4)


def score_child(task, serving, saved, export):
    """Runs in its own process: prints the score of `serving` as JSON."""
    print(json.dumps(score(task, load(task, serving, saved, export))), flush=True)


def quality(task, saved, export):
    """`{serving: score}` of the float32 ONNX graphs and both int8 versions, each in its own process."""
    scores = {}
    for serving in QUALITY_SERVINGS:
        process = subprocess.run([sys.executable, "-m", "benchmarks.deploy", "--score", task, serving, saved, export],
                                 capture_output=True, text=True, env=child_env(serving), timeout=3600)
        lines = process.stdout.strip().splitlines()
        scores[serving] = json.loads(lines[-1]) if process.returncode == 0 and lines else \
            "failed: " + ((process.stderr.strip().splitlines() or ["?"])[-1][:200])
    return scores


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS))
    p.add_argument("--servings", nargs="+", choices=SERVINGS, default=list(SERVINGS))
    p.add_argument("--quality", action="store_true", help="also score float32 and int8 on the test/validation split")
    p.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    p.add_argument("--score", nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child(*args.child)
    if args.score:
        return score_child(*args.score)
    results = {}  # the tasks measured now replace theirs in the file; the others' rows stay
    if os.path.exists(RESULTS):
        with open(RESULTS, encoding="utf-8") as handle:
            results = json.load(handle)
    for task in args.tasks:
        saved, export = os.path.join("saved_models", TASKS[task]), os.path.join("exports", TASKS[task])
        results[task] = {serving: measure(task, serving, saved, export) for serving in args.servings}
        if args.quality:
            results[task]["quality"] = quality(task, saved, export)
        print_table(task, results[task])
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=1)
    return 0


def print_table(task, rows):
    unit = {"translation": "sentences/s", "sentiment": "reviews/s", "generation": "chars scored/s"}[task]
    print(f"\n{task}\n| serving | cold start (s) | memory (MB) | p50 one request (ms) | batch 32 ({unit}) |\n"
          "| --- | ---: | ---: | ---: | ---: |")
    for serving, row in rows.items():
        if serving == "quality":
            continue
        if "error" in row:
            print(f"| {serving} | failed: {row['error']} | | | |")
            continue
        print(f"| {serving} | {row['cold_start_s']} | {row['memory_mb']} | {row['p50_ms']} | {row['batch32_per_s']} |")
    if "quality" in rows:
        print("quality: " + ", ".join(f"{k} {v}" for k, v in rows["quality"].items()))


if __name__ == "__main__":
    sys.exit(main())
