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

    python -m benchmarks.quality.ood --quick                 # a few minutes on 2 CPU cores
    python -m benchmarks.quality.ood --table8 --mc-dropout 0.3   # the full run (BENCHMARKS.md)

Resumable per seed (`benchmarks.harness.seed_cache`): each finished seed is one JSON file
`<--cache>/seed<N>.json` (default: the --json path without .json) holding its rows, model info,
timing and its vanilla twin's logits (the ensemble is computed from them, float16), the first seed's
also the anchor draws and Table 8; the --select-grid choice is kept in `<--cache>/select_training/`.
`--resume` continues a killed run (at most the seed in progress is redone; other settings are
refused, naming each; another CODE_VERSION is redone with a line). The results JSON keeps the
aggregates only; each seed's rows stay in its seed file.

Per seed s (training seed; the train/val split is fixed by --seed), with the main
job's settings (`amp_tf.run.presets.FMNIST_RECIPE`, as trainers.fmnist: resnet_small, SGD 0.1, cosine with warm-up,
T = "all" every 5th step, K = 5 anchors, `amp_tf.recipe.NUM_ANCHORS`):

* the anchored model -> scored as the library ships it, as `benchmarks.quality.converged` does
  (`benchmarks.quality.converged_scoring`): `amp_tf.detection.detectors.select_detector` fits every
  candidate (every AMP variant, tau_reduction x calibration, and msp, energy, neg_tau on the calibrated
  logits; the anchored knn / mahalanobis / gram; amp+knn / amp+mahalanobis / amp+gram for each AMP
  variant and weight of `amp_tf.recipe.SELECT_WEIGHTS`) and selects on the validation OOD sets; every
  candidate is a row `anchored/<label>`, the selection is recorded per seed (and per near split), and
  `selection.shipped` (the lowest mean validation FPR95 over the seeds) names the shipped row;
* its vanilla twin (same backbone, schedule, epochs, seed) -> MSP, Energy, ODIN,
  MaxLogit, Entropy, and the fitted baselines of `amp_tf.detection.baselines`: Mahalanobis
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

Modules: this one (flags, main), `ood_seeds` (one seed's run and the caches), `ood_runs` (data,
`TrainConfig`s, selection, training and scoring), `ood_report` (aggregation over seeds, markdown), and
the shared `harness`. The training flags are the trainers' (`amp_tf.run.flags`, one
definition) and make `amp_tf.config.TrainConfig`s; the data is the main job's
loader (`amp_tf.run.pipeline.load_fmnist_suite`, near-OOD included); no argv goes
to another CLI.
"""

from __future__ import annotations

import time

_T_START = time.time()

import datetime  # noqa: E402
import itertools  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

if __name__ == "__main__" and not __package__:  # python benchmarks/quality/ood.py
    sys.exit("run it as a module from the repository root: python -m benchmarks.quality.ood")

from amp_tf.run.presets import FMNIST_RECIPE  # noqa: E402  (the main job's recipe: one definition)
from amp_tf.errors import cli_errors  # noqa: E402
from benchmarks.harness import ROOT  # noqa: E402
from benchmarks.harness.machine import Contention, machine_info, versions  # noqa: E402
from benchmarks.harness.results import Log, check_k, parse_quick, round_floats, write_json  # noqa: E402
from benchmarks.quality.ood_runs import FITTED, LIBRARY_CROP_SCALE, TABLE8_TRANSFORMS  # noqa: E402
from benchmarks.quality.ood_seeds import CODE_VERSION, SeedCache, check_caches  # noqa: E402,F401

#: Flags that change no seed's numbers: not in the cache's settings (a run may resume with other values).
RUN_FLAGS = ("json", "md", "cache", "resume", "quick", "num_seeds", "out", "overwrite", "verbose", "download",
             "data_dir", "backup_dir", "no_backup", "grid")

#: --quick: every part of the benchmark at a tiny scale (2 seeds so that the
#: ensemble and the std are exercised too).
QUICK = dict(num_seeds=2, epochs=1, train_limit=5000, eval_limit=300, width=8, fit_limit=2000,
             mc_dropout=0.0, mc_passes=5, table8=False, table8_transforms="none,all", table8_k="2,5",
             anchor_draws=2, select_grid="consistency_every=5,2")


# --------------------------------------------------------------------------- CLI
def add_training_flags(p, defaults):
    """The trainers' training flags (`amp_tf.run.flags`, one definition; `benchmarks.quality.ood_runs.train_config`
    maps them onto a TrainConfig), said for the benchmark; defaults from `defaults`."""
    from amp_tf.run.flags import add_training_flags as add

    add(p, defaults)
    f = p.flags
    f["seed"].help = ("base seed: the train/val split and the first training seed; "
                      "the seeds are seed .. seed + num_seeds - 1")
    f["finetune_epochs"].help = ("epochs of anchored fine-tuning (>0 trains the vanilla twin first and fine-tunes "
                                 "it into the anchored model); 0 = --epochs / off")
    f["backup_dir"].help = ("(accepted like the trainers' flag; unused here: the BackupAndRestore folders are "
                            "under --out)")


def add_data_flags(p, d):
    o = p.add_argument_group("data and output")
    o.add_argument("--data-dir", default=None, help="data folder (tfds data_dir, or the Fashion-MNIST IDX folder)")
    o.add_argument("--download", action="store_true", help="allow tensorflow-datasets to download missing data")
    o.add_argument("--out", default=None,
                   help="folder for per-model training output (checkpoints, TensorBoard, "
                        "BackupAndRestore: a killed run resumes); default: nothing written but the results")
    o.add_argument("--resume", action="store_true",
                   help="continue the run whose finished seeds are in --cache (same settings; refused otherwise, "
                        "naming each differing setting): a killed run loses at most the seed in progress")
    o.add_argument("--overwrite", action="store_true", help="(accepted like the trainers' flag; unused here)")
    o.add_argument("--num-anchors", type=int, default=d("num_anchors"),
                   help="K anchors at inference for the main table (default: the preset's, amp_tf.recipe.NUM_ANCHORS)")
    o.add_argument("--positive", default="id", choices=["id", "ood"],
                   help="metric convention: id (paper/ODIN) or ood (OpenOOD v1.5)")
    o.add_argument("--verbose", type=int, default=2, choices=[0, 1, 2],
                   help="Keras progress output: 1 = progress bar, 2 = one line per epoch")


def parser():
    from amp_tf.run.flags import Parser

    p = Parser(prog="python -m benchmarks.quality.ood", description=__doc__.split("\n\n")[0])
    add_training_flags(p, FMNIST_RECIPE)
    add_data_flags(p, FMNIST_RECIPE.get)
    add_benchmark_flags(p)
    return p


def add_benchmark_flags(p):
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
    g.add_argument("--cache", default=None, metavar="DIR",
                   help="one JSON per finished seed, seed<N>.json, with its rows, and the --select-grid choice "
                        "under select_training/ (default: the --json path without .json, e.g. "
                        "benchmarks/results/ood_protocol/ for --json benchmarks/results/ood_protocol.json; with "
                        "--quick and no --json runs/ood-quick/seeds); --resume continues from it")
    g.add_argument("--no-near", action="store_true",
                   help="skip the near-OOD group (its two class-holdout splits train their own twins)")
    g.add_argument("--select-grid", default="", metavar="GRID",
                   help="training settings to choose on validation, e.g. "
                        "'consistency=all,jitter_blur;consistency_every=5,2;epochs=3,6' (one anchored model "
                        "per combination, seed --seed; the best mean validation FPR95 is used for every seed)")
    g.add_argument("--val-ood-size", type=int, default=1000,
                   help="ID validation images (and as many per validation OOD set) used for selection")



def parse_args(argv=None):
    p = parser()
    args, _ = parse_quick(p, argv, QUICK)
    args.num_anchors = check_k(p, args.num_anchors, "--num-anchors")
    if args.num_seeds < 1 or args.epochs < 1 or args.mc_passes < 2:
        p.error("--num-seeds and --epochs must be >= 1, --mc-passes >= 2")
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
    if args.table8 and not args.table8_k:
        p.error("--table8-k: name at least one anchor count")
    if args.table8:
        args.table8_k = [check_k(p, k, "--table8-k") for k in args.table8_k]
    args.grid = parse_grid(args.select_grid, p)
    suffix, quick_default = ("_quick" if args.quick else ""), args.quick and args.json is None
    args.json = Path(args.json or ROOT / "benchmarks" / "results" / f"ood_quality{suffix}.json")
    args.md = Path(args.md) if args.md else args.json.with_suffix(".md")
    args.cache = Path(args.cache) if args.cache else (ROOT / "runs" / "ood-quick" / "seeds" if quick_default
                                                      else args.json.with_suffix(""))
    args.settings = {k: v for k, v in vars(args).items() if k not in RUN_FLAGS + ("settings",)}
    return args


def parse_grid(text, p):
    """'a=1,2;b=x' -> [{'a': 1, 'b': 'x'}, {'a': 2, 'b': 'x'}] (values cast like the flags)."""
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



# --------------------------------------------------------------------------- main
def load_data(args, log):
    """The ID suite and the near-OOD splits (each with its own held-out classes as OOD)."""
    from benchmarks.quality.ood_runs import load_suite

    d, near = load_suite(args, log)
    log(f"ID {d['id_set']}: train {len(d['x_train'])}, val {len(d['x_val'])}, test {len(d['x_test'])}; OOD: "
        + ", ".join(f"{k} ({len(v)})" for k, v in d["ood"].items()))
    return d, near


def settings(args, d, seeds, configs):
    """Every flag, and what they resolved to (images per set, normalisation, the TrainConfigs)."""
    from benchmarks.quality.ood_runs import consistency_with_crop_scale

    return {**{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "settings"},
            "seeds": seeds, "consistency_effective": consistency_with_crop_scale(args.consistency, args.crop_scale),
            "train_images": len(d["x_train"]), "val_images": len(d["x_val"]),
            "test_images": len(d["x_test"]),
            "ood_images": {k: len(v) for k, v in d["ood"].items()},
            "fit_images": min(args.fit_limit or len(d["x_train"]), len(d["x_train"])),
            "normalization": {"mean": d["mean"].tolist(), "std": d["std"].tolist()},
            "train_configs": configs}


@cli_errors
def main(argv=None):
    args = parse_args(argv)
    log = Log("ood_quality")
    cache, reused = check_caches(args, log)  # refuses before loading data or training anything
    import tensorflow as tf

    from benchmarks.quality.ood_report import (
        aggregate,
        aggregate_groups,
        aggregate_models,
        goal_check,
        render_md,
        select_shipped,
        select_variant,
    )
    from benchmarks.quality.ood_runs import run_ensemble
    from benchmarks.quality.ood_seeds import run_one_seed, training_selection

    tf.get_logger().setLevel("ERROR")
    if args.deterministic:
        tf.config.experimental.enable_op_determinism()
    contention = Contention()
    d, near = load_data(args, log)
    seeds = list(range(args.seed, args.seed + args.num_seeds))
    log(f"cache {args.cache} (reusing seeds {reused}); seeds {seeds}")
    sel_training, sel_seconds = training_selection(args, d, log)
    timing = {"select_training": sel_seconds} if sel_training else {}
    results = []
    for seed in seeds:
        r = cache.load(seed)
        if r is None:
            r = {"seed": seed, **run_one_seed(args, d, near, seed, seed == seeds[0], log)}
            cache.save(seed, r)
            log(f"seed {seed} done in {r['wall_s'] / 60:.1f} min; saved {cache.path(seed)}")
        results.append(r)
        timing.update({f"seed{seed}_{k}": v for k, v in r["timing"].items()})
    per_seed_rows, per_seed_info = [r["rows"] for r in results], [r["models"] for r in results]
    members = [r["vanilla_logits"] for r in results if "vanilla_logits" in r]
    ensemble_rows, ensemble_info = None, None
    if "ensemble" in args.baselines and len(members) >= 2:  # one model over all seeds: no std
        ensemble_rows, ensemble_info, timing["ensemble"] = run_ensemble(args, d, members, log)
    agg = aggregate(per_seed_rows)
    if ensemble_rows is not None:
        agg.update(aggregate([ensemble_rows]))
    models = aggregate_models([{k: v for k, v in i.items() if "@" not in k} for i in per_seed_info])
    groups = aggregate_groups(per_seed_rows)
    selection = {"training": sel_training, "variant": select_variant(per_seed_info),
                 "shipped": select_shipped(per_seed_info),
                 "validation_ood": "amp_tf.data.corruptions.validation_ood_sets of the first "
                                   f"{args.val_ood_size} ID validation images (seeded by each training seed)"}
    if ensemble_info is not None:
        models["ensemble"] = {"id_accuracy": [ensemble_info["id_accuracy"]],
                              "id_accuracy_mean": ensemble_info["id_accuracy"], "id_accuracy_std": 0.0,
                              "members": ensemble_info["members"]}
    res = {
        "benchmark": "ood_quality", "id_set": d["id_set"],
        "ood_sets": list(d["ood"]) + [n for nd in near for n in nd["ood"]],
        "positive": args.positive,
        "command": "python -m benchmarks.quality.ood " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "wall_time_s": None, "code_version": CODE_VERSION, "versions": versions(), "machine": machine_info(),
        "settings": settings(args, d, seeds, results[0]["train_configs"]),
        "models": models, "rows": agg, "groups": groups, "selection": selection,
        "goal": goal_check(agg, models),
        # each seed's own rows (and its vanilla twin's logits) stay in its seed file (--cache)
        "per_seed": [{k: v for k, v in r.items() if k not in ("rows", "vanilla_logits", "anchor_draws", "table8")}
                     for r in results],
        "table8": results[0].get("table8"), "anchor_draws": results[0].get("anchor_draws"),
        "timing": {k: round(v, 1) for k, v in timing.items()},
    }
    if ensemble_rows is not None:
        res["ensemble_scores"] = ensemble_rows
    res["steal_share"] = contention.steal_share()  # the hypervisor's share of the machine's CPU
    res["wall_time_s"] = round(time.time() - _T_START, 1)
    res["seeds_cpu_s"] = round(sum(r["cpu_s"] for r in results), 1)  # each seed's cost wherever it ran
    write_json(args.json, round_floats(res), indent=1)  # 6 digits: every candidate's rows stay under 2 MB
    md = render_md(res)
    args.md.parent.mkdir(parents=True, exist_ok=True)
    args.md.write_text(md)
    print(md)
    log(f"done in {res['wall_time_s'] / 60:.1f} min; wrote {args.json} and {args.md}")
    return res


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
