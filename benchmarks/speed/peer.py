#!/usr/bin/env python
"""amp-tf vs a plain PyTorch reference on the same CPU: training and inference images/s.

Run from the repository root:

    python -m benchmarks.speed.peer --quick            # ~3 min on 2 cores
    python -m benchmarks.speed.peer --json out.json    # more rounds, thread/oneDNN sweep

Same network on both sides: `resnet_small` with width 16 (3x3 stem conv 16 +
BN + ReLU; three post-activation basic blocks 16/32/64, strides 1/2/2, 1x1
projection shortcut where the shape changes; global average pooling; Dense 10),
on 28x28x1 images anchored to 2 channels, batch 128, SGD(lr 0.1, momentum 0.9,
weight decay 5e-4), sparse cross-entropy + accuracy, anchored step with the
consistency transform T ("all": resized crop, flip, brightness/contrast, blur)
on every 5th step, and random crop (pad 4) + horizontal flip of the training data.

Contenders, measured one epoch each, in alternation (A, B, C, A, B, C, ...),
warm-up epoch excluded, medians reported:

  (a) `AnchoredModel.fit(x, y, batch_size=128, verbose=0)` on in-memory arrays, as
      a user would (NB: Keras' fit on arrays has no crop/flip: see torch_noaug);
  (b) amp-tf's own pipeline: `amp_tf.run.training.epoch_dataset` (crop+flip) +
      `compile_model` + `fit`, i.e. what `amp_tf.run.training.train` runs per epoch;
  (c) the PyTorch reference loop (torch.set_num_threads = cores), same anchoring,
      a comparable T in plain torch ops, vectorised crop+flip on the batch.

Inference (images/s, batch 128): vanilla backbone (1 channel) and AMP with K = 5
anchors (`--k`, default `amp_tf.recipe.NUM_ANCHORS`): `AnchoredPredictor.predict` vs a
torch loop over anchors, and torch tiled.

`--profile` (on by default) splits one amp-tf anchored step (compute-only, on a
fixed batch) into input pipeline, anchoring, T, backbone forward/backward,
optimizer and Keras overhead, and measures prototype fixes end to end as ratios:
steps_per_execution, jit_compile, a gather-based crop+flip instead of
crop_and_resize, prefetch. `--env-sweep` (default off with --quick) runs child
processes with other TF thread / oneDNN settings, alternating.

PyTorch is optional (never a requirement of amp-tf): without it the TF side
runs alone and prints "PyTorch not installed: peer ratio skipped".

Caveats: on a machine shared with other busy processes, PyTorch with
set_num_threads(cores) collapses (OpenMP barriers wait for descheduled threads);
`c_torch_1thread` and the cpu-s columns are the robust references then. Do not
edit the source files while it runs: AutoGraph re-reads the source of each
function it converts, so an edit mid-run converts the wrong code (copy the
checkout first when others are editing it).

Modules (`benchmarks.speed.`): this one (flags, env sweep, main), `peer_models`
(TF contenders, training and inference sections), `peer_torch` (the PyTorch
reference), `peer_profile` (the step profile), `peer_report` (the printed
report), and the shared `benchmarks.harness`.
"""

from __future__ import annotations

import time

_T0 = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

if __name__ == "__main__" and not __package__:  # python benchmarks/speed/peer.py
    sys.exit("run it as a module from the repository root: python -m benchmarks.speed.peer")

from amp_tf.recipe import NUM_ANCHORS  # noqa: E402  (light: no TensorFlow)
from benchmarks.harness import ROOT  # noqa: E402
from benchmarks.harness.machine import Contention, cpu_model, thread_settings, versions  # noqa: E402
from benchmarks.harness.results import check_k, write_json  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.speed.peer",
        description="amp-tf vs a PyTorch reference on the same CPU (training and inference "
        "images/s, alternating contenders, medians), plus a profile of one amp-tf step.")
    p.add_argument("--quick", action="store_true", help="2 timed rounds, 1280 images/epoch, fewer profile variants; ~3-4 min on 2 idle cores")
    p.add_argument("--json", metavar="OUT", default=None, help="write all results to OUT")
    p.add_argument("--rounds", type=int, default=None, help="timed rounds per contender (default 4; 2 with --quick)")
    p.add_argument("--n-train", type=int, default=None,
                   help="training images per epoch (multiple of the batch; default 6400; 1280 with --quick)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--width", type=int, default=16, help="resnet_small width (default 16)")
    p.add_argument("--k", type=int, default=NUM_ANCHORS,
                   help=f"anchors for AMP inference (default {NUM_ANCHORS}, amp_tf.recipe.NUM_ANCHORS)")
    p.add_argument("--no-profile", dest="profile", action="store_false",
                   help="skip the step profile and the prototype fixes")
    p.add_argument("--env-sweep", dest="env_sweep", action="store_true", default=None,
                   help="child processes with other TF thread / oneDNN settings (default: on unless --quick)")
    p.add_argument("--no-env-sweep", dest="env_sweep", action="store_false")
    p.add_argument("--no-torch", action="store_true", help="TF side only, even when torch is installed")
    p.add_argument("--sections", default="training,inference,profile",
                   help="comma list of sections to run: training, inference, profile (default: all three)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # child of --env-sweep
    a = p.parse_args(argv)
    a.rounds = a.rounds or (2 if a.quick else 4)
    a.n_train = a.n_train or (1280 if a.quick else 6400)
    a.n_train -= a.n_train % a.batch_size
    if a.env_sweep is None:
        a.env_sweep = not a.quick
    a.k = check_k(p, a.k, "--k")
    if a.rounds < 1 or a.n_train < a.batch_size:
        p.error("--rounds >= 1, --n-train >= --batch-size")
    return a



# ------------------------------------------------------------------ env sweep (child processes)
ENV_VARIANTS = {
    "default": {},
    "intra2_inter1": {"intra": 2, "inter": 1},
    "intra1_inter1": {"intra": 1, "inter": 1},
    "onednn_off": {"env": {"TF_ENABLE_ONEDNN_OPTS": "0"}},
}


def worker(args):
    """One child of --env-sweep: anchored fit on arrays (spe 1) and a compute-only step."""
    from benchmarks.speed.peer_models import anchored_model, fresh_compile, make_data, tf_backbone

    x, y = make_data(args.n_train, args.seed)
    m = fresh_compile(anchored_model(tf_backbone(args, True, args.seed)))
    m.fit(x, y, batch_size=args.batch_size, epochs=1, verbose=0)
    ts = []
    for _ in range(2):
        t = time.perf_counter()
        m.fit(x, y, batch_size=args.batch_size, epochs=1, verbose=0)
        ts.append(time.perf_counter() - t)
    print("WORKER_RESULT " + json.dumps({"images_per_s": args.n_train / statistics.median(ts),
                                         "threads": thread_settings()}))


def env_sweep(args, log):
    samples = {n: [] for n in ENV_VARIANTS}
    rounds = max(2, args.rounds // 2)
    for r in range(rounds):
        names = list(ENV_VARIANTS)
        names = names[r % len(names):] + names[: r % len(names)]
        for n in names:
            cmd = [sys.executable, "-m", "benchmarks.speed.peer", "--worker", json.dumps(ENV_VARIANTS[n]),
                   "--n-train", str(args.n_train), "--batch-size", str(args.batch_size),
                   "--width", str(args.width), "--seed", str(args.seed)]
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT)
            line = [ln for ln in p.stdout.splitlines() if ln.startswith("WORKER_RESULT ")]
            if not line:
                log(f"    {n}: failed: {p.stderr[-400:]}")
                continue
            samples[n].append(json.loads(line[-1].split(" ", 1)[1])["images_per_s"])
            log(f"    round {r + 1} {n}: {samples[n][-1]:.0f} img/s")
    return {n: {"images_per_s_median": statistics.median(s), "samples": s,
                "ratio_vs_default": statistics.median(s) / statistics.median(samples["default"])}
            for n, s in samples.items() if s and samples["default"]}



def start_tf(args):
    """Imports TensorFlow; an --env-sweep child first sets its environment and thread counts."""
    w = json.loads(args.worker) if args.worker else {}
    for key, val in w.get("env", {}).items():  # before TensorFlow starts
        os.environ[key] = str(val)
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    if w.get("intra") is not None:
        tf.config.threading.set_intra_op_parallelism_threads(w["intra"])
    if w.get("inter") is not None:
        tf.config.threading.set_inter_op_parallelism_threads(w["inter"])
    return tf


def main(argv=None):
    args = parse_args(argv)
    tf = start_tf(args)
    if args.worker:
        return worker(args)
    import keras

    from benchmarks.speed import peer_models, peer_profile, peer_report

    log = lambda m: print(m, flush=True)  # noqa: E731
    ref = None if args.no_torch else peer_models.load_torch()
    torch = ref.torch if ref is not None else None
    if torch is not None:
        torch.set_num_threads(os.cpu_count())
    load = Contention()
    res = {"cpu_model": cpu_model(), "threads": thread_settings(torch),
           "versions": {**versions(), "tensorflow": tf.__version__, "keras": keras.__version__,
                        "torch": torch.__version__ if torch is not None else None,
                        "python": platform.python_version()},
           "settings": {k: v for k, v in vars(args).items() if k != "worker"}}
    log(f"peer speed: {res['cpu_model']}, {os.cpu_count()} cores, TF {tf.__version__}, "
        f"torch {res['versions']['torch']}")
    if torch is None:
        log("PyTorch not installed: peer ratio skipped")
    sections = set(args.sections.split(","))
    if "training" in sections:
        log("[1] training, one epoch per contender, alternating")
        train, info = peer_models.bench_training(args, log, ref)
        res["training"], res["model_check"] = train, info
    if "inference" in sections:
        log("[2] inference, batch %d, K=%d" % (args.batch_size, args.k))
        res["inference"] = peer_models.bench_inference(args, log, ref)
    if args.profile and "profile" in sections:
        log("[3] profile of one amp-tf step and prototype fixes")
        res["profile"] = peer_profile.bench_profile(args, log, ref)
    if args.env_sweep:
        log("[4] TF thread / oneDNN settings (child processes, alternating)")
        res["env_sweep"] = env_sweep(args, log)
    if load.busy_share() is not None:
        res["machine_busy_share"] = load.busy_share()
        res["machine_steal_share"] = load.steal_share()
    res["wall_s"] = time.perf_counter() - _T0
    peer_report.report(res, args)
    if args.json:
        write_json(args.json, res)
        print(f"wrote {args.json}")
    return res


if __name__ == "__main__":
    main()
