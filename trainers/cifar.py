"""CIFAR-10 / CIFAR-100 with the paper's recipe: anchored training, then AMP on the OOD suite.

Paper defaults: SGD (lr 0.1, momentum 0.9, weight decay 5e-4), batch 128, 200
epochs, lr x 0.2 at epochs 60/120/160, the consistency transform T on every 5th
batch, random crop (4-pixel padding) + horizontal flip, normalisation with the
CIFAR training statistics. The ID data comes from tensorflow-datasets (prepared
in --data-dir, or fetched with --download).

OOD sets (--ood, comma list): by default the paper's sets that tensorflow-datasets
has (svhn_cropped, dtd, places365_small, all scored on their test/validation
split, resized to 32x32 with --resize). iSUN, LSUN (resize), LSUN (crop) and
TinyImageNet (resize / crop) come as image folders: add them as
``folder:<path>`` entries; the word ``default`` stands for the default list.
Sets whose data is not on this machine are skipped with one line. At the end:
report.json / report.md and plots, the .keras model, normalization.json, and
(anchored runs) serving/ (SavedModel: uint8 images -> prediction, amp_score, is_ood).

    python -m trainers.cifar --dataset cifar10 --arch wrn40_2 --data-dir ~/tensorflow_datasets
    python -m trainers.cifar --dataset cifar100 --arch resnet34 --strategy mirrored \\
        --ood default,folder:/data/iSUN,folder:/data/LSUN_resize,folder:/data/LSUN --out runs/c100-r34
    python -m trainers.cifar --dataset cifar10 --vanilla --out runs/c10-vanilla   # the vanilla twin
    python -m trainers.cifar --dataset cifar10 --arch resnet_small --epochs 1 --train-limit 512  # smoke run
"""

from __future__ import annotations

import sys
import time

from trainers.common import (
    backup_arg,
    add_preset_flags,
    base_parser,
    check_names,
    cli_errors,
    first_line,
    load_images,
    parse_cli,
    restrict_choices,
    run_dir,
    split_names,
    train_config,
    versions,
)

ARCHS = ("wrn40_2", "resnet18", "resnet34", "resnet_small")
PAPER_OOD = ("svhn_cropped", "dtd", "places365_small")
DEFAULTS = dict(arch="wrn40_2", epochs=200, batch_size=128, lr=0.1, weight_decay=5e-4,
                lr_milestones="60,120,160", lr_gamma=0.2, consistency="all", consistency_every=5,
                augment="crop_flip", num_anchors=5)


def parser():
    from amp_tf.data import RESIZE_METHODS

    p = base_parser(__doc__.split("\n\n")[0], DEFAULTS)
    restrict_choices(p, "arch", ARCHS)
    g = p.add_argument_group("CIFAR job")
    g.add_argument("--dataset", default="cifar10", choices=["cifar10", "cifar100"], help="ID data set")
    g.add_argument("--width", type=int, default=16, help="base width of resnet_small (other archs ignore it)")
    g.add_argument("--vanilla", action="store_true",
                   help="train the vanilla twin (same backbone and schedule, no anchoring) instead; "
                        "scored with MSP, Energy, ODIN, MaxLogit, Entropy; no serving/ export")
    g.add_argument("--train-limit", type=int, default=None, help="use only the first N training images")
    g.add_argument("--val-size", type=int, default=0,
                   help="ID validation images held out of training (serving threshold, val metrics, OOD "
                        "callback); 0 = train on the full training set as the paper does and use the ID "
                        "test images for these")
    g.add_argument("--eval-limit", type=int, default=None, help="score at most N images per test/OOD set")
    g.add_argument("--no-plots", action="store_true", help="write the report files only, no PNG plots")
    g.add_argument("--ood", default="default",
                   help="comma list of OOD sets (names of amp_tf.data.names(include_patterns=True), "
                        f"folder:<path>); 'default' = {','.join(PAPER_OOD)}; grayscale sets are "
                        "converted to RGB, other sizes resized with --resize")
    g.add_argument("--resize", default="tf", choices=list(RESIZE_METHODS),
                   help="how OOD images of another size are resized to 32x32")
    g.add_argument("--ood-callback-every", type=int, default=0,
                   help="every N epochs log exact OOD metrics (val_ood_*) against an ID-only proxy: "
                        "heavily blurred ID validation images (no outlier exposure); 0 = off")
    g.add_argument("--ood-callback-size", type=int, default=1000,
                   help="ID validation images (and blurred copies) used by the OOD callback")
    g.add_argument("--ood-callback-sigma", type=float, default=3.0,
                   help="Gaussian blur sigma (pixels) of the callback's OOD proxy")
    return add_preset_flags(p)


def expand_ood(text):
    names = []
    for n in split_names(text):
        names += list(PAPER_OOD) if n == "default" else [n]
    return list(dict.fromkeys(names))


@cli_errors
def main(argv=None):
    args = parse_cli(parser(), argv, "train", "trainers.cifar", default_ood=PAPER_OOD)
    t0 = time.time()
    import numpy as np

    from amp_tf import data
    from amp_tf.callbacks import OODMetricsCallback
    from amp_tf.distribute import worker_info
    from amp_tf.evaluation import evaluate_model
    from amp_tf.export import export_for_serving
    from amp_tf.predictor import AnchoredPredictor, select_anchors
    from amp_tf.report import render, write_report
    from amp_tf.training import train, write_json

    ood_names = expand_ood(args.ood)
    check_names(ood_names)  # unknown names fail before any loading or training
    if args.val_size < 0:
        raise ValueError(f"--val-size: expected >= 0, got {args.val_size}.")
    kw = dict(data_dir=args.data_dir, download=args.download)
    train_set = data.load(args.dataset, "train", **kw)
    num_classes = int(train_set.num_classes)
    x_all, y_all = data.to_numpy(train_set)
    x_test, y_test = data.to_numpy(data.load(args.dataset, "test", **kw), limit=args.eval_limit)
    order = np.random.default_rng(args.seed).permutation(len(x_all))
    val_idx, train_idx = order[: args.val_size], np.sort(order[args.val_size:])
    if args.train_limit:
        train_idx = train_idx[: args.train_limit]
    x_train, y_train = x_all[train_idx], y_all[train_idx]
    if args.val_size:
        x_val, y_val = x_all[val_idx], y_all[val_idx]
    else:
        x_val, y_val = x_test, y_test
    del x_all, y_all
    mean, std = data.channel_stats(x_train)
    size, channels = x_train.shape[1:3], x_train.shape[-1]

    def norm(a):
        return data.preprocess(a, mean, std)

    ood, skipped = {}, {}
    for name in ood_names:
        try:
            x, _, _ = load_images(name, "test", size, channels, resize=args.resize, convert_channels=True,
                                  limit=args.eval_limit, **kw)
        except data.DataNotFoundError as err:
            skipped[name] = first_line(err)
            print(f"skipped {name}: {skipped[name]}")
            continue
        ood[name] = norm(x)
    out = run_dir(args, f"{args.dataset}-{'vanilla' if args.vanilla else 'anchored'}")
    print(f"[cifar] run folder: {out}")
    print(f"[cifar] ID {args.dataset}: train {len(x_train)}, val {len(x_val)}"
          f"{' (= test)' if not args.val_size else ''}, test {len(x_test)}; OOD: "
          + (", ".join(f"{k} ({len(v)})" for k, v in ood.items()) or "none present"))
    value_range = (tuple(((0.0 - mean) / std).tolist()), tuple(((255.0 - mean) / std).tolist()))
    xtr, xte, xva = norm(x_train), norm(x_test), norm(x_val)

    name = "vanilla" if args.vanilla else "anchored"
    cfg = train_config(args, anchored=not args.vanilla, value_range=value_range,
                       backbone_kwargs={"width": args.width} if args.arch == "resnet_small" else {})
    callbacks = []
    if args.ood_callback_every:
        n = min(args.ood_callback_size, len(x_val))
        proxy = norm(data.gaussian_blur(x_val[:n], args.ood_callback_sigma))
        callbacks.append(OODMetricsCallback(xva[:n], {"blur_proxy": proxy}, num_anchors=args.num_anchors,
                                            every=args.ood_callback_every, positive=args.positive,
                                            seed=args.seed, verbose=args.verbose))
    print(f"[cifar] training the {name} {cfg.arch} for {cfg.epochs} epochs ...")
    t = time.time()
    model, _ = train(cfg, xtr, y_train, num_classes, val=(xva, y_val), out_dir=out / name,
                     callbacks=callbacks, verbose=args.verbose, backup=backup_arg(args, name))
    train_time = time.time() - t
    if not worker_info()[2]:
        print("[cifar] non-chief worker: training done; the chief writes model and report.")
        return {"chief": False}
    model.save(out / f"{name}.keras")
    write_json(out / "normalization.json", {"mean": mean.tolist(), "std": std.tolist()})
    anchors = None if args.vanilla else select_anchors(xtr, args.num_anchors, seed=args.seed)
    if anchors is not None:
        export_for_serving(AnchoredPredictor(model.backbone, anchors), out / "serving", mean, std,
                           id_images=x_val)
    results = {"title": f"{args.dataset} (ID) vs " + (", ".join(ood) or "no OOD set"),
               "id_set": args.dataset, "ood_sets": list(ood), "skipped_ood_sets": skipped,
               "positive": args.positive, "seed": args.seed, "versions": versions(),
               "config": {"args": vars(args), "train": cfg.to_dict(), "num_anchors": args.num_anchors,
                          "mean": mean.tolist(), "std": std.tolist()}}
    if not ood:
        write_json(out / "run.json", results)
        print(f"[cifar] no OOD set is present, so no OOD report; model saved to {out / f'{name}.keras'}")
        return results
    print(f"[cifar] scoring the {name} model ...")
    res, values, acc = evaluate_model(model, xte, y_test, ood, name, anchors=anchors, positive=args.positive)
    results.update(models={name: {"id_accuracy": acc, "params": int(model.count_params()),
                                  "train_time_s": round(train_time, 1)}},
                   scores=res, wall_time_s=round(time.time() - t0, 1))
    paths = write_report(out, results, values, plots=not args.no_plots)
    print(render(results, "md").split("## Per OOD set")[0])
    print(f"[cifar] done in {time.time() - t0:.0f} s; report: {paths.get('report.md', out / 'report.md')}")
    return results


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
