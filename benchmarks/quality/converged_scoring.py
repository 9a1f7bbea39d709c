"""The scoring shared by the converged benchmark (`benchmarks.quality.converged`) and the reduced-scale protocol
(`benchmarks.quality.ood`): the anchored models by the library's `select_detector` (every candidate, the
selected one recorded: `select_anchored`, `candidate_scorer`, `selection_info`), the deep ensemble from its
members' stored logits (`ensemble_scores`); and, for converged, the vanilla models by every baseline.
"""
from __future__ import annotations

from amp_tf import recipe as _recipe

VANILLA = ("msp", "energy", "odin", "max_logit", "entropy", "temperature_scaling", "react", "knn", "mahalanobis",
           "gram")


def select_anchored(model, d, a, seed, log=None):
    """`select_detector` on the anchored model, as the library ships it: the anchors drawn from all training
    images (`select_anchors`, `seed`), the feature scores fitted on the first `--fit-limit` of them, every ID
    validation image (z statistics, threshold), `validation_ood_sets` of the first `--val-ood-size`
    validation images (`seed`), AMP's weights `amp_tf.recipe.SELECT_WEIGHTS`. Returns the `ShippedDetector`."""
    from amp_tf.detection.detectors import select_detector
    from amp_tf.method.predictor import select_anchors

    return select_detector(model, (d.x_train, d.y_train), (d.x_val, d.y_val),
                           anchors=select_anchors(d.x_train, a.num_anchors, seed=seed), num_anchors=a.num_anchors,
                           seed=seed, fit_limit=a.fit_limit, val_ood_size=a.val_ood_size,
                           weights=_recipe.SELECT_WEIGHTS, log=log)


def candidate_scorer(det):
    """`(images, limit=None) -> {label: (n,) scores, "predicted_class": (N,)}` for EVERY candidate
    `select_detector` weighed (`det.candidates`' labels) on the first `limit` images (all: None), plus the rows
    `amp+knn` / `amp+mahalanobis` / `amp+gram` / `amp+mahalanobis+gram` (each family's validation-best member, as
    `selection.candidate_scorer` names them), and AMP's predicted class of all N images: one pass over the K
    anchors (`selection.score_outputs`) with the selection's fitted parts, each feature score computed once."""
    from amp_tf.detection.detectors.selection import candidate_scores, combination, score_outputs
    from amp_tf.detection.detectors.shipped import candidate_label

    fitted = det.fitted
    features, zstats, best = fitted["features"], fitted["zstats"], fitted["family_best"]
    labels = [r["label"] for r in sorted(det.candidates, key=lambda r: r["order"])]

    def run(images, limit=None):
        o = score_outputs(fitted["amp"], images, fitted.get("gram"))
        predicted, o = o["predicted_class"], {k: v[:limit] for k, v in o.items()}
        feats = {f: features[f].from_outputs(o) for f in features}
        out = {}
        for name, opts, fn in candidate_scores(o, features, _recipe.SELECT_WEIGHTS):
            if fn is None:  # a combination, with the selection's z statistics of the ID validation images
                out[candidate_label(name, opts)] = combination(o, feats, zstats, name, opts)
            else:
                out[name] = feats[name] if name in feats else fn(o)
        if list(out) != labels:
            raise RuntimeError(f"converged: the candidates scored ({list(out)}) are not select_detector's ({labels})")
        out.update({n: out[candidate_label(n, opts)] for n, opts in best.items() if "+" in n})
        out["predicted_class"] = predicted
        return out

    return run


def vanilla_scores(model, d, sets, a, seed):
    """`{set: {score: array}}` of every vanilla detector, and MC dropout (one set of passes for its 3 scores)."""
    from amp_tf.detection import detectors
    from amp_tf.detection.baselines import MCDropout

    n = a.fit_limit or len(d.x_train)
    dets = detectors.fit_all(VANILLA, model, id_train=(d.x_train[:n], d.y_train[:n]), id_val=(d.x_val, d.y_val))
    out = {k: dets.score(x) for k, x in sets.items()}
    mc = MCDropout(model, a.mc_passes, seed)  # seeded: each set gets the masks detectors.get("mc_dropout_*") draws
    for k, x in sets.items():
        out[k].update({f"mc_dropout_{s}": v for s, v in mc.scores(x).items()})
    return out


def ensemble_scores(member_logits):
    """`({set: {"ensemble_msp" / "ensemble_entropy" / "ensemble_variance": (N,)}}, {set: (M, N, C) softmax})` of
    the deep ensemble of M members, from each member's logits `[{set: (N, C)}]` (e.g. stored in each seed's
    cache file, so the ensemble needs no model in memory): `amp_tf.detection.baselines.ensemble_scores` on
    the logits instead of the models."""
    import numpy as np

    from amp_tf.detection.baselines._common import predictive_scores, softmax

    probs = {k: np.stack([softmax(np.asarray(m[k], dtype="float32")) for m in member_logits])
             for k in member_logits[0]}
    return {k: {f"ensemble_{s}": v for s, v in predictive_scores(p).items()} for k, p in probs.items()}, probs


def metric_rows(model_name, by_set, ood_names):
    from amp_tf.detection.metrics import ood_metrics

    ref = by_set["id"]
    return {f"{model_name}/{score}": {o: ood_metrics(ref[score], by_set[o][score], positive="id") for o in ood_names}
            for score in ref if score != "predicted_class"}


def selection_info(det):
    """What `select_detector` chose and why (validation data only): every candidate's validation FPR95 and
    AUROC (by label, in the candidates' order; `val_fpr95` is what `ood_report.select_shipped` reads), the
    selected candidate, its threshold and the selection's fitting time."""
    rows = sorted(det.candidates, key=lambda r: r["order"])
    return {"val_fpr95": {r["label"]: r["val_fpr95"] for r in rows},
            "val_auroc": {r["label"]: r["val_auroc"] for r in rows},
            "selected": det.label, "selected_name": det.name, "selected_options": dict(det.options),
            "threshold": float(det.threshold), "select_seconds": det.info.get("fit_seconds")}
