"""Run reports: summary tables (markdown / CSV / JSON) and PNG plots in a run folder.

Trainers and the eval CLI build one plain ``results`` dict and call
:func:`write_report`::

    results = {
        "title": "Fashion-MNIST (ID) vs offline OOD suite",
        "id_set": "fashion_mnist",
        "positive": "id",            # metric convention, stated in every report
        "seed": 0, "wall_time_s": 512.3,
        "versions": {"amp_tf": "0.1.0", "tensorflow": "2.21.0"},
        "config": {...},             # free-form run settings
        "models": {"anchored": {"id_accuracy": 0.912, "params": 123456, "train_time_s": 200.0}},
        "scores": {"anchored/amp": {"digits": ood_metrics(s_id, s_digits), ...}, ...},
    }
    score_values = {"anchored/amp": {"id": s_id, "digits": s_digits, ...}}  # raw, higher = ID
    paths = write_report("runs/fmnist", results, score_values)

Metrics and the per-set mean come from :mod:`amp_tf.detection.metrics`; plots from
:mod:`amp_tf.run.plots`.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import re

import numpy as np

from amp_tf.detection.metrics import METRIC_KEYS, METRIC_LABELS
from amp_tf.run.summary import (  # noqa: F401  (importable from here as before)
    LOWER_IS_BETTER, MEAN, best_model as _best, convention_line, summarize,
)
from amp_tf.run.plots import plot_densities, plot_metric_vs_corruption, plot_metric_vs_level, plot_roc, roc_curve

__all__ = [
    "summarize",
    "render",
    "write_report",
    "convention_line",
    "roc_curve",
    "plot_densities",
    "plot_roc",
    "plot_metric_vs_corruption",
    "plot_metric_vs_level",
]

_FORMATS = ("md", "csv", "json")

# --------------------------------------------------------------------------- #
# Rendering helpers
# --------------------------------------------------------------------------- #
def _ood_set_names(scores):
    """All OOD set names over all score keys, in first-seen order."""
    names = {}
    for per_set in scores.values():
        names.update(dict.fromkeys(per_set))
    return list(names)


def _cell(text):
    return str(text).replace("|", "\\|")


def _md_table(header, rows, align):
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |"]
    lines.append("|" + "|".join(align) + "|")
    lines += ["| " + " | ".join(_cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _fmt(value, percent):
    return f"{100 * value:.2f}" if percent else f"{value:.4f}"


def _metric_header():
    return [f"{METRIC_LABELS[m]} {'↓' if m in LOWER_IS_BETTER else '↑'}" for m in METRIC_KEYS]


def _score_table(rows_by_key, percent):
    """Markdown table, rows = score keys, columns = metrics, best value per column bold.

    ``rows_by_key``: ``{score_key: {metric: value} or None}`` (None = not evaluated).
    """
    present = {k: v for k, v in rows_by_key.items() if v is not None}
    best = {m: rows_by_key[_best(present, m)][m] for m in METRIC_KEYS} if present else {}
    rows = []
    for key, vals in rows_by_key.items():
        if vals is None:
            rows.append([f"`{key}`"] + ["—"] * len(METRIC_KEYS))
            continue
        cells = [_fmt(vals[m], percent) for m in METRIC_KEYS]
        cells = [f"**{c}**" if vals[m] == best[m] else c for c, m in zip(cells, METRIC_KEYS)]
        rows.append([f"`{key}`"] + cells)
    return _md_table(["Score"] + _metric_header(), rows, [":---"] + ["---:"] * len(METRIC_KEYS))


def _models_table(models, percent):
    def get(d, k, f):
        v = d.get(k)
        return "—" if v is None else f(v)

    rows = [
        [
            f"`{name}`",
            get(m, "id_accuracy", lambda v: _fmt(float(v), percent)),
            get(m, "params", lambda v: f"{int(v):,}"),
            get(m, "train_time_s", lambda v: f"{float(v):.1f}"),
        ]
        for name, m in models.items()
    ]
    acc = "ID accuracy (%)" if percent else "ID accuracy"
    return _md_table(["Model", acc, "Params", "Train time (s)"], rows, [":---", "---:", "---:", "---:"])


def _footer(s):
    parts = []
    if s.get("seed") is not None:
        parts.append(f"seed {s['seed']}")
    if s.get("wall_time_s") is not None:
        t = float(s["wall_time_s"])
        parts.append(f"job time {t:.1f} s ({t / 60:.1f} min: training, detector selection, scoring, saving and "
                     "export; not data loading or the report)")
    if s.get("cpu_time_s") is not None:
        parts.append(f"CPU time {float(s['cpu_time_s']):.0f} s")
    if s.get("steal_share") is not None:
        parts.append(f"hypervisor steal {100 * float(s['steal_share']):.0f} % of the machine's CPU")
    if s.get("timings_s"):
        parts.append("phases: " + ", ".join(f"{k} {float(v):.0f} s" for k, v in s["timings_s"].items()))
    versions = s.get("versions") or {}
    if versions:
        parts.append("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    return "Run: " + " · ".join(parts) if parts else ""


def _groups_table(groups, percent, shipped=None):
    """Rows = scores; FPR95 and AUROC per group, then overall; the best value of every column in bold.

    The shipped score's row is marked; with `shipped` (``results["shipped"]``) a last column gives each
    anchored candidate's validation FPR95, the figure the selection compared.
    """
    names = []
    for g in groups.values():
        names += [n for n in g if n not in names and n != "overall"]
    names.append("overall")
    val = (shipped or {}).get("family_val_fpr95") or {}
    model = (shipped or {}).get("model")
    cols = [(n, "fpr95") for n in names] + [(n, "auroc") for n in names]
    header = ["Score"] + [f"{n} {'FPR95 ↓' if m == 'fpr95' else 'AUROC ↑'}" for n, m in cols]
    if val:
        header.append("validation FPR95 ↓ (chose the shipped score)")
    best = {}
    for n, m in cols:
        vals = [g.get(n, {}).get(m) for g in groups.values()]
        vals = [v for v in vals if v is not None]
        if vals:
            best[(n, m)] = min(vals) if m in LOWER_IS_BETTER else max(vals)
    rows = []
    for key, g in groups.items():
        mark = " (shipped)" if shipped and key == shipped.get("key") else ""
        cells = [f"`{key}`{mark}" if not mark else f"**`{key}`{mark}**"]
        for n, m in cols:
            v = g.get(n, {}).get(m)
            text = "–" if v is None else _fmt(v, percent)
            cells.append(f"**{text}**" if v is not None and v == best.get((n, m)) else text)
        if val:
            short = key.split("/", 1)[1] if key.startswith(f"{model}/") else None
            cells.append(_fmt(val[short], percent) if short in val else "–")
        rows.append(cells)
    return _md_table(header, rows, [":---"] + ["---:"] * (len(header) - 1))


def _shipped_section(s, percent):
    """The report's first answer: which score is shipped, chosen how, its threshold, where it is."""
    sh = s.get("shipped")
    if not sh:
        return ["## Shipped detector", "", "AMP alone (`amp_score`): no detector was selected for this run "
                "(no anchored model with in-memory ID data).", ""]
    pct = (lambda v: f"{100 * v:.2f} %") if percent else (lambda v: f"{v:.4f}")
    key = sh.get("key")
    g = (s.get("groups") or {}).get(key, {}).get("overall")
    test = (f" On this report's test sets its overall FPR95 is {pct(g['fpr95'])} and AUROC {pct(g['auroc'])} "
            "(the table below compares it with every baseline).") if g else ""
    return ["## Shipped detector", "",
            f"`serving/` and `model.tflite` decide `is_ood` by **`{sh['label']}`** (row `{key}`): "
            f"`is_ood = ood_score < {sh['threshold']:.6g}`, the threshold letting {100 * sh['tpr']:.0f} % of the "
            f"{s.get('data', {}).get('val', 'ID')} ID validation images pass. It was chosen among "
            f"{len(sh.get('candidates', []))} candidates by the lowest mean FPR95 on validation OOD sets made from "
            f"ID validation images (validation FPR95 {pct(sh['val_fpr95'])}, AUROC {pct(sh['val_auroc'])}); no "
            f"test image took part.{test} Its fitted state is `detector.json` / `detector.npz` "
            "(`amp_tf.detection.detectors.load_detector(run_folder, model)`).", ""]


def _render_md(s, percent):
    scores, sets = s["scores"], _ood_set_names(s["scores"])
    out = [f"# {s.get('title') or 'OOD detection report'}", ""]
    if s.get("id_set"):
        out += [f"ID set: `{s['id_set']}` · OOD sets: {', '.join(f'`{n}`' for n in sets)}", ""]
    out += [f"**Metric convention:** {convention_line(s['positive'])} "
            "AUROC, AUPR-in (ID positive), AUPR-out (OOD positive) and DetAcc do not depend "
            "on the convention. Scores: higher = ID.", ""]
    out += [("Values in %. " if percent else "Values are fractions. ")
            + "↓ lower is better, ↑ higher is better; the best value of every column in **bold**. "
            "Terms (FPR95, AUROC, near / far / covariate, twin, MSP, ODIN, ReAct, KNN, Mahalanobis, Gram, "
            "the AMP variants such as `amp[sum,exp]`, `neg_tau`, DetAcc): docs/glossary.md.", ""]
    out += _shipped_section(s, percent)
    if s.get("groups"):
        out += ["## OOD groups (mean per group; overall = mean of the group means)", "",
                _groups_table(s["groups"], percent, s.get("shipped")), ""]
    if s.get("plots"):
        out += ["## Plots", "", " · ".join(f"[{p}]({p})" for p in s["plots"]), ""]
    if s.get("models"):
        out += ["## Models", "", _models_table(s["models"], percent)]
    out += ["## Summary (mean over OOD sets)", ""]
    if any(set(per_set) != set(sets) for per_set in scores.values()):
        out += ["Note: not every score was evaluated on every OOD set; means are over each "
                "score's own sets.", ""]
    out += [_score_table(s["summary"], percent)]
    out += ["## Per OOD set", ""]
    for name in sets:
        rows = {k: per_set.get(name) for k, per_set in scores.items()}
        out += [f"### {name}", "", _score_table(rows, percent)]
    if s.get("config"):
        out += ["## Config", "", "```json", json.dumps(_jsonable(s["config"]), indent=2), "```", ""]
    footer = _footer(s)
    if footer:
        out += ["---", "", footer, ""]
    return "\n".join(out)


def _render_csv(s, percent):
    scale = 100.0 if percent else 1.0
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["score", "ood_set", "metric", "value"])
    for key, per_set in s["scores"].items():
        rows = [(n, m) for n, m in per_set.items()] + [(MEAN, s["summary"][key])]
        for name, m in rows:
            for metric in METRIC_KEYS:
                w.writerow([key, name, metric, round(float(m[metric]) * scale, 6)])
    return buf.getvalue()


def _jsonable(obj):
    """Plain JSON types; floats rounded to 6 digits, NaN/Inf -> None, unknown -> str."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in (obj.tolist() if isinstance(obj, np.ndarray) else obj)]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return round(obj, 6) if math.isfinite(obj) else None
    return str(obj)


# --------------------------------------------------------------------------- #
# Public rendering / writing
# --------------------------------------------------------------------------- #
def render(results, fmt="md", percent=True):
    """Render the (summarized) results as markdown, long CSV or JSON text.

    Args:
        results: results dict (see the module docstring); summarized here.
        fmt: ``"md"``: title, metric convention, models table, summary table
            (rows = score keys, mean over OOD sets, best per column bold),
            one table per OOD set, config and a footer with seed, wall time
            and versions.  ``"csv"``: long format ``score,ood_set,metric,value``
            including the ``mean`` rows.  ``"json"``: the summarized dict
            (floats rounded to 6 digits), always fractions.
        percent: show metrics (and ID accuracy) in percent (md and csv).

    Returns:
        The rendered text.

    Example::

        print(render(results))             # markdown
        render(results, "csv", percent=False)
    """
    if fmt not in _FORMATS:
        raise ValueError(f"fmt must be one of {_FORMATS}, got {fmt!r}")
    s = summarize(results)
    if fmt == "md":
        return _render_md(s, percent)
    if fmt == "csv":
        return _render_csv(s, percent)
    return json.dumps(_jsonable(s), indent=2) + "\n"


def _safe_name(name):
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(name))


def _write_text(path, text):
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def _plot_names(s, score_values):
    """The PNG files `write_report` draws for these results (linked from report.md)."""
    names = []
    if score_values:
        names += [f"densities_{_safe_name(k)}.png" for k, v in score_values.items() if "id" in v and len(v) > 1]
        sets = dict.fromkeys(n for v in score_values.values() if "id" in v for n in v if n != "id")
        names += [f"roc_{_safe_name(n)}.png" for n in sets]
    if any(re.match(r"fmnist_[a-z]+_\d", n) for n in _ood_set_names(s["scores"])):
        names.append("auroc_vs_corruption.png")
    return names


def write_report(out_dir, results, score_values=None, formats=("json", "md"), plots=True):
    """Write ``report.<fmt>`` files and PNG plots into ``out_dir`` (created).

    Plots (``plots=True``): ``densities_<score>.png`` per score key and
    ``roc_<set>.png`` per OOD set (both need ``score_values``; ``/`` and other
    odd characters in names become ``_``), and ``auroc_vs_corruption.png`` (one
    panel per corruption family) when the results contain ``fmnist_<family>_<N>``
    sets (blur, jpeg, contrast, pixelate).

    Args:
        out_dir: run folder.
        results: results dict (see the module docstring).
        score_values: optional ``{score_key: {"id": array, ood_set: array}}`` raw
            scores (higher = ID) for the density and ROC plots.
        formats: any of ``"json"``, ``"md"``, ``"csv"``.
        plots: whether to draw PNGs.

    Returns:
        ``{file name: path}`` of every file written, e.g.
        ``{"report.json": ".../report.json", "roc_digits.png": ...}``.

    Example::

        paths = write_report("runs/fmnist", results, score_values, formats=("json", "md", "csv"))
    """
    bad = [f for f in formats if f not in _FORMATS]
    if bad:
        raise ValueError(f"unknown format(s) {bad}; choose from {_FORMATS}")
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    s = summarize(results)
    if plots:
        s["plots"] = _plot_names(s, score_values)
    written = {}

    def put(fname, path):
        if path is not None:
            written[fname] = path

    for fmt in dict.fromkeys(formats):
        fname = f"report.{fmt}"
        put(fname, _write_text(os.path.join(out_dir, fname), render(s, fmt)))
    if not plots:
        return written
    if score_values:
        for key, values in score_values.items():
            if "id" in values and len(values) > 1:
                fname = f"densities_{_safe_name(key)}.png"
                put(fname, plot_densities(score_values, os.path.join(out_dir, fname), key))
        sets = dict.fromkeys(n for v in score_values.values() if "id" in v for n in v if n != "id")
        for name in sets:
            fname = f"roc_{_safe_name(name)}.png"
            put(fname, plot_roc(score_values, os.path.join(out_dir, fname), name))
    fname = "auroc_vs_corruption.png"
    put(fname, plot_metric_vs_corruption(s, os.path.join(out_dir, fname)))
    return written
