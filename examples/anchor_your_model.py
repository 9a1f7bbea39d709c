"""Anchor and fine-tune your own Keras model, then score images with AMP.

Any functional Keras classifier whose input reaches a Conv2D first works; here a
``keras.applications`` family. Its built-in preprocessing (``Rescaling`` /
``Normalization``) becomes the anchored model's pixel statistics, so you keep
feeding raw pixels (uint8, or float 0..255) everywhere.

    python examples/anchor_your_model.py --tiny                 # random arrays, seconds
    python examples/anchor_your_model.py --data cifar10 --epochs 2 --limit 5000
    python examples/anchor_your_model.py --data cifar10 --download   # fetch CIFAR-10 first (about 160 MiB)
    python examples/anchor_your_model.py --family ResNet50V2 --size 32 --tiny

Bad input (an unknown --family or --data, data that is not on this machine, a
used --out, an --out that is a file) is refused with one `error:` line and exit code 2; every
mistake that needs no data is refused before TensorFlow is imported.
"""
import argparse
import sys
from pathlib import Path


class Parser(argparse.ArgumentParser):
    def error(self, message):
        """One `error:` line on stderr and exit code 2 (argparse would print its usage first)."""
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def parse(argv=None):
    p = Parser(description=__doc__.splitlines()[0])
    p.add_argument("--family", default="MobileNetV3Small", help="a keras.applications model name")
    p.add_argument("--size", type=int, default=32, help="input height and width (71/75 for Xception/Inception)")
    p.add_argument("--data", default="cifar10", help="an amp_tf.data set with 3-channel images of --size")
    p.add_argument("--data-dir", default=None, help="where --data is (a tensorflow-datasets data dir)")
    p.add_argument("--download", action="store_true", help="let tensorflow-datasets fetch --data (needs a network)")
    p.add_argument("--limit", type=int, default=5000, help="training images to use from --data")
    p.add_argument("--tiny", action="store_true", help="random pixels instead of --data (a smoke run)")
    p.add_argument("--epochs", type=int, default=1, help="anchored fine-tuning epochs")
    p.add_argument("--out", default=None, help="save the fine-tuned model (.keras) and a SavedModel here")
    args = p.parse_args(argv)
    if args.epochs < 1 or args.size < 32:
        p.error("--epochs must be >= 1 and --size >= 32")
    if args.limit < 8:
        p.error(f"--limit: at least 8 training images, got {args.limit}")
    try:
        check_names_and_out(args)
    except ValueError as err:
        p.error(str(err))
    return args


def check_names_and_out(args):
    """--family, --data and --out, checked before TensorFlow is imported (amp_tf.cli.names holds the
    names of keras.applications and of amp_tf.data; amp_tf.run.runfolder the rules of a folder)."""
    from amp_tf.cli.names import check_data_name, check_family
    from amp_tf.run.runfolder import check_writable

    check_family(args.family)
    try:
        check_data_name(args.data)
    except ValueError as err:
        raise ValueError(f"--data: {err}") from None
    if args.out:
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise ValueError(f"--out {out} is a file, not a folder; give a new folder")
        check_writable(out, f"--out {out}")  # a file on its path, no permission, a full disk
        if (out / "serving").exists():
            raise ValueError(f"--out {out} already holds a serving/ model; give a new folder")


def application(name):
    """The `keras.applications` constructor `name` (checked by `amp_tf.cli.names.check_family`)."""
    import keras

    from amp_tf.cli.names import check_family

    return getattr(keras.applications, check_family(name))


def load_arrays(args):
    """Raw-pixel (uint8) train / ID validation / test arrays and the class count.

    The validation images are held out of the training images (never trained on): they set
    the OOD threshold. The test images are only scored.
    """
    import numpy as np

    if args.tiny:
        rng = np.random.default_rng(0)
        x = rng.integers(0, 256, (92, args.size, args.size, 3), dtype=np.uint8)
        return x[:32], np.arange(32) % 4, x[32:52], x[52:], 4  # 32 train, 20 validation, 40 test
    from amp_tf import data

    kw = dict(data_dir=args.data_dir, download=args.download)
    n_val = max(20, args.limit // 10)
    x, y = data.to_numpy(data.load(args.data, "train", **kw), limit=args.limit + n_val)
    x_test, _ = data.to_numpy(data.load(args.data, "test", **kw), limit=256)
    if x.shape[1:] != (args.size, args.size, 3):
        raise ValueError(f"--data {args.data}: its images are {'x'.join(map(str, x.shape[1:]))}; this example "
                         f"takes 3-channel images of --size {args.size} ({args.size}x{args.size}x3), e.g. "
                         "--data cifar10 --size 32.")
    if len(x) <= n_val:
        raise ValueError(f"--data {args.data}: {len(x)} training images, too few to hold out {n_val} for validation.")
    return x[:-n_val], y[:-n_val], x[-n_val:], x_test, int(y.max()) + 1


def main(argv=None):
    args = parse(argv)  # argument errors answer before TensorFlow is imported
    from amp_tf.errors import cli_errors  # a user error: one "error: ..." line, exit code 2

    return cli_errors(anchor_and_score)(args)


def anchor_and_score(args):
    import amp_tf
    from amp_tf.method.predictor import AnchoredPredictor, select_anchors

    family = application(args.family)
    x, y, x_val, x_test, num_classes = load_arrays(args)
    # 1. Your model: it must output logits (classifier_activation=None), raw pixels in.
    model = family(weights=None, input_shape=(args.size, args.size, 3), classes=num_classes,
                   classifier_activation=None)
    # (train it as usual here, or load your trained one with keras.saving.load_model)

    # 2. Anchor it (function-preserving start) and fine-tune with anchoring.
    anchored, history = amp_tf.finetune_anchored(
        model, x, y, epochs=args.epochs, batch_size=16 if args.tiny else 128, lr=0.01, verbose=0, backup=False)
    print(f"fine-tuned {args.family}: loss {history.history['loss'][-1]:.3f}, "
          f"pixel statistics mean {anchored.normalizer.mean.numpy().round(1).tolist()} "
          f"std {anchored.normalizer.std.numpy().round(1).tolist()}")

    # 3. Score images: prediction and AMP score (higher = in-distribution).
    predictor = AnchoredPredictor.from_model(anchored, select_anchors(x, 5, labels=y))
    out = predictor.predict(x_test)
    score = "ood_score" if "ood_score" in out else "amp_score"
    print(f"scored {len(x_test)} images: predicted classes {out['predicted_class'][:8].tolist()} ..., "
          f"{score} mean {out[score].mean():.4f}")

    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        anchored.save(Path(args.out) / "anchored.keras")
        # the OOD threshold comes from ID validation images held out of training (never the test images)
        amp_tf.export_for_serving(predictor, Path(args.out) / "serving", id_images=x_val)
        print(f"saved {args.out}/anchored.keras and {args.out}/serving")
    return out


if __name__ == "__main__":
    sys.exit(0 if isinstance(main(), dict) else 1)
