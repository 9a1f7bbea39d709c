#!/usr/bin/env python
"""Speed benchmark of anchored training and AMP inference, side by side in one process.

Run from the repository root:

    python benchmarks/speed.py --quick --json out.json

What it measures (every ratio from interleaved repeats, medians reported):

* `train_overhead`: AnchoredModel step time / vanilla step time, same backbone
  architecture, batch, optimizer (SGD momentum) and loss. Timed over cycles of
  5 consecutive compiled steps, so the consistency transform T (every 5th
  step) is included at its real frequency. Target <= 1.05.
* `amp_k_efficiency`: (AMP images/s x K) / vanilla images/s at K=5 with the
  tiled `AnchoredPredictor` (one K*B batch). 1.0 = the K anchored forwards cost
  exactly K vanilla forwards. Target >= 0.95.
* `folded_speedup`: tiled time / `FoldedAnchoredPredictor` time at K=5.
* `tiled_vs_loop`: time of a Python loop over anchors (the official code's
  shape: per anchor concat + backbone, then stack) / tiled time, at K=5.
* K scaling (K=1: one anchored forward, no tau) and batch-size scaling, in
  images/s; analytic activation sizes and the process' peak RSS.

Sections (`--sections`, default all): `core` is the above; `peer` runs
`benchmarks/peer_speed.py`'s contenders here and reports `peer_training`
(amp-tf's training pipeline / the PyTorch reference loop, images/s, target >= 1.0)
and `peer_amp_inference` (`AnchoredPredictor.predict` / PyTorch's loop over
anchors, target >= 1.0), skipped with a note when PyTorch is not installed;
`internals` measures the library's speed choices as ratios (the fused `BatchNorm`
vs Keras' BatchNormalization on one training step; fit epochs with amp-tf's
tf.data settings vs tf.data autotuning).
"""

from __future__ import annotations

import os
import time

_T_START = time.perf_counter()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]  # amp_tf is installed (pip install -e .)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.get_logger().setLevel("ERROR")  # AutoGraph "could not transform" notices are not results

from amp_tf.anchoring import AnchoredModel  # noqa: E402
from amp_tf.folded import FoldedAnchoredPredictor, find_stem  # noqa: E402
from amp_tf.models import build_backbone  # noqa: E402
from amp_tf.predictor import AnchoredPredictor, amp_outputs  # noqa: E402

TARGETS = {  # None: reported without a target
    "train_overhead": ("<=", 1.05),
    "amp_k_efficiency": (">=", 0.95),
    "folded_speedup": None,
    "tiled_vs_loop": (">=", 1.0),
}
PEER_TARGETS = {  # amp-tf / PyTorch on the same CPU, images/s (section "peer")
    "peer_training": (">=", 1.0),
    "peer_amp_inference": (">=", 1.0),
}
DEFAULT_SHAPES = {"resnet_small": (28, 28, 1), "resnet50_imagenet": (224, 224, 3)}
CYCLE = 5  # training steps per timed cycle = consistency_every


# --------------------------------------------------------------------------- CLI
def parse_args(argv=None):
    p = argparse.ArgumentParser(
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
                        "headline K=5 inference gets twice as many); medians are reported "
                        "(default: 9, or 4 with --quick)")
    p.add_argument("--k-list", default=None, metavar="K1,K2,...",
                   help="anchor counts for the K-scaling table (default: 1,2,5,10,20; "
                        "1,2,5,10 with --quick)")
    p.add_argument("--batch-list", default=None, metavar="B1,B2,...",
                   help="batch sizes for the batch-scaling table at K=5 (default: 32,128,512; "
                        "32,128 with --quick)")
    p.add_argument("--k", type=int, default=5, help="K of the headline inference ratios (default: 5)")
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
    args = p.parse_args(argv)
    args.repeats = args.repeats or (4 if args.quick else 9)
    args.sections = set(v for v in args.sections.replace(" ", "").split(",") if v)
    if not args.sections or args.sections - {"core", "peer", "internals"}:
        p.error("--sections: a comma list of core, peer, internals")
    args.peer_rounds = args.peer_rounds or (3 if args.quick else 4)
    args.k_list = _ints(args.k_list) if args.k_list else ([1, 2, 5, 10] if args.quick else [1, 2, 5, 10, 20])
    args.batch_list = (_ints(args.batch_list) if args.batch_list
                       else ([32, 128] if args.quick else [32, 128, 512]))
    args.min_sample_s = args.min_sample_s or (0.1 if args.quick else 0.3)
    if args.image_shape:
        args.image_shape = tuple(_ints(args.image_shape))
    else:
        args.image_shape = DEFAULT_SHAPES.get(args.arch, (32, 32, 3))
    if len(args.image_shape) != 3:
        p.error("--image-shape: expected H,W,C")
    if args.skip_scaling:  # the scaling tables then only repeat the headline point
        args.k_list, args.batch_list = [args.k], [args.batch_size]
    if args.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    if args.k < 2 or min(args.k_list) < 1 or args.repeats < 1 or args.batch_size < 1:
        p.error("--k must be >= 2, K-list entries >= 1, --repeats and --batch-size >= 1")
    return args


def _ints(text):
    return [int(v) for v in str(text).replace(" ", "").split(",") if v]


# ----------------------------------------------------------------------- timing
def _sync(out):
    """Forces the result to the host (CPU execution is synchronous; this is a guard)."""
    leaf = tf.nest.flatten(out)[0]
    return leaf.numpy() if hasattr(leaf, "numpy") else leaf


def _calibrate(fn, min_sample_s):
    t = time.perf_counter()
    _sync(fn())
    dt = time.perf_counter() - t
    return max(1, math.ceil(min_sample_s / max(dt, 1e-6)))


def interleaved(fns, repeats, min_sample_s, warmup=2):
    """Seconds per call of each fn: medians of `repeats` samples taken in rotating order.

    Every fn is warmed up (traced) first; a sample repeats a call `number` times
    so that it lasts >= `min_sample_s`. Interleaving makes slow drifts of the
    machine hit all contenders alike, which keeps their ratios honest.
    """
    names = list(fns)
    for name in names:
        for _ in range(warmup):
            _sync(fns[name]())
    number = {name: _calibrate(fns[name], min_sample_s) for name in names}
    samples = {name: [] for name in names}
    cpu = {name: [] for name in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            fn, n = fns[name], number[name]
            c, t = time.process_time(), time.perf_counter()
            for _ in range(n):
                out = fn()
            _sync(out)
            samples[name].append((time.perf_counter() - t) / n)
            cpu[name].append((time.process_time() - c) / n)
    return {name: _summary(samples[name], cpu[name], number[name]) for name in names}


def _summary(samples, cpu=None, number=1):
    out = {
        "median_s": statistics.median(samples),
        "min_s": min(samples),
        "max_s": max(samples),
        "samples": len(samples),
        "calls_per_sample": number,
    }
    if cpu:
        out["median_cpu_s"] = statistics.median(cpu)
    return out


class Contention:
    """CPU time used by OTHER processes while the benchmark runs (Linux /proc/stat).

    share = their busy CPU time / all CPU time available, over the interval. On a
    quiet machine it is ~0; anything above a few percent makes wall-clock
    timings, and to a lesser degree their ratios, noisy.
    """

    def __init__(self):
        self.start = self._read()

    @staticmethod
    def _read():
        try:
            with open("/proc/stat") as f:
                vals = [int(v) for v in f.readline().split()[1:]]
            with open("/proc/self/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            own = int(fields[11]) + int(fields[12])  # utime + stime of this process
            idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
            return sum(vals[:8]), sum(vals[:8]) - idle, own
        except (OSError, ValueError, IndexError):
            return None

    def share(self):
        end = self._read()
        if self.start is None or end is None or end[0] <= self.start[0]:
            return None
        total = end[0] - self.start[0]
        other = (end[1] - self.start[1]) - (end[2] - self.start[2])
        return max(0.0, other / total)


def vm_hwm_bytes():
    """Peak resident set size of this process (VmHWM), or None off Linux."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    except Exception:  # pragma: no cover
        return None


# ---------------------------------------------------------------------- models
def make_backbone(args, anchored, seed):
    keras.utils.set_random_seed(seed)
    kwargs = {"width": args.width} if args.width else {}
    return build_backbone(args.arch, args.image_shape, args.num_classes, anchored=anchored, **kwargs)


def data(args, n, seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 255.0, (n,) + args.image_shape).astype("float32")  # raw pixels
    y = rng.integers(0, args.num_classes, n).astype("int32")
    return x, y


def conv_macs(model):
    """Multiply-accumulates per image of every Conv2D / Dense layer: {name: macs}."""
    macs = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kh, kw, cin, cout = layer.kernel.shape
            _, h, w, _ = layer.output.shape
            macs[layer.name] = int(h * w * kh * kw * cin * cout)
        elif isinstance(layer, keras.layers.Dense):
            cin, cout = layer.kernel.shape
            macs[layer.name] = int(cin * cout)
    return macs


# -------------------------------------------------------------------- training
def bench_training(args, log):
    """Step times of AnchoredModel and the vanilla backbone, cycles of CYCLE steps."""
    b = args.batch_size
    x, y = data(args, b, args.seed)
    dataset = tf.data.Dataset.from_tensors((tf.constant(x), tf.constant(y))).repeat()
    models = {
        "anchored": AnchoredModel(
            make_backbone(args, True, args.seed), consistency="all", consistency_every=CYCLE,
            seed=args.seed,
        ),
        "vanilla": make_backbone(args, False, args.seed),
    }
    steps, iterators = {}, {}
    for name, model in models.items():
        model.compile(
            optimizer=keras.optimizers.SGD(learning_rate=0.01, momentum=0.9),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=True if args.jit_compile else "auto",
        )
        model.train_on_batch(x[:8], y[:8])  # builds weights, optimizer slots, train_function
        iterators[name] = iter(dataset)
        steps[name] = model.train_function

    per_step = {name: [] for name in models}  # (is_T_step, wall_s, cpu_s) per step

    def cycle(name):
        model, fn, it = models[name], steps[name], iterators[name]
        for _ in range(CYCLE):
            t_step = model.optimizer.iterations.numpy()
            c, t = time.process_time(), time.perf_counter()
            out = fn(it)
            _sync(out)
            dt = time.perf_counter() - t
            is_t = name == "anchored" and t_step % CYCLE == 0
            per_step[name].append((is_t, dt, time.process_time() - c))
        return out

    log(f"  training: warm-up, then {args.repeats} interleaved cycles of {CYCLE} steps each ...")
    fns = {name: (lambda name=name: cycle(name)) for name in models}
    # Warm-up cycles are timed into per_step too; drop them afterwards.
    for name in fns:
        fns[name]()
    for name in per_step:
        per_step[name] = []
    res = interleaved(fns, args.repeats, min_sample_s=0.0, warmup=0)
    out = {}
    for name in models:
        steps_ = per_step[name]

        def med(is_t, col):
            return _median([row[col] for row in steps_ if row[0] == is_t])

        out[name] = {
            "cycle": dict(res[name]),
            "cycle_step_median_s": res[name]["median_s"] / CYCLE,
            "step_without_T_median_s": med(False, 1),
            "steps_timed": len(steps_),
        }
        if name == "anchored":
            # T at its real frequency, 1 step in CYCLE; medians per kind are robust to spikes
            out[name]["step_with_T_median_s"] = med(True, 1)
            out[name]["step_median_s"] = (med(True, 1) + (CYCLE - 1) * med(False, 1)) / CYCLE
            out[name]["step_cpu_median_s"] = (med(True, 2) + (CYCLE - 1) * med(False, 2)) / CYCLE
        else:
            out[name]["step_median_s"] = med(False, 1)
            out[name]["step_cpu_median_s"] = med(False, 2)
    out["jit_compile"] = {name: bool(m.jit_compile) for name, m in models.items()}
    return out


def _median(values):
    return statistics.median(values) if values else None


# ------------------------------------------------------------------- inference
class Inference:
    """Compiled forward functions sharing one anchored and one vanilla backbone."""

    def __init__(self, args):
        self.args = args
        self.anchored = make_backbone(args, True, args.seed)
        self.vanilla = make_backbone(args, False, args.seed)
        pool, _ = data(args, max(64, max(args.k_list)), args.seed + 1)
        self.anchor_pool = pool
        self._vanilla_fn = tf.function(lambda x: self.vanilla(x, training=False), reduce_retracing=True)
        self._single_fn = tf.function(self._single, reduce_retracing=True)
        self._amp_fn = tf.function(amp_outputs, reduce_retracing=True)
        self._predictors = {}

    def _single(self, x, c):
        """One anchored forward: [c, x - c] for one anchor c (H, W, C)."""
        cs = tf.broadcast_to(c[None], tf.shape(x))
        return self.anchored(tf.concat([cs, x - cs], axis=-1), training=False)

    def predictor(self, kind, k, max_batch="auto"):
        """`tiled` / `folded`: the library's default execution (`max_batch="auto"`); `tiled_chunked`:
        chunks of B rows; `tiled_one_batch`: one K*B batch (max_batch=None)."""
        key = (kind, k, max_batch)
        if key not in self._predictors:
            cls = AnchoredPredictor if kind.startswith("tiled") else FoldedAnchoredPredictor
            p = cls(self.anchored, self.anchor_pool[:k], max_batch=max_batch)
            self._predictors[key] = (p, p._predict_fn())
        return self._predictors[key]

    def fns(self, x, k, kinds=("vanilla", "tiled", "tiled_chunked", "tiled_one_batch", "folded", "loop")):
        b = len(x)
        x = tf.constant(x)
        anchors = tf.constant(self.anchor_pool[:k])
        out = {}
        for kind in kinds:
            if kind == "vanilla":
                out[kind] = lambda: self._vanilla_fn(x)
            elif kind == "single":
                out[kind] = lambda: self._single_fn(x, anchors[0])
            elif kind == "loop":
                def loop():
                    logits = [self._single_fn(x, anchors[i]) for i in range(k)]
                    return self._amp_fn(tf.stack(logits))["amp_score"]
                out[kind] = loop
            else:  # tiled_chunked: the K*B rows in chunks of B (max_batch=B)
                mb = {"tiled_chunked": b, "tiled_one_batch": None}.get(kind, "auto")
                _, fn = self.predictor(kind, k, mb)
                out[kind] = lambda fn=fn: fn(x)["amp_score"]
        return out


def check_folded_equals_tiled(inf, x, k):
    tiled, _ = inf.predictor("tiled", k)
    folded, _ = inf.predictor("folded", k)
    a, b = tiled(tf.constant(x)), folded(tf.constant(x))
    return max(float(np.max(np.abs(np.asarray(a[key], "float64") - np.asarray(b[key], "float64"))))
               for key in ("logits", "tau", "amp_score", "probabilities"))


# ------------------------------------------------------------------------ peer
def bench_peer(args, log):
    """amp-tf vs PyTorch on this CPU: `benchmarks/peer_speed.py`'s contenders, run here.

    Training: one epoch per contender in alternation: amp-tf's own pipeline
    (`amp_tf.training.epoch_dataset` + `fit`, what the trainers run), `fit` on arrays,
    the PyTorch reference loop (2 threads and 1 thread). Inference at K = 5: the
    `AnchoredPredictor.predict` users call vs PyTorch's loop over anchors.
    """
    import peer_speed  # benchmarks/peer_speed.py: this script's folder is first on sys.path

    pargs = peer_speed.parse_args([
        "--n-train", str(3200 if args.quick else 6400), "--rounds", str(args.peer_rounds),
        "--k", str(args.k), "--no-profile", "--no-env-sweep", "--seed", str(args.seed)])
    pargs.quick = True  # peer_speed's --quick only drops the no-augmentation torch contender here
    torch = peer_speed.torch
    if torch is not None:
        torch.set_num_threads(os.cpu_count())
    log(f"  PyTorch: {torch.__version__ if torch is not None else 'not installed: ratios skipped'}")
    train, info = peer_speed.bench_training(pargs, log)
    inf = peer_speed.bench_inference(pargs, log)
    out = {"torch": torch.__version__ if torch is not None else None, "model_check": info,
           "settings": {"n_train": pargs.n_train, "rounds": pargs.rounds, "batch_size": pargs.batch_size,
                        "width": pargs.width, "k": pargs.k},
           "training": train, "inference": inf}
    if torch is None:
        out["skipped"] = "PyTorch not installed (pip install torch==2.13.0 for the CPU build)"
        return out
    ips = lambda d, n: d[n]["images_per_s"]  # noqa: E731
    out["ratios"] = {
        "peer_training": ips(train, "b_train_pipeline") / ips(train, "c_torch"),
        "peer_training_fit_arrays": ips(train, "a_fit_arrays") / ips(train, "c_torch"),
        "peer_training_vs_torch_1thread": ips(train, "b_train_pipeline") / ips(train, "c_torch_1thread"),
        "peer_training_cpu_time": train["c_torch"]["median_cpu_s"] / train["b_train_pipeline"]["median_cpu_s"],
        "peer_amp_inference": ips(inf, "tf_amp_predict" if "tf_amp_predict" in inf else "tf_amp_call")
        / ips(inf, "torch_amp_loop"),
        "peer_vanilla_inference": ips(inf, "tf_vanilla") / ips(inf, "torch_vanilla"),
    }
    return out


# ------------------------------------------------------------------- internals
def with_keras_batchnorm(model):
    """`model` rebuilt with keras.layers.BatchNormalization where it has amp-tf's BatchNorm."""
    from amp_tf.models.batchnorm import BatchNorm

    def clone(layer):
        cls = keras.layers.BatchNormalization if isinstance(layer, BatchNorm) else layer.__class__
        return cls.from_config(layer.get_config())
    return keras.models.clone_model(model, clone_function=clone)


def bench_internals(args, log):
    """Two library choices as ratios: the fused BatchNorm, and tf.data without autotuning."""
    from amp_tf.data import tfdata
    from amp_tf.training import epoch_dataset

    b = args.batch_size
    out = {}
    # (a) one training step of the anchored backbone: amp-tf BatchNorm vs Keras' BatchNormalization
    x, y = data(args, b, args.seed + 5)
    xa = tf.constant(np.concatenate([x, x[::-1]], -1) / 255.0, tf.float32)
    yt = tf.constant(y)
    steps = {}
    for name, model in (("fused", make_backbone(args, True, args.seed)),
                        ("keras", with_keras_batchnorm(make_backbone(args, True, args.seed)))):
        opt = keras.optimizers.SGD(learning_rate=0.01, momentum=0.9)
        opt.build(model.trainable_variables)
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

        @tf.function
        def step(model=model, opt=opt, loss_fn=loss_fn):
            with tf.GradientTape() as tape:
                loss = loss_fn(yt, model(xa, training=True))
            grads = tape.gradient(loss, model.trainable_variables)
            opt.apply_gradients(zip(grads, model.trainable_variables))
            return loss
        steps[f"step_{name}_batchnorm"] = step
    log("  training step: amp-tf BatchNorm (fused kernel) vs keras.layers.BatchNormalization ...")
    r = interleaved(steps, args.repeats, args.min_sample_s)
    out["batchnorm"] = {"timings": r, "ms_per_step": {n: 1e3 * v["median_s"] for n, v in r.items()},
                        "speedup": r["step_keras_batchnorm"]["median_s"] / r["step_fused_batchnorm"]["median_s"]}
    # (b) whole fit epochs on amp-tf's pipeline: fixed tuning (the library) vs tf.data autotuning
    n = b * (25 if args.quick else 50)
    x, y = data(args, n, args.seed + 6)
    ds_fixed, st = epoch_dataset(x, y, b, args.seed, epochs=1)
    on = tf.data.Options()
    on.autotune.enabled = True
    ds_auto = ds_fixed.with_options(on)
    model = AnchoredModel(make_backbone(args, True, args.seed), consistency="all",
                          consistency_every=CYCLE, seed=args.seed)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.01, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    fits = {name: (lambda ds=ds: model.fit(ds, epochs=1, steps_per_epoch=st, verbose=0).history["loss"][-1])
            for name, ds in (("epoch_fixed_tuning", ds_fixed), ("epoch_autotune", ds_auto))}
    rounds = 6 if args.quick else 10
    log(f"  fit epochs of {st} steps: tf.data fixed tuning (amp-tf) vs autotuning, {rounds} rounds ...")
    samples = {name: [] for name in fits}
    for name in fits:
        fits[name]()  # warm-up (traces)
    for i in range(rounds):
        for name in (list(fits) if i % 2 == 0 else list(fits)[::-1]):
            t = time.perf_counter()
            fits[name]()
            samples[name].append(time.perf_counter() - t)
    fastest = min(min(v) for v in samples.values())
    out["tf_data"] = {
        "steps_per_epoch": st, "autotune_enabled": {"epoch_fixed_tuning": ds_fixed.options().autotune.enabled,
                                                    "epoch_autotune": ds_auto.options().autotune.enabled},
        "epochs_s": samples,
        "median_s": {n: statistics.median(v) for n, v in samples.items()},
        "max_s": {n: max(v) for n, v in samples.items()},
        "slow_epochs": {n: sum(t > 1.3 * fastest for t in v) for n, v in samples.items()},
        "speedup": statistics.median(samples["epoch_autotune"]) / statistics.median(samples["epoch_fixed_tuning"]),
        "tfdata_settings": {"map_calls_per_batch": tfdata.map_calls(per_batch=True), "prefetch": tfdata.PREFETCH},
    }
    return out


# ------------------------------------------------------------------------ main
def machine_info():
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
    }
    try:
        info["cpu_affinity"] = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        pass
    try:
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        if names:
            info["cpu_model"] = names[0]
    except OSError:
        pass
    info["gpus"] = [d.name for d in tf.config.list_physical_devices("GPU")]
    info["tf_threads"] = {
        "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
        "note": "0 = TensorFlow's default (all cores); left at the defaults",
    }
    info["env"] = {k: os.environ.get(k) for k in (
        "OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS",
        "TF_ENABLE_ONEDNN_OPTS", "KERAS_BACKEND") if os.environ.get(k) is not None}
    return info


def versions():
    v = {"python": platform.python_version(), "tensorflow": tf.__version__,
         "keras": keras.__version__, "numpy": np.__version__}
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                             capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10)
        if rev.returncode == 0:
            v["amp_tf_git"] = rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return v


def verdict(name, value):
    spec = {**TARGETS, **PEER_TARGETS}[name]
    if spec is None:
        return {"value": value, "target": None, "met": None}
    op, target = spec
    ok = value <= target if op == "<=" else value >= target
    return {"value": value, "target": f"{op} {target}", "met": bool(ok)}


def run_core(args, log=print):
    results = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    contention = Contention()
    results["load_average_at_start"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    k, b = args.k, args.batch_size
    h, w, c = args.image_shape

    sections = {}
    log(f"[1/4] training step, anchored vs vanilla ({args.arch}, batch {b})")
    sec = Contention()
    train = bench_training(args, log)
    sections["training"] = sec.share()
    results["training"] = train
    train_overhead = train["anchored"]["step_median_s"] / train["vanilla"]["step_median_s"]

    log(f"[2/4] inference at K={k}, batch {b}: vanilla, tiled (the default execution), tiled in chunks of B, "
        "one K*B batch, folded, Python loop")
    sec = Contention()
    inf = Inference(args)
    x_main, _ = data(args, b, args.seed + 2)
    max_abs_diff = check_folded_equals_tiled(inf, x_main[:16], k)
    res = interleaved(inf.fns(x_main, k), 2 * args.repeats, args.min_sample_s)  # headline: 2x samples
    t_van, t_tiled, t_chunk, t_fold, t_loop = (
        res[n]["median_s"] for n in ("vanilla", "tiled", "tiled_chunked", "folded", "loop"))
    c_van, c_tiled, c_fold, c_loop = (
        res[n]["median_cpu_s"] for n in ("vanilla", "tiled", "folded", "loop"))
    results["inference"] = {
        "k": k, "batch_size": b, "timings": res,
        "images_per_s": {n: b / res[n]["median_s"] for n in res},
        "folded_max_abs_diff_vs_tiled": max_abs_diff,
    }
    sections["inference"] = sec.share()

    log(f"[3/4] K scaling at batch {b}: K in {args.k_list}")
    sec = Contention()
    k_rows = []
    for kk in sorted(args.k_list):
        kinds = ("vanilla", "single") if kk == 1 else ("vanilla", "tiled", "tiled_chunked", "folded")
        if kk == k:  # the headline measurement (same K and batch): reuse it
            r = res
        else:
            r = interleaved(inf.fns(x_main, kk, kinds), args.repeats, args.min_sample_s, warmup=2)
        row = {"k": kk, "batch_size": b}
        for kind in kinds[1:]:
            t = r[kind]["median_s"]
            row[kind] = {
                "median_s": t,
                "images_per_s": b / t,
                "rows_per_s": kk * b / t,
                "k_efficiency": kk * r["vanilla"]["median_s"] / t,
            }
        row["vanilla_images_per_s"] = b / r["vanilla"]["median_s"]
        row["tiled_input_bytes"] = kk * b * h * w * 2 * c * 4
        row["vm_hwm_after_bytes"] = vm_hwm_bytes()
        k_rows.append(row)
        log(f"    K={kk:>3}: " + ", ".join(
            f"{kind} {row[kind]['images_per_s']:8.1f} img/s (eff {row[kind]['k_efficiency']:.3f})"
            for kind in kinds[1:]) + f"; vanilla {row['vanilla_images_per_s']:8.1f} img/s")
    results["k_scaling"] = k_rows
    sections["k_scaling"] = sec.share()

    log(f"[4/4] batch scaling at K={k}: batch in {args.batch_list}")
    sec = Contention()
    b_rows = []
    for bb in sorted(args.batch_list):
        kinds = ("vanilla", "tiled", "tiled_chunked", "folded")
        if bb == b:  # the headline measurement: reuse it
            r = res
        else:
            xb, _ = data(args, bb, args.seed + 3)
            r = interleaved(inf.fns(xb, k, kinds), args.repeats, args.min_sample_s)
        row = {"batch_size": bb, "k": k}
        for kind in kinds:
            row[kind] = {"median_s": r[kind]["median_s"], "images_per_s": bb / r[kind]["median_s"]}
        row["amp_k_efficiency_tiled"] = k * r["vanilla"]["median_s"] / r["tiled"]["median_s"]
        row["amp_k_efficiency_tiled_chunked"] = k * r["vanilla"]["median_s"] / r["tiled_chunked"]["median_s"]
        row["amp_k_efficiency_folded"] = k * r["vanilla"]["median_s"] / r["folded"]["median_s"]
        row["tiled_input_bytes"] = k * bb * h * w * 2 * c * 4
        row["vm_hwm_after_bytes"] = vm_hwm_bytes()
        b_rows.append(row)
        log(f"    B={bb:>4}: vanilla {row['vanilla']['images_per_s']:8.1f}, tiled "
            f"{row['tiled']['images_per_s']:8.1f}, chunked {row['tiled_chunked']['images_per_s']:8.1f}, "
            f"folded {row['folded']['images_per_s']:8.1f} img/s; K-efficiency tiled "
            f"{row['amp_k_efficiency_tiled']:.3f}, chunked {row['amp_k_efficiency_tiled_chunked']:.3f}")
    results["batch_scaling"] = b_rows
    sections["batch_scaling"] = sec.share()

    # analytic cost model: the stem's share of the work, and what folding can save
    macs = conv_macs(inf.anchored)
    stem, stem_out = find_stem(inf.anchored)
    total = sum(macs.values())
    stem_frac = macs[stem.name] / total
    # folded: the stem over 2C channels for K*B rows becomes C channels for K + B rows
    folded_macs = total - stem_frac * total * (1 - (k + b) / (2 * k * b))
    stem_out_bytes = k * b * int(np.prod(stem_out.shape[1:])) * 4
    results["cost_model"] = {
        "macs_per_image_anchored": total,
        "macs_per_image_vanilla": sum(conv_macs(inf.vanilla).values()),
        "stem_mac_fraction": stem_frac,
        "folded_speedup_upper_bound_from_macs": total / folded_macs,
        "tiled_input_bytes_at_k_b": k * b * h * w * 2 * c * 4,
        "stem_output_bytes_at_k_b": stem_out_bytes,
        "folded_stem_terms_bytes_at_k_b": (k + b) * int(np.prod(stem_out.shape[1:])) * 4,
    }

    results["train_overhead"] = train_overhead
    results["amp_k_efficiency"] = k * t_van / t_tiled
    results["amp_k_efficiency_tiled_chunked"] = k * t_van / t_chunk
    results["amp_k_efficiency_folded"] = k * t_van / t_fold
    results["folded_speedup"] = t_tiled / t_fold
    results["tiled_vs_loop"] = t_loop / t_tiled
    results["tiled_chunked_vs_loop"] = t_loop / t_chunk
    t_one = res["tiled_one_batch"]["median_s"]
    results["amp_k_efficiency_one_batch"] = k * t_van / t_one  # the old default: one K*B batch
    results["one_batch_vs_loop"] = t_loop / t_one
    # the same ratios on process CPU time (less sensitive to other processes on the machine)
    results["cpu_time_ratios"] = {
        "train_overhead": train["anchored"]["step_cpu_median_s"] / train["vanilla"]["step_cpu_median_s"],
        "amp_k_efficiency": k * c_van / c_tiled,
        "folded_speedup": c_tiled / c_fold,
        "tiled_vs_loop": c_loop / c_tiled,
    }
    mins = {n: res[n]["min_s"] for n in res}
    results["min_time_ratios"] = {  # fastest sample of each: least disturbed by other processes
        "train_overhead": train["anchored"]["cycle"]["min_s"] / train["vanilla"]["cycle"]["min_s"],
        "amp_k_efficiency": k * mins["vanilla"] / mins["tiled"],
        "folded_speedup": mins["tiled"] / mins["folded"],
        "tiled_vs_loop": mins["loop"] / mins["tiled"],
    }
    results["train_overhead_from_cycles"] = (
        train["anchored"]["cycle_step_median_s"] / train["vanilla"]["cycle_step_median_s"])
    results["contention"] = {
        "other_processes_cpu_share": contention.share(),
        "by_section": sections,
        "load_average_at_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    results["targets"] = {name: verdict(name, results[name]) for name in TARGETS}
    return results


def run(args, log=print):
    """The sections asked for; `targets` holds every ratio with a target that was measured."""
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


NOTES = [
    "Training: both models are compiled with SGD(0.01, momentum 0.9) and sparse CE from logits "
    "(no metrics), warmed up by one train_on_batch and one full cycle. Each timed sample is one "
    "cycle of 5 consecutive calls of the compiled Keras train function (model.train_function, "
    "what fit runs per step) on an iterator over a repeated in-memory tf.data batch, so exactly "
    "one of the 5 anchored steps applies the consistency transform T (consistency_every=5), at "
    "its real frequency. train_overhead = median anchored cycle / median vanilla cycle. The "
    "per-step medians with and without T split the overhead into anchoring (permutation, "
    "concat, 2C-channel stem, label checks) and T.",
    "Inference: every path is a tf.function called on a tf.constant batch: vanilla = "
    "backbone(x) on the C-channel model; tiled = AnchoredPredictor's compiled call (one K*B "
    "batch, all AMP outputs); folded = FoldedAnchoredPredictor (same outputs); loop = a Python "
    "loop over anchors calling a compiled single-anchor forward (concat + backbone), then "
    "stack + the compiled AMP reduction. A sample repeats a call until it lasts >= "
    "min_sample_s; contenders are interleaved in rotating order and medians reported.",
    "Memory: TensorFlow's CPU allocator has no per-run peak query "
    "(tf.config.experimental.get_memory_info does not support CPU), so we report the analytic "
    "size of the K*B tiled input and of the K*B stem output (the same in tiled and folded), "
    "and VmHWM (the process' peak RSS, monotone) after each scaling row and at the end. VmHWM "
    "includes TensorFlow itself, the training benchmark and allocator caching; it only rises "
    "when a row needs more than all earlier ones.",
    "Contention: contention.other_processes_cpu_share is the CPU time used by other processes "
    "(from /proc/stat minus this process) over the run; above a few percent, wall-clock "
    "timings are disturbed. cpu_time_ratios repeat the headline ratios on this process' CPU "
    "time as a cross-check (less sensitive to sharing, though TF's spinning thread pools count).",
    "min_time_ratios: the headline ratios from the fastest sample of each contender (for "
    "training: the fastest whole cycle), the classic timeit estimator when noise is additive.",
    "tiled_chunked = AnchoredPredictor(max_batch=B): the same K*B rows run in K chunks of B "
    "(tf.map_fn), to separate the cost of one huge batch (cache-unfriendly on CPU) from "
    "tiling itself.",
    "Training ratio: train_overhead = ((median T step) + 4 x (median other anchored step)) / "
    "(median vanilla step), i.e. T weighted at its real 1-in-5 frequency, from per-step "
    "medians over all timed cycles (robust to single-step spikes); the ratio of whole-cycle "
    "medians is train_overhead_from_cycles.",
    "Threads: TensorFlow's defaults (intra/inter-op 0 = all cores); XLA is off (Keras' "
    "jit_compile='auto' disables it on CPU-only machines). Vanilla and anchored backbones have "
    "the same architecture except the stem's input channels (C vs 2C).",
]


def print_core(results, args):
    t = results["training"]
    ips = results["inference"]["images_per_s"]
    cost = results["cost_model"]
    cpu = results["cpu_time_ratios"]
    print()
    print(f"amp-tf speed benchmark: {args.arch} {args.image_shape}, batch {args.batch_size}, "
          f"K={args.k}, repeats {args.repeats}{' (quick)' if args.quick else ''}")
    print(f"{'metric':<18}{'value':>8}  {'target':<9}{'status':<8}{'cpu-time':>9}{'min':>7}  detail")
    print("-" * 117)
    a = t["anchored"]
    detail = {
        "train_overhead": (
            f"anchored {1e3 * a['step_median_s']:.0f} ms/step (T step {1e3 * a['step_with_T_median_s']:.0f}, "
            f"others {1e3 * a['step_without_T_median_s']:.0f}) vs vanilla "
            f"{1e3 * t['vanilla']['step_median_s']:.0f}; from whole cycles "
            f"{results['train_overhead_from_cycles']:.3f}"),
        "amp_k_efficiency": (
            f"tiled {ips['tiled']:.0f} img/s x{args.k} vs vanilla {ips['vanilla']:.0f} img/s; "
            f"chunks of B: {results['amp_k_efficiency_tiled_chunked']:.3f}, folded: "
            f"{results['amp_k_efficiency_folded']:.3f}"),
        "folded_speedup": (
            f"stem = {100 * cost['stem_mac_fraction']:.2f}% of MACs, MAC bound "
            f"{cost['folded_speedup_upper_bound_from_macs']:.3f}; max |diff| "
            f"{results['inference']['folded_max_abs_diff_vs_tiled']:.1e}"),
        "tiled_vs_loop": (
            f"loop {ips['loop']:.0f} img/s vs tiled {ips['tiled']:.0f}, tiled in chunks of B "
            f"{ips['tiled_chunked']:.0f} (loop/chunked {results['tiled_chunked_vs_loop']:.3f})"),
    }
    for name in TARGETS:
        v = results["targets"][name]
        status = "info" if v["met"] is None else ("met" if v["met"] else "MISSED")
        print(f"{name:<18}{v['value']:>8.3f}  {v['target'] or '-':<9}{status:<8}"
              f"{cpu[name]:>9.3f}{results['min_time_ratios'][name]:>7.3f}  {detail[name]}")
    print()
    print("K scaling at batch %d (images/s; eff = K x vanilla time / time):" % args.batch_size)
    for row in results["k_scaling"]:
        parts = [f"{kind} {row[kind]['images_per_s']:7.1f} (eff {row[kind]['k_efficiency']:.3f})"
                 for kind in ("single", "tiled", "tiled_chunked", "folded") if kind in row]
        print(f"  K={row['k']:>3}  " + "  ".join(parts)
              + f"  | tiled input {row['tiled_input_bytes'] / 2**20:.1f} MiB, VmHWM "
                f"{(row['vm_hwm_after_bytes'] or 0) / 2**20:.0f} MiB")
    print("batch scaling at K=%d (images/s):" % args.k)
    for row in results["batch_scaling"]:
        print(f"  B={row['batch_size']:>4}  vanilla {row['vanilla']['images_per_s']:7.1f}  tiled "
              f"{row['tiled']['images_per_s']:7.1f}  chunked {row['tiled_chunked']['images_per_s']:7.1f}  "
              f"folded {row['folded']['images_per_s']:7.1f}  K-eff tiled {row['amp_k_efficiency_tiled']:.3f}"
              f"  chunked {row['amp_k_efficiency_tiled_chunked']:.3f}")
    share = results["contention"]["other_processes_cpu_share"]
    if share is not None:
        flag = "  <-- timings disturbed by other processes" if share > 0.05 else ""
        by = ", ".join(f"{k} {100 * v:.0f}%" for k, v in results["contention"]["by_section"].items()
                       if v is not None)
        print(f"other processes used {100 * share:.0f}% of the machine's CPU during the run "
              f"({by}){flag}")


def print_peer(results):
    peer = results["peer"]
    print()
    print(f"amp-tf vs PyTorch {peer['torch'] or '(not installed)'} on this CPU: resnet_small width "
          f"{peer['settings']['width']}, batch {peer['settings']['batch_size']}, "
          f"{peer['settings']['n_train']} images per epoch, {peer['settings']['rounds']} alternating rounds")
    for n, r in peer["training"].items():
        print(f"  train {n:<20}{r['images_per_s']:>8.0f} img/s  ({r['median_s']:.2f} s/epoch, "
              f"cpu {r['median_cpu_s']:.2f} s)")
    for n, r in peer["inference"].items():
        print(f"  infer {n:<20}{r['images_per_s']:>8.0f} img/s")
    if "skipped" in peer:
        print(f"  peer ratios skipped: {peer['skipped']}")
        return
    for n, v in peer["ratios"].items():
        t = results["targets"].get(n)
        status = "" if t is None else f"  target {t['target']}: {'met' if t['met'] else 'MISSED'}"
        print(f"  {n:<34}{v:>7.3f}{status}")


def print_internals(results):
    bn, td = results["internals"]["batchnorm"], results["internals"]["tf_data"]
    print()
    ms = bn["ms_per_step"]
    print(f"fused BatchNorm: training step {ms['step_fused_batchnorm']:.1f} ms vs Keras' BatchNormalization "
          f"{ms['step_keras_batchnorm']:.1f} ms -> x{bn['speedup']:.3f}")
    print(f"tf.data, fit epochs of {td['steps_per_epoch']} steps: fixed tuning (amp-tf) median "
          f"{td['median_s']['epoch_fixed_tuning']:.2f} s (max {td['max_s']['epoch_fixed_tuning']:.2f}, "
          f"{td['slow_epochs']['epoch_fixed_tuning']} slow) vs autotuning "
          f"{td['median_s']['epoch_autotune']:.2f} s (max {td['max_s']['epoch_autotune']:.2f}, "
          f"{td['slow_epochs']['epoch_autotune']} slow) -> x{td['speedup']:.3f}  (slow: > 1.3 x the fastest epoch)")


def print_table(results, args, wall):
    if "training" in results:
        print_core(results, args)
    if "peer" in results:
        print_peer(results)
    if "internals" in results:
        print_internals(results)
    print(f"CPU: {machine_info().get('cpu_model', 'unknown')}, {os.cpu_count()} cores")
    print(f"peak RSS {results['peak_rss_bytes'] / 2**20:.0f} MiB; wall time {wall:.1f} s")


def main(argv=None):
    args = parse_args(argv)
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
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2, default=float))
    print_table(results, args, wall)
    if args.json:
        print(f"wrote {path}")
    return results


if __name__ == "__main__":
    main()
