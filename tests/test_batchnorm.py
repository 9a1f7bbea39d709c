"""BatchNorm (fused kernel) computes what keras.layers.BatchNormalization computes."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from amp_tf.models import build_backbone
from amp_tf.models.batchnorm import BatchNorm


def _pair(**kw):
    a, b = BatchNorm(**kw), keras.layers.BatchNormalization(**kw)
    x = np.random.default_rng(0).normal(2.0, 3.0, size=(6, 5, 7, 4)).astype("float32")
    a.build(x.shape)
    b.build(x.shape)
    rng = np.random.default_rng(1)
    for layer in (a, b):  # same non-trivial weights on both
        layer.set_weights([w for w in (rng.uniform(0.5, 2, 4), rng.normal(size=4),
                                       rng.normal(size=4), rng.uniform(0.5, 2, 4))])
        rng = np.random.default_rng(1)
    return a, b, x


@pytest.mark.parametrize("momentum", [0.9, 0.99])
def test_training_step_matches_keras(momentum):
    a, b, x = _pair(momentum=momentum, epsilon=1e-3)
    xt = tf.constant(x)
    outs, grads = [], []
    for layer in (a, b):
        with tf.GradientTape() as tape:
            tape.watch(xt)
            y = layer(xt, training=True)
            loss = tf.reduce_sum(y * tf.cos(y))
        outs.append(y.numpy())
        grads.append([g.numpy() for g in tape.gradient(loss, [xt, layer.gamma, layer.beta])])
    np.testing.assert_allclose(outs[0], outs[1], atol=1e-5)
    for ga, gb in zip(*grads):
        np.testing.assert_allclose(ga, gb, atol=1e-4, rtol=1e-4)
    # moving statistics: Keras' update with the biased batch variance
    np.testing.assert_allclose(a.moving_mean.numpy(), b.moving_mean.numpy(), atol=1e-6)
    np.testing.assert_allclose(a.moving_variance.numpy(), b.moving_variance.numpy(), atol=1e-6)
    assert not np.allclose(a.moving_variance.numpy(), np.random.default_rng(1).uniform(0.5, 2, 4))


def test_inference_and_frozen_match_keras():
    a, b, x = _pair(epsilon=1e-3)
    np.testing.assert_allclose(a(x, training=False), b(x, training=False), atol=1e-5)
    a.trainable = b.trainable = False  # frozen: moving statistics even in training
    np.testing.assert_allclose(a(x, training=True), b(x, training=True), atol=1e-5)
    mm = a.moving_mean.numpy().copy()
    a(x, training=True)
    np.testing.assert_array_equal(a.moving_mean.numpy(), mm)


def test_fallbacks_are_keras():
    a, b = BatchNorm(), keras.layers.BatchNormalization()
    x2 = np.random.default_rng(0).normal(size=(8, 3)).astype("float32")  # 2-D: not fusable
    np.testing.assert_allclose(a(x2, training=True), b(x2, training=True), atol=1e-6)
    assert not BatchNorm(synchronized=True)._fusable(tf.zeros((2, 3, 3, 1)), True, None)
    assert not BatchNorm(center=False)._fusable(tf.zeros((2, 3, 3, 1)), True, None)
    assert not BatchNorm(axis=1)._fusable(tf.zeros((2, 3, 3, 1)), True, None)
    assert BatchNorm()._fusable(tf.zeros((2, 3, 3, 1)), True, None)


def test_backbones_use_it_and_round_trip(tmp_path):
    m = build_backbone("resnet_small", (12, 12, 1), 3, anchored=False, width=4)
    assert any(isinstance(layer, BatchNorm) for layer in m.layers)
    x = np.random.default_rng(0).integers(0, 256, (3, 12, 12, 1)).astype("float32")
    m(x, training=True)  # moves the statistics away from 0 / 1
    path = tmp_path / "m.keras"
    m.save(path)
    back = keras.saving.load_model(path)
    assert sum(isinstance(layer, BatchNorm) for layer in back.layers) == \
        sum(isinstance(layer, BatchNorm) for layer in m.layers)
    np.testing.assert_allclose(back(x, training=False), m(x, training=False), atol=1e-5)
