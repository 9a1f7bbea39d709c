"""Anchor and fine-tune your own Keras model, then score images with AMP.

Any functional Keras classifier whose input reaches a Conv2D first works; here a
``keras.applications`` family. Its built-in preprocessing (``Rescaling`` /
``Normalization``) becomes the anchored model's pixel statistics, so you keep
feeding raw pixels (uint8, or float 0..255) everywhere.

    python examples/anchor_your_model.py --tiny                 # random arrays, seconds
    python examples/anchor_your_model.py --data cifar10 --epochs 2 --limit 5000
    python examples/anchor_your_model.py --family ResNet50V2 --size 32 --tiny
"""
import argparse


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--family", default="MobileNetV3Small", help="a keras.applications model name")
    p.add_argument("--size", type=int, default=32, help="input height and width (71/75 for Xception/Inception)")
    p.add_argument("--data", default="cifar10", help="an amp_tf.data set with 3-channel images of --size")
    p.add_argument("--limit", type=int, default=5000, help="training images to use from --data")
    p.add_argument("--tiny", action="store_true", help="random pixels instead of --data (a smoke run)")
    p.add_argument("--epochs", type=int, default=1, help="anchored fine-tuning epochs")
    p.add_argument("--out", default=None, help="save the fine-tuned model (.keras) and a SavedModel here")
    args = p.parse_args(argv)
    if args.epochs < 1 or args.size < 32:
        p.error("--epochs must be >= 1 and --size >= 32")
    return args


def load_arrays(args):
    """Raw-pixel (uint8) train / test arrays and the class count."""
    import numpy as np

    if args.tiny:
        rng = np.random.default_rng(0)
        x = rng.integers(0, 256, (72, args.size, args.size, 3), dtype=np.uint8)
        return x[:32], np.arange(32) % 4, x[32:], 4  # 40 test images: 20 set the threshold
    from amp_tf import data

    x, y = data.to_numpy(data.load(args.data, "train"), limit=args.limit)
    x_test, _ = data.to_numpy(data.load(args.data, "test"), limit=256)
    return x, y, x_test, int(y.max()) + 1


def main(argv=None):
    args = parse(argv)  # argument errors answer before TensorFlow is imported
    import keras

    import amp_tf
    from amp_tf.predictor import AnchoredPredictor, select_anchors

    x, y, x_test, num_classes = load_arrays(args)
    # 1. Your model: it must output logits (classifier_activation=None), raw pixels in.
    model = getattr(keras.applications, args.family)(
        weights=None, input_shape=(args.size, args.size, 3), classes=num_classes, classifier_activation=None)
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
    print(f"scored {len(x_test)} images: predicted classes {out['predicted_class'][:8].tolist()} ..., "
          f"AMP score mean {out['amp_score'].mean():.4f}")

    if args.out:
        from pathlib import Path

        Path(args.out).mkdir(parents=True, exist_ok=True)
        anchored.save(Path(args.out) / "anchored.keras")
        # the OOD threshold comes from in-distribution images the model did not train on (use your validation set)
        amp_tf.export_for_serving(predictor, Path(args.out) / "serving", id_images=x_test[: len(x_test) // 2])
        print(f"saved {args.out}/anchored.keras and {args.out}/serving")
    return out


if __name__ == "__main__":
    main()
