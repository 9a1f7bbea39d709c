"""A job's scoring: select the shipped detector on validation data, then score every model on the test sets.

* `select_shipped`: for the first anchored model of a job, `amp_tf.detection.detectors.select_detector`
  on the ID training and validation images (and validation OOD sets made from the validation
  images): the detector the run exports, saves (`detector.json`) and reports first.
* `score_models`: every model on the ID test set and the OOD sets. An anchored model gets
  every AMP score, the anchored `knn` / `mahalanobis` / `gram` and `amp+knn` / `amp+mahalanobis` /
  `amp+gram` / `amp+mahalanobis+gram` (each with its validation-best weights) from one pass over the
  anchors; a plain model the
  logit scores (`DEFAULT_VANILLA`) and the fitted baselines (`FITTED_VANILLA`: ReAct, KNN,
  Mahalanobis, Gram, fitted on the same ID images as the anchored ones); each model through the
  one scoring path, `amp_tf.detection.evaluation.evaluate_model`, with its scorer.

Streamed ID data (ImageNet-sized sets) has no training arrays: no selection (the export
ships AMP alone, and the log says so) and no fitted vanilla baselines.
"""

from __future__ import annotations

import time

import numpy as np

from amp_tf import recipe

#: The fitted baselines of a plain classifier in a job's report (beside `DEFAULT_VANILLA`).
FITTED_VANILLA = ("react", "knn", "mahalanobis", "gram")


def job_anchors(trained, data, num_anchors):
    """The K anchors of a job: drawn from `data.anchor_images()` with the first anchored model's seed."""
    from amp_tf.method.anchors import select_anchors

    anchored = [n for n, (_, c, _) in trained.items() if c.anchored]
    if not anchored:
        return None
    return select_anchors(data.anchor_images(), num_anchors, seed=trained[anchored[0]][1].seed)


def _fit_arrays(data, limit=recipe.SELECT_FIT_LIMIT):
    """`((x_train, y_train), (x_val, y_val))` of in-memory ID data (the first `limit` training images),
    or None for streamed data."""
    x, y = getattr(data, "x_train", None), getattr(data, "y_train", None)
    if not isinstance(x, np.ndarray) or y is None:
        return None
    return (x[:limit], np.asarray(y)[:limit]), (data.x_val, data.y_val)


def select_shipped(trained, data, anchors, calibration="exp", tpr=recipe.SERVING_TPR, log=print):
    """`{model name: ShippedDetector}` for the first anchored model (empty when there is none, or the
    data is streamed: then the export ships AMP alone)."""
    from amp_tf.detection.detectors import select_detector

    anchored = [n for n, (_, c, _) in trained.items() if c.anchored]
    if not anchored:
        return {}
    fit = _fit_arrays(data, None)
    if fit is None:
        log("  streamed ID data: no detector selection; the export ships AMP alone")
        return {}
    name = anchored[0]
    model, cfg, _ = trained[name]
    if not has_features(model):
        log(f"  the {name} model has no layer 'features' (a model of your own): the feature-space candidates "
            "cannot be fitted; the export ships AMP alone")
        return {}
    det = select_detector(model, fit[0], fit[1], anchors=anchors, seed=cfg.seed, tpr=tpr, calibration=calibration,
                          log=log)
    return {name: det}


def score_models(trained, data, ood, num_anchors=recipe.NUM_ANCHORS, positive="id", log=print, shipped=None,
                 anchors=None):
    """Scores trained models on the ID test set and `ood`: `(metrics by score, raw values, info, anchors)`.

    Anchored models use K anchors from `data.anchor_images()` (seeded with the first anchored
    model's seed; or `anchors`); every AMP variant comes from the same logits. `shipped`:
    `{model name: ShippedDetector}` of `select_shipped`: that model's report rows add the anchored
    feature scores and combinations, fitted by the selection. Image sets are arrays, or
    (`StreamedIDData`, `load_ood_streams`) tf.data streams of (images, labels) batches.
    """
    from amp_tf.detection.evaluation import evaluate_model

    if anchors is None:
        anchors = job_anchors(trained, data, num_anchors)
    id_images, id_labels = data.test_set()
    scores, values, info = {}, {}, {}
    for name, (model, cfg, secs) in trained.items():
        log(f"scoring the {name} model on {data.name} + {len(ood)} OOD set(s) ({_count(id_images, ood)}) ...")
        t = time.time()
        run = _scorer(model, anchors if cfg.anchored else None, (shipped or {}).get(name), _fit_arrays(data))
        res, vals, acc = evaluate_model(model, id_images, id_labels, ood, name, positive=positive, scorer=run,
                                        id_name=data.name)
        log(f"  {name}: {len(res)} scores in {time.time() - t:.0f} s")
        scores.update(res)
        values.update(vals)
        info[name] = {"id_accuracy": acc, "params": int(model.count_params()), "train_time_s": round(secs, 1)}
    return scores, values, info, anchors


def _scorer(model, anchors=None, shipped=None, fit=None, batch_size=256):
    """`images -> {score: (N,) values, "predicted_class": ...}` of one model: the selection's candidates
    (an anchored model with a `ShippedDetector`), every AMP score over `anchors` from one pass, or the
    vanilla scores (with the fitted baselines when `fit` = `(id_train, id_val)` is given)."""
    from amp_tf.detection import detectors
    from amp_tf.detection.detectors.selection import candidate_scorer
    from amp_tf.detection.evaluation import DEFAULT_VANILLA
    from amp_tf.method.predictor import AMP_SCORES

    if shipped is not None:
        return candidate_scorer(shipped)
    if anchors is not None:
        return detectors.fit_all(AMP_SCORES, model, batch_size=batch_size, anchors=anchors).score
    if fit is None or not has_features(model):  # a model of your own: the logit scores only
        return detectors.fit_all(DEFAULT_VANILLA, model, batch_size=batch_size).score
    return detectors.fit_all((*DEFAULT_VANILLA, *FITTED_VANILLA), model, id_train=fit[0], id_val=fit[1],
                             batch_size=batch_size).score


def has_features(model):
    """Whether the (anchored model's) network has the layer 'features' that the feature-space scores read
    (every `amp_tf.models` backbone; a user's own model usually not)."""
    net = getattr(model, "backbone", model)
    return "features" in {layer.name for layer in net.layers}


def _count(id_images, ood):
    sets = [id_images, *(ood or {}).values()]
    if all(isinstance(v, np.ndarray) for v in sets):
        return f"{sum(len(v) for v in sets)} images"
    return "streamed"


def shipped_summary(det, model_name):
    """What `report.json` says of the shipped detector (`results["shipped"]`): chosen on validation only."""
    best = det.candidates[0] if det.candidates else {}
    return {"model": model_name, "name": det.name, "label": det.label, "options": det.options,
            "key": f"{model_name}/{det.name}", "threshold": det.threshold, "tpr": det.tpr,
            "val_fpr95": best.get("val_fpr95"), "val_auroc": best.get("val_auroc"),
            "chosen_on": "ID validation images and validation OOD sets (never a test set)",
            "fit": {k: v for k, v in det.info.items() if k != "predictor"},
            "candidates": [{k: r[k] for k in ("label", "val_fpr95", "val_auroc")} for r in det.candidates],
            "family_val_fpr95": {r["name"]: r["val_fpr95"] for r in reversed(det.candidates)}}
