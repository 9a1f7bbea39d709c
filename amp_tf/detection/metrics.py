"""Exact OOD-detection metrics (vectorised numpy, any score scale).

Scores are **higher = in-distribution (ID)** (see :mod:`amp_tf.method.scores`).
Everything is computed exactly from the sorted scores over *all* unique
thresholds in ``O(n log n)``: there is no threshold grid and no assumption
that scores lie in ``[0, 1]`` (unlike ``keras.metrics.AUC``).  Ties are
handled like scikit-learn: all samples with the same score share one
threshold, and a sample is "accepted" at threshold ``t`` iff ``score >= t``.
Results are deterministic and invariant to permutations of the inputs.

Conventions (``positive=``)
---------------------------
Let ``P`` be the positive set with detector score ``d`` (higher = positive)
and ``Q`` the negative set.

* ``positive="id"`` (paper / ODIN / Lee et al. convention): ``P`` = ID,
  ``Q`` = OOD, ``d = score``.
* ``positive="ood"`` (OpenOOD v1.5 convention): ``P`` = OOD, ``Q`` = ID,
  ``d = -score``.

Metrics (all fractions in ``[0, 1]``):

``fpr95``
    Let ``t*`` = the largest threshold with ``TPR(t*) = |{p in P: d_p >= t*}| / |P| >= 0.95``
    (this is the ``k``-th largest positive detector score, ``k = ceil(0.95 |P|)``).
    ``fpr95 = |{q in Q: d_q >= t*}| / |Q|``.  With ``positive="id"``: the
    fraction of OOD samples accepted as ID when 95% of ID samples are
    accepted; with ``positive="ood"``: the fraction of ID samples flagged OOD
    when 95% of OOD samples are detected.  This is the only metric whose value
    depends on ``positive``.
``auroc``
    ``P(score_id > score_ood) + 0.5 * P(score_id == score_ood)`` (exact
    Mann-Whitney count, equal to ``sklearn.metrics.roc_auc_score``); the same
    value under both conventions.
``aupr_in``
    Average precision (scikit-learn definition,
    ``AP = sum_k (R_k - R_{k-1}) P_k`` over unique thresholds) with **ID as
    positive** and the score as is - under both conventions.
``aupr_out``
    Average precision with **OOD as positive** and ``-score`` - under both
    conventions.
``detection_accuracy``
    Lee et al. 2018: ``1 - min_t 0.5 * (P_id(s < t) + P_ood(s >= t))`` over all
    candidate thresholds including ``+-inf`` (so it is at least 0.5).  The same
    value under both conventions (both sweep the same set of partitions).
"""
from __future__ import annotations

import csv
import io
import math

import numpy as np

__all__ = [
    "METRIC_KEYS",
    "METRIC_LABELS",
    "ood_metrics",
    "fpr_at_tpr",
    "auroc",
    "average_precision",
    "detection_accuracy",
    "MetricsTable",
    "metrics_table",
    "format_table",
]

METRIC_KEYS = ("fpr95", "auroc", "aupr_in", "aupr_out", "detection_accuracy")
METRIC_LABELS = {
    "fpr95": "FPR95",
    "auroc": "AUROC",
    "aupr_in": "AUPR-in",
    "aupr_out": "AUPR-out",
    "detection_accuracy": "DetAcc",
}
_POSITIVES = ("id", "ood")


# --------------------------------------------------------------------------- #
# Validation
# --------------------------------------------------------------------------- #
def check_scores(x, name):
    try:
        a = np.asarray(x)
    except Exception as e:  # pragma: no cover - exotic inputs
        raise ValueError(f"{name} could not be converted to a numpy array: {e}") from e
    if a.dtype == object or not (
        np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.bool_)
    ):
        raise ValueError(f"{name} must be numeric scores, got dtype {a.dtype}")
    if np.iscomplexobj(a):
        raise ValueError(f"{name} must be real-valued scores, got dtype {a.dtype}")
    a = a.astype(np.float64)
    if a.ndim != 1:
        raise ValueError(
            f"{name} must be 1-D (one score per sample), got shape {a.shape}; "
            f"pass np.ravel({name}) or select the score column"
        )
    if a.size == 0:
        raise ValueError(f"{name} is empty; at least one score per set is needed")
    bad = ~np.isfinite(a)
    if bad.any():
        idx = np.flatnonzero(bad)
        raise ValueError(
            f"{name} contains {idx.size} non-finite value(s) (NaN/Inf), first at index "
            f"{idx[:5].tolist()}; drop or clip them (e.g. np.nan_to_num) before computing metrics"
        )
    return a


def _check_positive(positive):
    if positive not in _POSITIVES:
        raise ValueError(f"positive must be 'id' or 'ood', got {positive!r}")


# --------------------------------------------------------------------------- #
# Exact building blocks (pos = positive detector scores, neg = negative ones;
# higher = positive; arrays are validated 1-D float64)
# --------------------------------------------------------------------------- #
def _counts_at_least(sorted_x, thresholds):
    """Number of entries of ascending ``sorted_x`` that are ``>= t`` per threshold."""
    return sorted_x.size - np.searchsorted(sorted_x, thresholds, side="left")


def _fpr_at_tpr(pos, neg, level=0.95):
    n = pos.size
    # smallest integer k with k / n >= level, in exact rational arithmetic for level=0.95
    if level == 0.95:
        k = (95 * n + 99) // 100
    else:
        k = int(math.ceil(round(level * n, 9)))
    k = min(max(k, 1), n)
    t = np.sort(pos)[n - k]  # k-th largest positive score
    return float(np.count_nonzero(neg >= t) / neg.size)


def _auroc(pos, neg):
    sn = np.sort(neg)
    less = np.searchsorted(sn, pos, side="left").astype(np.int64)
    leq = np.searchsorted(sn, pos, side="right").astype(np.int64)
    # 2 * (#(neg < pos) + 0.5 #(neg == pos)), summed exactly in integers
    twice = int(np.sum(less + leq, dtype=np.int64))
    return float(twice / (2.0 * pos.size * neg.size))


def _average_precision(pos, neg):
    thresholds = np.unique(np.concatenate([pos, neg]))[::-1]  # descending
    tp = _counts_at_least(np.sort(pos), thresholds).astype(np.float64)
    fp = _counts_at_least(np.sort(neg), thresholds).astype(np.float64)
    precision = tp / (tp + fp)  # tp + fp >= 1 at every threshold (it is a sample value)
    new_tp = np.diff(np.concatenate([[0.0], tp]))  # positives gained at each threshold
    return float(np.sum(new_tp * precision) / pos.size)  # divide once: exact 1.0 when perfect


def _detection_accuracy(pos, neg):
    thresholds = np.concatenate([np.unique(np.concatenate([pos, neg])), [np.inf]])
    miss = np.searchsorted(np.sort(pos), thresholds, side="left") / pos.size  # P_pos(d < t)
    false_alarm = _counts_at_least(np.sort(neg), thresholds) / neg.size  # P_neg(d >= t)
    err = 0.5 * (miss + false_alarm)
    # t = -inf: miss 0, false alarm 1 -> 0.5; t = +inf is included above -> 0.5
    return float(1.0 - min(err.min(), 0.5))


def _split(id_scores, ood_scores, positive):
    if positive == "id":
        return id_scores, ood_scores
    return -ood_scores, -id_scores


# --------------------------------------------------------------------------- #
# Public API
# --------------------------------------------------------------------------- #
def fpr_at_tpr(id_scores, ood_scores, positive="id", tpr=0.95):
    """False-positive rate at ``tpr`` true-positive rate (see module docstring)."""
    _check_positive(positive)
    i = check_scores(id_scores, "id_scores")
    o = check_scores(ood_scores, "ood_scores")
    if not 0.0 < tpr <= 1.0:
        raise ValueError(f"tpr must be in (0, 1], got {tpr!r}")
    return _fpr_at_tpr(*_split(i, o, positive), level=tpr)


def auroc(id_scores, ood_scores):
    """Exact AUROC ``P(s_id > s_ood) + 0.5 P(s_id == s_ood)``."""
    i = check_scores(id_scores, "id_scores")
    o = check_scores(ood_scores, "ood_scores")
    return _auroc(i, o)


def average_precision(id_scores, ood_scores, positive="id"):
    """Average precision with ``positive`` as the positive class.

    ``positive="id"``: ID positive, score as is (``aupr_in``);
    ``positive="ood"``: OOD positive, ``-score`` (``aupr_out``).
    """
    _check_positive(positive)
    i = check_scores(id_scores, "id_scores")
    o = check_scores(ood_scores, "ood_scores")
    return _average_precision(*_split(i, o, positive))


def detection_accuracy(id_scores, ood_scores):
    """Lee et al. 2018 detection accuracy ``1 - min_t 0.5 (P_id(s<t) + P_ood(s>=t))``."""
    i = check_scores(id_scores, "id_scores")
    o = check_scores(ood_scores, "ood_scores")
    return _detection_accuracy(i, o)


def ood_metrics(id_scores, ood_scores, positive="id"):
    """All OOD metrics for one (ID, OOD) pair of score arrays.

    Args:
        id_scores: 1-D scores of in-distribution samples (higher = ID).
        ood_scores: 1-D scores of OOD samples (same score, same scale).
        positive: ``"id"`` (paper/ODIN convention) or ``"ood"`` (OpenOOD
            v1.5); only changes ``fpr95`` - see the module docstring.

    Returns:
        dict with float fractions in ``[0, 1]`` under keys ``fpr95``,
        ``auroc``, ``aupr_in``, ``aupr_out``, ``detection_accuracy``, plus
        ``positive`` (the convention used).

    Raises:
        ValueError: empty, non-1-D, non-numeric or non-finite scores, or an
            unknown ``positive``.
    """
    _check_positive(positive)
    i = check_scores(id_scores, "id_scores")
    o = check_scores(ood_scores, "ood_scores")
    return {
        "fpr95": _fpr_at_tpr(*_split(i, o, positive)),
        "auroc": _auroc(i, o),
        "aupr_in": _average_precision(i, o),
        "aupr_out": _average_precision(-o, -i),
        "detection_accuracy": _detection_accuracy(i, o),
        "positive": positive,
    }


# --------------------------------------------------------------------------- #
# Tables
# --------------------------------------------------------------------------- #
class MetricsTable:
    """Rows ``(set_name, {metric: value})`` for the OOD sets plus a final ``mean`` row.

    ``str(table)`` renders markdown in percent; see :func:`format_table`.
    """

    def __init__(self, rows, columns=METRIC_KEYS):
        self.rows = [(name, dict(values)) for name, values in rows]
        self.columns = tuple(columns)

    def __iter__(self):
        return iter(self.rows)

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, name):
        for n, values in self.rows:
            if n == name:
                return values
        raise KeyError(name)

    @property
    def mean(self):
        return self["mean"]

    def to_dict(self):
        return {name: dict(values) for name, values in self.rows}

    def __str__(self):
        return format_table(self, fmt="md")

    def __repr__(self):
        return f"MetricsTable({[n for n, _ in self.rows]!r})"


def metrics_table(results, mean_name="mean"):
    """Build a :class:`MetricsTable` from ``{ood_set_name: ood_metrics(...)}``.

    Keeps the insertion order of ``results`` and appends a ``mean`` row (the
    arithmetic mean of each metric over the sets).  Non-metric keys such as
    ``positive`` are ignored.
    """
    if isinstance(results, MetricsTable):
        return results
    if not results:
        raise ValueError("results is empty; pass {ood_set_name: ood_metrics(...)}")
    if mean_name in results:
        raise ValueError(f"an OOD set is named {mean_name!r}, which is reserved for the mean row")
    rows = []
    for name, m in results.items():
        missing = [k for k in METRIC_KEYS if k not in m]
        if missing:
            raise ValueError(
                f"results[{name!r}] lacks metric(s) {missing}; pass the dict from ood_metrics()"
            )
        rows.append((str(name), {k: float(m[k]) for k in METRIC_KEYS}))
    mean = {k: float(np.mean([r[k] for _, r in rows])) for k in METRIC_KEYS}
    rows.append((mean_name, mean))
    return MetricsTable(rows)


def format_table(table, fmt="md", percent=True, digits=2):
    """Render a table (or a raw results dict) as markdown (``"md"``) or ``"csv"``.

    Columns: OOD set, FPR95, AUROC, AUPR-in, AUPR-out, DetAcc.  With
    ``percent=True`` values are multiplied by 100; ``digits`` decimals
    (markdown always, CSV too).
    """
    table = metrics_table(table)
    scale = 100.0 if percent else 1.0
    if not percent and digits == 2:
        digits = 4
    header = ["OOD set"] + [METRIC_LABELS[k] for k in table.columns]
    body = [
        [name] + [f"{values[k] * scale:.{digits}f}" for k in table.columns]
        for name, values in table.rows
    ]
    if fmt == "md":
        lines = ["| " + " | ".join(header) + " |"]
        lines.append("|" + "|".join([":---"] + ["---:"] * len(table.columns)) + "|")
        lines += ["| " + " | ".join(r) + " |" for r in body]
        return "\n".join(lines) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(header)
        w.writerows(body)
        return buf.getvalue()
    raise ValueError(f"fmt must be 'md' or 'csv', got {fmt!r}")


def threshold_at_tpr(id_scores, tpr=0.95):
    """The largest threshold t with at least `tpr` of `id_scores` >= t.

    Example:

    >>> threshold_at_tpr(np.arange(100.0), 0.95)
    5.0
    """
    s = np.sort(np.asarray(id_scores, dtype="float64").ravel())
    if s.size == 0:
        raise ValueError("id_scores: empty; pass ID validation images to set the threshold.")
    check_tpr(tpr)
    if not np.all(np.isfinite(s)):
        raise ValueError("id_scores: contain NaN or Inf; the model's scores are not finite.")
    return float(s[int(np.floor((1.0 - tpr) * s.size + 1e-9))])


def check_tpr(tpr):
    if not (isinstance(tpr, (int, float)) and 0.0 < tpr < 1.0):
        raise ValueError(f"tpr: expected a fraction in (0, 1), e.g. 0.95; got {tpr!r}.")
