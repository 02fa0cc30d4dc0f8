"""Start a multi-process training run on this machine: `python -m trainers.launch`.

    python -m trainers.launch --processes 2 -- translate --quick
    KERAS_BACKEND=torch python -m trainers.launch --processes 2 --time-limit 3600 -- sentiment --epochs 1

Starts N copies of `python -m trainers.<task> ARGS --processes N --process-index I --coordinator
localhost:PORT` (a free port unless `--port`), prints their output with an `[I]` prefix, and waits.
If one process fails or dies, the others are stopped at once and the launcher says which one
failed and how; so they are at `--time-limit` and at Ctrl-C. It exits with the first failure's
code (124 at the time limit, 130 at Ctrl-C), 0 when every process succeeded.

On a real cluster, start the same trainer command on every machine instead (with torchrun, SLURM,
TF_CONFIG or the flags; README, "Training on several GPUs or machines").
"""

from trainers import cli  # noqa: I001 - sets the environment before TensorFlow/Keras load

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time

TASKS = ("translate", "sentiment", "generate", "pretrain")
GRACE_SECONDS = 10  # after SIGTERM, before SIGKILL


def build_parser():
    p = cli.Parser(prog="python -m trainers.launch", description=__doc__.splitlines()[0],
                   usage="python -m trainers.launch [--processes N] [--port PORT] [--time-limit SECONDS] "
                         "-- TASK [trainer flags]")
    p.add_argument("--processes", type=cli.positive_int, default=2, help="processes to start (default 2)")
    p.add_argument("--port", type=cli.positive_int, help="coordinator port on localhost (default: a free one)")
    p.add_argument("--time-limit", type=cli.positive_float, dest="time_limit",
                   help="stop every process after this many seconds (default: no limit)")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- TASK [flags]: " + ", ".join(TASKS))
    return p


def free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def trainer_command(command, processes, index, port):
    """The command line of process `index`: the trainer's module and flags, then the cluster flags."""
    task, flags = command[0], command[1:]
    return [sys.executable, "-m", f"trainers.{task}", *flags, "--processes", str(processes),
            "--process-index", str(index), "--coordinator", f"localhost:{port}"]


def check_command(command):
    """The `-- TASK [flags]` part, checked: a one-line `UsageError` if it cannot run."""
    command = command[1:] if command[:1] == ["--"] else command
    if not command:
        raise cli.UsageError(f"name the trainer after --: one of {', '.join(TASKS)}")
    task = command[0].removeprefix("trainers.")
    if task not in TASKS:
        raise cli.UsageError(f"unknown trainer {command[0]!r}: one of {', '.join(TASKS)}")
    clashing = [f for f in command[1:] if f.split("=")[0] in ("--processes", "--process-index", "--coordinator")]
    if clashing:
        raise cli.UsageError(f"{clashing[0].split('=')[0]} is set by the launcher; give --processes before --")
    if any(f in ("--evaluate", "-h", "--help") for f in command[1:]):
        raise cli.UsageError("the launcher runs training; run --evaluate or --help with the trainer itself")
    return [task, *command[1:]]


def describe_exit(code):
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def relay(index, stream):
    """Copy a child's output to ours, each line prefixed with its process number."""
    for line in iter(stream.readline, ""):
        sys.stdout.write(f"[{index}] {line}" if line.strip() else line)
        sys.stdout.flush()


def stop(children):
    """SIGTERM every child still running, then SIGKILL whichever is left after the grace time."""
    for child in children:
        if child.poll() is None:
            child.terminate()
    deadline = time.time() + GRACE_SECONDS
    for child in children:
        try:
            child.wait(max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def supervise(children, time_limit=None, poll_seconds=0.2):
    """Wait for `children`; return 0 when all succeed, else stop the rest and return the code of
    the first failure (124 past `time_limit`), saying which process failed."""
    started = time.time()
    while True:
        codes = [child.poll() for child in children]
        failed = [(i, code) for i, code in enumerate(codes) if code not in (None, 0)]
        if failed:
            index, code = failed[0]
            running = sum(c is None for c in codes)
            print(f"launch: process {index} {describe_exit(code)}; stopping the {running} still running",
                  file=sys.stderr, flush=True)
            stop(children)
            return code if code > 0 else 1
        if all(code == 0 for code in codes):
            return 0
        if time_limit and time.time() - started > time_limit:
            print(f"launch: time limit of {time_limit:g} s reached; stopping every process", file=sys.stderr,
                  flush=True)
            stop(children)
            return 124
        time.sleep(poll_seconds)


def main(argv=None):
    args = build_parser().parse_args(argv)
    command = check_command(args.command)
    port = args.port or free_port()
    print(f"launch: {args.processes} processes of trainers.{command[0]} on this machine, coordinator "
          f"localhost:{port}, backend {os.environ.get('KERAS_BACKEND', 'tensorflow')}", flush=True)
    children, relays = [], []
    try:
        for index in range(args.processes):
            child = subprocess.Popen(trainer_command(command, args.processes, index, port), stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, errors="replace", bufsize=1)
            children.append(child)
            relays.append(threading.Thread(target=relay, args=(index, child.stdout), daemon=True))
            relays[-1].start()
        code = supervise(children, args.time_limit)
    except KeyboardInterrupt:
        print("launch: interrupted; stopping every process", file=sys.stderr, flush=True)
        stop(children)
        code = 130
    for thread in relays:
        thread.join(timeout=5)
    return code


if __name__ == "__main__":
    cli.run(main)
