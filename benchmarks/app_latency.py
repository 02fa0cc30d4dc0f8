"""Latency of the demos per request on the current backend: through `gradio_client` and over
Gradio's HTTP API.

    KERAS_BACKEND=jax python -m benchmarks.app_latency [--requests 50]

Serves the all-tabs app (`python -m apps`) with the models in `saved_models/` on a local port,
sends each request once to warm up, then `--requests` requests one after another per endpoint,
and prints p50 and p95 in milliseconds: Translate (greedy and beam 5), Sentiment (the label;
the word highlighting follows as its own request and is timed too), and Generate (time until the
first streamed characters arrive, and the whole 200-character generation).

Each request is timed two ways. `gradio_client` (2.x) reads the server's event stream in a thread
and hands messages over by polling every 50 ms, so a request through it costs at least one or two
polls however fast the server answers. Gradio's HTTP API (`POST /gradio_api/call/<name>`, then
the server-sent events of `GET .../<event_id>`; what `curl` uses, and event-driven like the
browser's own client) shows what the server itself takes. An echo endpoint on the same kind of
queue gives the floor of each path before any model runs.
"""

import argparse
import json
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


def http_client(base):
    """One keep-alive HTTP connection to the app's API, as a browser holds."""
    import httpx

    return httpx.Client(base_url=f"{base}gradio_api/call/", timeout=60)


def http_call(http, api_name, data, until_text_longer_than=None):
    """Outputs of one request over Gradio's HTTP API: POST the inputs, then read the event stream
    until `complete` (or, with `until_text_longer_than=n`, until the first update whose first
    output is a text longer than n characters)."""
    event_id = http.post(api_name, json={"data": data}).raise_for_status().json()["event_id"]
    with http.stream("GET", f"{api_name}/{event_id}") as stream:
        event = None
        for line in stream.iter_lines():
            if line.startswith("event: "):
                event = line[len("event: "):]
            elif line.startswith("data: ") and event in ("generating", "complete", "error"):
                outputs = json.loads(line[len("data: "):])
                if event == "error":
                    raise RuntimeError(f"{api_name}: {outputs}")
                if event == "complete" or (until_text_longer_than is not None
                                           and len(outputs[0]) > until_text_longer_than):
                    return outputs
    raise RuntimeError(f"{api_name}: the event stream ended without a result")


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
    """Seconds per request (gradio_client, HTTP API) of an endpoint that returns its input,
    served and queued like the demos: what Gradio and each client cost before any model runs."""
    import gradio as gr
    from gradio_client import Client

    from apps import common

    with gr.Blocks() as echo:
        text, out = gr.Textbox(), gr.Textbox()
        gr.Button().click(lambda x: x, text, out, api_name="echo")
    base = common.start_local(echo)
    client, http = Client(base, verbose=False), http_client(base)
    seconds = (timed(lambda i: client.predict("x", api_name="/echo"), n),
               timed(lambda i: http_call(http, "echo", ["x"]), n))
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
    base = common.start_local(demo)
    client, http = Client(base, verbose=False), http_client(base)
    n = args.requests
    rows = {}  # name -> (gradio_client seconds, HTTP API seconds)

    def both(name, api_name, inputs, count=n):
        rows[name] = (timed(lambda i: client.predict(*inputs(i), api_name=f"/{api_name}"), count),
                      timed(lambda i: http_call(http, api_name, list(inputs(i))), count))

    if not isinstance(models["Translate"]["spa-eng"], common.Unavailable):
        both("Translate, greedy", "translate", lambda i: (SENTENCES[i % len(SENTENCES)], "spa-eng", "greedy", 1))
        both("Translate, beam 5", "translate", lambda i: (SENTENCES[i % len(SENTENCES)], "spa-eng", "beam search", 5))
    if not isinstance(models["Sentiment"], common.Unavailable):
        both("Sentiment, label", "classify", lambda i: (REVIEWS[i % len(REVIEWS)],))
        both("Sentiment, word highlights", "explain", lambda i: (REVIEWS[i % len(REVIEWS)],), max(5, n // 5))
    if not isinstance(models["Generate"], common.Unavailable):
        prompt = "ROMEO:\n"

        def first_http(i):
            start = time.perf_counter()
            http_call(http, "generate", [prompt, 200, 0.8, 0, 1.0, i], until_text_longer_than=len(prompt))
            return time.perf_counter() - start

        first_stream_update(client, 0)
        first_http(0)
        rows["Generate, first characters"] = ([first_stream_update(client, i) for i in range(n)],
                                              [first_http(i) for i in range(n)])
        both("Generate, 200 characters", "generate", lambda i: (prompt, 200, 0.8, 0, 1.0, i), max(5, n // 5))
    demo.close()
    rows["Floor: an echo endpoint, same queue"] = echo_floor(n)
    print(f"backend {keras.backend.backend()}, {os.cpu_count()} CPUs; p50 / p95 in ms over the timed requests")
    print("| request | requests | gradio_client p50 | gradio_client p95 | HTTP API p50 | HTTP API p95 |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, (through_client, through_http) in rows.items():
        cells = [f"{ms:.0f}" for ms in (*percentiles(through_client), *percentiles(through_http))]
        print(f"| {name} | {len(through_client)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
