"""Training with several processes (`trainers.cluster`, `trainers.launch`).

Unit tests: where a process learns its place (flags, torchrun, SLURM, TF_CONFIG), how a batch is
shared, how the launcher checks its command and stops its processes. End to end, on the backend
of this test process: 2 local processes (one CPU device each) train the character model exactly
as 1 process does with the same global batch and data order (same weights to float32 tolerance,
same loss history); a 2-process run interrupted after an epoch resumes to the same weights; a
killed process makes the launcher stop the other with a clear message, in bounded time.
"""

import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from models import artifacts
from trainers import cli, cluster, launch
from trainers.batching import LengthBatches

DATASETS = os.path.join(os.environ.get("KERAS_HOME", os.path.expanduser("~/.keras")), "datasets")


def test_cluster_from_flags_and_defaults():
    assert cluster.read_cluster(environ={}) == cluster.SINGLE
    c = cluster.read_cluster(2, 1, "node7:1234", environ={})
    assert (c.processes, c.index, c.coordinator, c.source) == (2, 1, "node7:1234", "flags")
    assert not c.is_chief and c.distributed
    assert cluster.read_cluster(3, 0, environ={}).coordinator == f"localhost:{cluster.DEFAULT_PORT}"


def test_cluster_from_torchrun_slurm_and_tf_config():
    torchrun = {"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29400"}
    c = cluster.read_cluster(environ=torchrun)
    assert (c.processes, c.index, c.coordinator, c.source) == (4, 2, "10.0.0.1:29400", "torchrun")
    slurm = {"SLURM_NTASKS": "8", "SLURM_PROCID": "5", "SLURM_STEP_NODELIST": "gpu[03-04,09],cpu1"}
    c = cluster.read_cluster(environ=slurm)
    assert (c.processes, c.index, c.coordinator) == (8, 5, f"gpu03:{cluster.DEFAULT_PORT}")
    tf_config = {"TF_CONFIG": json.dumps({"cluster": {"chief": ["a:1"], "worker": ["b:2", "c:3"]},
                                          "task": {"type": "worker", "index": 1}})}
    c = cluster.read_cluster(environ=tf_config)
    assert (c.processes, c.index, c.coordinator, c.source) == (3, 2, "a:1", "TF_CONFIG")
    c = cluster.read_cluster(processes=4, index=3, environ=torchrun)  # flags win
    assert (c.processes, c.index, c.coordinator, c.source) == (4, 3, "10.0.0.1:29400", "flags and torchrun")
    assert cluster.read_cluster(environ={"WORLD_SIZE": "1", "RANK": "0"}) == cluster.SINGLE


@pytest.mark.parametrize("kwargs, environ, message", [
    ({"processes": 2, "index": 2}, {}, "not in 0..1"),
    ({"processes": 2, "index": 0, "coordinator": "nohost"}, {}, "HOST:PORT"),
    ({}, {"WORLD_SIZE": "two", "RANK": "0"}, "whole numbers"),
    ({}, {"TF_CONFIG": "{not json"}, "TF_CONFIG"),
    ({}, {"TF_CONFIG": json.dumps({"cluster": {}})}, "TF_CONFIG"),
])
def test_bad_cluster_settings_are_one_line_errors(kwargs, environ, message):
    with pytest.raises(cli.UsageError, match=message):
        cluster.read_cluster(**kwargs, environ=environ)


def test_cluster_flags_parse_on_every_trainer():
    from trainers import generate, sentiment, translate

    for module in (generate, sentiment, translate):
        args = module.build_parser().parse_args(["--processes", "2", "--process-index", "1", "--coordinator", "h:5"])
        c = cluster.from_args(args)
        assert (c.processes, c.index, c.coordinator) == (2, 1, "h:5")


def test_sharded_batches_cut_every_batch_into_equal_contiguous_shares():
    lengths = np.arange(1, 17)
    batches = LengthBatches(lengths, lambda rows: (np.asarray(rows)[:, None], np.asarray(rows, dtype="float32")), 8,
                            seed=3)
    shares = [cluster.ShardedBatches(batches, i, 2) for i in range(2)]
    assert len(shares[0]) == len(batches)
    for b in range(len(batches)):
        whole = batches[b]
        np.testing.assert_array_equal(np.concatenate([s[b][0] for s in shares]), whole[0])
        np.testing.assert_array_equal(np.concatenate([s[b][1] for s in shares]), whole[1])
    with pytest.raises(ValueError, match="multiple of 3"):
        cluster.ShardedBatches(batches, 0, 3)[0]


@pytest.mark.parametrize("command, message", [
    ([], "name the trainer"),
    (["--"], "name the trainer"),
    (["--", "gradients"], "unknown trainer"),
    (["--", "translate", "--processes", "3"], "set by the launcher"),
    (["--", "translate", "--coordinator=h:1"], "set by the launcher"),
    (["--", "sentiment", "--evaluate"], "runs training"),
])
def test_launcher_refuses_bad_commands(command, message):
    with pytest.raises(cli.UsageError, match=message):
        launch.check_command(command)
    assert launch.check_command(["--", "trainers.generate", "--quick"]) == ["generate", "--quick"]


def test_launcher_stops_the_others_when_one_fails(capsys):
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    children = [subprocess.Popen(sleeper), subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])]
    start = time.time()
    assert launch.supervise(children) == 3
    assert time.time() - start < 30 and children[0].poll() is not None  # stopped, not waited for
    assert "process 1 exited with code 3; stopping the 1 still running" in capsys.readouterr().err
    children = [subprocess.Popen(sleeper)]
    assert launch.supervise(children, time_limit=0.5) == 124
    assert children[0].poll() is not None and "time limit of 0.5 s" in capsys.readouterr().err
    assert launch.describe_exit(-signal.SIGKILL) == "was killed by SIGKILL"


# End to end: the character model on a slice of Tiny Shakespeare, small enough for CI. Dropout 0:
# on TensorFlow and torch each process draws its own dropout masks (JAX draws them for the whole
# batch), so only without dropout is the arithmetic that of one process.
TINY = ["--quick", "--units", "16", "--embedding-dim", "8", "--dropout", "0", "--max-examples", "20000",
        "--batch-size", "16", "--sequence-length", "32"]
needs_corpus = pytest.mark.skipif(not os.path.exists(os.path.join(DATASETS, "shakespeare.txt")),
                                  reason=f"shakespeare.txt not in the Keras cache {DATASETS}")


def environment():
    return dict(os.environ, KERAS_BACKEND=keras.backend.backend(), PYTHONUNBUFFERED="1",
                KERAS_HOME=os.path.dirname(DATASETS))


def launched(*args, cwd, processes=2, timeout=600):
    """Run `trainers.launch --processes N -- generate ARGS`; return the completed process."""
    return subprocess.run([sys.executable, "-m", "trainers.launch", "--processes", str(processes),
                           "--time-limit", str(timeout - 30), "--", "generate", *args], cwd=cwd, env=environment(),
                          capture_output=True, text=True, timeout=timeout)


def single(*args, cwd):
    return subprocess.run([sys.executable, "-m", "trainers.generate", *args], cwd=cwd, env=environment(),
                          capture_output=True, text=True, timeout=600)


def trained(folder):
    model, _, card = artifacts.load(folder)
    return model.get_weights(), card


def assert_same_training(one, two):
    (weights_1, card_1), (weights_2, card_2) = trained(one), trained(two)
    for a, b in zip(weights_1, weights_2, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
    history_1, history_2 = card_1["training"]["history"], card_2["training"]["history"]
    assert history_1.keys() == history_2.keys()
    for name in history_1:
        np.testing.assert_allclose(history_2[name], history_1[name], rtol=1e-3)
    assert weights_1[0].std() > 0 and history_1["loss"][-1] < history_1["loss"][0]  # it trained
    return card_2


@pytest.mark.e2e
@needs_corpus
def test_two_processes_train_like_one(tmp_path):
    one = single(*TINY, "--out", "one", cwd=tmp_path)
    assert one.returncode == 0, one.stderr[-3000:]
    two = launched(*TINY, "--out", "two", cwd=tmp_path)
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-2000:]
    card = assert_same_training(tmp_path / "one", tmp_path / "two")
    assert card["hardware"]["processes"]["processes"] == 2 and card["hardware"]["data_parallel_replicas"] == 2
    assert "[1] " in two.stdout and "process 0 saves the model" in two.stdout
    assert sorted(os.listdir(tmp_path)) == ["one", "two"]  # process 1 wrote nothing of its own


@pytest.mark.e2e
@needs_corpus
def test_two_processes_resume_an_interrupted_run(tmp_path):
    flags = [*TINY, "--epochs", "2", "--max-examples", "200000"]  # epochs of some seconds: time to interrupt
    whole = launched(*flags, "--out", "whole", cwd=tmp_path)
    assert whole.returncode == 0, whole.stdout[-3000:] + whole.stderr[-2000:]
    # Interrupt a second run (Ctrl-C) as soon as its first epoch is checkpointed.
    # The launcher must not inherit an ignored SIGINT (pytest-xdist's workers ignore it), or Python
    # would never raise KeyboardInterrupt in it (as in test_e2e's Ctrl-C test).
    launcher = subprocess.Popen([sys.executable, "-m", "trainers.launch", "--processes", "2", "--", "generate",
                                 *flags, "--out", "cut"], cwd=tmp_path, env=environment(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    backup = tmp_path / "cut" / "checkpoints" / "backup" / "training_metadata.json"
    deadline = time.time() + 300
    while not backup.exists() and launcher.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    launcher.send_signal(signal.SIGINT)
    assert launcher.wait(timeout=120) == 130 and backup.exists()
    resumed = launched(*flags, "--out", "cut", "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-2000:]
    assert "Epoch 2/2" in resumed.stdout and "Epoch 1/2" not in resumed.stdout  # it went on from epoch 2
    assert not os.path.exists(tmp_path / "cut" / "checkpoints")
    assert_same_training(tmp_path / "whole", tmp_path / "cut")


@pytest.mark.e2e
@needs_corpus
def test_a_killed_process_stops_the_run_with_a_clear_message(tmp_path):
    launcher = subprocess.Popen([sys.executable, "-m", "trainers.launch", "--processes", "2", "--", "generate",
                                 *TINY, "--epochs", "50", "--out", "killed"], cwd=tmp_path, env=environment(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in launcher.stdout:
        if line.startswith("[1] Epoch 1/"):
            break
    time.sleep(2)
    victim = subprocess.run(["pgrep", "-f", "trainers.generate .*--out killed --processes 2 --process-index 1"],
                            capture_output=True, text=True).stdout.split()
    assert len(victim) == 1, victim
    os.kill(int(victim[0]), signal.SIGKILL)
    killed = time.time()
    _, err = launcher.communicate(timeout=120)
    assert time.time() - killed < 60
    assert launcher.returncode != 0
    assert "process 1 was killed by SIGKILL; stopping the 1 still running" in err
