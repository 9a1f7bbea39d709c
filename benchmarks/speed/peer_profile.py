"""The profile section of `benchmarks.speed.peer`: where one amp-tf anchored step goes.

Compute-only components on a fixed batch (anchoring, T, forward/backward,
optimizer, Keras overhead; the torch reference beside them when installed), the
input pipeline alone, and prototype fixes end to end (steps_per_execution,
jit_compile, a gather-based crop + flip, prefetch, fit on arrays through a
tf.data pipeline with autotuning off), each as one epoch in alternation.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

import amp_tf.run.training as amp_training
from amp_tf.data.tfdata import finish
from amp_tf.method.anchoring import anchor_inputs, permute_batch
from amp_tf.method.augment import ConsistencyAugment
from benchmarks.harness.timing import alternate, repeat_to, sync
from benchmarks.speed.peer_models import (
    CYCLE,
    PAD,
    anchored_model,
    compile_like_train,
    crop_flip_gather,
    epoch_ds,
    fresh_compile,
    make_data,
    tf_backbone,
)


def bench_profile(args, log, ref=None):
    """Where the time of one amp-tf anchored step goes, and prototype fixes, as ratios.

    `ref`: the PyTorch reference (`benchmarks.speed.peer_torch`) or None.
    """
    return {"components_ms_per_step": components(args, log, ref),
            "pipeline_ms_per_batch": input_pipeline(args, log),
            "end_to_end": end_to_end(args, log)}


def cyc(f, n=CYCLE):
    """Calls `f` n times, then syncs; `.steps` = n."""
    def run():
        for _ in range(n):
            o = f()
        sync(o)
    run.steps = n
    return run


def keras_step(model, x, y):
    """A cycle of CYCLE compiled Keras train steps on a fixed batch (T at its real 1-in-5 frequency)."""
    model.train_on_batch(x[:8], y[:8])
    it = iter(tf.data.Dataset.from_tensors((tf.constant(x), tf.constant(y))).repeat())
    fn = model.train_function
    return cyc(lambda: fn(it))


def components(args, log, ref=None):
    """Compute-only ms per step of the parts of an anchored step, on a fixed batch (no input pipeline)."""
    x, y = make_data(args.batch_size, args.seed + 3)
    xa = np.concatenate([(x - 127.5) / 127.5, (x - x[::-1]) / 127.5], -1).astype("float32")
    comp = tf_components(args, x, y, xa)
    if ref is not None:
        comp.update(torch_components(args, ref, x, y, xa))
    log("  compute-only components (fixed batch, per step = cycle of 5 / 5) ...")
    calls, nsteps = {}, {}
    for n in list(comp):
        nsteps[n] = getattr(comp[n], "steps", CYCLE)
        comp[n], calls[n] = repeat_to(comp[n], 0.4 if args.quick else 0.8)
    res = alternate(comp, 2 * args.rounds + 1, warmup=0)
    return {n: 1e3 * r["median_s"] / (calls[n] * nsteps[n]) for n, r in res.items()}


def tf_components(args, x, y, xa):
    """`{name: cycle}`: Keras steps with and without T, a pre-anchored backbone step, its parts, T, anchoring."""
    xt, yt, xa = tf.constant(x), tf.constant(y), tf.constant(xa)
    full = fresh_compile(anchored_model(tf_backbone(args, True, args.seed)))
    no_t = fresh_compile(anchored_model(tf_backbone(args, True, args.seed), consistency="none"))
    bb = tf_backbone(args, True, args.seed)
    van2 = fresh_compile(keras.models.clone_model(bb))
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
    return {
        "anchored_step_keras": keras_step(full, x, y),
        "anchored_step_noT_keras": keras_step(no_t, x, y),
        "backbone_step_keras_preanchored": keras_step(van2, xa.numpy(), y),
        "fwd_bwd_apply_tf_function": cyc(lambda: fwd_bwd_apply(xa, yt)),
        "fwd_bwd_tf_function": cyc(lambda: fwd_bwd(xa, yt)),
        "fwd_only_training": cyc(lambda: fwd_only(xa)),
        "T_alone_per_call": cyc(lambda: t_fn(xt, seed)),
        "anchor_perm_concat": cyc(lambda: anchor_fn(xt, seed)),
    }


def torch_components(args, ref, x, y, xa):
    """`{name: cycle}` of the PyTorch reference: a full anchored step (not with --quick), a
    pre-anchored forward/backward/step, T alone."""
    torch, b = ref.torch, args.batch_size
    tr = ref.TorchTrainer(args, x, y, seed=args.seed, cycle=CYCLE, pad=PAD)
    xb = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
    yb = torch.from_numpy(y.astype("int64"))
    xin = torch.from_numpy(xa).permute(0, 3, 1, 2).contiguous()

    def step(inp):
        out_ = tr.model(inp)
        loss = ref.F.cross_entropy(out_, yb)
        tr.opt.zero_grad(set_to_none=True)
        loss.backward()
        tr.opt.step()
        return loss

    def torch_full():
        c = xb[torch.randperm(b, generator=tr.g)]
        view = ref.torch_T(c, tr.g) if tr.step % CYCLE == 0 else c
        tr.step += 1
        return step(torch.cat([(view - 127.5) / 127.5, (xb - c) / 127.5], 1))
    comp = {}
    if not args.quick:
        comp["torch_anchored_step"] = cyc(lambda: torch_full().detach().numpy())
    comp["torch_fwd_bwd_apply_preanchored"] = cyc(lambda: step(xin).detach().numpy(), 1)
    comp["torch_T_alone_per_call"] = cyc(lambda: ref.torch_T(xb, tr.g).numpy(), 1)
    return comp


def input_pipeline(args, log):
    """ms per batch of iterating one epoch of `epoch_dataset`: the library's, prototypes, no augmentation."""
    b = args.batch_size
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
    return {n: 1e3 * r["median_s"] / steps for n, r in rp.items()}


def end_to_end(args, log):
    """Prototype fixes end to end: one fit epoch each, alternating (a contender that fails is reported)."""
    b, steps = args.batch_size, args.n_train // args.batch_size
    x, y = make_data(args.n_train, args.seed)
    e2e = {}

    def fit_arrays(spe=1, jit=False):
        m = fresh_compile(anchored_model(tf_backbone(args, True, args.seed)), spe=spe, jit=jit)
        return lambda: m.fit(x, y, batch_size=b, epochs=1, verbose=0)

    def fit_arrays_autotune_off():
        # the same arrays through tf.data with amp-tf's settings (amp_tf.data.tfdata: autotuning off):
        # Keras' array adapter prefetches with AUTOTUNE, and its iterator's teardown stalls the epoch end
        m = fresh_compile(anchored_model(tf_backbone(args, True, args.seed)))

        def run():
            ds = finish(tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=args.seed).batch(b))
            return m.fit(ds, epochs=1, verbose=0)
        return run

    def pipeline(spe=1, crop=None, jit=False, prefetch=True):
        m = compile_like_train(anchored_model(tf_backbone(args, True, args.seed)), args, steps, spe=spe, jit=jit)
        ds, st = epoch_ds(args, x, y, 0, crop=crop, prefetch=prefetch)
        return lambda: m.fit(ds, epochs=1, steps_per_epoch=st, verbose=0, shuffle=False)

    e2e["fit_arrays_spe1"] = fit_arrays(1)
    e2e["fit_arrays_spe16"] = fit_arrays(16)
    e2e["fit_arrays_autotune_off"] = fit_arrays_autotune_off()
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
    return re_
