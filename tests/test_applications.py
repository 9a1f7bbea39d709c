"""Bring your own model: `anchored_model` / `finetune_anchored` on Keras models we did not build.

Fast tests use small models of the shapes that matter (a keras.applications
family with its default preprocessing, a Rescaling-led Sequential, a
ConvNeXt-like graph with op layers); the slow test builds every
keras.applications family and generates docs/applications.md:

    AMP_TF_WRITE_DOCS=1 .venv/bin/python -m pytest -q -m slow tests/test_applications.py
"""
import os
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from amp_tf.export import export_for_serving
from amp_tf.models import anchor_backbone, anchored_model, model_normalization
from amp_tf.predictor import AnchoredPredictor
from amp_tf.training import finetune_anchored

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "applications.md"


def raw_pixels(rng, shape):
    return rng.integers(0, 256, shape).astype("float32")


def last_kernel_layer(model):
    for layer in reversed(model.layers):
        if isinstance(layer, keras.Model):
            found = last_kernel_layer(layer)
            if found is not None:
                return found
        elif getattr(layer, "kernel", None) is not None:
            return layer
    return None


def scale_logits(model, x, target=10.0):
    """Scales the last kernel so that max |logit| on `x` is `target` (random-init logits can be ~1e-11)."""
    ref = np.abs(keras.ops.convert_to_numpy(model(x, training=False))).max()
    layer = last_kernel_layer(model)
    layer.kernel.assign(layer.kernel * (target / max(ref, 1e-30)))
    return keras.ops.convert_to_numpy(model(x, training=False))


def step0_difference(model, am, x):
    """max |anchored model (two different anchor draws) - model| on raw pixels."""
    ref = keras.ops.convert_to_numpy(model(x, training=False))
    diffs = [np.abs(keras.ops.convert_to_numpy(am(x, training=False, seed=np.array(s, "int64"))) - ref).max()
             for s in ([1, 2], [3, 4])]
    return float(max(diffs)), float(np.abs(ref).max())


def one_step(am, x, n):
    am.compile(keras.optimizers.SGD(1e-4), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
               run_eagerly=True)
    loss = am.fit(x, np.arange(len(x)) % n, batch_size=len(x), epochs=1, verbose=0).history["loss"][0]
    return float(loss)


# ------------------------------------------------------------------ fast: one family with its preprocessing
@pytest.fixture(scope="module")
def mnv3():
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV3Small(weights=None, input_shape=(32, 32, 3), classes=4,
                                                classifier_activation=None, include_preprocessing=True)
    x = raw_pixels(np.random.default_rng(0), (4, 32, 32, 3))
    scale_logits(model, x)
    return model, x


def test_mobilenetv3_with_preprocessing_is_anchored_exactly(mnv3):
    model, x = mnv3
    am = anchored_model(model, consistency="none")
    # Rescaling(1/127.5, offset=-1) became the statistics; the op layers (x + 3.0, ...) were copied
    np.testing.assert_allclose(am.normalizer.mean.numpy(), [127.5] * 3)
    np.testing.assert_allclose(am.normalizer.std.numpy(), [127.5] * 3)
    assert not any(isinstance(layer, keras.layers.Rescaling) for layer in am.backbone.layers)
    diff, scale = step0_difference(model, am, x)
    assert scale > 1 and diff <= 1e-4, diff
    # the predictor computes the same function on uint8 raw pixels
    pred = AnchoredPredictor.from_model(am, x[:3].astype("uint8"))
    got = pred.predict(x.astype("uint8"))["logits"]
    np.testing.assert_allclose(got, keras.ops.convert_to_numpy(model(x)), atol=1e-4)
    assert np.isfinite(one_step(am, x, 4))


def test_model_without_preprocessing_gets_identity_statistics(mnv3):
    model, x = mnv3
    off = keras.Model(model.get_layer("conv").input, model.output)  # the same net without its Rescaling
    scale_logits(off, x)  # raw pixels in: logits of another scale
    am = anchored_model(off, consistency="none")
    np.testing.assert_array_equal(am.normalizer.mean.numpy(), [0.0] * 3)
    np.testing.assert_array_equal(am.normalizer.std.numpy(), [1.0] * 3)
    diff, _ = step0_difference(off, am, x)
    assert diff <= 1e-4
    # given statistics normalise before the model: the anchored model computes off((x - m) / s)
    am2 = anchored_model(off, mean=[100.0, 110.0, 120.0], std=50.0, consistency="none")
    want = keras.ops.convert_to_numpy(off((x - np.array([100.0, 110.0, 120.0], "float32")) / 50.0))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(am2(x)), want, atol=1e-4)


# ------------------------------------------------------------------ fast: preprocessing chains
def _rescaling_sequential():
    return keras.Sequential([
        keras.Input((10, 10, 3)),
        keras.layers.Rescaling(1 / 255.0),
        keras.layers.Normalization(mean=[0.485, 0.456, 0.406], variance=[0.229**2, 0.224**2, 0.225**2]),
        keras.layers.Rescaling([2.0, 1.0, 0.5], offset=[0.1, 0.0, -0.2]),
        keras.layers.ZeroPadding2D(1),
        keras.layers.Conv2D(6, 3, activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(3),
    ], name="rescaled")


def _convnext_like():
    """Normalization -> nested Sequential stem -> op layers (x * g, x + y) as in ConvNeXt."""
    inp = keras.Input((12, 12, 3))
    z = keras.layers.Normalization(mean=[123.7, 116.3, 103.5], variance=[58.4**2, 57.1**2, 57.4**2])(inp)
    stem = keras.Sequential([keras.Input((12, 12, 3)), keras.layers.Conv2D(8, 4, strides=4),
                             keras.layers.LayerNormalization(epsilon=1e-6)], name="stem")
    z = stem(z)
    y = keras.layers.DepthwiseConv2D(3, padding="same")(z)
    y = keras.layers.Dense(8)(y) * 0.5
    z = keras.layers.Add()([z, y]) + keras.ops.convert_to_tensor(0.1)
    out = keras.layers.Dense(4)(keras.layers.GlobalAveragePooling2D()(z))
    return keras.Model(inp, out, name="convnext_like")


def _ops_on_input():
    inp = keras.Input((8, 8, 3))
    z = (inp / 255.0 - 0.5) * 2.0
    out = keras.layers.Dense(2)(keras.layers.Flatten()(keras.layers.Conv2D(4, 3)(z)))
    return keras.Model(inp, out, name="ops_on_input")


def _nested_preprocessing():
    pre = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Rescaling(1 / 127.5, offset=-1.0)], name="pre")
    base = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Rescaling(2.0),
                             keras.layers.Conv2D(4, 3)], name="base")
    return keras.Sequential([keras.Input((8, 8, 3)), pre, base, keras.layers.Flatten(),
                             keras.layers.Dense(2)], name="nested_pre")


@pytest.mark.parametrize("make, mean, std", [
    (_rescaling_sequential, None, None),
    (_convnext_like, [123.7, 116.3, 103.5], [58.4, 57.1, 57.4]),
    (_ops_on_input, [127.5] * 3, [127.5] * 3),
    (_nested_preprocessing, [127.5] * 3, [63.75] * 3),
])
def test_preprocessing_is_absorbed_exactly(make, mean, std, rng):
    keras.utils.set_random_seed(1)
    model = make()
    x = raw_pixels(rng, (4,) + tuple(model.input_shape[1:]))
    scale_logits(model, x)
    am = anchored_model(model, consistency="none")
    if mean is not None:
        np.testing.assert_allclose(am.normalizer.mean.numpy(), mean, rtol=1e-5)
        np.testing.assert_allclose(am.normalizer.std.numpy(), std, rtol=1e-5)
    m, s = model_normalization(model)
    np.testing.assert_allclose(m, am.normalizer.mean.numpy())
    diff, _ = step0_difference(model, am, x)
    assert diff <= 1e-4, diff
    assert np.isfinite(one_step(am, x, 2))
    # the anchored backbone carries no preprocessing layer any more
    assert not any(isinstance(layer, (keras.layers.Rescaling, keras.layers.Normalization))
                   for layer in am.backbone.layers)


def test_model_trained_on_x_over_255_takes_statistics_in_pixel_units(rng):
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Normalization(mean=0.3, variance=0.09),
                              keras.layers.Conv2D(3, 3), keras.layers.Flatten(), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match=r"expects images in \[0, 1\].*pass mean=0, std=255"):
        anchored_model(model)
    am = anchored_model(model, mean=0.0, std=255.0, consistency="none")
    np.testing.assert_allclose(am.normalizer.mean.numpy(), [0.3 * 255], rtol=1e-5)
    np.testing.assert_allclose(am.normalizer.std.numpy(), [0.3 * 255], rtol=1e-5)
    x = raw_pixels(rng, (3, 8, 8, 1))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(am(x)), keras.ops.convert_to_numpy(model(x / 255.0)),
                               atol=1e-4)


@pytest.mark.parametrize("make, match", [
    (lambda: keras.Sequential([keras.Input((8, 8, 3)), keras.layers.ZeroPadding2D(1),
                               keras.layers.Rescaling(1 / 127.5, offset=-1), keras.layers.Conv2D(4, 3)]),
     "offset after zero padding"),
    (lambda: keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Normalization(axis=(1, 2, 3)),
                               keras.layers.Conv2D(4, 3)]), "not one value per channel|not per channel"),
    (lambda: (lambda i: keras.Model(i, keras.layers.Concatenate()([
        keras.layers.Conv2D(2, 1)(keras.layers.Rescaling(0.5)(i)), keras.layers.Conv2D(2, 1)(i)])))(
        keras.Input((8, 8, 3))), "also used elsewhere"),
    (lambda: keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Rescaling(-1.0, offset=255.0),
                               keras.layers.Conv2D(4, 3)]), "a > 0"),
])
def test_preprocessing_that_cannot_be_absorbed_is_refused(make, match):
    model = make()
    if isinstance(model.layers[0], keras.layers.Normalization):
        model.layers[0].adapt(np.random.default_rng(0).uniform(0, 255, (4, 8, 8, 3)).astype("float32"))
    with pytest.raises(ValueError, match=match):
        anchored_model(model)


def test_anchor_backbone_leaves_the_model_and_its_op_layers_usable(mnv3):
    model, x = mnv3
    before = keras.ops.convert_to_numpy(model(x))
    anchored = anchor_backbone(model)
    assert anchored.input.shape == (None, 32, 32, 6)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model(x)), before)


# ------------------------------------------------------------------ finetune_anchored checks
def _tiny_softmax(kind):
    layers = [keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3), keras.layers.Flatten()]
    if kind == "dense":
        layers.append(keras.layers.Dense(3, activation="softmax", name="head"))
    else:
        layers += [keras.layers.Dense(3, name="head"), keras.layers.Softmax(name="probs")]
    return keras.Sequential(layers)


@pytest.mark.parametrize("kind, match", [("dense", "'head' \\(Dense\\) has activation='softmax'"),
                                         ("layer", "'probs' \\(Softmax\\) is a softmax")])
def test_finetune_anchored_refuses_a_softmax_model(kind, match, rng):
    x, y = rng.integers(0, 256, (8, 8, 8, 1)).astype("uint8"), np.arange(8) % 3
    with pytest.raises(ValueError, match=match + ".*classifier_activation=None"):
        finetune_anchored(_tiny_softmax(kind), x, y, epochs=1, verbose=0, backup=False)


@pytest.mark.parametrize("epochs", [0, -1, 1.5, None])
def test_finetune_anchored_refuses_bad_epochs(epochs, rng):
    x, y = rng.integers(0, 256, (8, 8, 8, 1)).astype("uint8"), np.arange(8) % 3
    with pytest.raises(ValueError, match="epochs: expected an int >= 1"):
        finetune_anchored(_tiny_softmax("dense"), x, y, epochs=epochs, verbose=0, backup=False)


@pytest.mark.slow
def test_finetune_anchored_on_a_rescaling_model_and_given_statistics(rng, tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Rescaling(1 / 255.0),
                              keras.layers.Conv2D(4, 3), keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(3)])
    x, y = rng.integers(0, 256, (32, 8, 8, 3)).astype("uint8"), np.arange(32) % 3
    am, hist = finetune_anchored(model, x, y, epochs=1, batch_size=16, lr=0.01, verbose=0, backup=False,
                                 out_dir=tmp_path / "run")
    assert np.isfinite(hist.history["loss"][0])
    np.testing.assert_allclose(am.normalizer.std.numpy(), [255.0] * 3)
    plain = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)])
    am2, _ = finetune_anchored(plain, x, y, epochs=1, batch_size=16, verbose=0, backup=False,
                               mean=[100.0, 100.0, 100.0], std=[50.0, 50.0, 50.0])
    np.testing.assert_allclose(am2.normalizer.mean.numpy(), [100.0] * 3)
