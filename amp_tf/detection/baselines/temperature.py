"""Temperature scaling (Guo, Pleiss, Sun & Weinberger, ICML 2017).

"On calibration of modern neural networks".  A single temperature ``T > 0``
is fitted on an **ID validation split** by minimising the negative
log-likelihood of the scaled softmax::

    T* = argmin_T  (1/N) sum_i [ logsumexp(z_i / T) - z_{i, y_i} / T ]

(``scipy.optimize.minimize_scalar`` on ``log T``, bounded, so ``T > 0``);
the OOD score is then the maximum softmax probability of the calibrated
logits, ``MSP(z / T*) = max_c softmax(z / T*)_c`` (higher = ID).  ``T*`` is
exposed as ``.temperature``.  Temperature scaling does not change the
predicted class (accuracy is unchanged).

ODIN (Liang et al. 2018), which combines a large fixed temperature with input
pre-processing, is the registered score ``odin`` in :mod:`amp_tf.method.scores`
(:func:`amp_tf.method.scores.odin`, arguments ``temperature`` and ``epsilon``);
it is not duplicated here.

Example::

    from amp_tf.method import scores
    import amp_tf.detection.baselines  # registers the baselines
    ts = scores.get("temperature_scaling").fit(model, x_val, y_val)
    ts.temperature, ts(x_test)                 # T*, numpy (N,)
    # model-free, on logits:
    ts = scores.get("temperature_scaling").fit(logits=z_val, labels=y_val)
    ts(logits=z_test)
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import logsumexp

from amp_tf.method import scores
from amp_tf.detection.baselines import _common
from amp_tf.method.scores import FittedScore, register

__all__ = ["TemperatureScaling", "nll"]


def nll(logits, labels, temperature=1.0):
    """Mean negative log-likelihood of ``softmax(logits / T)`` (float64)."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    labels = np.asarray(labels)
    return float(np.mean(logsumexp(z, axis=-1) - z[np.arange(z.shape[0]), labels]))


@register(
    "temperature_scaling",
    reference="Guo et al. 2017 (temperature scaling): T* = argmin_T NLL(softmax(z/T), y) on ID "
    "validation data; score = max_c softmax(z/T*)_c",
)
class TemperatureScaling(FittedScore):
    """MSP of temperature-calibrated logits (higher = ID).

    Args:
        bounds: search interval of ``T`` (the optimisation runs on ``log T``).
        batch_size: inputs per forward pass when a model is used.

    ``fit`` and ``score`` accept either a model and its inputs or logits
    directly (``fit(logits=..., labels=...)``, ``score(logits=...)``), so the
    score works for any classifier.  After ``fit(model, x, y)`` a positional
    argument of ``score`` is an *input* batch; after ``fit(logits=...)`` it
    is a logits batch.

    Example::

        ts = TemperatureScaling().fit(logits=z_val, labels=y_val)
        ts.temperature           # float T* > 0
        ts(logits=z_test)        # == amp_tf.method.scores.msp(z_test, temperature=T*)
    """

    fit_on = "val"

    def __init__(self, bounds=(1e-2, 1e2), batch_size=256):
        super().__init__(bounds=tuple(bounds), batch_size=batch_size)
        lo, hi = (float(b) for b in bounds)
        if not 0 < lo < hi:
            raise ValueError(f"bounds must satisfy 0 < low < high, got {bounds}")
        self.bounds = (lo, hi)
        self.batch_size = int(batch_size)
        self.temperature = None
        self.model = None

    def _model_logits(self, model, x):
        return _common.model_logits(model, x, self.batch_size)

    def fit(self, model=None, x_val=None, y_val=None, *, logits=None, labels=None):
        """Fit ``T`` on ID validation data: ``fit(model, x_val, y_val)`` or ``fit(logits=, labels=)``."""
        if logits is None:
            if model is None or x_val is None:
                raise ValueError("pass either (model, x_val, y_val) or logits=..., labels=...")
            logits = self._model_logits(model, x_val)
            self.model = model
        else:
            if model is not None or x_val is not None:
                raise ValueError("pass either (model, x_val, y_val) or logits=..., labels=..., not both")
            self.model = None
        labels = y_val if labels is None else labels
        if labels is None:
            raise ValueError("temperature scaling needs the labels of the validation data")
        z = np.asarray(logits, dtype=np.float64)
        if z.ndim != 2 or z.shape[0] == 0:
            raise ValueError(f"logits must have shape (N, num_classes) with N > 0, got {z.shape}")
        y = _common.as_labels(labels, z.shape[0], "labels")
        lo, hi = np.log(self.bounds)
        res = minimize_scalar(lambda t: nll(z, y, np.exp(t)), bounds=(lo, hi), method="bounded",
                              options={"xatol": 1e-6})
        self.temperature = float(np.exp(res.x))
        self.nll_before_ = nll(z, y, 1.0)
        self.nll_after_ = float(res.fun)
        self.fitted = True
        return self

    def calibrated_logits(self, x=None, *, logits=None):
        """``z / T*`` (numpy float64) of inputs ``x`` (model fit) or of ``logits``."""
        self._check_fitted()
        return self._logits(x, logits) / self.temperature

    def _logits(self, x, logits):
        if logits is None:
            if x is None:
                raise ValueError("pass inputs x (after fit(model, ...)) or logits=...")
            if self.model is None:
                logits = x  # fitted on logits: a positional batch is logits
            else:
                logits = self._model_logits(self.model, x)
        elif x is not None:
            raise ValueError("pass either x or logits=..., not both")
        return np.asarray(logits, dtype=np.float64)

    def score(self, x=None, *, logits=None):
        """``max_c softmax(z / T*)_c``, numpy ``(N,)`` float64, higher = ID."""
        self._check_fitted()
        # divide here in float64: scores.msp(z, temperature=T) casts T through float32
        z = self._logits(x, logits) / self.temperature
        return scores.to_numpy(scores.msp(z))
