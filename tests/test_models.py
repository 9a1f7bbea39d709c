"""Tests for amp_tf.models: backbone registry, architectures, anchor_backbone."""
import numpy as np
import pytest

import keras

from amp_tf.method.anchoring import anchored_model
from amp_tf.models import anchor_backbone, backbone_names, build_backbone, register_backbone
from amp_tf.models.pixels import PixelNormalization

# name -> (image shape, num classes, expected TRAINABLE params of the vanilla model).
# Reference counts are the PyTorch parameter counts (BN running stats are buffers
# there and non-trainable weights here): kuangliu/pytorch-cifar ResNet-18/34/50,
# torchvision resnet50 (1000 classes), hendrycks WRN-40-2 (2,243,546).
EXPECTED = {
    "resnet18": ((32, 32, 3), 10, 11_173_962),
    "resnet34": ((32, 32, 3), 10, 21_282_122),
    "resnet50": ((32, 32, 3), 10, 23_520_842),
    "resnet50_imagenet": ((64, 64, 3), 1000, 25_557_032),
    "wrn40_2": ((32, 32, 3), 10, 2_243_546),
    "resnet_small": ((28, 28, 1), 10, 308_074),
}


def trainable_params(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def first_weighted_layer(model):
    """The first layer with weights, the input normalisation (`PixelNormalization`) aside."""
    return next(layer for layer in model.layers
                if layer.weights and not isinstance(layer, PixelNormalization))


def pixels(rng, shape):
    return rng.uniform(0, 255, shape).astype("float32")


def randomize_bn_stats(model, rng):
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape
            layer.moving_mean.assign(rng.normal(0, 0.5, n).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, n).astype("float32"))
            layer.gamma.assign(rng.uniform(0.5, 1.5, n).astype("float32"))
            layer.beta.assign(rng.normal(0, 0.2, n).astype("float32"))


def test_registry_lists_all_backbones():
    assert set(EXPECTED) <= set(backbone_names())
    assert backbone_names() == sorted(backbone_names())


def test_unknown_backbone_lists_known_names():
    with pytest.raises(ValueError, match="resnet18.*wrn40_2"):
        build_backbone("resnet1000", (32, 32, 3), 10)


def test_duplicate_registration_rejected():
    with pytest.raises(ValueError, match="already registered"):
        register_backbone("resnet18")(lambda inputs, num_classes: inputs)


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("anchored", [False, True])
def test_backbone_structure_and_output(name, anchored, rng):
    shape, num_classes, expected_params = EXPECTED[name]
    model = build_backbone(name, shape, num_classes, anchored=anchored)
    c_in = shape[-1] * (2 if anchored else 1)
    assert model.input.shape == (None, *shape[:2], c_in)
    assert name in model.name and model.name.endswith("_anchored") == anchored
    first = first_weighted_layer(model)
    assert isinstance(first, keras.layers.Conv2D) and first.name == "stem_conv"
    norms = [l for l in model.layers if isinstance(l, PixelNormalization)]
    if anchored:  # takes the normalised [c, x - c]: no normalisation layer
        assert not norms
        assert first.input is model.input  # applied directly to the input
    else:  # raw pixels in: the model starts with its normalisation, then the stem
        assert len(norms) == 1 and norms[0] is model.layers[1]
        norm = norms[0]
        assert norm.name == "pixel_normalization" and norm.input is model.input
        assert first.input is norm.output
        assert [tuple(w.shape) for w in norm.weights] == [(shape[-1],), (shape[-1],)]
        assert not norm.trainable_weights
        np.testing.assert_allclose(keras.ops.convert_to_numpy(norm.mean), 127.5)  # default
        np.testing.assert_allclose(keras.ops.convert_to_numpy(norm.std), 127.5)
    assert first.kernel.shape[2] == c_in and not first.use_bias
    feats = model.get_layer("features")
    assert isinstance(feats, keras.layers.GlobalAveragePooling2D)
    if not anchored:
        assert trainable_params(model) == expected_params
    else:  # only the stem kernel grows: kh * kw * C * filters extra weights
        k = first.kernel.shape
        assert trainable_params(model) == expected_params + k[0] * k[1] * shape[-1] * k[3]
    batch = 1 if name == "resnet50_imagenet" else 2
    if anchored:  # normalised anchor + residual
        x = rng.normal(size=(batch, *shape[:2], c_in)).astype("float32")
    else:  # raw pixels
        x = pixels(rng, (batch, *shape[:2], c_in))
    y = keras.ops.convert_to_numpy(model(x, training=False))
    assert y.shape == (batch, num_classes) and y.dtype == np.float32
    assert np.all(np.isfinite(y))
    extractor = keras.Model(model.input, feats.output)
    assert extractor(x).shape == (batch, model.get_layer("logits").kernel.shape[0])


def test_wrn_dropout_and_bn_settings():
    model = build_backbone("wrn40_2", (32, 32, 3), 10, anchored=False)
    drops = [l for l in model.layers if isinstance(l, keras.layers.Dropout)]
    assert len(drops) == 18 and all(d.rate == 0.3 for d in drops)  # one per block
    bns = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
    assert bns and all(b.momentum == 0.9 and b.epsilon == 1e-5 for b in bns)
    no_drop = build_backbone("wrn40_2", (32, 32, 3), 10, dropout=0.0)
    assert not any(isinstance(l, keras.layers.Dropout) for l in no_drop.layers)


def test_resnet_small_kwargs_and_size():
    base = build_backbone("resnet_small", (28, 28, 1), 10, anchored=False)
    assert base.count_params() < 320_000
    small = build_backbone("resnet_small", (28, 28, 1), 10, width=16, dropout=0.2)
    assert small.get_layer("stem_conv").filters == 16
    assert small.get_layer("head_dropout").rate == 0.2
    assert trainable_params(small) < trainable_params(base) / 3


def test_weight_decay_kwarg_adds_l2_losses():
    plain = build_backbone("resnet_small", (28, 28, 1), 10)
    assert plain.get_layer("stem_conv").kernel_regularizer is None
    assert not plain.losses
    wd = build_backbone("resnet_small", (28, 28, 1), 10, weight_decay=5e-4)
    assert isinstance(wd.get_layer("stem_conv").kernel_regularizer, keras.regularizers.L2)
    convs_and_dense = [l for l in wd.layers if isinstance(l, (keras.layers.Conv2D, keras.layers.Dense))]
    assert len(wd.losses) == len(convs_and_dense) > 0


def test_logits_float32_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_backbone("resnet_small", (28, 28, 1), 10, width=8)
        assert model.get_layer("stem_conv").compute_dtype == "float16"
        assert model.output.dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")


def assert_anchor_identity(model, anchored, x, rng, n_anchors=4, mean=None, std=None):
    """anchored([n(c), (x - c) / std]) == model(x) for any anchor c.

    `mean`/`std` None: the model takes its input as is (no normalisation layer);
    otherwise `x` and the anchors are raw pixels and `n(v) = (v - mean) / std`.
    """
    ref = keras.ops.convert_to_numpy(model(x, training=False))
    scale = max(1.0, float(np.abs(ref).max()))
    draw = (lambda: rng.normal(size=x.shape).astype("float32")) if mean is None else (
        lambda: pixels(rng, x.shape))
    m, s = (0.0, 1.0) if mean is None else (mean, std)
    anchors = [np.zeros_like(x), x.copy()] + [draw() for _ in range(n_anchors)] + [
        x[::-1].copy()]  # anchors from other samples of the batch
    for c in anchors:
        out = anchored(np.concatenate([(c - m) / s, (x - c) / s], axis=-1), training=False)
        diff = np.abs(keras.ops.convert_to_numpy(out) - ref).max()
        assert diff < 1e-5 * scale, diff


def test_anchor_backbone_preserves_resnet_small(rng):
    model = build_backbone("resnet_small", (28, 28, 1), 10, anchored=False, width=8,
                           mean=80.0, std=60.0)
    for w in model.weights:  # non-default, non-symmetric weights
        if "kernel" in w.path:
            w.assign(rng.normal(0, 0.3, w.shape).astype("float32"))
    randomize_bn_stats(model, rng)
    anchored = anchor_backbone(model)
    assert anchored.input.shape == (None, 28, 28, 2)
    assert anchored.name == "resnet_small_anchored"
    # the leading normalisation is dropped: the anchored model normalises c and x - c
    assert not any(isinstance(l, PixelNormalization) for l in anchored.layers)
    assert first_weighted_layer(anchored).input is anchored.input
    k_old = keras.ops.convert_to_numpy(model.get_layer("stem_conv").kernel)
    k_new = keras.ops.convert_to_numpy(anchored.get_layer("stem_conv").kernel)
    np.testing.assert_array_equal(k_new, np.concatenate([k_old, k_old], axis=2))
    # every other variable copied, not shared
    for layer in model.layers:
        if layer.weights and layer.name not in ("stem_conv", "pixel_normalization"):
            for a, b in zip(layer.weights, anchored.get_layer(layer.name).weights):
                assert a is not b
                np.testing.assert_array_equal(
                    keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b)
                )
    x = pixels(rng, (4, 28, 28, 1))
    assert_anchor_identity(model, anchored, x, rng, mean=80.0, std=60.0)
    # the original model is untouched and independent of the anchored copy
    assert model.get_layer("stem_conv").kernel.shape == (3, 3, 1, 8)
    anchored.get_layer("logits").kernel.assign(np.zeros((32, 10), "float32"))
    assert np.abs(keras.ops.convert_to_numpy(model.get_layer("logits").kernel)).sum() > 0


def test_anchor_backbone_sequential_with_bias_and_padding(rng):
    model = keras.Sequential([
        keras.Input((12, 12, 3)),
        keras.layers.ZeroPadding2D(1),
        keras.layers.Conv2D(6, 3, strides=2, use_bias=True, activation="relu"),
        keras.layers.BatchNormalization(),
        keras.layers.Conv2D(8, 3, padding="same"),
        keras.layers.Flatten(),
        keras.layers.Dense(5),
    ], name="seq")
    for w in model.weights:
        w.assign(rng.normal(0, 0.3, w.shape).astype("float32"))
    model.layers[2].moving_variance.assign(rng.uniform(0.5, 2, 6).astype("float32"))
    anchored = anchor_backbone(model)
    assert anchored.input.shape == (None, 12, 12, 6)
    conv = first_weighted_layer(anchored)
    assert conv.kernel.shape == (3, 3, 6, 6)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(conv.bias), keras.ops.convert_to_numpy(model.layers[1].bias)
    )
    x = rng.normal(size=(3, 12, 12, 3)).astype("float32")
    assert_anchor_identity(model, anchored, x, rng)


def test_anchor_backbone_nested_model(rng):
    inner = keras.Sequential(
        [keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3), keras.layers.ReLU()], name="inner"
    )
    inp = keras.Input((8, 8, 3))
    out = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(inner(inp)))
    model = keras.Model(inp, out)
    anchored = anchor_backbone(model)
    assert anchored.input.shape == (None, 8, 8, 6)
    x = rng.normal(size=(2, 8, 8, 3)).astype("float32")
    assert_anchor_identity(model, anchored, x, rng, n_anchors=2)


def _seq(*layers, shape=(8, 8, 3)):
    return keras.Sequential([keras.Input(shape), *layers])


@pytest.mark.parametrize(
    "make_model, match",
    [
        (lambda: _seq(keras.layers.Flatten(), keras.layers.Dense(4)), "Flatten"),
        (lambda: _seq(keras.layers.Dense(4), keras.layers.Conv2D(4, 3)), "Dense"),
        (lambda: _seq(keras.layers.Rescaling(1 / 255.0), keras.layers.Dense(4)),
         "'dense.*' \\(Dense\\).*Conv2D\\(units, 1\\)"),
        (lambda: _seq(keras.layers.Normalization(mean=0.5, variance=0.1),
                      keras.layers.Rescaling(2.0), keras.layers.Flatten()), "Flatten"),
        (lambda: _seq(keras.layers.DepthwiseConv2D(3), keras.layers.Conv2D(4, 1)),
         "DepthwiseConv2D"),
        (lambda: _seq(keras.layers.SeparableConv2D(4, 3)), "SeparableConv2D"),
        (lambda: _seq(keras.layers.BatchNormalization(), keras.layers.Conv2D(4, 3)),
         "BatchNormalization"),
        (lambda: _seq(keras.layers.Conv2D(4, 3, groups=3), shape=(8, 8, 3)), "groups"),
        (lambda: _seq(keras.layers.Dense(4), shape=(10,)), "rank-4"),
        (lambda: _seq(keras.layers.Conv1D(4, 3), shape=(10, 3)), "rank-4"),
    ],
)
def test_anchor_backbone_rejects_unsupported(make_model, match):
    with pytest.raises(ValueError, match=match):
        anchor_backbone(make_model())


def test_anchor_backbone_rejects_input_skip_connection():
    inp = keras.Input((8, 8, 3))
    out = keras.layers.Add()([inp, keras.layers.Conv2D(3, 3, padding="same")(inp)])
    with pytest.raises(ValueError, match="combined with other tensors"):
        anchor_backbone(keras.Model(inp, out))


def test_anchor_backbone_rejects_unbuilt_and_subclassed():
    with pytest.raises(ValueError, match="not built"):
        anchor_backbone(keras.Sequential([keras.layers.Conv2D(4, 3)]))

    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = keras.layers.Conv2D(4, 3)

        def call(self, x):
            return self.conv(x)

    sub = Sub()
    sub(np.zeros((1, 8, 8, 3), "float32"))
    with pytest.raises(ValueError, match="subclassed"):
        anchor_backbone(sub)


@pytest.mark.parametrize("name, shape", [("resnet_small", (28, 28, 1)), ("wrn40_2", (32, 32, 3))])
def test_keras_round_trip(name, shape, tmp_path, rng):
    model = build_backbone(name, shape, 10, anchored=True)
    randomize_bn_stats(model, rng)
    x = rng.normal(size=(2, *shape[:2], 2 * shape[-1])).astype("float32")
    ref = keras.ops.convert_to_numpy(model(x, training=False))
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.name == model.name
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(x, training=False)), ref, atol=1e-6, rtol=1e-6
    )
    assert loaded.get_layer("features") is not None


def test_anchored_model_round_trip(tmp_path, rng):
    model = build_backbone("resnet_small", (28, 28, 1), 10, anchored=False, width=8)
    randomize_bn_stats(model, rng)
    anchored = anchor_backbone(model)
    anchored.save(tmp_path / "a.keras")
    loaded = keras.models.load_model(tmp_path / "a.keras")
    x = rng.normal(size=(2, 28, 28, 2)).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(x, training=False)),
        keras.ops.convert_to_numpy(anchored(x, training=False)), atol=1e-6,
    )


@pytest.mark.parametrize("mean,std", [(None, None), ([70.0, 90.0, 110.0], [50.0, 60.0, 70.0])])
def test_anchored_model_computes_the_vanilla_function_on_raw_pixels(mean, std, rng):
    model = build_backbone("resnet_small", (12, 12, 3), 5, anchored=False, width=8, mean=mean, std=std)
    for w in model.weights:
        if "kernel" in w.path:
            w.assign(rng.normal(0, 0.3, w.shape).astype("float32"))
    randomize_bn_stats(model, rng)
    am = anchored_model(model, consistency="none", seed=3)
    want_mean = [127.5] * 3 if mean is None else mean
    want_std = [127.5] * 3 if std is None else std
    np.testing.assert_allclose(keras.ops.convert_to_numpy(am.normalizer.mean), want_mean)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(am.normalizer.std), want_std)
    x = pixels(rng, (6, 12, 12, 3))
    ref = keras.ops.convert_to_numpy(model(x, training=False))
    assert np.abs(ref).max() > 1e-2  # not a trivially zero function
    for seed in ([1, 2], [7, 9]):  # different permutations (anchors) give the same function
        got = am(x, training=False, seed=np.array(seed, "int64"))
        np.testing.assert_allclose(keras.ops.convert_to_numpy(got), ref, atol=1e-4, rtol=1e-4)
    # uint8 raw pixels too
    x8 = rng.integers(0, 256, (4, 12, 12, 3), dtype=np.uint8)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(am(x8, training=False)),
                               keras.ops.convert_to_numpy(model(x8.astype("float32"), training=False)),
                               atol=1e-4, rtol=1e-4)
    # explicit statistics win over the vanilla model's
    other = anchored_model(model, mean=10.0, std=20.0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(other.normalizer.mean), [10.0] * 3)


def test_anchored_model_lives_in_the_method_layer():
    """`amp_tf.models` gives the parts (plain Keras: backbone + statistics); `amp_tf.method.anchoring`
    builds the `AnchoredModel` (also `amp_tf.anchored_model`)."""
    import amp_tf
    from amp_tf import models
    from amp_tf.method import anchoring

    assert amp_tf.anchored_model is anchoring.anchored_model and not hasattr(models, "anchored_model")
    model = build_backbone("resnet_small", (12, 12, 3), 5, anchored=False, width=8, mean=70.0, std=50.0,
                           check_pixels=False)
    parts = models.anchor_with_statistics(model)
    assert tuple(parts.backbone.input.shape) == (None, 12, 12, 6) and parts.check_pixels is False
    np.testing.assert_allclose(parts.mean, [70.0] * 3)
    np.testing.assert_allclose(parts.std, [50.0] * 3)
    assert anchored_model(model).normalizer.check is False  # the vanilla model's own setting is kept
    assert anchored_model(model, check_pixels=True).normalizer.check is True


def test_vanilla_keras_round_trip_restores_statistics(tmp_path, rng):
    model = build_backbone("resnet_small", (28, 28, 1), 10, anchored=False, width=8,
                           mean=72.5, std=88.0, check_pixels=True)
    randomize_bn_stats(model, rng)
    x = pixels(rng, (2, 28, 28, 1))
    ref = keras.ops.convert_to_numpy(model(x, training=False))
    model.save(tmp_path / "v.keras")
    loaded = keras.models.load_model(tmp_path / "v.keras")
    norm = loaded.get_layer("pixel_normalization")
    assert isinstance(norm, PixelNormalization) and norm.check
    np.testing.assert_allclose(keras.ops.convert_to_numpy(norm.mean), [72.5])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(norm.std), [88.0])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x, training=False)), ref, atol=1e-6)
    # the restored model still refuses normalised input, and anchored_model reads the statistics
    import tensorflow as tf
    with pytest.raises(tf.errors.InvalidArgumentError, match="looks already normalised"):
        loaded((x - 72.5) / 88.0, training=False)
    am = anchored_model(loaded)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(am.normalizer.std), [88.0])
