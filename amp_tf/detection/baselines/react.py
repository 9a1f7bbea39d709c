"""ReAct: rectified activations (Sun, Guo & Li, NeurIPS 2021).

"ReAct: Out-of-distribution detection with rectified activations".  The
penultimate activations ``h(x)`` (layer ``"features"``) are clipped at a
threshold ``c``, the logits are recomputed with the final ``Dense`` layer's
kernel ``W`` and bias ``b``, and the score is the energy of those logits::

    c       = p-th percentile of all entries of h over ID data     (default p = 90)
    h~(x)   = min(h(x), c)                                          (element-wise)
    z~(x)   = h~(x) W + b
    S(x)    = logsumexp_k z~_k(x)        (negative free energy, T = 1; higher = ID)

With ``p = 100`` (``c`` = the largest ID activation) and no larger test
activation, ``S`` is the plain ``energy`` score.

Choices: ``c`` is estimated on the **ID validation split** (``fit_on = "val"``),
as in OpenOOD v1.5 (``percentile: 90``); the paper estimates it on ID data and
reports ``p = 90`` as a good default.  The percentile is
``np.percentile(h.ravel(), p)`` (linear interpolation) over all units and
samples.  Labels are not used.  Everything after the feature extraction runs
in float64 numpy.

Model convention (:mod:`amp_tf.models`): a layer ``"features"`` with rank-2
output ``(N, D)`` followed -- possibly through inference-time identities
such as ``Dropout`` -- by the ``Dense`` layer producing the model's single
(logits) output.  Other models raise ``ValueError``.

Example::

    react = scores.get("react", percentile=90).fit(model, x_val)
    react.threshold_, react(x_test)        # c, numpy (N,)
"""
from __future__ import annotations

import keras
import numpy as np
from scipy.special import logsumexp

from amp_tf.detection.baselines import _common
from amp_tf.method.scores import FittedScore, register

__all__ = ["ReAct", "final_dense"]

# layers that are the identity at inference (allowed between "features" and the Dense)
_IDENTITY_AT_INFERENCE = (keras.layers.Dropout, keras.layers.GaussianDropout,
                          keras.layers.GaussianNoise, keras.layers.AlphaDropout,
                          keras.layers.Identity)

_CONVENTION = ("ReAct expects the amp_tf.models convention: a layer 'features' with (N, D) output "
               "followed (only Dropout-like layers in between) by the Dense logits layer "
               "producing the model's single output")


def _producer(tensor):
    history = getattr(tensor, "_keras_history", None)
    return None if history is None else history.operation


def final_dense(model, layer="features"):
    """The ``Dense`` layer mapping the output of ``layer`` to the model's logits.

    Raises ``ValueError`` (naming the convention) when the model does not fit.
    """
    feats = _common.get_layer(model, layer)
    if len(model.outputs) != 1:
        raise ValueError(f"model {model.name!r} has {len(model.outputs)} outputs; {_CONVENTION}")
    dense = _producer(model.outputs[0])
    if not isinstance(dense, keras.layers.Dense):
        raise ValueError(f"the output of model {model.name!r} is not produced by a Dense layer "
                         f"(got {type(dense).__name__}); {_CONVENTION}")
    if dense.activation not in (keras.activations.linear, keras.activations.softmax):
        raise ValueError(f"Dense layer {dense.name!r} has activation {dense.activation.__name__}; "
                         "ReAct needs its pre-activation logits (linear or softmax)")
    op = dense
    for _ in range(len(model.layers)):
        try:
            op = _producer(op.input)
        except (AttributeError, ValueError):  # e.g. a layer called several times
            op = None
        if op is feats:
            if len(feats.output.shape) != 2:
                raise ValueError(f"layer {layer!r} output has shape {feats.output.shape}; "
                                 f"{_CONVENTION}")
            return dense
        if not isinstance(op, _IDENTITY_AT_INFERENCE):
            break
    raise ValueError(f"Dense layer {dense.name!r} of model {model.name!r} is not applied to "
                     f"the output of layer {layer!r}; {_CONVENTION}")


@register(
    "react",
    needs_model=True,
    reference="Sun et al. 2021 (ReAct): S(x) = logsumexp(min(h(x), c) W + b), c = p-th "
    "percentile (p=90) of ID penultimate activations h, W/b the final Dense layer",
)
class ReAct(FittedScore):
    """Energy of the logits recomputed from clipped penultimate activations.

    Args:
        percentile: ``p`` in ``(0, 100]`` (default 90).
        layer: feature layer (default ``"features"``).
        batch_size: inputs per forward pass.

    Fitted attributes: ``threshold_`` (``c``), ``kernel_`` (``(D, K)``),
    ``bias_`` (``(K,)``).  ``fit(model, x_val, y_val=None)`` ignores labels.
    """

    fit_on = "val"

    def __init__(self, percentile=90.0, layer="features", batch_size=256):
        super().__init__(percentile=percentile, layer=layer, batch_size=batch_size)
        if not 0 < percentile <= 100:
            raise ValueError(f"percentile must be in (0, 100], got {percentile!r}")
        self.percentile, self.layer = float(percentile), layer
        self.batch_size = int(batch_size)

    def fit(self, model, x_val, y_val=None):
        """Estimate ``c`` on ID data ``x_val`` and read ``W``, ``b``; returns ``self``."""
        _common.check_model(model)
        x_val = _common.as_inputs(x_val, "x_val")
        dense = final_dense(model, self.layer)
        self.kernel_ = np.asarray(keras.ops.convert_to_numpy(dense.kernel), np.float64)
        self.bias_ = (np.asarray(keras.ops.convert_to_numpy(dense.bias), np.float64)
                      if dense.use_bias else np.zeros(self.kernel_.shape[1]))
        extractor = keras.Model(model.inputs if len(model.inputs) > 1 else model.inputs[0],
                                _common.get_layer(model, self.layer).output,
                                name=f"{model.name}_{self.layer}_react")
        self._feat_fn = _common.compiled(
            lambda x: _common.float_logits(extractor(x, training=False)))
        self.threshold_ = float(np.percentile(self.features(x_val).ravel(), self.percentile))
        self.fitted = True
        return self

    def features(self, x):
        """Unclipped penultimate activations ``(N, D)`` (float64)."""
        x = _common.as_inputs(x)
        return _common.run_batched(self._feat_fn, x, self.batch_size).astype(np.float64)

    def logits_from_features(self, feats):
        """Logits ``(N, K)`` from activations clipped at ``threshold_``."""
        self._check_fitted()
        h = np.minimum(np.asarray(feats, dtype=np.float64), self.threshold_)
        return h @ self.kernel_ + self.bias_

    def score_features(self, feats):
        """``logsumexp`` of :meth:`logits_from_features` (numpy ``(N,)``, higher = ID)."""
        return logsumexp(self.logits_from_features(feats), axis=-1)

    def score(self, x):
        """ReAct energy score of inputs ``x`` (numpy ``(N,)``, higher = ID)."""
        self._check_fitted()
        return self.score_features(self.features(x))
