"""The per-channel affine preprocessing that `anchor_backbone` absorbs (`Rescaling`,
`Normalization`, `PixelNormalization`, constant ``x * s + b`` ops): each layer as a `Stage`
``y = a * x + b``, and their composition as pixel statistics ``(mean, std)``
(`stage_statistics`). Plain Keras and numpy, read by `amp_tf.models.anchor`."""
from __future__ import annotations

from typing import NamedTuple

import keras
import numpy as np
from keras import ops


SUPPORTED = (
    "anchor_backbone supports Functional/Sequential models with one rank-4 "
    "channels_last image input that reaches Conv2D layers (groups=1) first, "
    "optionally through per-channel affine preprocessing (Rescaling, "
    "Normalization, x * s + b), ZeroPadding2D/Cropping2D/Identity, or nested "
    "Functional/Sequential models of that form."
)


# keras.ops classes (op layers such as `x * 2.0`) that are affine in one tensor
# argument when the other argument is a constant.
_AFFINE_OPS = ("Add", "Subtract", "Multiply", "Divide", "TrueDivide")


class Stage(NamedTuple):
    """One absorbed per-channel affine map ``y = a * x + b`` (float64, shape (C,))."""

    layer: object
    a: np.ndarray
    b: np.ndarray


def is_pixel_normalization(layer) -> bool:
    from amp_tf.models.pixels import PixelNormalization

    return isinstance(layer, PixelNormalization)


def per_channel(value, channels, what):
    """``value`` as a float64 (C,) array: one value per channel, or one for all."""
    v = np.asarray(ops.convert_to_numpy(value) if hasattr(value, "shape") and not isinstance(value, np.ndarray)
                   else value, dtype="float64")
    if v.size == 1:
        return np.full(channels, float(v.reshape(-1)[0]))
    if v.size == channels and v.shape[-1] == channels:
        return v.reshape(channels)
    raise ValueError(
        f"{what} has shape {v.shape}: not one value per channel ({channels}), so it is not a "
        f"per-channel map of the pixels and cannot be absorbed. {SUPPORTED}"
    )


def affine_stage(layer, args, tensor, channels):
    """The `Stage` for a per-channel affine ``layer`` applied to ``tensor``, or None."""
    where = describe_layer(layer)
    if isinstance(layer, keras.layers.Rescaling):
        return Stage(layer, per_channel(layer.scale, channels, f"scale of {where}"),
                     per_channel(layer.offset, channels, f"offset of {where}"))
    if isinstance(layer, keras.layers.Normalization):
        if tuple(a % 4 for a in layer.axis) not in ((), (3,)):
            raise ValueError(f"{where} normalises over axis {layer.axis}, not per channel (axis=-1). {SUPPORTED}")
        mean = per_channel(layer.mean, channels, f"mean of {where}")
        std = np.maximum(np.sqrt(per_channel(layer.variance, channels, f"variance of {where}")),
                         keras.backend.epsilon())
        return Stage(layer, std, mean) if layer.invert else Stage(layer, 1.0 / std, -mean / std)
    if is_pixel_normalization(layer):
        mean, std = (per_channel(v, channels, where) for v in (layer.mean, layer.std))
        return Stage(layer, 1.0 / std, -mean / std)
    if isinstance(layer, keras.layers.Layer) or type(layer).__name__ not in _AFFINE_OPS:
        return None
    consts = [a for a in args if a is not tensor]
    if len(args) != 2 or len(consts) != 1 or isinstance(consts[0], (keras.KerasTensor, keras.Variable)):
        return None
    c = per_channel(consts[0], channels, f"the constant of {where}")
    first = args[0] is tensor
    name = type(layer).__name__
    if name == "Add":
        return Stage(layer, np.ones(channels), c)
    if name == "Subtract":
        return Stage(layer, np.ones(channels), -c) if first else Stage(layer, -np.ones(channels), c)
    if name == "Multiply":
        return Stage(layer, c, np.zeros(channels))
    return Stage(layer, 1.0 / c, np.zeros(channels)) if first else None  # c / x is not affine


def stage_name(stage):
    layer = stage.layer
    return layer if isinstance(layer, str) else f"{layer.name} ({type(layer).__name__})"


def stage_statistics(model, stages, channels, mean=None, std=None):
    """The pixel statistics ``(mean, std)`` (float32, (C,)) equivalent to the absorbed ``stages``.

    User-given ``mean``/``std`` replace the model's own `PixelNormalization`, or
    come before its other preprocessing when it has none.
    """
    from amp_tf.models.pixels import check_stats

    stages = list(stages)
    if (mean is None) != (std is None):
        raise ValueError("mean/std: pass both (per-channel, in pixel units) or neither.")
    if mean is not None:
        m, s = per_channel(mean, channels, "mean"), per_channel(std, channels, "std")
        if np.any(s <= 0) or not np.all(np.isfinite(np.concatenate([m, s]))):
            raise ValueError(f"mean/std: expected finite values and std > 0, got {m.tolist()} / {s.tolist()}.")
        given = Stage("the given mean/std", 1.0 / s, -m / s)
        own = [i for i, st in enumerate(stages) if is_pixel_normalization(st.layer)]
        if own:
            stages[own[0]] = given
        else:
            stages.insert(0, given)
    a, b = np.ones(channels), np.zeros(channels)
    for st in stages:
        a, b = st.a * a, st.a * b + st.b
    names = ", ".join(stage_name(st) for st in stages) or "none"
    if np.any(a <= 0) or not np.all(np.isfinite(np.concatenate([a, b]))):
        raise ValueError(
            f"Model {model.name!r}: its preprocessing ({names}) maps pixels x to a * x + b with "
            f"a = {_fmt(a)}: pixel statistics need a finite a > 0 per channel."
        )
    mean, std = (-b / a + 0.0).astype("float32"), (1.0 / a).astype("float32")
    try:
        check_stats(mean, std, channels)
    except ValueError as err:
        raise ValueError(
            f"Model {model.name!r}: its preprocessing ({names}) normalises with mean "
            f"{_fmt(mean)} / std {_fmt(std)}: it expects images in [0, 1], while amp-tf "
            "feeds raw pixels (0..255). If the model takes x / 255, pass mean=0, std=255 (they "
            f"are composed with the model's own preprocessing). ({err})"
        ) from None
    return mean, std


def _fmt(values):
    return "[" + ", ".join(f"{float(v):.4g}" for v in values) + "]"


def describe_layer(layer):
    return f"layer {layer.name!r} ({type(layer).__name__})"
