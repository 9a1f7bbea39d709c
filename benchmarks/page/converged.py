"""The blocks of BENCHMARKS.md section 1 (the converged models, 3 seeds): setup, headline, verdict,
selection, groups, accuracy. Light on purpose: JSON only, no TensorFlow.
"""
from __future__ import annotations

import json
from pathlib import Path
from statistics import mean

from benchmarks.page import verdicts
from benchmarks.page.fmt import (
    ALL, FPR_HEAD, GROUPS, LABEL, RESULTS, VANILLA_BASELINES, load, p as _p, signed as _signed, pm as _pm,
    short as _short, name as _name, table as _table, seeds as _seeds, group_rows as _group_rows,
)
from benchmarks.quality.ood_report import shipped_row


def converged_setup(results=RESULTS):
    res, seeds = load("converged.json", results), _seeds(results)
    st, cfg = res["settings"], seeds[0]["train_configs"]["fashion_mnist"]
    ft, v = cfg["finetune"], res["versions"]
    cpus = ", ".join(sorted({f"{s['machine']['cpu']}, {s['machine']['cores']} cores" for s in seeds}))
    ids = [str(s["seed"]) for s in seeds]
    return "\n".join([
        f"Fashion-MNIST, {st['train_images']:,} training images ({st['val_images']:,} more held out for "
        f"validation), {len(ids)} seeds ({', '.join(ids)}). Vanilla model: `{st['arch']}` width {st['width']}, "
        f"{st['epochs']} epochs, batch {st['batch_size']}, lr {st['lr']:g} with {st['warmup_epochs']:g} epoch of "
        f"warm-up and a cosine decay, {cfg['vanilla']['weight_decay_mode']} weight decay {st['weight_decay']:g}, "
        f"dropout {st['dropout']:g}, crop + flip.",
        f"Anchored model: that vanilla model fine-tuned with anchoring for **{ft['epochs']} epochs at lr "
        f"{ft['lr']:g}**, {ft['warmup_epochs']:.1f} epochs of warm-up then cosine, "
        f"{ft['consistency_mode'].replace('_', '-')} T on every {ft['consistency_every']}th step; K = "
        f"{st['num_anchors']} anchors. Each near-OOD split trains its own pair.",
        f"ID accuracy on all 10,000 test images; OOD metrics on {st['eval_limit']:,} ID test images and "
        f"{st['eval_limit']:,} images of each OOD set; KNN, Mahalanobis, Gram and the anchored feature scores "
        f"fitted on {st['fit_limit']:,} training images; MC dropout {st['mc_passes']} passes; the ensemble is "
        f"the {res['models']['ensemble']['members']} seeds' vanilla models.",
        f"Machines: the models trained on {_train_cpus(results)} (each model's sidecar `.json` in "
        f"`benchmarks/results/converged_models/`), {_phase_minutes(seeds, ('train_', 'finetune_'))} min wall per "
        f"seed; they were scored on {cpus} (each seed's `machine` in "
        f"`benchmarks/results/converged/seed{{{','.join(ids)}}}.json`; other processes took "
        f"{' / '.join(str(round(100 * s['machine']['others_cpu_share'])) for s in seeds)} % of the CPU), "
        f"{_phase_minutes(seeds, ('score_',))} min wall per seed. TensorFlow {v['tensorflow']}, Keras "
        f"{v['keras']}, Python {v['python']}.",
    ])


def _phase_minutes(seeds, prefixes):
    """`"a / b / c"`: the wall minutes per seed of the timing phases that start with `prefixes`."""
    return " / ".join(f"{sum(w for k, (w, _) in s['timing'].items() if k.startswith(prefixes)) / 60:.1f}"
                      for s in seeds)


def _train_cpus(results=RESULTS):
    """The CPUs the committed converged models were trained on (their sidecar files)."""
    cpus = {json.loads(f.read_text()).get("cpu") for f in (Path(results) / "converged_models").glob("*/seed*/*.json")
            if f.with_suffix(".keras").exists()}
    return ", ".join(sorted(c for c in cpus if c)) + ", 2 cores" if cpus - {None} else "an unrecorded machine"


def converged_headline(results=RESULTS):
    res = load("converged.json", results)
    g, ship, models = res["groups"], shipped_row(res), res["models"]

    def best_of(rows):
        def pick(grp, m):
            have = [r for r in rows if grp in g.get(r, {})]
            return (min if m == "fpr95" else max)(have, key=lambda r: g[r][grp][m]["mean"])
        return pick

    def cells(pick, model, named):
        cols = [(grp, "fpr95") for grp in ALL] + [("overall", "auroc")]
        a = models[model]
        return [f"{_short(pick(grp, m)) + ' ' if named else ''}{_pm(g[pick(grp, m)][grp][m])}" for grp, m in cols] + \
               [f"{model} {_p(a['id_accuracy_mean'], 2)} ± {_p(a['id_accuracy_std'], 2)}"]

    body = [[f"**shipped: {ship}** (selected on validation)", *cells(lambda *_: ship, "anchored", False)],
            ["best vanilla baseline of each column", *cells(best_of(VANILLA_BASELINES), "vanilla", True)],
            ["AMP alone: anchored/amp", *cells(lambda *_: "anchored/amp", "anchored", False)],
            ["best vanilla logit score of each column",
             *cells(best_of([f"vanilla/{n}" for n in verdicts.LOGIT]), "vanilla", True)]]
    return _table(["score", "near FPR95 ↓", "far FPR95 ↓", "covariate FPR95 ↓", "overall FPR95 ↓",
                   "overall AUROC ↑", "ID accuracy ↑"], body)


def converged_verdict(results=RESULTS):
    """The headline in words: the shipped score against the best vanilla baseline of each group."""
    res = load("converged.json", results)
    ship, parts = shipped_row(res), []
    for grp in ("overall", *GROUPS):
        name, other = verdicts.best(res, VANILLA_BASELINES, grp)
        s = verdicts.fpr(res, ship, grp)
        sd = max(verdicts.fpr_std(res, ship, grp), verdicts.fpr_std(res, name, grp))
        if s <= other:
            parts.append(f"it is the best {'overall' if grp == 'overall' else 'on ' + LABEL[grp]} ({s:.1f} against {_name(name)}'s {other:.1f}, seed std "
                         f"{sd:.1f})")
        elif s - other <= sd:
            parts.append(f"{LABEL[grp]} FPR95 {s:.1f} against {_name(name)}'s {other:.1f}: it misses \"at or below "
                         f"{_name(name)}\" by {s - other:.1f} points, within one seed std ({sd:.1f})")
        else:
            parts.append(f"it loses {LABEL[grp]} to {_name(name)} ({s:.1f} against {other:.1f}, seed std {sd:.1f})")
    m = res["models"]
    gap = 100 * (m["vanilla"]["id_accuracy_mean"] - m["anchored"]["id_accuracy_mean"])
    return (f"**At convergence ({res['groups'][ship]['n_seeds']} seeds), the shipped `{_short(ship)}`: "
            + "; ".join(parts) + f".** Its anchored model's ID accuracy is {gap:.2f} points below the vanilla twin's.")


#: The candidates of the selection table: the lowest mean validation FPR95 first (every one: converged.md).
SELECTION_ROWS = 5


def converged_selection(results=RESULTS):
    """The selection on validation: the best candidates by mean validation FPR95 over the seeds (the selected
    one among them), and the seeds on which the library selected each."""
    res, seeds = load("converged.json", results), _seeds(results)
    sel = res["selection"]["shipped"]
    per_seed = sel.get("library_per_seed") or sel["per_seed"]
    names = sorted(sel["val_fpr95_mean"], key=sel["val_fpr95_mean"].get)
    shown = names[:SELECTION_ROWS] + ([sel["selected"]] if sel["selected"] not in names[:SELECTION_ROWS] else [])
    rows = [[f"**{n}** (shipped)" if n == sel["selected"] else n, _p(sel["val_fpr95_mean"][n]),
             ", ".join(str(s["seed"]) for s, w in zip(seeds, per_seed) if w == n) or "–"] for n in shown]
    return _table([f"candidate ({len(names)}; the best {len(shown)})", f"validation FPR95 ↓, mean of {len(seeds)} seeds",
                   "selected on seed"], rows)


def _page_row(name, ship):
    """A row of the page's group table: every row but the parametrised combinations (``amp[...]+gram[w=...]``:
    their family's best, ``anchored/amp+gram``, stands for them; every row is in converged.md), and the shipped."""
    return name == ship or not ("+" in name and "[" in name)


#: The verdicts of the headline (the shipped score against the best vanilla baseline of each group).
HEADLINE_VERDICTS = "the shipped score is at or below the best vanilla baseline"


def verdict_table(results=RESULTS):
    """`benchmarks.page.verdicts`' table for the converged and the reduced-scale runs, less the headline's verdicts."""
    runs = {"converged (3 seeds)": load("converged.json", results),
            "reduced scale (5 seeds, section 2)": load("ood_protocol.json", results)}
    checked = [verdicts.check(r) for r in runs.values()]
    mark = {True: "holds", False: "does not hold"}
    rows = [[text] + [f"{mark[c[i][1]]} ({c[i][2]})" if c[i][1] is not None else "not measured" for c in checked]
            for i, (text, _rule) in enumerate(verdicts.VERDICTS) if not text.startswith(HEADLINE_VERDICTS)]
    return _table(["verdict", *runs], rows, [":--"] * len(runs))


def converged_groups(results=RESULTS):
    res = load("converged.json", results)
    ship, members = shipped_row(res), res["models"]["ensemble"]["members"]
    labels = {ship: f"**{ship} (shipped)**"}
    for r in res["groups"]:
        if r != ship and _page_row(r, ship):
            labels[r] = r + (f" ({members} vanilla models; far + covariate only)" if r.startswith("ensemble/") else "")
    return _table(["model/score", *FPR_HEAD], _group_rows(res, labels))


def converged_accuracy(results=RESULTS):
    seeds, rows = _seeds(results), []
    for key, metric, name in (("", "id_accuracy", "main split (10 classes), test"),
                              ("", "val_accuracy", "main split (10 classes), validation"),
                              ("@fmnist_holdout_id", "id_accuracy", "near split 1 (6 classes), test"),
                              ("@fmnist_holdout2_id", "id_accuracy", "near split 2 (6 classes), test")):
        v = [100 * s["models"]["vanilla" + key][metric] for s in seeds]
        a = [100 * s["models"]["anchored" + key][metric] for s in seeds]
        d = [x - y for x, y in zip(a, v)]
        m = _signed(mean(d))
        rows.append([name, " / ".join(f"{x:.2f}" for x in v), " / ".join(f"{x:.2f}" for x in a),
                     " / ".join(_signed(x) for x in d), f"**{m}**" if not rows else m])
    ids = " / ".join(str(s["seed"]) for s in seeds)
    return _table(["split", f"vanilla, seeds {ids}", f"anchored, seeds {ids}", "anchored − vanilla", "mean"], rows,
                  [":--", ":--", ":--", "--:"])
