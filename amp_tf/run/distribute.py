"""TensorFlow distribution strategies by name, for trainers and user code.

Batch-size rule: `--batch-size` is the GLOBAL batch; each of R replicas gets
batch/R images and draws its anchors from that share only (anchors are a
permutation of the replica's own images). Keras' `compute_loss` scales each
replica's loss by 1/R, so one step on R replicas equals one step on 1 replica
over the same global batch. The learning rate is not rescaled automatically:
keep the global batch fixed when adding replicas and the paper's learning rate
still applies; BatchNorm statistics are synchronised over the global batch
(`sync_batchnorm`), so every replica and worker holds the same weights. If you grow the global batch k times, the usual linear rule
(lr x k, with warm-up) is a reasonable start but it is your choice.

Example:

>>> strategy = get_strategy("default")
>>> strategy.num_replicas_in_sync
1
>>> print(describe_strategy(strategy, "default", 128))
strategy default: 1 replica (the default device), global batch 128 = 128 per replica
"""

from __future__ import annotations

import json
import os

import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multiworker", "tpu")

#: The strategies made so far, by `(name, devices)`: a trainer logs its strategy at start and trains
#: under the same object (a multi-worker or TPU strategy is made once per process).
_MADE = {}


def get_strategy(name="default", devices=None):
    """A `tf.distribute.Strategy` by name (made once per process and name: later calls return it).

    Args:
        name: `default` (no distribution), `mirrored` (all local GPUs, or the
            given `devices`; on a CPU-only machine the logical CPUs if the
            process split the CPU, else the CPU), `multiworker`
            (`MultiWorkerMirroredStrategy` from the `TF_CONFIG` environment
            variable), `tpu` (`TPUStrategy`; wiring only, untested here).
        devices: explicit device list for `mirrored`.
    """
    if name not in STRATEGIES:
        raise ValueError(f"strategy: expected one of {STRATEGIES}, got {name!r}.")
    if name == "default":
        return tf.distribute.get_strategy()
    key = (name, tuple(devices) if devices is not None else None)
    if key not in _MADE:
        _MADE[key] = _make(name, devices)
    return _MADE[key]


def _make(name, devices):
    if name == "mirrored":
        if devices is None:
            gpus = tf.config.list_logical_devices("GPU")
            devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError(
                "strategy 'multiworker' needs the TF_CONFIG environment variable, e.g. "
                + json.dumps({"cluster": {"worker": ["host1:12345", "host2:12345"]},
                              "task": {"type": "worker", "index": 0}})
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def describe_strategy(strategy, name, global_batch):
    """One line for a run's log: the strategy, its replicas and devices, and the batch per replica.

    Example:
        >>> print(describe_strategy(get_strategy("default"), "default", 64))
        strategy default: 1 replica (the default device), global batch 64 = 64 per replica
    """
    n = int(strategy.num_replicas_in_sync)
    try:
        devices = [d.rsplit("/", 1)[-1].replace("device:", "") for d in strategy.extended.worker_devices]
    except (RuntimeError, AttributeError, NotImplementedError):  # the default strategy has no device list
        devices = None
    where = ", ".join(devices) if devices else "the default device"
    if name == "multiworker":
        where = f"{_workers()} worker(s); this worker's devices: {where}"
    b = int(global_batch)
    per = f"{b // n}" if b % n == 0 else f"{b // n} or {b // n + 1} (it does not divide evenly)"
    return (f"strategy {name}: {n} replica{'s' if n != 1 else ''} ({where}), global batch {b} = {per} "
            "per replica")


def _workers():
    cluster = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}").get("cluster", {})
    return sum(len(cluster.get(k, [])) for k in ("chief", "worker")) or 1


def worker_info():
    """(task_type, task_index, is_chief) from TF_CONFIG; ('worker', 0, True) without it."""
    cfg = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    task = cfg.get("task", {})
    ttype, index = task.get("type", "worker"), int(task.get("index", 0))
    has_chief = "chief" in cfg.get("cluster", {})
    is_chief = ttype == "chief" or (not has_chief and ttype == "worker" and index == 0)
    return ttype, index, is_chief


def sync_batchnorm(model):
    """Makes every BatchNormalization in `model` synchronise its batch statistics.

    With more than one replica, Keras 3 keeps each replica's BatchNorm moving
    statistics local, so workers end with different moving means/variances.
    Synchronised BatchNorm computes the statistics over the whole global batch:
    every replica then holds the same values, as one device would on that batch.
    """
    import keras

    for layer in _all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = True
    return model


def _all_layers(model):
    for layer in getattr(model, "layers", []):
        yield layer
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)
