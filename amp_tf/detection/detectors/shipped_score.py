"""The shipped detector's score in-graph: `ShippedScore` (AMP alone, a feature score on the anchored
features, or a z-scored sum of AMP and one or two of them), `score_layer` that builds it, and the kinds it
knows (`KINDS`).
`amp_tf.detection.detectors.shipped` fits, saves and loads it; every name still imports from there."""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from amp_tf.method.predictor import AMP_SCORES, AMP_VARIANTS, amp_outputs

#: The kinds on the pooled `"features"` layer, and on the Gram features of the block outputs.
POOLED_KINDS, GRAM_KINDS = ("mahalanobis", "knn"), ("gram",)
FEATURE_KINDS = (*POOLED_KINDS, *GRAM_KINDS)
#: AMP with two feature scores (their z-scored weighted sum): the kind and its feature scores.
MULTI = {"amp+mahalanobis+gram": ("mahalanobis", "gram")}
KINDS = (*AMP_SCORES, *FEATURE_KINDS, *(f"amp+{f}" for f in FEATURE_KINDS), *MULTI)
#: The highest Gram order of the anchored `gram` (orders 1..5, as the vanilla Gram baseline).
GRAM_ORDER = 5
#: The state arrays a `ShippedScore` may hold (non-trainable weights), by kind.
STATE_NAMES = ("proj", "proj_means", "bank", "mins", "maxs")


def feature_kinds(kind):
    """The feature scores of `kind`, in its order: `()` for AMP, `("mahalanobis",)` for `mahalanobis` and
    `amp+mahalanobis`, `("mahalanobis", "gram")` for `amp+mahalanobis+gram`."""
    if kind in MULTI:
        return MULTI[kind]
    base = kind.split("+", 1)[-1]
    return (base,) if base in FEATURE_KINDS else ()


def amp_part(kind):
    """Whether the score of `kind` has an AMP term."""
    return kind in AMP_SCORES or kind.startswith("amp+")


def amp_value(outputs, name):
    """The AMP score `name` (a name of `AMP_SCORES`) from `amp_outputs`-like outputs of its variant."""
    if name in AMP_VARIANTS:
        return outputs["amp_score"]
    return -outputs["tau"] if name == "neg_tau" else outputs[name]


def mahalanobis_factor(precision):
    """`W (D, r)` with `W W^T = precision` (a PSD pseudo-inverse): eigenvectors times the root of the
    positive eigenvalues (those pinvh kept)."""
    vals, vecs = np.linalg.eigh(np.asarray(precision, np.float64))
    keep = vals > vals.max() * 1e-12 if vals.size and vals.max() > 0 else np.zeros_like(vals, bool)
    return vecs[:, keep] * np.sqrt(vals[keep])[None]


@keras.saving.register_keras_serializable(package="amp_tf")
class ShippedScore(keras.layers.Layer):
    """The shipped score in-graph: `call(per_anchor_logits (K, B, N), features (B, D)) -> (B,)`, higher = ID.

    Args:
        kind: one of `KINDS`.
        amp_score: the AMP term (a name of `AMP_SCORES`) for `amp+...`; for an AMP kind, the kind.
        w: AMP's weight in `amp+...` (0..1).
        stats: `[[mean, std], ...]` of every term (AMP first, then `feature_kinds(kind)`) on ID validation
            images.
        term_weights: every term's weight, AMP first (`amp+mahalanobis+gram` only; two terms use `w`).
        k: the neighbour rank of `knn`.
        feature_dim, num_classes, bank_size, rank, gram_dim: the shapes of the state (weights `proj` (D, r)
            and `proj_means` (C, r) for Mahalanobis, `bank` (n, D) for KNN, `mins` / `maxs` (C, Dg) for Gram).
        gram_layers, gram_order: the layers and the highest order of the Gram features (`gram` kinds).
        gram_eps: the guard of Gram's relative deviations.
        eps: tau's floor for `calibration="divide"`.

    The features `call` takes are the pooled features (B, D) for `mahalanobis` / `knn`, the Gram
    features (B, Dg) for `gram`, both `(B, D + Dg)` for `amp+mahalanobis+gram`
    (`feature_extractor(backbone, score=layer)` gives them).
    """

    def __init__(self, kind, amp_score="amp", w=1.0, stats=((0.0, 1.0), (0.0, 1.0)), k=50, feature_dim=0,
                 num_classes=0, bank_size=0, rank=0, eps=1e-6, gram_dim=0, gram_layers=(), gram_order=0,
                 gram_eps=1e-6, term_weights=None, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if kind not in KINDS:
            raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}.")
        self.kind, self.amp_score = kind, kind if kind in AMP_SCORES else amp_score
        if self.amp_score not in AMP_SCORES:
            raise ValueError(f"amp_score: expected one of {AMP_SCORES}, got {amp_score!r}.")
        self.w, self.k, self.eps = float(w), int(k), float(eps)
        self.stats = [[float(v) for v in pair] for pair in stats]
        self.feature_dim, self.num_classes = int(feature_dim), int(num_classes)
        self.bank_size, self.rank = int(bank_size), int(rank)
        self.gram_dim, self.gram_layers = int(gram_dim), [str(n) for n in gram_layers]
        self.gram_order, self.gram_eps = int(gram_order), float(gram_eps)
        kinds = feature_kinds(kind)
        terms = 1 + len(kinds) if amp_part(kind) and kinds else 0
        self.term_weights = None if term_weights is None else [float(v) for v in term_weights]
        if terms > 2 and (self.term_weights is None or len(self.term_weights) != terms or len(self.stats) != terms):
            raise ValueError(f"kind {kind!r}: pass term_weights and stats for its {terms} terms (AMP, "
                             f"{', '.join(kinds)}), got term_weights {term_weights} and {len(self.stats)} stats.")
        if "mahalanobis" in kinds:
            self.proj = self.add_weight(shape=(self.feature_dim, self.rank), initializer="zeros",
                                        trainable=False, name="proj")
            self.proj_means = self.add_weight(shape=(self.num_classes, self.rank), initializer="zeros",
                                              trainable=False, name="proj_means")
        if "knn" in kinds:
            self.bank = self.add_weight(shape=(self.bank_size, self.feature_dim), initializer="zeros",
                                        trainable=False, name="bank")
        if "gram" in kinds:
            if not self.gram_layers or self.gram_order < 1:
                raise ValueError("kind 'gram': pass gram_layers (the layer names) and gram_order >= 1.")
            self.mins = self.add_weight(shape=(self.num_classes, self.gram_dim), initializer="zeros",
                                        trainable=False, name="mins")
            self.maxs = self.add_weight(shape=(self.num_classes, self.gram_dim), initializer="zeros",
                                        trainable=False, name="maxs")

    def build(self, input_shape=None):
        self.built = True

    def uses_features(self):
        return bool(feature_kinds(self.kind))

    def uses_gram(self):
        """Whether the features include the Gram features."""
        return any(f in GRAM_KINDS for f in feature_kinds(self.kind))

    def uses_pooled(self):
        """Whether the features include the pooled features (first, `feature_dim` wide)."""
        return any(f in POOLED_KINDS for f in feature_kinds(self.kind))

    def amp_term(self, k_logits):
        red, cal = AMP_VARIANTS.get(self.amp_score, AMP_VARIANTS["amp"])
        return amp_value(amp_outputs(k_logits, red, cal, self.eps), self.amp_score)

    def feature_term(self, feats, k_logits=None, kind=None):
        """The feature score `kind` (default: the kind's first) from the features `call` takes."""
        kind = kind or feature_kinds(self.kind)[0]
        feats = tf.cast(feats, tf.float32)
        if kind == "gram":  # -sum of the deviations from the ranges of AMP's predicted class
            feats = feats[:, self.feature_dim:] if self.uses_pooled() else feats
            pred = tf.argmax(tf.reduce_mean(tf.cast(k_logits, tf.float32), axis=0), axis=-1, output_type=tf.int32)
            mn, mx = tf.gather(tf.cast(self.mins, tf.float32), pred), tf.gather(tf.cast(self.maxs, tf.float32), pred)
            dev = (tf.nn.relu(mn - feats) / (tf.abs(mn) + self.gram_eps)
                   + tf.nn.relu(feats - mx) / (tf.abs(mx) + self.gram_eps))
            return -tf.reduce_sum(dev, axis=-1)
        feats = feats[:, :self.feature_dim] if self.uses_gram() else feats
        if kind == "mahalanobis":
            g = tf.matmul(feats, tf.cast(self.proj, tf.float32))
            diff = g[:, None, :] - tf.cast(self.proj_means, tf.float32)[None]
            return -tf.reduce_min(tf.reduce_sum(tf.square(diff), axis=-1), axis=-1)
        bank = tf.cast(self.bank, tf.float32)
        z = feats / (tf.sqrt(tf.reduce_sum(tf.square(feats), axis=-1, keepdims=True)) + 1e-10)
        d2 = (tf.reduce_sum(tf.square(z), axis=-1, keepdims=True) + tf.reduce_sum(tf.square(bank), axis=-1)[None]
              - 2.0 * tf.matmul(z, bank, transpose_b=True))
        kth = -tf.math.top_k(-d2, k=self.k).values[:, self.k - 1]
        return -tf.sqrt(tf.maximum(kth, 0.0))

    def call(self, k_logits, features=None):
        kinds = feature_kinds(self.kind)
        if not kinds:
            return self.amp_term(k_logits)
        if not amp_part(self.kind):
            return self.feature_term(features, k_logits)
        if len(kinds) == 1:
            f = self.feature_term(features, k_logits)
            (ma, sa), (mf, sf) = self.stats
            return self.w * (self.amp_term(k_logits) - ma) / sa + (1.0 - self.w) * (f - mf) / sf
        terms = [self.amp_term(k_logits)] + [self.feature_term(features, k_logits, f) for f in kinds]
        out = 0.0
        for w, (m, sd), t in zip(self.term_weights, self.stats, terms):
            out = out + w * (t - m) / sd
        return out

    def set_state(self, state):
        """Assigns the fitted arrays (`proj`, `proj_means`, `bank` or `mins`, `maxs`) from a dict of numpy
        arrays."""
        for name in STATE_NAMES:
            if hasattr(self, name):
                getattr(self, name).assign(np.asarray(state[name], np.float32))
        return self

    def state(self):
        return {n: keras.ops.convert_to_numpy(getattr(self, n)) for n in STATE_NAMES if hasattr(self, n)}

    def get_config(self):
        config = super().get_config()
        config.update(kind=self.kind, amp_score=self.amp_score, w=self.w, stats=self.stats, k=self.k,
                      feature_dim=self.feature_dim, num_classes=self.num_classes, bank_size=self.bank_size,
                      rank=self.rank, eps=self.eps, gram_dim=self.gram_dim, gram_layers=list(self.gram_layers),
                      gram_order=self.gram_order, gram_eps=self.gram_eps)
        if len(feature_kinds(self.kind)) > 1:
            config["term_weights"] = list(self.term_weights)
        return config


def score_layer(kind, amp_score="amp", w=1.0, stats=None, feature=None, eps=1e-6, term_weights=None):
    """A `ShippedScore` of `kind` holding the state of a fitted baseline `feature` (the `Mahalanobis`
    or `KNN` estimator of an `AnchoredFeatureDetector`, the `Gram` estimator of an `AnchoredGram`; for
    `amp+mahalanobis+gram` a dict `{"mahalanobis": ..., "gram": ...}`), or none for an AMP kind."""
    opts = dict(kind=kind, amp_score=amp_score, w=w, eps=eps, stats=stats or ((0.0, 1.0), (0.0, 1.0)),
                term_weights=term_weights)
    state = {}
    ests = feature if isinstance(feature, dict) else {f: feature for f in feature_kinds(kind)}
    for feat in feature_kinds(kind):
        state.update(_state(feat, ests[feat], opts))
    return ShippedScore(**opts).set_state(state)


def _state(feat, feature, opts):
    """The state arrays of the feature score `feat` from its fitted estimator; its shapes into `opts`."""
    if feat == "mahalanobis":
        proj = mahalanobis_factor(feature.precision_)
        opts.update(feature_dim=proj.shape[0], rank=proj.shape[1], num_classes=len(feature.means_))
        return {"proj": proj, "proj_means": feature.means_ @ proj}
    if feat == "knn":
        opts.update(feature_dim=feature.bank_.shape[1], bank_size=feature.bank_.shape[0], k=feature.k_)
        return {"bank": feature.bank_}
    opts.update(gram_dim=feature.mins_.shape[1], num_classes=feature.mins_.shape[0],
                gram_layers=list(feature.layers_), gram_order=feature.max_order, gram_eps=feature.eps)
    return {"mins": feature.mins_, "maxs": feature.maxs_}
