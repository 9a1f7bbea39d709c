#!/usr/bin/env python
"""amp-tf vs a plain PyTorch reference on the same CPU: training and inference images/s.

Run from the repository root:

    python benchmarks/peer_speed.py --quick            # ~3 min on 2 cores
    python benchmarks/peer_speed.py --json out.json    # more rounds, thread/oneDNN sweep

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
  (b) amp-tf's own pipeline: `amp_tf.training.epoch_dataset` (crop+flip) +
      `compile_model` + `fit`, i.e. what `amp_tf.training.train` runs per epoch;
  (c) the PyTorch reference loop (torch.set_num_threads = cores), same anchoring,
      a comparable T in plain torch ops, vectorised crop+flip on the batch.

Inference (images/s, batch 128): vanilla backbone (1 channel) and AMP with K=5
(`AnchoredPredictor.predict` vs a torch loop over anchors, and torch tiled).

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
"""

from __future__ import annotations

import os
import time

_T0 = time.perf_counter()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import inspect  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]  # amp_tf is installed (pip install -e .)

CYCLE = 5  # T on every 5th step
PAD = 4


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="amp-tf vs a PyTorch reference on the same CPU (training and inference "
        "images/s, alternating contenders, medians), plus a profile of one amp-tf step.")
    p.add_argument("--quick", action="store_true", help="2 timed rounds, 1280 images/epoch, fewer profile variants; ~3-4 min on 2 idle cores")
    p.add_argument("--json", metavar="OUT", default=None, help="write all results to OUT")
    p.add_argument("--rounds", type=int, default=None, help="timed rounds per contender (default 4; 2 with --quick)")
    p.add_argument("--n-train", type=int, default=None,
                   help="training images per epoch (multiple of the batch; default 6400; 1280 with --quick)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--width", type=int, default=16, help="resnet_small width (default 16)")
    p.add_argument("--k", type=int, default=5, help="anchors for AMP inference (default 5)")
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
    if a.rounds < 1 or a.n_train < a.batch_size or a.k < 2:
        p.error("--rounds >= 1, --n-train >= --batch-size, --k >= 2")
    return a


# Child processes of --env-sweep must set TF threads before TF starts.
_EARLY = parse_args() if __name__ == "__main__" else None
if _EARLY is not None and _EARLY.worker:
    _W = json.loads(_EARLY.worker)
    for key, val in _W.get("env", {}).items():
        os.environ[key] = str(val)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.get_logger().setLevel("ERROR")
if _EARLY is not None and _EARLY.worker:
    if _W.get("intra") is not None:
        tf.config.threading.set_intra_op_parallelism_threads(_W["intra"])
    if _W.get("inter") is not None:
        tf.config.threading.set_inter_op_parallelism_threads(_W["inter"])

import amp_tf.training as amp_training  # noqa: E402
from amp_tf.anchoring import AnchoredModel, anchor_inputs, permute_batch  # noqa: E402
from amp_tf.augment import ConsistencyAugment  # noqa: E402
from amp_tf.models import build_backbone  # noqa: E402
from amp_tf.models.resnet import resnet_small  # noqa: E402
from amp_tf.predictor import AnchoredPredictor  # noqa: E402

try:
    if _EARLY is not None and (_EARLY.no_torch or _EARLY.worker):
        raise ImportError
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError:  # optional peer
    torch = None


# ------------------------------------------------------------------ machine
def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def thread_settings():
    out = {
        "cores": os.cpu_count(),
        "tf_intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
        "tf_inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
        "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "(unset: on)"),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "(unset)"),
    }
    if torch is not None:
        out["torch_threads"] = torch.get_num_threads()
        out["torch_interop_threads"] = torch.get_num_interop_threads()
    return out


def load_share():
    """(total, busy) jiffies from /proc/stat, for the machine's CPU use by everyone."""
    try:
        vals = [int(v) for v in open("/proc/stat").readline().split()[1:]]
        return sum(vals[:8]), sum(vals[:8]) - vals[3] - vals[4]
    except (OSError, ValueError):
        return None


# ------------------------------------------------------------------ data + models
def make_data(n, seed):
    """Raw-pixel-range float images (whole numbers 0..255) and labels 0..9."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 28, 28, 1)).astype("float32")
    y = rng.integers(0, 10, n).astype("int32")
    return x, y


def anchored_model(backbone, consistency="all", seed=0):
    """AnchoredModel across the library's API versions (value_range, or mean/std + pixels)."""
    params = inspect.signature(AnchoredModel.__init__).parameters
    kw = dict(consistency=consistency, consistency_every=CYCLE, seed=seed, num_classes=10)
    if "value_range" in params:
        kw["value_range"] = (0.0, 255.0)
    return AnchoredModel(backbone, **kw)


def tf_backbone(args, anchored, seed):
    keras.utils.set_random_seed(seed)
    if anchored:
        return build_backbone("resnet_small", (28, 28, 1), 10, anchored=True, width=args.width)
    inp = keras.Input((28, 28, 1))  # plain 1-channel backbone, no pixel normalisation layer
    return keras.Model(inp, resnet_small(inp, 10, width=args.width), name="resnet_small_vanilla")


def train_config(args, **over):
    fields = {f.name for f in amp_training.TrainConfig.__dataclass_fields__.values()}
    kw = dict(arch="resnet_small", batch_size=args.batch_size, lr=0.1, momentum=0.9,
              weight_decay=5e-4, consistency="all", consistency_every=CYCLE, seed=args.seed,
              backbone_kwargs={"width": args.width})
    kw.update(over)
    return amp_training.TrainConfig(**{k: v for k, v in kw.items() if k in fields})


def compile_like_train(model, args, steps, spe=1, jit=False):
    """`amp_tf.training.compile_model` (SGD 0.1/0.9/5e-4, sparse CE, accuracy) + options."""
    cfg = train_config(args, jit_compile=jit)
    amp_training.compile_model(model, cfg, steps)
    if spe != 1 or jit:
        model.compile(optimizer=model.optimizer, loss=model.loss, metrics=["accuracy"],
                      jit_compile=jit, steps_per_execution=spe)
    return model


def fresh_compile(model, spe=1, jit=False):
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.1, momentum=0.9, weight_decay=5e-4),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"], steps_per_execution=spe, jit_compile=jit,
    )
    return model


# ------------------------------------------------------------------ prototype: cheap crop+flip
def crop_flip_gather(images, seed, padding):
    """Drop-in for `amp_tf.training._crop_flip`: the same per-sample random crop (zero
    padding) + horizontal flip, as pad + two batched gathers (the flip folded into the
    column index) instead of crop_and_resize + reverse + where. Stateless, XLA-friendly."""
    b = tf.shape(images)[0]
    h, w = images.shape[1], images.shape[2]
    padded = tf.pad(images, [[0, 0], [padding, padding], [padding, padding], [0, 0]])
    s = tf.random.experimental.stateless_split(seed, 3)
    oy = tf.random.stateless_uniform([b], s[0], 0, 2 * padding + 1, dtype=tf.int32)
    ox = tf.random.stateless_uniform([b], s[1], 0, 2 * padding + 1, dtype=tf.int32)
    flip = tf.random.stateless_uniform([b], s[2]) < 0.5
    rows = oy[:, None] + tf.range(h)[None]
    cols = tf.where(flip[:, None], tf.range(w - 1, -1, -1)[None], tf.range(w)[None]) + ox[:, None]
    out = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(out, cols, axis=2, batch_dims=1)


@contextlib.contextmanager
def patched_crop(fn):
    """Builds amp-tf's epoch_dataset with another crop function (traced at build time)."""
    old = amp_training._crop_flip
    amp_training._crop_flip = fn
    try:
        yield
    finally:
        amp_training._crop_flip = old


def epoch_ds(args, x, y, epoch, crop=None, prefetch=True):
    if crop is None:
        ds, steps = amp_training.epoch_dataset(x, y, args.batch_size, args.seed, epoch + 1, epoch)
    else:
        with patched_crop(crop):
            ds, steps = amp_training.epoch_dataset(x, y, args.batch_size, args.seed, epoch + 1, epoch)
    if not prefetch:
        ds = ds._input_dataset  # the library's dataset minus its final prefetch
    return ds, steps


# ------------------------------------------------------------------ torch reference
if torch is not None:

    class TorchBlock(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1)
            self.proj = None
            if stride != 1 or cin != cout:
                self.proj = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1))

        def forward(self, x):
            h = F.relu(self.bn1(self.conv1(x)))
            h = self.bn2(self.conv2(h))
            return F.relu((x if self.proj is None else self.proj(x)) + h)

    class TorchResNetSmall(nn.Module):
        """amp-tf's resnet_small: stem conv3x3+BN+ReLU, blocks w/2w/4w (strides 1/2/2), GAP, Linear."""

        def __init__(self, cin, width=16, classes=10):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(cin, width, 3, 1, 1, bias=False),
                                      nn.BatchNorm2d(width, eps=1e-5, momentum=0.1), nn.ReLU())
            self.blocks = nn.Sequential(TorchBlock(width, width, 1), TorchBlock(width, 2 * width, 2),
                                        TorchBlock(2 * width, 4 * width, 2))
            self.fc = nn.Linear(4 * width, classes)
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")

        def forward(self, x):
            return self.fc(self.blocks(self.stem(x)).mean((2, 3)))

    def torch_crop_flip(x, g, pad=PAD):
        """Per-sample random crop (zero pad) + flip on an NHWC batch, vectorised; returns NCHW."""
        b, h, w, _ = x.shape
        p = F.pad(x, (0, 0, pad, pad, pad, pad))
        oy = torch.randint(0, 2 * pad + 1, (b,), generator=g)
        ox = torch.randint(0, 2 * pad + 1, (b,), generator=g)
        flip = torch.rand(b, generator=g) < 0.5
        rows = oy[:, None] + torch.arange(h)
        ar = torch.arange(w)
        cols = torch.where(flip[:, None], w - 1 - ar, ar) + ox[:, None]
        out = p[torch.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]]  # B,H,W,C
        return out.permute(0, 3, 1, 2).contiguous()

    def torch_T(c, g, lo=0.0, hi=255.0):
        """amp-tf's T "all" for 1 channel in plain torch: resized crop (area 0.25-1, ratio
        3/4-4/3, bilinear), flip p=.5, brightness+contrast 0.4 in random order p=.8,
        Gaussian blur sigma 0.1-2 k=5 p=.8; per-sample parameters."""
        b, ch, h, w = c.shape
        u = lambda *s: torch.rand(*s, generator=g)  # noqa: E731
        area = 0.25 + 0.75 * u(b)
        r = torch.exp(np.log(3 / 4) + (np.log(4 / 3) - np.log(3 / 4)) * u(b))
        bh = torch.clamp(torch.sqrt(area / r), max=1.0)
        bw = torch.clamp(torch.sqrt(area * r), max=1.0)
        y0, x0 = u(b) * (1 - bh), u(b) * (1 - bw)
        theta = torch.zeros(b, 2, 3)
        theta[:, 0, 0], theta[:, 0, 2] = bw, (x0 + bw / 2) * 2 - 1
        theta[:, 1, 1], theta[:, 1, 2] = bh, (y0 + bh / 2) * 2 - 1
        grid = F.affine_grid(theta, (b, ch, h, w), align_corners=True)
        c = F.grid_sample(c, grid, mode="bilinear", padding_mode="border", align_corners=True)
        c = torch.where((u(b) < 0.5)[:, None, None, None], c.flip(3), c)
        # colour jitter
        span = hi - lo
        delta = (u(b, 1, 1, 1) * 0.8 - 0.4) * span
        cf = 0.6 + 0.8 * u(b, 1, 1, 1)
        jit = c
        for op in (("b", "c") if u(1).item() < 0.5 else ("c", "b")):
            if op == "b":
                jit = jit + delta
            else:
                m = jit.mean((1, 2, 3), keepdim=True)
                jit = (jit - m) * cf + m
            jit = jit.clamp(lo, hi)
        c = torch.where((u(b) < 0.8)[:, None, None, None], jit, c)
        # blur: separable per-sample kernels as one grouped conv over B*C channels
        sig = 0.1 + 1.9 * u(b)
        xs = torch.arange(-2, 3, dtype=torch.float32)
        k = torch.exp(-(xs[None] ** 2) / (2 * sig[:, None] ** 2))
        k = (k / k.sum(1, keepdim=True)).repeat_interleave(ch, 0)  # (B*C, 5)
        z = F.pad(c.reshape(1, b * ch, h, w), (2, 2, 2, 2), mode="reflect")
        z = F.conv2d(z, k[:, None, :, None], groups=b * ch)
        z = F.conv2d(z, k[:, None, None, :], groups=b * ch).reshape(b, ch, h, w)
        return torch.where((u(b) < 0.8)[:, None, None, None], z, c)

    class TorchTrainer:
        """Reference anchored training loop: in-memory data, per-epoch shuffle, crop+flip."""

        def __init__(self, args, x, y, augment=True, seed=0):
            torch.manual_seed(seed)
            self.args, self.augment = args, augment
            self.x = torch.from_numpy(x)  # N,H,W,C raw pixels
            self.y = torch.from_numpy(y.astype("int64"))
            self.model = TorchResNetSmall(2, args.width)
            self.opt = torch.optim.SGD(self.model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
            self.g = torch.Generator().manual_seed(seed)
            self.step = 0

        def epoch(self):
            b = self.args.batch_size
            n = len(self.x)
            perm = torch.randperm(n, generator=self.g)
            self.model.train()
            for i in range(n // b):
                idx = perm[i * b:(i + 1) * b]
                xb = self.x[idx]
                if self.augment:
                    xb = torch_crop_flip(xb, self.g)
                else:
                    xb = xb.permute(0, 3, 1, 2).contiguous()
                yb = self.y[idx]
                c = xb[torch.randperm(b, generator=self.g)]
                view = torch_T(c, self.g) if self.step % CYCLE == 0 else c
                inp = torch.cat([(view - 127.5) / 127.5, (xb - c) / 127.5], 1)
                out = self.model(inp)
                loss = F.cross_entropy(out, yb)
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                self.opt.step()
                acc = (out.argmax(1) == yb).float().mean()  # noqa: F841  (the metric Keras computes)
                self.step += 1
            return float(loss.detach())

    def torch_amp_outputs(logits):
        """(K, B, N) -> AMP score etc., as amp_tf.predictor.amp_outputs (mean tau, exp calibration)."""
        h = logits.mean(0)
        tau = torch.sigmoid(logits).std(0, unbiased=True).mean(-1)
        hc = h / (1 + torch.exp(tau))[:, None]
        amp = torch.logsumexp(hc, -1) - hc.mean(-1)
        return {"logits": h, "tau": tau, "calibrated_logits": hc, "amp_score": amp,
                "probabilities": torch.softmax(hc, -1)}


def torch_param_count(model):
    return sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------ timing helpers
def alternate(fns, rounds, warmup=1, log=None):
    """Wall seconds of each fn, called in rotating order `rounds` times after `warmup` calls."""
    names = list(fns)
    for name in names:
        for _ in range(warmup):
            fns[name]()
    samples = {n: [] for n in names}
    cpu = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for n in order:
            c, t = time.process_time(), time.perf_counter()
            fns[n]()
            samples[n].append(time.perf_counter() - t)
            cpu[n].append(time.process_time() - c)
        if log:
            log("    round %d: " % (r + 1) + ", ".join(f"{n} {samples[n][-1]:.2f}s" for n in names))
    return {n: {"median_s": statistics.median(s), "min_s": min(s), "samples": s,
                "median_cpu_s": statistics.median(cpu[n])} for n, s in samples.items()}


def repeat_to(fn, min_s):
    """A fn that calls `fn` enough times to last >= min_s; returns (wrapped, calls)."""
    fn()
    t = time.perf_counter()
    fn()
    n = max(1, int(np.ceil(min_s / max(time.perf_counter() - t, 1e-6))))

    def many():
        for _ in range(n):
            out = fn()
        return out
    return many, n


def sync(out):
    leaf = tf.nest.flatten(out)[0]
    return leaf.numpy() if hasattr(leaf, "numpy") else leaf


# ------------------------------------------------------------------ sections
def bench_training(args, log):
    b = args.batch_size
    x, y = make_data(args.n_train, args.seed)
    steps = args.n_train // b
    fns, info = {}, {}

    model_a = fresh_compile(anchored_model(tf_backbone(args, True, args.seed)))
    fns["a_fit_arrays"] = lambda: model_a.fit(x, y, batch_size=b, epochs=1, verbose=0)

    model_b = compile_like_train(anchored_model(tf_backbone(args, True, args.seed)), args, steps)
    ds_b, st_b = epoch_ds(args, x, y, 0)  # built once, as train() does; each fit = a fresh epoch 0

    def run_b():
        model_b.fit(ds_b, epochs=1, steps_per_epoch=st_b, verbose=0, shuffle=False)
    fns["b_train_pipeline"] = run_b

    if torch is not None:
        trainer = TorchTrainer(args, x, y, augment=True, seed=args.seed)
        trainer_na = TorchTrainer(args, x, y, augment=False, seed=args.seed)
        fns["c_torch"] = trainer.epoch
        if not args.quick:
            fns["c_torch_noaug"] = trainer_na.epoch
        trainer_1t = TorchTrainer(args, x, y, augment=True, seed=args.seed)

        def one_thread():
            torch.set_num_threads(1)
            try:
                trainer_1t.epoch()
            finally:
                torch.set_num_threads(os.cpu_count())
        fns["c_torch_1thread"] = one_thread
        info["params_torch"] = torch_param_count(trainer.model)
    info["params_tf"] = int(model_a.backbone.count_params())
    info["trainable_params_tf"] = int(sum(np.prod(v.shape) for v in model_a.backbone.trainable_weights))
    log(f"  {steps} steps x batch {b} per epoch; warm-up epoch, then {args.rounds} alternating rounds")
    res = alternate(fns, args.rounds, log=log)
    for r in res.values():
        r["images_per_s"] = args.n_train / r["median_s"]
    return res, info


def bench_inference(args, log):
    b, k = args.batch_size, args.k
    x, _ = make_data(b, args.seed + 1)
    anchors, _ = make_data(k, args.seed + 2)
    min_s = 0.3 if args.quick else 0.6
    vanilla = tf_backbone(args, False, args.seed)
    anchored = tf_backbone(args, True, args.seed)
    xt = tf.constant((x - 127.5) / 127.5)
    van_fn = tf.function(lambda z: vanilla(z, training=False))
    xn = ((x - 127.5) / 127.5).astype("float32")
    if "mean" in inspect.signature(AnchoredPredictor.__init__).parameters:
        pred = AnchoredPredictor(anchored, anchors)  # raw-pixel API: normalises inside
        x_pred = x
    else:
        pred = AnchoredPredictor(anchored, (anchors - 127.5) / 127.5)
        x_pred = xn
    fns = {
        "tf_vanilla": lambda: sync(van_fn(xt)),
    }
    # AnchoredPredictor's compiled call on a batch (what predict() runs per batch, minus its
    # numpy input checks); predict() itself too when it works in this checkout.
    amp_fn = tf.function(lambda z: pred(z))
    x_pred_t = tf.constant(x_pred)
    fns["tf_amp_call"] = lambda: sync(amp_fn(x_pred_t))
    try:
        pred.predict(x_pred, batch_size=b)
        fns["tf_amp_predict"] = lambda: pred.predict(x_pred, batch_size=b)
    except Exception as exc:  # noqa: BLE001  (the library is being refactored)
        log(f"  AnchoredPredictor.predict failed in this checkout ({type(exc).__name__}); timing the call only")
    if torch is not None:
        tv = TorchResNetSmall(1, args.width).eval()
        ta = TorchResNetSmall(2, args.width).eval()
        xtt = torch.from_numpy(xn).permute(0, 3, 1, 2).contiguous()
        ct = torch.from_numpy(((anchors - 127.5) / 127.5).astype("float32")).permute(0, 3, 1, 2).contiguous()

        def t_van():
            with torch.inference_mode():
                return tv(xtt).numpy()

        def t_loop():
            with torch.inference_mode():
                outs = [ta(torch.cat([c.expand_as(xtt), xtt - c], 1)) for c in ct[:, None]]
                return torch_amp_outputs(torch.stack(outs))["amp_score"].numpy()

        def t_tiled():
            with torch.inference_mode():
                rows = torch.cat([ct[:, None].expand(k, b, 1, 28, 28), (xtt[None] - ct[:, None])], 2)
                out = ta(rows.reshape(k * b, 2, 28, 28)).reshape(k, b, -1)
                return torch_amp_outputs(out)["amp_score"].numpy()
        fns.update(torch_vanilla=t_van, torch_amp_loop=t_loop, torch_amp_tiled=t_tiled)
    calls = {}
    for n in list(fns):
        fns[n], calls[n] = repeat_to(fns[n], min_s)
    res = alternate(fns, 2 * args.rounds + 1, warmup=0)
    for n, r in res.items():
        r["calls_per_sample"] = calls[n]
        r["images_per_s"] = b * calls[n] / r["median_s"]
    return res


def bench_profile(args, log):
    """Where the time of one amp-tf anchored step goes, and prototype fixes, as ratios."""
    b = args.batch_size
    x, y = make_data(b, args.seed + 3)
    xt, yt = tf.constant(x), tf.constant(y)
    out = {}
    min_s = 0.4 if args.quick else 0.8

    # --- compute-only components on a fixed batch (no input pipeline) ---
    def keras_step(model):
        model.train_on_batch(x[:8], y[:8])
        it = iter(tf.data.Dataset.from_tensors((xt, yt)).repeat())
        fn = model.train_function

        def cycle():  # CYCLE steps: T at its real 1-in-5 frequency
            for _ in range(CYCLE):
                o = fn(it)
            sync(o)
        return cycle

    full = fresh_compile(anchored_model(tf_backbone(args, True, args.seed)))
    no_t = fresh_compile(anchored_model(tf_backbone(args, True, args.seed), consistency="none"))
    bb = tf_backbone(args, True, args.seed)
    van2 = fresh_compile(keras.models.clone_model(bb))
    xa = tf.constant(np.concatenate([(x - 127.5) / 127.5, (x - x[::-1]) / 127.5], -1).astype("float32"))
    van2.train_on_batch(xa[:8].numpy(), y[:8])
    it2 = iter(tf.data.Dataset.from_tensors((xa, yt)).repeat())

    def van2_cycle():
        for _ in range(CYCLE):
            o = van2.train_function(it2)
        sync(o)

    opt = keras.optimizers.SGD(learning_rate=0.1, momentum=0.9, weight_decay=5e-4)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    opt.build(bb.trainable_variables)

    @tf.function
    def fwd_bwd(xa_, y_):
        with tf.GradientTape() as tape:
            loss = loss_fn(y_, bb(xa_, training=True))
        grads = tape.gradient(loss, bb.trainable_variables)
        return loss + 0.0 * tf.add_n([tf.reduce_sum(g) for g in grads])

    @tf.function
    def fwd_bwd_apply(xa_, y_):
        with tf.GradientTape() as tape:
            loss = loss_fn(y_, bb(xa_, training=True))
        grads = tape.gradient(loss, bb.trainable_variables)
        opt.apply_gradients(zip(grads, bb.trainable_variables))
        return loss

    @tf.function
    def fwd_only(xa_):
        return bb(xa_, training=True)

    aug = ConsistencyAugment("all", value_range=(0.0, 255.0))
    seed = tf.constant([1, 2], tf.int64)
    t_fn = tf.function(lambda c, s: aug(c, seed=s))
    anchor_fn = tf.function(lambda z, s: anchor_inputs(z, permute_batch(z, s)))

    def cyc(f, n=CYCLE):
        def run():
            for _ in range(n):
                o = f()
            sync(o)
        run.steps = n
        return run

    comp = {
        "anchored_step_keras": keras_step(full),
        "anchored_step_noT_keras": keras_step(no_t),
        "backbone_step_keras_preanchored": van2_cycle,
        "fwd_bwd_apply_tf_function": cyc(lambda: fwd_bwd_apply(xa, yt)),
        "fwd_bwd_tf_function": cyc(lambda: fwd_bwd(xa, yt)),
        "fwd_only_training": cyc(lambda: fwd_only(xa)),
        "T_alone_per_call": cyc(lambda: t_fn(xt, seed)),
        "anchor_perm_concat": cyc(lambda: anchor_fn(xt, seed)),
    }
    if torch is not None:
        tr = TorchTrainer(args, x, y, seed=args.seed)
        xb = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
        yb = torch.from_numpy(y.astype("int64"))
        xin = torch.from_numpy(xa.numpy()).permute(0, 3, 1, 2).contiguous()

        def torch_fb():
            out_ = tr.model(xin)
            loss = F.cross_entropy(out_, yb)
            tr.opt.zero_grad(set_to_none=True)
            loss.backward()
            tr.opt.step()
            return loss

        def torch_full():
            c = xb[torch.randperm(b, generator=tr.g)]
            view = torch_T(c, tr.g) if tr.step % CYCLE == 0 else c
            tr.step += 1
            inp = torch.cat([(view - 127.5) / 127.5, (xb - c) / 127.5], 1)
            out_ = tr.model(inp)
            loss = F.cross_entropy(out_, yb)
            tr.opt.zero_grad(set_to_none=True)
            loss.backward()
            tr.opt.step()
            return loss
        if not args.quick:
            comp["torch_anchored_step"] = cyc(lambda: torch_full().detach().numpy())
        comp["torch_fwd_bwd_apply_preanchored"] = cyc(lambda: torch_fb().detach().numpy(), 1)
        comp["torch_T_alone_per_call"] = cyc(lambda: torch_T(xb, tr.g).numpy(), 1)
    log("  compute-only components (fixed batch, per step = cycle of 5 / 5) ...")
    calls, nsteps = {}, {}
    for n in list(comp):
        nsteps[n] = getattr(comp[n], "steps", CYCLE)
        comp[n], calls[n] = repeat_to(comp[n], min_s)
    res = alternate(comp, 2 * args.rounds + 1, warmup=0)
    out["components_ms_per_step"] = {n: 1e3 * r["median_s"] / (calls[n] * nsteps[n]) for n, r in res.items()}

    # --- input pipeline alone: iterate epoch_dataset ---
    xn, yn = make_data(args.n_train, args.seed)

    def iterate(crop=None, prefetch=True, augment=True):
        if augment:
            ds, _ = epoch_ds(args, xn, yn, 0, crop=crop, prefetch=prefetch)
        else:
            ds, _ = amp_training.epoch_dataset(xn, yn, b, args.seed, 1, 0, augment="none")

        def run():
            for xb_, _ in ds:
                pass
            return xb_
        return run

    pipe = {
        "pipeline_crop_and_resize(library)": iterate(),
        "pipeline_gather_crop(prototype)": iterate(crop=crop_flip_gather),
        "pipeline_no_prefetch": iterate(prefetch=False),
        "pipeline_no_augment": iterate(augment=False),
    }
    log("  input pipeline alone (one epoch of epoch_dataset) ...")
    rp = alternate(pipe, args.rounds + 1, log=None)
    steps = args.n_train // b
    out["pipeline_ms_per_batch"] = {n: 1e3 * r["median_s"] / steps for n, r in rp.items()}

    # --- prototype fixes end to end (one epoch each, alternating) ---
    x, y = make_data(args.n_train, args.seed)
    e2e = {}

    def fit_arrays(spe=1, jit=False):
        m = fresh_compile(anchored_model(tf_backbone(args, True, args.seed)), spe=spe, jit=jit)
        return lambda: m.fit(x, y, batch_size=b, epochs=1, verbose=0)

    def pipeline(spe=1, crop=None, jit=False, prefetch=True):
        m = compile_like_train(anchored_model(tf_backbone(args, True, args.seed)), args, steps, spe=spe, jit=jit)
        ds, st = epoch_ds(args, x, y, 0, crop=crop, prefetch=prefetch)
        return lambda: m.fit(ds, epochs=1, steps_per_epoch=st, verbose=0, shuffle=False)

    e2e["fit_arrays_spe1"] = fit_arrays(1)
    e2e["fit_arrays_spe16"] = fit_arrays(16)
    e2e["pipeline_library"] = pipeline()
    e2e["pipeline_gather_crop"] = pipeline(crop=crop_flip_gather)
    e2e["pipeline_gather_crop_spe16"] = pipeline(spe=16, crop=crop_flip_gather)
    if not args.quick:  # more variants, each another model to trace
        e2e["fit_arrays_spe4"] = fit_arrays(4)
        e2e["fit_arrays_jit"] = fit_arrays(1, jit=True)
        e2e["pipeline_spe16"] = pipeline(spe=16)
        e2e["pipeline_gather_crop_jit"] = pipeline(crop=crop_flip_gather, jit=True)
        e2e["pipeline_no_prefetch"] = pipeline(prefetch=False)
    log(f"  prototype fixes end to end ({len(e2e)} contenders, one epoch each) ...")
    re_ = {}
    for name in list(e2e):  # a contender that does not compile (e.g. XLA) is reported, not fatal
        try:
            e2e[name]()
        except Exception as exc:  # noqa: BLE001
            re_[name] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
            del e2e[name]
    r2 = alternate(e2e, args.rounds, warmup=0, log=log)
    for n, r in r2.items():
        r["images_per_s"] = args.n_train / r["median_s"]
        re_[n] = r
    out["end_to_end"] = re_
    return out


# ------------------------------------------------------------------ env sweep (child processes)
ENV_VARIANTS = {
    "default": {},
    "intra2_inter1": {"intra": 2, "inter": 1},
    "intra1_inter1": {"intra": 1, "inter": 1},
    "onednn_off": {"env": {"TF_ENABLE_ONEDNN_OPTS": "0"}},
}


def worker(args):
    """One child of --env-sweep: anchored fit on arrays (spe 1) and a compute-only step."""
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
            cmd = [sys.executable, __file__, "--worker", json.dumps(ENV_VARIANTS[n]),
                   "--n-train", str(args.n_train), "--batch-size", str(args.batch_size),
                   "--width", str(args.width), "--seed", str(args.seed)]
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
            line = [ln for ln in p.stdout.splitlines() if ln.startswith("WORKER_RESULT ")]
            if not line:
                log(f"    {n}: failed: {p.stderr[-400:]}")
                continue
            samples[n].append(json.loads(line[-1].split(" ", 1)[1])["images_per_s"])
            log(f"    round {r + 1} {n}: {samples[n][-1]:.0f} img/s")
    return {n: {"images_per_s_median": statistics.median(s), "samples": s,
                "ratio_vs_default": statistics.median(s) / statistics.median(samples["default"])}
            for n, s in samples.items() if s and samples["default"]}


# ------------------------------------------------------------------ main
def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    log = lambda m: print(m, flush=True)  # noqa: E731
    if torch is not None:
        torch.set_num_threads(os.cpu_count())
    load0 = load_share()
    res = {"cpu_model": cpu_model(), "threads": thread_settings(),
           "versions": {"tensorflow": tf.__version__, "keras": keras.__version__,
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
        train, info = bench_training(args, log)
        res["training"], res["model_check"] = train, info
    if "inference" in sections:
        log("[2] inference, batch %d, K=%d" % (args.batch_size, args.k))
        res["inference"] = bench_inference(args, log)
    if args.profile and "profile" in sections:
        log("[3] profile of one amp-tf step and prototype fixes")
        res["profile"] = bench_profile(args, log)
    if args.env_sweep:
        log("[4] TF thread / oneDNN settings (child processes, alternating)")
        res["env_sweep"] = env_sweep(args, log)
    load1 = load_share()
    if load0 and load1 and load1[0] > load0[0]:
        res["machine_busy_share"] = (load1[1] - load0[1]) / (load1[0] - load0[0])
    res["wall_s"] = time.perf_counter() - _T0
    report(res, args)
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(res, indent=2, default=float))
        print(f"wrote {path}")
    return res


def report(res, args):
    print()
    print(f"CPU: {res['cpu_model']}; threads: {res['threads']}")
    if "training" in res and "inference" in res:
        report_peer(res, args)
    report_profile(res)


def report_peer(res, args):
    tr, inf = res["training"], res["inference"]
    mc = res["model_check"]
    print(f"model: resnet_small width {args.width}, 2-channel anchored input; params TF "
          f"{mc['params_tf']} (trainable {mc['trainable_params_tf']}), torch {mc.get('params_torch', '-')}")
    print(f"\ntraining (batch {args.batch_size}, {args.n_train} images/epoch, {args.rounds} rounds, medians)")
    print(f"  {'contender':<22}{'img/s':>9}{'s/epoch':>9}{'cpu-s/epoch':>13}")
    for n, r in tr.items():
        print(f"  {n:<22}{r['images_per_s']:>9.0f}{r['median_s']:>9.2f}{r['median_cpu_s']:>13.2f}")
    ratios = {}
    if "c_torch" in tr:
        ratios["train_a_fit_arrays/torch"] = tr["a_fit_arrays"]["images_per_s"] / tr["c_torch"]["images_per_s"]
        if "c_torch_noaug" in tr:
            ratios["train_a_fit_arrays/torch_noaug"] = (tr["a_fit_arrays"]["images_per_s"]
                                                       / tr["c_torch_noaug"]["images_per_s"])
        ratios["train_b_pipeline/torch"] = tr["b_train_pipeline"]["images_per_s"] / tr["c_torch"]["images_per_s"]
        ratios["train_b_pipeline/torch_1thread"] = (tr["b_train_pipeline"]["images_per_s"]
                                                   / tr["c_torch_1thread"]["images_per_s"])
        ratios["train_b_pipeline/torch (cpu time)"] = (tr["c_torch"]["median_cpu_s"]
                                                      / tr["b_train_pipeline"]["median_cpu_s"])
    print(f"\ninference (batch {args.batch_size}, K={args.k})")
    for n, r in inf.items():
        print(f"  {n:<22}{r['images_per_s']:>9.0f} img/s")
    if "torch_vanilla" in inf:
        ratios["infer_vanilla_tf/torch"] = inf["tf_vanilla"]["images_per_s"] / inf["torch_vanilla"]["images_per_s"]
        ratios["infer_amp_k_tf/torch_loop"] = (inf["tf_amp_call"]["images_per_s"]
                                              / inf["torch_amp_loop"]["images_per_s"])
        ratios["infer_amp_k_tf/torch_tiled"] = (inf["tf_amp_call"]["images_per_s"]
                                               / inf["torch_amp_tiled"]["images_per_s"])
    res["ratios_amp_tf_over_torch"] = ratios
    if ratios:
        print("\nratios amp-tf / PyTorch (images/s; > 1 = amp-tf faster)")
        for n, v in ratios.items():
            print(f"  {n:<34}{v:>7.3f}")
    else:
        print("\nPyTorch not installed: peer ratio skipped")


def report_profile(res):
    prof = res.get("profile")
    if prof:
        print("\nprofile: compute-only ms per step (fixed batch; Keras steps include T 1 step in 5; T_alone = per T call)")
        for n, v in prof["components_ms_per_step"].items():
            print(f"  {n:<36}{v:>8.2f}")
        print("input pipeline alone: ms per batch")
        for n, v in prof["pipeline_ms_per_batch"].items():
            print(f"  {n:<36}{v:>8.2f}")
        e = prof["end_to_end"]
        print("prototype fixes end to end (img/s; ratio vs the matching library default, wall and cpu time)")
        for n, r in e.items():
            if "error" in r:
                print(f"  {n:<36}  failed: {r['error'][:100]}")
                continue
            base = e.get("fit_arrays_spe1" if n.startswith("fit_arrays") else "pipeline_library", {})
            rat = r["images_per_s"] / base["images_per_s"] if "images_per_s" in base else float("nan")
            crat = base["median_cpu_s"] / r["median_cpu_s"] if "median_cpu_s" in base else float("nan")
            print(f"  {n:<36}{r['images_per_s']:>8.0f}  x{rat:.3f}  cpu x{crat:.3f}")
    if res.get("env_sweep"):
        print("TF thread / oneDNN settings (fit on arrays, child processes)")
        for n, r in res["env_sweep"].items():
            print(f"  {n:<36}{r['images_per_s_median']:>8.0f}  x{r['ratio_vs_default']:.3f}")
    if "machine_busy_share" in res:
        print(f"\nmachine CPU busy (all processes) during the run: {100 * res['machine_busy_share']:.0f}%")
    print(f"wall time {res['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
