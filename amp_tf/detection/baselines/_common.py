"""Helpers shared by the baseline modules (private).

The batched forward passes (`model_logits`, `run_batched`) and the input checks
(`as_inputs`, `check_model`) live in `amp_tf.method.inference`, the one batch loop;
they are imported here so the baselines keep one helper namespace.
"""
from __future__ import annotations

import keras
import numpy as np
import scipy.special
import tensorflow as tf

from amp_tf.method.inference import as_inputs, check_model, model_logits, run_batched  # noqa: F401

#: The three scores computed from a set of softmax predictions (passes or members).
PREDICTIVE_SCORES = ("msp", "entropy", "variance")


def as_labels(y, n, what="y"):
    """Integer labels ``(n,)`` from integer labels or one-hot / probability rows."""
    y = np.asarray(y)
    if y.ndim == 2:
        y = y.argmax(-1)
    y = y.reshape(-1)
    if y.shape[0] != n:
        raise ValueError(f"{what} has {y.shape[0]} labels for {n} samples")
    if not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.equal(np.mod(y, 1), 0)):
            raise ValueError(f"{what} must hold integer class labels")
        y = y.astype(np.int64)
    return y


def get_layer(model, name):
    try:
        return model.get_layer(name)
    except ValueError:
        raise ValueError(
            f"model {model.name!r} has no layer named {name!r}; the baselines expect the "
            "amp_tf.models convention (penultimate pooled features in a layer 'features')"
        ) from None


def pooled_features(model, layer, with_logits=False):
    """`x -> float features of `layer``, feature maps averaged over their spatial axes.

    The one feature extractor of the feature-space baselines (Mahalanobis, KNN),
    also on an anchored backbone (`amp_tf.detection.detectors`: the anchored rows `[c, x - c]`).
    With `with_logits=True` it returns `x -> (features, logits)` from the same forward
    pass (the model's output, float32).
    """
    out = get_layer(model, layer).output
    if isinstance(out, (list, tuple)):
        raise ValueError(f"layer {layer!r} has several outputs")
    inputs = model.inputs if len(model.inputs) > 1 else model.inputs[0]
    outputs = [out, model.outputs[0]] if with_logits else out
    extractor = keras.Model(inputs, outputs, name=f"{model.name}_{layer}_extractor")
    rank = len(out.shape)

    def pool(f):
        f = float_logits(f)
        if rank > 2:  # feature maps: mean over spatial axes (channels last)
            f = tf.reduce_mean(f, axis=list(range(1, rank - 1)))
        return f

    def feat(x):
        if with_logits:
            f, logits = extractor(x, training=False)
            return pool(f), float_logits(logits)
        return pool(extractor(x, training=False))

    return feat


def compiled(fn):
    """``tf.function`` without retracing for every new batch size."""
    return tf.function(fn, reduce_retracing=True)


def float_logits(z):
    """Logits as float32/float64 tensors (mixed-precision float16 -> float32)."""
    z = tf.convert_to_tensor(z)
    if z.dtype not in (tf.float32, tf.float64):
        z = tf.cast(z, tf.float32)
    return z


def perturb_pixels(x, grad, epsilon):
    """``x - 255 * epsilon * sign(grad)``, clipped to the pixel range [0, 255].

    Input pre-processing (ODIN, Mahalanobis) on raw pixels: ``epsilon`` is in
    the papers' [0, 1] image units (their step on normalised inputs is
    ``epsilon / std``, i.e. ``epsilon`` in [0, 1] units), and the perturbed
    image stays a valid image.
    """
    step = tf.cast(255.0 * epsilon, x.dtype) * tf.sign(grad)
    return tf.clip_by_value(x - step, 0.0, 255.0)


def softmax(z, from_logits=True):
    """Row-wise softmax in float64 (identity cast when ``from_logits=False``)."""
    z = np.asarray(z, dtype=np.float64)
    return scipy.special.softmax(z, axis=-1) if from_logits else z


def predictive_scores(probs):
    """MSP, negative entropy and negative variance of stacked softmax predictions.

    Args:
        probs: ``(S, N, K)`` softmax probabilities of ``S`` stochastic passes
            (MC dropout) or ensemble members.

    Returns:
        ``{"msp", "entropy", "variance"}`` -> numpy ``(N,)`` float64, all
        higher = in-distribution, with ``p_bar = mean_s probs[s]``::

            msp      = max_k p_bar_k
            entropy  = sum_k p_bar_k log p_bar_k          (= -H(p_bar))
            variance = -(1/K) sum_k Var_s(probs[s, :, k])   (population variance)
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 3:
        raise ValueError(f"probs must have shape (S, N, K), got {probs.shape}")
    mean = probs.mean(axis=0)
    logp = np.log(np.clip(mean, 1e-300, None))
    return {
        "msp": mean.max(axis=-1),
        "entropy": np.sum(mean * logp, axis=-1),
        "variance": 0.0 - probs.var(axis=0).mean(axis=-1),  # 0.0 - v: no "-0.0"
    }
