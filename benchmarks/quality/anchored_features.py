"""Anchored features, measured under the protocol (issue 20): KNN / Mahalanobis on the anchored model.

For each seed: the main job's vanilla twin (`benchmarks.quality.finetune_select.vanilla_twin`:
`resnet_small` width 16, 2 epochs) and the anchored model fine-tuned from it with the
main job's recipe (`amp_tf.run.presets.FMNIST_RECIPE`: per-sample T, 2 epochs, lr 0.1), K = 5
anchors (`amp_tf.recipe.NUM_ANCHORS`). Scores (all through `amp_tf.detection.detectors.fit_all`, one
anchored pass per image set):

* anchored/amp, anchored/knn, anchored/mahalanobis (the backbone's pooled features of
  `[c, x - c]`, mean over the K anchors, bank / class means on the anchored features of
  the ID training images), and `anchored/amp+knn[w=...]`, `anchored/amp+mahalanobis[w=...]`
  = `w * z(amp) + (1 - w) * z(feature)`, z standardised on the ID validation images;
* vanilla/msp, vanilla/energy, vanilla/knn, vanilla/mahalanobis on the vanilla twin.

Selection on VALIDATION only: every row's mean FPR95 over `validation_ood_sets` of ID
validation images (vs those images), mean over seeds; the lowest wins (which score, which
combination, which `w`). The test groups (near with each class-holdout split's own twins,
far and covariate on the main twins) are then reported once, as in BENCHMARKS.md section 2
(`benchmarks.quality.ood_report.aggregate_groups`: mean of group means).

Resumable: each seed's models are cached in `--cache`, and its results in
`--cache/s{seed}.json` only when the whole seed (main twins and both near splits) is done,
so an interrupted seed is redone, never half-counted. A cache made with other settings is
refused (the differing settings are named); one from another code version is redone.

    python -m benchmarks.quality.anchored_features --seeds 0,1,2     # BENCHMARKS.md section 3 (23 min, 2 cores)
    python -m benchmarks.quality.anchored_features --train-limit 20000   # reduced scale
    python -m benchmarks.quality.anchored_features --quick            # CI smoke (< 90 s)
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

if __name__ == "__main__" and not __package__:  # python benchmarks/quality/anchored_features.py
    sys.exit("run it as a module from the repository root: python -m benchmarks.quality.anchored_features")

from amp_tf.recipe import NUM_ANCHORS  # noqa: E402  (light: no TensorFlow)
from benchmarks.harness.machine import cpu_model  # noqa: E402
from benchmarks.harness.results import check_k, write_json  # noqa: E402

#: Cached seeds are valid for this version of the scoring and fine-tuning code.
CODE_VERSION = "anchored-features-2026-12-02"
ANCHORED_NAMES = ("amp", "knn", "mahalanobis", "amp+knn", "amp+mahalanobis")
VANILLA_NAMES = ("msp", "energy", "knn", "mahalanobis")
#: The settings a cached seed must share with the run (a difference is refused, and named).
SETTING_KEYS = ("train_limit", "val_size", "eval_limit", "fit_limit", "val_ood_size", "num_anchors", "weights",
                "no_near", "finetune")


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.quality.anchored_features",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="0,1,2", help="training seeds (comma-separated)")
    p.add_argument("--train-limit", type=int, default=None,
                   help="training images per model (default: all 55,000; the main split's vanilla twins "
                        "then come from --vanilla-cache when there)")
    p.add_argument("--val-size", type=int, default=5000, help="ID validation images held out of training")
    p.add_argument("--eval-limit", type=int, default=2000, help="images per ID / OOD test set")
    p.add_argument("--fit-limit", type=int, default=10000,
                   help="ID training images the feature detectors are fitted on (KNN bank, class means)")
    p.add_argument("--val-ood-size", type=int, default=1000, help="ID validation images the validation OOD sets use")
    p.add_argument("--num-anchors", type=int, default=NUM_ANCHORS,
                   help=f"K (default {NUM_ANCHORS}, amp_tf.recipe.NUM_ANCHORS)")
    p.add_argument("--weights", default="0,0.25,0.5,0.75,1", help="w of the combinations (w = AMP's weight)")
    p.add_argument("--no-near", action="store_true", help="skip the near-OOD group (its splits train their own twins)")
    p.add_argument("--cache", type=Path, default=Path("runs/anchored_features"), help="per-seed models and results")
    p.add_argument("--vanilla-cache", type=Path, default=Path("runs/finetune_select"),
                   help="folder with benchmarks.quality.finetune_select's vanilla_s{seed}.keras (full scale only)")
    p.add_argument("--json", type=Path, default=Path("benchmarks/results/anchored_features.json"))
    p.add_argument("--data-dir", default=None, help="data folder (tfds data_dir, or the Fashion-MNIST IDX folder)")
    p.add_argument("--download", action="store_true", help="allow tensorflow-datasets to download missing data")
    p.add_argument("--quick", action="store_true",
                   help="CI smoke: seed 0, 600 training images, 100 per set (numbers mean nothing)")
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.train_limit, args.val_size, args.eval_limit = "0", 600, 300, 100
        args.fit_limit, args.val_ood_size, args.num_anchors, args.weights = 300, 100, 3, "0,0.5,1"
        if args.cache == Path("runs/anchored_features"):
            args.cache = Path("runs/anchored_features_quick")
        if args.json == Path("benchmarks/results/anchored_features.json"):
            args.json = args.cache / "anchored_features.json"
    args.num_anchors = check_k(p, args.num_anchors, "--num-anchors")
    args.seed_list = [int(s) for s in args.seeds.split(",")]
    args.weight_list = [float(w) for w in args.weights.split(",")]
    if any(not 0 <= w <= 1 for w in args.weight_list):
        p.error(f"--weights: every w must be in [0, 1], got {args.weights}")
    return args


def settings(args):
    from amp_tf.run.presets import FMNIST_RECIPE as R

    finetune = {"epochs": R["finetune_epochs"], "lr": R["lr"], "consistency": R["consistency"],
                "consistency_mode": R["consistency_mode"], "weight_decay_mode": R["weight_decay_mode"],
                "width": R["width"]}
    return {"train_limit": args.train_limit, "val_size": args.val_size, "eval_limit": args.eval_limit,
            "fit_limit": args.fit_limit, "val_ood_size": args.val_ood_size, "num_anchors": args.num_anchors,
            "weights": args.weight_list, "no_near": args.no_near, "finetune": finetune}


def check_cached(cached, wanted, path):
    """The cached seed if it can be reused; None (redo) for another code version; an error for other settings."""
    if cached.get("code") != CODE_VERSION:
        print(f"{path}: made by code version {cached.get('code')!r}, not {CODE_VERSION!r}: redoing this seed",
              flush=True)
        return None
    diff = [k for k in SETTING_KEYS if cached.get("settings", {}).get(k) != wanted[k]]
    if diff:
        raise SystemExit(f"{path}: its settings differ from this run's in {', '.join(diff)} ("
                         + "; ".join(f"{k}: cached {cached['settings'].get(k)!r}, now {wanted[k]!r}" for k in diff)
                         + "). Use another --cache, or delete that file.")
    return cached


# --------------------------------------------------------------------------- models
def twins(args, d, seed, tag, log):
    """The vanilla twin (`finetune_select.vanilla_twin`) and the anchored model fine-tuned from it, cached."""
    import keras

    from amp_tf.run.presets import FMNIST_RECIPE as R
    from amp_tf.run.training import finetune_anchored
    from benchmarks.quality.finetune_select import vanilla_twin

    ns = SimpleNamespace(**d)
    name = f"vanilla{tag}_s{seed}.keras"
    shared = args.vanilla_cache / name
    if args.train_limit is None and args.val_size == 5000 and not tag and shared.exists():
        vanilla = keras.models.load_model(shared, compile=False)
    else:
        t = time.time()
        vanilla = vanilla_twin(ns, seed, args.cache, name=name)
        log(f"  vanilla{tag} seed {seed}: {time.time() - t:.0f} s")
    path = args.cache / f"anchored{tag}_s{seed}.keras"
    if path.exists():
        return vanilla, keras.models.load_model(path, compile=False)
    t, e = time.time(), R["finetune_epochs"]
    model, _ = finetune_anchored(vanilla, d["x_train"], d["y_train"], epochs=e, lr=R["lr"], warmup_epochs=0.1 * e,
                                 seed=seed, weight_decay_mode=R["weight_decay_mode"], consistency=R["consistency"],
                                 consistency_mode=R["consistency_mode"], verbose=0, backup=False)
    model.save(path)
    log(f"  anchored{tag} seed {seed}: fine-tuned in {time.time() - t:.0f} s")
    return vanilla, model


# --------------------------------------------------------------------------- scores
def anchored_scorer(args, d, model, seed):
    """`images -> {score: (N,)}` of the anchored rows (combinations for every w), and `predicted_class`."""
    from amp_tf.detection import detectors
    from amp_tf.method.predictor import select_anchors

    n = args.fit_limit
    dets = detectors.fit_all(ANCHORED_NAMES, model, id_train=(d["x_train"][:n], d["y_train"][:n]),
                             id_val=(d["x_val"], d["y_val"]), anchors=select_anchors(d["x_train"], args.num_anchors,
                                                                                     seed=seed))
    comb = {det.name: det for det in dets.on_amp if det.name in detectors.COMBINATIONS}

    def run(images):
        out = dets.score(images)
        res = {k: out[k] for k in ("amp", "knn", "mahalanobis", "predicted_class")}
        for name, det in comb.items():
            feat = detectors.COMBINATIONS[name]
            for w in args.weight_list:
                res[f"{name}[w={w:g}]"] = detectors.zscore_combination(out["amp"], out[feat], det.stats, w)
        return res

    return run


def vanilla_scorer(args, d, model):
    from amp_tf.detection import detectors

    n = args.fit_limit
    return detectors.fit_all(VANILLA_NAMES, model, id_train=(d["x_train"][:n], d["y_train"][:n])).score


def rows_of(run, model_name, id_images, sets):
    """`{f"{model}/{score}": {set: metrics}}` and the predicted classes of the ID images."""
    from benchmarks.quality.ood_runs import _rows

    ref = run(id_images)
    vals = {"id": ref, **{k: run(v) for k, v in sets.items()}}
    return _rows(model_name, vals, list(sets), "id"), ref["predicted_class"]


def score_split(args, d, seed, tag, log, validation):
    """Rows of one split's twins: test rows always, validation rows (and accuracies) for the main split."""
    import numpy as np

    from amp_tf.data.corruptions import validation_ood_sets

    vanilla, anchored = twins(args, d, seed, tag, log)
    t = time.time()
    test = {"id": d["x_test"], **d["ood"]}
    rows, val_rows, info = {}, {}, {}
    for kind, run in (("anchored", anchored_scorer(args, d, anchored, seed)),
                      ("vanilla", vanilla_scorer(args, d, vanilla))):
        r, pred = rows_of(run, kind, test["id"], d["ood"])
        rows.update(r)
        info[f"{kind}{tag}_test_acc"] = float(np.mean(pred == d["y_test"]))
        if validation:
            x_val = d["x_val"][: args.val_ood_size]
            r, pred = rows_of(run, kind, x_val, validation_ood_sets(x_val, seed=seed))
            val_rows.update(r)
            info[f"{kind}_val_acc"] = float(np.mean(pred == d["y_val"][: args.val_ood_size]))
    log(f"  scored{tag} seed {seed} in {time.time() - t:.0f} s: " + ", ".join(f"{k} {v:.4f}" for k, v in info.items()))
    return rows, val_rows, info


def run_seed(args, seed, log):
    from benchmarks.quality.ood_runs import load_suite

    ns = SimpleNamespace(val_size=args.val_size, seed=seed, train_limit=args.train_limit, eval_limit=args.eval_limit,
                         data_dir=args.data_dir, download=args.download, no_near=args.no_near)
    t = time.time()
    suite, near = load_suite(ns, log=log)
    rows, val_rows, info = score_split(args, suite, seed, "", log, validation=True)
    for i, nd in enumerate(near, 1):
        r, _, inf = score_split(args, nd, seed, f"_near{i}", log, validation=False)
        for key, per_set in r.items():
            rows.setdefault(key, {}).update(per_set)
        info.update(inf)
    return {"code": CODE_VERSION, "seed": seed, "settings": settings(args), "test_rows": rows,
            "val_rows": val_rows, "info": info, "wall_s": round(time.time() - t)}


# --------------------------------------------------------------------------- report
def summarise(results):
    """Validation table (mean FPR95 / AUROC over the validation OOD sets, mean ± sd over seeds), the
    selected row, and the test groups of every row (`aggregate_groups`)."""
    import numpy as np

    from benchmarks.quality.ood_report import aggregate_groups

    val = {}
    for key in results[0]["val_rows"]:
        per = [[np.mean([m[k] for m in r["val_rows"][key].values()]) for r in results] for k in ("fpr95", "auroc")]
        val[key] = {"fpr95": 100 * float(np.mean(per[0])), "fpr95_sd": 100 * float(np.std(per[0], ddof=1))
                    if len(results) > 1 else 0.0, "auroc": 100 * float(np.mean(per[1]))}
    selected = min(val, key=lambda k: val[k]["fpr95"])
    best_anchored_feature = min((k for k in val if k in ("anchored/knn", "anchored/mahalanobis")),
                                key=lambda k: val[k]["fpr95"])
    selected_anchored = min((k for k in val if k.startswith("anchored/")), key=lambda k: val[k]["fpr95"])
    return {"validation": val, "selected": selected, "selected_anchored": selected_anchored,
            "best_anchored_feature": best_anchored_feature,
            "feature_beats_amp_on_validation": val[best_anchored_feature]["fpr95"] < val["anchored/amp"]["fpr95"],
            "test_groups": aggregate_groups([r["test_rows"] for r in results])}


def render(summary):
    lines = ["| model/score | val-OOD FPR95 ↓ | val-OOD AUROC |", "|:--|--:|--:|"]
    for k, v in sorted(summary["validation"].items(), key=lambda kv: kv[1]["fpr95"]):
        mark = " (**selected**)" if k == summary["selected"] else ""
        lines.append(f"| {k}{mark} | {v['fpr95']:.1f} ± {v['fpr95_sd']:.1f} | {v['auroc']:.1f} |")
    groups = ("near", "far", "covariate", "overall")
    lines += ["", "| model/score | " + " | ".join(f"{g} FPR95" for g in groups) + " | overall AUROC ↑ |",
              "|:--|" + "--:|" * (len(groups) + 1)]
    for k, e in sorted(summary["test_groups"].items(), key=lambda kv: kv[1]["overall"]["fpr95"]["mean"]):
        cell = lambda g, m: (f"{100 * e[g][m]['mean']:.1f} ± {100 * e[g][m]['std']:.1f}"  # noqa: E731
                             if g in e else "–")
        mark = " (**selected**)" if k == summary["selected"] else ""
        cells = [cell(g, "fpr95") for g in groups] + [cell("overall", "auroc")]
        lines.append(f"| {k}{mark} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    args.cache.mkdir(parents=True, exist_ok=True)
    t0 = time.time()

    def log(msg):
        print(f"[{time.time() - t0:6.0f} s] {msg}", flush=True)

    import amp_tf  # noqa: F401

    wanted, results = settings(args), []
    for seed in args.seed_list:
        path = args.cache / f"s{seed}.json"
        cached = check_cached(json.loads(path.read_text()), wanted, path) if path.exists() else None
        if cached is None:
            log(f"seed {seed} ...")
            cached = run_seed(args, seed, log)
            write_json(path, cached)
        else:
            log(f"seed {seed}: cached ({path})")
        results.append(cached)
    summary = summarise(results)
    print(render(summary))
    print(f"selected on validation: {summary['selected']}; among the anchored model's rows: "
          f"{summary['selected_anchored']}")
    write_json(args.json, {
        "command": "python -m benchmarks.quality.anchored_features "
                   + " ".join(argv if argv is not None else sys.argv[1:]),
        "cpu": cpu_model(), "cores": os.cpu_count(), "seeds": args.seed_list, "settings": wanted,
        "code": CODE_VERSION, "summary": summary, "info": {f"s{r['seed']}": r["info"] for r in results},
        "seed_wall_s": {f"s{r['seed']}": r["wall_s"] for r in results}, "wall_time_s": round(time.time() - t0),
        "per_seed": {f"s{r['seed']}": {"test_rows": r["test_rows"], "val_rows": r["val_rows"]} for r in results}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
