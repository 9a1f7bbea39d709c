"""amp_tf.models.conv.Conv2D: the strided 1x1 convolution that avoids a oneDNN kernel crash."""
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from amp_tf.models.conv import Conv2D


@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("size,strides", [(7, 2), (8, 2), (9, 3), (6, (2, 1))])
def test_same_numbers_and_gradients_as_keras_conv(padding, size, strides):
    # The reference is Keras' own Conv2D, whose strided 1x1 gradient is the kernel that crashes
    # at batch 1 or 3 with few channels: compare at a shape where it works (batch 4, 16 channels).
    x = tf.constant(np.random.default_rng(0).normal(size=(4, size, size, 16)).astype("float32"))
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


def test_config_round_trip():
    layer = Conv2D(8, 1, strides=2, padding="same", name="proj")
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(again) is Conv2D and again.get_config() == layer.get_config()


_FIT_ON_ODD_BATCHES = textwrap.dedent("""
    import numpy as np, keras
    from amp_tf.anchoring import AnchoredModel
    from amp_tf.models import build_backbone
    rng = np.random.default_rng(0)
    for width, n, batch in ((4, 3, 2), (8, 2, 1)):  # last batch of one image; every batch of one
        model = AnchoredModel(build_backbone("resnet_small", (28, 28, 1), 10, width=width), mean=72.9, std=90.0)
        model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        x = rng.integers(0, 256, (n, 28, 28, 1)).astype("uint8")
        model.fit(x, rng.integers(0, 10, n), batch_size=batch, epochs=2, verbose=0)
    print("survived")
""")


@pytest.mark.slow
def test_batches_of_one_image_no_longer_kill_the_process_at_widths_4_and_8():
    # Before amp_tf.models.conv this died with SIGSEGV / heap corruption (oneDNN, see its docstring).
    out = subprocess.run([sys.executable, "-c", _FIT_ON_ODD_BATCHES], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"exit {out.returncode}: {out.stderr[-2000:]}"
    assert out.stdout.strip().endswith("survived")
