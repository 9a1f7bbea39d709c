"""Resize study (the paper's Table 7): how the resize method of an OOD set changes OOD detection.

Reads a folder of large images (e.g. the 10,000 LSUN test images at their
original size), resizes them to the model's input size once per method --
Pillow's nearest, bilinear, bicubic and lanczos, and TensorFlow's antialiased
bilinear (``tf``) -- and scores a saved model on the ID set against every
variant, as OOD sets named ``resize_<method>`` (``resize_pil_bicubic`` ...).
Scoring, normalisation, anchors and the report are eval.ood's (the variants go
through it as in-memory data sets): one report.json / report.<format> (+ plots)
in --out with one OOD set per method, plus a ``resize_study`` section (mean
absolute pixel difference between the variants) and the first --save-images
images of every variant as PNG files under images/<set>/.

    python -m eval.resize_study --model runs/c100-r34/anchored.keras --id cifar100 \\
        --ood-folder /data/LSUN_original --channels --out runs/c100-r34/resize
    python -m eval.resize_study --preset table7-resize --model runs/c100-r34/anchored.keras
    python -m eval.resize_study --model runs/fmnist/anchored.keras --id fashion_mnist \\
        --ood-folder my_photos --channels --methods pil_nearest,pil_lanczos --eval-limit 500
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from amp_tf.cli import ood
from amp_tf.cli.common import check_names, cli_errors, parse_cli, split_names
from amp_tf.contract import check_ood_folders

#: Every method, in the order of the paper's table (then tf).
METHODS = ("pil_nearest", "pil_bilinear", "pil_bicubic", "pil_lanczos", "tf")
#: The registry pattern the variants are served under while the study runs.
PATTERN = "resize_<method>"
PREFIX = PATTERN.split("<", 1)[0]

_VARIANTS: dict = {}  # set name -> (uint8 images, labels), only while a study runs


def _load_variant(request):
    """Registry loader of ``resize_<method>``: the images this process resized (split "test")."""
    from amp_tf.data.registry import DataNotFoundError, check_split, from_arrays

    if request.name not in _VARIANTS:
        raise DataNotFoundError(f"{request.name!r} is an in-memory set of eval.resize_study; it exists only "
                                "while a study runs (python -m eval.resize_study --ood-folder DIR ...).")
    check_split(request, ("test",))
    images, labels = _VARIANTS[request.name]
    return from_arrays(request, images, labels, None)


def _register():
    from amp_tf import data

    if PATTERN not in data.names(include_patterns=True):
        data.register(PATTERN)(_load_variant)


def parser():
    """eval.ood's parser with --ood-folder / --methods / --save-images instead of --ood."""
    p = ood.parser()
    p.description = __doc__.split("\n\n")[0]
    f = p.flags  # the shared flags, said for the study
    f["ood"].required, f["ood"].help = False, argparse.SUPPRESS  # the variants; --ood is refused in main()
    f["resize"].help = ("resize the ID images to the model's size if they differ "
                        "(the OOD variants come from --methods)")
    f["channels"].help = ("convert grayscale <-> RGB to the model's channel count (ID set and the folder; "
                          "default: a mismatch is an error)")
    f["eval_limit"].help = ("use at most N images of the folder (the same ones for every method) "
                            "and of the ID test set")
    f["out"].help = "report folder (default: runs/resize-<model>-<time>)"
    g = p.add_argument_group("resize study")
    g.add_argument("--ood-folder", required=True, metavar="DIR",
                   help="folder of images larger than the model's input (flat or with subfolders)")
    g.add_argument("--methods", default=",".join(METHODS),
                   help=f"comma list of resize methods (amp_tf.data.RESIZE_METHODS: {', '.join(METHODS)}); "
                        "each becomes the OOD set resize_<method>")
    g.add_argument("--save-images", type=int, default=16, metavar="N",
                   help="write the first N images of every variant to <out>/images/<set>/ (0 = none)")
    return p


def _forward(args, ood_names, out):
    """eval.ood's argv for the resolved `args` (every flag eval.ood knows, --ood = the variants)."""
    argv = []
    for dest, a in ood.parser().flags.items():  # one entry per dest: hidden aliases (--limit) are not in it
        if not a.option_strings or dest in ("help", "ood", "out", "preset", "dry_run"):
            continue
        value = getattr(args, dest, None)
        if a.nargs == 0:  # a switch (store_true)
            argv += [a.option_strings[0]] if value else []
        elif value is not None:
            argv += [a.option_strings[0], str(value)]
    return argv + ["--ood", ",".join(ood_names), "--out", str(out)]


def pixel_differences(variants):
    """``{a: {b: mean |a - b|}}`` over the uint8 pixels of every pair of variants (0..255 units)."""
    import numpy as np

    names = list(variants)
    out = {a: {} for a in names}
    for i, a in enumerate(names):
        for b in names[i:]:
            diff = np.abs(variants[a].astype(np.int16) - variants[b].astype(np.int16))
            out[a][b] = out[b][a] = round(float(np.mean(diff)), 4)
    return out


def _save_images(folder, images, n):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images[:n]):
        Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(folder / f"{i:04d}.png")


def _markdown(study):
    names = list(study["mean_abs_pixel_diff"])
    lines = ["", "## Resize study", "",
             f"{study['num_images']} images of `{study['ood_folder']}` resized to "
             f"{study['image_size'][0]}x{study['image_size'][1]} with each method. Mean absolute pixel "
             "difference between the variants (0..255):", "",
             "| | " + " | ".join(f"`{n}`" for n in names) + " |",
             "|---|" + "---:|" * len(names)]
    diff = study["mean_abs_pixel_diff"]
    for a in names:
        lines.append(f"| `{a}` | " + " | ".join(f"{diff[a][b]:.2f}" for b in names) + " |")
    return "\n".join(lines) + "\n"


def combine(args, given):
    """Checks of the study's flags that need no data and no TensorFlow (run before both)."""
    from amp_tf.cli.names import RESIZE_METHODS

    if args.ood:
        raise ValueError("--ood: not used by the resize study; its OOD sets are the variants of --ood-folder "
                         "(--methods). Use eval.ood for other OOD sets.")
    methods = list(dict.fromkeys(split_names(args.methods or "")))
    bad = [m for m in methods if m not in RESIZE_METHODS]
    if bad or not methods:
        raise ValueError(f"--methods: unknown resize method(s) {', '.join(bad) or '(none given)'}; "
                         f"use {', '.join(RESIZE_METHODS)}.")
    if args.save_images < 0:
        raise ValueError(f"--save-images: expected >= 0, got {args.save_images}.")
    check_names([args.id] if args.id else [])
    if not args.dry_run:  # a dry run reads nothing (the folder may not be there yet)
        check_ood_folders(f"folder:{args.ood_folder}", "--ood-folder")
    ood.check_files(args)  # --seed, --model, --id: eval.ood's checks
    if not args.dry_run:
        ood.out_path(args, "resize", "eval.resize_study")


@cli_errors
def main(argv=None):
    args = parse_cli(parser(), argv, "resize_study", "eval.resize_study", combine=combine,
                     describe=lambda a: (None, [f"resize_{m}" for m in split_names(a.methods or "")]))
    from amp_tf.data.loading import load_images
    from amp_tf.run.files import write_json

    methods = list(dict.fromkeys(split_names(args.methods)))
    folder = Path(args.ood_folder).expanduser()
    model = ood.load_model(args.model)
    _, size, channels = ood.model_geometry(model)
    del model
    out = ood.out_path(args, "resize", "eval.resize_study")

    _register()
    variants, labels = {}, None
    for m in methods:
        x, y, image_set = load_images(f"folder:{folder}", "test", size, channels, resize=m,
                                      convert_channels=args.channels, limit=args.eval_limit)
        h, w = image_set.image_shape[:2]
        if (h, w) == tuple(size):
            raise ValueError(f"--ood-folder {folder}: the images are {h}x{w} already, the model's size, so "
                             "there is nothing to resize; pass the folder of the original (larger) images.")
        variants[f"{PREFIX}{m}"] = x
        labels = y
        if args.verbose:
            print(f"[resize_study] {PREFIX}{m}: {len(x)} images resized to {size[0]}x{size[1]}",
                  file=sys.stderr, flush=True)
    saved = {name: x[: args.save_images] for name, x in variants.items()} if args.save_images else {}
    study = {"ood_folder": str(folder), "methods": methods,
             "ood_sets": {f"{PREFIX}{m}": m for m in methods},
             "num_images": int(len(labels)), "image_size": list(size), "channels": channels,
             "mean_abs_pixel_diff": pixel_differences(variants),
             "images": f"images/<set>/ (first {args.save_images})" if args.save_images else None}

    _VARIANTS.update({n: (x, labels) for n, x in variants.items()})
    try:
        results = ood.main(_forward(args, list(variants), out))
    finally:
        for n in variants:
            _VARIANTS.pop(n, None)
    del variants
    for name, x in saved.items():  # after eval.ood wrote the (new or empty) --out
        _save_images(out / "images" / name, x, args.save_images)
    results["resize_study"] = study
    report = out / "report.json"
    if report.exists():
        import json

        rep = json.loads(report.read_text())
        rep["resize_study"] = study
        write_json(report, rep)
    if (out / "report.md").exists():
        with open(out / "report.md", "a") as f:
            f.write(_markdown(study))
    if args.verbose:
        print(f"[resize_study] report: {report}", file=sys.stderr)
    return results


if __name__ == "__main__":
    main()
