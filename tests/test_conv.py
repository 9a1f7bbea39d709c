"""amp_tf.models.conv.Conv2D: the strided 1x1 convolution whose filter gradient avoids a oneDNN kernel crash."""
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from amp_tf.models.conv import SAFE_CHANNELS, Conv2D


@pytest.mark.parametrize("channels", [4, 16])
@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("size,strides", [(7, 2), (8, 2), (9, 3), (6, (2, 1))])
def test_same_numbers_and_gradients_as_keras_conv(padding, size, strides, channels):
    # The reference is Keras' own Conv2D, whose strided 1x1 filter gradient is the kernel that
    # crashes at odd batches below 16 channels: compare at an even batch, where it works. At 4
    # channels ours takes its own filter gradient, at 16 it is Keras' Conv2D unchanged.
    x = tf.constant(np.random.default_rng(0).normal(size=(4, size, size, channels)).astype("float32"))
    ours = Conv2D(5, 1, strides=strides, padding=padding, use_bias=True, activation="relu")
    ref = keras.layers.Conv2D(5, 1, strides=strides, padding=padding, use_bias=True, activation="relu")
    ours(x), ref(x)
    ours.set_weights([w + 0.1 for w in ref.get_weights()])
    ref.set_weights(ours.get_weights())
    grads = []
    for layer in (ours, ref):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(y * y)
        grads.append((y, *tape.gradient(loss, [x, layer.kernel, layer.bias])))
    assert grads[0][0].shape == grads[1][0].shape == ours.compute_output_shape(x.shape)
    for a, b in zip(*grads):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-5)
    assert ours._strided_pointwise() and not Conv2D(5, 3, strides=2)._strided_pointwise()
    assert ours._crash_can_happen(x) == (channels < SAFE_CHANNELS)


def _ops(fn, *args):
    """`[(op type, strides)]` of every convolution op in the graph `fn` traces (nested functions too)."""
    graph = tf.function(fn).get_concrete_function(*args).graph
    gdef = graph.as_graph_def()
    nodes = list(gdef.node) + [n for f in gdef.library.function for n in f.node_def]
    return [(n.op, list(n.attr["strides"].list.i)) for n in nodes if n.op.startswith("Conv2D")]


@pytest.mark.parametrize("channels", [1, 4, 8, 15, 16, 32])
def test_inference_runs_the_strided_kernel_and_no_strided_filter_gradient_below_16_channels(channels):
    # The speed of inference: the forward pass is TensorFlow's strided 1x1 convolution at every
    # channel count (no slice + stride-1 conv). The crash: below 16 input channels the filter
    # gradient is a stride-1 Conv2DBackpropFilter; the strided one (the kernel that dies at odd
    # batches) is left only where it runs, at 16 channels and more.
    layer = Conv2D(8, 1, strides=2, padding="same", use_bias=False)
    x = tf.zeros([3, 14, 14, channels])
    layer(x)
    assert _ops(lambda z: layer(z), x) == [("Conv2D", [1, 2, 2, 1])]

    def filter_gradient(z):
        with tf.GradientTape() as tape:
            y = layer(z)
        return tape.gradient(y, layer.kernel)

    filters = [s for op, s in _ops(filter_gradient, x) if op == "Conv2DBackpropFilter"]
    assert filters == ([[1, 1, 1, 1]] if channels < SAFE_CHANNELS else [[1, 2, 2, 1]])


def test_odd_batch_filter_gradient_below_16_channels_in_process():
    # The shapes that kill Keras' Conv2D (batch 5, 4 channels): ours survives and its gradient is
    # sum over the subsample x[:, ::2, ::2] of x * dy, computed here in numpy.
    rng = np.random.default_rng(1)
    x = tf.constant(rng.normal(size=(5, 9, 9, 4)).astype("float32"))
    layer = Conv2D(6, 1, strides=2, padding="same", use_bias=False)
    layer(x)
    dy = rng.normal(size=(5, 5, 5, 6)).astype("float32")
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
    dx, dk = tape.gradient(y, [x, layer.kernel], output_gradients=tf.constant(dy))
    xs = x.numpy()[:, ::2, ::2]
    np.testing.assert_allclose(dk.numpy()[0, 0], np.einsum("bhwi,bhwo->io", xs, dy), rtol=1e-4, atol=1e-4)
    want_dx = np.zeros(x.shape, "float32")
    want_dx[:, ::2, ::2] = np.einsum("bhwo,io->bhwi", dy, layer.kernel.numpy()[0, 0])
    np.testing.assert_allclose(dx.numpy(), want_dx, rtol=1e-4, atol=1e-4)


def test_mixed_precision_and_xla():
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        layer = Conv2D(8, 1, strides=2, padding="same")
        x = tf.ones([3, 8, 8, 4])
        layer(x)
        with tf.GradientTape() as tape:
            y = layer(x)
            loss = tf.reduce_sum(tf.cast(y, "float32"))
        grads = tape.gradient(loss, layer.trainable_weights)
        assert y.dtype == tf.bfloat16 and all(g is not None and g.dtype == tf.float32 for g in grads)
    finally:
        keras.config.set_dtype_policy(policy)
    layer = Conv2D(8, 1, strides=2, padding="same")
    x = tf.random.normal([3, 8, 8, 4])
    layer(x)

    @tf.function(jit_compile=True)
    def step(z):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(z) ** 2)
        return tape.gradient(loss, layer.kernel)

    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x) ** 2)
    np.testing.assert_allclose(step(x).numpy(), tape.gradient(loss, layer.kernel).numpy(), rtol=1e-4, atol=1e-4)


def test_config_round_trip():
    layer = Conv2D(8, 1, strides=2, padding="same", name="proj")
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(again) is Conv2D and again.get_config() == layer.get_config()


_FIT_ON_ODD_BATCHES = textwrap.dedent("""
    import numpy as np, keras
    from amp_tf.method.anchoring import AnchoredModel
    from amp_tf.models import build_backbone
    rng = np.random.default_rng(0)
    # last batch of one image; every batch of one; one odd batch of five
    for width, n, batch in ((4, 3, 2), (8, 2, 1), (4, 5, 5)):
        model = AnchoredModel(build_backbone("resnet_small", (28, 28, 1), 10, width=width), mean=72.9, std=90.0)
        model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        x = rng.integers(0, 256, (n, 28, 28, 1)).astype("uint8")
        model.fit(x, rng.integers(0, 10, n), batch_size=batch, epochs=2, verbose=0)
    print("survived")
""")


@pytest.mark.slow
def test_odd_batches_no_longer_kill_the_process_at_widths_4_and_8():
    # Before amp_tf.models.conv this died with SIGSEGV / heap corruption (oneDNN, see its docstring).
    out = subprocess.run([sys.executable, "-c", _FIT_ON_ODD_BATCHES], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"exit {out.returncode}: {out.stderr[-2000:]}"
    assert out.stdout.strip().endswith("survived")
