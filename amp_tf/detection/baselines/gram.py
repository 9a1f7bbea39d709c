"""Gram-matrix OOD score (Sastry & Oore, ICML 2020).

"Detecting out-of-distribution examples with Gram matrices".  For a feature
map ``F`` of layer ``l`` (``C`` channels x ``H*W`` positions) and an order
``p``, the p-th order Gram matrix is::

    G_l^p = (F^p  F^p^T)^(1/p)      (F^p elementwise; signed root sign(g)*|g|^(1/p))

Like the paper's reference code, each ``G_l^p`` is reduced to its **row sums**
(a ``C``-vector, ``(G 1)_i = sum_j G_ij`` taken *before* the root), which
keeps memory at ``O(C)`` per layer and order -- the ``C x C`` matrix is never
formed: ``sum_j (F^p F^p^T)_ij = sum_k F^p_ik s_k`` with
``s_k = sum_j F^p_jk``.  ``reduction="upper"`` uses the upper-triangular
entries (diagonal included) of ``G_l^p`` instead (memory ``O(C^2)``).

On ID training data, for every class ``c`` *predicted* by the model, every
layer, order and entry, the minimum ``mn`` and maximum ``mx`` over the
training samples are recorded.  A value ``v`` of a test sample (compared with
the statistics of its predicted class) deviates by::

    delta(v) = 0                       if mn <= v <= mx
             = (mn - v) / (|mn| + eps) if v < mn
             = (v - mx) / (|mx| + eps) if v > mx          (eps = 1e-6)

and the total deviation is the sum over layers, orders and entries.  The
paper then normalises each layer's deviation by its mean on a held-out ID
validation set; the AMP paper ran the method **without** that normalisation,
and so does this module::

    score(x) = -sum_{l, p, entries} delta                (higher = ID, max 0)

Default layers (``layers="auto"``, see :func:`default_gram_layers`): the
output of every residual block of the :mod:`amp_tf.models` backbones
(``stage*_block*_out``, the post-ReLU block outputs of the ResNets; for the
pre-activation WRN, whose blocks end in an ``Add``, ``stage*_block*_add``),
plus ``stem_relu`` and ``final_relu`` where present.  For other models: every
ReLU/Activation layer with a 4-D output, else every ``Conv2D``.  The paper
used (almost) every conv and activation output; the block outputs are a
practical subset (resnet18: 9 layers, wrn40_2: 19).  Orders ``p = 1..5``
(``max_order=5``; the paper used 10 -- high orders of unnormalised
activations overflow float32, the Gram features are therefore computed in
float64).  Classes never predicted on the training data fall back to the
statistics over all training samples.

Example::

    from amp_tf.method import scores
    import amp_tf.detection.baselines  # registers the baselines
    gram = scores.get("gram", max_order=5).fit(model, x_train)
    gram(x_test), gram(x_ood)                     # numpy (N,), higher = ID
"""
from __future__ import annotations

import re

import keras
import numpy as np
import tensorflow as tf

from amp_tf.detection.baselines import _common
from amp_tf.method.scores import FittedScore, register

__all__ = ["Gram", "deviation", "default_gram_layers", "gram_row_sums"]


def deviation(values, mins, maxs, eps=1e-6):
    """Elementwise deviation of ``values`` from the interval ``[mins, maxs]``.

    ``0`` inside, ``(mins - v) / (|mins| + eps)`` below, ``(v - maxs) / (|maxs| + eps)``
    above (broadcasting numpy arrays, float64).

    Example:
        >>> deviation([1.5, 0.5, 6.0], 1.0, 4.0, eps=0.0).tolist()
        [0.0, 0.5, 0.5]
    """
    v = np.asarray(values, dtype=np.float64)
    mn = np.asarray(mins, dtype=np.float64)
    mx = np.asarray(maxs, dtype=np.float64)
    below = np.maximum(mn - v, 0.0)
    above = np.maximum(v - mx, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        d_below = np.where(below > 0, below / (np.abs(mn) + eps), 0.0)
        d_above = np.where(above > 0, above / (np.abs(mx) + eps), 0.0)
    return d_below + d_above


def gram_row_sums(maps, max_order, dtype=tf.float64):
    """The row-sum Gram features of feature maps: ``(B, sum_l C_l * max_order)``, graph-safe.

    For every map ``F`` of ``maps`` (``(B, H, W, C)``, channels last), layer by layer and
    order by order ``p = 1..max_order``: ``g = (F^p F^p^T) 1`` (``C`` values, the row sums,
    ``F^p`` by running products), then the signed root ``sign(g) |g|^(1/p)`` for ``p > 1``.
    Only builtin TFLite ops (``MUL``, ``SUM``, ``BATCH_MATMUL``, ``POW``, ``SIGN``, ``ABS``,
    ``RESHAPE``): the anchored Gram score of `amp_tf.detection.detectors` runs it in float32 in the exports.
    """
    feats = []
    for f in maps:
        c = int(f.shape[-1])
        f = tf.reshape(tf.cast(f, dtype), (tf.shape(f)[0], -1, c))  # (B, positions, C)
        fp = None
        for p in range(1, int(max_order) + 1):
            fp = f if p == 1 else fp * f  # F^p by products: float64 pow is ~10x slower
            # (F^p F^p^T 1)_c = sum_k s_k F^p_kc, s_k = sum_c' F^p_kc': (B, 1, K) @ (B, K, C); a batched
            # matmul is ~2x faster than the equivalent einsum in float32 on CPU (the same in float64)
            g = tf.matmul(tf.reduce_sum(fp, axis=2)[:, None, :], fp)[:, 0, :]
            if p > 1:
                g = tf.sign(g) * tf.abs(g) ** (1.0 / p)
            feats.append(g)
    return tf.concat(feats, axis=1)


def rank4_output(layer):
    try:
        out = layer.output
    except (AttributeError, ValueError):  # shared layer / no single output
        return False
    return not isinstance(out, (list, tuple)) and len(out.shape) == 4


def default_gram_layers(model):
    """The layer names used by ``layers="auto"`` (see the module docstring)."""
    names = [l.name for l in model.layers if rank4_output(l)]
    blocks = [n for n in names if re.search(r"_out$", n)]
    if not blocks:
        blocks = [n for n in names if re.search(r"_add$", n)]
    if blocks:
        pre = [n for n in ("stem_relu",) if n in names and n not in blocks]
        post = [n for n in ("final_relu",) if n in names and n not in blocks]
        return pre + blocks + post
    acts = [l.name for l in model.layers
            if isinstance(l, (keras.layers.ReLU, keras.layers.Activation)) and rank4_output(l)]
    if acts:
        return acts
    convs = [l.name for l in model.layers
             if isinstance(l, keras.layers.Conv2D) and rank4_output(l)]
    if convs:
        return convs
    raise ValueError(
        f"model {model.name!r} has no 4-D (B, H, W, C) activation or Conv2D outputs for the "
        "Gram-matrix baseline; pass layers=[...] explicitly"
    )


@register(
    "gram",
    needs_model=True,
    reference="Sastry & Oore 2020 (Gram matrices): G_l^p = (F^p F^p^T)^(1/p) row sums; "
    "per predicted class min/max on ID train; score = -sum of deviations (no val normalisation)",
)
class Gram(FittedScore):
    """Negative total Gram-matrix deviation (higher = ID, 0 = inside all ranges).

    Args:
        layers: ``"auto"`` (see :func:`default_gram_layers`) or a list of layer
            names with 4-D channels-last outputs.
        max_order: highest order ``P``; orders ``1..P`` are used.
        reduction: ``"row_sums"`` (paper code, default) or ``"upper"``
            (upper-triangular entries incl. the diagonal; memory ``O(C^2)``).
        eps: guard of the relative deviation denominators.
        batch_size: inputs per forward pass.
        dtype: dtype of the Gram computation (``"float64"``).

    Fitted attributes: ``layers_`` (names), ``mins_`` / ``maxs_`` (``(K, D)``
    per predicted class, ``D = #values per sample``), ``counts_`` (training
    samples per predicted class), ``num_classes_``.

    Example::

        g = Gram(layers=["stage1_block1_out"], max_order=3).fit(model, x_train)
        g.deviations(x)        # numpy (N,) total deviation; g(x) == -g.deviations(x)
    """

    fit_on = "train"

    def __init__(self, layers="auto", max_order=5, reduction="row_sums", eps=1e-6,
                 batch_size=128, dtype="float64"):
        super().__init__(layers=layers, max_order=max_order, reduction=reduction, eps=eps,
                         batch_size=batch_size, dtype=dtype)
        if int(max_order) < 1:
            raise ValueError(f"max_order must be >= 1, got {max_order}")
        if reduction not in ("row_sums", "upper"):
            raise ValueError(f"reduction must be 'row_sums' or 'upper', got {reduction!r}")
        self.layers = layers
        self.max_order = int(max_order)
        self.reduction = reduction
        self.eps = float(eps)
        self.batch_size = int(batch_size)
        self.dtype = tf.as_dtype(dtype)

    # ------------------------------------------------------------ features
    def _build(self, model):
        names = default_gram_layers(model) if self.layers == "auto" else list(self.layers)
        if not names:
            raise ValueError("layers must name at least one layer")
        outs = []
        for n in names:
            layer = _common.get_layer(model, n)
            if not rank4_output(layer):
                raise ValueError(
                    f"layer {n!r} must have one 4-D (B, H, W, C) output for the Gram baseline"
                )
            outs.append(layer.output)
        inputs = model.inputs if len(model.inputs) > 1 else model.inputs[0]
        extractor = keras.Model(inputs, [model.outputs[0]] + outs, name=f"{model.name}_gram")
        orders = range(1, self.max_order + 1)
        dtype, upper = self.dtype, self.reduction == "upper"
        tri = {}
        for o in outs:
            c = int(o.shape[-1])
            if upper and c not in tri:
                tri[c] = np.stack(np.triu_indices(c), axis=-1)

        def upper_feats(maps):
            feats = []
            for f in maps:
                c = int(f.shape[-1])
                f = tf.cast(f, dtype)
                f = tf.reshape(f, (tf.shape(f)[0], -1, c))  # (B, positions, C)
                fp = None
                for p in orders:
                    fp = f if p == 1 else fp * f  # F^p by products: float64 pow is ~10x slower
                    g = tf.einsum("bkc,bkd->bcd", fp, fp)
                    g = tf.transpose(tf.gather_nd(tf.transpose(g, (1, 2, 0)), tri[c]))
                    if p > 1:
                        g = tf.sign(g) * tf.abs(g) ** (1.0 / p)
                    feats.append(g)
            return tf.concat(feats, axis=1)

        def fn(x):
            res = extractor(x, training=False)
            logits, maps = res[0], res[1:]
            vals = upper_feats(maps) if upper else gram_row_sums(maps, self.max_order, dtype)
            pred = tf.argmax(_common.float_logits(logits), axis=-1)
            return pred, vals

        self.layers_ = names
        self._fn = _common.compiled(fn)
        self.num_classes_ = int(model.outputs[0].shape[-1])

    def gram_features(self, x):
        """``(predicted_class (N,), values (N, D))`` of the Gram features of ``x``."""
        x = _common.as_inputs(x)
        pred, vals = _common.run_batched(self._fn, x, self.batch_size)
        return pred.astype(np.int64), vals.astype(np.float64)

    # ----------------------------------------------------------------- fit
    def fit(self, model, x_train, y_train=None):
        """Record per-predicted-class min/max of every Gram value on ID training data.

        ``y_train`` is accepted for a uniform signature but unused: like the
        paper, the statistics are grouped by the model's *predicted* class.
        """
        _common.check_model(model)
        x_train = _common.as_inputs(x_train, "x_train")
        self._build(model)
        batches = (self.gram_features(x_train[s:s + self.batch_size])  # bounded memory
                   for s in range(0, x_train.shape[0], self.batch_size))
        return self.fit_values(batches, self.num_classes_)

    def fit_values(self, batches, num_classes, layers=None):
        """The per-predicted-class min/max of Gram features computed elsewhere; returns self.

        ``batches``: an iterable of ``(predicted_class (n,), values (n, D))`` (e.g. the anchored
        Gram features of `amp_tf.detection.detectors`, averaged over the anchors); ``layers``: their layer
        names (``layers_``). Classes never predicted fall back to the ranges over all samples.
        """
        k = int(num_classes)
        mins = maxs = None
        counts = np.zeros(k, np.int64)
        for pred, vals in batches:
            pred, vals = np.asarray(pred, np.int64), np.asarray(vals, np.float64)
            if mins is None:
                mins = np.full((k, vals.shape[1]), np.inf)
                maxs = np.full((k, vals.shape[1]), -np.inf)
            for c in np.unique(pred):
                v = vals[pred == c]
                mins[c] = np.minimum(mins[c], v.min(axis=0))
                maxs[c] = np.maximum(maxs[c], v.max(axis=0))
                counts[c] += v.shape[0]
        if mins is None:
            raise ValueError("Gram: no training samples to fit the ranges on")
        seen = counts > 0
        unseen = ~seen
        if unseen.any():  # classes never predicted: use the statistics of all samples
            mins[unseen] = mins[seen].min(axis=0)
            maxs[unseen] = maxs[seen].max(axis=0)
        if layers is not None:
            self.layers_ = list(layers)
        self.num_classes_ = k
        self.mins_, self.maxs_, self.counts_ = mins, maxs, counts
        self.fitted = True
        return self

    # --------------------------------------------------------------- score
    def deviations(self, x):
        """Total deviation per sample, numpy ``(N,)`` (>= 0)."""
        self._check_fitted()
        x = _common.as_inputs(x)
        out = []
        for s in range(0, x.shape[0], self.batch_size):
            out.append(self.value_deviations(*self.gram_features(x[s:s + self.batch_size])))
        return np.concatenate(out)

    def value_deviations(self, pred, values):
        """Total deviation ``(n,)`` of Gram features ``values (n, D)`` from the ranges of their
        predicted classes ``pred (n,)`` (the fitted ``mins_`` / ``maxs_``)."""
        self._check_fitted()
        pred = np.asarray(pred, np.int64)
        return deviation(values, self.mins_[pred], self.maxs_[pred], self.eps).sum(axis=1)

    def score(self, x):
        """``-deviations(x)``: numpy ``(N,)``, higher = ID."""
        return 0.0 - self.deviations(x)  # 0.0 - d: no "-0.0" for in-range samples
