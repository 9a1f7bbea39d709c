"""OOD groups of the Fashion-MNIST suite, and per-group summaries of metrics.

* ``near``: the class-holdout OOD sets. Each needs its own model trained on
  its ID set (`NEAR_ID`), not the 10-class Fashion-MNIST model.
* ``far``: other kinds of images: ``digits`` (scikit-learn), ``font_letters``
  (rendered letters), ``skimage_patches`` (patches of real photographs).
* ``covariate``: the Fashion-MNIST test images under graded corruptions
  (blur, JPEG, contrast, pixelate; levels 1..5).

`group_summary` averages each metric within a group, then averages the group
means (``overall``), so the 20 covariate sets do not outweigh the 3 far sets.
Pure Python/numpy.

Example:
    >>> group_of("font_letters")
    'far'
    >>> len(GROUPS["covariate"])
    20
"""
from __future__ import annotations

import numpy as np

#: OOD set names of each group.
GROUPS = {
    "near": ["fmnist_holdout_ood", "fmnist_holdout2_ood"],
    "far": ["digits", "font_letters", "skimage_patches"],
    "covariate": [f"fmnist_{kind}_{level}" for kind in ("blur", "jpeg", "contrast", "pixelate")
                  for level in range(1, 6)],
}

#: The ID set (train on its ``train`` split) that each near-OOD set goes with.
NEAR_ID = {"fmnist_holdout_ood": "fmnist_holdout_id", "fmnist_holdout2_ood": "fmnist_holdout2_id"}

#: The ID set of the far and covariate groups.
ID_SET = "fashion_mnist"


def group_of(set_name: str) -> str:
    """The group (``"near"``, ``"far"`` or ``"covariate"``) of an OOD set.

    Raises:
        ValueError: The set is in no group.

    Example:
        >>> group_of("fmnist_jpeg_3"), group_of("fmnist_holdout2_ood")
        ('covariate', 'near')
    """
    for group, members in GROUPS.items():
        if set_name in members:
            return group
    raise ValueError(f"{set_name!r} is in no OOD group; known sets: {', '.join(all_sets())}.")


def all_sets() -> list[str]:
    """All OOD set names of the suite, group by group.

    Example:
        >>> all_sets()[:3]
        ['fmnist_holdout_ood', 'fmnist_holdout2_ood', 'digits']
    """
    return [name for members in GROUPS.values() for name in members]


def group_summary(per_set: dict, ignore_unknown: bool = False) -> dict:
    """Per-group means of every metric, and ``overall`` = the mean of the group means.

    Args:
        per_set: ``{set name: {metric: value}}``, e.g. ``{"digits": {"fpr95": 0.3}}``.
        ignore_unknown: Skip sets that are in no group instead of raising.

    Returns:
        ``{group: {metric: mean over the group's sets}, ..., "overall": {metric:
        mean over the groups}}`` for the groups present in ``per_set`` (groups
        with no set in the input are skipped), in `GROUPS` order. A metric
        missing for some sets is averaged over the sets (or groups) that have it.
        Empty input gives ``{}``.

    Raises:
        ValueError: A set is in no group (unless ``ignore_unknown``).

    Example:
        >>> s = group_summary({"digits": {"auroc": 0.9}, "font_letters": {"auroc": 0.7},
        ...                    "fmnist_blur_1": {"auroc": 0.5}})
        >>> round(s["far"]["auroc"], 6), round(s["overall"]["auroc"], 6)
        (0.8, 0.65)
    """
    values: dict = {}
    for name, metrics in per_set.items():
        try:
            group = group_of(name)
        except ValueError:
            if ignore_unknown:
                continue
            raise
        for metric, value in metrics.items():
            if isinstance(value, (str, bool)) or value is None:  # e.g. ood_metrics' "positive": "id"
                continue
            values.setdefault(group, {}).setdefault(metric, []).append(float(value))
    out = {}
    for group in GROUPS:
        if group in values:
            out[group] = {m: float(np.mean(v)) for m, v in values[group].items()}
    if out:
        metrics = []
        for means in out.values():
            metrics += [m for m in means if m not in metrics]
        out["overall"] = {
            m: float(np.mean([means[m] for means in out.values() if m in means])) for m in metrics
        }
    return out
