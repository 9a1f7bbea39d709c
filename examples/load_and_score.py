"""Score your own images with a finished run: prediction, AMP score and OOD verdict per image.

    python -m trainers.fmnist --out runs/fmnist                  # a run folder (any trainer)
    python examples/load_and_score.py runs/fmnist my_images/     # a folder of PNG / JPEG images
    python examples/load_and_score.py runs/fmnist images.npy     # or an (N, H, W[, C]) array of raw pixels

Everything comes from the run folder: `anchored.keras` (the AMP model) and
`vanilla.keras` (its twin, shown for comparison) load with plain Keras after
`import amp_tf`; `serving/` holds the K anchors and the OOD threshold the run
set on its ID validation images. Images are raw pixels (0..255), as the run's
models take them; a folder's images are resized to the run's image size.
"""
import argparse
import sys
from pathlib import Path

import keras
import numpy as np

import amp_tf  # registers amp-tf's classes with Keras
from amp_tf.files import load_run


def read_images(source, height, width, channels):
    """(N, H, W, C) uint8 raw pixels from an .npy array or a folder of image files."""
    source = Path(source)
    if source.suffix == ".npy":
        x = np.load(source)
        return x[..., None] if x.ndim == 3 else x
    mode = "grayscale" if channels == 1 else "rgb"
    files = sorted(p for p in source.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp"))
    if not files:
        raise SystemExit(f"{source}: no .png / .jpg / .bmp images in this folder")
    images = [keras.utils.img_to_array(keras.utils.load_img(f, color_mode=mode, target_size=(height, width)))
              for f in files]
    return np.stack(images).astype("uint8")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="a finished run folder (the --out of a trainer)")
    p.add_argument("images", help="a folder of images, or an .npy array of raw pixels")
    args = p.parse_args(argv)

    run = load_run(args.run)
    predictor = amp_tf.AnchoredPredictor.from_model(run.anchored, run.anchors)
    _, height, width, channels = run.anchors.shape
    x = read_images(args.images, height, width, channels)

    out = predictor.predict(x)  # dict of numpy arrays: predicted_class, amp_score, tau, ...
    is_ood = out["amp_score"] < run.threshold
    vanilla = run.vanilla.predict(x, verbose=0).argmax(-1) if run.vanilla is not None else None
    print(f"{len(x)} images, {run.anchors.shape[0]} anchors, OOD when amp_score < {run.threshold:.4f}")
    print("image  class  amp_score  verdict" + ("  vanilla_class" if vanilla is not None else ""))
    for i in range(len(x)):
        verdict = "OOD" if is_ood[i] else "ID"
        line = f"{i:5d}  {out['predicted_class'][i]:5d}  {out['amp_score'][i]:9.4f}  {verdict:7s}"
        print(line + (f"  {vanilla[i]:13d}" if vanilla is not None else ""))
    print(f"{int(is_ood.sum())} of {len(x)} flagged OOD")
    return 0


if __name__ == "__main__":
    sys.exit(main())
