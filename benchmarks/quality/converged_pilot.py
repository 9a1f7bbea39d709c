"""Pilot of the converged benchmark (issue 20): choose the vanilla recipe on VALIDATION data only.

Two commands, each adding its numbers to `benchmarks/results/converged_pilot.json`:

    python -m benchmarks.quality.converged_pilot time --widths 16,24,32 --jit off,on
    python -m benchmarks.quality.converged_pilot train --width 24 --epochs 15

* `time`: one training step of the vanilla `resnet_small` (batch 128, the recipe's
  optimizer, crop + flip batches from the training data) per width x `jit_compile`,
  interleaved rounds (`benchmarks.harness.timing.rotate`), median wall and process-CPU
  seconds per step, and one epoch's estimate (steps per epoch x median step).
* `train`: one training of the vanilla model (`amp_tf.run.training.train`) on the 55,000
  training images left after holding out 5,000 validation images
  (`amp_tf.run.pipeline.load_id("fashion_mnist", val_size=5000, seed=0)`), with the
  validation accuracy after every epoch (Keras' `val_accuracy`). The ID test set is
  never loaded for scoring here.

A cosine schedule ends at its last epoch, so only the LAST epoch's accuracy is the
result of an E-epoch recipe; the earlier epochs' values are what the same run had
at that point (lr not yet annealed), a lower bound for a shorter recipe of that
length, recorded to show the curve, never quoted as a shorter recipe's result.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

if __name__ == "__main__" and not __package__:
    sys.exit("run it as a module from the repository root: python -m benchmarks.quality.converged_pilot")

from benchmarks.harness import ROOT  # noqa: E402
from benchmarks.harness.machine import cpu_model, load_average, versions  # noqa: E402
from benchmarks.harness.results import write_json  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "converged_pilot.json"


def parser():
    p = argparse.ArgumentParser(prog="python -m benchmarks.quality.converged_pilot",
                                description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("time", help="median step time per width x jit_compile")
    t.add_argument("--widths", default="16,24,32")
    t.add_argument("--jit", default="off,on", help="jit_compile values to time: off, on")
    t.add_argument("--steps", type=int, default=8, help="steps per sample")
    t.add_argument("--rounds", type=int, default=3, help="interleaved samples per contender")
    r = sub.add_parser("train", help="one training with the validation accuracy per epoch")
    for flag, default in (("--width", 24), ("--epochs", 15), ("--batch-size", 128)):
        r.add_argument(flag, type=int, default=default)
    r.add_argument("--lr", type=float, default=0.1)
    r.add_argument("--warmup-epochs", type=float, default=1.0)
    r.add_argument("--weight-decay", type=float, default=5e-4)
    r.add_argument("--dropout", type=float, default=0.2, help="dropout before the classifier (MC dropout's)")
    r.add_argument("--jit-compile", action="store_true")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--train-limit", type=int, default=None, help="(smoke tests only)")
    f = sub.add_parser("finetune", help="anchored fine-tuning of a trained vanilla model: validation accuracy vs the vanilla")
    f.add_argument("--vanilla", type=Path, required=True, help="the vanilla .keras (e.g. a converged seed's)")
    f.add_argument("--lr", type=float, default=0.1)
    f.add_argument("--epochs", type=int, default=2)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--mode", default="per_sample", choices=["per_sample", "official", "none"],
                   help="T on the anchor channel (none: no T)")
    p.add_argument("--json", type=Path, default=RESULTS)
    return p


def vanilla_config(width, epochs, batch_size=128, lr=0.1, warmup_epochs=1.0, weight_decay=5e-4, seed=0,
                   jit_compile=False, mean=None, std=None, dropout=0.2):
    """The converged vanilla recipe's `TrainConfig` (coupled weight decay, warm-up + cosine, crop + flip)."""
    from amp_tf.run.training import TrainConfig

    return TrainConfig(arch="resnet_small", anchored=False, backbone_kwargs={"width": int(width), "dropout": float(dropout)}, epochs=int(epochs),
                       batch_size=batch_size, lr=lr, weight_decay=weight_decay, weight_decay_mode="coupled",
                       warmup_epochs=warmup_epochs, augment="crop_flip", seed=seed, jit_compile=jit_compile,
                       mean=mean, std=std)


def cmd_time(args, d):
    import numpy as np
    import tensorflow as tf

    from amp_tf.run.training import build_model, compile_model, epoch_dataset
    from benchmarks.harness.timing import rotate

    steps_per_epoch = len(d.x_train) // 128
    ds, _ = epoch_dataset(d.x_train[: 128 * 16], d.y_train[: 128 * 16], 128, seed=0)
    batches = [(b[0].numpy(), b[1].numpy()) for b in ds.take(16)]
    fns, models = {}, {}
    for w in [int(x) for x in args.widths.split(",")]:
        for jit in [j.strip() == "on" for j in args.jit.split(",")]:
            cfg = vanilla_config(w, 1, jit_compile=jit, mean=tuple(d.mean.tolist()), std=tuple(d.std.tolist()))
            m = compile_model(build_model(cfg, d.image_shape, d.num_classes), cfg, steps_per_epoch)
            m.train_on_batch(*batches[0])  # trace / compile
            models[(w, jit)] = m

            def run(m=m):
                for i in range(args.steps):
                    out = m.train_on_batch(*batches[i % len(batches)])
                return out

            fns[f"width{w}_jit{'on' if jit else 'off'}"] = run
    samples, cpu = rotate(fns, args.rounds, log=print)
    out = {}
    for name in fns:
        step = float(np.median(samples[name])) / args.steps
        out[name] = {"step_median_s": step, "step_cpu_median_s": float(np.median(cpu[name])) / args.steps,
                     "epoch_estimate_s": step * steps_per_epoch, "steps_per_epoch": steps_per_epoch,
                     "params": int(models[(int(name[5:name.index('_')]), name.endswith('on'))].count_params())}
        print(name, json.dumps(out[name]))
    del tf
    return {"steps_per_sample": args.steps, "rounds": args.rounds, "results": out}


def cmd_train(args, d):
    from amp_tf.run.training import train

    cfg = vanilla_config(args.width, args.epochs, args.batch_size, args.lr, args.warmup_epochs, args.weight_decay,
                         args.seed, args.jit_compile, dropout=args.dropout)
    t, c = time.time(), time.process_time()
    import keras

    def epoch_line(epoch, logs):  # one line per epoch, so a killed pilot still has its curve in the log
        print("EPOCH " + json.dumps({"epoch": epoch + 1, "wall_s": round(time.time() - t, 1),
                                     "cpu_s": round(time.process_time() - c, 1),
                                     "val_accuracy": float(logs["val_accuracy"])}), flush=True)

    model, hist = train(cfg, d.x_train, d.y_train, d.num_classes, val=(d.x_val, d.y_val), verbose=2, backup=False,
                        callbacks=[keras.callbacks.LambdaCallback(on_epoch_end=epoch_line)])
    wall, cpu = time.time() - t, time.process_time() - c
    val = [float(v) for v in hist.history["val_accuracy"]]
    return {"config": cfg.to_dict(), "train_images": len(d.x_train), "val_images": len(d.x_val),
            "params": int(model.count_params()), "val_accuracy_per_epoch": val, "val_accuracy_final": val[-1],
            "train_accuracy_final": float(hist.history["accuracy"][-1]), "wall_s": round(wall, 1),
            "process_cpu_s": round(cpu, 1), "epoch_wall_s": round(wall / args.epochs, 1)}


def cmd_finetune(args, d):
    """Fine-tunes `--vanilla` the main job's way (T `--mode` on every 5th step, coupled weight decay,
    warm-up 0.1 x epochs) at `--lr` for `--epochs` (`benchmarks.quality.finetune_select.run_setting`): ID
    VALIDATION accuracy of the anchored model (AMP's prediction, K = 5, `amp_tf.recipe.NUM_ANCHORS`) against the
    vanilla model's, and the validation-OOD FPR95 of AMP (`validation_ood_sets` of 1,000 validation images)
    against the vanilla model's MSP and energy on the same sets. Validation only: the test set is not touched."""
    import keras
    import numpy as np

    from amp_tf.detection import detectors, metrics
    from amp_tf.data.corruptions import validation_ood_sets
    from benchmarks.quality.finetune_select import run_setting

    van = keras.models.load_model(args.vanilla, compile=False)
    val_ood = validation_ood_sets(d.x_val[:1000], seed=args.seed)
    t, c = time.time(), time.process_time()
    res = run_setting(d, van, args.seed, args.mode, args.epochs, args.lr, val_ood, test=False)
    wall, cpu = time.time() - t, time.process_time() - c
    base = detectors.fit_all(["msp", "energy"], van, id_train=(d.x_train[:10000], d.y_train[:10000]))
    ref, ood = base.score(d.x_val[:1000]), {k: base.score(v) for k, v in val_ood.items()}
    van_fpr = {s: float(np.mean([metrics.ood_metrics(ref[s], o[s])["fpr95"] for o in ood.values()]))
               for s in ("msp", "energy")}
    acc_v = float(np.mean(van.predict(d.x_val, 500, verbose=0).argmax(1) == d.y_val))
    return {"vanilla": Path(args.vanilla).name, "mode": args.mode, "lr": args.lr, "epochs": args.epochs,
            "val_acc_anchored": res["val_acc"], "val_acc_vanilla": acc_v,
            "gap_points": round(100 * (res["val_acc"] - acc_v), 2), "val_ood_fpr95_anchored": res["val_ood_fpr95"],
            "val_ood_fpr95_vanilla": van_fpr, "wall_s": round(wall, 1), "process_cpu_s": round(cpu, 1)}


def main(argv=None):
    args = parser().parse_args(argv)
    from amp_tf.run.pipeline import load_id

    d = load_id("fashion_mnist", val_size=5000, seed=0, train_limit=getattr(args, "train_limit", None))
    load0 = load_average()
    t0 = time.time()
    res = {"time": cmd_time, "train": cmd_train, "finetune": cmd_finetune}[args.cmd](args, d)
    res.update({"command": "python -m benchmarks.quality.converged_pilot "
                + " ".join(sys.argv[1:] if argv is None else argv),
                "date": time.strftime("%Y-%m-%d %H:%M"), "cpu": cpu_model(), "load_average_start_end": [load0,
                load_average()], "versions": versions(), "wall_time_s": round(time.time() - t0, 1)})
    stored = json.loads(args.json.read_text()) if args.json.exists() else {"time": [], "train": []}
    stored.setdefault(args.cmd, []).append(res)
    write_json(args.json, stored)
    print(json.dumps({k: v for k, v in res.items() if k != "versions"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
