"""Scoring trained models on ID and OOD sets, and the per-score metric tables.

`anchored_scores` runs the backbone once per (anchor, image) pair and derives
every AMP variant (`tau_reduction` x `calibration`) from the same logits;
`vanilla_scores` computes the logit scores of `amp_tf.scores` (and ODIN) for a
plain classifier. `ood_results` turns `{set: {score: values}}` into
`{"<model>/<score>": {ood_set: metrics}}`, the shape `amp_tf.report` writes.

Example:

>>> s = vanilla_scores(model, x_test, names=("msp", "energy"))   # doctest: +SKIP
>>> s["msp"].shape                                               # doctest: +SKIP
(10000,)
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from amp_tf import metrics, scores
from amp_tf.inference import batched
from amp_tf.pixels import check_pixels
from amp_tf.predictor import CALIBRATIONS, TAU_REDUCTIONS, AnchoredPredictor, amp_outputs

DEFAULT_VANILLA = ("msp", "energy", "odin", "max_logit", "entropy")


def amp_variant_name(reduction, calibration):
    """`amp` for the default (mean, exp), else e.g. `amp[sum,divide]`."""
    if (reduction, calibration) == ("mean", "exp"):
        return "amp"
    return f"amp[{reduction},{calibration}]"


def anchored_scorer(model, anchors, batch_size=256, max_batch="auto", **predictor_kwargs):
    """A function `images -> {name: (N,) array}` with every AMP variant (traced once).

    `model` is the trained `AnchoredModel`; `anchors` and the images are raw
    pixels (the model's statistics normalise them). `predictor_kwargs` go to
    `AnchoredPredictor` (e.g. `anchor_mode="per_image", num_anchors=5`).

    Names: `amp` (mean/exp, the default), `amp[sum,exp]`, `amp[mean,divide]`,
    `amp[sum,divide]`, `msp` and `energy` on the default calibrated logits,
    `neg_tau` (-tau alone, higher = ID), and `predicted_class`. The backbone runs
    once per (anchor, image) pair; the variants share those logits.
    """
    pred = AnchoredPredictor.from_model(model, anchors, max_batch=max_batch, **predictor_kwargs)
    spec = tf.TensorSpec((None,) + tuple(pred.anchor_shape[1:]), tf.float32)

    @tf.function(input_signature=[spec])
    def run(x):
        k = pred.per_anchor_logits(pred.normalizer.pixels(x))
        out = {}
        for r in TAU_REDUCTIONS:
            for c in CALIBRATIONS:
                o = amp_outputs(k, r, c)
                out[amp_variant_name(r, c)] = o["amp_score"]
                if (r, c) == ("mean", "exp"):
                    out.update(msp=o["msp"], energy=o["energy"], neg_tau=-o["tau"],
                               predicted_class=o["predicted_class"])
        return out

    return lambda images: batched(run, _check(images), batch_size)


def anchored_scores(model, anchors, images, batch_size=256, max_batch="auto"):
    """`anchored_scorer(...)(images)` in one call."""
    return anchored_scorer(model, anchors, batch_size, max_batch)(images)


def vanilla_scorer(model, names=DEFAULT_VANILLA, batch_size=256, odin_temperature=1000.0,
                   odin_epsilon=0.0014):
    """A function `images -> {name: (N,) array}` of logit scores (and ODIN) plus `predicted_class`."""
    shape = tuple(model.input_shape[1:])
    logits_fn = tf.function(lambda x: model(x, training=False),
                            input_signature=[tf.TensorSpec((None,) + shape, tf.float32)])

    odin_cache = {}  # ODIN's compiled step, traced once for every set

    def run(images):
        images = _check(images)
        if "odin" in names:  # ODIN's first forward pass is the logits: computed once
            odin, logits = scores._odin_and_logits(model, images.astype("float32"), odin_temperature,
                                                   odin_epsilon, batch_size, odin_cache)
        else:
            logits = batched(logits_fn, images, batch_size)
        out = {"predicted_class": logits.argmax(-1)}
        for name in names:
            if name == "odin":
                out[name] = np.asarray(odin)
            else:
                out[name] = scores.to_numpy(scores.get(name)(logits))
        return out

    return run


def vanilla_scores(model, images, names=DEFAULT_VANILLA, batch_size=256, **kwargs):
    """`vanilla_scorer(...)(images)` in one call."""
    return vanilla_scorer(model, names, batch_size, **kwargs)(images)


def _check(images):
    images = np.asarray(images)
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(f"images: expected a non-empty (N, H, W, C) array, got shape {images.shape}.")
    return check_pixels(images)


def ood_results(id_values, ood_values, model_name, positive="id"):
    """Metrics per score and OOD set.

    Args:
        id_values: `{score: (N,) array}` on the ID test set.
        ood_values: `{ood_set: {score: array}}`.
        model_name: prefix of the result keys (`anchored`, `vanilla`).

    Returns:
        `{f"{model_name}/{score}": {ood_set: ood_metrics(...)}}`.
    """
    out = {}
    for score in id_values:
        if score == "predicted_class":
            continue
        out[f"{model_name}/{score}"] = {
            name: metrics.ood_metrics(id_values[score], vals[score], positive=positive)
            for name, vals in ood_values.items()
        }
    return out


def score_arrays(id_values, ood_values, model_name):
    """Raw scores for plots: `{f"{model}/{score}": {"id": array, ood_set: array}}`."""
    return {
        f"{model_name}/{s}": {"id": id_values[s], **{n: v[s] for n, v in ood_values.items()}}
        for s in id_values if s != "predicted_class"
    }


def evaluate_model(model, id_images, id_labels, ood_sets, name, anchors=None, vanilla_names=DEFAULT_VANILLA,
                   positive="id", batch_size=256):
    """Scores one model (anchored if `anchors` is given) on the ID test set and OOD sets.

    Every image set (and the anchors) is raw pixels; the model normalises.

    Returns:
        `(metrics_by_score, score_values, id_accuracy)` where `metrics_by_score`
        is `{f"{name}/{score}": {ood_set: metrics}}` and `score_values` holds the
        raw score arrays for plots.
    """
    if anchors is not None:
        run = anchored_scorer(model, anchors, batch_size)
    else:
        run = vanilla_scorer(model, vanilla_names, batch_size)
    id_values = run(id_images)
    ood_values = {k: run(v) for k, v in ood_sets.items()}
    acc = None
    if id_labels is not None:
        acc = float(np.mean(id_values["predicted_class"] == np.asarray(id_labels)))
    return (ood_results(id_values, ood_values, name, positive),
            score_arrays(id_values, ood_values, name), acc)
