"""``Conv2D``: Keras' Conv2D, with strided 1x1 convolutions run as a subsample and a stride-1 conv.

TensorFlow's oneDNN CPU kernel of the filter gradient of a *strided 1x1*
convolution (``Conv2DBackpropFilter``, 1x1 kernel, stride 2) corrupts the heap
when the batch is odd and the input has few channels: the process dies with
SIGSEGV, "corrupted size vs. prev_size" or "munmap_chunk(): invalid pointer".
Every backbone of amp-tf has such a convolution (the projection shortcut of a
stage that halves the resolution), so training ``resnet_small`` at width 4 or 8
died on a batch of one image (e.g. the last batch of 129 images at batch size
128). The smallest reproduction is one eager op, no Keras
(``tests/test_conv.py``)::

    x = tf.random.normal([1, 28, 28, 4]); dy = tf.random.normal([1, 14, 14, 8])
    tf.raw_ops.Conv2DBackpropFilter(input=x, filter_sizes=[1, 1, 4, 8], out_backprop=dy,
                                    strides=[1, 2, 2, 1], padding="SAME")   # dies

Measured on TF 2.21, 2 CPU cores (one subprocess per case): it dies at batch 1
and 3 with 1-8 input channels at 28x28 and 14x14 (4 -> 8, 2 -> 4, 4 -> 4, 1 -> 8,
4 -> 1, 8 -> 16), and runs at batch 2 and 4, with 16 or more input channels, at
8x8, with stride 1, with a 3x3 kernel, with stride 3, and with
``TF_ENABLE_ONEDNN_OPTS=0``.

A 1x1 convolution with stride s reads exactly the pixels ``x[:, ::s, ::s]``
(with ``"same"`` and ``"valid"`` padding alike: a 1x1 kernel needs no padding),
so this layer computes it as that subsample followed by a stride-1 1x1
convolution: the same numbers, the same variables and config, and kernels that
work. Every other convolution is Keras' own.

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


@keras.saving.register_keras_serializable(package="amp_tf")
class Conv2D(keras.layers.Conv2D):
    """``keras.layers.Conv2D``; a strided 1x1 convolution runs as ``x[:, ::s, ::s]`` + a stride-1 conv.

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

    def convolution_op(self, inputs, kernel):
        if not self._strided_pointwise():
            return super().convolution_op(inputs, kernel)
        sh, sw = self.strides
        return keras.ops.conv(inputs[:, ::sh, ::sw, :], kernel, strides=1, padding="valid",
                              data_format=self.data_format)
