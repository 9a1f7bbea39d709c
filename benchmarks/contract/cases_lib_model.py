"""Library cases, group ``model``: anchored_model and finetune_anchored on a user's Keras models."""
from __future__ import annotations

import numpy as np

from benchmarks.contract import libkit as K
from benchmarks.contract.spec import lib

A = "anchored_model"
T = "finetune_anchored"


def _anchor(model, **kw):
    from amp_tf import anchored_model

    return anchored_model(model, **kw)


@lib("model", A, "a model ending in softmax", names=("softmax",))
def anch_softmax(ctx):
    return _anchor(K.conv(head="softmax"))


@lib("model", A, "an MLP (Flatten -> Dense) over the image", names=("dense|flatten",))
def anch_mlp(ctx):
    return _anchor(K.mlp())


@lib("model", A, "a Sequential model never built (no Input)", names=("input|built|build",))
def anch_unbuilt(ctx):
    import keras

    return _anchor(keras.Sequential([keras.layers.Conv2D(4, 3), keras.layers.GlobalAveragePooling2D(),
                                     keras.layers.Dense(10)]))


@lib("model", A, "a model name ('resnet50') instead of a model", names=("model",))
def anch_text(ctx):
    return _anchor("resnet50")


@lib("model", A, "a Conv2D layer instead of a model", names=("model",))
def anch_layer(ctx):
    import keras

    return _anchor(keras.layers.Conv2D(4, 3))


@lib("model", A, "mean/std of 3 channels for a 1-channel model", names=("mean|channel",))
def anch_mean_channels(ctx):
    return _anchor(K.conv(pre=False), mean=[1.0, 2.0, 3.0], std=[1.0, 1.0, 1.0])


@lib("model", A, "a model with BatchNormalization before the first Conv2D", expect="either",
     names=("batchnorm|batch_normalization|conv2d",))
def anch_bn_first(ctx):
    import keras

    inp = keras.Input((28, 28, 1))
    z = keras.layers.BatchNormalization()(inp)
    z = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(8, 3)(z))
    m = keras.Model(inp, keras.layers.Dense(10)(z))
    a = _anchor(m, mean=[72.9], std=[90.0])
    x = K.images()[0][:16]
    return K.ok(K.same(a.predict(x, verbose=0), m.predict(x.astype(np.float32), verbose=0), 1e-3),
                "anchored output equals the model's")


@lib("model", A, "a model whose output is an image (a conv head, no Dense)", expect="either",
     names=("output|logits|classes",))
def anch_conv_head(ctx):
    import keras

    inp = keras.Input((28, 28, 1))
    m = keras.Model(inp, keras.layers.Conv2D(10, 3, padding="same")(keras.layers.Rescaling(1 / 255.0)(inp)))
    out = _anchor(m).predict(K.images()[0][:2], verbose=0)
    return K.ok(True, f"anchored a model whose output is {out.shape}")


@lib("model", A, "a plain model with Rescaling(1/255): the anchored model computes the same function", expect="ok")
def anch_exact(ctx):
    m = K.conv()
    a = _anchor(m)
    x = K.images()[0][:32]
    return K.ok(K.same(a.predict(x, verbose=0), m.predict(x.astype(np.float32), verbose=0), 1e-3), "exact")


@lib("model", A, "a model whose weights hold NaN", expect="either", names=("nan",))
def anch_nan(ctx):
    m = K.conv()
    w = m.get_layer("stem").get_weights()
    w[0][0, 0, 0, 0] = np.nan
    m.get_layer("stem").set_weights(w)
    out = _anchor(m).predict(K.images()[0][:4], verbose=0)
    return K.ok(not np.isnan(out).any(), f"anchored; outputs {'hold NaN' if np.isnan(out).any() else 'finite'}")


@lib("model", A, "a model that takes any image size (None, None, 1)", expect="ok")
def anch_anysize(ctx):
    m = K.conv((None, None, 1))
    x = K.images()[0][:8]
    return K.ok(K.same(_anchor(m).predict(x, verbose=0), m.predict(x.astype(np.float32), verbose=0), 1e-3), "exact")


def _ft(model=None, x=None, y=None, **kw):
    from amp_tf import finetune_anchored

    xs, ys = K.images()
    x = xs[:128] if x is None else x
    y = ys[:128] if y is None else y
    kw.setdefault("epochs", 1)
    kw.setdefault("batch_size", 32)
    m, h = finetune_anchored(K.conv() if model is None else model, x, y, verbose=0, backup=False, **kw)
    return f"fine-tuned: loss {h.history['loss'][-1]:.4g}"


@lib("model", T, "epochs=-1", names=("epochs",))
def ft_epochs_neg(ctx):
    return _ft(epochs=-1)


@lib("model", T, "epochs=1.5", names=("epochs",))
def ft_epochs_float(ctx):
    return _ft(epochs=1.5)


@lib("model", T, "lr=0", names=("lr",))
def ft_lr0(ctx):
    return _ft(lr=0.0)


@lib("model", T, "lr=nan", names=("lr",))
def ft_lr_nan(ctx):
    return _ft(lr=float("nan"))


@lib("model", T, "batch_size=0", names=("batch_size",))
def ft_batch0(ctx):
    return _ft(batch_size=0)


@lib("model", T, "32x32 images for a 28x28 model", names=("32", "28"))
def ft_shape(ctx):
    return _ft(x=np.zeros((64, 32, 32, 1), np.uint8), y=np.zeros(64, np.int64))


@lib("model", T, "a label 10 for a 10-class model", names=("label|class",))
def ft_label_range(ctx):
    y = K.images()[1][:128].copy()
    y[0] = 10
    return _ft(y=y)


@lib("model", T, "one-hot labels", names=("label|one-hot|y",))
def ft_onehot(ctx):
    return _ft(y=np.eye(10)[K.images()[1][:128]])


@lib("model", T, "`x / 255`", names=("x / 255",))
def ft_x255(ctx):
    return _ft(x=K.images()[0][:128] / 255.0)


@lib("model", T, "10 images with batch_size=128", expect="either", names=("batch",))
def ft_few(ctx):
    return K.ok(True, _ft(x=K.images()[0][:10], y=K.images()[1][:10], batch_size=128))


@lib("model", T, "a 5-class model and labels 0..9", names=("5", "10|class"))
def ft_classes(ctx):
    return _ft(model=K.conv(classes=5))


@lib("model", T, "num_classes=5 for a 10-class model", names=("num_classes|5",))
def ft_num_classes(ctx):
    return _ft(num_classes=5)


@lib("model", T, "(N, 28, 28) images (no channel axis)", names=("shape|channel|(n, h, w, c)|28, 28",))
def ft_rank3(ctx):
    return _ft(x=K.images()[0][:128, ..., 0])


@lib("model", T, "learning_rate=0.01 (the Keras spelling; the keyword is lr)", names=("learning_rate",),
     check=lambda ctx, r: ("obscure", "Python's TypeError of an internal class (TrainConfig); no word of lr=")
     if "TrainConfig" in str(r.get("answer")) else None)
def ft_unknown_kw(ctx):
    return _ft(learning_rate=0.01)


@lib("model", T, "a model whose weights hold NaN", names=("nan",),
     check=lambda ctx, r: ("wrong", "fine-tuned a model with NaN weights without a word: " + str(r.get("answer")))
     if not r.get("raised") else None)
def ft_nan_model(ctx):
    m = K.conv(features=True)
    w = m.get_layer("stem").get_weights()
    w[0][0, 0, 0, 0] = np.nan
    m.get_layer("stem").set_weights(w)
    note = _ft(model=m)
    return note + f"; NaN left in the fine-tuned stem: {bool(np.isnan(m.get_layer('stem').get_weights()[0]).any())}"


@lib("model", T, "a softmax model (finetune's own check)", names=("softmax",), row=64)
def ft_softmax(ctx):
    return _ft(model=K.conv(head="softmax"))


@lib("model", T, "a model that takes any image size", expect="ok", row=133)
def ft_anysize(ctx):
    note = _ft(model=K.conv((None, None, 1)))
    return K.ok("nan" not in note, note)
