"""The per-score metric tables of a scored model (every score comes from `amp_tf.detection.detectors`).

`evaluate_model` fits the detectors of one model (`detectors.fit_all`: every AMP
variant of an anchored model from one pass over the anchors; the logit scores
and ODIN of a plain classifier from one logits pass) and scores the ID test set
and every OOD set. `ood_results` turns `{set: {score: values}}` into
`{"<model>/<score>": {ood_set: metrics}}`, the shape `amp_tf.run.report` writes.

Example:

>>> res, values, acc = evaluate_model(model, x_test, y_test, {"svhn": x_svhn}, "vanilla")  # doctest: +SKIP
>>> res["vanilla/msp"]["svhn"]["auroc"]                                                      # doctest: +SKIP
0.91
"""

from __future__ import annotations

import numpy as np

from amp_tf.detection import detectors, metrics
from amp_tf.method.predictor import AMP_SCORES

#: The scores of a plain (vanilla) classifier in the report: logit scores and ODIN, one logits pass.
DEFAULT_VANILLA = ("msp", "energy", "odin", "max_logit", "entropy")


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
                   positive="id", batch_size=256, scorer=None, id_name="ID"):
    """Scores one model (anchored if `anchors` is given) on the ID test set and OOD sets: the one
    scoring path of a report (`amp_tf.run.scoring.score_models` runs every model of a job through it).

    An anchored model gets every name of `AMP_SCORES` over `anchors`; a plain one
    `vanilla_names`; or `scorer`, when given, scores every set instead (`images -> {score: (N,)
    values, "predicted_class": ...}`, e.g. the shipped detector's candidates or the fitted baselines).
    Every image set (and the anchors) is raw pixels, the model normalises: arrays, or streams of
    `(images, labels)` batches (tf.data; the ID stream's labels are then its own). `id_name` names
    the ID set in the error for an empty stream.

    Returns:
        `(metrics_by_score, score_values, id_accuracy)` where `metrics_by_score`
        is `{f"{name}/{score}": {ood_set: metrics}}` and `score_values` holds the
        raw score arrays for plots.
    """
    if scorer is None:
        if anchors is not None:
            scorer = detectors.fit_all(AMP_SCORES, model, batch_size=batch_size, anchors=anchors).score
        else:
            scorer = detectors.fit_all(vanilla_names, model, batch_size=batch_size).score
    id_values, id_labels = score_set(scorer, id_images, id_labels, id_name)
    ood_values = {k: score_set(scorer, v, None, k)[0] for k, v in (ood_sets or {}).items()}
    acc = None
    if id_labels is not None:
        acc = float(np.mean(id_values["predicted_class"] == np.asarray(id_labels)))
    return (ood_results(id_values, ood_values, name, positive),
            score_arrays(id_values, ood_values, name), acc)


def score_set(scorer, images, labels, name):
    """`(scorer(images), labels)` of an array, or of a stream of (images, labels) batches, concatenated."""
    if isinstance(images, np.ndarray):
        return scorer(images), labels
    parts, labels = [], []
    for xb, yb in (images.as_numpy_iterator() if hasattr(images, "as_numpy_iterator") else images):
        parts.append({k: np.asarray(v) for k, v in scorer(xb).items()})
        labels.append(yb)
    if not parts:
        raise ValueError(f"{name}: no images.")
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}, np.concatenate(labels)
