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

    python -m trainers.fmnist                 # defaults: vanilla 2 epochs + anchored fine-tuning 2 epochs
    python -m trainers.fmnist --epochs 3 --finetune-epochs 0   # anchored from scratch instead
    python -m trainers.fmnist --epochs 10 --width 32 --out runs/fmnist-long
    python -m trainers.fmnist --init-from runs/fmnist-X/vanilla.keras --finetune-epochs 1 --out runs/ft
                                              # your vanilla model is the twin; the anchored one is fine-tuned from it
"""

from __future__ import annotations

import sys
import time

from amp_tf.run import presets as _presets
from amp_tf.cli.common import (
    check_out,
    add_limit_alias,
    add_preset_flags,
    base_parser,
    check_data,
    check_init_from,
    cli_errors,
    parse_cli,
    refuse_with,
    run_and_report,
    run_folder,
    train_config,
)

#: The main job's recipe (one definition: amp_tf.run.presets.FMNIST_RECIPE).
DEFAULTS = dict(_presets.FMNIST_RECIPE)
#: The images of every set of the suite (Fashion-MNIST and its holdout splits).
IMAGE_SHAPE = (28, 28, 1)


def suite(holdout=False):
    """`(ID set, OOD sets)` of the offline benchmark: `amp_tf.data.fmnist_suite`'s names, spelled
    out so that --dry-run imports no TensorFlow (tests/test_cli.py checks that they agree)."""
    if holdout:
        return "fmnist_holdout_id", ["fmnist_holdout_ood"]
    return "fashion_mnist", [*_presets.FMNIST_FAR, *_presets.FMNIST_COVARIATE]


def job_config(args):
    """The `amp_tf.config.JobConfig` of the flags (with --preset: the preset's, explicit flags over it): the
    one mapping of this command's flags; the job's models are `amp_tf.run.pipeline.job_models(job)`.

    * default: the vanilla twin trains --epochs, then the anchored model is fine-tuned from it for
      --finetune-epochs (0: both from scratch);
    * --init-from V: V is the vanilla twin (scored as it is), the anchored model is fine-tuned from
      it; with --skip-vanilla only the latter;
    * --skip-vanilla: the anchored model alone.
    """
    from amp_tf.config import DataConfig, JobConfig

    id_name, ood_names = suite(args.holdout)
    data = DataConfig(id_name, args.val_size, args.train_limit, args.eval_limit, near=args.near)
    train = train_config(args, epochs=args.epochs, backbone_kwargs={"width": args.width} if args.width else {},
                         init_from=str(args.init_from) if args.init_from else None)
    return JobConfig(train, data, ood=tuple(ood_names), num_anchors=args.num_anchors,
                     finetune_epochs=args.finetune_epochs, positive=args.positive,
                     models=("anchored",) if args.skip_vanilla else ("anchored", "vanilla"))


def parser():
    p = base_parser(__doc__.split("\n\n")[0], DEFAULTS)
    g = p.add_argument_group("Fashion-MNIST job")
    g.add_argument("--width", type=int, default=16, help="resnet_small base width (not with --init-from)")
    g.add_argument("--holdout", action="store_true",
                   help="near-OOD mode: train on classes 0-5, classes 6-9 are the OOD set")
    g.add_argument("--train-limit", type=int, default=None, help="use only the first N training images")
    g.add_argument("--val-size", type=int, default=5000,
                   help="ID validation images held out of training (serving threshold, OOD callback)")
    g.add_argument("--eval-limit", type=int, default=2000,
                   help="score at most N images per test/OOD set (the first N; 2000 keeps the job short)")
    add_limit_alias(g)
    g.add_argument("--near", action="store_true",
                   help="add the near-OOD group: the two Fashion-MNIST class-holdout splits, each with its own "
                        "anchored and vanilla model (trains 4 more models)")
    g.add_argument("--skip-vanilla", action="store_true",
                   help="train and score the anchored model only (from scratch, --epochs; with --init-from: "
                        "fine-tuned from that model, which is then not scored)")
    g.add_argument("--no-plots", action="store_true", help="write the report files only, no PNG plots")
    p.flags["init_from"].help = (  # the common help, said for this job
        "your trained vanilla model: it IS the vanilla twin (scored, not retrained) and the anchored model is "
        "fine-tuned from it for --finetune-epochs epochs (0: --epochs); not with --width, --arch or --near")
    return add_preset_flags(p)


def combine(args, given):
    """The flags that only make sense together, checked before any work (no TensorFlow).

    What the job records (job.json, report.json) is what it uses: flags that
    --init-from makes meaningless are refused when written, and recorded as None.
    """
    if args.data_dir and not args.download and not args.dry_run:  # every split from --data-dir, or refused now
        from amp_tf.contract import check_fashion_mnist_dir

        check_fashion_mnist_dir(args.data_dir)
    if args.near and args.holdout:
        raise ValueError("--near with --holdout: the holdout set (classes 0-5 vs 6-9) is itself a near-OOD "
                         "split and has no near-OOD group of its own; drop one of the two flags.")
    if args.init_from:
        if args.near:
            raise ValueError("--near with --init-from: the near-OOD splits train their own models on 6 of the "
                             "10 classes, so the given model cannot be their twin; drop --near.")
        check_init_from(args, given, IMAGE_SHAPE, "this job's images (Fashion-MNIST)",
                        num_classes=6 if args.holdout else 10)  # --holdout: classes 0-5
    elif args.skip_vanilla:
        if args.finetune_epochs:  # --finetune-epochs 0 says the same as --skip-vanilla: fine
            refuse_with("finetune_epochs", given, "with --skip-vanilla (and no --init-from) the anchored model "
                        "trains from scratch for --epochs; there is no vanilla model to fine-tune.")
        args.finetune_epochs = 0  # not used: recorded as such


@cli_errors
def main(argv=None):
    args = parse_cli(parser(), argv, "train", "trainers.fmnist", default_ood=tuple(suite()[1]),
                     describe=lambda a: suite(a.holdout), combine=combine)
    t0 = time.time()
    from amp_tf.run.pipeline import GivenModel, job_models, load_fmnist_suite

    def log(msg):
        print(f"[fmnist] {msg}", flush=True)

    job = job_config(args)
    check_out(args)  # --out / --resume / --overwrite refused before any data is loaded
    d, ood, near = load_fmnist_suite(job, seed=args.seed, data_dir=args.data_dir, download=args.download, log=log)
    for split in [d, *(nd for nd, _ in near)]:
        check_data(args, split)
    given = None
    if args.init_from:  # loaded and checked against the data before any folder or training
        given = GivenModel(str(args.init_from), seed=args.seed)
        given.load(d)
    models = job_models(job, given)
    folder = run_folder(args, "fmnist", log=log, data=[d, *(nd for nd, _ in near)])  # after every check
    log(f"run folder: {folder.path} (data loaded in {time.time() - t0:.0f} s)")
    log(f"ID {d.name}: train {len(d.x_train)}, val {len(d.x_val)}, test {len(d.x_test)}; "
        "OOD: " + ", ".join(f"{k} ({len(v)})" for k, v in ood.items()))
    return run_and_report(args, job, d, ood, folder, log, t0, models=models, near=near,
                          title=f"{d.name} (ID) vs the offline OOD suite" + (" (with near-OOD)" if near else ""))


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
