"""Deep k-nearest-neighbour OOD score (Sun, Ming, Zhu & Li, ICML 2022).

"Out-of-distribution detection with deep nearest neighbors".  The penultimate
features ``f(x)`` (layer ``"features"``) are L2-normalised,
``z = f / ||f||``; the normalised features of the ID training images form a
bank ``{z_1, ..., z_n}`` and the score is the negated distance to the
``k``-th nearest neighbour in that bank::

    S(x) = -|| z(x) - z_(k)(x) ||_2        (z_(k): k-th nearest bank point; higher = ID)

Distances use ``||a - b||^2 = ||a||^2 + ||b||^2 - 2 a.b`` (``= 2 - 2 a.b`` for
unit vectors), in float64 query chunks against the whole bank, with
``np.partition`` for the ``k``-th smallest -- a 50,000 x 64 bank and 10,000
queries fit easily in memory.  The paper's code (and OpenOOD's) returns the
*squared* distance from faiss; the ranking, hence every metric, is identical.

Choices: ``k = 50`` by default (:data:`DEFAULT_K`), the paper's CIFAR-10 value
and OpenOOD v1.5's default (``configs/postprocessors/knn.yml``); when ``k``
is left unset and the bank has fewer than 50 rows, ``k`` becomes the bank size
(with a warning), while an explicit ``k`` larger than the bank is an error.
The paper (and OpenOOD's sweep) selects ``k`` on validation data *including
OOD* samples; ID data alone gives no criterion (the detection metrics need
both), so no selection is offered here and ``k`` is taken as given.  The bank is
all training images, or a seeded random subset of ``max_train`` of them (the
paper uses 1% of ImageNet), drawn before the forward pass.  Feature maps of rank > 2 are averaged
over their spatial axes, as for :class:`~amp_tf.detection.baselines.mahalanobis.Mahalanobis`.

Example::

    knn = scores.get("knn", k=50).fit(model, x_train)
    knn(x_test)                       # numpy (N,), higher = ID
"""
from __future__ import annotations

import warnings

import keras
import numpy as np
import tensorflow as tf

from amp_tf.detection.baselines import _common
from amp_tf.method.scores import FittedScore, register

__all__ = ["KNN", "normalize", "DEFAULT_K"]

#: ``k`` used when none is given (paper, CIFAR-10; OpenOOD v1.5 default).
DEFAULT_K = 50

_CHUNK_ELEMENTS = 1 << 23  # bound of the (queries, bank) distance block


def normalize(feats, eps=1e-10):
    """Rows of ``feats`` divided by their L2 norm (float64; zero rows stay zero)."""
    feats = np.asarray(feats, dtype=np.float64)
    return feats / (np.linalg.norm(feats, axis=-1, keepdims=True) + eps)


@register(
    "knn",
    needs_model=True,
    reference="Sun et al. 2022 (deep nearest neighbors): S(x) = -||z(x) - z_(k)(x)||_2, "
    "z = f/||f|| penultimate features, z_(k) = k-th nearest normalised ID training feature",
)
class KNN(FittedScore):
    """Negated distance to the ``k``-th nearest normalised ID training feature.

    Args:
        k: rank of the neighbour (``None`` = :data:`DEFAULT_K` = 50, capped at
            the bank size with a warning); an explicit ``k`` must be <= the
            bank size.
        max_train: at most this many training rows in the bank (default
            50,000); larger training sets are subsampled with ``seed``.
        seed: seed of the subsample.
        layer: feature layer (default ``"features"``).
        batch_size: inputs per forward pass.

    Fitted attributes: ``bank_`` (``(n, D)`` float64, unit rows), ``k_`` (the
    ``k`` in use).
    ``fit(model, x_train, y_train=None)`` ignores the labels.
    """

    fit_on = "train"

    def __init__(self, k=None, max_train=50_000, seed=0, layer="features", batch_size=256):
        super().__init__(k=k, max_train=max_train, seed=seed, layer=layer, batch_size=batch_size)
        if k is not None and (int(k) != k or k < 1):
            raise ValueError(f"k must be a positive integer or None, got {k!r}")
        if max_train is not None and int(max_train) < 1:
            raise ValueError(f"max_train must be >= 1 or None, got {max_train!r}")
        self.k, self.seed, self.layer = (None if k is None else int(k)), seed, layer
        self.max_train = None if max_train is None else int(max_train)
        self.batch_size = int(batch_size)

    def fit(self, model, x_train, y_train=None):
        """Store the normalised features of (a subset of) ``x_train``; returns ``self``."""
        _common.check_model(model)
        x_train = _common.as_inputs(x_train, "x_train")
        x_train = x_train[self.bank_rows(x_train.shape[0])]
        self._build(model)
        return self.fit_features(self.features(x_train))

    def bank_rows(self, n):
        """Indices of the ``n`` training rows that form the bank: all, or a sorted seeded
        subset of ``max_train`` (drawn before any forward pass)."""
        if self.max_train is not None and n > self.max_train:
            return np.sort(np.random.default_rng(self.seed).choice(n, self.max_train, replace=False))
        return np.arange(n)

    def fit_features(self, feats, y_train=None):
        """Fit from precomputed (unnormalised) features ``(n, D)`` of the bank rows (labels ignored);
        returns ``self``."""
        bank = normalize(feats)
        if bank.ndim != 2 or bank.shape[0] == 0:
            raise ValueError(f"features must be a non-empty (n, D) array, got {bank.shape}")
        n = bank.shape[0]
        if self.k is not None and self.k > n:
            raise ValueError(
                f"k={self.k} is larger than the feature bank ({n} ID training samples); "
                "lower k or pass more training data")
        if self.k is None and DEFAULT_K > n:
            warnings.warn(f"knn: only {n} ID training samples; using k={n} instead of the "
                          f"default k={DEFAULT_K}", stacklevel=3)
        self.k_ = min(DEFAULT_K, n) if self.k is None else self.k
        self.bank_ = bank
        self._bank_sq = np.einsum("nd,nd->n", bank, bank)
        self.fitted = True
        return self

    def _build(self, model):
        self._feat_fn = _common.compiled(_common.pooled_features(model, self.layer))

    def features(self, x):
        """Unnormalised features ``(N, D)`` (float64) of inputs ``x``."""
        if getattr(self, "_feat_fn", None) is None:
            raise RuntimeError("knn: no model; call .fit(model, x_train) first")
        x = _common.as_inputs(x)
        return _common.run_batched(self._feat_fn, x, self.batch_size).astype(np.float64)

    def kth_distance_from_features(self, feats):
        """Distance ``(N,)`` of normalised ``feats`` to their ``k``-th nearest bank point."""
        self._check_fitted()
        q = normalize(feats)
        if q.ndim != 2 or q.shape[1] != self.bank_.shape[1]:
            raise ValueError(f"features must be (N, {self.bank_.shape[1]}), got {q.shape}")
        chunk = max(1, _CHUNK_ELEMENTS // self.bank_.shape[0])
        out = []
        for s in range(0, q.shape[0], chunk):
            qc = q[s:s + chunk]
            d2 = qc @ self.bank_.T  # in place: ||b||^2 - 2 q.b; ||q||^2 is a row constant
            d2 *= -2.0
            d2 += self._bank_sq
            kth = np.partition(d2, self.k_ - 1, axis=1)[:, self.k_ - 1]
            out.append(kth + np.einsum("nd,nd->n", qc, qc))
        return np.sqrt(np.maximum(np.concatenate(out), 0.0))

    def score(self, x):
        """``-(k-th nearest-neighbour distance)`` (numpy ``(N,)``, higher = ID)."""
        self._check_fitted()
        return -self.kth_distance_from_features(self.features(x))

    def score_features(self, feats):
        """:meth:`score` from precomputed features ``(N, D)``."""
        return -self.kth_distance_from_features(feats)
