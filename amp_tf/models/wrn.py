"""Wide ResNet (Zagoruyko & Komodakis, 2016), e.g. WRN-40-2."""
from __future__ import annotations

import keras

from amp_tf.models.common import bn, classifier_head, conv, relu
from amp_tf.models.registry import register_backbone


def wide_basic_block(x, filters, strides, *, name, dropout=0.0, weight_decay=None):
    """Pre-activation wide block: BN-ReLU-conv3×3-BN-ReLU-dropout-conv3×3 + shortcut.

    As in the reference implementation, a projection (1×1 conv) shortcut is
    applied to the pre-activated input when the width or resolution changes;
    otherwise the raw input is added.
    """
    in_ch = x.shape[-1]
    o = bn(f"{name}_bn1")(x)
    o = relu(f"{name}_relu1")(o)
    if strides == 1 and in_ch == filters:
        shortcut = x
    else:
        shortcut = conv(
            filters, 1, strides, name=f"{name}_proj_conv", weight_decay=weight_decay
        )(o)
    h = conv(filters, 3, strides, name=f"{name}_conv1", weight_decay=weight_decay)(o)
    h = bn(f"{name}_bn2")(h)
    h = relu(f"{name}_relu2")(h)
    if dropout:
        h = keras.layers.Dropout(dropout, name=f"{name}_dropout")(h)
    h = conv(filters, 3, 1, name=f"{name}_conv2", weight_decay=weight_decay)(h)
    return keras.layers.Add(name=f"{name}_add")([shortcut, h])


def wide_resnet(inputs, num_classes, *, depth=40, widen_factor=2, dropout=0.3,
                weight_decay=None):
    """WRN-``depth``-``widen_factor`` graph on ``inputs``; returns logits.

    Args:
        inputs: Input tensor ``(B, H, W, C)``.
        num_classes: Number of logits.
        depth: Total depth; ``(depth - 4)`` must be divisible by 6.
        widen_factor: Width multiplier k (stage widths 16k, 32k, 64k).
        dropout: Dropout rate between the two convs of each block.
        weight_decay: Optional L2 kernel regulariser factor.

    Example:
        >>> import keras
        >>> x = keras.Input((32, 32, 6))
        >>> keras.Model(x, wide_resnet(x, 10, depth=10, widen_factor=1)).output.shape
        (None, 10)
    """
    if (depth - 4) % 6:
        raise ValueError(f"WideResNet depth must be 6n + 4; got {depth}.")
    n = (depth - 4) // 6
    x = conv(16, 3, 1, name="stem_conv", weight_decay=weight_decay)(inputs)
    for s, (width, stride) in enumerate(
        zip((16 * widen_factor, 32 * widen_factor, 64 * widen_factor), (1, 2, 2)), 1
    ):
        for b in range(1, n + 1):
            x = wide_basic_block(
                x, width, stride if b == 1 else 1, name=f"stage{s}_block{b}",
                dropout=dropout, weight_decay=weight_decay,
            )
    x = bn("final_bn")(x)
    x = relu("final_relu")(x)
    return classifier_head(x, num_classes, weight_decay=weight_decay)


@register_backbone("wrn40_2")
def wrn40_2(inputs, num_classes, dropout=0.3, weight_decay=None):
    """WRN-40-2 (2,243,546 trainable params for 10 classes, 3 input channels)."""
    return wide_resnet(inputs, num_classes, depth=40, widen_factor=2, dropout=dropout,
                       weight_decay=weight_decay)
