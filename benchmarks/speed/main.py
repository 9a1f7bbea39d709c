#!/usr/bin/env python
"""Speed benchmark of anchored training and AMP inference, side by side in one process.

Run from the repository root:

    python -m benchmarks.speed --quick --json out.json

What it measures (every ratio from interleaved repeats, medians reported):

* `train_overhead`: AnchoredModel step time / vanilla step time, same backbone
  architecture, batch, optimizer (SGD momentum) and loss. Timed over cycles of
  5 consecutive compiled steps, so the consistency transform T (every 5th
  step) is included at its real frequency. Target <= 1.05.
* `amp_k_efficiency`: (AMP images/s x K) / vanilla images/s at K = 5 (`--k`, default
  `amp_tf.recipe.NUM_ANCHORS`) with the
  tiled `AnchoredPredictor` (one K*B batch). 1.0 = the K anchored forwards cost
  exactly K vanilla forwards. Target >= 0.95.
* `folded_speedup`: tiled time / `FoldedAnchoredPredictor` time at K=5.
* `tiled_vs_loop`: time of a Python loop over anchors (the official code's
  shape: per anchor concat + backbone, then stack) / tiled time, at K=5.
* K scaling (K=1: one anchored forward, no tau) and batch-size scaling, in
  images/s; analytic activation sizes and the process' peak RSS.

Sections (`--sections`, default all): `core` is the above; `peer` runs
`benchmarks.speed.peer`'s contenders here and reports `peer_training`
(amp-tf's training pipeline / the PyTorch reference loop, images/s, target >= 1.0)
and `peer_amp_inference` (`AnchoredPredictor.predict` / PyTorch's loop over
anchors, target >= 1.5), skipped with a note when PyTorch is not installed;
`internals` measures the library's speed choices as ratios (the fused `BatchNorm`
vs Keras' BatchNormalization on one training step; fit epochs with amp-tf's
tf.data settings vs tf.data autotuning).

`--against REV` is the regression mode: `benchmarks.speed.against` times this
revision and REV side by side (temporary git worktrees, one child process per
revision, alternating rounds) and prints the ratio per measure (training,
vanilla and AMP inference, the exported SavedModel and .tflite per image).

`python -m benchmarks.speed` runs this module (`benchmarks/speed/__main__.py`).
Modules: this one (flags, sections, main), `benchmarks.speed.core` (training,
inference, scaling, cost model), `benchmarks.speed.extra` (the peer and internals
sections), `benchmarks.speed.report` (printed tables, notes), and the shared
`benchmarks.harness`.
"""

from __future__ import annotations

import time

_T_START = time.perf_counter()

import argparse  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

if __name__ == "__main__" and not __package__:  # python benchmarks/speed/main.py
    sys.exit("run it as a module from the repository root: python -m benchmarks.speed")

from amp_tf.recipe import NUM_ANCHORS  # noqa: E402  (light: no TensorFlow)
from benchmarks.harness.machine import Contention, machine_info, versions, vm_hwm_bytes  # noqa: E402
from benchmarks.harness.results import check_k, ints, write_json  # noqa: E402

DEFAULT_SHAPES = {"resnet_small": (28, 28, 1), "resnet50_imagenet": (224, 224, 3)}


# --------------------------------------------------------------------------- CLI
def parser():
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.speed",
        description="Speed of anchored training and AMP inference vs a vanilla backbone "
        "(one process, interleaved repeats, medians).",
    )
    p.add_argument("--quick", action="store_true",
                   help="fewer repeats, K in {1,2,5,10}, batches {32,128}; finishes in "
                        "under 3 minutes on 2 CPU cores")
    p.add_argument("--json", metavar="PATH", default=None,
                   help="write all results (ratios, raw medians, settings, machine) to PATH")
    p.add_argument("--arch", default="resnet_small",
                   help="backbone name from amp_tf.models.backbone_names() (default: resnet_small)")
    p.add_argument("--image-shape", default=None, metavar="H,W,C",
                   help="image shape (default: 28,28,1 for resnet_small, 32,32,3 otherwise)")
    p.add_argument("--num-classes", type=int, default=10, help="number of classes (default: 10)")
    p.add_argument("--width", type=int, default=None,
                   help="resnet_small width (default: the builder's, 32)")
    p.add_argument("--batch-size", type=int, default=128,
                   help="batch size of the headline measurements (default: 128)")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed repeats per measurement (training: cycles of 5 steps; the "
                        "headline inference at --k gets twice as many); medians are reported "
                        "(default: 9, or 4 with --quick)")
    p.add_argument("--k-list", default=None, metavar="K1,K2,...",
                   help="anchor counts for the K-scaling table (default: 1,2,5,10,20; "
                        "1,2,5,10 with --quick)")
    p.add_argument("--batch-list", default=None, metavar="B1,B2,...",
                   help="batch sizes for the batch-scaling table at --k anchors (default: 32,128,512; "
                        "32,128 with --quick)")
    p.add_argument("--k", type=int, default=NUM_ANCHORS,
                   help=f"K of the headline inference ratios (default: {NUM_ANCHORS}, amp_tf.recipe.NUM_ANCHORS)")
    p.add_argument("--min-sample-s", type=float, default=None,
                   help="inference timings repeat a call until one sample lasts at least this "
                        "long (default: 0.3 s, 0.1 s with --quick)")
    p.add_argument("--seed", type=int, default=0, help="seed of weights and random data")
    p.add_argument("--jit-compile", action="store_true",
                   help="compile both training steps with XLA (default: Keras' 'auto')")
    p.add_argument("--mixed-precision", action="store_true",
                   help="bfloat16 compute (mixed_bfloat16 policy) for both models")
    p.add_argument("--sections", default="core,peer,internals",
                   help="comma list: core (training overhead, inference, K and batch scaling), "
                        "peer (amp-tf vs PyTorch on this CPU, training and AMP inference; PyTorch "
                        "optional), internals (fused BatchNorm vs Keras', the tf.data settings); "
                        "default: all three")
    p.add_argument("--peer-rounds", type=int, default=None,
                   help="alternating rounds of the peer comparison (default 4; 3 with --quick)")
    p.add_argument("--skip-scaling", action="store_true",
                   help="only the headline ratios (no K / batch scaling tables)")
    p.add_argument("--against", metavar="REV", default=None,
                   help="regression mode: time this revision and REV side by side (temporary git "
                        "worktrees, alternating rounds) and print the ratio per measure; the run is "
                        "benchmarks.speed.against's (its flags: python -m benchmarks.speed.against --help)")
    return p


def parse_args(argv=None):
    """The flags, with the --quick-dependent defaults filled in and every value checked."""
    p = parser()
    args = p.parse_args(argv)
    args.repeats = args.repeats or (4 if args.quick else 9)
    args.sections = set(v for v in args.sections.replace(" ", "").split(",") if v)
    if not args.sections or args.sections - {"core", "peer", "internals"}:
        p.error("--sections: a comma list of core, peer, internals")
    args.peer_rounds = args.peer_rounds or (3 if args.quick else 4)
    args.k_list = ints(args.k_list) if args.k_list else ([1, 2, 5, 10] if args.quick else [1, 2, 5, 10, 20])
    args.batch_list = (ints(args.batch_list) if args.batch_list
                       else ([32, 128] if args.quick else [32, 128, 512]))
    args.min_sample_s = args.min_sample_s or (0.1 if args.quick else 0.3)
    if args.image_shape:
        args.image_shape = tuple(ints(args.image_shape))
    else:
        args.image_shape = DEFAULT_SHAPES.get(args.arch, (32, 32, 3))
    if len(args.image_shape) != 3:
        p.error("--image-shape: expected H,W,C")
    if args.skip_scaling:  # the scaling tables then only repeat the headline point
        args.k_list, args.batch_list = [args.k], [args.batch_size]
    args.k = check_k(p, args.k, "--k")
    if min(args.k_list) < 1 or args.repeats < 1 or args.batch_size < 1:
        p.error("K-list entries >= 1, --repeats and --batch-size >= 1")
    return args


def run(args, log=print):
    """The sections asked for; `targets` holds every ratio with a target that was measured."""
    from benchmarks.speed.core import PEER_TARGETS, run_core, verdict
    from benchmarks.speed.extra import bench_internals, bench_peer

    results = {"targets": {}}
    if "core" in args.sections:
        results.update(run_core(args, log))
    if "peer" in args.sections:
        log("[peer] amp-tf vs PyTorch on this CPU (resnet_small width 16, batch %d)" % args.batch_size)
        sec = Contention()
        results["peer"] = bench_peer(args, log)
        results["peer"]["other_processes_cpu_share"] = sec.share()
        for name, value in results["peer"].get("ratios", {}).items():
            if name in PEER_TARGETS:
                results["targets"][name] = verdict(name, value)
    if "internals" in args.sections:
        log("[internals] fused BatchNorm and tf.data settings, as ratios")
        sec = Contention()
        results["internals"] = bench_internals(args, log)
        results["internals"]["other_processes_cpu_share"] = sec.share()
    results["peak_rss_bytes"] = vm_hwm_bytes()
    return results


def wants_against(argv):
    """`--against REV` anywhere on the command line: the run is `benchmarks.speed.against`'s."""
    return any(a == "--against" or a.startswith("--against=") for a in argv)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if wants_against(argv):  # before TensorFlow: the regression run starts its own processes
        from benchmarks.speed.against import main as against

        return against(argv)
    args = parse_args(argv)
    import keras
    import tensorflow as tf

    from benchmarks.speed.core import CYCLE
    from benchmarks.speed.report import NOTES, print_table

    tf.get_logger().setLevel("ERROR")  # AutoGraph "could not transform" notices are not results
    if args.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    log(f"amp-tf speed benchmark on {os.cpu_count()} CPU(s), TF {tf.__version__}, Keras {keras.__version__}")
    results = run(args, log)
    wall = time.perf_counter() - _T_START
    results["wall_time_s"] = wall
    results["machine"] = machine_info()
    results["versions"] = versions()
    results["settings"] = {
        "arch": args.arch, "image_shape": list(args.image_shape), "num_classes": args.num_classes,
        "width": args.width, "batch_size": args.batch_size, "k": args.k, "repeats": args.repeats,
        "k_list": args.k_list, "batch_list": args.batch_list, "min_sample_s": args.min_sample_s,
        "quick": args.quick, "seed": args.seed, "train_cycle_steps": CYCLE,
        "consistency": "all", "consistency_every": CYCLE, "optimizer": "SGD(0.01, momentum=0.9)",
    }
    results["notes"] = NOTES
    if args.json:  # first: a printing problem must not lose the measurements
        write_json(args.json, results)
    print_table(results, args, wall)
    if args.json:
        print(f"wrote {args.json}")
    return results


if __name__ == "__main__":
    main()
