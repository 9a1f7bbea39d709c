"""Hyper-parameter search with KerasTuner for anchored training: T, its schedule, lr, width.

Searches the composition of the consistency transform T (presets of
amp_tf.method.augment), how often it is applied (``consistency_every``), the learning
rate and the width of ``resnet_small``, with the objective ``val_ood_auroc``
(maximised) that `amp_tf.OODMetricsCallback` writes into the Keras logs: AMP
separating the ID validation images from an ID-only OOD proxy (the same images
under a heavy Gaussian blur; no outlier exposure), or ``val_accuracy``
(--objective). Each trial builds and compiles its model with
amp_tf.run.training's ``build_model`` / ``compile_model`` from a ``TrainConfig`` and
trains on the seeded, per-epoch ``epoch_dataset`` (random crop + flip) with a
constant learning rate and the library's recipe otherwise (`amp_tf.recipe`:
coupled weight decay, per-sample T). Offline by default: Fashion-MNIST (--id; any set of
amp_tf.data with a train split works), with small --train-limit / --val-size.

Writes to --out: search.json (the settings), tuner/ (KerasTuner's directory: the
same command resumes an interrupted search, or reports a finished one; other
settings into the same --out are refused; --overwrite starts afresh), trials.csv and trials.md
(trial id, hyper-parameters, objective and the other validation metrics), and
best.json (best hyper-parameters and the full TrainConfig); the best config is
printed at the end.

    python -m trainers.tune                                    # RandomSearch, 10 trials x 3 epochs
    python -m trainers.tune --tuner hyperband --epochs 9 --objective val_accuracy --out runs/tune-hb
    python -m trainers.tune --max-trials 2 --epochs 1 --train-limit 512 --val-size 256 --width 4  # smoke
"""

from __future__ import annotations

import csv
import dataclasses
import json
import sys
import time

from amp_tf import recipe
from pathlib import Path

from amp_tf.cli.common import (
    check_args,
    check_data_dir,
    check_names,
    cli_errors,
    heavy_imports,
    split_names,
    versions,
)
from amp_tf.cli.early import check_tfds_prepared
from amp_tf.cli.names import check_arch
from amp_tf.contract import check_arch_width, check_learning_rate

OBJECTIVES = ("val_ood_auroc", "val_accuracy")
#: The base widths of resnet_small searched when --width is not given.
DEFAULT_WIDTHS = "8,16,32"
#: Reported next to the objective in trials.csv / trials.md.
METRIC_COLUMNS = ("val_ood_auroc", "val_ood_fpr95", "val_accuracy", "val_loss")


def parser():
    import argparse

    from amp_tf.cli.names import CONSISTENCY_PRESETS

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    s = p.add_argument_group("search")
    s.add_argument("--tuner", default="random", choices=["random", "hyperband"],
                   help="keras_tuner.RandomSearch or keras_tuner.Hyperband")
    s.add_argument("--objective", default="val_ood_auroc", choices=list(OBJECTIVES),
                   help="maximised: AUROC of AMP on the ID-only blur proxy, or ID validation accuracy")
    s.add_argument("--max-trials", type=int, default=10, help="number of trials (Hyperband: at most this many)")
    s.add_argument("--epochs", type=int, default=3, help="epochs per trial (Hyperband: the most a trial gets)")
    s.add_argument("--hyperband-factor", type=int, default=3, help="Hyperband's reduction factor")
    s.add_argument("--overwrite", action="store_true",
                   help="start afresh instead of resuming the search in --out (a search of the same settings "
                        "resumes, or reports its best trial when complete; one of other settings is refused)")
    h = p.add_argument_group("search space (comma lists; one value fixes a hyper-parameter)")
    h.add_argument("--consistency", default=",".join(CONSISTENCY_PRESETS),
                   help="candidate compositions of T: amp_tf.method.augment presets or names joined by '+'")
    h.add_argument("--consistency-every", default="1,2,5,10", help="candidate schedules: T on every n-th step")
    h.add_argument("--lr", default="0.01,0.3",
                   help="learning-rate range 'lo,hi' (log-uniform), or one value")
    h.add_argument("--width", default=None, help=f"candidate base widths of resnet_small (default: {DEFAULT_WIDTHS}; "
                   "refused with another --arch, which has a fixed width)")
    t = p.add_argument_group("training (fixed)")
    t.add_argument("--arch", default="resnet_small", help="backbone (amp_tf.models); --width needs resnet_small")
    t.add_argument("--batch-size", type=int, default=recipe.BATCH_SIZE, help="batch size")
    t.add_argument("--weight-decay", type=float, default=recipe.WEIGHT_DECAY,
                   help="SGD weight decay (momentum, weight decay mode and T's draws: amp_tf.recipe)")
    t.add_argument("--augment", default=recipe.AUGMENT, choices=["crop_flip", "none"], help="training augmentation")
    t.add_argument("--seed", type=int, default=0, help="seed of the split, the search, init, anchors and T")
    d = p.add_argument_group("data and output")
    d.add_argument("--id", default="fashion_mnist", help="ID data set (amp_tf.data name with a train split)")
    d.add_argument("--data-dir", default=None, help="data folder (tfds data_dir, or the Fashion-MNIST IDX folder)")
    d.add_argument("--download", action="store_true", help="allow tensorflow-datasets to download missing data")
    d.add_argument("--train-limit", type=int, default=10000, help="training images per trial (0 = all)")
    d.add_argument("--val-size", type=int, default=2000,
                   help="ID validation images held out of training (val_accuracy; the OOD callback's ID set)")
    d.add_argument("--ood-size", type=int, default=1000,
                   help="validation images (and their blurred copies) scored by the OOD callback")
    d.add_argument("--blur-sigma", type=float, default=3.0, help="Gaussian blur sigma (pixels) of the OOD proxy")
    d.add_argument("--num-anchors", type=int, default=recipe.NUM_ANCHORS, help="K anchors of the OOD callback")
    d.add_argument("--out", default=None, help="run folder (default: a new folder under runs/)")
    d.add_argument("--verbose", type=int, default=1, choices=[0, 1, 2], help="KerasTuner / Keras output")
    return p


def _ints(text, flag):
    try:
        vals = [int(v) for v in split_names(text)]
    except ValueError:
        raise ValueError(f"{flag}: expected a comma list of integers, got {text!r}.") from None
    if not vals:
        raise ValueError(f"{flag}: give at least one value.")
    return list(dict.fromkeys(vals))


def search_space(args):
    """Validated candidate values: ``{name: list}``, and ``lr`` as ``(lo, hi)`` (no TensorFlow)."""
    from amp_tf.cli.names import check_consistency

    consistency = list(dict.fromkeys(split_names(args.consistency)))
    if not consistency:
        raise ValueError("--consistency: give at least one composition of T.")
    for c in consistency:
        check_consistency(c)  # ValueError names the presets and transforms
    every = _ints(args.consistency_every, "--consistency-every")
    if min(every) < 0:
        raise ValueError(f"--consistency-every: expected values >= 0, got {every}.")
    try:
        lr = [float(v) for v in split_names(args.lr)]
    except ValueError:
        raise ValueError(f"--lr: expected 'lo,hi' or one value, got {args.lr!r}.") from None
    if len(lr) not in (1, 2):
        raise ValueError(f"--lr: expected 'lo,hi' or one value, all > 0, got {args.lr!r}.")
    for v in lr:
        check_learning_rate(v, "--lr")  # finite and > 0: the trainers' check
    check_arch_width(args.arch, args.width is not None)  # the one check (amp_tf.contract), as trainers.cifar's
    widths = _ints(args.width or DEFAULT_WIDTHS, "--width") if args.arch == "resnet_small" else []
    if widths and min(widths) < 1:
        raise ValueError(f"--width: expected values >= 1, got {widths}.")
    return {"consistency": consistency, "consistency_every": every, "lr": (min(lr), max(lr)), "width": widths}


def _hp(hp, name, values):
    return hp.Fixed(name, values[0]) if len(values) == 1 else hp.Choice(name, values)


def make_hypermodel(args, space, xtr, ytr, val, ood_id, ood_proxy, num_classes, mean, std):
    """The `keras_tuner.HyperModel`: `build` = TrainConfig -> build_model -> compile_model;
    `fit` = epoch_dataset + model.fit with an `OODMetricsCallback` before KerasTuner's callbacks."""
    import keras
    import keras_tuner
    import tensorflow as tf

    from amp_tf.run.callbacks import OODMetricsCallback
    from amp_tf.run.training import TrainConfig, build_model, compile_model, epoch_dataset

    base = TrainConfig(arch=args.arch, anchored=True, epochs=args.epochs, batch_size=args.batch_size,
                       weight_decay=args.weight_decay, augment=args.augment, seed=args.seed,
                       mean=tuple(mean.tolist()), std=tuple(std.tolist()))  # no milestones, no warm-up
    steps = len(xtr) // args.batch_size
    val_ds = tf.data.Dataset.from_tensor_slices((val[0], val[1])).batch(args.batch_size)

    class AnchoringHyperModel(keras_tuner.HyperModel):
        def config(self, hp):
            lo, hi = space["lr"]
            lr = hp.Fixed("lr", lo) if lo == hi else hp.Float("lr", lo, hi, sampling="log")
            cfg = dataclasses.replace(
                base, lr=lr, consistency=_hp(hp, "consistency", space["consistency"]),
                consistency_every=_hp(hp, "consistency_every", space["consistency_every"]))
            if space["width"]:
                cfg.backbone_kwargs = {"width": _hp(hp, "width", space["width"])}
            return cfg

        def build(self, hp):
            cfg = self.config(hp)
            keras.utils.set_random_seed(cfg.seed)  # the same init stream for every trial
            model = build_model(cfg, xtr.shape[1:], num_classes)
            compile_model(model, cfg, steps)
            model(xtr[:2])  # built: KerasTuner saves/restores weights and the build config
            return model

        def fit(self, hp, model, *args_, epochs=1, initial_epoch=0, callbacks=(), verbose=1, **kwargs):
            cfg = self.config(hp)
            ds, n = epoch_dataset(xtr, ytr, cfg.batch_size, cfg.seed, epochs, initial_epoch, cfg.augment,
                                  cfg.crop_padding)
            ood_cb = OODMetricsCallback(ood_id, {"blur_proxy": ood_proxy}, num_anchors=args.num_anchors,
                                        every=1, seed=args.seed, verbose=0)
            return model.fit(ds, epochs=epochs, initial_epoch=initial_epoch, steps_per_epoch=n,
                             validation_data=val_ds, callbacks=[ood_cb, *callbacks], verbose=verbose,
                             shuffle=False)

    return AnchoringHyperModel()


def make_tuner(args, hypermodel, out):
    import keras_tuner

    objective = keras_tuner.Objective(args.objective, direction="max")
    common = dict(objective=objective, seed=args.seed, directory=str(out), project_name="tuner",
                  overwrite=args.overwrite)
    if args.tuner == "random":
        return keras_tuner.RandomSearch(hypermodel, max_trials=args.max_trials, **common)
    tuner = keras_tuner.Hyperband(hypermodel, max_epochs=args.epochs, factor=args.hyperband_factor,
                                  hyperband_iterations=1, **common)
    tuner.oracle.max_trials = args.max_trials  # Hyperband has no max_trials of its own
    return tuner


def _value_at(trial, name):
    """The metric `name` of `trial` at its best step (else its last value), or None."""
    try:
        hist = trial.metrics.get_history(name)
    except (KeyError, ValueError):
        return None
    if not hist:
        return None
    for obs in hist:
        if trial.best_step is not None and obs.step == trial.best_step:
            return float(obs.value[0] if isinstance(obs.value, (list, tuple)) else obs.value)
    last = hist[-1].value
    return float(last[0] if isinstance(last, (list, tuple)) else last)


def trials_table(tuner, objective):
    """One row per trial: trial_id, status, the hyper-parameters, the objective, other metrics."""
    rows = []
    for tid, trial in sorted(tuner.oracle.trials.items()):
        row = {"trial_id": tid, "status": str(trial.status)}
        row.update({k: v for k, v in trial.hyperparameters.values.items()})
        row[objective] = None if trial.score is None else float(trial.score)
        row["best_epoch"] = None if trial.best_step is None else int(trial.best_step) + 1
        for m in METRIC_COLUMNS:
            if m != objective:
                row[m] = _value_at(trial, m)
        rows.append(row)
    return rows


def _columns(rows, objective):
    cols = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    head = ["trial_id", "status"]
    hps = [c for c in cols if c not in head + [objective, "best_epoch", *METRIC_COLUMNS]]
    return head + hps + [objective, "best_epoch"] + [m for m in METRIC_COLUMNS if m != objective and m in cols]


def write_tables(out, rows, objective):
    """trials.csv (all trials, by id) and trials.md (best first)."""
    cols = _columns(rows, objective)
    with open(out / "trials.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in cols})

    def fmt(v):
        if v is None:
            return ""
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    ranked = sorted(rows, key=lambda r: (r.get(objective) is None, -(r.get(objective) or 0.0)))
    lines = [f"# Trials ({len(rows)}), objective `{objective}` (max), best first", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in ranked]
    (out / "trials.md").write_text("\n".join(lines) + "\n")
    return out / "trials.csv", out / "trials.md"


@cli_errors
def main(argv=None):
    args = parser().parse_args(argv)
    t0 = time.time()
    check_arch(args.arch)  # an unknown --arch first (before what its --width may be)
    _check_counts(args)
    space = search_space(args)
    check_data_dir(args.data_dir, args.download)
    check_names([args.id])
    check_tfds_prepared([args.id], args.data_dir, args.download, "--id")
    out, resume = tune_folder(args)
    heavy_imports()  # after every check that needs no data
    from amp_tf import data
    from amp_tf.run.pipeline import load_id

    d = load_id(args.id, val_size=args.val_size, seed=args.seed, train_limit=args.train_limit or None,
                eval_limit=1, data_dir=args.data_dir, download=args.download)
    if len(d.x_train) < args.batch_size:
        raise ValueError(f"{len(d.x_train)} training images, fewer than one batch of {args.batch_size}; "
                         "lower --batch-size or --val-size, or raise --train-limit.")
    x_train, y_train, x_val, y_val, mean, std = d.x_train, d.y_train, d.x_val, d.y_val, d.mean, d.std
    n_ood = min(args.ood_size, len(x_val))
    ood_id, ood_proxy = x_val[:n_ood], data.gaussian_blur(x_val[:n_ood], args.blur_sigma)
    start_folder(args, out, resume)
    print(f"[tune] {args.id}: train {len(x_train)}, val {len(x_val)}; OOD proxy: {n_ood} val images blurred "
          f"(sigma {args.blur_sigma}); {args.tuner} search, objective {args.objective}, "
          f"{args.max_trials} trial(s) x {args.epochs} epoch(s)")
    print(f"[tune] space: {json.dumps(space)}")

    hypermodel = make_hypermodel(args, space, x_train, y_train, (x_val, y_val), ood_id, ood_proxy,
                                 d.num_classes, mean, std)
    tuner = make_tuner(args, hypermodel, out)
    tuner.search(epochs=args.epochs, verbose=args.verbose)
    extra = {"search_space": space, "normalization": {"mean": mean.tolist(), "std": std.tolist()}}
    return _report_best(args, tuner, hypermodel, out, extra, t0)


def _check_counts(args):
    """ValueError naming the flag for a number out of its range: the trainers' checks (`check_args`: --batch-size,
    --weight-decay, --num-anchors, --val-size, --blur-sigma, --seed), the tuner's own counts."""
    import argparse

    check_args(argparse.Namespace(batch_size=args.batch_size, weight_decay=args.weight_decay,
                                  num_anchors=args.num_anchors, val_size=args.val_size, blur_sigma=args.blur_sigma,
                                  seed=args.seed))
    for flag, v, lo in (("--max-trials", args.max_trials, 1), ("--epochs", args.epochs, 1),
                        ("--ood-size", args.ood_size, 10), ("--hyperband-factor", args.hyperband_factor, 2)):
        if v < lo:
            raise ValueError(f"{flag}: expected >= {lo}, got {v}.")
    if args.train_limit < 0:
        raise ValueError(f"--train-limit: expected an int >= 0 (0 = all training images), got {args.train_limit}.")


#: What --out records of a search (its settings), to resume it or refuse another search into it.
SEARCH_FILE = "search.json"
#: Flags that may differ between a search and its resumption (they change no trial).
RUNTIME_FLAGS = ("out", "overwrite", "verbose", "data_dir", "download")


def search_settings(args):
    """The flags that define a search (all but `RUNTIME_FLAGS`), as search.json stores them."""
    return json.loads(json.dumps({k: v for k, v in sorted(vars(args).items()) if k not in RUNTIME_FLAGS}))


def stored_search(out):
    """The settings of the search in `out` (its search.json; best.json's args for a search made before it),
    or None when `out` holds no search; ValueError for a search whose settings were not recorded."""
    out = Path(out)
    for name, key in ((SEARCH_FILE, "settings"), ("best.json", "args")):
        try:
            saved = json.loads((out / name).read_text())[key]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        return {k: v for k, v in saved.items() if k not in RUNTIME_FLAGS}
    if (out / "tuner").is_dir():
        raise ValueError(f"--out {out} holds a trainers.tune search (tuner/) whose settings were not recorded, so "
                         "it cannot be resumed safely; pass --overwrite to start afresh, or another --out.")
    return None


def tune_folder(args):
    """`(--out, resume)`, checked before TensorFlow (default: runs/tune-<id>-<time>): the rules of an output
    folder (`check_output_folder`: a file, a training run's or a user's folder refused); a search of the same
    settings in it is resumed, one of other settings refused naming them; --overwrite starts afresh."""
    import datetime as dt

    from amp_tf.run.runfolder import check_output_folder

    stamp = f"{dt.datetime.now():%Y%m%d-%H%M%S}"
    out = Path(args.out) if args.out else Path("runs") / f"tune-{args.id.replace('/', '_')}-{stamp}"
    marker = SEARCH_FILE if (out / SEARCH_FILE).is_file() else "tuner"
    stored = None if args.overwrite or not out.is_dir() else stored_search(out)
    if stored is None:
        return check_output_folder(out, marker, args.overwrite, "trainers.tune"), False
    now = search_settings(args)
    differ = [k for k in sorted(set(stored) | set(now)) if stored.get(k) != now.get(k)]
    if differ:
        said = "; ".join(f"--{k.replace('_', '-')} {stored.get(k)!r} there, {now.get(k)!r} now" for k in differ)
        raise ValueError(f"--out {out} holds a trainers.tune search with other settings ({said}); run it with the "
                         "same settings to resume it, pass --overwrite to start afresh, or another --out.")
    return check_output_folder(out, marker, True, "trainers.tune"), True


def start_folder(args, out, resume):
    """Makes --out (replacing an earlier output with --overwrite) and records the search's settings; a
    resumed search keeps its folder (KerasTuner reloads tuner/ and runs the trials still to do)."""
    import shutil

    from amp_tf.run.files import write_json

    if resume:
        print(f"[tune] resuming the search in {out} (same settings; trials already done are kept)")
        return
    if out.exists() and any(out.iterdir()):
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / SEARCH_FILE, {"tool": "trainers.tune", "settings": search_settings(args)})
    print(f"[tune] run folder: {out}")


def _report_best(args, tuner, hypermodel, out, extra, t0):
    """Writes trials.csv / trials.md and best.json (with `extra`), prints the best trial; returns best.json's dict."""
    from amp_tf.run.files import write_json

    rows = trials_table(tuner, args.objective)
    csv_path, md_path = write_tables(out, rows, args.objective)
    done = [r for r in rows if r.get(args.objective) is not None]
    if not done:
        raise ValueError(f"no trial finished with a value of {args.objective}; see {out / 'tuner'}.")
    best_row = max(done, key=lambda r: r[args.objective])
    best_hp = tuner.oracle.get_trial(best_row["trial_id"]).hyperparameters
    cfg = hypermodel.config(best_hp.copy())
    best = {"trial_id": best_row["trial_id"], "objective": args.objective, "score": best_row[args.objective],
            "hyperparameters": {k: v for k, v in best_hp.values.items() if not k.startswith("tuner/")},
            "train_config": cfg.to_dict(), "id_set": args.id, "tuner": args.tuner,
            "search_space": extra["search_space"], "normalization": extra["normalization"],
            "args": vars(args), "versions": versions(), "wall_time_s": round(time.time() - t0, 1)}
    write_json(out / "best.json", best)
    flags = [f"--lr {cfg.lr:.4g}", f"--consistency {cfg.consistency}",
             f"--consistency-every {cfg.consistency_every}"]
    if "width" in cfg.backbone_kwargs:
        flags.append(f"--width {cfg.backbone_kwargs['width']}")
    print(f"[tune] trials table: {csv_path}, {md_path}")
    print(f"[tune] best trial {best['trial_id']}: {args.objective} = {best['score']:.4f}")
    print(json.dumps(best["hyperparameters"], indent=2))
    print(f"[tune] as trainer flags: {' '.join(flags)}   (search took {time.time() - t0:.0f} s)")
    return best


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
