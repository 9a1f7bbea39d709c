"""Helpers shared by the baseline modules (private)."""
from __future__ import annotations

import weakref

import keras
import numpy as np
import scipy.special
import tensorflow as tf

#: Compiled inference-mode forward of each model (weakly keyed: freed with the model).
_LOGIT_FNS = weakref.WeakKeyDictionary()

#: The three scores computed from a set of softmax predictions (passes or members).
PREDICTIVE_SCORES = ("msp", "entropy", "variance")


def as_inputs(x, what="x"):
    """``x`` as a non-empty numpy batch; non-float data is cast to ``floatx``."""
    if isinstance(x, tf.Tensor):
        x = x.numpy()
    x = np.asarray(x)
    if x.ndim < 1 or x.shape[0] == 0:
        raise ValueError(f"{what} must be a non-empty batch (N, ...), got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(keras.config.floatx())
    return x


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


def check_model(model, what="model"):
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


def get_layer(model, name):
    try:
        return model.get_layer(name)
    except ValueError:
        raise ValueError(
            f"model {model.name!r} has no layer named {name!r}; the baselines expect the "
            "amp_tf.models convention (penultimate pooled features in a layer 'features')"
        ) from None


def pooled_features(model, layer):
    """`x -> float features of `layer``, feature maps averaged over their spatial axes.

    The one feature extractor of the feature-space baselines (Mahalanobis, KNN).
    """
    out = get_layer(model, layer).output
    if isinstance(out, (list, tuple)):
        raise ValueError(f"layer {layer!r} has several outputs")
    inputs = model.inputs if len(model.inputs) > 1 else model.inputs[0]
    extractor = keras.Model(inputs, out, name=f"{model.name}_{layer}_extractor")
    rank = len(out.shape)

    def feat(x):
        f = float_logits(extractor(x, training=False))
        if rank > 2:  # feature maps: mean over spatial axes (channels last)
            f = tf.reduce_mean(f, axis=list(range(1, rank - 1)))
        return f

    return feat


def compiled(fn):
    """``tf.function`` without retracing for every new batch size."""
    return tf.function(fn, reduce_retracing=True)


def run_batched(fn, x, batch_size):
    """Apply ``fn`` (numpy/tensor batch -> tensor or tuple of tensors) batch-wise.

    Returns numpy arrays concatenated over batches (a tuple if ``fn`` returns one).
    """
    from amp_tf.inference import batched

    return batched(lambda xb: fn(tf.convert_to_tensor(xb)), x, batch_size, dtype=None)


def float_logits(z):
    """Logits as float32/float64 tensors (mixed-precision float16 -> float32)."""
    z = tf.convert_to_tensor(z)
    if z.dtype not in (tf.float32, tf.float64):
        z = tf.cast(z, tf.float32)
    return z


def model_logits(model, x, batch_size=256):
    """Inference-mode outputs of ``model`` on ``x``: numpy ``(N, K)`` float32/float64.

    One compiled ``model(x, training=False)`` per model (cached), run over
    numpy batches: no tf.data iterator per call (``model.predict`` builds one,
    and tearing it down can stall for seconds, see ``amp_tf.data.tfdata``).
    """
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
