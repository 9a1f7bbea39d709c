import json
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from amp_tf.serve.export import export_for_serving
from amp_tf.serve.folded import FoldedAnchoredPredictor, find_stem, split_stem
from amp_tf.models import build_backbone
from amp_tf.method.predictor import AnchoredPredictor, select_anchors
from tests.helpers import pixel_images

STATS = dict(mean=127.5, std=127.5)  # pixel statistics (the tests compare predictors, any will do)

# Loads the SavedModel in a fresh interpreter (no amp_tf) and prints its outputs as JSON.
LOAD_SCRIPT = r"""
import json, sys
import numpy as np
import tensorflow as tf
fn = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
out = fn(images=tf.constant(np.load(sys.argv[2])))
print(json.dumps({"outputs": {k: np.asarray(v).tolist() for k, v in out.items()},
                  "amp_tf_imported": "amp_tf" in sys.modules}))
"""

KEYS = ("logits", "tau", "calibrated_logits", "probabilities", "predicted_class",
        "amp_score", "msp", "energy")


def _resnet_small(seed=0):
    keras.utils.set_random_seed(seed)
    model = build_backbone("resnet_small", (28, 28, 1), 10, anchored=True, width=8)
    # Non-trivial BatchNorm statistics, so that errors in the stem show up downstream.
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0, 0.2, n).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, n).astype("float32"))
    return model


def _custom_stem(strides, padding, dilation=1, c=2, use_bias=True, activation="relu", size=11, seed=0):
    """A small functional backbone whose stem has the given conv configuration."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((size, size, 2 * c))
    z = keras.layers.Conv2D(5, 3, strides=strides, padding=padding, dilation_rate=dilation,
                            use_bias=use_bias, activation=activation, name="stem_conv",
                            bias_initializer="random_normal")(inp)
    bn = keras.layers.BatchNormalization()
    z = bn(z)
    bn.moving_mean.assign(np.linspace(-0.3, 0.3, 5).astype("float32"))
    bn.moving_variance.assign(np.linspace(0.5, 1.5, 5).astype("float32"))
    z = keras.layers.Conv2D(6, 3, padding="same")(z)
    z = keras.layers.ReLU()(z)
    z = keras.layers.GlobalAveragePooling2D()(z)
    return keras.Model(inp, keras.layers.Dense(4)(z))


def _assert_same(folded, tiled, atol=1e-5):
    assert set(folded) == set(tiled)
    for key in KEYS:
        if key == "predicted_class":
            np.testing.assert_array_equal(folded[key], tiled[key], err_msg=key)
        else:
            np.testing.assert_allclose(folded[key], tiled[key], rtol=1e-5, atol=atol, err_msg=key)


@pytest.mark.parametrize("calibration", ["exp", "divide"])
def test_matches_tiled_predictor_on_resnet_small(rng, calibration):
    model = _resnet_small()
    train = pixel_images(rng, (40, 28, 28, 1))
    x = pixel_images(rng, (9, 28, 28, 1))
    anchors = select_anchors(train, 5, seed=3)
    tiled = AnchoredPredictor(model, anchors, calibration=calibration, mean=110.0, std=60.0)
    folded = FoldedAnchoredPredictor(model, anchors, calibration=calibration, mean=110.0, std=60.0)
    _assert_same(folded.predict(x, batch_size=4), tiled.predict(x, batch_size=4))
    per_anchor = folded.per_anchor_logits(tf.constant(x))
    assert tuple(per_anchor.shape) == (5, 9, 10)
    np.testing.assert_allclose(per_anchor, tiled.per_anchor_logits(tf.constant(x)), rtol=1e-5, atol=1e-5)
    # the logits are not trivially equal across anchors (the test would be weak otherwise)
    assert float(np.std(np.asarray(per_anchor), axis=0).max()) > 1e-3


@pytest.mark.parametrize(
    "strides,padding,dilation",
    [(2, "valid", 1), (2, "same", 1), (1, "same", 2), (3, "valid", 1)],
)
def test_matches_tiled_predictor_for_strided_and_padded_stems(rng, strides, padding, dilation):
    model = _custom_stem(strides, padding, dilation)
    anchors = pixel_images(rng, (4, 11, 11, 2))
    x = pixel_images(rng, (6, 11, 11, 2))
    stats = dict(mean=[100.0, 140.0], std=[50.0, 70.0])  # per channel
    folded = FoldedAnchoredPredictor(model, anchors, tau_reduction="sum", **stats)
    tiled = AnchoredPredictor(model, anchors, tau_reduction="sum", **stats)
    _assert_same(folded.predict(x), tiled.predict(x))
    assert tuple(folded.per_anchor_logits(tf.constant(x)).shape) == (4, 6, 4)


def test_max_batch_chunks_give_the_same_outputs(rng):
    model = _resnet_small(seed=1)
    anchors = pixel_images(rng, (3, 28, 28, 1))
    x = pixel_images(rng, (5, 28, 28, 1))
    whole = FoldedAnchoredPredictor(model, anchors, **STATS).predict(x)
    chunked = FoldedAnchoredPredictor(model, anchors, max_batch=4, **STATS).predict(x)  # 15 rows, 4 chunks
    _assert_same(chunked, whole)


def test_split_stem_is_the_linear_identity_and_shares_weights(rng):
    model = _custom_stem(2, "same", activation=None)
    w_res, w_delta, bias, rest = split_stem(model)
    assert tuple(w_res.shape) == (3, 3, 2, 5) and tuple(w_delta.shape) == (3, 3, 2, 5)
    stem, _ = find_stem(model)
    kernel = np.asarray(stem.kernel)
    np.testing.assert_allclose(np.asarray(w_res), kernel[:, :, 2:])
    np.testing.assert_allclose(np.asarray(w_delta), kernel[:, :, :2] - kernel[:, :, 2:], atol=1e-7)
    x = rng.normal(size=(3, 11, 11, 2)).astype("float32")
    c = rng.normal(size=(3, 11, 11, 2)).astype("float32")
    want = np.asarray(stem(np.concatenate([c, x - c], -1)))
    got = stem.convolution_op(x, w_res) + stem.convolution_op(c, w_delta) + bias
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)
    # rest_model + stem == backbone, with shared (not copied) variables
    np.testing.assert_allclose(np.asarray(rest(want)), np.asarray(model(np.concatenate([c, x - c], -1))),
                               rtol=1e-5, atol=1e-5)
    backbone_vars = {id(v) for v in model.weights}
    assert rest.weights and all(id(v) in backbone_vars for v in rest.weights)


def test_follows_weight_and_anchor_updates(rng):
    model = _custom_stem(1, "same")
    anchors = pixel_images(rng, (3, 11, 11, 2))
    x = pixel_images(rng, (4, 11, 11, 2))
    folded = FoldedAnchoredPredictor(model, anchors, **STATS)
    tiled = AnchoredPredictor(model, anchors, **STATS)
    before = folded.predict(x)["amp_score"]
    stem, _ = find_stem(model)
    stem.kernel.assign(stem.kernel * 1.5 + 0.1)
    new_anchors = pixel_images(rng, (3, 11, 11, 2))
    folded.anchors.assign(new_anchors)
    tiled.anchors.assign(new_anchors)
    after = folded.predict(x)
    assert not np.allclose(after["amp_score"], before)
    _assert_same(after, tiled.predict(x))


def test_sequential_backbone(rng):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8, 2)),
        keras.layers.Conv2D(4, 3, strides=2, use_bias=True, name="stem_conv"),
        keras.layers.ReLU(),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(3),
    ])
    anchors = pixel_images(rng, (3, 8, 8, 1))
    x = pixel_images(rng, (5, 8, 8, 1))
    _assert_same(FoldedAnchoredPredictor(model, anchors, **STATS).predict(x),
                 AnchoredPredictor(model, anchors, **STATS).predict(x))


def _functional(first):
    inp = keras.Input((8, 8, 2))
    z = first(inp)
    z = keras.layers.Conv2D(4, 3, name="stem_conv")(z) if len(z.shape) == 4 else z
    z = keras.layers.GlobalAveragePooling2D()(z) if len(z.shape) == 4 else keras.layers.Flatten()(z)
    return keras.Model(inp, keras.layers.Dense(3)(z))


@pytest.mark.parametrize(
    "first,match",
    [
        (lambda: keras.layers.Dense(4), "weighted layer that is not a Conv2D"),
        (lambda: keras.layers.BatchNormalization(), "weighted layer that is not a Conv2D"),
        (lambda: keras.layers.DepthwiseConv2D(3), "weighted layer that is not a Conv2D"),
        (lambda: keras.layers.ZeroPadding2D(1), "not a Conv2D"),
    ],
)
def test_error_when_first_weighted_layer_is_not_conv2d(first, match):
    model = _functional(first())
    with pytest.raises(ValueError, match=match):
        FoldedAnchoredPredictor(model, np.zeros((2, 8, 8, 1), "float32"), **STATS)
    with pytest.raises(ValueError, match=match):
        split_stem(model)


def test_error_when_input_is_read_again_or_stem_is_grouped():
    inp = keras.Input((8, 8, 2))
    z = keras.layers.Conv2D(4, 3, padding="same", name="stem_conv")(inp)
    z = keras.layers.Concatenate()([z, inp])  # skip connection from the input
    out = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(z))
    with pytest.raises(ValueError, match="several layers"):
        split_stem(keras.Model(inp, out))

    inp = keras.Input((8, 8, 2))
    z = keras.layers.Conv2D(4, 3, groups=2, name="stem_conv")(inp)
    out = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(z))
    with pytest.raises(ValueError, match="groups=1"):
        split_stem(keras.Model(inp, out))

    class Sub(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="subclassed"):
        split_stem(Sub())


def test_mixed_precision_backbone_is_close(rng):
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = _custom_stem(2, "same")
        anchors = pixel_images(rng, (3, 11, 11, 2))
        x = pixel_images(rng, (4, 11, 11, 2))
        folded = FoldedAnchoredPredictor(model, anchors, **STATS).predict(x)
        tiled = AnchoredPredictor(model, anchors, **STATS).predict(x)
    finally:
        keras.config.set_dtype_policy(policy)
    assert model.get_layer("stem_conv").compute_dtype == "float16"
    for key in ("logits", "amp_score", "tau"):
        assert folded[key].dtype == np.float32
        np.testing.assert_allclose(folded[key], tiled[key], rtol=2e-2, atol=2e-2, err_msg=key)


def test_config_round_trip_and_weights_not_duplicated(rng):
    model = _custom_stem(2, "valid")
    anchors = pixel_images(rng, (3, 11, 11, 2))
    folded = FoldedAnchoredPredictor(model, anchors, **STATS)
    tiled = AnchoredPredictor(model, anchors, **STATS)
    x = pixel_images(rng, (2, 11, 11, 2))
    folded(x), tiled(x)
    assert len(folded.weights) == len(tiled.weights) == len({id(v) for v in folded.weights})
    clone = FoldedAnchoredPredictor.from_config(folded.get_config())
    assert isinstance(clone, FoldedAnchoredPredictor)
    assert clone.anchor_shape == folded.anchor_shape and clone.tau_reduction == folded.tau_reduction


@pytest.mark.slow
def test_export_fresh_process_matches_in_process(tmp_path, rng):
    model = _resnet_small(seed=2)
    mean, std = [70.0], [80.0]
    train_u8 = rng.integers(0, 256, (40, 28, 28, 1), dtype=np.uint8)
    anchors = select_anchors(train_u8, 4)
    folded = FoldedAnchoredPredictor(model, anchors, mean=mean, std=std)
    head = export_for_serving(folded, tmp_path / "serving", threshold=0.5)
    images = rng.integers(0, 256, (6, 28, 28, 1), dtype=np.uint8)
    np.save(tmp_path / "x.npy", images)
    res = subprocess.run(
        [sys.executable, "-c", LOAD_SCRIPT, str(tmp_path / "serving"), str(tmp_path / "x.npy")],
        capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert not got["amp_tf_imported"]
    want = head(images)
    tiled = AnchoredPredictor(model, anchors, mean=mean, std=std).predict(images)
    for key in KEYS + ("is_ood",):
        np.testing.assert_allclose(np.asarray(got["outputs"][key], dtype="float64"),
                                   np.asarray(want[key], dtype="float64"), atol=1e-5, err_msg=key)
        if key in tiled:
            np.testing.assert_allclose(np.asarray(got["outputs"][key], dtype="float64"),
                                       np.asarray(tiled[key], dtype="float64"), atol=1e-5, err_msg=key)
