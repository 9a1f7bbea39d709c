"""PNG plots for OOD reports: score densities, ROC curves, metric vs corruption level.

Scores are **higher = in-distribution (ID)**, as everywhere in :mod:`amp_tf`.
``score_values`` maps ``"<model>/<score>"`` to ``{"id": array, "<ood set>": array, ...}``.

Figures are drawn with :class:`matplotlib.figure.Figure` directly (rendered by
the Agg canvas on ``savefig``), never through ``pyplot``: no global backend is
switched, no figure is left open, and plotting is safe in threads and notebooks.

Example::

    from amp_tf.run import plots
    fpr, tpr = plots.roc_curve(id_scores, ood_scores)
    plots.plot_roc(score_values, "runs/x/roc_digits.png", "digits")
"""
from __future__ import annotations

import math
import os
import re

import numpy as np

from amp_tf.detection.metrics import METRIC_KEYS, METRIC_LABELS, check_scores, ood_metrics

__all__ = ["roc_curve", "plot_densities", "plot_roc", "plot_metric_vs_corruption", "plot_metric_vs_level",
           "CORRUPTION_FAMILIES", "DPI"]

DPI = 110
_BINS = 40
_LOWER_IS_BETTER = ("fpr95",)


# --------------------------------------------------------------------------- #
# Numbers
# --------------------------------------------------------------------------- #
def roc_curve(id_scores, ood_scores):
    """Exact ROC curve with ID as positive (accepted iff ``score >= t``).

    One point per unique score value (ties share one threshold, so a tied
    block is a straight segment), preceded by ``(0, 0)``; the last point is
    ``(1, 1)``.  The trapezoid area under the curve equals the exact AUROC of
    :func:`amp_tf.detection.metrics.ood_metrics`, ties included.

    Args:
        id_scores: 1-D ID scores (higher = ID).
        ood_scores: 1-D OOD scores.

    Returns:
        ``(fpr, tpr)`` float64 arrays: fraction of OOD resp. ID samples with
        ``score >= t`` for descending thresholds ``t``.

    Example::

        fpr, tpr = roc_curve([0.9, 0.8, 0.4], [0.5, 0.1])
        np.trapezoid(tpr, fpr)   # 0.8333... == ood_metrics(...)["auroc"]
    """
    i = np.sort(check_scores(id_scores, "id_scores"))
    o = np.sort(check_scores(ood_scores, "ood_scores"))
    thresholds = np.unique(np.concatenate([i, o]))[::-1]
    tpr = (i.size - np.searchsorted(i, thresholds, side="left")) / i.size
    fpr = (o.size - np.searchsorted(o, thresholds, side="left")) / o.size
    return np.concatenate([[0.0], fpr]), np.concatenate([[0.0], tpr])


def _ood_sets(values):
    """OOD set names of one ``score_values`` entry (every key but ``"id"``)."""
    return [k for k in values if k != "id"]


def _shared_bins(arrays, bins=_BINS):
    """Common bin edges over all arrays, robust to a few extreme outliers."""
    allv = np.concatenate([np.asarray(a, np.float64).ravel() for a in arrays])
    lo, hi = np.percentile(allv, [0.1, 99.9])
    if not hi > lo:
        lo, hi = float(allv.min()), float(allv.max())
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    return np.linspace(lo, hi, bins + 1)


def _axis_label(metric):
    arrow = "↓" if metric in _LOWER_IS_BETTER else "↑"
    return f"{METRIC_LABELS.get(metric, metric)} (%) {arrow}"


# --------------------------------------------------------------------------- #
# Figure helpers
# --------------------------------------------------------------------------- #
def _figure(figsize):
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, dpi=DPI, layout="tight")


def _save(fig, out_path):
    out_path = os.fspath(out_path)
    parent = os.path.dirname(out_path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    fig.savefig(out_path, dpi=DPI, format="png")
    return out_path


# --------------------------------------------------------------------------- #
# Plots
# --------------------------------------------------------------------------- #
def plot_densities(score_values, out_path, score_key, id_label="ID"):
    """Density histograms of ID vs each OOD set for one score (one panel per set).

    All panels share the same bins; each panel is titled with the AUROC of its
    (ID, OOD set) pair from :func:`amp_tf.detection.metrics.ood_metrics`. One legend (ID
    blue, OOD red) sits under the figure's title, outside the panels.

    Args:
        score_values: ``{score_key: {"id": array, ood_set: array, ...}}``.
        out_path: PNG file to write (parent folders are created).
        score_key: which entry of ``score_values`` to plot, e.g. ``"anchored/amp"``.
        id_label: legend label of the ID distribution.

    Returns:
        ``out_path`` as a string.

    Example::

        plot_densities(score_values, "run/densities_anchored_amp.png", "anchored/amp")
    """
    if score_key not in score_values:
        raise KeyError(f"score_key {score_key!r} not in score_values {list(score_values)}")
    values = score_values[score_key]
    if "id" not in values:
        raise ValueError(f"score_values[{score_key!r}] has no 'id' scores")
    sets = _ood_sets(values)
    if not sets:
        raise ValueError(f"score_values[{score_key!r}] has no OOD set besides 'id'")
    id_s = check_scores(values["id"], f"score_values[{score_key!r}]['id']")
    ood = {s: check_scores(values[s], f"score_values[{score_key!r}][{s!r}]") for s in sets}
    edges = _shared_bins([id_s, *ood.values()])
    lo, hi = edges[0], edges[-1]

    ncols = min(len(sets), 4)
    nrows = math.ceil(len(sets) / ncols)
    from matplotlib.figure import Figure

    width, height = 3.3 * ncols + 0.5, 2.5 * nrows + 1.4
    fig = Figure(figsize=(width, height), dpi=DPI)  # fixed margins (inches): tight layout doubles the cost
    fig.subplots_adjust(left=0.8 / width, right=1 - 0.15 / width, bottom=0.55 / height, top=1 - 1.05 / height,
                        wspace=0.28, hspace=0.5)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    # one filled step outline per histogram (ax.hist draws a patch per bar: 10x slower)
    id_density, _ = np.histogram(np.clip(id_s, lo, hi), bins=edges, density=True)
    for ax, name in zip(axes.flat, sets):
        auroc = ood_metrics(id_s, ood[name])["auroc"]
        ood_density, _ = np.histogram(np.clip(ood[name], lo, hi), bins=edges, density=True)
        id_patch = ax.stairs(id_density, edges, fill=True, alpha=0.5, color="tab:blue")
        ood_patch = ax.stairs(ood_density, edges, fill=True, alpha=0.5, color="tab:red")
        ax.set_title(f"{name}: AUROC {100 * auroc:.1f}%", fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(sets):]:
        ax.set_visible(False)
    fig.suptitle(f"Score densities: {score_key}", fontsize=11, y=1 - 0.08 / height, va="top")
    # one legend for every panel, outside the data: under the title
    fig.legend([id_patch, ood_patch], [id_label, "OOD set (the panel's title)"], loc="upper center",
               bbox_to_anchor=(0.5, 1 - 0.4 / height), ncols=2, fontsize=8, frameon=False)
    fig.supxlabel("score (higher = ID)", fontsize=9)
    fig.supylabel("density", fontsize=9)
    return _save(fig, out_path)


#: The ROC curves' colours, in order: matplotlib's ten ``tab10`` colours, then ten darker ones.
ROC_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
               "#bcbd22", "#17becf", "#000000", "#000080", "#800000", "#008080", "#c000c0", "#b8860b",
               "#4b0082", "#a0522d", "#2e8b57", "#808000")


def _roc_styles(keys):
    """``{key: plot kwargs}`` for the ROC curves: every key its own colour, one line style per model.

    Keys are ``"<model>/<score>"``. Colours come from `ROC_COLOURS` (20 saturated
    colours, none light) in key order, so no two of up to 20 curves share a
    colour; the model (``anchored``, ``vanilla``, ...) sets the line style
    (solid, dashed, dash-dot, dotted). Past 20 keys the colours repeat, shifted
    to the next line style. The styles depend on the keys only: the same key
    looks the same in every ROC plot of a run.
    """
    colours = ROC_COLOURS
    models = list(dict.fromkeys(k.split("/", 1)[0] if "/" in k else "" for k in keys))
    dashes = ("-", "--", "-.", ":")
    out = {}
    for i, k in enumerate(keys):
        m = models.index(k.split("/", 1)[0] if "/" in k else "")
        out[k] = dict(color=colours[i % len(colours)], ls=dashes[(m + i // len(colours)) % len(dashes)])
    return out


def plot_roc(score_values, out_path, ood_set):
    """ROC curves (ID positive) of every score key on one OOD set, with AUROC in the legend.

    Each curve has its own colour, each model its own line style (`_roc_styles`:
    the same key looks the same in every ROC plot of a run); the legend sits
    right of the axes, best AUROC first. Score keys without scores for
    ``ood_set`` are skipped.

    Args:
        score_values: ``{score_key: {"id": array, ood_set: array, ...}}``.
        out_path: PNG file to write.
        ood_set: name of the OOD set, e.g. ``"digits"``.

    Returns:
        ``out_path`` as a string.

    Raises:
        ValueError: no score key has both ``"id"`` and ``ood_set`` scores.

    Example::

        plot_roc(score_values, "run/roc_digits.png", "digits")
    """
    keys = [k for k, v in score_values.items() if "id" in v and ood_set in v]
    if not keys:
        raise ValueError(f"no score key in score_values has 'id' and {ood_set!r} scores")
    from matplotlib.figure import Figure

    styles = _roc_styles([k for k, v in score_values.items() if "id" in v])
    label_chars = max(len(k) for k in keys) + len(" (AUROC 100.0%)")
    legend_w = 0.6 + 0.066 * label_chars  # inches at fontsize 8: the line sample, then the text
    rows = len(keys) + 1
    axes_w, axes_h = 3.9, 3.6
    width, height = 0.75 + axes_w + 0.25 + legend_w, max(0.55 + axes_h + 0.45, 0.9 + 0.17 * rows)
    fig = Figure(figsize=(width, height), dpi=DPI)  # fixed margins: a layout engine doubles the cost
    ax = fig.add_axes((0.75 / width, (height - 0.45 - axes_h) / height, axes_w / width, axes_h / height))
    (chance,) = ax.plot([0, 1], [0, 1], ls=(0, (1, 2)), color="grey", lw=1)
    curves = []
    for key in keys:
        fpr, tpr = roc_curve(score_values[key]["id"], score_values[key][ood_set])
        auroc = ood_metrics(score_values[key]["id"], score_values[key][ood_set])["auroc"]
        (line,) = ax.plot(fpr, tpr, lw=1.8, **styles[key])
        curves.append((-auroc, len(curves), line, f"{key} (AUROC {100 * auroc:.1f}%)"))
    curves.sort(key=lambda c: c[:2])
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel(f"FPR: {ood_set} accepted as ID")
    ax.set_ylabel("TPR: ID accepted")
    ax.set_title(f"ROC, ID vs {ood_set}")
    ax.grid(alpha=0.3)
    fig.legend([c[2] for c in curves] + [chance], [c[3] for c in curves] + ["chance (AUROC 50.0%)"],
               loc="upper left", bbox_to_anchor=((0.75 + axes_w + 0.2) / width, 1 - 0.4 / height),
               fontsize=8, title="model/score, best first", title_fontsize=8, frameon=False,
               handlelength=3.0)
    return _save(fig, out_path)


def _levels(names, prefix):
    """``{level: set_name}`` for names ``prefix + <integer>``, sorted by level."""
    pat = re.compile(re.escape(prefix) + r"(\d+)$")
    found = {int(m.group(1)): n for n in names if (m := pat.match(n))}
    return dict(sorted(found.items()))


def _level_lines(results, prefix, metric):
    """``{score_key: (levels, metric values in %)}`` for the sets named ``prefix + N``."""
    lines = {}
    for key, per_set in results.get("scores", {}).items():
        levels = _levels(per_set, prefix)
        if levels:
            lines[key] = (list(levels), [100 * float(per_set[n][metric]) for n in levels.values()])
    return lines


def _line_styles(keys):
    """``{key: plot kwargs}``: one colour per score name, one line style and marker per model.

    Keys are ``"<model>/<score>"``; the same score of two models shares its colour.
    """
    from matplotlib import colormaps

    split = [k.split("/", 1) if "/" in k else ["", k] for k in keys]
    models = list(dict.fromkeys(m for m, _ in split))
    scores = list(dict.fromkeys(sc for _, sc in split))
    colours = colormaps["tab10" if len(scores) <= 10 else "tab20"].colors
    dashes, markers = ("-", "--", ":", "-."), ("o", "s", "^", "D")
    return {k: dict(color=colours[scores.index(sc) % len(colours)],
                    ls=dashes[models.index(m) % len(dashes)], marker=markers[models.index(m) % len(markers)])
            for k, (m, sc) in zip(keys, split)}


def _plot_level_panels(panels, out_path, metric, xlabel):
    """One panel per ``{title: lines}`` entry, shared y axis, the legend outside on the right."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    keys = list(dict.fromkeys(k for lines in panels.values() for k in lines))
    styles = _line_styles(keys)
    ncols = 2 if len(panels) > 1 else 1
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(3.4 * ncols + 2.4, 2.8 * nrows + 0.5 * (nrows > 1)), dpi=DPI, layout="constrained")
    axes = fig.subplots(nrows, ncols, sharey=True, squeeze=False)
    chance = metric == "auroc"
    for ax, (title, lines) in zip(axes.flat, panels.items()):
        if chance:
            ax.axhline(50.0, color="grey", lw=1, ls=(0, (1, 2)))
        for key in keys:
            if key in lines:
                ax.plot(*lines[key], lw=1.5, ms=4, **styles[key])
        ax.set_xticks(sorted({x for xs, _ in lines.values() for x in xs}))
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel, fontsize=9)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel(_axis_label(metric))
    handles = [Line2D([], [], lw=1.5, ms=4, **styles[k]) for k in keys]
    labels = list(keys)
    if chance:
        handles.append(Line2D([], [], color="grey", lw=1, ls=(0, (1, 2))))
        labels.append("chance (50%)")
    fig.legend(handles, labels, loc="outside right upper", fontsize=8, title="model/score",
               title_fontsize=8, frameon=False)
    title = f"{METRIC_LABELS[metric]} vs corruption level"
    if len(panels) > 1:
        fig.suptitle(f"{title} (ID test images, corrupted)", fontsize=10)
    else:
        axes[0, 0].set_title(title, fontsize=10)
    return _save(fig, out_path)


#: The corruption families of the covariate-shift sets ``fmnist_<family>_<N>`` (panel titles).
CORRUPTION_FAMILIES = {"blur": "Gaussian blur", "jpeg": "JPEG", "contrast": "contrast", "pixelate": "pixelate"}


def plot_metric_vs_corruption(results, out_path, families=tuple(CORRUPTION_FAMILIES), prefix="fmnist_",
                              metric="auroc"):
    """Metric vs corruption level, one panel per corruption family, one line per score key.

    Mirrors the AMP paper's Fig. 5 (AUROC vs corruption severity) for every
    family the results have: sets named ``prefix + family + "_" + N``. Each score
    name keeps one colour in every panel; each model has its own line style; the
    legend sits outside the panels.

    Args:
        results: results dict with ``"scores": {score_key: {ood_set: metrics}}``.
        out_path: PNG file to write.
        families: corruption family names, in panel order.
        prefix: set-name prefix before the family name.
        metric: one of :data:`amp_tf.detection.metrics.METRIC_KEYS`.

    Returns:
        ``out_path`` as a string, or ``None`` (nothing written) when no family has a set.

    Example::

        plot_metric_vs_corruption(results, "run/auroc_vs_corruption.png")
    """
    if metric not in METRIC_KEYS:
        raise ValueError(f"metric must be one of {METRIC_KEYS}, got {metric!r}")
    panels = {}
    for fam in families:
        lines = _level_lines(results, f"{prefix}{fam}_", metric)
        if lines:
            panels[CORRUPTION_FAMILIES.get(fam, fam)] = lines
    if not panels:
        return None
    return _plot_level_panels(panels, out_path, metric, "corruption level")


def plot_metric_vs_level(results, out_path, prefix="fmnist_blur_", metric="auroc"):
    """Metric vs corruption level for OOD sets named ``prefix + N``: one panel, one line per score key.

    Args:
        results: results dict with ``"scores": {score_key: {ood_set: metrics}}``.
        out_path: PNG file to write.
        prefix: set-name prefix; the rest of the name must be an integer level.
        metric: one of :data:`amp_tf.detection.metrics.METRIC_KEYS`.

    Returns:
        ``out_path`` as a string, or ``None`` (nothing written) when no set
        matches ``prefix``.

    Example::

        plot_metric_vs_level(results, "run/auroc_vs_blur.png")
    """
    if metric not in METRIC_KEYS:
        raise ValueError(f"metric must be one of {METRIC_KEYS}, got {metric!r}")
    lines = _level_lines(results, prefix, metric)
    if not lines:
        return None
    return _plot_level_panels({prefix + "N": lines}, out_path, metric, f"corruption level N ({prefix}N)")
