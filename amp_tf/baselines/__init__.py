"""Comparison baselines of the AMP paper, registered in :mod:`amp_tf.scores`.

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

ODIN (Liang et al. 2018) is the score ``odin`` of :mod:`amp_tf.scores`
(:func:`amp_tf.scores.odin`, arguments ``temperature`` and ``epsilon``).

Fitted scores are :class:`amp_tf.scores.FittedScore` subclasses with
``fit(model, x, y)`` / ``score(x)``; their class attribute ``fit_on`` says
which ID split they are fitted on (``"train"`` or ``"val"``).  The MC-dropout
and ensemble scores are functions ``f(model_or_models, images, **options)``;
use :func:`~amp_tf.baselines.mc_dropout.mc_dropout_scores` /
:func:`~amp_tf.baselines.ensemble.ensemble_scores` to get all three from the
same passes.

:func:`fit_and_score` runs any registered score uniformly, so a benchmark
can loop over names::

    import amp_tf.baselines as bl
    for name in ["mahalanobis", "gram", "temperature_scaling", "mc_dropout_msp"]:
        out = bl.fit_and_score(name, model, x_train, y_train, x_val, y_val,
                               sets={"id": x_test, "svhn": x_svhn})
    bl.fit_and_score("ensemble_entropy", members, sets={"id": x_test, "svhn": x_svhn})
"""
from __future__ import annotations

import numpy as np

from amp_tf import scores
from amp_tf.baselines import _common, ensemble, gram, mahalanobis, mc_dropout, temperature
from amp_tf.baselines import knn, react
from amp_tf.baselines.ensemble import ensemble_probs, ensemble_scores
from amp_tf.baselines.gram import Gram, default_gram_layers, deviation
from amp_tf.baselines.mahalanobis import Mahalanobis
from amp_tf.baselines.mc_dropout import MCDropout, mc_dropout_model, mc_dropout_scores
from amp_tf.baselines.temperature import TemperatureScaling
from amp_tf.baselines.knn import KNN
from amp_tf.baselines.react import ReAct

__all__ = [
    "NAMES",
    "fit_and_score",
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
]

#: The registry names added by this package.
NAMES = (("mahalanobis", "gram", "temperature_scaling") + mc_dropout.NAMES + ensemble.NAMES
         + ("knn", "react"))


def fit_and_score(name, model_or_models, x_train=None, y_train=None, x_val=None, y_val=None,
                  sets=None, **kwargs):
    """Fit score ``name`` once (if it needs fitting) and score every set.

    Args:
        name: any registered score name (the baselines above, but also e.g.
            ``"msp"`` or ``"odin"``).
        model_or_models: the trained classifier (a ``keras.Model`` returning
            logits), or the list of members for the ``ensemble_*`` scores.
        x_train, y_train: ID training data (scores with ``fit_on == "train"``).
        x_val, y_val: ID validation data (``fit_on == "val"``, i.e.
            ``temperature_scaling`` and ``react``; falls back to the training data with a
            warning when not given).
        sets: ``{set_name: inputs}`` to score, e.g. the ID test set and the
            OOD sets.
        **kwargs: constructor options of a fitted score (e.g. ``epsilon=`` of
            ``mahalanobis``, ``max_order=`` of ``gram``), otherwise call
            options (e.g. ``num_passes=`` of ``mc_dropout_*``,
            ``temperature=`` of ``odin``).

    Returns:
        ``{set_name: numpy (N,)}``, higher = in-distribution.

    Example::

        fit_and_score("mahalanobis", model, x_train, y_train,
                      sets={"id": x_test, "ood": x_ood})["ood"].shape   # (N_ood,)
    """
    if not sets:
        raise ValueError("sets must be a non-empty dict {name: inputs}")
    from amp_tf import detectors

    is_ensemble = name in ensemble.NAMES
    if not is_ensemble and isinstance(model_or_models, (list, tuple)):
        raise TypeError(f"score {name!r} takes a single model; only ensemble_* take a list")
    id_train = None if x_train is None else (x_train, y_train)
    id_val = None if x_val is None or y_val is None else (x_val, y_val)
    return detectors.fit_and_score(name, model_or_models, sets, id_train=id_train, id_val=id_val,
                                   anchored=False, **kwargs)
