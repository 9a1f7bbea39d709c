"""Compare trained anchored models on VALIDATION data only (the selection protocol).

For each `.keras` anchored model: ID validation accuracy and AMP's FPR95 (mean over
`amp_tf.data.corruptions.validation_ood_sets`, built from ID validation images; no
test image, no test corruption type) for the AMP variants. This is what choices
between training recipes are made on (BENCHMARKS.md).

    python -m benchmarks.quality.validate_models runs/readme-main-job/anchored.keras \\
        runs/finetune-2-1/anchored.keras
"""

from __future__ import annotations

import argparse
import sys

if __name__ == "__main__" and not __package__:  # python benchmarks/quality/validate_models.py
    sys.exit("run it as a module from the repository root: python -m benchmarks.quality.validate_models")

from amp_tf.recipe import NUM_ANCHORS  # noqa: E402  (light: no TensorFlow)
from benchmarks.harness.results import check_k  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.quality.validate_models",
                                description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("models", nargs="+", help="anchored .keras files trained on Fashion-MNIST")
    p.add_argument("--val-size", type=int, default=5000, help="the trainers' held-out validation split")
    p.add_argument("--seed", type=int, default=0, help="the split seed the models were trained with")
    p.add_argument("--ood-size", type=int, default=1000, help="validation images per validation OOD set")
    p.add_argument("--num-anchors", type=int, default=NUM_ANCHORS, help="K (amp_tf.recipe.NUM_ANCHORS)")
    args = p.parse_args(argv)
    args.num_anchors = check_k(p, args.num_anchors, "--num-anchors")
    import keras
    import numpy as np

    import amp_tf  # noqa: F401  (registers the model classes)
    from amp_tf.detection import detectors, metrics
    from amp_tf.data.corruptions import validation_ood_sets
    from amp_tf.run.pipeline import load_id

    d = load_id("fashion_mnist", val_size=args.val_size, seed=args.seed, eval_limit=1)
    xv = d.x_val[: args.ood_size]
    val_ood = validation_ood_sets(xv, seed=args.seed)
    variants = ("amp", "amp[sum,exp]", "amp[mean,divide]")
    print("| model | ID val acc | " + " | ".join(f"val-OOD FPR95 {v}" for v in variants) + " |")
    print("|:--|--:|" + "--:|" * len(variants))
    rows = {}
    for path in args.models:
        model = keras.models.load_model(path, compile=False)
        run = detectors.get("amp", anchored=True, num_anchors=args.num_anchors, seed=args.seed).fit(
            model, id_train=d.x_train).score_all
        acc = float(np.mean(run(d.x_val)["predicted_class"] == d.y_val))
        ref = run(xv)
        ood = {k: run(v) for k, v in val_ood.items()}
        fpr = {v: float(np.mean([metrics.ood_metrics(ref[v], o[v])["fpr95"] for o in ood.values()]))
               for v in variants}
        rows[path] = {"val_accuracy": acc, "val_ood_fpr95": fpr}
        print(f"| {path} | {100 * acc:.2f} | " + " | ".join(f"{100 * fpr[v]:.1f}" for v in variants) + " |")
    return rows


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
