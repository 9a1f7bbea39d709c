"""Deep ensembles (Lakshminarayanan, Pritzel & Blundell, NeurIPS 2017).

"Simple and scalable predictive uncertainty estimation using deep
ensembles".  ``M`` independently trained classifiers give softmax predictions
``p^(1..M)``; with the averaged prediction ``p_bar = (1/M) sum_m p^(m)``::

    ensemble_msp      = max_k p_bar_k
    ensemble_entropy  = sum_k p_bar_k log p_bar_k              (= -H(p_bar))
    ensemble_variance = -(1/K) sum_k Var_m(p^(m)_k)            (population variance)

all higher = in-distribution.  (The paper's adversarial-training component
is not part of this baseline.)

Training the members is the caller's job: train ``M`` vanilla models that
differ only in their seed, e.g.::

    from amp_tf.run.training import TrainConfig, train
    members = [train(TrainConfig(arch="resnet18", anchored=False, seed=s), x, y,
                     num_classes=10)[0] for s in range(5)]

Example::

    from amp_tf.detection.baselines.ensemble import ensemble_scores
    s = ensemble_scores(members, x_test)     # {"msp", "entropy", "variance"} -> (N,)
    # or one registered score:
    from amp_tf import scores; import amp_tf.detection.baselines
    scores.get("ensemble_msp")(members, x_test)
"""
from __future__ import annotations

import numpy as np

from amp_tf.detection.baselines import _common
from amp_tf.method.scores import register

__all__ = ["ensemble_probs", "ensemble_scores", "ensemble_msp", "ensemble_entropy",
           "ensemble_variance"]

NAMES = ("ensemble_msp", "ensemble_entropy", "ensemble_variance")


def _members(models):
    if not isinstance(models, (list, tuple)) or not models:
        raise TypeError(
            "deep-ensemble scores need a non-empty list of trained models (the members), "
            f"got {type(models).__name__}"
        )
    for i, m in enumerate(models):
        _common.check_model(m, f"models[{i}]")
    return list(models)


def ensemble_probs(models, images, batch_size=256, from_logits=True):
    """Softmax predictions of every member, numpy ``(M, N, K)``.

    Args:
        models: list of ``M`` trained ``keras.Model`` (same number of outputs).
        images: inputs ``(N, ...)``.
        batch_size: inputs per forward pass.
        from_logits: the models output logits (default) rather than probabilities.
    """
    models = _members(models)
    x = _common.as_inputs(images, "images")
    out = [_common.softmax(_common.model_logits(m, x, batch_size), from_logits) for m in models]
    shapes = {o.shape for o in out}
    if len(shapes) != 1:
        raise ValueError(f"ensemble members disagree on the output shape: {sorted(shapes)}")
    return np.stack(out)


def ensemble_scores(models, images, batch_size=256, from_logits=True):
    """All three ensemble scores from one pass of each member (dict of numpy ``(N,)``)."""
    return _common.predictive_scores(ensemble_probs(models, images, batch_size, from_logits))


@register("ensemble_msp", needs_model=True,
          reference="Lakshminarayanan et al. 2017 (deep ensembles): max_k mean_m softmax(f_m(x))_k")
def ensemble_msp(models, images, batch_size=256, from_logits=True):
    """MSP of the averaged member prediction, numpy ``(N,)``; ``models`` is a list."""
    return ensemble_scores(models, images, batch_size, from_logits)["msp"]


@register("ensemble_entropy", needs_model=True,
          reference="Lakshminarayanan et al. 2017 (deep ensembles): -H(mean_m softmax(f_m(x)))")
def ensemble_entropy(models, images, batch_size=256, from_logits=True):
    """Negative entropy of the averaged member prediction, numpy ``(N,)``."""
    return ensemble_scores(models, images, batch_size, from_logits)["entropy"]


@register("ensemble_variance", needs_model=True,
          reference="Lakshminarayanan et al. 2017 (deep ensembles): "
          "-(1/K) sum_k Var_m softmax(f_m(x))_k")
def ensemble_variance(models, images, batch_size=256, from_logits=True):
    """Negative mean (over classes) variance of the softmax across members, numpy ``(N,)``."""
    return ensemble_scores(models, images, batch_size, from_logits)["variance"]
