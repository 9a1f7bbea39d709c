"""Mahalanobis-distance OOD score (Lee, Lee, Lee & Shin, NeurIPS 2018).

"A simple unified framework for detecting out-of-distribution samples and
adversarial attacks".  Class-conditional Gaussians with a tied covariance are
fitted to the penultimate features ``f(x)`` of the ID training data::

    mu_c  = mean of f(x_i) over the training samples of class c
    Sigma = (1/N) sum_c sum_{i in c} (f_i - mu_c)(f_i - mu_c)^T
    M(x)  = max_c -(f(x) - mu_c)^T Sigma^{-1} (f(x) - mu_c)      (higher = ID)

Optional input pre-processing (paper Eq. 4, ``epsilon > 0``)::

    x~ = x - epsilon * sign(grad_x (f(x) - mu_c^)^T Sigma^{-1} (f(x) - mu_c^)),
    c^ = argmin_c distance(f(x), mu_c)

i.e. one signed-gradient step that moves ``x`` towards its closest class
Gaussian; the score is then ``M(x~)``.  As in :func:`amp_tf.method.scores.odin` the
gradient is taken in the model's input space as given (the paper's code also
divides it by the per-channel normalisation std).

Choices made here (documented deviations from the paper's full method):

* **One layer** (default the penultimate ``"features"`` layer).  The paper's
  feature ensemble over several layers, weighted by a logistic regression
  fitted on validation OOD samples, is *not* used: that needs outlier
  exposure, which the AMP comparison does not allow.  Another layer can be
  chosen with ``layer=``; rank > 2 outputs (feature maps) are averaged over
  their spatial axes, as in the paper.
* **Covariance regularisation**: ``Sigma^{-1}`` is the pseudo-inverse
  ``scipy.linalg.pinvh(Sigma + ridge * (tr(Sigma) / D) * I)``.  The default
  ``ridge=0`` is the plain pseudo-inverse of the paper's code (it used
  ``sklearn.covariance.EmpiricalCovariance``, whose precision is ``pinvh``):
  exactly singular directions -- e.g. dead ReLU units of the penultimate
  layer, or ``D`` > number of training samples -- are ignored instead of
  producing an infinite/unstable inverse (``pinvh`` drops eigenvalues below
  ``D * machine-eps * largest``).  ``ridge > 0`` (e.g. ``1e-6``) instead
  keeps those directions with a large but finite weight (Tikhonov).
* Statistics and distances are computed in float64 numpy; only the gradient
  step runs in TensorFlow (float32).
* ``fit_features`` / ``score_features`` run the same math on precomputed
  features (`amp_tf.detection.detectors` uses them for the anchored model's features).

Example::

    from amp_tf.method import scores
    import amp_tf.detection.baselines  # registers the baselines
    maha = scores.get("mahalanobis", epsilon=0.0).fit(model, x_train, y_train)
    s_id, s_ood = maha(x_test), maha(x_ood)      # numpy (N,), higher = ID
"""
from __future__ import annotations

import keras
import numpy as np
import scipy.linalg
import tensorflow as tf

from amp_tf.detection.baselines import _common
from amp_tf.method.scores import FittedScore, register

__all__ = ["Mahalanobis"]

_CHUNK_ELEMENTS = 1 << 22  # bound of the (chunk, classes, D) difference array


@register(
    "mahalanobis",
    needs_model=True,
    reference="Lee et al. 2018 (Mahalanobis): M(x) = max_c -(f(x)-mu_c)^T Sigma^-1 (f(x)-mu_c), "
    "tied covariance Sigma over ID training features; optional x~ = x - eps*sign(grad_x dist)",
)
class Mahalanobis(FittedScore):
    """Negative Mahalanobis distance to the closest class mean (higher = ID).

    Args:
        layer: name of the feature layer (default ``"features"``).
        epsilon: input-perturbation magnitude (default 0 = no perturbation;
            the paper tunes it in ``{0, 0.0005, 0.001, 0.0014, 0.002, 0.005, 0.01}``).
        ridge: relative ridge added to the covariance before the pseudo-inverse
            (default 0 = paper code; see module docstring).
        batch_size: inputs per forward pass.

    Fitted attributes: ``classes_`` (``(K,)`` labels), ``means_`` (``(K, D)``),
    ``covariance_`` (``(D, D)``, unregularised), ``precision_`` (``(D, D)``).

    Example::

        maha = Mahalanobis().fit(model, x_train, y_train)
        maha(x)                    # numpy (N,) = -min_c distance
        maha.distances(x)          # numpy (N, K) squared Mahalanobis distances
    """

    fit_on = "train"

    def __init__(self, layer="features", epsilon=0.0, ridge=0.0, batch_size=256):
        super().__init__(layer=layer, epsilon=epsilon, ridge=ridge, batch_size=batch_size)
        if ridge < 0:
            raise ValueError(f"ridge must be >= 0, got {ridge}")
        self.layer = layer
        self.epsilon = float(epsilon)
        self.ridge = float(ridge)
        self.batch_size = int(batch_size)

    # ------------------------------------------------------------------ fit
    def fit(self, model, x_train, y_train):
        """Fit class means and the tied covariance on ID training data.

        Args:
            model: a built ``keras.Model`` with a layer named ``self.layer``.
            x_train: ID training inputs ``(N, ...)`` (images or vectors).
            y_train: integer labels ``(N,)`` or one-hot ``(N, K)``.

        Returns:
            ``self``.
        """
        _common.check_model(model)
        x_train = _common.as_inputs(x_train, "x_train")
        labels = _common.as_labels(y_train, x_train.shape[0], "y_train")
        self._build(model)
        return self.fit_features(self.features(x_train), labels)

    def bank_rows(self, n):
        """Indices of the training rows the fit uses: all of them."""
        return np.arange(n)

    def fit_features(self, feats, y_train):
        """Fit the class means and the tied covariance from precomputed features ``(n, D)`` and
        their labels; returns ``self`` (``score_features`` then works; ``score`` needs ``fit``)."""
        feats = np.asarray(feats, dtype=np.float64)
        if feats.ndim != 2 or feats.shape[0] == 0:
            raise ValueError(f"features must be a non-empty (n, D) array, got {feats.shape}")
        labels = _common.as_labels(y_train, feats.shape[0], "y_train")
        classes, idx = np.unique(labels, return_inverse=True)
        means = np.stack([feats[idx == k].mean(axis=0) for k in range(len(classes))])
        centered = feats - means[idx]
        cov = centered.T @ centered / feats.shape[0]
        d = cov.shape[0]
        reg = cov
        if self.ridge > 0:
            scale = np.trace(cov) / d
            reg = cov + self.ridge * (scale if scale > 0 else 1.0) * np.eye(d)
        self.classes_ = classes
        self.means_ = means
        self.covariance_ = cov
        self.precision_ = scipy.linalg.pinvh(reg)
        self._step = None
        self.fitted = True
        return self

    def _build(self, model):
        self._feat = _common.pooled_features(model, self.layer)
        self._feat_fn = _common.compiled(self._feat)

    # ---------------------------------------------------------------- score
    def features(self, x):
        """Features ``(N, D)`` (float64) of inputs ``x``."""
        x = _common.as_inputs(x)
        return _common.run_batched(self._feat_fn, x, self.batch_size).astype(np.float64)

    def distances_from_features(self, feats):
        """Squared Mahalanobis distances ``(N, K)`` of features to every class mean."""
        self._check_fitted()
        feats = np.asarray(feats, dtype=np.float64)
        k, d = self.means_.shape
        chunk = max(1, _CHUNK_ELEMENTS // max(1, k * d))
        out = []
        for s in range(0, feats.shape[0], chunk):
            diff = feats[s:s + chunk, None, :] - self.means_[None]  # (n, K, D)
            out.append(np.einsum("nkd,nkd->nk", diff @ self.precision_, diff))
        return np.concatenate(out)

    def perturb(self, x, epsilon=None):
        """Inputs after the paper's pre-processing step (unchanged when ``epsilon == 0``)."""
        self._check_fitted()
        x = _common.as_inputs(x)
        eps = self.epsilon if epsilon is None else float(epsilon)
        if eps == 0.0:
            return x
        if self._step is None:
            means = tf.constant(self.means_, tf.float32)
            prec = tf.constant(self.precision_, tf.float32)
            feat = self._feat

            def step(xb, eps_t):
                with tf.GradientTape() as tape:
                    tape.watch(xb)
                    f = tf.cast(feat(xb), tf.float32)
                    diff = f[:, None, :] - means[None]  # (B, K, D)
                    dist = tf.einsum("bkd,de,bke->bk", diff, prec, diff)
                    loss = tf.reduce_sum(tf.reduce_min(dist, axis=1))  # samples independent
                grad = tape.gradient(loss, xb)
                return _common.perturb_pixels(xb, grad, eps_t)

            self._step = _common.compiled(step)
        step = self._step
        return _common.run_batched(lambda xb: step(xb, tf.constant(eps, tf.float32)), x,
                                   self.batch_size)

    def distances(self, x, epsilon=None):
        """Squared Mahalanobis distances ``(N, K)`` of (perturbed) inputs to the class means."""
        self._check_fitted()
        return self.distances_from_features(self.features(self.perturb(x, epsilon)))

    def score(self, x, epsilon=None):
        """``max_c -distance_c`` (numpy ``(N,)``, higher = ID); ``epsilon`` overrides the default."""
        self._check_fitted()
        return -self.distances(x, epsilon).min(axis=1)

    def score_features(self, feats):
        """:meth:`score` (without input pre-processing) from precomputed features ``(N, D)``."""
        return -self.distances_from_features(feats).min(axis=1)
