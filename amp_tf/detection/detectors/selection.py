"""`select_detector`: fit every candidate on ID data, choose on validation OOD data, return what to ship.

Like scikit-learn's `GridSearchCV`, one call returns the fitted winner and the
table that chose it. The candidates, all from ONE pass over the K anchors per
image set (the anchored model's logits, its pooled `[c, x - c]` features and the Gram
features of its block outputs, from the same backbone call):

* every AMP score (`AMP_SCORES`: the four `tau_reduction` x `calibration` variants,
  `msp` and `energy` of the calibrated logits, `neg_tau`);
* the anchored `knn` and `mahalanobis` (fitted on the first `fit_limit` training images);
* the anchored `gram` (`AnchoredGram`: Gram features of orders 1..`gram_order`, mean over
  the K anchors, ranges per AMP-predicted class on the same training images);
* `amp+knn`, `amp+mahalanobis` and `amp+gram` for each AMP variant and each weight `w` of
  `weights` (`w = 0` and `w = 1` are the two scores alone, already candidates).

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
from amp_tf.detection.detectors.anchored import AMPDetector, AnchoredFeatureDetector, AnchoredGram, zscore_combination
from amp_tf.detection.detectors.base import model_kind
from amp_tf.detection.detectors.shipped import (FEATURE_KINDS, GRAM_ORDER, POOLED_KINDS, ShippedDetector, candidate_label,
                                      score_layer)
from amp_tf.detection.metrics import ood_metrics, threshold_at_tpr
from amp_tf.method.predictor import AMP_SCORES, AMP_VARIANTS

#: The fewest ID validation images a selection (and its threshold) may rest on.
MIN_VAL_IMAGES = 20
#: Images per `score_all` call: the Gram features (N, Dg) are reduced to their score chunk by chunk.
CHUNK = 2048


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
    if model.normalizer.check:  # raw pixels in: `x / 255` or normalised images named by their argument
        from amp_tf.models.pixels import check_pixels

        x_tr, x_val = check_pixels(x_tr, "id_train images"), check_pixels(x_val, "id_val images")
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

    `features`: `{"knn": fitted AnchoredFeatureDetector, "mahalanobis": ..., "gram": AnchoredGram}`
    (those fitted); a combination's z statistics are filled in by `select_detector` (`stats[name, amp_score]`).
    """
    kinds = [f for f in FEATURE_KINDS if f in features]
    out = [(n, {}, (lambda o, n=n: o[n])) for n in AMP_SCORES]
    out += [(f, {}, (lambda o, f=f: features[f].from_outputs(o))) for f in kinds]
    for f in kinds:
        for a in AMP_VARIANTS:
            for w in weights:
                out.append((f"amp+{f}", {"amp_score": a, "w": float(w)}, None))
    return out


def select_detector(model, id_train, id_val, val_ood=None, anchors=None, num_anchors=recipe.NUM_ANCHORS, seed=0,
                    fit_limit=recipe.SELECT_FIT_LIMIT, val_ood_size=recipe.SELECT_VAL_OOD,
                    weights=recipe.SELECT_WEIGHTS, tpr=recipe.SERVING_TPR, calibration="exp", batch_size=256,
                    gram_order=GRAM_ORDER, log=None):
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
        weights: AMP's weights `w` tried for `amp+knn` / `amp+mahalanobis` / `amp+gram`.
        tpr: the fraction of ID validation images the threshold lets pass.
        calibration: the exported predictor's calibration (its `amp_score`, `probabilities`).
        gram_order: the highest order of the anchored Gram features (0: no `gram` / `amp+gram`
            candidates; dropped too, with a log line, if a float32 Gram value overflows).
        log: a `print`-like function for progress (None: quiet).

    Returns:
        A `ShippedDetector`, attached to `model`, with `name`, `options`, `threshold` and
        `candidates` (every candidate's validation FPR95 and AUROC, best first).
    """
    from amp_tf.method.anchors import select_anchors

    log = log or (lambda *a, **k: None)
    x_tr, y_tr, x_val = check_selection_inputs(model, id_train, id_val, val_ood)
    t0 = time.time()
    if anchors is None:
        anchors = select_anchors(x_tr, int(num_anchors), seed=seed)
    if val_ood is None:
        from amp_tf.data.corruptions import validation_ood_sets

        val_ood = validation_ood_sets(np.asarray(x_val[:val_ood_size]).astype(np.uint8), seed=seed)
    gram_order = int(gram_order or 0)
    amp = AMPDetector("amp", anchors=anchors, feature_layer="features", gram_layers="auto" if gram_order else None,
                      gram_order=max(gram_order, 1), batch_size=batch_size).fit(model)
    n = min(int(fit_limit or len(x_tr)), len(x_tr))
    what = f" and Gram features ({len(amp.gram_layers_)} layers, orders 1..{gram_order})" if gram_order else ""
    log(f"  selecting the shipped detector: anchored features{what} of {n} training images, {len(x_val)} validation "
        f"images and {len(val_ood)} validation OOD sets ({sum(len(v) for v in val_ood.values())} images) ...")
    features, gram = _fit_features(model, amp, anchors, x_tr[:n], y_tr[:n], gram_order, batch_size, log)
    out_val = score_outputs(amp, x_val, gram)
    out_ood = {k: score_outputs(amp, v, gram) for k, v in val_ood.items()}
    rows, stats = _evaluate(out_val, out_ood, features, weights)
    best = rows[0]
    layer = score_layer(best["kind"], best["options"].get("amp_score", "amp"), best["options"].get("w", 1.0),
                        stats.get((best["kind"], best["options"].get("amp_score"))),
                        getattr(features.get(best["kind"].split("+", 1)[-1]), "estimator", None))
    det = ShippedDetector(layer, anchors, best["name"], best["options"], tpr=tpr, candidates=rows,
                          info={"fit_images": n, "val_images": len(x_val),
                                "val_ood_sets": {k: len(v) for k, v in val_ood.items()},
                                "gram": None if gram is None else {"layers": list(amp.gram_layers_),
                                                                   "max_order": gram_order},
                                "predictor": {"calibration": calibration}})
    det.attach(model, calibration=calibration)
    det.fitted = {"amp": amp, "features": features, "stats": stats, "family_best": family_best(rows),
                  "gram": gram}
    det.threshold = threshold_at_tpr(det.score(x_val, batch_size), tpr)
    det.info["fit_seconds"] = round(time.time() - t0, 1)
    log(f"  shipped detector: {det.label} (validation FPR95 {100 * best['val_fpr95']:.2f} %, AUROC "
        f"{100 * best['val_auroc']:.2f} %; threshold {det.threshold:.4g}; {det.info['fit_seconds']:.0f} s)")
    return det


def _fit_features(model, amp, anchors, x_tr, y_tr, gram_order, batch_size, log):
    """`({name: fitted feature detector}, AnchoredGram or None)` from one pass over the training images:
    the pooled features kept for KNN / Mahalanobis, the Gram ranges fitted chunk by chunk."""
    n = len(x_tr)
    train_feats, gram = [], AnchoredGram(amp) if gram_order else None

    def train_outputs():  # one pass: the pooled features kept, the Gram ranges fitted chunk by chunk
        for s in range(0, n, CHUNK):
            o = amp.score_all(x_tr[s:min(s + CHUNK, n)])
            train_feats.append(o.pop("features"))
            yield o

    if gram is not None:
        gram.fit(train_outputs(), int(model.backbone.output.shape[-1]))
        if not gram.finite:
            log(f"  anchored Gram: a float32 Gram feature of order <= {gram_order} overflowed on the training "
                "images; no gram / amp+gram candidates (pass a lower gram_order)")
            gram = amp.without_gram() and None  # the later passes without Gram features
    else:
        for _ in train_outputs():
            pass
    train_feats = np.concatenate(train_feats)
    features = {f: AnchoredFeatureDetector(f, anchors=anchors, batch_size=batch_size).fit(
        model, id_train=(x_tr, y_tr), amp=amp, train_features=train_feats) for f in POOLED_KINDS}
    if gram is not None:
        features["gram"] = gram
    return features, gram


def score_outputs(amp, images, gram=None, chunk=CHUNK):
    """`amp.score_all(images)`, `chunk` images at a time; with a fitted `AnchoredGram`, each chunk's
    `gram` features (N, Dg) are replaced by their score `gram_score` (memory: the scores, not the features)."""
    parts = []
    for s in range(0, max(len(images), 1), chunk):
        o = amp.score_all(images[s:s + chunk])
        if gram is not None and "gram" in o:
            o["gram_score"] = gram.from_outputs(o)
        o.pop("gram", None)
        parts.append(o)
    return parts[0] if len(parts) == 1 else {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


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


#: The anchored rows of a report: every AMP score, the three feature scores, the three combinations (the
#: Gram rows only when the selection fitted the anchored Gram).
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
    kinds = [f for f in FEATURE_KINDS if f in features]

    def run(images):
        o = score_outputs(amp, images, fitted.get("gram"))
        out = {n: o[n] for n in AMP_SCORES}
        out.update({f: features[f].from_outputs(o) for f in kinds})
        for f in kinds:
            name = f"amp+{f}"
            a, w = best[name]["amp_score"], best[name]["w"]
            out[name] = zscore_combination(o[a], out[f], stats[(name, a)], w)
        out["predicted_class"] = o["predicted_class"]
        return out

    return run
