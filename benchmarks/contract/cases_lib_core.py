"""Library cases, group ``core``: AnchoredPredictor.predict, select_anchors, AnchoredModel (fit, predict,
evaluate, call), anchored_model and finetune_anchored. Group ``fixtures`` makes the model files."""
from __future__ import annotations

import numpy as np

from benchmarks.contract import libkit as K
from benchmarks.contract.spec import lib


@lib("fixtures", "keras fixtures", "the probe's model files", expect="ok", id="zz-fixtures-models", timeout=180)
def _fixtures(ctx):
    return K.ok(True, ", ".join(K.make_models(ctx["m"])))


def _x(n=64):
    return K.images()[0][:n]


def _ref(ctx, x):
    return K.predictor(ctx).predict(x)["amp_score"]


# --- AnchoredPredictor.predict ----------------------------------------------------------------------------
P = "AnchoredPredictor.predict"


def _same_as_uint8(ctx, x_other, what):
    out = K.predictor(ctx).predict(x_other)["amp_score"]
    return K.ok(K.same(out, _ref(ctx, _x(len(out)))), f"{what}: amp_score equals the uint8 answer")


@lib("core", P, "uint16 images with values 0..255", expect="ok")
def pred_uint16(ctx):
    return _same_as_uint8(ctx, _x().astype(np.uint16), "uint16")


@lib("core", P, "int64 images", expect="ok")
def pred_int64(ctx):
    return _same_as_uint8(ctx, _x().astype(np.int64), "int64")


@lib("core", P, "float16 images in 0..255", expect="ok")
def pred_float16(ctx):
    out = K.predictor(ctx).predict(_x().astype(np.float16))["amp_score"]
    return K.ok(K.same(out, _ref(ctx, _x()), 1e-2), "float16 close to uint8")


@lib("core", P, "a tf.Tensor of uint8 images", expect="ok")
def pred_tensor(ctx):
    import tensorflow as tf

    return _same_as_uint8(ctx, tf.constant(_x()), "tf.Tensor")


@lib("core", P, "a Python list of (28, 28, 1) arrays", expect="either", names=("images",))
def pred_list(ctx):
    return _same_as_uint8(ctx, list(_x(8)), "list")


@lib("core", P, "a tf.data.Dataset of images", expect="either", names=("images|dataset",))
def pred_dataset(ctx):
    import tensorflow as tf

    return _same_as_uint8(ctx, tf.data.Dataset.from_tensor_slices(_x(8)).batch(4), "dataset")


@lib("core", P, "boolean images (a mask)", names=("bool|dtype",))
def pred_bool(ctx):
    return K.predictor(ctx).predict(_x() > 128)


@lib("core", P, "(N, 28, 28) images without the channel axis", names=("(n, h, w, c)|shape|channel",))
def pred_no_channel(ctx):
    return K.predictor(ctx).predict(_x()[..., 0])


@lib("core", P, "an image with +Inf", names=("inf",))
def pred_inf(ctx):
    x = _x().astype(np.float32)
    x[1, 2, 2, 0] = np.inf
    return K.predictor(ctx).predict(x)


@lib("core", P, "batch_size=0", names=("batch_size",))
def pred_batch0(ctx):
    return K.predictor(ctx).predict(_x(), batch_size=0)


@lib("core", P, "batch_size=-4", names=("batch_size",))
def pred_batch_neg(ctx):
    return K.predictor(ctx).predict(_x(), batch_size=-4)


@lib("core", P, "batch_size=2.5", expect="either", names=("batch_size",))
def pred_batch_float(ctx):
    out = K.predictor(ctx).predict(_x(), batch_size=2.5)["amp_score"]
    return K.ok(K.same(out, _ref(ctx, _x())), "accepted; the scores are right")


@lib("core", P, "an object array", names=("dtype|object|images",))
def pred_object(ctx):
    return K.predictor(ctx).predict(np.array(list(_x(4)) + [None], dtype=object)[:4])


@lib("core", P, "an array of strings", names=("dtype|str|images",))
def pred_strings(ctx):
    return K.predictor(ctx).predict(np.full((2, 28, 28, 1), "a"))


@lib("core", P, "complex images", names=("complex|dtype",))
def pred_complex(ctx):
    return K.predictor(ctx).predict(_x().astype(np.complex64))


@lib("core", P, "1000 images with batch_size=7", expect="ok")
def pred_odd_batches(ctx):
    x = np.concatenate([K.images()[0]] * 2)[:1000]
    return K.ok(K.same(K.predictor(ctx).predict(x, batch_size=7)["amp_score"], _ref(ctx, x)), "batches of 7 agree")


@lib("core", P, "`x / 255`", names=("x / 255",), row=1)
def pred_x255(ctx):
    return K.predictor(ctx).predict(_x() / 255.0)


@lib("core", P, "32x32 images for a 28x28 model", names=("28, 28",), row=7)
def pred_32(ctx):
    return K.predictor(ctx).predict(np.zeros((2, 32, 32, 1), np.uint8))


@lib("core", P, "an empty array", names=("empty",), row=9)
def pred_empty(ctx):
    return K.predictor(ctx).predict(np.zeros((0, 28, 28, 1), np.uint8))


# --- select_anchors -------------------------------------------------------------------------------------
S = "select_anchors"


def _sel(k, **kw):
    from amp_tf import select_anchors

    return select_anchors(kw.pop("images", K.images()[0][:256]), k, **kw)


@lib("core", S, "k=0", names=("k",))
def sel_k0(ctx):
    return _sel(0)


@lib("core", S, "k=-3", names=("k",))
def sel_kneg(ctx):
    return _sel(-3)


@lib("core", S, "k=5.7", names=("k",))
def sel_kfloat(ctx):
    return f"picked {len(_sel(5.7))} anchors"


@lib("core", S, "k='5' (text)", names=("k",))
def sel_ktext(ctx):
    return f"picked {len(_sel('5'))} anchors"


@lib("core", S, "k=True", names=("k",))
def sel_kbool(ctx):
    return f"picked {len(_sel(True))} anchors"


@lib("core", S, "labels of another length than the images", names=("labels",))
def sel_labels_len(ctx):
    return f"picked {len(_sel(5, labels=np.arange(10) % 3))}"


@lib("core", S, "labels of a single class", expect="ok")
def sel_one_class(ctx):
    a = _sel(5, labels=np.zeros(256, np.int64))
    return K.ok(len(a) == 5, f"{len(a)} anchors")


@lib("core", S, "(N, 28, 28) images (no channel axis)", names=("shape|(n, h, w, c)|channel",))
def sel_rank3(ctx):
    return f"anchors of shape {_sel(5, images=K.images()[0][:64, ..., 0]).shape}"


@lib("core", S, "k=2 from exactly 2 images", expect="ok")
def sel_two(ctx):
    return K.ok(len(_sel(2, images=K.images()[0][:2])) == 2, "2 anchors")


@lib("core", S, "seed=-1", expect="either", names=("seed",))
def sel_seed_neg(ctx):
    return K.ok(len(_sel(5, seed=-1)) == 5, "5 anchors")


@lib("core", S, "images with a NaN", names=("nan",))
def sel_nan(ctx):
    x = K.images()[0][:64].astype(np.float32)
    x[3, 1, 1, 0] = np.nan
    return _sel(5, images=x)


# --- AnchoredModel ---------------------------------------------------------------------------------------
AM = "AnchoredModel.fit"


def _model(compile_=True, **kw):
    import keras

    from amp_tf import AnchoredModel, build_backbone
    from amp_tf.data import channel_stats

    x = K.images()[0][:256]
    mean, std = channel_stats(x)
    m = AnchoredModel(build_backbone("resnet_small", (28, 28, 1), 10, width=4), mean=kw.pop("mean", mean),
                      std=kw.pop("std", std), **kw)
    if compile_:
        m.compile(keras.optimizers.SGD(0.05, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return m


def _fit(y=None, x=None, **kw):
    xs, ys = K.images()
    x = xs[:128] if x is None else x
    y = ys[:128] if y is None else y
    h = _model().fit(x, y, batch_size=kw.pop("batch_size", 64), epochs=kw.pop("epochs", 1), verbose=0, **kw)
    return f"trained: loss {h.history.get('loss', ['-'])[-1]}"


@lib("core", AM, "one-hot labels", names=("label|one-hot|y",))
def fit_onehot(ctx):
    return _fit(y=np.eye(10)[K.images()[1][:128]])


@lib("core", AM, "string labels", names=("label|y",))
def fit_strings(ctx):
    return _fit(y=np.array([f"c{v}" for v in K.images()[1][:128]]))


@lib("core", AM, "a tf.data set of images only (no labels)", names=("label|y",))
def fit_no_labels(ctx):
    import tensorflow as tf

    return _model().fit(tf.data.Dataset.from_tensor_slices(K.images()[0][:128]).batch(32), epochs=1, verbose=0)


@lib("core", AM, "labels of shape (N, 1)", expect="ok")
def fit_column_labels(ctx):
    note = _fit(y=K.images()[1][:128, None])
    return K.ok("nan" not in note, note)


@lib("core", AM, "labels as floats with whole values (3.0)", expect="ok")
def fit_float_whole(ctx):
    note = _fit(y=K.images()[1][:128].astype(np.float32))
    return K.ok("nan" not in note, note)


@lib("core", AM, "a label -1", names=("label|y",))
def fit_label_neg(ctx):
    y = K.images()[1][:128].copy()
    y[5] = -1
    return _fit(y=y)


@lib("core", AM, "120 labels for 128 images", names=("128|120|size|length",))
def fit_len_mismatch(ctx):
    return _fit(y=K.images()[1][:120])


@lib("core", AM, "batch_size=0", expect="either", names=("batch_size",))
def fit_batch0(ctx):
    return _fit(batch_size=0)


@lib("core", AM, "validation_split=0.25", expect="ok")
def fit_val_split(ctx):
    note = _fit(validation_split=0.25)
    return K.ok("nan" not in note, note)


@lib("core", AM, "16-bit images (0..65535)", names=("255",))
def fit_uint16(ctx):
    return _fit(x=K.images()[0][:128].astype(np.uint16) * 257)


def _from_logits_check(ctx, r):
    if r.get("raised"):
        return None
    acc = [float(v.split()[0]) for v in str(r.get("answer")).split("accuracy ")[1].split(" vs ")]
    if acc[0] < 0.75 * acc[1]:
        return "wrong", f"trains silently to garbage: {r.get('answer')}"
    return "obscure", f"accepted without a word (the model outputs logits): {r.get('answer')}"


def _accuracies(*losses):
    import keras

    xs, ys = K.images()
    accs = []
    for loss in losses:
        keras.utils.set_random_seed(0)
        m = _model(compile_=False)
        m.compile(keras.optimizers.SGD(0.05, momentum=0.9), loss, metrics=["accuracy"])
        m.fit(xs[:384], ys[:384], batch_size=64, epochs=3, verbose=0)
        accs.append(m.evaluate(xs[384:512], ys[384:512], verbose=0)[1])
    return accs


@lib("core", AM, "compiled with a loss that expects probabilities (from_logits=False)",
     names=("from_logits|logits",), check=_from_logits_check,
     note="was the name 'sparse_categorical_crossentropy', which AnchoredModel.compile reads as from_logits=True "
          "(fit-loss-name); the explicit from_logits=False loss is the input that expects probabilities")
def fit_from_logits_false(ctx):
    import keras

    accs = _accuracies(keras.losses.SparseCategoricalCrossentropy(from_logits=False),
                       keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return f"trained; held-out accuracy {accs[0]:.3f} vs {accs[1]:.3f} with from_logits=True"


@lib("core", AM, "compiled with the name 'sparse_categorical_crossentropy' (Keras: from_logits=False)", expect="ok")
def fit_loss_name(ctx):
    import keras

    accs = _accuracies("sparse_categorical_crossentropy", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return K.ok(abs(accs[0] - accs[1]) < 1e-6, f"held-out accuracy {accs[0]:.3f} vs {accs[1]:.3f} with "
                "SparseCategoricalCrossentropy(from_logits=True)")


@lib("core", "AnchoredModel", "mean/std of 3 channels for a 1-channel backbone", names=("mean|channel",))
def am_mean_channels(ctx):
    return _model(mean=[120.0, 120.0, 120.0], std=[60.0, 60.0, 60.0])


@lib("core", "AnchoredModel", "mean=NaN", names=("mean|nan",))
def am_mean_nan(ctx):
    return _model(mean=[float("nan")], std=[60.0])


@lib("core", "AnchoredModel", "a negative std", names=("std",))
def am_std_neg(ctx):
    return _model(mean=[72.9], std=[-60.0])


@lib("core", "AnchoredModel", "backbone='resnet_small' (a name)", names=("backbone",))
def am_backbone_text(ctx):
    from amp_tf import AnchoredModel

    return AnchoredModel("resnet_small")


@lib("core", "AnchoredModel", "consistency_every=1.5", names=("consistency_every",),
     check=lambda ctx, r: ("obscure", "a fractional consistency_every is accepted without a word (the CLI takes ints)")
     if not r.get("raised") else None)
def am_every_float(ctx):
    return _model(consistency_every=1.5)


@lib("core", "AnchoredModel.predict", "`x / 255`", names=("x / 255",))
def am_predict_x255(ctx):
    return K.run(ctx["run"]).anchored.predict(_x() / 255.0, verbose=0)


@lib("core", "AnchoredModel.evaluate", "`x / 255` with labels", names=("x / 255|255",))
def am_evaluate_x255(ctx):
    r = K.run(ctx["run"])
    m = r.anchored
    import keras

    m.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    xs, ys = K.images()
    good = m.evaluate(xs[:256], ys[:256], verbose=0)
    bad = m.evaluate(xs[:256] / 255.0, ys[:256], verbose=0)
    return f"evaluate: accuracy {good[1]:.3f} on raw pixels, {bad[1]:.3f} on x / 255 (no error)"


@lib("core", "AnchoredModel.__call__", "`x / 255`", names=("x / 255",))
def am_call_x255(ctx):
    out = K.run(ctx["run"]).anchored(_x(8) / 255.0)
    return f"returned logits of shape {tuple(out.shape)}"


@lib("core", "vanilla model (a run's vanilla.keras)", "called on `x / 255`", names=("x / 255",))
def vanilla_call_x255(ctx):
    out = K.run(ctx["run"]).vanilla.predict(_x(8) / 255.0, verbose=0)
    return f"returned logits of shape {out.shape}"
