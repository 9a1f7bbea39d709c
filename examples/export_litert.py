"""Export a trained AMP model for TF Serving and for LiteRT, then run both on images.

A run of the main job already holds both (`serving/` and `model.tflite`); this
is how to make them from any anchored model, and how to run the `.tflite`:

    python examples/export_litert.py --run runs/fmnist-X --out exported/
    python examples/export_litert.py --tiny --out /tmp/litert-demo   # untrained tiny model, no data

With `--run` (a finished trainers.fmnist or trainers.cifar run), the run's shipped
detector is exported (`detector.json`: the score the run selected on validation
data, its anchors and its threshold, set on the run's held-out ID validation
images), so the exports decide exactly as the run's own `serving/`. A run made
before detectors were saved exports AMP alone with the run's anchors, its
threshold set on the run's own ID validation images: the `val_size` training images the run held out and
never trained on (`amp_tf.run.pipeline.load_id` with the run's `val_size` and `seed`
from its job.json), never the reported test set. 95 % of them are accepted. The
verdicts are shown for 8 test images. Bad input (a missing or unfinished run
folder, a used --out) is refused with one `error:` line and exit code 2.
"""
import argparse
import sys
from pathlib import Path


class Parser(argparse.ArgumentParser):
    def error(self, message):
        """One `error:` line on stderr and exit code 2 (argparse would print its usage first)."""
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def parse(argv):
    p = Parser(description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="a finished trainers.fmnist / trainers.cifar run folder (its --out)")
    src.add_argument("--tiny", action="store_true", help="a tiny untrained model on random pixels")
    p.add_argument("--out", required=True, help="a new (or empty) folder for serving/ and model.tflite")
    p.add_argument("--num-anchors", type=int, default=None,
                   help="K anchors of the --tiny model (default 5); a --run keeps its own")
    p.add_argument("--data-dir", default=None,
                   help="where the run's ID data is, if the run read it from a --data-dir")
    args = p.parse_args(argv)
    if args.run and args.num_anchors is not None:
        p.error("--num-anchors goes with --tiny: a --run is exported with its own anchors")
    args.num_anchors = 5 if args.num_anchors is None else args.num_anchors
    if args.num_anchors < 2:
        p.error(f"--num-anchors: AMP needs K >= 2 anchors, got {args.num_anchors}")
    if args.run:
        from amp_tf.run.files import check_finished_run  # pure Python: no TensorFlow yet

        try:
            check_finished_run(args.run, "--run")
        except (ValueError, OSError) as err:
            p.error(str(err))
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        p.error(f"--out {out} is {'a file' if not out.is_dir() else 'not empty'}; give a new or empty folder")
    return args


def run_id_set(job, path):
    """The ID set name of a run folder's job.json (trainers.fmnist or trainers.cifar)."""
    from amp_tf.cli.fmnist import suite

    if "holdout" in job:  # trainers.fmnist
        return suite(bool(job["holdout"]))[0]
    if job.get("dataset") in ("cifar10", "cifar100") and "image_size" not in job:  # trainers.cifar
        return job["dataset"]
    raise ValueError(f"--run {path}: not a trainers.fmnist or trainers.cifar run (its job.json names neither "
                     "job), so this example cannot find its held-out ID validation images.")


def model_and_images(args):
    """`(anchored model, anchors, ID validation pixels, images to score)`, all uint8."""
    import numpy as np

    import amp_tf  # registers amp-tf's classes: load_model needs them
    from amp_tf import data

    if args.tiny:
        from amp_tf.models import build_backbone
        from amp_tf.method.predictor import select_anchors

        x = np.random.default_rng(0).integers(0, 256, (128, 28, 28, 1), dtype=np.uint8)
        mean, std = data.channel_stats(x)
        model = amp_tf.AnchoredModel(build_backbone("resnet_small", (28, 28, 1), 10, width=4), mean=mean, std=std)
        model(x[:2])
        return model, select_anchors(x[:32], args.num_anchors), x[32:96], x[96:104], None
    from amp_tf.run.files import load_run
    from amp_tf.run.pipeline import load_id

    run = load_run(args.run)  # checks the folder: finished, its models and serving/ readable
    job = run.job
    if run.detector is not None:
        d = load_id(run_id_set(job, args.run), val_size=20, eval_limit=8, data_dir=args.data_dir)
        print(f"run {args.run}: its shipped detector {run.detector.label} with {len(run.anchors)} anchors and the "
              f"threshold it set on its held-out ID validation images")
        return run.anchored, run.anchors, None, d.x_test[:8], run.detector
    if "val_size" not in job or "seed" not in job:
        raise ValueError(f"--run {args.run}: its job.json has no val_size / seed, so the held-out ID validation "
                         "images cannot be found; pass the folder of a finished trainers.fmnist or trainers.cifar run.")
    # the same split as the run: the first val_size images of permutation(seed) of the training split
    d = load_id(run_id_set(job, args.run), val_size=job["val_size"], seed=job["seed"], eval_limit=8,
                data_dir=args.data_dir)
    print(f"run {args.run}: {len(run.anchors)} anchors from its serving/, threshold from its "
          f"{len(d.x_val)} held-out ID validation images (val_size {job['val_size']}, seed {job['seed']})")
    return run.anchored, run.anchors, d.x_val, d.x_test[:8], None


def export_and_compare(args):
    import numpy as np
    import tensorflow as tf

    from amp_tf.serve.export import TFLiteModel, export_for_serving, export_tflite
    from amp_tf.method.predictor import AnchoredPredictor

    model, anchors, val, images, detector = model_and_images(args)
    if detector is not None:  # the run's shipped detector, with its own threshold
        head = export_for_serving(detector, f"{args.out}/serving")
    else:
        head = export_for_serving(AnchoredPredictor.from_model(model, anchors), f"{args.out}/serving", id_images=val)
    export_tflite(head, f"{args.out}/model.tflite")  # the same model and threshold, batch 1

    served = tf.saved_model.load(f"{args.out}/serving")  # keep a reference while calling it
    saved = served.signatures["serving_default"](images=tf.constant(images))
    runner = TFLiteModel(f"{args.out}/model.tflite", num_threads=1)  # checks inputs, any N
    lite = runner(images)
    score = "ood_score" if "ood_score" in saved else "amp_score"  # the detector's score where it has one
    print(f"threshold {float(head.threshold.numpy()):.4f}: is_ood = {score} < threshold")
    print(f"LiteRT runtime: {runner.runtime}")
    print(f" # | class (SavedModel / .tflite) | {score} (SavedModel / .tflite) | OOD?")
    for i in range(len(images)):
        print(f"{i:2d} | {int(saved['predicted_class'][i])} / {int(lite['predicted_class'][i])}"
              f" | {float(saved[score][i]):.5f} / {float(lite[score][i]):.5f}"
              f" | {'OOD' if lite['is_ood'][i] else 'in-distribution'}")
    same = np.array_equal(saved["is_ood"].numpy(), lite["is_ood"]) and np.array_equal(
        saved["predicted_class"].numpy(), lite["predicted_class"])
    print(f"verdicts agree on all {len(images)} images" if same else "verdicts DIFFER")
    return 0 if same else 1


def main(argv=None):
    args = parse(argv)  # argument errors answer before TensorFlow is imported
    from amp_tf.errors import cli_errors  # a user error: one "error: ..." line, exit code 2

    return cli_errors(export_and_compare)(args)


if __name__ == "__main__":
    sys.exit(main())
