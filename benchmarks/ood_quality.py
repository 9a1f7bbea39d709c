#!/usr/bin/env python
"""OOD-quality benchmark: AMP vs the standard and fitted baselines on the offline
Fashion-MNIST suite in groups, mean +- std and 95 % interval over seeds.

Protocol (the benchmark-protocol issue): the suite reports three groups, each
with its own mean, and `overall` = the mean of the group means:

* near-OOD: the two Fashion-MNIST class-holdout splits, each with its OWN
  anchored and vanilla twins trained on its ID classes (`--no-near` skips them);
* far-OOD: scikit-learn's digits, letters rendered from Debian fonts, patches of
  scikit-image's photos;
* covariate shift: the ID test images under blur, JPEG, contrast, pixelate, 1..5.

Every choice is made on VALIDATION data only: the ID validation split (held out
of training) against `amp_tf.data.corruptions.validation_ood_sets` (pixel /
patch shuffles, noise, inversion, rotation of ID validation images: no image
and no corruption type of the test groups). `--select-grid` chooses training
settings (one anchored model per grid point, seed --seed), and the AMP variant
(tau reduction x calibration) shown as `AMP (selected)` is chosen on the same
validation data; the test groups are then reported once.

Run from the repository root:

    python benchmarks/ood_quality.py --quick                 # a few minutes on 2 CPU cores
    python benchmarks/ood_quality.py --table8 --mc-dropout 0.3   # the full run (BENCHMARKS.md)

Per seed s (training seed; the train/val split is fixed by --seed), with the main
job's settings (trainers/fmnist.py: resnet_small, SGD 0.1, cosine with warm-up,
T = "all" every 5th step, K = 5 anchors):

* the anchored model -> every AMP variant (tau_reduction x calibration), and msp,
  energy, neg_tau on the calibrated logits (`amp_tf.evaluation.evaluate_model`);
* its vanilla twin (same backbone, schedule, epochs, seed) -> MSP, Energy, ODIN,
  MaxLogit, Entropy, and the fitted baselines of `amp_tf.baselines`: Mahalanobis
  and Gram (fitted on the ID training images), temperature scaling (fitted on the
  ID validation split held out of training);
* with --mc-dropout RATE: one more vanilla twin with dropout before the classifier
  -> MC dropout (msp / entropy / variance of --mc-passes stochastic passes) and the
  deterministic MSP of that twin.

The vanilla twins of all seeds form one deep ensemble (no extra training; one
number, no std). With --table8: the paper's Table 8 analogue on the first seed,
FPR95 (mean over the OOD sets) of AMP for each consistency transform T (one
anchored model per T) x K anchors (inference only). With --anchor-draws N: the spread
of AMP's FPR95 over N anchor sets for the first seed's anchored model, and tau's quantiles.

Writes JSON (all numbers, per seed and per OOD set, settings, versions, machine,
date, wall time) and a markdown summary (also printed). Metric convention:
--positive (default id: FPR95 = share of OOD accepted at 95 % ID recall).
"""

from __future__ import annotations

import os
import time

_T_START = time.time()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import datetime  # noqa: E402
import functools  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

from amp_tf.cli.common import base_parser, cli_errors, train_config, versions  # noqa: E402
from amp_tf.cli.fmnist import DEFAULTS as FMNIST_DEFAULTS  # noqa: E402  (the main job's settings)

METRICS = ("fpr95", "auroc", "aupr_in", "aupr_out", "detection_accuracy")
LABELS = {"fpr95": "FPR95 ↓", "auroc": "AUROC", "aupr_in": "AUPR-in", "aupr_out": "AUPR-out",
          "detection_accuracy": "DetAcc"}
VANILLA_LOGIT_SCORES = ("msp", "energy", "odin", "max_logit", "entropy")
FITTED = ("mahalanobis", "gram", "temperature_scaling", "knn", "react")
AMP_VARIANTS = ("amp", "amp[sum,exp]", "amp[mean,divide]", "amp[sum,divide]")
TABLE8_TRANSFORMS = ("none", "jitter_blur", "flip_grayscale", "resized_crop", "all")
LIBRARY_CROP_SCALE = 0.25  # amp_tf.augment.resized_crop's default minimum area

#: --quick: every part of the benchmark at a tiny scale (2 seeds so that the
#: ensemble and the std are exercised too).
QUICK = dict(num_seeds=2, epochs=1, train_limit=5000, eval_limit=300, width=8, fit_limit=2000,
             mc_dropout=0.0, mc_passes=5, table8=False, table8_transforms="none,all", table8_k="2,5",
             anchor_draws=2, select_grid="consistency_every=5,2")


# --------------------------------------------------------------------------- CLI
def _set_help(parser, dest, text):
    for action in parser._actions:  # argparse has no public lookup by dest
        if action.dest == dest:
            action.help = text
            return
    raise KeyError(dest)


def parser():
    p = base_parser(__doc__.split("\n\n")[0], FMNIST_DEFAULTS)
    p.set_defaults(verbose=2)
    _set_help(p, "seed", "base seed: the train/val split and the first training seed; "
                         "the seeds are seed .. seed + num_seeds - 1")
    _set_help(p, "out", "folder for per-model training output (checkpoints, TensorBoard, "
                        "BackupAndRestore: a killed run resumes); default: nothing written but the results")
    _set_help(p, "num_anchors", "K anchors at inference for the main table")
    g = p.add_argument_group("OOD-quality benchmark")
    g.add_argument("--quick", action="store_true",
                   help="tiny end-to-end run (a few minutes on 2 CPU cores): " +
                        ", ".join(f"{k.replace('_', '-')}={v}" for k, v in QUICK.items()) +
                        "; explicit flags still override")
    g.add_argument("--num-seeds", type=int, default=3, help="training seeds per model (mean +- std over them)")
    g.add_argument("--width", type=int, default=16, help="resnet_small base width")
    g.add_argument("--train-limit", type=int, default=None,
                   help="use only the first N training images (after the validation split)")
    g.add_argument("--val-size", type=int, default=5000,
                   help="ID validation images held out of training (temperature scaling is fitted on them)")
    g.add_argument("--eval-limit", type=int, default=2000,
                   help="score at most the first N images of the ID test set and of each OOD set "
                        "(the blur sets are then the blurred first N test images; 0 = all: "
                        "10,000 per set, about 4x the scoring time)")
    g.add_argument("--fit-limit", type=int, default=10000,
                   help="fit Mahalanobis and Gram on the first N training images (0 = all 55,000: "
                        "Gram's fit then takes about 3 min per seed)")
    g.add_argument("--baselines", default=",".join(FITTED + ("ensemble",)),
                   help="comma-separated baselines on the vanilla twin: mahalanobis, gram, "
                        "temperature_scaling, ensemble (empty: none)")
    g.add_argument("--mc-dropout", type=float, default=0.0, metavar="RATE",
                   help="train one more vanilla twin per seed with this dropout rate before the "
                        "classifier and score MC dropout on it (0 = off: saves one training per seed)")
    g.add_argument("--mc-passes", type=int, default=20, help="stochastic passes of MC dropout")
    g.add_argument("--skip-vanilla", action="store_true",
                   help="train and score the anchored model only (no vanilla twin, no baselines); "
                        "for explorations of the anchored settings")
    g.add_argument("--crop-scale", type=float, default=LIBRARY_CROP_SCALE,
                   help="minimum area of T's resized_crop (library default 0.25); other values "
                        "register a transform resized_crop_minNNN used instead of resized_crop")
    g.add_argument("--table8", action="store_true",
                   help="Table 8 analogue on the first seed: FPR95 of AMP per consistency transform x K")
    g.add_argument("--table8-transforms", default=",".join(TABLE8_TRANSFORMS),
                   help="consistency presets for --table8 (one anchored model each; the main "
                        "model is reused for --consistency)")
    g.add_argument("--table8-k", default="2,5,10,20", help="anchor counts K for --table8")
    g.add_argument("--table8-eval-limit", type=int, default=1000,
                   help="score at most the first N images per set for --table8 (0 = as --eval-limit)")
    g.add_argument("--anchor-draws", type=int, default=0, metavar="N",
                   help="sensitivity to the anchors: score the first seed's anchored model with N "
                        "anchor sets (select_anchors seeds 0..N-1, K = --num-anchors) and record "
                        "the spread of FPR95 and the tau quantiles per set (0 = off)")
    g.add_argument("--json", default=None, metavar="PATH",
                   help="results JSON (default benchmarks/results/ood_quality[_quick].json)")
    g.add_argument("--md", default=None, metavar="PATH",
                   help="markdown summary (default: the --json path with .md)")
    g.add_argument("--no-near", action="store_true",
                   help="skip the near-OOD group (its two class-holdout splits train their own twins)")
    g.add_argument("--select-grid", default="", metavar="GRID",
                   help="training settings to choose on validation, e.g. "
                        "'consistency=all,jitter_blur;consistency_every=5,2;epochs=3,6' (one anchored model "
                        "per combination, seed --seed; the best mean validation FPR95 is used for every seed)")
    g.add_argument("--val-ood-size", type=int, default=1000,
                   help="ID validation images (and as many per validation OOD set) used for selection")
    return p


def parse_args(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    p = parser()
    if "--quick" in argv:
        p.set_defaults(**QUICK)
    args = p.parse_args(argv)
    if args.num_seeds < 1 or args.epochs < 1 or args.num_anchors < 2 or args.mc_passes < 2:
        p.error("--num-seeds and --epochs must be >= 1, --num-anchors and --mc-passes >= 2")
    if not 0.0 <= args.mc_dropout < 1.0:
        p.error("--mc-dropout must be in [0, 1)")
    if not 0.0 < args.crop_scale <= 1.0:
        p.error("--crop-scale must be in (0, 1]")
    args.baselines = [b.strip() for b in args.baselines.split(",") if b.strip()]
    unknown = set(args.baselines) - set(FITTED + ("ensemble",))
    if unknown:
        p.error(f"--baselines: unknown {sorted(unknown)}; choose from {FITTED + ('ensemble',)}")
    args.table8_transforms = [t.strip() for t in args.table8_transforms.split(",") if t.strip()]
    try:
        args.table8_k = [int(k) for k in args.table8_k.split(",") if k.strip()]
    except ValueError:
        p.error("--table8-k: comma-separated integers")
    if args.table8 and (not args.table8_k or min(args.table8_k) < 2):
        p.error("--table8-k: anchor counts must be >= 2")
    args.grid = parse_grid(args.select_grid, p)
    suffix = "_quick" if args.quick else ""
    args.json = Path(args.json or ROOT / "benchmarks" / "results" / f"ood_quality{suffix}.json")
    args.md = Path(args.md) if args.md else args.json.with_suffix(".md")
    return args


def parse_grid(text, p):
    """'a=1,2;b=x' -> [{'a': 1, 'b': 'x'}, {'a': 2, 'b': 'x'}] (values cast like the flags)."""
    import itertools

    axes = []
    for part in [t for t in str(text).split(";") if t.strip()]:
        if "=" not in part:
            p.error(f"--select-grid: expected key=v1,v2 parts separated by ';', got {part!r}")
        key, vals = part.split("=", 1)
        key = key.strip().replace("-", "_")
        default = p.get_default(key)
        if default is None and key not in ("consistency",):
            p.error(f"--select-grid: {key!r} is not a training flag of this benchmark")
        cast = type(default) if default is not None else str
        axes.append([(key, cast(v.strip())) for v in vals.split(",") if v.strip()])
    return [dict(c) for c in itertools.product(*axes)] if axes else []


# --------------------------------------------------------------------------- data
def load_fmnist_suite(args):
    """The Fashion-MNIST split and OOD suite as raw pixels (the main job's `amp_tf.pipeline` loaders)."""
    from amp_tf.cli.fmnist import suite
    from amp_tf.pipeline import load_id, load_ood

    id_name, ood_names = suite()
    d = load_id(id_name, val_size=args.val_size, seed=args.seed, train_limit=args.train_limit,
                eval_limit=args.eval_limit, data_dir=args.data_dir, download=args.download)
    ood, _ = load_ood(ood_names, d.image_shape, limit=args.eval_limit, data_dir=args.data_dir)
    return {"id_set": d.name, "x_train": d.x_train, "y_train": d.y_train, "x_val": d.x_val,
            "y_val": d.y_val, "x_test": d.x_test, "y_test": d.y_test, "num_classes": d.num_classes,
            "ood": ood, "mean": d.mean, "std": d.std}


def load_near_splits(args):
    """Per class-holdout split: the same dict as `load_fmnist_suite`, its held-out classes as OOD."""
    from amp_tf.data import fmnist_suite
    from amp_tf.pipeline import load_id, load_ood

    out = []
    for ood_name, id_name in fmnist_suite()["near"].items():
        d = load_id(id_name, val_size=args.val_size, seed=args.seed, train_limit=args.train_limit,
                    eval_limit=args.eval_limit, data_dir=args.data_dir, download=args.download)
        ood, _ = load_ood([ood_name], d.image_shape, limit=args.eval_limit, data_dir=args.data_dir)
        out.append({"id_set": d.name, "x_train": d.x_train, "y_train": d.y_train, "x_val": d.x_val,
                    "y_val": d.y_val, "x_test": d.x_test, "y_test": d.y_test, "num_classes": d.num_classes,
                    "ood": ood, "mean": d.mean, "std": d.std})
    return out


def validation_sets(args, d):
    """(ID validation images, {validation OOD set: images}) used for every selection."""
    from amp_tf.data.corruptions import validation_ood_sets

    x = d["x_val"][: args.val_ood_size]
    return x, validation_ood_sets(x, seed=args.seed)


def val_fpr95(args, d, model, seed):
    """Mean FPR95 over the validation OOD sets of every AMP variant (validation data only)."""
    import numpy as np

    from amp_tf import metrics
    from amp_tf.evaluation import anchored_scorer
    from amp_tf.predictor import select_anchors

    x_val, val_ood = validation_sets(args, d)
    run = anchored_scorer(model, select_anchors(d["x_train"], args.num_anchors, seed=seed))
    ref, ood = run(x_val), {k: run(v) for k, v in val_ood.items()}
    return {v: float(np.mean([metrics.ood_metrics(ref[v], o[v])["fpr95"] for o in ood.values()]))
            for v in AMP_VARIANTS}


def select_training(args, d, log):
    """Trains one anchored model per --select-grid point and keeps the best validation FPR95 (default AMP)."""
    import copy

    if not args.grid:
        return None
    rows = []
    anchored_only = {"consistency", "consistency_every", "consistency_mode", "finetune_epochs", "num_anchors"}
    base = None  # one vanilla twin for every grid point when the grid only changes the anchored model
    if args.finetune_epochs and not args.skip_vanilla and all(set(p) <= anchored_only for p in args.grid):
        base, _, _ = _train(args, d, log, anchored=False, seed=args.seed, tag="select-vanilla")
    for point in args.grid:
        a = copy.copy(args)
        for k, v in point.items():
            setattr(a, k, v)
        init = base
        if init is None and a.finetune_epochs and not a.skip_vanilla:
            init, _, _ = _train(a, d, log, anchored=False, seed=args.seed, tag="select-vanilla")
        model, _, _ = _train(a, d, log, anchored=True, seed=args.seed, tag="select", init_from=init)
        fpr = val_fpr95(a, d, model, args.seed)
        rows.append({"setting": point, "val_fpr95": fpr})
        log(f"  select {point}: validation FPR95 (amp) {100 * fpr['amp']:.1f}")
        del model
    best = min(rows, key=lambda r: r["val_fpr95"]["amp"])
    for k, v in best["setting"].items():
        setattr(args, k, v)
    log(f"selected on validation: {best['setting']}")
    return {"grid": rows, "selected": best["setting"]}


def consistency_with_crop_scale(consistency, min_area):
    """`consistency` with resized_crop's minimum area set to `min_area` (a registered copy)."""
    from amp_tf import augment

    names = augment.resolve(consistency)
    if min_area == LIBRARY_CROP_SCALE or "resized_crop" not in names:
        return consistency
    name = f"resized_crop_min{int(round(min_area * 100)):03d}"
    if name not in augment.TRANSFORMS:
        augment.register_transform(name)(functools.partial(augment.resized_crop, scale=(min_area, 1.0)))
    return "+".join(name if n == "resized_crop" else n for n in names)


# --------------------------------------------------------------------------- helpers
class Log:
    def __init__(self):
        self.t0 = time.time()

    def __call__(self, msg):
        print(f"[ood_quality {time.time() - self.t0:7.0f} s] {msg}", flush=True)


def _rows(model, values_by_set, sets, positive):
    """`{f"{model}/{score}": {ood_set: metrics}}` from `{set: {score: array}}` (set "id" = ID test)."""
    from amp_tf.evaluation import ood_results

    return ood_results(values_by_set["id"], {k: values_by_set[k] for k in sets}, model, positive)


def _by_set(scores_by_name):
    """`{score: {set: array}}` -> `{set: {score: array}}`."""
    out = {}
    for score, per_set in scores_by_name.items():
        for s, v in per_set.items():
            out.setdefault(s, {})[score] = v
    return out


def _train(args, d, log, *, anchored, seed, consistency=None, dropout=0.0, tag, init_from=None):
    """One model; with `init_from` (a trained vanilla twin) the anchored model is fine-tuned from it
    for --finetune-epochs (the main job's way), else trained from scratch for --epochs."""
    from amp_tf.training import train

    kw = {"width": args.width}
    if dropout:
        kw["dropout"] = dropout
    over = dict(anchored=anchored, seed=seed, backbone_kwargs=kw, mean=tuple(d["mean"].tolist()),
                std=tuple(d["std"].tolist()))
    if anchored:
        over["consistency"] = consistency_with_crop_scale(consistency or args.consistency, args.crop_scale)
    if init_from is not None:
        over["epochs"] = args.finetune_epochs
    cfg = train_config(args, **over)
    log(f"training {tag}{' (fine-tuned from the vanilla twin)' if init_from is not None else ''} "
        f"(seed {seed}, {cfg.epochs} epochs, consistency "
        f"{cfg.consistency if anchored else '-'}, dropout {dropout}) on {len(d['x_train'])} images ...")
    t = time.time()
    out_dir = Path(args.out) / f"{tag}-seed{seed}" if args.out else None
    model, _ = train(cfg, d["x_train"], d["y_train"], d["num_classes"], val=(d["x_val"], d["y_val"]),
                     out_dir=out_dir, verbose=args.verbose, backup=not args.no_backup, init_from=init_from)
    dt = time.time() - t
    log(f"  trained {tag} in {dt:.0f} s")
    return model, cfg.to_dict(), dt


# --------------------------------------------------------------------------- one seed
def run_seed(args, d, seed, log):
    """Trains the twins of one seed and scores every row.

    Returns ``(rows, models, info, timing, train_configs)``.
    """
    import amp_tf.baselines as bl
    from amp_tf.evaluation import evaluate_model
    from amp_tf.predictor import select_anchors

    sets = list(d["ood"])
    rows, info, timing, configs = {}, {}, {}, {}
    finetune = bool(args.finetune_epochs) and not args.skip_vanilla
    model_v = None
    if finetune:  # the main job's way: the vanilla twin first, the anchored model fine-tuned from it
        model_v, configs["vanilla"], timing["train_vanilla"] = _train(args, d, log, anchored=False,
                                                                      seed=seed, tag="vanilla")
    model_a, configs["anchored"], timing["train_anchored"] = _train(args, d, log, anchored=True,
                                                                    seed=seed, tag="anchored", init_from=model_v)
    anchors = select_anchors(d["x_train"], args.num_anchors, seed=seed)
    t = time.time()
    res, _, acc = evaluate_model(model_a, d["x_test"], d["y_test"], d["ood"], "anchored",
                                 anchors=anchors, positive=args.positive)
    timing["score_anchored"] = time.time() - t
    rows.update(res)
    info["anchored"] = {"id_accuracy": acc, "params": int(model_a.count_params())}
    if d.get("select_on_val", True):
        info["anchored"]["val_fpr95"] = val_fpr95(args, d, model_a, seed)
    log(f"  anchored: ID acc {acc:.4f}, scored in {timing['score_anchored']:.0f} s")
    models = {"anchored": model_a}
    if args.skip_vanilla:
        return rows, models, info, timing, configs

    if model_v is None:
        model_v, configs["vanilla"], timing["train_vanilla"] = _train(args, d, log, anchored=False,
                                                                      seed=seed, tag="vanilla")
    t = time.time()
    res, _, acc = evaluate_model(model_v, d["x_test"], d["y_test"], d["ood"], "vanilla",
                                 positive=args.positive)
    timing["score_vanilla"] = time.time() - t
    rows.update(res)
    info["vanilla"] = {"id_accuracy": acc, "params": int(model_v.count_params())}
    log(f"  vanilla: ID acc {acc:.4f}, scored in {timing['score_vanilla']:.0f} s")
    models["vanilla"] = model_v

    all_sets = {"id": d["x_test"], **d["ood"]}
    n_fit = args.fit_limit or len(d["x_train"])
    for name in (b for b in args.baselines if b in FITTED):
        t = time.time()
        out = bl.fit_and_score(name, model_v, d["x_train"][:n_fit], d["y_train"][:n_fit],
                               d["x_val"], d["y_val"], sets=all_sets)
        timing[f"baseline_{name}"] = time.time() - t
        rows.update(_rows("vanilla", _by_set({name: out}), sets, args.positive))
        log(f"  vanilla/{name} in {timing[f'baseline_{name}']:.0f} s")

    if args.mc_dropout > 0:
        model_d, configs["dropout"], timing["train_dropout"] = _train(
            args, d, log, anchored=False, seed=seed, dropout=args.mc_dropout, tag="dropout")
        t = time.time()
        res, _, acc = evaluate_model(model_d, d["x_test"], d["y_test"], d["ood"], "dropout",
                                     vanilla_names=("msp",), positive=args.positive)
        rows.update(res)
        mc = {k: bl.mc_dropout_scores(model_d, v, num_passes=args.mc_passes, seed=seed)
              for k, v in all_sets.items()}
        vals = {k: {f"mc_dropout_{s}": a for s, a in v.items()} for k, v in mc.items()}
        rows.update(_rows("dropout", vals, sets, args.positive))
        timing["score_dropout"] = time.time() - t
        info["dropout"] = {"id_accuracy": acc, "params": int(model_d.count_params()),
                           "dropout": args.mc_dropout, "mc_passes": args.mc_passes}
        log(f"  dropout: ID acc {acc:.4f} (deterministic), MC dropout scored in "
            f"{timing['score_dropout']:.0f} s")
        del model_d
    return rows, models, info, timing, configs


def run_ensemble(args, d, members, log):
    import numpy as np

    import amp_tf.baselines as bl

    t = time.time()
    all_sets = {"id": d["x_test"], **d["ood"]}
    vals = {k: {f"ensemble_{s}": a for s, a in bl.ensemble_scores(members, v).items()}
            for k, v in all_sets.items()}
    rows = _rows("ensemble", vals, list(d["ood"]), args.positive)
    probs = bl.ensemble_probs(members, d["x_test"]).mean(axis=0)
    acc = float(np.mean(probs.argmax(-1) == d["y_test"]))
    dt = time.time() - t
    log(f"ensemble of {len(members)}: ID acc {acc:.4f}, scored in {dt:.0f} s")
    return rows, {"id_accuracy": acc, "members": len(members)}, dt


# --------------------------------------------------------------------------- Table 8
def run_table8(args, d, seed, main_model, log):
    """FPR95 (mean over OOD sets) of every AMP variant per transform x K, one seed."""
    import numpy as np

    from amp_tf import metrics
    from amp_tf.evaluation import anchored_scorer, ood_results
    from amp_tf.predictor import select_anchors

    n = args.table8_eval_limit or None
    sets = {"id": d["x_test"][:n] if n else d["x_test"],
            **{k: (v[:n] if n else v) for k, v in d["ood"].items()}}
    y_id = d["y_test"][: len(sets["id"])]
    out, timing = {}, {}
    for transform in args.table8_transforms:
        if transform == args.consistency and main_model is not None:
            model, t_train = main_model, 0.0
            log(f"table8 {transform}: reusing the main anchored model of seed {seed}")
        else:
            model, _, t_train = _train(args, d, log, anchored=True, seed=seed,
                                       consistency=transform, tag=f"table8-{transform}")
        t = time.time()
        per_k = {}
        for k in args.table8_k:
            run = anchored_scorer(model, select_anchors(d["x_train"], k, seed=seed))
            vals = {name: run(x) for name, x in sets.items()}
            acc = float(np.mean(vals["id"]["predicted_class"] == y_id))
            res = ood_results(vals["id"], {k2: v for k2, v in vals.items() if k2 != "id"},
                              "anchored", args.positive)
            per_k[str(k)] = {
                "id_accuracy": acc,
                "mean": {key.split("/", 1)[1]: metrics.metrics_table(r).mean for key, r in res.items()},
                "per_set": {key.split("/", 1)[1]: r for key, r in res.items()},
            }
            log(f"  table8 {transform} K={k}: amp FPR95 {per_k[str(k)]['mean']['amp']['fpr95']:.4f}, "
                f"amp[mean,divide] {per_k[str(k)]['mean']['amp[mean,divide]']['fpr95']:.4f}, acc {acc:.4f}")
        timing[transform] = {"train_s": round(t_train, 1), "score_s": round(time.time() - t, 1)}
        out[transform] = {"consistency": consistency_with_crop_scale(transform, args.crop_scale),
                          "K": per_k}
        if model is not main_model:
            del model
    return {"seed": seed, "images_per_set": {k: len(v) for k, v in sets.items()},
            "transforms": out, "timing": timing}


# --------------------------------------------------------------------------- anchor draws
def run_anchor_draws(args, d, model, log):
    """FPR95 (mean over OOD sets) per AMP variant for several anchor sets of one model,
    and quantiles of tau (mean reduction; the sum reduction is exactly num_classes x it)
    with the exp calibration's divisor 1 + exp(tau), per set, for each draw."""
    import numpy as np

    from amp_tf.data.groups import group_summary
    from amp_tf.evaluation import anchored_scorer, ood_results
    from amp_tf.predictor import select_anchors

    sets = {"id": d["x_test"], **d["ood"]}
    draws = []
    for s in range(args.anchor_draws):
        run = anchored_scorer(model, select_anchors(d["x_train"], args.num_anchors, seed=s))
        vals = {name: run(x) for name, x in sets.items()}
        res = ood_results(vals["id"], {k: v for k, v in vals.items() if k != "id"}, "anchored", args.positive)
        q = (0.05, 0.5, 0.95)
        tau = {name: {"tau_q05_q50_q95": [float(np.quantile(-v["neg_tau"], p)) for p in q],
                      "one_plus_exp_tau_q05_q50_q95": [float(np.quantile(1 + np.exp(-v["neg_tau"]), p))
                                                       for p in q]}
               for name, v in vals.items()}
        draws.append({"anchor_seed": s,
                      "id_accuracy": float(np.mean(vals["id"]["predicted_class"] == d["y_test"])),
                      "fpr95": {key.split("/", 1)[1]: group_summary(r, True)["overall"]["fpr95"]
                                for key, r in res.items()},
                      "auroc": {key.split("/", 1)[1]: group_summary(r, True)["overall"]["auroc"]
                                for key, r in res.items()},
                      "tau": tau})
        log(f"  anchor draw {s}: amp FPR95 {draws[-1]['fpr95']['amp']:.4f}, amp[mean,divide] "
            f"{draws[-1]['fpr95']['amp[mean,divide]']:.4f}")
    summary = {}
    for score in draws[0]["fpr95"]:
        v = np.array([x["fpr95"][score] for x in draws])
        summary[score] = {"fpr95_mean": float(v.mean()), "fpr95_std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                          "fpr95_min": float(v.min()), "fpr95_max": float(v.max())}
    return {"K": args.num_anchors, "draws": draws, "summary": summary}


# --------------------------------------------------------------------------- aggregation
def aggregate(per_seed_rows):
    """Mean and std (ddof=1; 0 for one seed) over seeds of every metric, per set and for the set mean."""
    import numpy as np

    from amp_tf.metrics import metrics_table

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
    means = {v: float(np.mean([x[v] for x in vals])) for v in AMP_VARIANTS}
    return {"selected": min(means, key=means.get), "val_fpr95_mean": means}


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
    if chosen:
        L += [f"AMP variant selected on validation (lowest validation FPR95): `{chosen}`; it is the "
              "`AMP (selected)` row.", ""]
    L += ["| model/score | " + " | ".join(f"{g} FPR95" for g in names) + " | overall FPR95 | overall AUROC "
          "| anchor spread |", "|:--|" + "--:|" * (len(names) + 3)]

    def pm(e, m):
        return "–" if e is None else f"{100 * e[m]['mean']:.1f} ± {100 * e[m]['std']:.1f}"

    for k in _row_order(list(groups)):
        g = groups[k]
        label = f"**{k} = AMP (selected)**" if chosen and k == f"anchored/{chosen}" else k
        ov = g.get("overall")
        ci = f"{100 * ov['fpr95']['mean']:.1f} ± {100 * ov['fpr95']['ci95']:.1f}" if ov else "–"
        sp = spread.get(k.split("/", 1)[1]) if k.startswith("anchored/") else None
        sp_text = "–" if sp is None else f"{100 * sp['fpr95_std']:.1f}"
        L.append(f"| {label} | " + " | ".join(pm(g.get(n), "fpr95") for n in names) + f" | {ci} | "
                 f"{pm(ov, 'auroc')} | {sp_text} |")
    return L + [""]


def render_md(res):
    from amp_tf.report import convention_line

    agg, models, sets = res["rows"], res["models"], res["ood_sets"]
    keys = _row_order(list(agg))
    best = {m: (min if m == "fpr95" else max)(keys, key=lambda k: agg[k]["mean"]["mean"][m]) for m in METRICS}
    s = res["settings"]
    L = [f"# OOD quality: {res['id_set']} (ID) vs {', '.join(sets)}", "",
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
    L += render_groups(res)
    L += ["## Mean over the sets (all groups pooled; for reference)", "",
          "| model | score | ID acc | " + " | ".join(LABELS[m] for m in METRICS) + " |",
          "|:--|:--|--:|" + "--:|" * len(METRICS)]
    for k in keys:
        model, score = k.split("/", 1)
        cells = []
        for m in METRICS:
            c = _pm(agg[k], "mean", m)
            cells.append(f"**{c}**" if k == best[m] else c)
        L.append(f"| {model} | {score} | {_acc(models, model)} | " + " | ".join(cells) + " |")
    g = res.get("goal")
    if g:
        L += ["", "## Goal: AMP mean FPR95 ≥ 30 % below the best baseline, ID accuracy within 1 point", "",
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
    for m in METRICS:
        L += ["", f"## {LABELS[m]} per OOD set", "",
              "| model/score | " + " | ".join(sets) + " | mean |", "|:--|" + "--:|" * (len(sets) + 1)]
        for k in keys:
            L.append(f"| {k} | " + " | ".join(_pm(agg[k], x, m) for x in sets + ["mean"]) + " |")
    t8 = res.get("table8")
    if t8:
        ks = [str(k) for k in s["table8_k"]]
        L += ["", f"## Table 8 analogue (seed {t8['seed']}, FPR95 % mean over the OOD sets; "
                  f"{t8['images_per_set']['id']} ID test images per K)", ""]
        for score in ("amp", "amp[mean,divide]", "amp[sum,divide]", "neg_tau"):
            L += [f"`{score}`:", "", "| T \\ K | " + " | ".join(ks) + " | ID acc (K=" + ks[-1] + ") |",
                  "|:--|" + "--:|" * (len(ks) + 1)]
            for tr, v in t8["transforms"].items():
                L.append(f"| {tr} | " + " | ".join(f"{100 * v['K'][k]['mean'][score]['fpr95']:.1f}" for k in ks)
                         + f" | {100 * v['K'][ks[-1]]['id_accuracy']:.2f} |")
            L.append("")
    ad = res.get("anchor_draws")
    if ad:
        L += ["", f"## Anchor draws (seed {s['seeds'][0]}'s anchored model, K = {ad['K']}, "
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
    L += ["", "## Timing (s)", "", "| phase | seconds |", "|:--|--:|"]
    for k, v in res["timing"].items():
        L.append(f"| {k} | {v:.0f} |")
    return "\n".join(L) + "\n"


# --------------------------------------------------------------------------- main
@cli_errors
def main(argv=None):
    args = parse_args(argv)
    log = Log()
    import tensorflow as tf

    from amp_tf.training import write_json
    from speed import machine_info

    tf.get_logger().setLevel("ERROR")
    d = load_fmnist_suite(args)
    log(f"ID {d['id_set']}: train {len(d['x_train'])}, val {len(d['x_val'])}, test {len(d['x_test'])}; OOD: "
        + ", ".join(f"{k} ({len(v)})" for k, v in d["ood"].items()))
    near = [] if args.no_near else load_near_splits(args)
    for nd in near:
        log(f"near-OOD split {nd['id_set']}: train {len(nd['x_train'])}; OOD " + ", ".join(nd["ood"]))
        nd["select_on_val"] = False
    t = time.time()
    training_selection = select_training(args, d, log)
    timing_select = time.time() - t
    seeds = list(range(args.seed, args.seed + args.num_seeds))
    per_seed_rows, per_seed_info, timing, configs, members, first_anchored = [], [], {}, {}, [], None
    if training_selection:
        timing["select_training"] = timing_select
    for seed in seeds:
        rows, models, info, t, cfgs = run_seed(args, d, seed, log)
        for nd in near:  # each near split: its own twins, scored on its held-out classes only
            import copy

            a = copy.copy(args)
            a.mc_dropout = 0.0
            n_rows, n_models, n_info, n_t, _ = run_seed(a, nd, seed, log)
            for key, per_set in n_rows.items():
                rows.setdefault(key, {}).update(per_set)
            info.update({f"{k}@{nd['id_set']}": v for k, v in n_info.items()})
            for k, v in n_t.items():
                t[f"{nd['id_set']}_{k}"] = v
            del n_models
        per_seed_rows.append(rows)
        per_seed_info.append(info)
        configs = configs or cfgs
        for k, v in t.items():
            timing[f"seed{seed}_{k}"] = v
        if "vanilla" in models:
            members.append(models["vanilla"])
        if first_anchored is None:
            first_anchored = models["anchored"]
        del models
    ensemble_rows, ensemble_info = None, None
    if "ensemble" in args.baselines and len(members) >= 2:  # one model over all seeds: no std
        ensemble_rows, ensemble_info, timing["ensemble"] = run_ensemble(args, d, members, log)
    agg = aggregate(per_seed_rows)
    if ensemble_rows is not None:
        agg.update(aggregate([ensemble_rows]))
    models = aggregate_models([{k: v for k, v in i.items() if "@" not in k} for i in per_seed_info])
    groups = aggregate_groups(per_seed_rows)
    selection = {"training": training_selection, "variant": select_variant(per_seed_info),
                 "validation_ood": "amp_tf.data.corruptions.validation_ood_sets of the first "
                                   f"{args.val_ood_size} ID validation images"}
    if ensemble_info is not None:
        models["ensemble"] = {"id_accuracy": [ensemble_info["id_accuracy"]],
                              "id_accuracy_mean": ensemble_info["id_accuracy"], "id_accuracy_std": 0.0,
                              "members": ensemble_info["members"]}
    anchor_draws = None
    if args.anchor_draws > 0:
        t = time.time()
        log(f"anchor draws: {args.anchor_draws} anchor sets of K={args.num_anchors} for seed {seeds[0]}")
        anchor_draws = run_anchor_draws(args, d, first_anchored, log)
        timing["anchor_draws"] = time.time() - t
    table8 = None
    if args.table8:
        t = time.time()
        table8 = run_table8(args, d, seeds[0], first_anchored, log)
        timing["table8"] = time.time() - t
    res = {
        "benchmark": "ood_quality", "id_set": d["id_set"],
        "ood_sets": list(d["ood"]) + [n for nd in near for n in nd["ood"]],
        "positive": args.positive,
        "command": "python benchmarks/ood_quality.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "wall_time_s": None, "versions": versions(), "machine": machine_info(),
        "settings": {**{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                     "seeds": seeds, "consistency_effective": consistency_with_crop_scale(
                         args.consistency, args.crop_scale),
                     "train_images": len(d["x_train"]), "val_images": len(d["x_val"]),
                     "test_images": len(d["x_test"]),
                     "ood_images": {k: len(v) for k, v in d["ood"].items()},
                     "fit_images": min(args.fit_limit or len(d["x_train"]), len(d["x_train"])),
                     "normalization": {"mean": d["mean"].tolist(), "std": d["std"].tolist()},
                     "train_configs": configs},
        "models": models, "rows": agg, "groups": groups, "selection": selection,
        "goal": goal_check(agg, models),
        "per_seed": [{"seed": s, "models": i, "scores": r} for s, i, r in zip(seeds, per_seed_info, per_seed_rows)],
        "table8": table8, "anchor_draws": anchor_draws, "timing": {k: round(v, 1) for k, v in timing.items()},
    }
    if ensemble_rows is not None:
        res["ensemble_scores"] = ensemble_rows
    res["wall_time_s"] = round(time.time() - _T_START, 1)
    write_json(args.json, res)
    md = render_md(res)
    args.md.parent.mkdir(parents=True, exist_ok=True)
    args.md.write_text(md)
    print(md)
    log(f"done in {res['wall_time_s'] / 60:.1f} min; wrote {args.json} and {args.md}")
    return res


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
