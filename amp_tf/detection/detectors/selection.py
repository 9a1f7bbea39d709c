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
  `weights` (`w = 0` and `w = 1` are the two scores alone, already candidates);
* `amp+mahalanobis+gram` for each AMP variant and each weight triple of `simplex_weights()` (the
  weights of AMP, Mahalanobis and Gram: positive multiples of 1/8 summing to 1; a zero weight is
  one of the candidates above). Mahalanobis reads the pooled features, Gram the block outputs: the
  two see different things (at convergence Gram is the best vanilla score on covariate shift, the
  Mahalanobis combination on far-OOD).

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
from amp_tf.detection.detectors.shipped import (FEATURE_KINDS, GRAM_ORDER, MULTI, POOLED_KINDS, ShippedDetector,
                                                candidate_label, feature_kinds, score_layer)
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


def simplex_weights(steps=recipe.SELECT_SIMPLEX_STEPS):
    """Every triple of positive multiples of `1 / steps` summing to 1 (AMP's weight first), in order."""
    return [(i / steps, j / steps, (steps - i - j) / steps)
            for i in range(1, steps - 1) for j in range(1, steps - i)]


def candidate_scores(outputs, features, weights):
    """`[(name, options, scores_fn)]`: every candidate as a function of `AMPDetector.score_all` outputs.

    `features`: `{"knn": fitted AnchoredFeatureDetector, "mahalanobis": ..., "gram": AnchoredGram}`
    (those fitted). A combination has no `scores_fn` (None): `combination` computes it with the z
    statistics of the ID validation images.
    """
    kinds = [f for f in FEATURE_KINDS if f in features]
    out = [(n, {}, (lambda o, n=n: o[n])) for n in AMP_SCORES]
    out += [(f, {}, (lambda o, f=f: features[f].from_outputs(o))) for f in kinds]
    for f in kinds:
        for a in AMP_VARIANTS:
            for w in weights:
                out.append((f"amp+{f}", {"amp_score": a, "w": float(w)}, None))
    for name, parts in MULTI.items():
        if all(f in features for f in parts):
            for a in AMP_VARIANTS:
                for ws in simplex_weights():
                    out.append((name, {"amp_score": a, "weights": [float(v) for v in ws]}, None))
    return out


def term_weights(name, options):
    """`[(term, weight)]` of a combination: its AMP score first, then `feature_kinds(name)`."""
    terms = [options["amp_score"], *feature_kinds(name)]
    ws = options["weights"] if "weights" in options else [options["w"], 1.0 - options["w"]]
    return list(zip(terms, [float(w) for w in ws]))


def combination(outputs, feats, zstats, name, options):
    """The combination `name` with `options`: `sum_i w_i (s_i - mean_i) / std_i` over its terms, from
    `AMPDetector.score_all` outputs and their feature scores `feats` (`{kind: (N,)}`); `zstats`:
    `{score name: (mean, std)}` on the ID validation images."""
    (a, w), *rest = term_weights(name, options)
    if len(rest) == 1:  # two terms: exactly `zscore_combination`, as before the three-term kind
        f = rest[0][0]
        return zscore_combination(outputs[a], feats[f], (zstats[a], zstats[f]), w)
    out = 0.0
    for t, wt in [(a, w), *rest]:
        out = out + wt * (np.asarray(outputs[a] if t == a else feats[t]) - zstats[t][0]) / zstats[t][1]
    return out


def candidate_layer(fitted, name, options):
    """The `ShippedScore` of the candidate `name` with `options`, from `select_detector`'s fitted parts."""
    kinds, a = feature_kinds(name), options.get("amp_score", "amp")
    stats, weights = None, None
    if "+" in name:
        pairs = term_weights(name, options)
        stats = [fitted["zstats"][t] for t, _ in pairs]
        weights = [w for _, w in pairs] if len(pairs) > 2 else None
    ests = {f: getattr(fitted["features"][f], "estimator") for f in kinds}
    return score_layer(name, a, options.get("w", 1.0), stats, ests, term_weights=weights)


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
    rows, zstats = _evaluate(out_val, out_ood, features, weights)
    best = rows[0]
    layer = candidate_layer({"features": features, "zstats": zstats}, best["name"], best["options"])
    det = ShippedDetector(layer, anchors, best["name"], best["options"], tpr=tpr, candidates=rows,
                          info={"fit_images": n, "val_images": len(x_val),
                                "val_ood_sets": {k: len(v) for k, v in val_ood.items()},
                                "gram": None if gram is None else {"layers": list(amp.gram_layers_),
                                                                   "max_order": gram_order},
                                "predictor": {"calibration": calibration}})
    det.attach(model, calibration=calibration)
    det.fitted = {"amp": amp, "features": features, "zstats": zstats, "family_best": family_best(rows),
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


def zscore_stats(outputs, feats):
    """`{score name: (mean, std)}` of every AMP score and feature score on the ID validation images (a
    zero std is read as 1)."""
    vals = {**{a: outputs[a] for a in AMP_SCORES}, **feats}
    return {k: (float(np.mean(v)), float(np.std(v)) or 1.0) for k, v in vals.items()}


def _evaluate(out_val, out_ood, features, weights):
    """Every candidate's validation FPR95 / AUROC, best first; and the z statistics of every score on
    the ID validation images (`zscore_stats`). Each feature score is computed once per image set."""
    sets = {"val": out_val, **{("ood", k): o for k, o in out_ood.items()}}
    feats = {s: {f: features[f].from_outputs(o) for f in features} for s, o in sets.items()}
    zstats = zscore_stats(out_val, feats["val"])
    rows = []
    for i, (name, opts, fn) in enumerate(candidate_scores(out_val, features, weights)):
        if fn is None:
            vals = {s: combination(o, feats[s], zstats, name, opts) for s, o in sets.items()}
        else:
            vals = {s: feats[s][name] if name in feats[s] else fn(o) for s, o in sets.items()}
        fpr, auroc = _metrics(vals["val"], {k: v for k, v in vals.items() if k != "val"})
        rows.append({"label": candidate_label(name, opts), "name": name, "kind": name, "options": opts,
                     "val_fpr95": fpr, "val_auroc": auroc, "order": i})
    rows.sort(key=lambda r: (r["val_fpr95"], -r["val_auroc"], r["order"]))
    return rows, zstats


#: The anchored rows of a report: every AMP score, the three feature scores, the four combinations (the
#: Gram rows only when the selection fitted the anchored Gram).
REPORT_NAMES = (*AMP_SCORES, *FEATURE_KINDS, *(f"amp+{f}" for f in FEATURE_KINDS), *MULTI)


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
    amp, features, zstats, best = fitted["amp"], fitted["features"], fitted["zstats"], fitted["family_best"]
    kinds = [f for f in FEATURE_KINDS if f in features]
    combos = [n for n in REPORT_NAMES if "+" in n and n in best]

    def run(images):
        o = score_outputs(amp, images, fitted.get("gram"))
        out = {n: o[n] for n in AMP_SCORES}
        out.update({f: features[f].from_outputs(o) for f in kinds})
        for name in combos:
            out[name] = combination(o, out, zstats, name, best[name])
        out["predicted_class"] = o["predicted_class"]
        return out

    return run
