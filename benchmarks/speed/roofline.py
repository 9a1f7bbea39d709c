"""How close the backbone's inference runs to what this CPU can do: a float32 matmul against the network.

    python -m benchmarks.speed.roofline        # ~1 min on 2 cores; writes benchmarks/results/roofline.json

Times, in alternating rounds on one machine, a 2048 x 2048 float32 matmul (about the best GFLOP/s
TensorFlow reaches here) and the anchored `resnet_small` backbone (width 16, 28x28, the rows `[c, x - c]`
AMP runs, batch 128) compiled for inference, and prints rows/s, the backbone's GFLOP/s (from its
convolution and dense FLOPs) and its share of the matmul's. Where that share is already high, AMP
inference (K backbone rows per image) cannot get much faster on the same kernels. Prints the CPU and its
vector extensions.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

if __name__ == "__main__" and not __package__:  # python benchmarks/speed/roofline.py
    sys.exit("run it as a module from the repository root: python -m benchmarks.speed.roofline")

from benchmarks.harness import ROOT  # noqa: E402


def parse(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.speed.roofline", description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=7, help="alternating rounds (medians are reported)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "roofline.json"))
    a = p.parse_args(argv)
    if a.rounds < 1:
        p.error("--rounds: expected an int >= 1")
    return a


def backbone_flops(model):
    """Multiply-adds x 2 of the convolutions and dense layers of `model`, per row."""
    import keras
    import numpy as np

    total = 0
    for layer in model.layers:
        kernel = getattr(layer, "kernel", None)
        if kernel is None:
            continue
        if len(kernel.shape) == 4:
            out = layer.output.shape
            total += 2 * int(np.prod(kernel.shape)) * int(out[1]) * int(out[2])
        elif isinstance(layer, keras.layers.Dense):
            total += 2 * int(np.prod(kernel.shape))
    return total


def _seconds(fn, calls):
    t = time.perf_counter()
    for _ in range(calls):
        r = fn()
    r.numpy()
    return (time.perf_counter() - t) / calls


def main(argv=None):
    a = parse(argv)
    import tensorflow as tf

    from amp_tf.models import build_backbone
    from benchmarks.harness.machine import cpu_model, machine_info

    n, batch = 2048, 128
    x, y = tf.random.normal((n, n), seed=0), tf.random.normal((n, n), seed=1)
    matmul = tf.function(lambda: tf.matmul(x, y))
    net = build_backbone("resnet_small", (28, 28, 1), 10, width=16)  # anchored: 2 input channels
    rows = tf.random.normal((batch,) + tuple(net.input_shape[1:]), seed=2)
    forward = tf.function(lambda: net(rows, training=False))
    fns = {"matmul": (matmul, 5, 2 * n ** 3), "backbone": (forward, 20, backbone_flops(net) * batch)}
    for fn, _, _ in fns.values():
        fn(), fn()  # trace and warm
    got = {k: [] for k in fns}
    for r in range(a.rounds):
        for k in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
            fn, calls, _ = fns[k]
            got[k].append(_seconds(fn, calls))
    med = {k: statistics.median(v) for k, v in got.items()}
    gflops = {k: fns[k][2] / med[k] / 1e9 for k in fns}
    res = {"command": "python -m benchmarks.speed.roofline " + " ".join(sys.argv[1:] if argv is None else argv),
           "machine": machine_info(), "rounds": a.rounds, "batch": batch,
           "backbone_mflop_per_row": backbone_flops(net) / 1e6, "backbone_rows_per_s": batch / med["backbone"],
           "gflops": gflops, "backbone_share_of_matmul": gflops["backbone"] / gflops["matmul"]}
    Path(a.out).write_text(json.dumps(res, indent=2) + "\n")
    m = res["machine"]
    print(f"{cpu_model()} ({m.get('vector_extensions', '?')}), {m.get('cpu_count')} cores; {a.rounds} alternating "
          f"rounds, medians")
    print(f"float32 matmul {n}x{n}: {gflops['matmul']:.0f} GFLOP/s")
    print(f"anchored resnet_small (width 16, {res['backbone_mflop_per_row']:.1f} MFLOP per row), batch {batch}: "
          f"{res['backbone_rows_per_s']:,.0f} rows/s, {gflops['backbone']:.0f} GFLOP/s = "
          f"{100 * res['backbone_share_of_matmul']:.0f} % of the matmul's")
    return 0


if __name__ == "__main__":
    sys.exit(main())
