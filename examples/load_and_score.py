"""Score your own images with a finished run: prediction, OOD score and OOD verdict per image.

    python -m trainers.fmnist --out runs/fmnist                  # a run folder (any trainer)
    python examples/load_and_score.py runs/fmnist my_images/     # a folder of PNG / JPEG images
    python examples/load_and_score.py runs/fmnist images.npy     # or an (N, H, W[, C]) array of raw pixels

Everything comes from the run folder: `anchored.keras` (the AMP model) and
`vanilla.keras` (its twin, shown for comparison) load with plain Keras after
`import amp_tf`; `detector.json` / `detector.npz` hold the shipped detector (the
score the run selected on validation data, its anchors and its threshold, set on
the run's ID validation images), the same that `serving/` and `model.tflite` run. Images are raw pixels (0..255), as the run's
models take them; a folder's images are resized to the run's image size.
"""
import argparse
import sys
from pathlib import Path

import keras
import numpy as np

import amp_tf  # noqa: F401  (registers amp-tf's classes with Keras)
from amp_tf.run.files import load_run


class Parser(argparse.ArgumentParser):
    def error(self, message):
        """One `error:` line on stderr and exit code 2 (argparse would print its usage first)."""
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def check_finished(run):
    """A one-line error unless `run` is a finished run folder (a trainer's --out, with its job.json)."""
    run = Path(run)
    if not run.is_dir():
        raise FileNotFoundError(f"{run}: no such folder; pass the --out folder of a finished run")
    partial = run.parent / f".{run.name}.partial"
    if not (run / "job.json").is_file():
        more = (f" (its work folder {partial} is still there: finish the run with its trainer's --resume, then "
                "score)") if partial.exists() else ""
        raise ValueError(f"{run}: the run never finished: no job.json{more}")


def read_images(source, height, width, channels):
    """(N, H, W, C) uint8 raw pixels from an .npy array or a folder of image files."""
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"{source}: no such file or folder; give a folder of images or an .npy array")
    if source.suffix == ".npy":
        x = np.load(source)
        return x[..., None] if x.ndim == 3 else x
    mode = "grayscale" if channels == 1 else "rgb"
    files = sorted(p for p in source.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp"))
    if not files:
        raise ValueError(f"{source}: no .png / .jpg / .bmp images in this folder")
    images = [keras.utils.img_to_array(keras.utils.load_img(f, color_mode=mode, target_size=(height, width)))
              for f in files]
    return np.stack(images).astype("uint8")


def main(argv=None):
    p = Parser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="a finished run folder (the --out of a trainer)")
    p.add_argument("images", help="a folder of images, or an .npy array of raw pixels")
    args = p.parse_args(argv)

    check_finished(args.run)
    run = load_run(args.run)
    _, height, width, channels = run.anchors.shape
    x = read_images(args.images, height, width, channels)

    out = run.predict(x)  # the run's shipped detector: predicted_class, ood_score, amp_score, is_ood, ...
    is_ood = out["is_ood"]
    vanilla = run.vanilla.predict(x, verbose=0).argmax(-1) if run.vanilla is not None else None
    threshold = run.threshold if run.detector is None else run.detector.threshold
    print(f"{len(x)} images, {run.anchors.shape[0]} anchors, OOD when {run.detector_label} score < {threshold:.4f}")
    print("image  class  ood_score  verdict" + ("  vanilla_class" if vanilla is not None else ""))
    for i in range(len(x)):
        verdict = "OOD" if is_ood[i] else "ID"
        line = f"{i:5d}  {out['predicted_class'][i]:5d}  {out['ood_score'][i]:9.4f}  {verdict:7s}"
        print(line + (f"  {vanilla[i]:13d}" if vanilla is not None else ""))
    print(f"{int(is_ood.sum())} of {len(x)} flagged OOD")
    return 0


if __name__ == "__main__":
    from amp_tf.errors import cli_errors  # a user error (a missing run or image path): one "error:" line, exit 2

    sys.exit(cli_errors(main)())
