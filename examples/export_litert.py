"""Export a trained AMP model for TF Serving and for LiteRT, then run both on images.

A run of the main job already holds both (`serving/` and `model.tflite`); this
is how to make them from any anchored model, and how to run the `.tflite`:

    python examples/export_litert.py --run runs/fmnist-X --out exported/
    python examples/export_litert.py --tiny --out /tmp/litert-demo   # untrained tiny model, no data

With `--run`, the anchors are 5 Fashion-MNIST training images and the serving
threshold comes from 1000 other training images held out here (ID validation
images: never the reported test set); the verdicts are shown for 8 test images.
"""
import argparse
import sys


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="a main-job run folder holding anchored.keras")
    src.add_argument("--tiny", action="store_true", help="a tiny untrained model on random pixels")
    p.add_argument("--out", required=True, help="a new folder for serving/ and model.tflite")
    p.add_argument("--num-anchors", type=int, default=5)
    return p.parse_args(argv)


def model_and_images(args):
    """`(anchored model, train pixels, ID validation pixels, images to score)`, all uint8."""
    import keras
    import numpy as np

    import amp_tf  # registers amp-tf's classes: load_model needs them
    from amp_tf import data

    if args.tiny:
        from amp_tf.models import build_backbone

        x = np.random.default_rng(0).integers(0, 256, (128, 28, 28, 1), dtype=np.uint8)
        mean, std = data.channel_stats(x)
        model = amp_tf.AnchoredModel(build_backbone("resnet_small", (28, 28, 1), 10, width=4), mean=mean, std=std)
        model(x[:2])
        return model, x[:32], x[32:96], x[96:104]
    model = keras.saving.load_model(f"{args.run}/anchored.keras", compile=False)
    train, _ = data.to_numpy(data.load("fashion_mnist", "train"), limit=2000)
    test, _ = data.to_numpy(data.load("fashion_mnist", "test"), limit=8)
    return model, train[:1000], train[1000:2000], test


def main(argv=None):
    args = parse(argv)
    import numpy as np
    import tensorflow as tf

    from amp_tf.export import TFLiteModel, export_for_serving, export_tflite
    from amp_tf.predictor import AnchoredPredictor, select_anchors

    model, train, val, images = model_and_images(args)
    predictor = AnchoredPredictor.from_model(model, select_anchors(train, args.num_anchors))
    head = export_for_serving(predictor, f"{args.out}/serving", id_images=val)
    export_tflite(head, f"{args.out}/model.tflite")  # the same model and threshold, batch 1
    print(f"threshold {float(head.threshold.numpy()):.4f}: is_ood = amp_score < threshold")

    served = tf.saved_model.load(f"{args.out}/serving")  # keep a reference while calling it
    saved = served.signatures["serving_default"](images=tf.constant(images))
    runner = TFLiteModel(f"{args.out}/model.tflite", num_threads=1)  # checks inputs, any N
    lite = runner(images)
    print(f"LiteRT runtime: {runner.runtime}")
    print(" # | class (SavedModel / .tflite) | AMP score (SavedModel / .tflite) | OOD?")
    for i in range(len(images)):
        print(f"{i:2d} | {int(saved['predicted_class'][i])} / {int(lite['predicted_class'][i])}"
              f" | {float(saved['amp_score'][i]):.5f} / {float(lite['amp_score'][i]):.5f}"
              f" | {'OOD' if lite['is_ood'][i] else 'in-distribution'}")
    same = np.array_equal(saved["is_ood"].numpy(), lite["is_ood"]) and np.array_equal(
        saved["predicted_class"].numpy(), lite["predicted_class"])
    print(f"verdicts agree on all {len(images)} images" if same else "verdicts DIFFER")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
