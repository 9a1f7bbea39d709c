"""Aggregation over seeds and the markdown summary of `benchmarks.quality.ood`."""

from __future__ import annotations

from benchmarks.quality.ood_runs import LABELS, METRICS, VANILLA_LOGIT_SCORES, amp_variants


def aggregate(per_seed_rows):
    """Mean and std (ddof=1; 0 for one seed) over seeds of every metric, per set and for the set mean."""
    import numpy as np

    from amp_tf.detection.metrics import metrics_table

    keys = list(dict.fromkeys(k for rows in per_seed_rows for k in rows))
    out = {}
    for key in keys:
        tables = [metrics_table(rows[key]).to_dict() for rows in per_seed_rows if key in rows]
        entry = {"n_seeds": len(tables), "mean": {}, "std": {}}
        for set_name in tables[0]:
            for stat, fn in (("mean", np.mean), ("std", lambda a: np.std(a, ddof=1) if len(a) > 1 else 0.0)):
                entry[stat][set_name] = {m: float(fn([t[set_name][m] for t in tables])) for m in METRICS}
        out[key] = entry
    return out


def aggregate_groups(per_seed_rows):
    """Per score: mean, std (ddof=1) and 95 % t-interval half-width over seeds of each group's mean
    metric and of `overall` (the mean of the group means)."""
    import numpy as np
    from scipy import stats

    from amp_tf.data.groups import group_summary

    out = {}
    for key in dict.fromkeys(k for rows in per_seed_rows for k in rows):
        per = [group_summary({s: {m: v for m, v in mm.items() if m in METRICS} for s, mm in rows[key].items()},
                             ignore_unknown=True) for rows in per_seed_rows if key in rows]
        entry = {"n_seeds": len(per)}
        for group in per[0]:
            for m in ("fpr95", "auroc"):
                v = np.array([g[group][m] for g in per if group in g])
                sd = float(np.std(v, ddof=1)) if len(v) > 1 else 0.0
                half = float(stats.t.ppf(0.975, len(v) - 1) * sd / np.sqrt(len(v))) if len(v) > 1 else 0.0
                entry.setdefault(group, {})[m] = {"mean": float(v.mean()), "std": sd, "ci95": half}
        out[key] = entry
    return out


def select_variant(per_seed_info):
    """The AMP variant with the lowest mean validation FPR95 over seeds (validation data only)."""
    import numpy as np

    vals = [i["anchored"]["val_fpr95"] for i in per_seed_info if "val_fpr95" in i.get("anchored", {})]
    if not vals:
        return None
    means = {v: float(np.mean([x[v] for x in vals])) for v in amp_variants()}
    return {"selected": min(means, key=means.get), "val_fpr95_mean": means}


def select_shipped(per_seed_info):
    """The shipped score: the candidate with the lowest mean validation FPR95 over seeds among EVERY
    anchored candidate a seed measured on validation (e.g. every candidate of
    `amp_tf.detection.detectors.select_detector`), as that function chooses on one seed; validation data
    only. Ties are broken as that function does: the higher validation AUROC (where every seed recorded
    `val_auroc`), then the candidates' order. `per_seed`: each seed's best; `library_per_seed`: what
    `select_detector` itself selected on each seed, where a seed recorded it (`selected`)."""
    import numpy as np

    info = [i["anchored"] for i in per_seed_info if "val_fpr95" in i.get("anchored", {})]
    vals = [i["val_fpr95"] for i in info]
    if not vals:
        return None
    aurocs = [i["val_auroc"] if all("val_auroc" in j for j in info) else {} for i in info]
    names = [n for n in vals[0] if all(n in v for v in vals)]
    means = {n: float(np.mean([v[n] for v in vals])) for n in names}
    auroc = {n: float(np.mean([a.get(n, 0.0) for a in aurocs])) for n in names}
    per_seed = [min(v, key=lambda n, v=v, a=a: (v[n], -a.get(n, 0.0))) for v, a in zip(vals, aurocs)]
    out = {"selected": min(means, key=lambda n: (means[n], -auroc[n])), "val_fpr95_mean": means,
           "per_seed": per_seed}
    if all("selected" in i for i in info):
        out["library_per_seed"] = [i["selected"] for i in info]
    return out


def shipped_row(res):
    """The row of the validation-selected (shipped) score in a results JSON: `selection.shipped`, else the
    selected AMP variant (runs that measured AMP variants only), else `anchored/amp`."""
    sel = res.get("selection") or {}
    name = ((sel.get("shipped") or {}).get("selected") or (sel.get("variant") or {}).get("selected") or "amp")
    return f"anchored/{name}"


def aggregate_models(per_seed_info):
    import numpy as np

    out = {}
    for name in dict.fromkeys(k for info in per_seed_info for k in info):
        accs = [info[name]["id_accuracy"] for info in per_seed_info if name in info]
        out[name] = {"id_accuracy": accs, "id_accuracy_mean": float(np.mean(accs)),
                     "id_accuracy_std": float(np.std(accs, ddof=1)) if len(accs) > 1 else 0.0}
    return out


def goal_check(agg, models):
    """The issue's goal: AMP mean FPR95 >= 30 % below the best baseline's, ID acc within 1 point."""
    base = {k: v["mean"]["mean"]["fpr95"] for k, v in agg.items() if not k.startswith("anchored/")}
    if not base:
        return None
    logit = {k: v for k, v in base.items() if k.split("/", 1)[1] in VANILLA_LOGIT_SCORES
             and k.startswith("vanilla/")}
    best_all = min(base, key=base.get)
    best_logit = min(logit, key=logit.get) if logit else None
    gap = None
    if "anchored" in models and "vanilla" in models:
        gap = models["vanilla"]["id_accuracy_mean"] - models["anchored"]["id_accuracy_mean"]
    out = {"best_baseline": best_all, "best_baseline_fpr95": base[best_all],
           "best_vanilla_logit_score": best_logit,
           "best_vanilla_logit_score_fpr95": logit.get(best_logit),
           "id_accuracy_gap_points": None if gap is None else 100 * gap,
           "id_accuracy_within_1_point": None if gap is None else bool(gap <= 0.01), "amp": {}}
    for key, v in agg.items():
        if not key.startswith("anchored/"):
            continue
        f = v["mean"]["mean"]["fpr95"]
        red_all = 1.0 - f / base[best_all] if base[best_all] > 0 else None
        red_logit = 1.0 - f / logit[best_logit] if best_logit and logit[best_logit] > 0 else None
        out["amp"][key] = {"fpr95": f, "reduction_vs_best_baseline": red_all,
                           "reduction_vs_best_vanilla_logit_score": red_logit,
                           "fpr95_goal_met": red_all is not None and red_all >= 0.30}
    return out


# --------------------------------------------------------------------------- markdown
def _pm(entry, set_name, metric, digits=1):
    if set_name not in entry["mean"]:  # e.g. the ensemble has no near-OOD split models
        return "–"
    m, s = entry["mean"][set_name][metric], entry["std"][set_name][metric]
    if entry["n_seeds"] > 1:
        return f"{100 * m:.{digits}f} ± {100 * s:.{digits}f}"
    return f"{100 * m:.{digits}f}"


def _acc(models, model):
    m = models.get(model)
    if not m:
        return "–"
    if len(m["id_accuracy"]) > 1:
        return f"{100 * m['id_accuracy_mean']:.2f} ± {100 * m['id_accuracy_std']:.2f}"
    return f"{100 * m['id_accuracy_mean']:.2f}"


def _row_order(keys):
    groups = ("anchored/amp", "anchored/", "vanilla/", "dropout/", "ensemble/")
    return sorted(keys, key=lambda k: (next(i for i, g in enumerate(groups) if k.startswith(g)), keys.index(k)))


def render_groups(res):
    """The headline table: per group mean ± std over seeds, overall with its 95 % interval."""
    groups, sel = res.get("groups") or {}, res.get("selection") or {}
    if not groups:
        return []
    chosen = (sel.get("variant") or {}).get("selected")
    names = [g for g in ("near", "far", "covariate") if any(g in v for v in groups.values())]
    spread = (res.get("anchor_draws") or {}).get("summary", {})
    L = ["## Groups (FPR95 ↓ / AUROC ↑ in %, mean ± std over seeds; overall = mean of the group means, "
         "± its 95 % t-interval; anchor spread = std of overall FPR95 over anchor draws, one model)", ""]
    if sel.get("training"):
        L += [f"Training setting selected on validation: `{sel['training']['selected']}`.  "]
    shipped = (sel.get("shipped") or {}).get("selected")
    if chosen:
        L += [f"AMP variant selected on validation (lowest validation FPR95): `{chosen}`; it is the "
              "`AMP (selected)` row.", ""]
    if shipped:
        L += [f"Shipped score, selected on validation among every anchored candidate: `{shipped}` (the "
              "`shipped` row).", ""]
    L += ["| model/score | " + " | ".join(f"{g} FPR95" for g in names) + " | overall FPR95 | overall AUROC "
          "| anchor spread |", "|:--|" + "--:|" * (len(names) + 3)]

    def pm(e, m):
        return "–" if e is None else f"{100 * e[m]['mean']:.1f} ± {100 * e[m]['std']:.1f}"

    for k in _row_order(list(groups)):
        g = groups[k]
        label = f"**{k} = AMP (selected)**" if chosen and k == f"anchored/{chosen}" else k
        label = f"**{k} (shipped)**" if shipped and k == f"anchored/{shipped}" else label
        ov = g.get("overall")
        ci = f"{100 * ov['fpr95']['mean']:.1f} ± {100 * ov['fpr95']['ci95']:.1f}" if ov else "–"
        sp = spread.get(k.split("/", 1)[1]) if k.startswith("anchored/") else None
        sp_text = "–" if sp is None else f"{100 * sp['fpr95_std']:.1f}"
        L.append(f"| {label} | " + " | ".join(pm(g.get(n), "fpr95") for n in names) + f" | {ci} | "
                 f"{pm(ov, 'auroc')} | {sp_text} |")
    return L + [""]


def render_md(res):
    """The markdown summary: header, group table, pooled table, goal, per-set tables, Table 8, anchor draws, timing."""
    agg = res["rows"]
    keys = _row_order(list(agg))
    L = _md_header(res) + render_groups(res) + _md_pooled(res, keys) + _md_goal(res.get("goal"))
    for m in METRICS:
        sets = res["ood_sets"]
        L += ["", f"## {LABELS[m]} per OOD set", "",
              "| model/score | " + " | ".join(sets) + " | mean |", "|:--|" + "--:|" * (len(sets) + 1)]
        for k in keys:
            L.append(f"| {k} | " + " | ".join(_pm(agg[k], x, m) for x in sets + ["mean"]) + " |")
    L += _md_table8(res.get("table8"), res["settings"]) + _md_anchor_draws(res.get("anchor_draws"), res["settings"])
    L += ["", "## Timing (s)", "", "| phase | seconds |", "|:--|--:|"]
    for k, v in res["timing"].items():
        L.append(f"| {k} | {v:.0f} |")
    return "\n".join(L) + "\n"


def _md_header(res):
    from amp_tf.run.report import convention_line

    s = res["settings"]
    return [f"# OOD quality: {res['id_set']} (ID) vs {', '.join(res['ood_sets'])}", "",
            f"Command: `{res['command']}`  ", f"Date: {res['date']}; wall time {res['wall_time_s'] / 60:.1f} min; "
            f"machine: {res['machine'].get('cpu_count')} CPUs ({res['machine'].get('cpu_model', '?')}); "
            f"TensorFlow {res['versions']['tensorflow']}, Keras {res['versions']['keras']}  ",
            f"Training: {s['arch']} width {s['width']}, {s['epochs']} epochs, batch {s['batch_size']}, "
            f"lr {s['lr']}, consistency `{s['consistency_effective']}` every {s['consistency_every']} steps; "
            f"{s['train_images']} training images, {s['val_images']} validation; seeds {s['seeds']}; "
            f"K = {s['num_anchors']} anchors  ",
            f"Scored: {s['test_images']} ID test images, OOD " +
            ", ".join(f"{k} {v}" for k, v in s['ood_images'].items()) + "  ",
            convention_line(res["positive"]) + " Metrics in %, mean over the OOD sets, then mean ± std "
            "(ddof = 1) over the seeds; the ensemble is one model (no std). Bold: best per column.", "",
            ]


def _md_pooled(res, keys):
    agg, models = res["rows"], res["models"]
    best = {m: (min if m == "fpr95" else max)(keys, key=lambda k: agg[k]["mean"]["mean"][m]) for m in METRICS}
    L = ["## Mean over the sets (all groups pooled; for reference)", "",
         "| model | score | ID acc | " + " | ".join(LABELS[m] for m in METRICS) + " |",
         "|:--|:--|--:|" + "--:|" * len(METRICS)]
    for k in keys:
        model, score = k.split("/", 1)
        cells = []
        for m in METRICS:
            c = _pm(agg[k], "mean", m)
            cells.append(f"**{c}**" if k == best[m] else c)
        L.append(f"| {model} | {score} | {_acc(models, model)} | " + " | ".join(cells) + " |")
    return L


def _md_goal(g):
    if not g:
        return []
    L = ["", "## Goal: AMP mean FPR95 ≥ 30 % below the best baseline, ID accuracy within 1 point", "",
         f"Best baseline: `{g['best_baseline']}` {100 * g['best_baseline_fpr95']:.1f}; best logit score "
         f"of the vanilla twin: `{g['best_vanilla_logit_score']}` "
         f"{100 * (g['best_vanilla_logit_score_fpr95'] or 0):.1f}. "
         f"ID accuracy gap (vanilla − anchored): {g['id_accuracy_gap_points']:.2f} points "
         f"({'within' if g['id_accuracy_within_1_point'] else 'NOT within'} 1 point).", "",
         "| AMP row | mean FPR95 | reduction vs best baseline | vs best vanilla logit score | FPR95 goal |",
         "|:--|--:|--:|--:|:--|"]
    for k in _row_order(list(g["amp"])):
        v = g["amp"][k]
        r1, r2 = v["reduction_vs_best_baseline"], v["reduction_vs_best_vanilla_logit_score"]
        L.append(f"| {k} | {100 * v['fpr95']:.1f} | {100 * r1:+.1f} % | "
                 f"{'–' if r2 is None else f'{100 * r2:+.1f} %'} | {'met' if v['fpr95_goal_met'] else 'missed'} |")
    return L


def _md_table8(t8, s):
    if not t8:
        return []
    ks = [str(k) for k in s["table8_k"]]
    L = ["", f"## Table 8 analogue (seed {t8['seed']}, FPR95 % mean over the OOD sets; "
             f"{t8['images_per_set']['id']} ID test images per K)", ""]
    for score in ("amp", "amp[mean,divide]", "amp[sum,divide]", "neg_tau"):
        L += [f"`{score}`:", "", "| T \\ K | " + " | ".join(ks) + " | ID acc (K=" + ks[-1] + ") |",
              "|:--|" + "--:|" * (len(ks) + 1)]
        for tr, v in t8["transforms"].items():
            L.append(f"| {tr} | " + " | ".join(f"{100 * v['K'][k]['mean'][score]['fpr95']:.1f}" for k in ks)
                     + f" | {100 * v['K'][ks[-1]]['id_accuracy']:.2f} |")
        L.append("")
    return L


def _md_anchor_draws(ad, s):
    if not ad:
        return []
    L = ["", f"## Anchor draws (seed {s['seeds'][0]}'s anchored model, K = {ad['K']}, "
             f"{len(ad['draws'])} anchor sets; FPR95 % mean over the OOD sets)", "",
         "| score | mean ± std | min | max | per draw |", "|:--|--:|--:|--:|:--|"]
    for score, v in ad["summary"].items():
        per = ", ".join(f"{100 * x['fpr95'][score]:.1f}" for x in ad["draws"])
        L.append(f"| {score} | {100 * v['fpr95_mean']:.1f} ± {100 * v['fpr95_std']:.1f} | "
                 f"{100 * v['fpr95_min']:.1f} | {100 * v['fpr95_max']:.1f} | {per} |")
    L += ["", "tau (mean reduction) and 1 + exp(tau), quantiles 5 / 50 / 95 %, anchor draw 0:", "",
          "| set | tau | 1 + exp(tau) |", "|:--|--:|--:|"]
    for name, v in ad["draws"][0]["tau"].items():
        L.append(f"| {name} | " + " / ".join(f"{x:.3f}" for x in v["tau_q05_q50_q95"]) + " | "
                 + " / ".join(f"{x:.3f}" for x in v["one_plus_exp_tau_q05_q50_q95"]) + " |")
    return L
