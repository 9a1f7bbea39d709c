"""Registry of backbone builders and the ``build_backbone`` entry point."""
from __future__ import annotations

from typing import Callable

import keras

# name -> builder(inputs, num_classes, **kwargs) -> logits tensor
_BACKBONES: dict[str, Callable] = {}


def register_backbone(name: str) -> Callable:
    """Register a backbone builder under ``name``.

    The decorated function receives the model's input tensor, the number of
    classes and the builder's keyword arguments, and returns the logits tensor.
    ``build_backbone`` wraps it in a functional ``keras.Model``.

    Args:
        name: Registry key, e.g. ``"resnet18"``. Must be unique.

    Returns:
        A decorator that registers and returns the builder unchanged.

    Raises:
        ValueError: If ``name`` is already registered.

    Example:
        >>> import keras
        >>> @register_backbone("tiny_example")
        ... def tiny(inputs, num_classes, **kwargs):
        ...     x = keras.layers.Conv2D(4, 3, name="stem_conv")(inputs)
        ...     x = keras.layers.GlobalAveragePooling2D(name="features")(x)
        ...     return keras.layers.Dense(num_classes)(x)
        >>> "tiny_example" in backbone_names()
        True
        >>> _ = _BACKBONES.pop("tiny_example")  # keep the registry clean
    """

    def decorator(fn: Callable) -> Callable:
        if name in _BACKBONES:
            raise ValueError(f"Backbone {name!r} is already registered.")
        _BACKBONES[name] = fn
        return fn

    return decorator


def backbone_names() -> list[str]:
    """Return the sorted names of all registered backbones.

    Example:
        >>> "resnet18" in backbone_names()
        True
    """
    return sorted(_BACKBONES)


def build_backbone(
    name: str,
    input_shape: tuple[int, int, int],
    num_classes: int,
    anchored: bool = True,
    mean=None,
    std=None,
    check_pixels: bool = True,
    **kwargs,
) -> keras.Model:
    """Build a registered backbone as a functional Keras model returning logits.

    Args:
        name: A name from ``backbone_names()``.
        input_shape: The IMAGE shape ``(H, W, C)``. With ``anchored=True`` the
            model input is ``(H, W, 2C)``: the anchor ``c`` and the residual
            ``x - c`` concatenated on the channel axis.
        num_classes: Number of output logits.
        anchored: Whether to build the anchored (2C-channel) model. An anchored
            backbone takes normalised `[c, x - c]`; `AnchoredModel` and
            `AnchoredPredictor` own the normalisation and feed it.
        mean, std: Per-channel statistics of the training images in pixel
            units (vanilla models only): the model starts with a
            `PixelNormalization` layer, so it takes raw pixels (uint8 or float
            0..255) like every amp-tf model. None: 127.5 / 127.5.
        check_pixels: Reject input that is not raw pixels (vanilla models).
        **kwargs: Builder options, e.g. ``dropout`` or ``weight_decay``
            (L2 kernel regulariser factor; ``None`` = no regulariser, the
            default, weight decay is expected to come from the optimizer).

    Returns:
        A randomly initialised functional ``keras.Model`` named after the
        architecture (suffix ``_anchored`` when anchored). Its first weighted
        layer is the ``Conv2D`` ``"stem_conv"``; the globally pooled features
        are the output of the layer ``"features"``; the float32 logits come
        from the ``Dense`` layer ``"logits"``.

    Raises:
        ValueError: For an unknown name (the message lists the known ones) or
            an invalid ``input_shape`` / ``num_classes``.

    Example:
        >>> m = build_backbone("resnet_small", (28, 28, 1), 10)
        >>> m.input.shape, m.output.shape
        ((None, 28, 28, 2), (None, 10))
    """
    input_shape = _check_request(name, input_shape, num_classes)
    inputs, x = _image_input(input_shape, anchored, mean, std, check_pixels)
    outputs = _BACKBONES[name](x, num_classes, **kwargs)
    return keras.Model(inputs, outputs, name=f"{name}_anchored" if anchored else name)


def _check_request(name, input_shape, num_classes):
    """The image shape as a tuple; ValueError for an unknown name, shape or class count."""
    if name not in _BACKBONES:
        raise ValueError(
            f"Unknown backbone {name!r}. Known backbones: {', '.join(backbone_names())}."
        )
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or not all(
        isinstance(d, int) and d > 0 for d in input_shape[2:]
    ):
        raise ValueError(
            f"input_shape must be an image shape (H, W, C) with a known channel "
            f"count; got {input_shape!r}."
        )
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int; got {num_classes!r}.")
    return input_shape


def _image_input(input_shape, anchored, mean, std, check_pixels):
    """``(keras.Input, the tensor the architecture starts from)``: the 2C-channel anchored
    input as is, or the C-channel raw pixels behind a `PixelNormalization` (vanilla)."""
    h, w, c = input_shape
    inputs = keras.Input(
        shape=(h, w, 2 * c if anchored else c),
        name="anchored_input" if anchored else "input",
    )
    if anchored:
        return inputs, inputs
    from amp_tf.models.pixels import pixel_normalization

    return inputs, pixel_normalization(mean, std, c, check_pixels)(inputs)
