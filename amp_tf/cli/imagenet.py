"""ImageNet-1k with the paper's recipe: anchored ResNet-50, streaming tf.data input.

Paper defaults: ResNet-50 with the ImageNet stem (`resnet50_imagenet`), SGD (lr
0.1, momentum 0.9, weight decay 1e-4), batch 128, 120 epochs, lr x 0.1 at
epochs 30/60/90, the consistency transform T on every 10th batch.

Data (manual: ImageNet needs registration at image-net.org, nothing is
downloaded here): either tensorflow-datasets' imagenet2012 prepared in
--data-dir (prepare it once with --download after putting the two ILSVRC2012
tar files in <data-dir>/downloads/manual), or --train-folder / --val-folder,
image folders with one subfolder per class. Input pipeline, streaming: decode ->
random-resized crop (area 8-100 %, aspect 3/4-4/3) to --image-size + flip for
training; resize the shorter side to image-size*256/224 + center crop for
validation (`amp_tf.data.streaming`); normalisation with the standard ImageNet
mean/std (0..255 units). The job is `amp_tf.run.pipeline.run_job` over a
`StreamedIDData` (`load_id_stream`): this module maps the flags onto it.

At the end the model is scored on the ID validation images against the OOD
sets in --ood (default: ImageNet-C gaussian_blur, severities 1-5, from
tensorflow-datasets' imagenet2012_corrupted; sets that are not present are
skipped with one line), and report.json / report.md, plots, the .keras model,
normalization.json and (anchored) serving/ are written to --out.

    python -m trainers.imagenet --data-dir ~/tensorflow_datasets --strategy mirrored --jit-compile
    python -m trainers.imagenet --train-folder /data/imagenet/train --val-folder /data/imagenet/val \\
        --ood default,folder:/data/iNaturalist --out runs/in1k
    python -m trainers.imagenet --train-folder tiny/train --val-folder tiny/val --arch resnet_small \\
        --image-size 28 --epochs 1 --batch-size 8        # smoke run on a tiny folder
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from amp_tf.run import presets as _presets
from amp_tf.cli.common import (
    check_out,
    add_limit_alias,
    add_preset_flags,
    base_parser,
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

ARCHS = ("resnet50_imagenet", "resnet_small")
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)
DEFAULT_OOD = tuple(f"imagenet2012_corrupted/gaussian_blur_{i}" for i in range(1, 6))
#: The paper's ImageNet recipe (one definition: amp_tf.run.presets.IMAGENET_RECIPE), ResNet-50.
DEFAULTS = dict(_presets.IMAGENET_RECIPE, arch="resnet50_imagenet")


def parser():
    p = base_parser(__doc__.split("\n\n")[0], DEFAULTS)
    restrict_choices(p, "arch", ARCHS)
    # the common help says "crop_flip"; here it is a random-resized crop
    p.flags["augment"].help = "training augmentation: crop_flip = random-resized crop + flip; none = val transform"
    g = p.add_argument_group("ImageNet job")
    g.add_argument("--train-folder", default=None,
                   help="training images, one subfolder per class (instead of tfds imagenet2012 in --data-dir)")
    g.add_argument("--val-folder", default=None, help="validation images, the same class subfolders")
    g.add_argument("--manual-dir", default=None,
                   help="tfds manual dir with the ILSVRC2012 tar files (default <data-dir>/downloads/manual)")
    g.add_argument("--image-size", type=int, default=224, help="training/eval crop size")
    g.add_argument("--width", type=int, default=16, help="base width of resnet_small (tests / smoke runs)")
    g.add_argument("--vanilla", action="store_true", help="train the vanilla twin instead (no serving/ export)")
    g.add_argument("--train-limit", type=int, default=None,
                   help="use N (shuffled) training images per epoch (smoke runs)")
    g.add_argument("--eval-limit", type=int, default=None, help="score at most N images per ID/OOD set")
    add_limit_alias(g)
    g.add_argument("--anchor-pool", type=int, default=1024,
                   help="the K anchors are picked (with --seed) among this many shuffled training images")
    g.add_argument("--no-plots", action="store_true", help="write the report files only, no PNG plots")
    g.add_argument("--ood", default="default",
                   help="comma list of OOD sets (amp_tf.data names, folder:<path>); "
                        "'default' = imagenet2012_corrupted/gaussian_blur_1..5")
    g.add_argument("--eval-batch-size", type=int, default=64,
                   help="images per scoring batch (the anchored backbone sees K times as many)")
    g.add_argument("--shuffle-seed", type=int, default=None, help="seed of the data order (default --seed)")
    g.add_argument("--threshold-size", type=int, default=1000,
                   help="the first N validation images set the serving threshold and are left out of the "
                        "reported ID set (never both)")
    return add_preset_flags(p)


def combine(args, given):
    """The flags that only make sense together, checked before any work (no TensorFlow).

    What the run records is what it uses: flags that cannot apply are refused
    when written, and recorded as None.
    """
    check_names(expand_ood(args.ood))
    if bool(args.train_folder) != bool(args.val_folder):
        raise ValueError("pass both --train-folder and --val-folder (class subfolders), or neither "
                         "(tfds imagenet2012 in --data-dir).")
    for flag in ("train_folder", "val_folder"):
        folder = getattr(args, flag)
        if folder is not None and not Path(folder).is_dir():
            raise ValueError(f"--{flag.replace('_', '-')} {folder}: no such folder; give a folder with one "
                             "subfolder of images per class.")
        if folder is not None:
            check_image_folder(folder, f"--{flag.replace('_', '-')}")
    if args.init_from and args.vanilla:
        raise ValueError("--init-from with --vanilla: --init-from fine-tunes an anchored model from your "
                         "vanilla one; drop --vanilla.")
    size = args.image_size
    check_init_from(args, given, (size, size, 3), f"this job's crops (--image-size {size})")
    if not args.train_folder and not args.dry_run:
        check_tfds_imagenet(args)  # last: a wrong flag is named before missing data


def check_image_folder(folder, flag):
    """Refuses a folder without a single image file (flat or in class subfolders; hidden files aside),
    before TensorFlow (`amp_tf.cli.names.IMAGE_EXTENSIONS`; unreadable files are the loader's to judge)."""
    import os

    from amp_tf.cli.names import IMAGE_EXTENSIONS

    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        if any(not n.startswith(".") and os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS for n in filenames):
            return
    raise ValueError(f"{flag} {folder} holds no image files (it is empty, or holds only other files; looked for "
                     f"{', '.join(IMAGE_EXTENSIONS)}, flat or in class subfolders); give a folder with one "
                     "subfolder of images per class.")


#: The ILSVRC2012 archives tensorflow-datasets prepares imagenet2012 from (never downloaded: registration).
IMAGENET_TARS = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")


def check_tfds_imagenet(args):
    """tfds' imagenet2012 must be prepared in the tfds folder (--data-dir), or with --download its two
    archives must lie in the manual folder: checked before TensorFlow, naming the folders and the fix."""
    root = tfds_root(args.data_dir)
    if tfds_prepared("imagenet2012", args.data_dir):
        return
    manual = Path(args.manual_dir).expanduser() if args.manual_dir else root / "downloads" / "manual"
    missing = [t for t in IMAGENET_TARS if not (manual / t).is_file()]
    fix = (f"put {' and '.join(IMAGENET_TARS)} (from image-net.org, after registration) in {manual}/ and add "
           "--download to prepare it, or pass --train-folder and --val-folder (one subfolder of images per class)")
    if not args.download:
        raise FileNotFoundError(f"imagenet2012 is not on this machine: no prepared tensorflow-datasets copy in "
                                f"{root} (looked for {root}/imagenet2012/<version>/dataset_info.json; --data-dir "
                                f"sets the folder). To use ImageNet, {fix}.")
    if missing:
        raise FileNotFoundError(f"--download: imagenet2012 is never downloaded (it needs registration), and "
                                f"{manual} lacks {', '.join(missing)} (--manual-dir sets the folder); {fix}.")


def expand_ood(text):
    """The --ood names, `default` expanded (DEFAULT_OOD)."""
    names = []
    for n in split_names(text):
        names += list(DEFAULT_OOD) if n == "default" else [n]
    return names


def id_sources(args):
    """`(train, val, load_kw)` for `amp_tf.run.pipeline.load_id_stream`: the two folders, or tfds imagenet2012."""
    if args.train_folder:
        return (f"folder:{args.train_folder}", "train"), (f"folder:{args.val_folder}", "test"), {}
    kw = dict(data_dir=args.data_dir, download=args.download, manual_dir=args.manual_dir)
    return ("imagenet2012", "train"), ("imagenet2012", "test"), kw


def job_config(args):
    """The `amp_tf.config.JobConfig` of the flags (with --preset: the preset's, explicit flags over it): the
    one mapping of this command's flags. The anchored model (fine-tuned from --init-from when given), or
    with --vanilla the vanilla one; calibrated by H / tau ("divide"), as the paper and the official code
    calibrate ImageNet."""
    from amp_tf.config import DataConfig, JobConfig

    # the held-out validation images are those that set the serving threshold (--threshold-size)
    data = DataConfig(id_sources(args)[1][0], args.threshold_size, args.train_limit, args.eval_limit,
                      image_size=args.image_size, anchor_pool=args.anchor_pool)
    train = train_config(args, anchored=not args.vanilla, mean=IMAGENET_MEAN, std=IMAGENET_STD, epochs=args.epochs,
                         backbone_kwargs={"width": args.width} if args.width else {},
                         init_from=str(args.init_from) if args.init_from else None)
    return JobConfig(train, data, ood=tuple(expand_ood(args.ood)), num_anchors=args.num_anchors,
                     finetune_epochs=args.finetune_epochs if args.init_from else 0, positive=args.positive,
                     models=("vanilla",) if args.vanilla else ("anchored",), calibration="divide")


@cli_errors
def main(argv=None):
    args = parse_cli(parser(), argv, "train", "trainers.imagenet", default_ood=DEFAULT_OOD, combine=combine,
                     describe=lambda a: (f"folder:{a.val_folder}" if a.val_folder else "imagenet2012", None))
    t0 = time.time()
    from amp_tf.run.pipeline import GivenModel, job_models, load_id_stream, load_ood_streams

    def log(msg):
        print(f"[imagenet] {msg}", flush=True)

    check_out(args)  # --out / --resume / --overwrite refused before any data is loaded
    job, (train, val, load_kw) = job_config(args), id_sources(args)
    dc = job.data
    d = load_id_stream(train, val, dc.image_size, job.train.batch_size, IMAGENET_MEAN, IMAGENET_STD,
                       seed=args.seed if args.shuffle_seed is None else args.shuffle_seed,
                       augment=job.train.augment == "crop_flip", train_limit=dc.train_limit,
                       eval_limit=dc.eval_limit, anchor_pool=dc.anchor_pool,
                       threshold_size=dc.val_size, eval_batch_size=args.eval_batch_size, load_kw=load_kw)
    if args.init_from:  # loaded and checked against the data before any folder or training
        GivenModel(str(args.init_from)).load(d)
    ood, skipped = load_ood_streams(job.ood, dc.image_size, dc.eval_limit, args.eval_batch_size,
                                    load_kw=dict(data_dir=args.data_dir, download=args.download), log=log)
    models = job_models(job)
    folder = run_folder(args, f"imagenet-{next(iter(models))}", log=log)  # after every check
    log(f"run folder: {folder.path}")
    log(f"{d.name}: {d.num_train} training images, {d.num_classes} classes, {d.steps_per_epoch} steps/epoch; "
        f"{len(d.x_val)} validation images set the serving threshold; OOD: {', '.join(ood) or 'none present'}")
    # no LiteRT export (ImageNet-sized models are served by TF Serving)
    return run_and_report(args, job, d, ood, folder, log, t0, models=models, extra={"skipped_ood_sets": skipped},
                          tflite=False)


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
