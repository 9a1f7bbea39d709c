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
report.json / report.md and plots, the .keras model (it carries its pixel statistics), and
(anchored runs) serving/ and model.tflite (uint8 images -> prediction, ood_score of the
shipped detector, amp_score, is_ood). Without --download a machine without the CIFAR data
hears it at once, with the command that runs offline (docs/reproduce.md, "Offline").

    python -m trainers.cifar --dataset cifar10 --arch wrn40_2 --data-dir ~/tensorflow_datasets
    python -m trainers.cifar --dataset cifar100 --arch resnet34 --strategy mirrored \\
        --ood default,folder:/data/iSUN,folder:/data/LSUN_resize,folder:/data/LSUN --out runs/c100-r34
    python -m trainers.cifar --dataset cifar10 --vanilla --out runs/c10-vanilla   # the vanilla twin
    python -m trainers.cifar --dataset cifar10 --init-from runs/c10-vanilla/vanilla.keras --finetune-epochs 20 \\
        --out runs/c10-ft      # that vanilla model is the twin (scored); the anchored one is fine-tuned from it
    python -m trainers.cifar --dataset cifar10 --arch resnet_small --epochs 1 --train-limit 512  # smoke run
"""

from __future__ import annotations

import os
import sys
import time

from amp_tf.run import presets as _presets
from amp_tf.cli.common import (
    check_out,
    add_limit_alias,
    add_preset_flags,
    base_parser,
    check_data,
    check_names,
    check_init_from,
    cli_errors,
    parse_cli,
    restrict_choices,
    run_and_report,
    run_folder,
    split_names,
    tfds_prepared,
    tfds_root,
    train_config,
)

ARCHS = ("wrn40_2", "resnet18", "resnet34", "resnet_small")
PAPER_OOD = ("svhn_cropped", "dtd", "places365_small")
#: The paper's CIFAR recipe (one definition: amp_tf.run.presets.CIFAR_RECIPE), WRN-40-2.
DEFAULTS = dict(_presets.CIFAR_RECIPE, arch="wrn40_2")


def parser():
    from amp_tf.cli.names import RESIZE_METHODS

    p = base_parser(__doc__.split("\n\n")[0], DEFAULTS)
    restrict_choices(p, "arch", ARCHS)
    g = p.add_argument_group("CIFAR job")
    g.add_argument("--dataset", default="cifar10", choices=["cifar10", "cifar100"], help="ID data set")
    g.add_argument("--width", type=int, default=16, help="base width of resnet_small (other archs ignore it)")
    g.add_argument("--vanilla", action="store_true",
                   help="train the vanilla twin (same backbone and schedule, no anchoring) instead; "
                        "scored with MSP, Energy, ODIN, MaxLogit, Entropy and the fitted ReAct, KNN, "
                        "Mahalanobis, Gram; no serving/ export")
    g.add_argument("--train-limit", type=int, default=None, help="use only the first N training images")
    g.add_argument("--val-size", type=int, default=5000,
                   help="ID validation images held out of training: serving threshold, val metrics, OOD "
                        "callback (never the reported ID test set)")
    g.add_argument("--eval-limit", type=int, default=None, help="score at most N images per test/OOD set")
    add_limit_alias(g)
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


def combine(args, given):
    """The flags that only make sense together, checked before any work (no TensorFlow).

    What the run records is what it uses: flags that cannot apply are refused
    when written, and recorded as None.
    """
    check_names(expand_ood(args.ood))
    if args.vanilla and args.ood_callback_every:
        raise ValueError("--ood-callback-every with --vanilla: the OOD callback scores AMP, which needs an "
                         "anchored model; drop one of the two flags.")
    if args.init_from and args.vanilla:
        raise ValueError("--init-from with --vanilla: --init-from gives the vanilla twin (scored, not "
                         "retrained) and fine-tunes the anchored model from it; drop --vanilla.")
    check_init_from(args, given, (32, 32, 3), f"{args.dataset}'s images",
                    num_classes=100 if args.dataset == "cifar100" else 10)
    check_id_data(args)  # last: a wrong flag is named before missing data


#: The CIFAR archives tensorflow-datasets prepares each set from (its download, or its manual folder).
ARCHIVES = {"cifar10": "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
            "cifar100": "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz"}
#: The command that runs the same trainer path (strategy, anchored training, AMP report) offline.
OFFLINE_COMMAND = "python -m trainers.fmnist --strategy mirrored --out runs/fmnist-mirrored"


def tfds_dir(args):
    """The tensorflow-datasets folder the ID set is read from: --data-dir, else tfds' default."""
    return args.data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"


def check_id_data(args):
    """The ID set must be prepared on disk, or --download must be able to fetch it: checked before
    TensorFlow is imported, so a machine without CIFAR (or, with --download, without a network) hears
    it in about a second, with the command that works offline and how to point --data-dir at CIFAR
    files. (A copy that is there but unusable is judged later by the loader.)

    Raises:
        FileNotFoundError: no ``<dir>/<dataset>/<version>/dataset_info.json`` and no --download; or
            --download, the archive not in the manual folder and its host unreachable.
    """
    if args.dry_run or tfds_prepared(args.dataset, tfds_dir(args)):
        return
    folder = tfds_root(tfds_dir(args))
    url = ARCHIVES[args.dataset]
    archive = url.rsplit("/", 1)[-1]
    manual = folder / "downloads" / "manual"
    offline = (f"Offline, the same trainer path (--strategy, anchored training, the AMP report) runs on "
               f"Fashion-MNIST: {OFFLINE_COMMAND}. For {args.dataset}: pass --data-dir DIR where DIR holds a "
               f"prepared copy (DIR/{args.dataset}/<version>/, e.g. a ~/tensorflow_datasets copied from a machine "
               f"that ran with --download); or put {archive} (from {url}) in {manual}/ and add --download, which "
               "prepares it from that file without the network (with --data-dir DIR: DIR/downloads/manual/)")
    if not args.download:
        raise FileNotFoundError(
            f"{args.dataset} is not on this machine: no prepared tensorflow-datasets copy in {folder} (looked "
            f"for {folder}/{args.dataset}/<version>/dataset_info.json) and --download was not given. {offline}; "
            "or add --download on a machine with a network (about 160 MiB).")
    if (manual / archive).is_file() or "tensorflow" in sys.modules:
        return  # tfds prepares it from the file; or TensorFlow is loaded already: the loader probes as fast
    from amp_tf.network import PROBE_TIMEOUT_S, hosts_of, reachable

    hosts = hosts_of([url])
    if not reachable(hosts):
        where = ", ".join(f"{h}:{p}" for h, p in hosts)
        raise FileNotFoundError(
            f"--download: no connection to {where} within {PROBE_TIMEOUT_S:g} s (no network?); nothing was "
            f"downloaded or written. {offline}.")


def expand_ood(text):
    names = []
    for n in split_names(text):
        names += list(PAPER_OOD) if n == "default" else [n]
    return list(dict.fromkeys(names))


def job_config(args):
    """The `amp_tf.config.JobConfig` of the flags (with --preset: the preset's, explicit flags over it): the
    one mapping of this command's flags. The anchored model from scratch; with --vanilla the vanilla one;
    with --init-from V, V is the vanilla twin and the anchored model is fine-tuned from it
    (`amp_tf.run.pipeline.job_models`)."""
    from amp_tf.config import DataConfig, JobConfig

    data = DataConfig(args.dataset, args.val_size, args.train_limit, args.eval_limit, resize=args.resize)
    train = train_config(args, anchored=not args.vanilla, epochs=args.epochs,
                         backbone_kwargs={"width": args.width} if args.width else {},
                         init_from=str(args.init_from) if args.init_from else None)
    models = ("vanilla",) if args.vanilla else ("anchored", "vanilla") if args.init_from else ("anchored",)
    return JobConfig(train, data, ood=tuple(expand_ood(args.ood)), num_anchors=args.num_anchors,
                     positive=args.positive, models=models,
                     finetune_epochs=args.finetune_epochs if args.init_from else 0)


@cli_errors
def main(argv=None):
    args = parse_cli(parser(), argv, "train", "trainers.cifar", default_ood=PAPER_OOD, combine=combine)
    t0 = time.time()
    from amp_tf import data
    from amp_tf.run.callbacks import OODMetricsCallback
    from amp_tf.run.pipeline import GivenModel, job_models, load_id, load_ood

    def log(msg):
        print(f"[cifar] {msg}", flush=True)

    job = job_config(args)
    name = job.models[0]
    check_out(args)  # --out / --resume / --overwrite refused before any data is loaded
    d = load_id(job.data.id_set, val_size=job.data.val_size, seed=args.seed, train_limit=job.data.train_limit,
                eval_limit=job.data.eval_limit, data_dir=args.data_dir, download=args.download)
    check_data(args, d)
    given = None
    if args.init_from:  # the given vanilla twin: loaded and checked against the data before any folder
        given = GivenModel(str(args.init_from), seed=args.seed)
        given.load(d)
    ood, skipped = load_ood(job.ood, d.image_shape, resize=job.data.resize, convert_channels=True,
                            limit=job.data.eval_limit, data_dir=args.data_dir, download=args.download,
                            skip_missing=True, log=log)
    folder = run_folder(args, f"{args.dataset}-{name}", log=log, data=[d])  # after every check
    log(f"run folder: {folder.path}")
    log(f"ID {args.dataset}: train {len(d.x_train)}, val {len(d.x_val)}, test {len(d.x_test)}; OOD: "
        + (", ".join(f"{k} ({len(v)})" for k, v in ood.items()) or "none present"))
    models = job_models(job, given)

    def callbacks(_):
        if not args.ood_callback_every:
            return []
        n = min(args.ood_callback_size, len(d.x_val))
        proxy = data.gaussian_blur(d.x_val[:n], args.ood_callback_sigma)
        return [OODMetricsCallback(d.x_val[:n], {"blur_proxy": proxy}, num_anchors=job.num_anchors,
                                   every=args.ood_callback_every, positive=job.positive,
                                   seed=args.seed, verbose=args.verbose)]

    return run_and_report(args, job, d, ood, folder, log, t0, models=models, extra={"skipped_ood_sets": skipped},
                          callbacks_for=callbacks)


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
