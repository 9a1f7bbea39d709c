"""Comparison baselines of the AMP paper, registered in :mod:`amp_tf.method.scores`.

Importing this package registers (all higher = in-distribution):

===========================  =============================================  ==================
name                         method                                         kind
===========================  =============================================  ==================
``mahalanobis``              Lee et al. 2018, penultimate features          fitted (train), model
``gram``                     Sastry & Oore 2020, Gram-matrix deviations     fitted (train), model
``temperature_scaling``      Guo et al. 2017, MSP of ``z / T*``             fitted (val)
``mc_dropout_msp``           Gal & Ghahramani 2016, S dropout passes        model
``mc_dropout_entropy``       idem, ``-H(mean prediction)``                  model
``mc_dropout_variance``      idem, ``-mean_k Var_s p_k``                    model
``ensemble_msp``             Lakshminarayanan et al. 2017, M members        list of models
``ensemble_entropy``         idem, ``-H(mean prediction)``                  list of models
``ensemble_variance``        idem, ``-mean_k Var_m p_k``                    list of models
``knn``                      Sun et al. 2022, k-th NN of normalised feats   fitted (train), model
``react``                    Sun et al. 2021, energy of clipped features    fitted (val), model
===========================  =============================================  ==================

ODIN (Liang et al. 2018) is the score ``odin`` of :mod:`amp_tf.method.scores`
(:func:`amp_tf.method.scores.odin`, arguments ``temperature`` and ``epsilon``).

Fitted scores are :class:`amp_tf.method.scores.FittedScore` subclasses with
``fit(model, x, y)`` / ``score(x)``; their class attribute ``fit_on`` says
which ID split they are fitted on (``"train"`` or ``"val"``).  The MC-dropout
and ensemble scores are functions ``f(model_or_models, images, **options)``;
use :func:`~amp_tf.detection.baselines.mc_dropout.mc_dropout_scores` /
:func:`~amp_tf.detection.baselines.ensemble.ensemble_scores` to get all three from the
same passes.

To fit and score any of them by name, like every other score, use the
detector protocol (:mod:`amp_tf.detection.detectors`, the layer above this package)::

    from amp_tf.detection import detectors
    for name in ["mahalanobis", "gram", "temperature_scaling", "mc_dropout_msp"]:
        det = detectors.get(name).fit(model, id_train=(x_train, y_train), id_val=(x_val, y_val))
        s_test, s_svhn = det.score(x_test), det.score(x_svhn)
    detectors.get("ensemble_entropy").fit(members).score(x_test)
"""
from __future__ import annotations

from amp_tf.detection.baselines import _common, ensemble, gram, mahalanobis, mc_dropout, temperature
from amp_tf.detection.baselines import knn, react
from amp_tf.detection.baselines.ensemble import ensemble_probs, ensemble_scores
from amp_tf.detection.baselines.gram import Gram, default_gram_layers, deviation
from amp_tf.detection.baselines.mahalanobis import Mahalanobis
from amp_tf.detection.baselines.mc_dropout import MCDropout, mc_dropout_model, mc_dropout_scores
from amp_tf.detection.baselines.temperature import TemperatureScaling
from amp_tf.detection.baselines.knn import KNN
from amp_tf.detection.baselines.react import ReAct
from amp_tf.detection.baselines._common import (  # the feature extraction (also of the anchored detectors)
    float_logits, get_layer, pooled_features)

__all__ = [
    "NAMES",
    "Mahalanobis",
    "Gram",
    "TemperatureScaling",
    "MCDropout",
    "mc_dropout_model",
    "mc_dropout_scores",
    "ensemble_probs",
    "ensemble_scores",
    "default_gram_layers",
    "deviation",
    "KNN",
    "ReAct",
    "pooled_features",
    "float_logits",
    "get_layer",
]

#: The registry names added by this package (`amp_tf.method.scores.BASELINE_NAMES` holds the same
#: names, so the registry can name the missing import; tests check they agree).
NAMES = (("mahalanobis", "gram", "temperature_scaling") + mc_dropout.NAMES + ensemble.NAMES
         + ("knn", "react"))

