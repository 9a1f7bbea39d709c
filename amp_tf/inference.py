"""The one batched-inference loop of amp-tf.

`batched(fn, images, batch_size)` runs `fn` over consecutive batches of an
in-memory array and concatenates the results; `fn` returns a tensor, a tuple
or a dict of tensors (e.g. a `tf.function` of a predictor or a model), and the
result has the same structure with numpy arrays. The predictor, evaluation,
the baselines and the export all use it.

Example:

>>> import numpy as np
>>> out = batched(lambda x: {"sum": x.sum(axis=(1, 2, 3))}, np.ones((5, 2, 2, 1)), batch_size=2)
>>> out["sum"].tolist()
[4.0, 4.0, 4.0, 4.0, 4.0]
"""

from __future__ import annotations

import sys

import keras
import numpy as np


def _numpy(v):
    return v.numpy() if hasattr(v, "numpy") else np.asarray(v)


def batched(fn, images, batch_size=256, verbose=0, dtype="float32"):
    """`fn` over batches of `images` (cast to `dtype` per batch; None keeps it).

    Args:
        fn: batch -> tensor | tuple | dict of tensors.
        images: (N, ...) array, N >= 1.
        batch_size: rows per call.
        verbose: 1 or 2 shows a Keras progress bar (2, or a non-terminal
            stdout, prints one line at the end instead of carriage returns).

    Returns:
        The concatenation over batches, in `fn`'s output structure.
    """
    batch_size = int(batch_size)
    if batch_size < 1:
        raise ValueError(f"batch_size: expected an int >= 1, got {batch_size}.")
    n = len(images)
    if n == 0:
        raise ValueError("images: got an empty array; pass at least one image.")
    if verbose == 1 and not sys.stdout.isatty():
        verbose = 2
    bar = keras.utils.Progbar(n, verbose=verbose) if verbose else None
    parts = []
    for i in range(0, n, batch_size):
        xb = images[i:i + batch_size]
        if dtype is not None:
            xb = np.asarray(xb, dtype)
        out = fn(xb)
        if isinstance(out, dict):
            parts.append({k: _numpy(v) for k, v in out.items()})
        elif isinstance(out, (tuple, list)):
            parts.append(tuple(_numpy(v) for v in out))
        else:
            parts.append(_numpy(out))
        if bar:
            bar.add(len(xb))
    first = parts[0]
    if isinstance(first, dict):
        return {k: np.concatenate([p[k] for p in parts]) for k in first}
    if isinstance(first, tuple):
        return tuple(np.concatenate([p[i] for p in parts]) for i in range(len(first)))
    return np.concatenate(parts)
