"""What the shipped detector costs at serving time: its exports against the same model exporting AMP alone.

    python -m benchmarks.speed.shipped_cost --run runs/fmnist-X      # a finished main-job run (detector.json)

Exports the run's anchored model twice, side by side in one process: with the run's shipped detector
(`ood_score` from the features and logits of one pass over the K anchors) and with AMP alone
(`ood_score = amp_score`), as a SavedModel and as a `.tflite`, then times them in alternating rounds:
per-image latency (one image per call; the `.tflite` on one thread) and batch throughput (SavedModel,
256 images per call). Prints the ratio shipped / AMP alone per measure (target: within 10 %, i.e.
latency ratio <= 1.10 and throughput ratio >= 0.90), the file sizes, and the CPU with its vector
extensions. Writes benchmarks/results/shipped_cost.json (or --out).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __name__ == "__main__" and not __package__:  # python benchmarks/speed/shipped_cost.py
    sys.exit("run it as a module from the repository root: python -m benchmarks.speed.shipped_cost")

from benchmarks.harness import ROOT  # noqa: E402


def parse(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.speed.shipped_cost", description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="a finished trainers.fmnist run folder (it holds detector.json)")
    p.add_argument("--rounds", type=int, default=6, help="alternating rounds (medians are reported)")
    p.add_argument("--calls", type=int, default=200, help="one-image calls per round and format")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "shipped_cost.json"))
    a = p.parse_args(argv)
    if not (Path(a.run) / "detector.json").is_file():
        p.error(f"--run {a.run}: no detector.json; pass the folder of a finished main-job run")
    if a.rounds < 1 or a.calls < 1:
        p.error("--rounds and --calls: expected ints >= 1")
    return a


def _latency(fn, x, calls):
    fn(x[:1])  # warm
    t = time.perf_counter()
    for i in range(calls):
        fn(x[i % len(x):i % len(x) + 1])
    return (time.perf_counter() - t) / calls * 1e3


def _throughput(fn, x):
    fn(x)
    t = time.perf_counter()
    fn(x)
    return len(x) / (time.perf_counter() - t)


def main(argv=None):
    a = parse(argv)
    import numpy as np
    import tensorflow as tf

    from amp_tf.data import load, to_numpy
    from amp_tf.predictor import AnchoredPredictor
    from amp_tf.export import TFLiteModel, export_for_serving, export_tflite
    from amp_tf.files import load_run
    from benchmarks.harness.machine import cpu_model, machine_info

    run = load_run(a.run)
    x, _ = to_numpy(load("fashion_mnist", "test"), limit=256)
    tmp = Path(tempfile.mkdtemp())
    heads = {"shipped": export_for_serving(run.detector, tmp / "shipped" / "serving"),
             "amp": export_for_serving(AnchoredPredictor.from_model(run.anchored, run.anchors), tmp / "amp" / "serving",
                                       threshold=run.threshold)}
    for name, head in heads.items():
        export_tflite(head, tmp / name / "model.tflite")
    saved = {n: tf.saved_model.load(str(tmp / n / "serving")) for n in heads}
    fns = {n: (lambda m: lambda b: m.signatures["serving_default"](images=tf.constant(b)))(m) for n, m in saved.items()}
    lites = {n: TFLiteModel(tmp / n / "model.tflite", num_threads=1) for n in heads}
    got = {n: {"saved_ms": [], "tflite_ms": [], "saved_batch_img_s": []} for n in heads}
    for r in range(a.rounds):
        for n in (("shipped", "amp") if r % 2 == 0 else ("amp", "shipped")):
            got[n]["saved_ms"].append(_latency(fns[n], x, a.calls))
            got[n]["tflite_ms"].append(_latency(lites[n], x, a.calls))
            got[n]["saved_batch_img_s"].append(_throughput(fns[n], x))
    med = {n: {k: statistics.median(v) for k, v in m.items()} for n, m in got.items()}
    sizes = {n: {"tflite_bytes": (tmp / n / "model.tflite").stat().st_size,
                 "saved_model_bytes": sum(f.stat().st_size for f in (tmp / n / "serving").rglob("*") if f.is_file())}
             for n in heads}
    ratios = {k: med["shipped"][k] / med["amp"][k] for k in med["amp"]}
    res = {"command": "python -m benchmarks.speed.shipped_cost " + " ".join(sys.argv[1:] if argv is None else argv),
           "detector": run.detector.label, "machine": machine_info(), "medians": med, "ratios": ratios,
           "sizes": sizes, "rounds": a.rounds, "calls": a.calls}
    Path(a.out).write_text(json.dumps(res, indent=2) + "\n")
    m = res["machine"]
    print(f"shipped detector {run.detector.label} vs AMP alone; {cpu_model()} ({m.get('vector_extensions', '?')}), "
          f"{m.get('cpu_count')} cores; {a.rounds} alternating rounds, medians")
    print("| measure | shipped | AMP alone | ratio | target |\n|---|---:|---:|---:|---|")
    for k, unit, ok in (("saved_ms", "ms/image", lambda r: r <= 1.10), ("tflite_ms", "ms/image", lambda r: r <= 1.10),
                        ("saved_batch_img_s", "images/s", lambda r: r >= 0.90)):
        print(f"| {k} | {med['shipped'][k]:.3f} {unit} | {med['amp'][k]:.3f} {unit} | {ratios[k]:.2f}x | "
              f"{'met' if ok(ratios[k]) else 'MISSED'} (within 10 %) |")
    print(f"sizes: .tflite {sizes['shipped']['tflite_bytes'] / 1024:.0f} KiB vs {sizes['amp']['tflite_bytes'] / 1024:.0f} "
          f"KiB; SavedModel {sizes['shipped']['saved_model_bytes'] / 1024:.0f} KiB vs "
          f"{sizes['amp']['saved_model_bytes'] / 1024:.0f} KiB")
    return 0 if np.isfinite(list(ratios.values())).all() else 1


if __name__ == "__main__":
    sys.exit(main())
