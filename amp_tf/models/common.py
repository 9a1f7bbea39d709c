"""Layer helpers shared by the backbone builders."""
from __future__ import annotations

import keras

from amp_tf.models.batchnorm import BatchNorm
from amp_tf.models.conv import Conv2D

#: PyTorch's BatchNorm defaults (momentum 0.1 == Keras momentum 0.9, eps 1e-5).
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def regularizer(weight_decay: float | None):
    """Return an L2 kernel regulariser for ``weight_decay`` or ``None``."""
    return None if not weight_decay else keras.regularizers.L2(weight_decay)


def conv(filters, kernel_size, strides=1, *, name, weight_decay=None, use_bias=False):
    """He-normal ``Conv2D`` with "same" padding, no bias by default (BN follows).

    Our :class:`~amp_tf.models.conv.Conv2D`: a strided 1x1 conv avoids a oneDNN kernel crash.
    """
    return Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=use_bias,
        kernel_initializer="he_normal",
        kernel_regularizer=regularizer(weight_decay),
        name=name,
    )


def bn(name):
    """Batch normalisation (fused kernel, :class:`BatchNorm`) with PyTorch-matching momentum and epsilon."""
    return BatchNorm(
        momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name
    )


def relu(name):
    """Named ReLU activation layer."""
    return keras.layers.ReLU(name=name)


def classifier_head(x, num_classes, *, dropout=0.0, weight_decay=None):
    """Global average pool (layer ``"features"``), optional dropout, float32 logits."""
    x = keras.layers.GlobalAveragePooling2D(name="features")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    return keras.layers.Dense(
        num_classes,
        kernel_regularizer=regularizer(weight_decay),
        dtype="float32",  # logits stay float32 under a mixed-precision policy
        name="logits",
    )(x)
