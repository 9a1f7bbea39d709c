"""A job's results summarised for its report: `summarize` (every model's mean metrics, the best
one per metric), the conventions of the positive class (`convention_line`) and the metrics where
lower is better. `amp_tf.run.report` renders and writes it; every name still imports from there."""
from __future__ import annotations

import copy

from amp_tf.detection.metrics import METRIC_KEYS, metrics_table

LOWER_IS_BETTER = ("fpr95",)
MEAN = "mean"
_CONVENTIONS = {
    "id": (
        "positive = ID (paper / ODIN convention): FPR95 is the share of OOD samples "
        "accepted as ID at 95 % ID recall (TPR)."
    ),
    "ood": (
        "positive = OOD (OpenOOD v1.5 convention): FPR95 is the share of ID samples "
        "flagged as OOD at 95 % OOD recall (TPR)."
    ),
}


def _positive(results):
    """The metric convention of ``results``, checked against the metrics dicts."""
    tagged = {
        m["positive"]
        for per_set in results.get("scores", {}).values()
        for m in per_set.values()
        if isinstance(m, dict) and "positive" in m
    }
    positive = results.get("positive")
    if positive is None:
        if len(tagged) > 1:
            raise ValueError(f"metrics were computed with mixed conventions {sorted(tagged)}")
        positive = tagged.pop() if tagged else "id"
    if positive not in _CONVENTIONS:
        raise ValueError(f"results['positive'] must be 'id' or 'ood', got {positive!r}")
    if tagged - {positive}:
        raise ValueError(
            f"results['positive'] is {positive!r} but some metrics were computed with "
            f"positive={sorted(tagged - {positive})}; recompute them with ood_metrics(..., positive={positive!r})"
        )
    return positive


def convention_line(positive):
    """One sentence stating the metric convention, e.g. for ``positive="id"``.

    Example::

        convention_line("ood")  # 'positive = OOD (OpenOOD v1.5 convention): FPR95 is ...'
    """
    if positive not in _CONVENTIONS:
        raise ValueError(f"positive must be 'id' or 'ood', got {positive!r}")
    return _CONVENTIONS[positive]


def best_model(summary, metric):
    """Score key with the best mean ``metric`` (first one on ties)."""
    pick = min if metric in LOWER_IS_BETTER else max
    return pick(summary, key=lambda k: summary[k][metric])


def summarize(results):
    """Add per-score means over the OOD sets and the best score per metric.

    Args:
        results: results dict with ``"scores": {score_key: {ood_set: ood_metrics(...)}}``.

    Returns:
        A new dict (``results`` is not modified) with ``"summary"``:
        ``{score_key: {metric: mean over its OOD sets}}``, ``"groups"`` (near / far /
        covariate means, when the sets belong to groups) and ``"positive"`` (the
        convention, default ``"id"``). Nothing is chosen here: the one "best" of a run
        is its shipped detector, chosen on validation data (``results["shipped"]``).

    Example::

        s = summarize(results)
        s["summary"]["anchored/amp"]["auroc"]   # mean AUROC over the OOD sets
    """
    scores = results.get("scores")
    if not scores:
        raise ValueError("results['scores'] is empty; pass {score_key: {ood_set: ood_metrics(...)}}")
    out = copy.deepcopy(dict(results))
    out["positive"] = _positive(out)
    out["summary"] = {
        key: dict(metrics_table(per_set, mean_name=MEAN).mean) for key, per_set in scores.items()
    }
    out.pop("best", None)
    from amp_tf.data.groups import group_summary

    groups = {key: group_summary({k: {m: v for m, v in mm.items() if m in METRIC_KEYS}
                                  for k, mm in per_set.items()}, ignore_unknown=True)
              for key, per_set in scores.items()}
    if any(groups.values()):
        out["groups"] = groups
    return out
