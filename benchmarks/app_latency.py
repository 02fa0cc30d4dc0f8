"""Latency of the demos per request, through `gradio_client`, on the current backend.

    KERAS_BACKEND=jax python -m benchmarks.app_latency [--requests 50]

Serves the all-tabs app (`python -m apps`) with the models in `saved_models/` on a local port,
sends each request once to warm up, then `--requests` requests one after another per endpoint,
and prints p50 and p95 in milliseconds: Translate (greedy), Sentiment (the label; the word
highlighting follows as its own request and is timed too), and Generate (time until the first
streamed characters arrive, and the whole 200-character generation), and an echo endpoint on the same kind of queue as the
floor that Gradio and gradio_client add to every request.
"""

import argparse
import os
import time

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

SENTENCES = ["¿Dónde está la estación de tren?", "Me gustaría aprender a tocar el piano.",
             "Tom no sabe nadar, pero su hermana sí.", "Hace mucho frío esta mañana.",
             "¿Puedes ayudarme con mis deberes?"]
REVIEWS = ["A moving, beautifully acted film. The ending stayed with me for days.",
           "Two hours of my life I will never get back. Wooden acting and a plot full of holes.",
           "The first half drags, but the last act is superb and the music is wonderful."]


def percentiles(values):
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]  # noqa: E731
    return 1000 * pick(0.5), 1000 * pick(0.95)


def timed(fn, n):
    fn(0)
    seconds = []
    for i in range(n):
        start = time.perf_counter()
        fn(i)
        seconds.append(time.perf_counter() - start)
    return seconds


def first_stream_update(client, i):
    """Seconds until the first update that holds generated characters (beyond the prompt)."""
    start = time.perf_counter()
    job = client.submit("ROMEO:\n", 200, 0.8, 0, 1.0, i, api_name="/generate")
    first = None
    for text, _ in job:
        if first is None and len(text) > len("ROMEO:\n"):
            first = time.perf_counter() - start
    return first if first is not None else time.perf_counter() - start


def echo_floor(n):
    """Seconds per request of an endpoint that returns its input, served and queued like the
    demos: what Gradio and gradio_client cost before any model runs."""
    import gradio as gr
    from gradio_client import Client

    from apps import common

    with gr.Blocks() as echo:
        text, out = gr.Textbox(), gr.Textbox()
        gr.Button().click(lambda x: x, text, out, api_name="echo")
    client = Client(common.start_local(echo), verbose=False)
    seconds = timed(lambda i: client.predict("x", api_name="/echo"), n)
    echo.close()
    return seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=50, help="timed requests per endpoint (default 50)")
    args = parser.parse_args(argv)

    import keras
    from gradio_client import Client

    from apps import __main__ as all_demos
    from apps import common

    models = all_demos.load_all()
    demo = all_demos.build(models)
    client = Client(common.start_local(demo), verbose=False)
    n = args.requests
    rows = {}
    if not isinstance(models["Translate"]["spa-eng"], common.Unavailable):
        rows["Translate, greedy"] = timed(lambda i: client.predict(
            SENTENCES[i % len(SENTENCES)], "spa-eng", "greedy", 1, api_name="/translate"), n)
        rows["Translate, beam 5"] = timed(lambda i: client.predict(
            SENTENCES[i % len(SENTENCES)], "spa-eng", "beam search", 5, api_name="/translate"), n)
    if not isinstance(models["Sentiment"], common.Unavailable):
        rows["Sentiment, label"] = timed(lambda i: client.predict(REVIEWS[i % len(REVIEWS)], api_name="/classify"), n)
        rows["Sentiment, word highlights"] = timed(
            lambda i: client.predict(REVIEWS[i % len(REVIEWS)], api_name="/explain"), max(5, n // 5))
    if not isinstance(models["Generate"], common.Unavailable):
        first_stream_update(client, 0)
        rows["Generate, first characters"] = [first_stream_update(client, i) for i in range(n)]
        rows["Generate, 200 characters"] = timed(
            lambda i: client.predict("ROMEO:\n", 200, 0.8, 0, 1.0, i, api_name="/generate"), max(5, n // 5))
    demo.close()
    rows["Gradio floor: an echo endpoint, same queue"] = echo_floor(n)
    print(f"backend {keras.backend.backend()}, {os.cpu_count()} CPUs; p50 / p95 over the timed requests")
    print("| request | requests | p50 (ms) | p95 (ms) |\n|---|---:|---:|---:|")
    for name, seconds in rows.items():
        p50, p95 = percentiles(seconds)
        print(f"| {name} | {len(seconds)} | {p50:.0f} | {p95:.0f} |")


if __name__ == "__main__":
    main()
