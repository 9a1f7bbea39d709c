"""The one batched-inference loop of amp-tf.

`batched(fn, images, batch_size)` runs `fn` over consecutive batches of an
in-memory array and concatenates the results; `fn` returns a tensor, a tuple
or a dict of tensors (e.g. a `tf.function` of a predictor or a model), and the
result has the same structure with numpy arrays. The predictor, the detectors,
the baselines and the export all use it. `model_logits(model, x)` is the
batched inference-mode forward of a plain classifier (one compiled function
per model), shared by the detectors and the baselines.

Example:

>>> import numpy as np
>>> out = batched(lambda x: {"sum": x.sum(axis=(1, 2, 3))}, np.ones((5, 2, 2, 1)), batch_size=2)
>>> out["sum"].tolist()
[4.0, 4.0, 4.0, 4.0, 4.0]
"""

from __future__ import annotations

import sys
import weakref

import keras
import numpy as np

#: Compiled inference-mode forward of each model (weakly keyed: freed with the model).
_LOGIT_FNS = weakref.WeakKeyDictionary()


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


def run_batched(fn, x, batch_size):
    """Apply ``fn`` (tensor batch -> tensor or tuple of tensors) batch-wise, batches as given.

    Returns numpy arrays concatenated over batches (a tuple if ``fn`` returns one).
    """
    import tensorflow as tf

    return batched(lambda xb: fn(tf.convert_to_tensor(xb)), x, batch_size, dtype=None)


def as_inputs(x, what="x"):
    """``x`` as a non-empty numpy batch; non-float data is cast to ``floatx``."""
    if hasattr(x, "numpy"):
        x = x.numpy()
    x = np.asarray(x)
    if x.ndim < 1 or x.shape[0] == 0:
        raise ValueError(f"{what} must be a non-empty batch (N, ...), got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(keras.config.floatx())
    return x


def check_model(model, what="model"):
    """A `keras.Model` built as a graph (functional or Sequential with an input), else a clear error."""
    if not isinstance(model, keras.Model):
        raise TypeError(f"{what} must be a keras.Model, got {type(model).__name__}")
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if not inputs:
        raise ValueError(
            f"{what} {model.name!r} is not built as a graph (no model.inputs); "
            "use a functional or Sequential model with a keras.Input"
        )


def model_logits(model, x, batch_size=256):
    """Inference-mode outputs of ``model`` on ``x``: numpy ``(N, K)`` float32/float64.

    One compiled ``model(x, training=False)`` per model (cached), run over
    numpy batches: no tf.data iterator per call (``model.predict`` builds one,
    and tearing it down can stall for seconds, see ``amp_tf.data.tfdata``).
    """
    import tensorflow as tf

    check_model(model)
    x = as_inputs(x)
    fn = _LOGIT_FNS.get(model)
    if fn is None:
        ref = weakref.ref(model)  # the cache must not keep the model alive
        fn = _LOGIT_FNS[model] = tf.function(lambda z: ref()(z, training=False), reduce_retracing=True)
    out = run_batched(fn, x, batch_size)
    if isinstance(out, (list, tuple, dict)):
        raise ValueError(f"model {model.name!r} must have a single (logits) output")
    out = np.asarray(out)
    if out.dtype not in (np.float32, np.float64):
        out = out.astype(np.float32)
    return out
