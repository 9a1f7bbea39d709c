"""Select the main job's anchored fine-tuning on VALIDATION data (issue 20): T mode, epochs, lr.

For each seed: the main job's vanilla twin (resnet_small width 16, 2 epochs, the
paper's coupled weight decay, lr 0.1 with warm-up + cosine, 55,000 training
images), then anchored fine-tuning from it with each candidate setting. Each
candidate is judged on the 5,000 ID validation images (accuracy, against the
vanilla model's on the same images) and on the validation OOD sets
(`amp_tf.data.corruptions.validation_ood_sets` of 1,000 validation images: no test
image, no test corruption type) by AMP's FPR95. The ID *test* accuracy on all
10,000 test images is recorded for the report, never used to choose.

Rule: among the settings whose mean validation accuracy is within 0.5 points of
the vanilla model's, the lowest mean validation-OOD FPR95 (AMP) wins.

Results are cached per (seed, setting) in `--cache` (an interrupted run resumes;
a cache entry records the code version it was made with and is redone when it
differs), and the table is written to `--json`.

    python -m benchmarks.quality.finetune_select --seeds 0,1,2 \\
        --settings "official:1:0.1,per_sample:1:0.1,none:1:0.1,per_sample:2:0.1,per_sample:1:0.03,per_sample:1:0.01"
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

if __name__ == "__main__" and not __package__:  # python benchmarks/quality/finetune_select.py
    sys.exit("run it as a module from the repository root: python -m benchmarks.quality.finetune_select")

from amp_tf.recipe import NUM_ANCHORS  # noqa: E402  (light: no TensorFlow)
from benchmarks.harness.machine import cpu_model  # noqa: E402
from benchmarks.harness.results import write_json  # noqa: E402

#: The cached results are valid for this version of T and the fine-tuning code.
CODE_VERSION = "official-T-torchvision-exact-2026-12-02"
VARIANTS = ("amp", "amp[sum,exp]", "amp[mean,divide]")


def parse_settings(text):
    """`mode:epochs:lr` items; mode is a consistency_mode (official, per_sample) or `none` (no T)."""
    out = []
    for item in text.split(","):
        mode, epochs, lr = item.strip().split(":")
        if mode not in ("official", "per_sample", "none"):
            raise argparse.ArgumentTypeError(f"--settings: mode {mode!r}: expected official, per_sample or none")
        out.append((mode, int(epochs), float(lr)))
    return out


def vanilla_twin(d, seed, cache, name=None):
    """The main job's vanilla twin of `d` (2 epochs), cached as `cache / name` (default `vanilla_s{seed}.keras`)."""
    import keras

    from amp_tf.run.training import TrainConfig, train

    path = cache / (name or f"vanilla_s{seed}.keras")
    if not path.exists():
        cfg = TrainConfig(anchored=False, epochs=2, warmup_epochs=0.2, seed=seed, backbone_kwargs={"width": 16},
                          weight_decay_mode="coupled", mean=tuple(d.mean.tolist()), std=tuple(d.std.tolist()))
        model, _ = train(cfg, d.x_train, d.y_train, d.num_classes, verbose=2, backup=False)
        model.save(path)
    return keras.models.load_model(path, compile=False)


def run_setting(d, vanilla, seed, mode, epochs, lr, val_ood, test=True):
    """Fine-tunes `vanilla` with one setting; validation accuracy and validation-OOD FPR95 per AMP variant
    (and, with `test`, the ID test accuracy: recorded for the report, never used to choose)."""
    import numpy as np

    from amp_tf.detection import detectors, metrics
    from amp_tf.run.training import finetune_anchored

    t = time.time()
    model, _ = finetune_anchored(
        vanilla, d.x_train, d.y_train, epochs=epochs, lr=lr, warmup_epochs=0.1 * epochs, seed=seed,
        weight_decay_mode="coupled", consistency="none" if mode == "none" else "all",
        consistency_mode="official" if mode == "none" else mode, verbose=2, backup=False)
    train_s = time.time() - t
    run = detectors.get("amp", anchored=True, num_anchors=NUM_ANCHORS, seed=seed).fit(
        model, id_train=d.x_train).score_all
    ref = run(d.x_val[:1000])
    ood = {k: run(v) for k, v in val_ood.items()}
    out = {
        "val_acc": float(np.mean(run(d.x_val)["predicted_class"] == d.y_val)),
        "val_ood_fpr95": {v: float(np.mean([metrics.ood_metrics(ref[v], o[v])["fpr95"] for o in ood.values()]))
                          for v in VARIANTS},
        "train_s": round(train_s, 1),
    }
    if test:
        out["test_acc"] = float(np.mean(run(d.x_test)["predicted_class"] == d.y_test))
    return out


def summarise(rows, settings, seeds):
    import numpy as np

    table = []
    for mode, epochs, lr in settings:
        key = f"{mode}:{epochs}:{lr}"
        got = [rows[f"s{s}/{key}"] for s in seeds if f"s{s}/{key}" in rows]
        if len(got) < len(seeds):
            continue
        gap = [100 * (g["val_acc"] - g["vanilla"]["val_acc"]) for g in got]
        tgap = [100 * (g["test_acc"] - g["vanilla"]["test_acc"]) for g in got]
        table.append({"setting": key, "val_acc_gap": float(np.mean(gap)), "val_acc_gap_sd": float(np.std(gap)),
                      "test_acc_gap": float(np.mean(tgap)),
                      "val_ood_fpr95_amp": float(np.mean([100 * g["val_ood_fpr95"]["amp"] for g in got]))})
    ok = [r for r in table if r["val_acc_gap"] >= -0.5]
    chosen = min(ok, key=lambda r: r["val_ood_fpr95_amp"])["setting"] if ok else None
    return table, chosen


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.quality.finetune_select",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--settings", type=parse_settings,
                   default=parse_settings("official:1:0.1,per_sample:1:0.1,none:1:0.1,per_sample:2:0.1,per_sample:1:0.03,per_sample:1:0.01"))
    p.add_argument("--cache", type=Path, default=Path("runs/finetune_select"))
    p.add_argument("--json", type=Path, default=Path("benchmarks/results/finetune_select.json"))
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    args.cache.mkdir(parents=True, exist_ok=True)
    import amp_tf  # noqa: F401
    from amp_tf.data.corruptions import validation_ood_sets
    from amp_tf.run.pipeline import load_id

    t0, rows = time.time(), {}
    for seed in seeds:
        d = load_id("fashion_mnist", val_size=5000, seed=seed)
        vanilla, val_ood = None, validation_ood_sets(d.x_val[:1000], seed=seed)
        for mode, epochs, lr in args.settings:
            key, path = f"{mode}:{epochs}:{lr}", args.cache / f"s{seed}_{mode}_e{epochs}_lr{lr}.json"
            cached = json.loads(path.read_text()) if path.exists() else None
            if cached is None or cached.get("code") != CODE_VERSION:
                vanilla = vanilla or vanilla_twin(d, seed, args.cache)
                import numpy as np

                van = {"val_acc": float(np.mean(vanilla.predict(d.x_val, 500, verbose=0).argmax(1) == d.y_val)),
                       "test_acc": float(np.mean(vanilla.predict(d.x_test, 500, verbose=0).argmax(1) == d.y_test))}
                cached = {"code": CODE_VERSION, "seed": seed, "setting": key, "vanilla": van,
                          **run_setting(d, vanilla, seed, mode, epochs, lr, val_ood)}
                write_json(path, cached)
            rows[f"s{seed}/{key}"] = cached
            print(json.dumps(cached), flush=True)
    table, chosen = summarise(rows, args.settings, seeds)
    print("| setting (T mode:epochs:lr) | val acc - vanilla (points) | test acc - vanilla | val-OOD FPR95 AMP |")
    print("|:--|--:|--:|--:|")
    for r in table:
        print(f"| {r['setting']} | {r['val_acc_gap']:+.2f} ± {r['val_acc_gap_sd']:.2f} | {r['test_acc_gap']:+.2f} "
              f"| {r['val_ood_fpr95_amp']:.1f} |")
    print(f"chosen on validation: {chosen}")
    write_json(args.json, {"command": " ".join(["python -m benchmarks.quality.finetune_select"]
                                               + (argv or sys.argv[1:])),
                           "cpu": cpu_model(), "cores": os.cpu_count(), "seeds": seeds, "rows": rows,
                           "table": table, "chosen": chosen, "wall_time_s": round(time.time() - t0)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
