"""Devices, precision and data parallelism, shared by the trainers.

    --rnn-impl ours|keras     our recurrent layers, or Keras' built-ins (cuDNN's fused kernels on a
                              GPU); the weights are the same, so either can serve the other's model
    --precision float32|mixed_float16|mixed_bfloat16
                              Keras' dtype policy: float32 weights, float16/bfloat16 computation;
                              the models keep their logits, attention softmax and losses in float32
    --data-parallel           one model replica per device, through the backend's own engine:
                              `keras.distribution.DataParallel` on JAX, `tf.distribute.MirroredStrategy`
                              on TensorFlow; PyTorch is not supported here (Keras 3 does not drive
                              torch's DistributedDataParallel, which needs one process per device:
                              `--processes`, `trainers.cluster`)
    --processes N ...         several processes (one or more machines) on each backend's own
                              engine, data parallel over all their devices (`trainers.cluster`)

They are fields of each trainer's config (`trainers.training`, `models.config`). `setup(config)`
applies them before the model is built, prints the backend, the devices and the precision, and
returns what the model card records.
"""

import contextlib

import keras

from trainers import cli


def list_devices():
    """The devices the backend sees, as `"kind:index (name)"` strings, accelerators first."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return [f"{d.platform}:{d.id} ({d.device_kind})" for d in jax.devices()]
    if backend == "tensorflow":
        import tensorflow as tf

        devices = tf.config.list_logical_devices()
        return [d.name.replace("/device:", "").lower() for d in devices]
    if backend == "torch":
        import torch

        gpus = [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())]
        return gpus + [f"cpu:0 ({torch.get_num_threads()} threads)"]
    return ["cpu:0"]


def data_parallel_scope():
    """Set up data parallelism over all devices; returns the context to build and compile in."""
    backend = keras.backend.backend()
    if backend == "jax":
        devices = keras.distribution.list_devices()
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
        return contextlib.nullcontext(), len(devices)
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_logical_devices("GPU")
        names = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        strategy = tf.distribute.MirroredStrategy(names)
        return strategy.scope(), strategy.num_replicas_in_sync
    raise cli.UsageError(f"--data-parallel is not supported on the {backend} backend (Keras 3 drives JAX's "
                         "and TensorFlow's engines only); use KERAS_BACKEND=jax or tensorflow")


def setup(config, engine=None):
    """Apply `--precision` and `--data-parallel` (or the multi-process `engine` of
    `trainers.cluster`, which implies it), print the device line and return `(scope, info)`:
    build and compile the model inside `scope`; `info` goes into the card."""
    keras.mixed_precision.set_global_policy(config.precision)
    scope, replicas = contextlib.nullcontext(), 1
    distributed = engine is not None and engine.cluster.distributed
    if distributed:
        scope, replicas = engine.scope(), engine.replicas()
    elif config.data_parallel:
        scope, replicas = data_parallel_scope()
    if replicas > 1 and config.batch_size % replicas:
        raise cli.UsageError(f"--batch-size {config.batch_size} must be a multiple of the {replicas} devices")
    info = {"backend": keras.backend.backend(), "devices": list_devices(), "precision": config.precision,
            "rnn_impl": config.rnn_impl, "data_parallel_replicas": replicas}
    if distributed:
        info["processes"] = {"engine": engine.name, "processes": engine.cluster.processes,
                             "from": engine.cluster.source, "devices_in_all": replicas}
    print(f"backend {info['backend']}; devices: {', '.join(info['devices'])}; precision {config.precision}; "
          f"recurrent layers: {'ours' if config.rnn_impl == 'ours' else 'Keras built-in'}"
          + (f"; data parallel over {replicas} devices" if replicas > 1 else "")
          + (f" of {engine.cluster.processes} processes ({engine.name}); this is {engine.cluster.describe()}"
             if distributed else ""))
    return scope, info
