"""ResNet backbones: CIFAR-stem ResNet-18/34/50, ImageNet ResNet-50, small ResNet."""
from __future__ import annotations

import keras

from amp_tf.models.common import bn, classifier_head, conv, relu
from amp_tf.models.registry import register_backbone


def basic_block(x, filters, strides, *, name, weight_decay=None):
    """Post-activation basic block (two 3×3 convs), projection shortcut if needed."""
    in_ch = x.shape[-1]
    h = conv(filters, 3, strides, name=f"{name}_conv1", weight_decay=weight_decay)(x)
    h = bn(f"{name}_bn1")(h)
    h = relu(f"{name}_relu1")(h)
    h = conv(filters, 3, 1, name=f"{name}_conv2", weight_decay=weight_decay)(h)
    h = bn(f"{name}_bn2")(h)
    shortcut = x
    if strides != 1 or in_ch != filters:
        shortcut = conv(
            filters, 1, strides, name=f"{name}_proj_conv", weight_decay=weight_decay
        )(x)
        shortcut = bn(f"{name}_proj_bn")(shortcut)
    x = keras.layers.Add(name=f"{name}_add")([shortcut, h])
    return relu(f"{name}_out")(x)


def bottleneck_block(x, filters, strides, *, name, weight_decay=None, expansion=4):
    """Bottleneck block (1×1, 3×3 with stride, 1×1 ×4), as in torchvision (v1.5)."""
    in_ch = x.shape[-1]
    out_ch = filters * expansion
    h = conv(filters, 1, 1, name=f"{name}_conv1", weight_decay=weight_decay)(x)
    h = bn(f"{name}_bn1")(h)
    h = relu(f"{name}_relu1")(h)
    h = conv(filters, 3, strides, name=f"{name}_conv2", weight_decay=weight_decay)(h)
    h = bn(f"{name}_bn2")(h)
    h = relu(f"{name}_relu2")(h)
    h = conv(out_ch, 1, 1, name=f"{name}_conv3", weight_decay=weight_decay)(h)
    h = bn(f"{name}_bn3")(h)
    shortcut = x
    if strides != 1 or in_ch != out_ch:
        shortcut = conv(
            out_ch, 1, strides, name=f"{name}_proj_conv", weight_decay=weight_decay
        )(x)
        shortcut = bn(f"{name}_proj_bn")(shortcut)
    x = keras.layers.Add(name=f"{name}_add")([shortcut, h])
    return relu(f"{name}_out")(x)


def resnet(
    inputs,
    num_classes,
    *,
    block,
    blocks_per_stage,
    widths=(64, 128, 256, 512),
    strides=(1, 2, 2, 2),
    stem="cifar",
    stem_width=64,
    dropout=0.0,
    weight_decay=None,
):
    """Generic ResNet graph on ``inputs``; returns the logits tensor.

    Args:
        inputs: Input tensor ``(B, H, W, C)``.
        num_classes: Number of logits.
        block: ``basic_block`` or ``bottleneck_block``.
        blocks_per_stage: Number of blocks in each stage.
        widths: Base filters of each stage.
        strides: Stride of the first block of each stage.
        stem: ``"cifar"`` (3×3 stride-1 conv) or ``"imagenet"`` (7×7 stride-2
            conv and 3×3 stride-2 max-pool).
        stem_width: Filters of the stem conv.
        dropout: Dropout rate before the classifier (0 = none).
        weight_decay: Optional L2 kernel regulariser factor.

    Example:
        >>> import keras
        >>> x = keras.Input((32, 32, 6))
        >>> y = resnet(x, 10, block=basic_block, blocks_per_stage=(1, 1),
        ...            widths=(8, 16), strides=(1, 2))
        >>> keras.Model(x, y).output.shape
        (None, 10)
    """
    if stem == "cifar":
        x = conv(stem_width, 3, 1, name="stem_conv", weight_decay=weight_decay)(inputs)
        x = bn("stem_bn")(x)
        x = relu("stem_relu")(x)
    elif stem == "imagenet":
        x = conv(stem_width, 7, 2, name="stem_conv", weight_decay=weight_decay)(inputs)
        x = bn("stem_bn")(x)
        x = relu("stem_relu")(x)
        x = keras.layers.MaxPooling2D(3, 2, padding="same", name="stem_pool")(x)
    else:
        raise ValueError(f"stem must be 'cifar' or 'imagenet'; got {stem!r}.")
    for s, (n, width, stride) in enumerate(zip(blocks_per_stage, widths, strides), 1):
        for b in range(1, n + 1):
            x = block(
                x,
                width,
                stride if b == 1 else 1,
                name=f"stage{s}_block{b}",
                weight_decay=weight_decay,
            )
    return classifier_head(x, num_classes, dropout=dropout, weight_decay=weight_decay)


@register_backbone("resnet18")
def resnet18(inputs, num_classes, dropout=0.0, weight_decay=None):
    """ResNet-18 with the CIFAR stem (11.17 M params for 10 classes, 3 channels)."""
    return resnet(inputs, num_classes, block=basic_block, blocks_per_stage=(2, 2, 2, 2),
                  dropout=dropout, weight_decay=weight_decay)


@register_backbone("resnet34")
def resnet34(inputs, num_classes, dropout=0.0, weight_decay=None):
    """ResNet-34 with the CIFAR stem."""
    return resnet(inputs, num_classes, block=basic_block, blocks_per_stage=(3, 4, 6, 3),
                  dropout=dropout, weight_decay=weight_decay)


@register_backbone("resnet50")
def resnet50(inputs, num_classes, dropout=0.0, weight_decay=None):
    """ResNet-50 (bottleneck) with the CIFAR stem."""
    return resnet(inputs, num_classes, block=bottleneck_block,
                  blocks_per_stage=(3, 4, 6, 3), dropout=dropout,
                  weight_decay=weight_decay)


@register_backbone("resnet50_imagenet")
def resnet50_imagenet(inputs, num_classes, dropout=0.0, weight_decay=None):
    """ResNet-50 with the ImageNet stem (7×7/2 conv, 3×3/2 max-pool)."""
    return resnet(inputs, num_classes, block=bottleneck_block,
                  blocks_per_stage=(3, 4, 6, 3), stem="imagenet", dropout=dropout,
                  weight_decay=weight_decay)


@register_backbone("resnet_small")
def resnet_small(inputs, num_classes, width=32, dropout=0.0, weight_decay=None):
    """Small, CPU-friendly ResNet for 28×28 inputs.

    3×3 stem conv with ``width`` filters, three stages of one basic block each
    (``width``, ``2*width``, ``4*width`` filters; strides 1/2/2), global
    average pooling, dropout (optional) and a dense classifier.
    """
    return resnet(inputs, num_classes, block=basic_block, blocks_per_stage=(1, 1, 1),
                  widths=(width, 2 * width, 4 * width), strides=(1, 2, 2),
                  stem_width=width, dropout=dropout, weight_decay=weight_decay)
