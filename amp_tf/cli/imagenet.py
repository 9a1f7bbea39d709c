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
validation; normalisation with the standard ImageNet mean/std (0..255 units).

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

from amp_tf import presets as _presets
from amp_tf.cli.common import (
    check_out,
    add_limit_alias,
    backup_arg,
    add_preset_flags,
    base_parser,
    check_names,
    cli_errors,
    init_from_info,
    first_line,
    parse_cli,
    refuse_with,
    restrict_choices,
    run_folder,
    split_names,
    train_config,
    versions,
)

ARCHS = ("resnet50_imagenet", "resnet_small")
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)
DEFAULT_OOD = tuple(f"imagenet2012_corrupted/gaussian_blur_{i}" for i in range(1, 6))
#: The paper's ImageNet recipe (one definition: amp_tf.presets.IMAGENET_RECIPE), ResNet-50.
DEFAULTS = dict(_presets.IMAGENET_RECIPE, arch="resnet50_imagenet")


def parser():
    p = base_parser(__doc__.split("\n\n")[0], DEFAULTS)
    restrict_choices(p, "arch", ARCHS)
    for a in p._actions:  # the common help says "crop_flip"; here it is a random-resized crop
        if a.dest == "augment":
            a.help = "training augmentation: crop_flip = random-resized crop + flip; none = val transform"
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
    ood_names = []
    for n in split_names(args.ood):
        ood_names += list(DEFAULT_OOD) if n == "default" else [n]
    check_names(ood_names)
    if bool(args.train_folder) != bool(args.val_folder):
        raise ValueError("pass both --train-folder and --val-folder (class subfolders), or neither "
                         "(tfds imagenet2012 in --data-dir).")
    for flag in ("train_folder", "val_folder"):
        folder = getattr(args, flag)
        if folder is not None and not Path(folder).is_dir():
            raise ValueError(f"--{flag.replace('_', '-')} {folder}: no such folder; give a folder with one "
                             "subfolder of images per class.")
    if args.init_from:
        if args.vanilla:
            raise ValueError("--init-from with --vanilla: --init-from fine-tunes an anchored model from your "
                             "vanilla one; drop --vanilla.")
        for flag in ("arch", "width"):
            refuse_with(flag, given, "the architecture is that of the --init-from model; drop the flag.")
        if args.finetune_epochs:
            refuse_with("epochs", given, f"with --init-from nothing trains from scratch: the anchored model is "
                        f"fine-tuned for --finetune-epochs ({args.finetune_epochs}) epochs.")
        _, shape = init_from_info(args.init_from)
        want = (args.image_size, args.image_size, 3)
        if shape is not None and tuple(shape) != want:
            raise ValueError(f"--init-from {args.init_from} takes {tuple(shape)} images; this job trains on "
                             f"{want} crops (--image-size {args.image_size}).")
        args.arch, args.width = None, None  # not used: recorded as such
        return
    refuse_with("finetune_epochs", given, "fine-tuning needs --init-from (a trained vanilla model).")
    args.finetune_epochs = 0
    if args.arch != "resnet_small":
        refuse_with("width", given, f"only resnet_small has a --width; {args.arch} has a fixed width.")
        args.width = None


# --------------------------------------------------------------------------- #
# Input pipeline
# --------------------------------------------------------------------------- #
def _rgb(image):
    import tensorflow as tf

    if image.shape[-1] == 1:
        image = tf.image.grayscale_to_rgb(image)
    return image


def train_transform(image, seed, size, augment=True):
    """uint8 image -> float32 `size` x `size` x 3 crop in 0..255 (random-resized crop + flip)."""
    import tensorflow as tf

    image = _rgb(image)
    if not augment:
        return val_transform(image, size)
    s = tf.random.experimental.stateless_split(seed, 2)
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), bounding_boxes=tf.zeros([1, 0, 4]), seed=s[0], min_object_covered=0.0,
        aspect_ratio_range=(3 / 4, 4 / 3), area_range=(0.08, 1.0), max_attempts=10,
        use_image_if_no_bounding_boxes=True)
    crop = tf.slice(image, begin, crop_size)
    crop = tf.image.resize(tf.cast(crop, tf.float32), (size, size), method="bilinear", antialias=True)
    crop = tf.image.stateless_random_flip_left_right(crop, s[1])
    return tf.clip_by_value(crop, 0.0, 255.0)


def val_transform(image, size):
    """uint8 image -> float32 center crop: shorter side to size*256/224, then crop `size`."""
    import tensorflow as tf

    image = _rgb(image)
    short = int(round(size * 256 / 224))
    hw = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = short / tf.reduce_min(hw)
    new_hw = tf.cast(tf.round(hw * scale), tf.int32)
    resized = tf.image.resize(tf.cast(image, tf.float32), new_hw, method="bilinear", antialias=True)
    top = (new_hw[0] - size) // 2
    left = (new_hw[1] - size) // 2
    crop = tf.image.crop_to_bounding_box(resized, top, left, size, size)
    return tf.clip_by_value(crop, 0.0, 255.0)


def train_dataset(image_set, batch_size, size, seed, augment=True, limit=None):
    """Repeated, batched (raw-pixel float image, label) stream and its steps per epoch."""
    import tensorflow as tf
    from amp_tf.data import tfdata

    n = image_set.num_examples if limit is None else min(limit, image_set.num_examples or limit)
    if n is None:
        raise ValueError(f"{image_set.name}: the number of training images is unknown; pass --train-limit.")
    steps = n // batch_size
    if steps == 0:
        raise ValueError(f"the training set has {n} images, fewer than one batch of {batch_size}; "
                         "lower --batch-size.")
    ds = image_set.dataset if limit is None else image_set.dataset.take(limit)
    ds = ds.repeat().enumerate()

    def fn(i, pair):
        image, label = pair
        s = tf.stack([tf.cast(seed, tf.int64), i])
        return tf.ensure_shape(train_transform(image, s, size, augment), (size, size, 3)), label

    ds = ds.map(fn, num_parallel_calls=tfdata.map_calls())
    return tfdata.finish(ds.batch(batch_size, drop_remainder=True)), steps


def eval_batches(ds, size, limit=None, center_crop=True, batch_size=256):
    """(uint8 crops, labels) batches of `size` for scoring (val transform, or resize only)."""
    import tensorflow as tf
    from amp_tf.data import tfdata

    if limit is not None:
        ds = ds.take(limit)

    def fn(image, label):
        if center_crop:
            x = val_transform(image, size)
        else:
            x = tf.image.resize(tf.cast(_rgb(image), tf.float32), (size, size), method="bilinear",
                                antialias=True)
        return tf.cast(tf.round(tf.clip_by_value(x, 0.0, 255.0)), tf.uint8), label

    return tfdata.finish(ds.map(fn, num_parallel_calls=tfdata.map_calls()).batch(batch_size))


def _score_stream(run, batches):
    """Scores batches with `run` (an evaluation scorer); returns ({score: array}, labels, uint8 sample)."""
    import numpy as np

    parts, labels, sample = [], [], []
    for xb, yb in batches.as_numpy_iterator():
        parts.append({k: np.asarray(v) for k, v in run(xb).items()})
        labels.append(yb)
        if sum(len(s) for s in sample) < 1000:
            sample.append(xb)
    if not parts:
        return None, None, None
    vals = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return vals, np.concatenate(labels), np.concatenate(sample)[:1000]


def threshold_count(args, id_name, val_set):
    """How many validation images set the serving threshold: --threshold-size, at most half of a small set."""
    from amp_tf.export import MIN_ID_IMAGES

    n_thr = args.threshold_size
    if val_set.num_examples:  # a small validation set: half sets the threshold, half is reported
        n_thr = min(n_thr, val_set.num_examples // 2)
    if n_thr < MIN_ID_IMAGES:
        raise ValueError(f"{id_name}: {n_thr} validation images for the serving threshold; it needs at least "
                         f"{MIN_ID_IMAGES} (half of a small validation set is used): give a larger validation "
                         "set (--val-folder) or --threshold-size.")
    return n_thr


def load_id(args):
    from amp_tf import data

    if bool(args.train_folder) != bool(args.val_folder):
        raise ValueError("pass both --train-folder and --val-folder (class subfolders), or neither "
                         "(tfds imagenet2012 in --data-dir).")
    seed = args.seed if args.shuffle_seed is None else args.shuffle_seed
    if args.train_folder:
        train = data.load(f"folder:{args.train_folder}", shuffle=True, seed=seed)
        val = data.load(f"folder:{args.val_folder}", "test")
        if not train.num_classes:
            raise ValueError(f"--train-folder {args.train_folder}: expected one subfolder per class, "
                             "found images without class subfolders.")
        if train.class_names != val.class_names:
            raise ValueError(f"--val-folder {args.val_folder}: its class subfolders differ from those of "
                             f"--train-folder ({len(val.class_names or ())} vs {len(train.class_names)} classes).")
        return f"folder:{args.val_folder}", train, val, seed
    kw = dict(data_dir=args.data_dir, download=args.download, manual_dir=args.manual_dir)
    train = data.load("imagenet2012", "train", shuffle=True, seed=seed, **kw)
    val = data.load("imagenet2012", "test", **kw)
    return "imagenet2012", train, val, seed


@cli_errors
def main(argv=None):
    args = parse_cli(parser(), argv, "train", "trainers.imagenet", default_ood=DEFAULT_OOD, combine=combine,
                     describe=lambda a: (f"folder:{a.val_folder}" if a.val_folder else "imagenet2012", None))
    t0 = time.time()
    import numpy as np

    from amp_tf import data
    from amp_tf.distribute import worker_info
    from amp_tf import detectors
    from amp_tf.evaluation import DEFAULT_VANILLA, ood_results, score_arrays
    from amp_tf.export import export_for_serving
    from amp_tf.predictor import AMP_SCORES, AnchoredPredictor, select_anchors
    from amp_tf.report import render, write_report
    from amp_tf.files import write_json
    from amp_tf.training import train

    ood_names = []
    for n in split_names(args.ood):
        ood_names += list(DEFAULT_OOD) if n == "default" else [n]
    check_out(args)  # --out / --resume / --overwrite refused before any data is loaded
    id_name, train_set, val_set, seed = load_id(args)
    num_classes = int(train_set.num_classes)
    size = args.image_size
    mean, std = np.asarray(IMAGENET_MEAN, np.float32), np.asarray(IMAGENET_STD, np.float32)
    ds, steps = train_dataset(train_set, args.batch_size, size, seed, args.augment == "crop_flip",
                              args.train_limit)
    threshold_count(args, id_name, val_set)  # refused before training when too few
    name = "vanilla" if args.vanilla else "anchored"
    init = None
    if args.init_from:  # loaded and checked before any folder or training
        from amp_tf.pipeline import GivenModel

        init = GivenModel(str(args.init_from)).load()
        if tuple(init.input_shape[1:]) != (size, size, 3) or int(init.output_shape[-1]) != num_classes:
            raise ValueError(f"--init-from {args.init_from}: the model takes {tuple(init.input_shape[1:])} images "
                             f"and has {init.output_shape[-1]} outputs; this job is {(size, size, 3)} with "
                             f"{num_classes} classes.")
    cfg = train_config(args, anchored=not args.vanilla, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                       backbone_kwargs={"width": args.width} if args.width else {},
                       **({"arch": None, "epochs": args.finetune_epochs or args.epochs} if init else {}))
    folder = run_folder(args, f"imagenet-{name}")  # after every check: a refused run writes nothing
    out = folder.work
    print(f"[imagenet] run folder: {folder.path}")
    print(f"[imagenet] {id_name}: {train_set.num_examples} training images, {num_classes} classes, "
          f"{steps} steps/epoch; training the {name} {cfg.arch} for {cfg.epochs} epochs ...")
    t = time.time()
    model, _ = train(cfg, ds, steps, num_classes, out_dir=out / name, verbose=args.verbose,
                     backup=backup_arg(args, name), init_from=init)  # restores the dtype policy itself
    train_time = time.time() - t
    if not worker_info()[2]:
        print("[imagenet] non-chief worker: training done; the chief writes model and report.")
        return {"chief": False}
    model.save(out / f"{name}.keras")

    anchors = None
    if not args.vanilla:
        pool = eval_batches(train_set.dataset, size, limit=args.anchor_pool)
        pool = np.concatenate([xb for xb, _ in pool.as_numpy_iterator()])
        anchors = select_anchors(pool, args.num_anchors, seed=args.seed)
        run = detectors.fit_all(AMP_SCORES, model, anchors=anchors).score
    else:
        run = detectors.fit_all(DEFAULT_VANILLA, model).score
    n_thr = threshold_count(args, id_name, val_set)
    held = val_set.dataset.take(n_thr)
    threshold_images = np.concatenate([xb for xb, _ in eval_batches(held, size).as_numpy_iterator()])
    print(f"[imagenet] scoring the {name} model on the {id_name} validation images (after the "
          f"{len(threshold_images)} that set the serving threshold) ...")
    id_vals, id_labels, _ = _score_stream(
        run, eval_batches(val_set.dataset.skip(n_thr), size, args.eval_limit,
                          batch_size=args.eval_batch_size))
    if id_vals is None:
        raise ValueError(f"{id_name}: the validation set has no images.")
    ood_vals, skipped = {}, {}
    for n in ood_names:
        try:
            s = data.load(n, "test", data_dir=args.data_dir, download=args.download)
        except data.DataNotFoundError as err:
            skipped[n] = first_line(err)
            print(f"skipped {n}: {skipped[n]}")
            continue
        # ImageNet-C images are already 224x224 center crops: resized only; others get the val transform
        crop = not n.startswith("imagenet2012_corrupted/")
        vals, _, _ = _score_stream(run, eval_batches(s.dataset, size, args.eval_limit, crop, args.eval_batch_size))
        if vals is None:
            raise ValueError(f"{n}: no images.")
        ood_vals[n] = vals
    if anchors is not None:
        # the paper and the official code calibrate ImageNet with H / tau ("divide")
        export_for_serving(AnchoredPredictor.from_model(model, anchors, calibration="divide"), out / "serving",
                           id_images=threshold_images)
    acc = float(np.mean(id_vals["predicted_class"] == id_labels))
    results = {"title": f"{id_name} (ID) vs " + (", ".join(ood_vals) or "no OOD set"),
               "id_set": id_name, "ood_sets": list(ood_vals), "skipped_ood_sets": skipped,
               "positive": args.positive, "seed": args.seed, "versions": versions(),
               "config": {"args": vars(args), "train": cfg.to_dict(), "num_anchors": args.num_anchors,
                          "mean": mean.tolist(), "std": std.tolist(), "steps_per_epoch": steps},
               "models": {name: {"id_accuracy": acc, "params": int(model.count_params()),
                                 "train_time_s": round(train_time, 1)}}}
    if not ood_vals:
        write_json(out / "run.json", results)
        folder.commit()
        print(f"[imagenet] ID accuracy {acc:.4f}; no OOD set is present, so no OOD report.")
        return results
    results.update(scores=ood_results(id_vals, ood_vals, name, args.positive),
                   wall_time_s=round(time.time() - t0, 1))
    write_report(out, results, score_arrays(id_vals, ood_vals, name), plots=not args.no_plots)
    final = folder.commit()
    print(render(results, "md").split("## Per OOD set")[0])
    print(f"[imagenet] done in {time.time() - t0:.0f} s; report: {final / 'report.md'}")
    return results


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
