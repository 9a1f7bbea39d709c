"""Score a saved model on an ID set and OOD sets; write the report and plots.

An anchored model (`AnchoredModel`, as the trainers save it) is scored with AMP
over K anchors picked (with --seed) from the ID training split, plus every AMP
variant and MSP / Energy on the calibrated logits; a plain (vanilla) Keras
classifier with the logit scores of amp_tf.method.scores and ODIN; --scores names
any other detector amp_tf.detection.detectors offers for the model kind (KNN,
Mahalanobis, Gram, ReAct, ..., fitted on the ID training split). Images go in as
raw pixels: the model carries its own normalisation (the ID training
statistics, saved in the .keras file). Nothing is resized or converted unless
asked: a size mismatch needs --resize, a grayscale/RGB mismatch needs
--channels. --out must be a new or empty folder (or --overwrite): a training
run's folder is never written into.

stdout gets the report in --format; --out gets report.json, report.<format> and
PNG plots (score densities, ROC per OOD set, AUROC vs blur level). Progress goes
to stderr. User errors (unknown set, data not on this machine, not a model file,
size or channel mismatch) print one "error: ..." line and exit with code 2.

    python -m eval.ood --model runs/fmnist/anchored.keras --id fashion_mnist \\
        --ood digits,fmnist_blur_1,fmnist_blur_3,fmnist_blur_5 --out runs/fmnist/eval
    python -m eval.ood --model runs/fmnist/vanilla.keras --id fashion_mnist --ood digits \\
        --scores msp,energy,odin --format csv > vanilla.csv
    python -m eval.ood --model runs/c10/anchored.keras --id cifar10 --data-dir ~/tensorflow_datasets \\
        --ood svhn_cropped,dtd,folder:/data/iSUN --resize tf --positive ood --format json
    python -m eval.ood --model runs/fmnist/anchored.keras --id fashion_mnist \\
        --ood folder:/data/letters_rgb_32 --resize pil_bicubic --channels   # other size, RGB
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from amp_tf import recipe
from amp_tf.cli.common import (
    add_limit_alias,
    add_preset_flags,
    check_names,
    cli_errors,
    parse_cli,
    split_names,
    versions,
)
from amp_tf.cli.early import check_tfds_prepared
from amp_tf.run.flags import check_ranges


def parser():
    import argparse

    from amp_tf.cli.common import Parser
    from amp_tf.cli.names import RESIZE_METHODS

    p = Parser(description=__doc__.split("\n\n")[0])  # keeps its flags by dest (presets, eval.resize_study)
    p.add_argument("--model", required=True, help="a .keras model saved by the trainers (anchored or vanilla)")
    p.add_argument("--id", required=True, help="ID data set name (its train split gives anchors/statistics, "
                                               "its test split the ID scores)")
    p.add_argument("--ood", required=True,
                   help="comma list of OOD set names (amp_tf.data.names(include_patterns=True), folder:<path>)")
    p.add_argument("--scores", default="all",
                   help="comma list of detectors, or 'all' (the scores of one pass, no fitting). Every detector "
                        "that amp_tf.detection.detectors offers for the model kind: anchored models: amp, "
                        "amp[mean,divide], amp[sum,exp], amp[sum,divide], msp, energy, neg_tau ('all') and knn, mahalanobis, amp+knn, amp+mahalanobis "
                        "(fitted on the --id training split); vanilla models: amp, energy, entropy, max_logit, "
                        "msp, odin ('all') and gram, knn, mahalanobis, mc_dropout_*, react, temperature_scaling "
                        "(fitted on the --id training split, or its held-out last tenth)")
    p.add_argument("--positive", default="id", choices=["id", "ood"],
                   help="metric convention: id (paper/ODIN) or ood (OpenOOD v1.5)")
    p.add_argument("--format", default="md", choices=["md", "csv", "json"],
                   help="printed to stdout and written as report.<format> (report.json is always written)")
    p.add_argument("--out", default=None, help="report folder, new or empty (default: runs/eval-<model>-<time>)")
    p.add_argument("--overwrite", action="store_true", help="clear a non-empty --out first")
    p.add_argument("--num-anchors", type=int, default=recipe.NUM_ANCHORS, help="K anchors for AMP (anchored models)")
    p.add_argument("--seed", type=int, default=0, help="seed of the anchor choice")
    p.add_argument("--data-dir", default=None, help="tfds data_dir (or the Fashion-MNIST IDX folder)")
    p.add_argument("--download", action="store_true", help="allow tensorflow-datasets to download missing data")
    p.add_argument("--eval-limit", type=int, default=None,
                   help="score at most N images per set (ID test and each OOD)")
    add_limit_alias(p)
    p.add_argument("--train-limit", type=int, default=None,
                   help="read at most N ID training images (anchor pool, statistics)")
    p.add_argument("--resize", default=None, choices=list(RESIZE_METHODS),
                   help="resize images of another size to the model's (default: a size mismatch is an error)")
    p.add_argument("--channels", action="store_true",
                   help="convert grayscale <-> RGB to the model's channel count (default: a mismatch is an error)")
    p.add_argument("--batch-size", type=int, default=256, help="scoring batch size")
    p.add_argument("--odin-temperature", type=float, default=1000.0, help="ODIN temperature (vanilla models)")
    p.add_argument("--odin-epsilon", type=float, default=0.0014, help="ODIN input perturbation (vanilla models)")
    p.add_argument("--no-plots", action="store_true", help="write the report files only, no PNG plots")
    p.add_argument("--verbose", type=int, default=1, choices=[0, 1, 2], help="progress messages on stderr")
    return add_preset_flags(p)


_EXPECTED = ("expected a .keras file written by model.save(...) (e.g. anchored.keras or vanilla.keras "
             "from the trainers)")


def check_model_path(path):
    """The checks of --model that need no TensorFlow: a complete .keras archive (`amp_tf.run.files`)."""
    from amp_tf.run.files import check_keras_file

    return check_keras_file(path, "--model")


def load_model(path):
    """The Keras model in `path` (anchored or plain); ValueError/OSError with a clear message else."""
    import keras

    from amp_tf.method.anchoring import AnchoredModel
    from amp_tf.run.files import load_keras_model

    model = load_keras_model(path, "--model")
    net = model.backbone if isinstance(model, AnchoredModel) else model
    try:
        rank = len(net.input_shape) if isinstance(net, keras.Model) else 0
    except (AttributeError, ValueError):  # subclassed models without a defined input
        rank = 0
    if rank != 4:
        raise ValueError(f"--model {path}: loaded a {type(model).__name__} that is not an image classifier "
                         f"taking (batch, height, width, channels) images; {_EXPECTED}.")
    from amp_tf.contract import check_logits_head

    return check_logits_head(model if net is model else net, f"--model {path}") and model


def model_geometry(model, id_shape=None):
    """(anchored, (height, width), channels) of the images the model takes; a model that takes any
    size (``(None, None, C)``) takes the ID set's images as they are (`id_shape`, a callable)."""
    from amp_tf.method.anchoring import AnchoredModel

    anchored = isinstance(model, AnchoredModel)
    shape = (model.backbone if anchored else model).input_shape
    h, w, c = shape[1:]
    if (h is None or w is None) and id_shape is not None:
        h, w = (d if d is not None else s for d, s in zip((h, w), id_shape()[:2]))
    if h is None or w is None:
        raise ValueError(f"the model takes images of any size ({shape}) and the ID set's images differ in size; "
                         "pass --resize with a fixed-size model.")
    return anchored, (int(h), int(w)), int(c) // 2 if anchored else int(c)


def _id_shape(args):
    from amp_tf import data

    return data.load(args.id, "test", data_dir=args.data_dir, download=args.download).image_shape


def valid_scores(anchored):
    """The --scores of a model kind: every detector of `amp_tf.detection.detectors` (its registry, `names`
    and `KINDS`) that scores one model of that kind, in the report's order (an anchored model's: the AMP
    pass's scores, the anchored features, their combinations). Ensembles (a list of models) are not offered."""
    from amp_tf.detection.detectors import COMBINATIONS, FEATURE_NAMES, KINDS, names
    from amp_tf.detection.detectors.base import PLAIN
    from amp_tf.method.predictor import AMP_SCORES

    if not anchored:
        return [n for n in names(anchored=False) if PLAIN in KINDS.get(n, (PLAIN,))]
    order = [*AMP_SCORES, *FEATURE_NAMES, *COMBINATIONS]
    return sorted(names(anchored=True), key=lambda n: (order.index(n) if n in order else len(order), n))


def default_scores(anchored):
    """--scores all: the scores that need no fitting (one pass): the AMP pass's of an anchored model, the
    logit scores and ODIN of a vanilla one. The fitted detectors are scored when named."""
    from amp_tf.method import scores
    from amp_tf.method.predictor import AMP_SCORES

    return list(AMP_SCORES) if anchored else sorted(scores.names(needs_model=False, needs_fit=False) + ["odin"])


def choose_scores(text, anchored):
    """The detector names of --scores: an anchored model's in `valid_scores` order (the report's)."""
    from amp_tf.contract import check_scores

    from amp_tf.detection.detectors import KINDS
    from amp_tf.detection.detectors.base import ENSEMBLE

    valid = valid_scores(anchored)
    asked = default_scores(anchored) if text.strip() == "all" else split_names(text)
    ensembles = [s for s in asked if KINDS.get(s) == (ENSEMBLE,)]
    if ensembles:
        raise ValueError(f"--scores: {', '.join(ensembles)} score(s) a list of models (an ensemble's members); "
                         "eval.ood scores one --model. Use amp_tf.detection.detectors.fit_all([...], [model1, "
                         "model2, ...]) for an ensemble.")
    asked = check_scores(asked, valid, "anchored" if anchored else "vanilla")
    return [s for s in valid if s in asked] if anchored else asked


def out_path(args, prefix="eval", tool="eval.ood"):
    """--out (default runs/<prefix>-<model>-<time>), checked: new or empty (or --overwrite), never a
    training run's folder (`check_output_folder`). No side effect: runs before any work (eval.ood and
    eval.resize_study)."""
    import datetime as dt

    from amp_tf.run.runfolder import check_output_folder

    stamp = f"{dt.datetime.now():%Y%m%d-%H%M%S}"
    out = Path(args.out) if args.out else Path("runs") / f"{prefix}-{Path(args.model).stem}-{stamp}"
    return check_output_folder(out, "report.json", args.overwrite, tool)


def _out_folder(args):
    """`out_path`, cleared when --overwrite replaces it."""
    import shutil

    out = out_path(args)
    if out.exists() and any(out.iterdir()):
        shutil.rmtree(out)
    return out


def combine(args, given):
    """Checks of eval.ood's flags that need no data and no TensorFlow (run before both)."""
    ood_names = list(dict.fromkeys(split_names(args.ood or "")))
    if not ood_names and not getattr(args, "dry_run", False):
        raise ValueError("--ood: give at least one OOD set name.")
    check_names([n for n in [args.id] + ood_names if n is not None])  # unknown names: before any loading
    check_files(args, ood_names)
    if not args.dry_run:
        out_path(args)


def check_files(args, ood_names=()):
    """The checks that eval.ood and eval.resize_study share, before TensorFlow: --seed, and (not on a dry
    run, which reads nothing) --model a complete .keras file and the tfds sets of --id / --ood prepared."""
    check_ranges({"seed": args.seed})  # the trainers' range (amp_tf.run.flags.RANGES)
    if not args.dry_run:  # --model may be missing or not there yet
        check_model_path(args.model)
        check_tfds_prepared([args.id], args.data_dir, args.download, "--id")
        check_tfds_prepared(ood_names, args.data_dir, args.download, "--ood")


def fit_splits(names, anchored):
    """`(train, val)`: whether the detectors `names` of a model kind are fitted on ID training images (AMP's
    anchor pool, the feature detectors) and on held-out ID validation images (the `fit_on` of each detector)."""
    from amp_tf.detection import detectors

    fit_on = {detectors.get(n, anchored=anchored).fit_on for n in names}
    return anchored or "train" in fit_on, "val" in fit_on


def id_fit_data(args, names, anchored, geo, log):
    """`(id_train, id_val)` for `fit_all`: the --id training split (at most --train-limit images), its last
    tenth (at least 20 images) held out as validation when a detector is fitted on it; None where unused."""
    from amp_tf.data.loading import load_images

    train, val = fit_splits(names, anchored)
    if not (train or val):
        return None, None
    log(f"reading the {args.id} training split (" + ("anchor pool, " if anchored else "") + "fitted detectors) ...")
    x, y, _ = load_images(args.id, "train", limit=args.train_limit, **geo)
    if anchored and args.num_anchors > len(x):
        raise ValueError(f"--num-anchors {args.num_anchors}: the {args.id} train split has only "
                         f"{len(x)} images.")
    if not val:
        return (x, y), None
    n_val = max(20, len(x) // 10)
    if len(x) < 2 * n_val:
        raise ValueError(f"--scores {','.join(names)}: fitting on held-out ID validation images needs at least "
                         f"{2 * n_val} {args.id} training images, got {len(x)}; raise --train-limit.")
    return (x[:-n_val], y[:-n_val]), (x[-n_val:], y[-n_val:])


def fit_detectors(args, model, anchored, names, geo, log):
    """`detectors.fit_all` for --scores, fitted on the ID data as the library does (`id_fit_data`): AMP
    over --num-anchors training images (seeded with --seed), the feature and fitted detectors, ODIN."""
    from amp_tf.detection import detectors

    id_train, id_val = id_fit_data(args, names, anchored, geo, log)
    if not anchored:
        odin = {"odin": {"temperature": args.odin_temperature, "epsilon": args.odin_epsilon}}
        return detectors.fit_all(names, model, id_train=id_train, id_val=id_val, batch_size=args.batch_size,
                                 options={k: v for k, v in odin.items() if k in names})
    return detectors.fit_all(names, model, id_train=id_train, id_val=id_val, batch_size=args.batch_size,
                             num_anchors=args.num_anchors, seed=args.seed)


def shipped_detector(model_path, model, log):
    """The run's shipped detector when `model_path` is a run folder's anchored model with a saved detector
    (`detector.json` beside it), attached to `model`; else None (the report then has no `shipped` row)."""
    from amp_tf.detection.detectors import has_detector, load_detector

    folder = Path(model_path).parent
    if not has_detector(folder):
        return None
    det = load_detector(folder, model)
    log(f"the run's shipped detector {det.label} (threshold {det.threshold:.4g}): the row `anchored/shipped`")
    return det


def results_of(args, model, kind, id_vals, id_labels, ood_vals, size, channels, seconds):
    """The report dict of one scored model (report.json)."""
    import numpy as np

    from amp_tf.detection.evaluation import ood_results

    acc = None
    out_classes = (model.backbone if kind == "anchored" else model).output_shape[-1]
    if id_labels.min() >= 0 and id_labels.max() < out_classes:
        acc = float(np.mean(id_vals["predicted_class"] == id_labels))
    return {
        "title": f"{Path(args.model).name}: {args.id} (ID) vs " + ", ".join(ood_vals),
        "id_set": args.id, "ood_sets": list(ood_vals), "positive": args.positive, "seed": args.seed,
        "model_path": str(args.model), "model_kind": kind,
        "versions": versions(),
        "config": {"args": vars(args), "num_anchors": args.num_anchors if kind == "anchored" else None,
                   "image_size": list(size), "channels": channels},
        "models": {kind: {"id_accuracy": acc, "params": int(model.count_params())}},
        "scores": ood_results(id_vals, ood_vals, kind, args.positive),
        "wall_time_s": round(seconds, 1),
    }


@cli_errors
def main(argv=None):
    args = parse_cli(parser(), argv, "eval", "eval.ood", combine=combine)
    t0 = time.time()

    def log(msg):
        if args.verbose:
            print(f"[eval.ood] {msg}", file=sys.stderr, flush=True)

    from amp_tf.data.loading import load_images
    from amp_tf.detection.evaluation import score_arrays
    from amp_tf.run.report import render, write_report

    ood_names = list(dict.fromkeys(split_names(args.ood)))
    model = load_model(args.model)
    anchored, size, channels = model_geometry(model, lambda: _id_shape(args))
    names = choose_scores(args.scores, anchored)
    kind = "anchored" if anchored else "vanilla"
    log(f"{args.model}: {kind} model, {size[0]}x{size[1]}x{channels} images; scores: {', '.join(names)}")
    geo = dict(image_size=size, channels=channels, resize=args.resize, convert_channels=args.channels,
               data_dir=args.data_dir, download=args.download)

    out = _out_folder(args)
    ood_x = {}  # OOD sets first: a missing or mismatched set fails before the long reads
    for n in ood_names:
        ood_x[n], _, _ = load_images(n, "test", limit=args.eval_limit, **geo)
        log(f"read {n}: {len(ood_x[n])} images")
    dets = fit_detectors(args, model, anchored, names, geo, log)
    shipped = shipped_detector(args.model, model, log) if anchored else None

    def score(name, x):
        vals = dets.score(x)
        if shipped is not None:  # exactly what the run ships (serving/, model.tflite)
            vals["shipped"] = shipped.score(x, args.batch_size)
        log(f"scored {name}: {len(x)} images")
        return vals

    x_id, id_labels, _ = load_images(args.id, "test", limit=args.eval_limit, **geo)
    id_vals = score(f"{args.id} (test)", x_id)
    ood_vals = {n: score(n, ood_x.pop(n)) for n in ood_names}
    results = results_of(args, model, kind, id_vals, id_labels, ood_vals, size, channels, time.time() - t0)
    if shipped is not None:
        from amp_tf.run.scoring import shipped_summary

        results["shipped"] = {**shipped_summary(shipped, kind), "key": f"{kind}/shipped"}
    paths = write_report(out, results, score_arrays(id_vals, ood_vals, kind),
                         formats=("json", args.format), plots=not args.no_plots)
    sys.stdout.write(render(results, args.format))
    log(f"wrote {', '.join(sorted(paths))} to {out} in {time.time() - t0:.1f} s")
    return results


if __name__ == "__main__":
    main()
