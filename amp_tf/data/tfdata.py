"""The tf.data settings of every amp-tf pipeline: fixed parallelism, autotuning off.

With tf.data autotuning on (any ``AUTOTUNE`` in a pipeline), destroying an
iterator waits for the autotuner's thread, for seconds on a 2-core machine; Keras
destroys one at the end of every ``fit`` epoch, ``evaluate`` and ``predict``.
Measured on 2 cores (``python -m benchmarks.speed --quick --sections internals``):
fit epochs of 25 steps took 5.1, 10.3, 5.1, 5.4, 20.5 and 20.5 s with autotuning
(multiples of the ~5.1 s period) and 4.8 to 7.9 s with these settings.
Our pipelines are vectorised (one map call per batch) or decode images in a
fixed number of parallel calls (every core); on the training pipeline the fixed
values lost nothing in that measurement, and the stall is gone. Decode-heavy
streams (ImageNet folders) were not measured.

Example:
    >>> import tensorflow as tf
    >>> ds = finish(tf.data.Dataset.range(4).map(lambda i: i * 2, num_parallel_calls=map_calls()))
    >>> ds.options().autotune.enabled, [int(v) for v in ds]
    (False, [0, 2, 4, 6])
"""
from __future__ import annotations

import os

import tensorflow as tf

#: Batches (or elements) prefetched at the end of a pipeline.
PREFETCH = 2


def cores() -> int:
    """CPU cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover  (not Linux)
        return max(1, os.cpu_count() or 1)


def map_calls(per_batch: bool = False) -> int:
    """`num_parallel_calls` for a map: every core for per-image decoding, half of
    them (at least 1) for a vectorised per-batch map, which leaves the other
    cores to the training step."""
    return max(1, cores() // 2) if per_batch else cores()


def finish(ds: tf.data.Dataset, prefetch: int = PREFETCH, deterministic: bool = True) -> tf.data.Dataset:
    """`ds` with autotuning off (and deterministic order), then prefetched."""
    options = tf.data.Options()
    options.autotune.enabled = False
    options.deterministic = bool(deterministic)
    return ds.with_options(options).prefetch(int(prefetch))


def array_batches(x, y=None, batch_size=32, shuffle=False, seed=None):
    """Arrays as tf.data batches with these settings: what Keras' `fit` / `evaluate` / `predict` make of
    numpy arrays (with `shuffle`, every epoch in a new order; the last batch partial), without the
    autotuner (`AnchoredModel` feeds its arrays through this). Images keep their dtype (uint8 stays
    uint8); each batch is one gather.

    Example:
        >>> import numpy as np
        >>> ds = array_batches(np.arange(5)[:, None], np.arange(5), batch_size=2)
        >>> [b[1].numpy().tolist() for b in ds], ds.options().autotune.enabled
        ([[0, 1], [2, 3], [4]], False)
    """
    xt = tf.constant(x)
    yt = None if y is None else tf.constant(y)
    idx = tf.data.Dataset.range(len(x))
    if shuffle:
        idx = idx.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)

    def fetch(i):
        return tf.gather(xt, i) if yt is None else (tf.gather(xt, i), tf.gather(yt, i))

    return finish(idx.batch(int(batch_size)).map(fetch, num_parallel_calls=map_calls(per_batch=True)))
