"""``BatchNorm``: Keras' BatchNormalization run by TensorFlow's fused kernel.

Keras 3 computes batch normalisation from separate ops (moments, then
``x * scale + offset``) and differentiates through each of them. TensorFlow has
one fused kernel for it (``FusedBatchNormV3`` and its gradient; oneDNN on CPU,
cuDNN on GPU), and its graph optimiser folds the inference form into the
preceding convolution. One training step of the anchored ``resnet_small``
(width 32, batch 128) takes 193 ms instead of 270 ms on 2 CPU cores
(``python -m benchmarks.speed --quick --sections internals``; BENCHMARKS.md section 6).

``BatchNorm`` is a drop-in subclass: same variables, same config, same maths
(normalisation with the biased batch variance; moving statistics updated with
the biased variance and ``momentum`` exactly as Keras does). It uses the fused
kernel only where it computes the same thing: the TensorFlow backend, a 4-D
channels-last input, no mask, no renorm, not synchronised across replicas,
with both ``scale`` and ``center``; anywhere else it is Keras'
BatchNormalization. The one difference: epsilon is at least 1.001e-5 (cuDNN's
minimum, as Keras 2's fused path did), so a layer built with 1e-5 differs from
Keras' by < 1e-8 relative.

Example:
    >>> import numpy as np, keras
    >>> from amp_tf.models.batchnorm import BatchNorm
    >>> x = np.random.default_rng(0).normal(size=(4, 5, 5, 3)).astype("float32")
    >>> a, b = BatchNorm(epsilon=1e-3), keras.layers.BatchNormalization(epsilon=1e-3)
    >>> bool(np.allclose(a(x, training=True), b(x, training=True), atol=1e-5))
    True
"""
from __future__ import annotations

import keras

#: cuDNN refuses a smaller epsilon; tf.nn.fused_batch_norm clamps to this too.
MIN_FUSED_EPSILON = 1.001e-5


@keras.saving.register_keras_serializable(package="amp_tf")
class BatchNorm(keras.layers.BatchNormalization):
    """BatchNormalization computed by TensorFlow's fused kernel where it is exact.

    Accepts every ``keras.layers.BatchNormalization`` argument; see the module
    docstring for when it falls back to the Keras implementation.
    """

    def _fusable(self, inputs, training, mask):
        return (
            keras.backend.backend() == "tensorflow"
            and mask is None
            and isinstance(training, (bool, type(None)))
            and len(inputs.shape) == 4
            and self.axis in (-1, 3)
            and not self.renorm
            and not self.synchronized
            and self.scale
            and self.center
        )

    def call(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        x = tf.cast(inputs, tf.float32)
        gamma = tf.cast(self.gamma, tf.float32)
        beta = tf.cast(self.beta, tf.float32)
        eps = max(float(self.epsilon), MIN_FUSED_EPSILON)
        if bool(training) and self.trainable:
            y, mean, var, _, _, _ = tf.raw_ops.FusedBatchNormV3(
                x=x, scale=gamma, offset=beta, mean=tf.constant([], tf.float32),
                variance=tf.constant([], tf.float32), epsilon=eps,
                exponential_avg_factor=1.0, data_format="NHWC", is_training=True)
            # The kernel returns the Bessel-corrected variance; Keras averages the biased one.
            n = tf.cast(tf.reduce_prod(tf.shape(x)[:3]), tf.float32)
            var = var * ((n - 1.0) / tf.maximum(n, 1.0))
            moving_mean = tf.cast(self.moving_mean, tf.float32)
            moving_var = tf.cast(self.moving_variance, tf.float32)
            self.moving_mean.assign(moving_mean * self.momentum + mean * (1.0 - self.momentum))
            self.moving_variance.assign(moving_var * self.momentum + var * (1.0 - self.momentum))
        else:
            y, _, _, _, _, _ = tf.raw_ops.FusedBatchNormV3(
                x=x, scale=gamma, offset=beta, mean=tf.cast(self.moving_mean, tf.float32),
                variance=tf.cast(self.moving_variance, tf.float32), epsilon=eps,
                exponential_avg_factor=1.0, data_format="NHWC", is_training=False)
        return tf.cast(y, self.compute_dtype)
