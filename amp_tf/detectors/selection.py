"""`select_detector`: fit every candidate on ID data, choose on validation OOD data, return what to ship.

Like scikit-learn's `GridSearchCV`, one call returns the fitted winner and the
table that chose it. The candidates, all from ONE pass over the K anchors per
image set (the anchored model's logits and its `[c, x - c]` features):

* every AMP score (`AMP_SCORES`: the four `tau_reduction` x `calibration` variants,
  `msp` and `energy` of the calibrated logits, `neg_tau`);
* the anchored `knn` and `mahalanobis` (fitted on the first `fit_limit` training images);
* `amp+knn` and `amp+mahalanobis` for each AMP variant and each weight `w` of `weights`
  (`w = 0` and `w = 1` are the two scores alone, already candidates).

The winner has the lowest mean FPR95 over the validation OOD sets (by default
`validation_ood_sets` of ID validation images: pixel and patch shuffles, noise,
inversion, rotations, which share nothing with any test set); the mean AUROC breaks
ties, then the order above. Nothing here sees a test image. The threshold lets `tpr`
of ALL the ID validation images pass, computed by the same in-graph score the exports
run (`ShippedScore`).

Example:

>>> det = select_detector(anchored_model, (x_train, y_train), (x_val, y_val))   # doctest: +SKIP
>>> det.label, det.candidates[0]["val_fpr95"]                                     # doctest: +SKIP
('amp+mahalanobis[w=0.5]', 0.081)
"""

from __future__ import annotations

import time

import numpy as np

from amp_tf import recipe
from amp_tf.detectors.anchored import AMPDetector, AnchoredFeatureDetector, zscore_combination
from amp_tf.detectors.base import model_kind
from amp_tf.detectors.shipped import FEATURE_KINDS, ShippedDetector, candidate_label, score_layer
from amp_tf.metrics import ood_metrics, threshold_at_tpr
from amp_tf.predictor import AMP_SCORES, AMP_VARIANTS

#: The fewest ID validation images a selection (and its threshold) may rest on.
MIN_VAL_IMAGES = 20


def _split(pair, what):
    if isinstance(pair, tuple) and len(pair) == 2:
        return np.asarray(pair[0]), (None if pair[1] is None else np.asarray(pair[1]))
    if pair is None:
        raise ValueError(f"{what}: pass (images, labels) of the ID {what.split('_')[1]} split.")
    return np.asarray(pair), None


def check_selection_inputs(model, id_train, id_val, val_ood):
    """Refuses, before any fitting: a model that is not anchored, fewer than 20 ID validation images,
    no labels for the training images, no validation OOD images. Returns the arrays."""
    if model_kind(model) != "anchored":
        raise TypeError(f"select_detector: needs an AnchoredModel (its AMP and anchored features), got "
                        f"{type(model).__name__}.")
    x_tr, y_tr = _split(id_train, "id_train")
    x_val, _ = _split(id_val, "id_val")
    if y_tr is None:
        raise ValueError("id_train: the Mahalanobis candidates need the labels; pass id_train=(images, labels).")
    if len(x_val) < MIN_VAL_IMAGES:
        raise ValueError(f"id_val: {len(x_val)} ID validation image(s) cannot select a detector or set its "
                         f"threshold; pass at least {MIN_VAL_IMAGES} (held out of training).")
    if val_ood is not None and (not isinstance(val_ood, dict) or not val_ood
                                or not all(len(v) for v in val_ood.values())):
        raise ValueError("val_ood: no validation OOD images; pass {name: images} with at least one image per set, "
                         "or leave it out (validation_ood_sets of the ID validation images are used).")
    return x_tr, y_tr, x_val


def _metrics(id_scores, ood_scores):
    rows = [ood_metrics(id_scores, s) for s in ood_scores.values()]
    return float(np.mean([r["fpr95"] for r in rows])), float(np.mean([r["auroc"] for r in rows]))


def candidate_scores(outputs, features, weights):
    """`[(name, options, scores_fn)]`: every candidate as a function of `AMPDetector.score_all` outputs.

    `features`: `{"knn": fitted AnchoredFeatureDetector, "mahalanobis": ...}`; a combination's z
    statistics are filled in by `select_detector` (`stats[name, amp_score]`).
    """
    out = [(n, {}, (lambda o, n=n: o[n])) for n in AMP_SCORES]
    out += [(f, {}, (lambda o, f=f: features[f].from_outputs(o))) for f in FEATURE_KINDS]
    for f in FEATURE_KINDS:
        for a in AMP_VARIANTS:
            for w in weights:
                out.append((f"amp+{f}", {"amp_score": a, "w": float(w)}, None))
    return out


def select_detector(model, id_train, id_val, val_ood=None, anchors=None, num_anchors=recipe.NUM_ANCHORS, seed=0,
                    fit_limit=recipe.SELECT_FIT_LIMIT, val_ood_size=recipe.SELECT_VAL_OOD,
                    weights=recipe.SELECT_WEIGHTS, tpr=recipe.SERVING_TPR, calibration="exp", batch_size=256,
                    log=None):
    """Fits every candidate on ID data and returns the one with the lowest validation-OOD FPR95.

    Args:
        model: a trained `AnchoredModel`.
        id_train: `(images, labels)` of ID training images (raw pixels): the anchors (unless
            `anchors=`) and the first `fit_limit` images fit the feature scores.
        id_val: `(images, labels)` of ID validation images held out of training (>= 20): the
            ID side of every validation metric, the z statistics and the threshold.
        val_ood: `{name: images}` of validation OOD sets that share nothing with the test sets;
            None: `validation_ood_sets` of the first `val_ood_size` validation images.
        anchors: `(K, H, W, C)` raw-pixel anchors; None: `select_anchors` of the training images.
        num_anchors, seed: K and the seed of the anchor draw (and of the validation OOD sets).
        weights: AMP's weights `w` tried for `amp+knn` / `amp+mahalanobis`.
        tpr: the fraction of ID validation images the threshold lets pass.
        calibration: the exported predictor's calibration (its `amp_score`, `probabilities`).
        log: a `print`-like function for progress (None: quiet).

    Returns:
        A `ShippedDetector`, attached to `model`, with `name`, `options`, `threshold` and
        `candidates` (every candidate's validation FPR95 and AUROC, best first).
    """
    from amp_tf.predictor import select_anchors

    log = log or (lambda *a, **k: None)
    x_tr, y_tr, x_val = check_selection_inputs(model, id_train, id_val, val_ood)
    t0 = time.time()
    if anchors is None:
        anchors = select_anchors(x_tr, int(num_anchors), seed=seed)
    if val_ood is None:
        from amp_tf.data.corruptions import validation_ood_sets

        val_ood = validation_ood_sets(np.asarray(x_val[:val_ood_size]).astype(np.uint8), seed=seed)
    amp = AMPDetector("amp", anchors=anchors, feature_layer="features", batch_size=batch_size).fit(model)
    n = min(int(fit_limit or len(x_tr)), len(x_tr))
    log(f"  selecting the shipped detector: anchored features of {n} training images, {len(x_val)} validation "
        f"images and {len(val_ood)} validation OOD sets ({sum(len(v) for v in val_ood.values())} images) ...")
    train_feats = amp.score_all(x_tr[:n])["features"]
    features = {f: AnchoredFeatureDetector(f, anchors=anchors, batch_size=batch_size).fit(
        model, id_train=(x_tr[:n], y_tr[:n]), amp=amp, train_features=train_feats) for f in FEATURE_KINDS}
    out_val = amp.score_all(x_val)
    out_ood = {k: amp.score_all(v) for k, v in val_ood.items()}
    rows, stats = _evaluate(out_val, out_ood, features, weights)
    best = rows[0]
    layer = score_layer(best["kind"], best["options"].get("amp_score", "amp"), best["options"].get("w", 1.0),
                        stats.get((best["kind"], best["options"].get("amp_score"))),
                        getattr(features.get(best["kind"].split("+", 1)[-1]), "estimator", None))
    det = ShippedDetector(layer, anchors, best["name"], best["options"], tpr=tpr, candidates=rows,
                          info={"fit_images": n, "val_images": len(x_val),
                                "val_ood_sets": {k: len(v) for k, v in val_ood.items()},
                                "predictor": {"calibration": calibration}})
    det.attach(model, calibration=calibration)
    det.fitted = {"amp": amp, "features": features, "stats": stats, "family_best": family_best(rows)}
    det.threshold = threshold_at_tpr(det.score(x_val, batch_size), tpr)
    det.info["fit_seconds"] = round(time.time() - t0, 1)
    log(f"  shipped detector: {det.label} (validation FPR95 {100 * best['val_fpr95']:.2f} %, AUROC "
        f"{100 * best['val_auroc']:.2f} %; threshold {det.threshold:.4g}; {det.info['fit_seconds']:.0f} s)")
    return det


def _evaluate(out_val, out_ood, features, weights):
    """Every candidate's validation FPR95 / AUROC, best first; and the combinations' z statistics."""
    rows, stats = [], {}
    for i, (name, opts, fn) in enumerate(candidate_scores(out_val, features, weights)):
        if fn is None:
            f, a = name.split("+", 1)[1], opts["amp_score"]
            if (name, a) not in stats:
                fv, av = features[f].from_outputs(out_val), out_val[a]
                stats[(name, a)] = ((float(np.mean(av)), float(np.std(av)) or 1.0),
                                    (float(np.mean(fv)), float(np.std(fv)) or 1.0))

            def fn(o, f=f, a=a, w=opts["w"], s=stats[(name, a)]):
                return zscore_combination(o[a], features[f].from_outputs(o), s, w)
        fpr, auroc = _metrics(fn(out_val), {k: fn(o) for k, o in out_ood.items()})
        rows.append({"label": candidate_label(name, opts), "name": name, "kind": name, "options": opts,
                     "val_fpr95": fpr, "val_auroc": auroc, "order": i})
    rows.sort(key=lambda r: (r["val_fpr95"], -r["val_auroc"], r["order"]))
    return rows, stats


#: The anchored rows of a report: every AMP score, the two feature scores, the two combinations.
REPORT_NAMES = (*AMP_SCORES, *FEATURE_KINDS, *(f"amp+{f}" for f in FEATURE_KINDS))


def family_best(rows):
    """`{name: options}`: the validation-best options of each candidate name (e.g. `amp+knn`'s `w`)."""
    best = {}
    for r in rows:  # best first
        best.setdefault(r["name"], r["options"])
    return best


def candidate_scorer(det):
    """`images -> {name: (N,) scores, "predicted_class": (N,)}` for every name of `REPORT_NAMES` (a
    combination with its validation-best options), from one AMP pass, with `select_detector`'s fitted
    parts: the anchored rows of a report. The row `det.name` is the shipped score."""
    fitted = det.fitted
    amp, features, stats, best = fitted["amp"], fitted["features"], fitted["stats"], fitted["family_best"]

    def run(images):
        o = amp.score_all(images)
        out = {n: o[n] for n in AMP_SCORES}
        out.update({f: features[f].from_outputs(o) for f in FEATURE_KINDS})
        for f in FEATURE_KINDS:
            name = f"amp+{f}"
            a, w = best[name]["amp_score"], best[name]["w"]
            out[name] = zscore_combination(o[a], out[f], stats[(name, a)], w)
        out["predicted_class"] = o["predicted_class"]
        return out

    return run
