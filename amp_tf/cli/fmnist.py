"""The main job, offline: Fashion-MNIST, AMP vs the standard scores.

Trains the anchored `resnet_small` and its vanilla twin (same backbone, same
schedule, 1-channel input), scores AMP (and its variants) on the anchored model
and MSP, Energy, ODIN, MaxLogit, Entropy on the vanilla one, over the offline
OOD suite in groups (far-OOD: scikit-learn's digits, letters rendered from Debian
fonts, patches of scikit-image's photos; covariate shift: the Fashion-MNIST test
images under blur, JPEG, contrast and pixelation, levels 1..5; with --near also
the two class-holdout splits, each with its own models; or, with --holdout, 4
held-out classes only), and writes to --out: report.json, report.md (leading with
the group table), PNG plots, both .keras models, and serving/ (the SavedModel:
uint8 images -> prediction, tau, amp_score, is_ood).

    python -m trainers.fmnist                 # defaults: vanilla 2 epochs + anchored fine-tuning 1 epoch
    python -m trainers.fmnist --epochs 3 --finetune-epochs 0   # anchored from scratch instead
    python -m trainers.fmnist --epochs 10 --width 32 --out runs/fmnist-long
"""

from __future__ import annotations

import sys
import time

from amp_tf import presets as _presets
from amp_tf.cli.common import (
    add_preset_flags,
    backup_arg,
    base_parser,
    cli_errors,
    parse_cli,
    run_folder,
    train_config,
    versions,
)

#: The main job's recipe (one definition: amp_tf.presets.FMNIST_RECIPE).
DEFAULTS = dict(_presets.FMNIST_RECIPE)


def suite(holdout=False):
    """`(ID set, OOD sets)` of the offline benchmark (`amp_tf.data.fmnist_suite`)."""
    from amp_tf.data import fmnist_suite

    s = fmnist_suite(holdout=holdout)
    return s["id"], list(s["ood"])


def near_splits(args, log):
    """The near-OOD group: per class-holdout split, its ID data and its held-out classes."""
    from amp_tf.data import fmnist_suite
    from amp_tf.pipeline import load_id, load_ood

    out = []
    for ood_name, id_name in fmnist_suite()["near"].items():
        d = load_id(id_name, val_size=args.val_size, seed=args.seed, train_limit=args.train_limit,
                    eval_limit=args.eval_limit, data_dir=args.data_dir, download=args.download)
        ood, _ = load_ood([ood_name], d.image_shape, limit=args.eval_limit, data_dir=args.data_dir)
        log(f"near-OOD split {id_name}: train {len(d.x_train)}; OOD {ood_name} ({len(ood[ood_name])})")
        out.append((d, ood))
    return out


def parser():
    p = base_parser(__doc__.split("\n\n")[0], DEFAULTS)
    g = p.add_argument_group("Fashion-MNIST job")
    g.add_argument("--width", type=int, default=16, help="resnet_small base width")
    g.add_argument("--holdout", action="store_true",
                   help="near-OOD mode: train on classes 0-5, classes 6-9 are the OOD set")
    g.add_argument("--train-limit", type=int, default=None, help="use only the first N training images")
    g.add_argument("--val-size", type=int, default=5000,
                   help="ID validation images held out of training (serving threshold, OOD callback)")
    g.add_argument("--eval-limit", type=int, default=2000,
                   help="score at most N images per test/OOD set (the first N; 2000 keeps the job short)")
    g.add_argument("--near", action="store_true",
                   help="add the near-OOD group: the two Fashion-MNIST class-holdout splits, each with its own "
                        "anchored and vanilla model (trains 4 more models)")
    g.add_argument("--skip-vanilla", action="store_true",
                   help="train and score the anchored model only (from scratch, --epochs)")
    g.add_argument("--no-plots", action="store_true", help="write the report files only, no PNG plots")
    return add_preset_flags(p)


@cli_errors
def main(argv=None):
    args = parse_cli(parser(), argv, "train", "trainers.fmnist", default_ood=tuple(suite()[1]),
                     describe=lambda a: suite(a.holdout))
    t0 = time.time()
    from amp_tf.pipeline import load_id, load_ood, run_job
    from amp_tf.report import render

    def log(msg):
        print(f"[fmnist] {msg}", flush=True)

    id_name, ood_names = suite(args.holdout)
    d = load_id(id_name, val_size=args.val_size, seed=args.seed, train_limit=args.train_limit,
                eval_limit=args.eval_limit, data_dir=args.data_dir, download=args.download)
    ood, _ = load_ood(ood_names, d.image_shape, limit=args.eval_limit, data_dir=args.data_dir)
    near = near_splits(args, log) if args.near and not args.holdout else ()
    folder = run_folder(args, "fmnist", log=log)  # after every check: a refused run writes nothing
    log(f"run folder: {folder.path} (data loaded in {time.time() - t0:.0f} s)")
    log(f"ID {d.name}: train {len(d.x_train)}, val {len(d.x_val)}, test {len(d.x_test)}; "
        "OOD: " + ", ".join(f"{k} ({len(v)})" for k, v in ood.items()))
    kw = {"backbone_kwargs": {"width": args.width}}
    if args.finetune_epochs and not args.init_from and not args.skip_vanilla:
        # the default: the vanilla twin first, then the anchored model fine-tuned from it
        models = {"vanilla": train_config(args, anchored=False, **kw),
                  "anchored": train_config(args, anchored=True, epochs=args.finetune_epochs,
                                           init_from="job:vanilla", **kw)}
    else:
        models = {name: train_config(args, anchored=anchored, **kw)
                  for name, anchored in [("anchored", True)] + ([] if args.skip_vanilla else [("vanilla", False)])}
    results = run_job(d, ood, models, folder, num_anchors=args.num_anchors, positive=args.positive, near=near,
                      plots=not args.no_plots, verbose=args.verbose, backup=lambda n: backup_arg(args, n),
                      title=f"{d.name} (ID) vs the offline OOD suite" + (" (with near-OOD)" if near else ""),
                      log=log,
                      extra={"seed": args.seed, "versions": versions(), "args": vars(args)})
    print(render(results, "md").split("## Per OOD set")[0])
    steal = results.get("steal_share")
    log(f"done in {time.time() - t0:.0f} s (process CPU time {time.process_time():.0f} s"
        + (f"; the hypervisor took {100 * steal:.0f} % of the machine's CPU" if steal is not None else "")
        + f"); report: {results['out']}/report.md")
    return results


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
