"""The peer and internals sections of `benchmarks.speed`.

`bench_peer`: amp-tf vs PyTorch on this CPU, with `benchmarks.speed.peer`'s
contenders (training pipeline and AMP inference). `bench_internals`: the
library's speed choices as ratios (the fused BatchNorm vs Keras'
BatchNormalization; tf.data with amp-tf's fixed tuning vs autotuning).
"""

from __future__ import annotations

import os
import statistics

import keras
import numpy as np
import tensorflow as tf

from amp_tf.method.anchoring import AnchoredModel
from benchmarks.harness.timing import interleaved, rotate
from benchmarks.speed.core import CYCLE, data, make_backbone


# ------------------------------------------------------------------------ peer
def bench_peer(args, log):
    """amp-tf vs PyTorch on this CPU: `benchmarks.speed.peer`'s contenders, run here.

    Training: one epoch per contender in alternation: amp-tf's own pipeline
    (`amp_tf.run.training.epoch_dataset` + `fit`, what the trainers run), `fit` on arrays,
    the PyTorch reference loop (2 threads and 1 thread). Inference at K = 5: the
    `AnchoredPredictor.predict` users call vs PyTorch's loop over anchors.
    """
    from benchmarks.speed import peer, peer_models

    pargs = peer.parse_args([
        "--n-train", str(3200 if args.quick else 6400), "--rounds", str(args.peer_rounds),
        "--k", str(args.k), "--no-profile", "--no-env-sweep", "--seed", str(args.seed)])
    pargs.quick = True  # benchmarks.speed.peer's --quick only drops the no-augmentation torch contender here
    ref = peer_models.load_torch()
    torch = ref.torch if ref is not None else None
    if torch is not None:
        torch.set_num_threads(os.cpu_count())
    log(f"  PyTorch: {torch.__version__ if torch is not None else 'not installed: ratios skipped'}")
    train, info = peer_models.bench_training(pargs, log, ref)
    inf = peer_models.bench_inference(pargs, log, ref)
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
    return {"batchnorm": batchnorm_ratio(args, log), "tf_data": tf_data_ratio(args, log),
            "fit_arrays": fit_arrays_ratio(args, log)}


def batchnorm_ratio(args, log):
    """One training step of the anchored backbone: amp-tf BatchNorm vs Keras' BatchNormalization."""
    x, y = data(args, args.batch_size, args.seed + 5)
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
    return {"timings": r, "ms_per_step": {n: 1e3 * v["median_s"] for n, v in r.items()},
            "speedup": r["step_keras_batchnorm"]["median_s"] / r["step_fused_batchnorm"]["median_s"]}


def fit_arrays_ratio(args, log):
    """`AnchoredModel.fit(x, y)` on numpy arrays, as a user calls it: amp-tf's batches (`array_batches`, no
    autotuner) vs Keras' own array adapter (`keras.Model.fit` on the same model class), whole epochs."""
    b = args.batch_size
    x, y = data(args, b * (32 if args.quick else 64), args.seed + 7)
    models = {}
    for name in ("fit_arrays_amp_tf", "fit_arrays_keras_adapter"):
        m = AnchoredModel(make_backbone(args, True, args.seed), consistency="all", consistency_every=CYCLE,
                          seed=args.seed)
        m.compile(optimizer=keras.optimizers.SGD(learning_rate=0.01, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        models[name] = m
    fits = {"fit_arrays_amp_tf": lambda: models["fit_arrays_amp_tf"].fit(x, y, batch_size=b, epochs=1, verbose=0),
            "fit_arrays_keras_adapter": lambda: keras.Model.fit(models["fit_arrays_keras_adapter"], x, y,
                                                                batch_size=b, epochs=1, verbose=0)}
    rounds = 6 if args.quick else 10
    log(f"  AnchoredModel.fit on arrays ({len(x)} images): amp-tf's batches vs Keras' array adapter, "
        f"{rounds} rounds ...")
    for f in fits.values():
        f()  # warm-up (traces)
    samples, _ = rotate(fits, rounds)
    return {"images": len(x), "epochs_s": samples, "median_s": {n: statistics.median(v) for n, v in samples.items()},
            "mean_s": {n: statistics.fmean(v) for n, v in samples.items()},
            "speedup": statistics.median(samples["fit_arrays_keras_adapter"])
            / statistics.median(samples["fit_arrays_amp_tf"]),
            "speedup_mean": statistics.fmean(samples["fit_arrays_keras_adapter"])
            / statistics.fmean(samples["fit_arrays_amp_tf"])}


def tf_data_ratio(args, log):
    """Whole fit epochs on amp-tf's pipeline: fixed tuning (the library) vs tf.data autotuning."""
    from amp_tf.data import tfdata
    from amp_tf.run.training import epoch_dataset

    b = args.batch_size
    x, y = data(args, b * (25 if args.quick else 50), args.seed + 6)
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
    for name in fits:
        fits[name]()  # warm-up (traces)
    samples, _ = rotate(fits, rounds)  # two contenders: A B, B A, A B, ...
    fastest = min(min(v) for v in samples.values())
    return {
        "steps_per_epoch": st, "autotune_enabled": {"epoch_fixed_tuning": ds_fixed.options().autotune.enabled,
                                                    "epoch_autotune": ds_auto.options().autotune.enabled},
        "epochs_s": samples,
        "median_s": {n: statistics.median(v) for n, v in samples.items()},
        "max_s": {n: max(v) for n, v in samples.items()},
        "slow_epochs": {n: sum(t > 1.3 * fastest for t in v) for n, v in samples.items()},
        "speedup": statistics.median(samples["epoch_autotune"]) / statistics.median(samples["epoch_fixed_tuning"]),
        "tfdata_settings": {"map_calls_per_batch": tfdata.map_calls(per_batch=True), "prefetch": tfdata.PREFETCH},
    }
