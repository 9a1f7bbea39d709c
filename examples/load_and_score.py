"""Score your own images with a finished run: prediction, OOD score and OOD verdict per image.

    python -m trainers.fmnist --out runs/fmnist                  # a run folder (any trainer)
    python examples/load_and_score.py runs/fmnist my_images/     # a folder of PNG / JPEG images
    python examples/load_and_score.py runs/fmnist images.npy     # or an (N, H, W[, C]) array of raw pixels

Everything comes from the run folder: `anchored.keras` (the AMP model) and
`vanilla.keras` (its twin, shown for comparison) load with plain Keras after
`import amp_tf`; `detector.json` / `detector.npz` hold the shipped detector (the
score the run selected on validation data, its anchors and its threshold, set on
the run's ID validation images), the same that `serving/` and `model.tflite` run. Images are raw pixels (0..255), as the run's
models take them. A folder's images are read by the library's reader, `amp_tf.data.load("folder:<path>")`
(PNG, JPEG, BMP, TIFF, WebP, ...; 16-bit and float images as `amp_tf.data.folders` says), converted to the run's
channels and resized to its image size (antialiased bilinear); a file in it that is no readable image is
refused by name. Bad input (a missing or unfinished run, a missing or unreadable images path) is refused
with one `error:` line and exit code 2, before TensorFlow is imported where it can be.
"""
import argparse
import sys
from pathlib import Path

import amp_tf  # noqa: F401  (registers amp-tf's classes with Keras; light: TensorFlow comes with the first model)
from amp_tf.run.files import check_finished_run, load_run  # pure Python: the checks answer before TensorFlow

#: What an images argument may be, said by every refusal of one.
EXPECTED = "give a folder of images, or an .npy array of raw pixels (uint8, or float 0..255) saved with np.save"


class Parser(argparse.ArgumentParser):
    def error(self, message):
        """One `error:` line on stderr and exit code 2 (argparse would print its usage first)."""
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def check_images_path(source):
    """`source` as a Path if it is a folder or an .npy file; a one-line error otherwise (no TensorFlow)."""
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"{source}: no such file or folder; {EXPECTED}")
    if not source.is_dir() and source.suffix.lower() != ".npy":
        raise ValueError(f"{source}: neither a folder nor an .npy file; {EXPECTED}")
    return source


def read_npy(source):
    """The raw pixels of an .npy file, (N, H, W) given a channel axis; refused, naming the file, unless it
    holds a plain array of numbers (no pickled objects) that `amp_tf.models.pixels.check_pixels` accepts."""
    import numpy as np

    from amp_tf.models.pixels import check_pixels

    with open(source, "rb") as f:
        magic = f.read(6)
    if magic != b"\x93NUMPY":  # numpy would try to unpickle it, and say so
        what = "an .npz archive" if magic.startswith(b"PK") else "not a numpy .npy file (no .npy header)"
        raise ValueError(f"{source}: {what}; {EXPECTED}")
    try:
        x = np.load(source, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:  # pickled objects, a truncated file
        why = "it holds Python objects (pickled)" if "pickle" in str(err) else f"numpy cannot read it ({err})"
        raise ValueError(f"{source}: not an array of raw pixels: {why}; {EXPECTED}") from None
    try:
        if x.ndim:  # a 0-d array is refused by its shape when scored
            check_pixels(x, what=f"images {source}")
    except TypeError as err:  # complex numbers, strings, ...
        raise ValueError(f"{str(err).rstrip('.')}; {EXPECTED}") from None
    return x[..., None] if x.ndim == 3 else x


def read_images(source, height, width, channels):
    """(N, H, W, C) uint8 raw pixels from an .npy array, or a folder of image files read by `amp_tf.data`
    (``data.load("folder:<path>")``: the library's reader, 16-bit and float images included), converted
    to the run's channels and resized to its size; a file that is no readable image is refused by name."""
    source = check_images_path(source)
    if not source.is_dir():
        return read_npy(source)
    from amp_tf.data.folders import UnreadableImageError
    from amp_tf.data.loading import load_images

    try:
        x, _, _ = load_images(f"folder:{source}", "test", (height, width), channels, resize="tf",
                              convert_channels=True, strict=True)
    except UnreadableImageError as err:
        raise ValueError(f"{err.report}. Remove or fix them: this example scores every file in {source}.") from None
    return x


def main(argv=None):
    p = Parser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="a finished run folder (the --out of a trainer)")
    p.add_argument("images", help="a folder of images, or an .npy array of raw pixels")
    args = p.parse_args(argv)
    check_finished_run(args.run)  # before TensorFlow is imported, as is argparse
    check_images_path(args.images)
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
