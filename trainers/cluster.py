"""Training with several processes, on one machine or many: who this process is, and each
backend's own engine for data parallelism across processes.

    --processes N --process-index I --coordinator HOST:PORT

or, where a launcher already set them, the variables of `torchrun` (`WORLD_SIZE`, `RANK`,
`MASTER_ADDR`, `MASTER_PORT`), SLURM (`SLURM_NTASKS`, `SLURM_PROCID`, the first host of
`SLURM_STEP_NODELIST`) or TensorFlow (`TF_CONFIG`). Flags win over variables. Every process runs
the same trainer command; `python -m trainers.launch` starts N of them on this machine.

The engines (nothing home-made moves a gradient):

- JAX: `keras.distribution.initialize` (JAX's multi-process runtime; gloo collectives between CPU
  processes), then `keras.distribution.DataParallel` over the devices of all processes. Each
  process feeds its own rows of every global batch; XLA all-reduces the gradients.
- TensorFlow: `tf.distribute.MultiWorkerMirroredStrategy`, its cluster from `TF_CONFIG` (made
  from the flags when absent: all workers on the coordinator's host, ports PORT, PORT+1, ...).
  Every worker reads whole global batches; the strategy's DATA auto-sharding hands each worker
  its rows. Keras 3.15's `fit` fails under this strategy (keras-team/keras#20585: two
  reductions that assume a single worker); `_patch_keras_for_multi_worker` mends both.
- PyTorch: `torch.distributed` (gloo on CPUs, NCCL on GPUs) and `DistributedDataParallel`
  around the Keras model, which is a `torch.nn.Module`: Keras' `fit` runs unchanged but for its
  train step, which calls the model through the DDP wrapper so that the backward pass
  all-reduces the gradients (`_ddp_train_step`).

The global batch is `--batch-size`, as in one process; each process takes an equal, contiguous
share of every batch, so N processes see the same batches, in the same order, as one. Only
process 0 writes checkpoints, the model folder and the card; `--resume` reads the checkpoints
from every process (the output folder must be on a file system all processes share).
"""

import contextlib
import dataclasses
import datetime
import json
import os
import re

import keras

from models import artifacts
from trainers.cli import UsageError

DEFAULT_PORT = 29500  # torchrun's default
COLLECTIVE_TIMEOUT_SECONDS = 300  # a lost process makes the others fail within about this long


@dataclasses.dataclass(frozen=True)
class Cluster:
    """This process's place in a training job: `processes` in all, this one number `index`
    (0 is the chief, which writes), the coordinator's `host:port`, and where this was read from."""

    processes: int = 1
    index: int = 0
    coordinator: str | None = None
    source: str = "single process"

    @property
    def distributed(self):
        return self.processes > 1

    @property
    def is_chief(self):
        return self.index == 0

    def describe(self):
        return (f"process {self.index} of {self.processes} (from {self.source}; coordinator {self.coordinator})"
                if self.distributed else "single process")


SINGLE = Cluster()


def first_slurm_host(nodelist):
    """The first host of a SLURM node list: `node[03-05,07],gpu1` -> `node03`."""
    match = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if not match:
        raise UsageError(f"cannot read the SLURM node list {nodelist!r}")
    prefix, ranges = match.groups()
    return prefix + (ranges.split(",")[0].split("-")[0] if ranges else "")


def read_cluster(processes=None, index=None, coordinator=None, environ=None):
    """The `Cluster` of this process: the flags' values where given, else the variables of
    torchrun, SLURM or TF_CONFIG (in this order), else a single process. A bad or
    inconsistent value is a one-line `UsageError`."""
    env = os.environ if environ is None else environ
    found, source = {}, None
    if "WORLD_SIZE" in env and "RANK" in env:
        source = "torchrun"
        found = {"processes": env["WORLD_SIZE"], "index": env["RANK"],
                 "coordinator": f"{env.get('MASTER_ADDR', 'localhost')}:{env.get('MASTER_PORT', DEFAULT_PORT)}"}
    elif "SLURM_NTASKS" in env and "SLURM_PROCID" in env:
        source = "SLURM"
        nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or "localhost"
        found = {"processes": env["SLURM_NTASKS"], "index": env["SLURM_PROCID"],
                 "coordinator": f"{first_slurm_host(nodes)}:{env.get('MASTER_PORT', DEFAULT_PORT)}"}
    elif env.get("TF_CONFIG"):
        source = "TF_CONFIG"
        try:
            config = json.loads(env["TF_CONFIG"])
            workers = list(config["cluster"].get("chief", [])) + list(config["cluster"]["worker"])
            task = config["task"]
            position = task["index"] + (len(config["cluster"].get("chief", [])) if task["type"] == "worker" else 0)
        except (ValueError, KeyError, TypeError) as error:
            raise UsageError(f"TF_CONFIG is not a cluster description ({error})") from None
        found = {"processes": len(workers), "index": position, "coordinator": workers[0]}
    given = {"processes": processes, "index": index, "coordinator": coordinator}
    if any(v is not None for v in given.values()):
        source = "flags" if source is None else f"flags and {source}"
    values = {k: given[k] if given[k] is not None else found.get(k) for k in given}
    try:
        count = int(values["processes"] or 1)
        rank = int(values["index"] or 0)
    except ValueError:
        raise UsageError(f"the number of processes and the process index must be whole numbers "
                         f"(from {source}: {values['processes']!r}, {values['index']!r})") from None
    if count < 1 or not 0 <= rank < count:
        raise UsageError(f"process index {rank} is not in 0..{count - 1} (from {source})")
    if count == 1:
        return SINGLE
    address = values["coordinator"] or f"localhost:{DEFAULT_PORT}"
    if not re.fullmatch(r"[^:\s]+:\d+", address):
        raise UsageError(f"--coordinator must be HOST:PORT, got {address!r}")
    return Cluster(count, rank, address, source)


def add_flags(parser):
    """The cluster flags every trainer shares (`trainers.cli.config_parser`)."""
    from trainers.cli import positive_int

    group = parser.add_argument_group("several processes (docs: README, 'Training on several GPUs or machines')")
    group.add_argument("--processes", type=positive_int,
                       help="processes training together (default 1, or from torchrun, SLURM or TF_CONFIG)")
    group.add_argument("--process-index", type=int, dest="process_index",
                       help="this process's number, 0 to processes - 1; 0 writes the model")
    group.add_argument("--coordinator", help=f"HOST:PORT of process 0 (default localhost:{DEFAULT_PORT})")


def from_args(args):
    return read_cluster(getattr(args, "processes", None), getattr(args, "process_index", None),
                        getattr(args, "coordinator", None))


class Engine:
    """The backend's multi-process engine for one `Cluster`: `start()` (once, `engine_for`) before
    anything else touches the backend, then `scope()` to build and compile each model in, `prepare(model)` before `fit`,
    `train_input` / `validation_input` for the data, `barrier()`, and `localize(model)` after.
    The single-process engine does nothing."""

    name = "none"

    def __init__(self, cluster):
        self.cluster = cluster

    def start(self):
        pass

    def scope(self):
        return contextlib.nullcontext()

    def replicas(self):
        return 1

    def prepare(self, model):
        return []  # callbacks for fit

    def train_input(self, batches):
        return batches

    def validation_input(self, batches):
        return batches

    def barrier(self, name):
        pass

    def writing(self):
        """The context of a save that one process makes alone (the checkpoints of process 0)."""
        return contextlib.nullcontext()

    def localize(self, model):
        return model


class JaxEngine(Engine):
    name = "jax.distributed + keras.distribution.DataParallel"

    def start(self):
        c = self.cluster
        keras.distribution.initialize(c.coordinator, c.processes, c.index)

    def scope(self):
        # Set for each model (`localize` unsets it). auto_shard_dataset=False: every process
        # already feeds its own rows (`ShardedBatches`).
        devices = keras.distribution.list_devices()
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices, auto_shard_dataset=False))
        return contextlib.nullcontext()

    def replicas(self):
        return len(keras.distribution.list_devices())

    def train_input(self, batches):
        return ShardedBatches(batches, self.cluster.index, self.cluster.processes)

    def validation_input(self, batches):
        # Every process feeds the whole batch: the global batch is N copies of it, whose mean
        # loss and accuracy are those of one copy. Ragged last batches need no special case.
        return batches

    def barrier(self, name):
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)

    @contextlib.contextmanager
    def writing(self):
        # Keras' saving makes throw-away variables (saving_lib.get_attr_skipset); under the
        # distribution each would be a collective that the other processes never join.
        distribution = keras.distribution.distribution()
        keras.distribution.set_distribution(None)
        try:
            yield
        finally:
            keras.distribution.set_distribution(distribution)

    def localize(self, model):
        keras.distribution.set_distribution(None)  # the copy's variables are this process's own
        return artifacts.rebuild(model)  # its weights are replicated: every process holds them whole


class TensorFlowEngine(Engine):
    name = "tf.distribute.MultiWorkerMirroredStrategy"

    def start(self):
        import tensorflow as tf

        c = self.cluster
        resolver = None
        if "SLURM" in c.source and not os.environ.get("TF_CONFIG"):
            resolver = tf.distribute.cluster_resolver.SlurmClusterResolver()  # every node's address from SLURM
        elif not os.environ.get("TF_CONFIG"):  # from the flags: every worker on the coordinator's host
            host, port = c.coordinator.rsplit(":", 1)
            os.environ["TF_CONFIG"] = json.dumps({
                "cluster": {"worker": [f"{host}:{int(port) + i}" for i in range(c.processes)]},
                "task": {"type": "worker", "index": c.index}})
        options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=COLLECTIVE_TIMEOUT_SECONDS)
        self.strategy = tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver,
                                                                  communication_options=options)
        _patch_keras_for_multi_worker()

    def scope(self):
        return self.strategy.scope()

    def replicas(self):
        return self.strategy.num_replicas_in_sync

    def prepare(self, model):
        model._maybe_symbolic_build = _local_symbolic_build(model, self.strategy, self)
        clip_after_all_reduce(model.optimizer)
        return []

    def train_input(self, batches):
        self.first_batch = batches[0]
        return _data_sharded(batches)

    def validation_input(self, batches):
        return _data_sharded(batches)

    def barrier(self, name):
        import tensorflow as tf

        self.strategy.reduce("SUM", self.strategy.run(lambda: tf.constant(1.0)), axis=None)

    def localize(self, model):
        return artifacts.rebuild(model)  # built outside the strategy: plain variables


class TorchEngine(Engine):
    name = "torch.distributed + DistributedDataParallel"

    def start(self):
        import torch
        import torch.distributed as dist

        c = self.cluster
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            local = os.environ.get("LOCAL_RANK") or os.environ.get("SLURM_LOCALID")
            torch.cuda.set_device(int(local or c.index % torch.cuda.device_count()))  # one GPU per process
        dist.init_process_group(backend, init_method=f"tcp://{c.coordinator}", world_size=c.processes,
                                rank=c.index, timeout=datetime.timedelta(seconds=COLLECTIVE_TIMEOUT_SECONDS))

    def replicas(self):
        return self.cluster.processes

    def prepare(self, model):
        from torch.nn.parallel import DistributedDataParallel

        wrapper = DistributedDataParallel(model)  # also broadcasts process 0's weights to all
        model.train_step = _ddp_train_step(model, wrapper)
        return [AverageLogs(self.cluster.processes)]

    def train_input(self, batches):
        return ShardedBatches(batches, self.cluster.index, self.cluster.processes)

    def barrier(self, name):
        import torch.distributed as dist

        dist.barrier()

    def localize(self, model):
        model.__dict__.pop("train_step", None)  # Keras' own step again: the model trains alone now
        return model


ENGINES = {"jax": JaxEngine, "tensorflow": TensorFlowEngine, "torch": TorchEngine}


_started = {}


def engine_for(cluster):
    """The started engine of the current backend for `cluster` (the do-nothing one for a single
    process). A process starts it once; a run of several trainings (a teacher, then a student)
    gets the same engine again."""
    if not cluster.distributed:
        return Engine(cluster)
    if cluster not in _started:
        backend = keras.backend.backend()
        if backend not in ENGINES:
            raise UsageError(f"training with several processes is not supported on the {backend} backend")
        engine = ENGINES[backend](cluster)
        engine.start()
        _started[cluster] = engine
    return _started[cluster]


class ShardedBatches(keras.utils.PyDataset):
    """Process `index` of `processes`'s rows of every batch of `batches` (a `PyDataset` of global
    batches): an equal, contiguous share, so that the processes together see each global batch
    whole. The batch is built whole and then cut, so every share has the batch's padded width."""

    def __init__(self, batches, index, processes):
        super().__init__()
        self.batches, self.index, self.processes = batches, index, processes

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, i):
        batch = self.batches[i]
        rows = len(keras.tree.flatten(batch)[0])
        if rows % self.processes:
            raise ValueError(f"a batch of {rows} examples cannot be shared equally by {self.processes} processes; "
                             f"choose --batch-size as a multiple of {self.processes}")
        share = rows // self.processes
        return keras.tree.map_structure(lambda a: a[self.index * share:(self.index + 1) * share], batch)

    def on_epoch_end(self):
        self.batches.on_epoch_end()


class AverageLogs(keras.callbacks.Callback):
    """Average the epoch's logs over the processes (torch): each process's training loss is that
    of its share of the batches; their mean is the loss of the whole batches. It must come first
    among the callbacks, so that the history, the checkpoints and early stopping see the mean."""

    def __init__(self, processes):
        super().__init__()
        self.processes = processes

    def on_epoch_end(self, epoch, logs=None):
        import torch
        import torch.distributed as dist

        if not logs:
            return
        names = sorted(logs)
        values = torch.tensor([float(logs[k]) for k in names], dtype=torch.float64)
        dist.all_reduce(values)
        logs.update({k: float(v) / self.processes for k, v in zip(names, values)})


def _ddp_train_step(model, wrapper):
    """Keras' torch train step (keras/src/backend/torch/trainer.py), with the forward pass
    through `wrapper`, the `DistributedDataParallel` around `model`: its backward hooks then
    average the gradients over the processes before the optimizer applies them."""
    import torch

    def train_step(data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        y_pred = wrapper(x, training=True)
        model.zero_grad()
        loss = model._compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)
        model._loss_tracker.update_state(loss, sample_weight=keras.tree.flatten(x)[0].shape[0])
        model.optimizer.scale_loss(loss).backward()
        weights = model.trainable_weights[:]
        with torch.no_grad():
            model.optimizer.apply([w.value.grad for w in weights], weights)
        return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    return train_step


def _data_sharded(batches):
    """A `tf.data` pipeline of whole global batches that `MultiWorkerMirroredStrategy` cuts into
    per-worker rows (DATA auto-sharding after its rebatching: worker i gets share i of each)."""
    import tensorflow as tf

    from trainers.batching import tf_dataset

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return tf_dataset(batches).with_options(options)


def _local_symbolic_build(model, strategy, engine):
    """A stand-in for `model._maybe_symbolic_build`, which builds the model, its metrics and its
    optimizer from the shapes of a first batch. Keras takes that batch from the distributed
    iterator and averages it over the workers, which fails under `MultiWorkerMirroredStrategy`
    (keras-team/keras#20585) and would also start a pass over the data that the training then
    counts as an epoch. The first training batch (`engine.first_batch`) gives the same shapes."""

    def build(iterator=None, data_batch=None):
        with strategy.scope():
            model._symbolic_build(data_batch=engine.first_batch if data_batch is None else data_batch)

    return build


def clip_after_all_reduce(optimizer):
    """Make a Keras optimizer under a `tf.distribute` strategy clip the summed gradient of all
    replicas, as one process clips the gradient of the whole batch. Keras 3.15 clips each
    replica's share first and sums after (`BaseOptimizer.apply`, then the TensorFlow optimizer's
    `_all_reduce_sum_gradients`), which changes the update whenever `clipnorm` bites. Here the
    sum comes first and the later one passes the gradients through."""
    clip, all_reduce = optimizer._clip_gradients, optimizer._all_reduce_sum_gradients

    def reduce_then_clip(grads):
        summed = all_reduce(list(zip(grads, range(len(grads)))))  # (gradient, position) pairs
        return clip([gradient for gradient, _ in summed])

    optimizer._clip_gradients = reduce_then_clip
    optimizer._all_reduce_sum_gradients = lambda grads_and_vars: list(grads_and_vars)


_patched = []


def _patch_keras_for_multi_worker():
    """Keras 3.15 averages a step's scalar metrics over workers along axis 0, which a scalar has
    not (keras-team/keras#20585); average them whole instead. Other reductions are unchanged."""
    if _patched:
        return
    import tensorflow as tf
    from keras.src.backend.tensorflow import trainer

    original = trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction="auto"):
        if reduction == "auto" and trainer._collective_all_reduce_multi_worker(strategy):
            return tf.nest.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return original(values, strategy, reduction)

    trainer.reduce_per_replica = reduce_per_replica
    _patched.append(original)
