"""``Conv2D``: Keras' Conv2D, whose strided 1x1 convolution gets a filter gradient that works.

TensorFlow's oneDNN CPU kernel of the filter gradient of a *strided 1x1*
convolution (``Conv2DBackpropFilter``, 1x1 kernel, stride 2) corrupts the heap
when the batch is odd and the input has fewer than 16 channels: the process
dies with SIGSEGV, "corrupted size vs. prev_size" or "munmap_chunk(): invalid
pointer". Every backbone of amp-tf has such a convolution (the projection
shortcut of a stage that halves the resolution), so training ``resnet_small``
at width 4 or 8 died on an odd batch (e.g. the last batch of one image of 129
images at batch size 128). The smallest reproduction is one eager op, no Keras
(``tests/test_conv.py``)::

    x = tf.random.normal([1, 28, 28, 4]); dy = tf.random.normal([1, 14, 14, 8])
    tf.raw_ops.Conv2DBackpropFilter(input=x, filter_sizes=[1, 1, 4, 8], out_backprop=dy,
                                    strides=[1, 2, 2, 1], padding="SAME")   # dies

Measured on TF 2.21, 2 CPU cores, AVX-512 (one subprocess per case, 20 calls
each): it dies at every odd batch tried (1, 3, 5, 7, 9, 33, 127) with 1 to 15
input channels (1, 2, 4, 8, 9, 12, 15), and runs at even batches (2, 4, 6, 10,
64, 126, 128), with 16 or more input channels (16, 17, 24, 32, at every batch),
with stride 1, with a 3x3 kernel, and with ``TF_ENABLE_ONEDNN_OPTS=0``. The
forward convolution and the input gradient (``Conv2DBackpropInput``) of the same
shapes run at every batch.

So only the *filter gradient* needs another kernel, and only below 16 input
channels. A 1x1 convolution with stride s reads exactly the pixels
``x[:, ::s, ::s]`` (with ``"same"`` and ``"valid"`` padding alike: a 1x1 kernel
needs no padding), so its filter gradient is the stride-1 filter gradient of
that subsample. Where the crash can happen (strided 1x1, fewer than 16 input
channels, TensorFlow backend) this layer runs Keras' own strided convolution
forward with a custom gradient that computes the filter gradient that way (the
input gradient is TensorFlow's own); everywhere else it is Keras' Conv2D
unchanged. The forward pass, and so inference, always runs TensorFlow's
strided kernel: computing every strided 1x1 convolution as slice + stride-1
conv (this layer's first form, dc448c0) cost the width-16 backbone's inference
a fifth of its speed (``python -m benchmarks.speed --against 6c7eddd``), because
TensorFlow's ``StridedSlice`` with steps in two axes is slow on CPU: 3.6 ms for
``x[:, ::2, ::2]`` of a (128, 28, 28, 16) tensor, against 0.6 ms for the whole
strided convolution and 0.4 ms for the same subsample as a 1x1 average pool
(which the safe gradient uses).

Example:
    >>> import numpy as np, keras
    >>> x = np.random.default_rng(0).normal(size=(1, 7, 7, 4)).astype("float32")
    >>> ours = Conv2D(8, 1, strides=2, padding="same", use_bias=False)
    >>> ref = keras.layers.Conv2D(8, 1, strides=2, padding="same", use_bias=False)
    >>> _ = ours(x), ref(x)
    >>> ref.set_weights(ours.get_weights())
    >>> bool(np.allclose(ours(x), ref(x), atol=1e-6))
    True
"""
from __future__ import annotations

import keras

#: Conv2DBackpropFilter of a strided 1x1 convolution dies at odd batches below this many input channels.
SAFE_CHANNELS = 16


def _safe_filter_gradient_conv(x, kernel, strides):
    """Keras' strided 1x1 convolution whose filter gradient runs on the subsample with stride 1.

    The forward pass and the input gradient are TensorFlow's own kernels (they
    run at every batch); the filter gradient ``sum x[:, ::s, ::s] * dy`` is
    ``Conv2DBackpropFilter`` with stride 1 on the subsample, which has no crash.
    """
    import tensorflow as tf

    sh, sw = strides
    step = [1, sh, sw, 1]

    @tf.custom_gradient
    def conv(x, kernel):
        def grad(dy):
            dx = tf.raw_ops.Conv2DBackpropInput(input_sizes=tf.shape(x), filter=kernel, out_backprop=dy,
                                                strides=step, padding="VALID")
            # x[:, ::sh, ::sw] as a 1x1 average pool: the same numbers, 10x faster than StridedSlice
            sub = tf.nn.avg_pool2d(x, ksize=1, strides=(sh, sw), padding="VALID")
            dk = tf.raw_ops.Conv2DBackpropFilter(input=sub, filter_sizes=tf.shape(kernel),
                                                 out_backprop=dy, strides=[1, 1, 1, 1], padding="VALID")
            return dx, dk

        return tf.nn.conv2d(x, kernel, strides=step, padding="VALID"), grad

    # tensors, not variables: the gradient flows to a variable through its read
    return conv(tf.convert_to_tensor(x), tf.convert_to_tensor(kernel))


@keras.saving.register_keras_serializable(package="amp_tf")
class Conv2D(keras.layers.Conv2D):
    """``keras.layers.Conv2D``; a strided 1x1 convolution over < 16 channels gets a safe filter gradient.

    Accepts every ``keras.layers.Conv2D`` argument; see the module docstring for why.
    """

    def _strided_pointwise(self):
        return (
            tuple(self.kernel_size) == (1, 1)
            and tuple(self.strides) != (1, 1)
            and tuple(self.dilation_rate) == (1, 1)
            and self.data_format == "channels_last"
            and self.groups == 1
        )

    def _crash_can_happen(self, inputs):
        """The oneDNN filter gradient can die here: strided 1x1, < 16 input channels, TensorFlow."""
        channels = inputs.shape[-1]
        return (
            self._strided_pointwise()
            and channels is not None
            and channels < SAFE_CHANNELS
            and keras.backend.backend() == "tensorflow"
        )

    def convolution_op(self, inputs, kernel):
        if not self._crash_can_happen(inputs):
            return super().convolution_op(inputs, kernel)
        # convert_to_tensor applies the layer's autocast (mixed precision) to the kernel
        kernel = keras.ops.convert_to_tensor(kernel)
        return _safe_filter_gradient_conv(keras.ops.convert_to_tensor(inputs), kernel, self.strides)
