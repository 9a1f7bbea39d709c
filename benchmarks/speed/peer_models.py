"""The contenders of `benchmarks.speed.peer` on the TensorFlow side, and the two timed sections.

Data and models (`make_data`, `tf_backbone`, `anchored_model`), compiling as
`amp_tf.run.training.train` does, a prototype gather-based crop + flip, and the
sections `bench_training` / `bench_inference`, which take the PyTorch reference
module (`load_torch()`, `benchmarks.speed.peer_torch`) or None.
"""

from __future__ import annotations

import contextlib
import inspect
import os

import keras
import numpy as np
import tensorflow as tf

import amp_tf.run.training as amp_training
from amp_tf.method.anchoring import AnchoredModel
from amp_tf.models import build_backbone
from amp_tf.models.resnet import resnet_small
from amp_tf.method.predictor import AnchoredPredictor
from benchmarks.harness.timing import alternate, repeat_to, sync

CYCLE = 5  # T on every 5th step
PAD = 4


def load_torch():
    """The PyTorch reference (`benchmarks.speed.peer_torch`), or None when torch is not installed."""
    try:
        from benchmarks.speed import peer_torch
    except ImportError:  # optional peer
        return None
    return peer_torch


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
    """`amp_tf.run.training.compile_model` (SGD 0.1/0.9/5e-4, sparse CE, accuracy) + options."""
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
    """Drop-in for `amp_tf.run.training._crop_flip`: the same per-sample random crop (zero
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



# ------------------------------------------------------------------ sections
def bench_training(args, log, ref=None):
    """One epoch per contender, alternating: fit on arrays, amp-tf's pipeline, the torch loop (`ref`)."""
    torch = ref.torch if ref is not None else None
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
        trainer = ref.TorchTrainer(args, x, y, augment=True, seed=args.seed, cycle=CYCLE, pad=PAD)
        trainer_na = ref.TorchTrainer(args, x, y, augment=False, seed=args.seed, cycle=CYCLE, pad=PAD)
        fns["c_torch"] = trainer.epoch
        if not args.quick:
            fns["c_torch_noaug"] = trainer_na.epoch
        trainer_1t = ref.TorchTrainer(args, x, y, augment=True, seed=args.seed, cycle=CYCLE, pad=PAD)

        def one_thread():
            torch.set_num_threads(1)
            try:
                trainer_1t.epoch()
            finally:
                torch.set_num_threads(os.cpu_count())
        fns["c_torch_1thread"] = one_thread
        info["params_torch"] = ref.torch_param_count(trainer.model)
    info["params_tf"] = int(model_a.backbone.count_params())
    info["trainable_params_tf"] = int(sum(np.prod(v.shape) for v in model_a.backbone.trainable_weights))
    log(f"  {steps} steps x batch {b} per epoch; warm-up epoch, then {args.rounds} alternating rounds")
    res = alternate(fns, args.rounds, log=log)
    for r in res.values():
        r["images_per_s"] = args.n_train / r["median_s"]
    return res, info


def bench_inference(args, log, ref=None):
    """Images/s at batch B: vanilla and AMP at K anchors, amp-tf vs the torch reference (`ref`)."""
    torch = ref.torch if ref is not None else None
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
        pred = AnchoredPredictor(anchored, anchors, mean=127.5, std=127.5)  # raw-pixel API: normalises inside
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
        tv = ref.TorchResNetSmall(1, args.width).eval()
        ta = ref.TorchResNetSmall(2, args.width).eval()
        xtt = torch.from_numpy(xn).permute(0, 3, 1, 2).contiguous()
        ct = torch.from_numpy(((anchors - 127.5) / 127.5).astype("float32")).permute(0, 3, 1, 2).contiguous()

        def t_van():
            with torch.inference_mode():
                return tv(xtt).numpy()

        def t_loop():
            with torch.inference_mode():
                outs = [ta(torch.cat([c.expand_as(xtt), xtt - c], 1)) for c in ct[:, None]]
                return ref.torch_amp_outputs(torch.stack(outs))["amp_score"].numpy()

        def t_tiled():
            with torch.inference_mode():
                rows = torch.cat([ct[:, None].expand(k, b, 1, 28, 28), (xtt[None] - ct[:, None])], 2)
                out = ta(rows.reshape(k * b, 2, 28, 28)).reshape(k, b, -1)
                return ref.torch_amp_outputs(out)["amp_score"].numpy()
        fns.update(torch_vanilla=t_van, torch_amp_loop=t_loop, torch_amp_tiled=t_tiled)
    calls = {}
    for n in list(fns):
        fns[n], calls[n] = repeat_to(fns[n], min_s)
    res = alternate(fns, 2 * args.rounds + 1, warmup=0)
    for n, r in res.items():
        r["calls_per_sample"] = calls[n]
        r["images_per_s"] = b * calls[n] / r["median_s"]
    return res

