"""Raw pixels in: the normalisation every amp-tf model carries, and its input check.

Users pass images as they load them: uint8, or float in pixel units [0, 255].
Each model owns a `PixelNormalization` layer holding the per-channel mean and
std of its training images (pixel units), saved and restored with the model,
so nobody keeps a `normalization.json` beside the weights.

The input check (`check_pixels`, and the same rule in-graph) rejects the two
natural mistakes, which otherwise give a silently wrong answer:

* values below 0: the images are already normalised (`(x - mean) / std`);
* values in [0, 1] that are not whole numbers: the images were divided by 255.

The `x / 255` rule judges the whole array (numpy entry points; in-graph, the
batch): a single image whose pixels are all at most `DARK_MAX` (0.5) is taken
for what it can be, a legitimate dark image in pixel units, and passes; a
batch of several such images, or one with a pixel above 0.5, does not come out
of an image decoder in pixel units and is refused with the override named.

The rule was measured on every offline set (ID, OOD, corrupted, resized: all
pass, see `tests/test_pixels.py`); a legitimate image never has a negative
value, and a batch whose every pixel is at most 1.0 *and* fractional does not
come out of an image decoder or a resize of one. Values above 255 are rejected
too. Users with their own preprocessing switch the check off with
`check_pixels=False` (the layer then only normalises; pass mean 0 and std 1 to
make it the identity).

Example:

>>> import numpy as np
>>> norm = PixelNormalization(mean=[72.9], std=[90.0])
>>> x = np.full((2, 4, 4, 1), 72.9, "float32")
>>> float(np.abs(norm(x)).max()) < 1e-5
True
>>> check_pixels(np.full((2, 4, 4, 1), 0.5, "float32"))
Traceback (most recent call last):
...
ValueError: images: all values are in [0, 1] and fractional: this looks like `x / 255`. amp-tf models take raw pixels (uint8, or float in 0..255) and normalise themselves; pass the images as loaded (or set check_pixels=False if your pixels really are in [0, 1]).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

#: Used when a model is given no statistics: maps 0..255 to [-1, 1].
DEFAULT_MEAN = 127.5
DEFAULT_STD = 127.5

_NEGATIVE = (
    "images: contain negative values: this looks already normalised ((x - mean) / std). "
    "amp-tf models take raw pixels (uint8, or float in 0..255) and normalise themselves; pass "
    "the images as loaded (or set check_pixels=False if your preprocessing is your own)."
)
_NAN = "images: contain NaN or Inf values; clean or drop them."
_ABOVE = "images: contain values above 255: expected raw pixels in 0..255 (uint8, or float in pixel units)."
_SCALED = (
    "images: all values are in [0, 1] and fractional: this looks like `x / 255`. amp-tf models "
    "take raw pixels (uint8, or float in 0..255) and normalise themselves; pass the images as "
    "loaded (or set check_pixels=False if your pixels really are in [0, 1])."
)


#: The first line of every in-graph check (a caller re-raises the one it finds, e.g. AnchoredModel.fit).
GRAPH_MESSAGES = (_NEGATIVE, _ABOVE, _SCALED, _NAN)
#: A single image whose pixels are all at most this is judged a dark image, not `x / 255`.
DARK_MAX = 0.5


def _named(message, what):
    return message.replace("images:", f"{what}:", 1)


def check_pixels(images, what="images"):
    """Raises a clear error unless `images` are raw pixels; returns them as an array.

    Checks NaN/Inf (naming the first bad image), negative values (already
    normalised), values above 255, and an all-in-[0, 1] fractional batch
    (`x / 255`; one image alone with every pixel <= `DARK_MAX` passes as a
    dark image). uint8 input passes without a scan.

    Args:
        images: numpy-like batch.
        what: the argument's name in the message.

    Example:

    >>> check_pixels(np.zeros((1, 2, 2, 1), np.uint8)).dtype
    dtype('uint8')
    """
    x = np.asarray(images)
    if x.dtype == np.uint8:
        return x
    if x.dtype.kind not in "fiu":
        raise TypeError(f"{what}: expected uint8 or float pixels, got dtype {x.dtype}.")
    if x.size == 0:
        return x
    if x.dtype.kind == "f":
        bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1) if x.ndim > 1 else ~np.isfinite(x)
        if bad.any():
            raise ValueError(
                f"{what}: {int(bad.sum())} image(s) contain NaN or Inf (first at index "
                f"{int(np.argmax(bad))}); clean or drop them."
            )
    lo, hi = float(x.min()), float(x.max())
    if lo < 0:
        raise ValueError(_named(_NEGATIVE, what) + f" (min {lo:.4g})")
    if hi > 255:
        raise ValueError(_named(_ABOVE, what) + f" (max {hi:.4g})")
    if hi <= 1.0 and x.dtype.kind == "f" and (hi > DARK_MAX or _several(x)) and np.any(x != np.round(x)):
        raise ValueError(_named(_SCALED, what))
    return x


def check_images(images, image_shape=None, pixels=True, what="images"):
    """The input check of every entry point: a non-empty batch of the model's image shape, raw pixels.

    The same messages as `AnchoredPredictor.predict` (rank, empty, shape; then
    `check_pixels` when `pixels`). Tensors are converted to numpy.

    Args:
        images: numpy-like batch or eager tensor.
        image_shape: the shape of one input, e.g. (28, 28, 1); None dims match
            anything; None: any shape.
        pixels: also apply `check_pixels` (models that normalise raw pixels).
        what: the argument's name in the message.

    Example:

    >>> check_images(np.zeros((2, 32, 32, 1), np.uint8), (28, 28, 1))
    Traceback (most recent call last):
    ...
    ValueError: images: expected (batch, 28, 28, 1), got (2, 32, 32, 1). Resize or convert channels in preprocessing.
    """
    x = images.numpy() if hasattr(images, "numpy") else np.asarray(images)
    want = None if image_shape is None else tuple(image_shape)
    if x.ndim < 1 or (want is not None and x.ndim != len(want) + 1) or (want is None and pixels and x.ndim != 4):
        form = "(N, H, W, C)" if want is None or len(want) == 3 else f"(N, {', '.join(map(str, want))})"
        raise ValueError(f"{what}: expected {form}, got shape {x.shape}.")
    if len(x) == 0:
        raise ValueError(f"{what}: got an empty array; pass at least one image.")
    if want is not None and any(w is not None and g != w for g, w in zip(x.shape[1:], want)):
        dims = ", ".join("any" if w is None else str(w) for w in want)
        raise ValueError(f"{what}: expected (batch, {dims}), got {tuple(x.shape)}. "
                         "Resize or convert channels in preprocessing.")
    return check_pixels(x, what) if pixels else x


def _several(x):
    """More than one image (a batch of them, or not an image array at all)."""
    return x.ndim not in (3, 4) or (x.ndim == 4 and len(x) > 1)


def graph_check_pixels(x):
    """The `check_pixels` rule in-graph (float32 tensor in, same tensor out)."""
    lo, hi = tf.reduce_min(x), tf.reduce_max(x)
    fractional = tf.reduce_any(tf.not_equal(x, tf.round(x)))
    if len(x.shape) == 4:  # one image alone with nothing above DARK_MAX may be a dark image
        fractional = tf.logical_and(fractional, tf.logical_or(tf.shape(x)[0] > 1, hi > DARK_MAX))
    checks = [
        tf.debugging.assert_all_finite(x, _NAN),
        tf.debugging.Assert(tf.logical_or(tf.size(x) == 0, lo >= 0.0), [_NEGATIVE, "min:", lo]),
        tf.debugging.Assert(tf.logical_or(tf.size(x) == 0, hi <= 255.0), [_ABOVE, "max:", hi]),
        tf.debugging.Assert(
            tf.logical_not(tf.logical_and(hi <= 1.0, fractional)), [_SCALED]
        ),
    ]
    with tf.control_dependencies(checks):
        return tf.identity(x)


def _per_channel(values, channels, name):
    v = np.asarray(values, dtype="float32").reshape(-1)
    if v.size == 1:
        v = np.repeat(v, channels)
    if v.size != channels:
        raise ValueError(f"{name}: expected 1 or {channels} per-channel values, got {v.size}.")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{name}: contains NaN or Inf.")
    return v


def check_stats(mean, std, channels):
    """Per-channel (mean, std) in pixel units as float32 arrays, with clear errors.

    Statistics in [0, 1] units (a std below 1 with a mean below 1) are refused:
    they are the natural mistake of passing the statistics of `x / 255`.
    """
    mean = _per_channel(DEFAULT_MEAN if mean is None else mean, channels, "mean")
    std = _per_channel(DEFAULT_STD if std is None else std, channels, "std")
    if np.any(std <= 0):
        raise ValueError("std: every per-channel std must be > 0.")
    if np.all(mean <= 1.0) and np.all(std <= 1.0) and not (np.all(mean == 0) and np.all(std == 1)):
        raise ValueError(
            f"mean/std: {mean.tolist()} / {std.tolist()} look like statistics of images in [0, 1]; "
            "pass them in pixel units (0..255), e.g. amp_tf.data.channel_stats(uint8_images)."
        )
    return mean, std


@keras.saving.register_keras_serializable(package="amp_tf")
class PixelNormalization(keras.layers.Layer):
    """Raw pixels -> `(x - mean) / std`, with the raw-pixel check of this module.

    Args:
        mean, std: per-channel statistics of the training images in pixel units
            (`amp_tf.data.channel_stats`); one value is broadcast to all channels.
            None: 127.5 / 127.5 (maps 0..255 to [-1, 1]).
        channels: the image channel count (inferred from `mean` when it has one
            value per channel).
        check_pixels: reject input that is not raw pixels (see module doc).
    """

    def __init__(self, mean=None, std=None, channels=None, check_pixels=True, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if channels is None:
            channels = np.asarray(mean if mean is not None else [0.0]).size
        self.channels = int(channels)
        m, s = check_stats(mean, std, self.channels)
        self.check = bool(check_pixels)
        self.mean_value, self.std_value = m, s
        self.mean = self.add_weight(shape=(self.channels,), initializer=keras.initializers.Constant(m),
                                    trainable=False, name="mean")
        self.std = self.add_weight(shape=(self.channels,), initializer=keras.initializers.Constant(s),
                                   trainable=False, name="std")

    def build(self, input_shape=None):
        self.built = True

    def statistics(self):
        """`(mean, std)` as numpy arrays: the statistics this layer carries, read by whatever is
        built from a model that has it (e.g. `AnchoredPredictor.from_model`)."""
        return keras.ops.convert_to_numpy(self.mean), keras.ops.convert_to_numpy(self.std)

    def pixels(self, x):
        """`x` as float32 pixels, checked when `check_pixels`."""
        x = tf.cast(x, tf.float32)
        return graph_check_pixels(x) if self.check else x

    def normalise(self, x):
        """`(x - mean) / std` without the check (x already float32 pixels)."""
        return (x - tf.cast(self.mean, tf.float32)) / tf.cast(self.std, tf.float32)

    def scale(self, x):
        """`x / std`: the normalised form of a pixel difference (the residual `x - c`)."""
        return x / tf.cast(self.std, tf.float32)

    def call(self, x):
        return self.normalise(self.pixels(x))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(mean=[float(v) for v in keras.ops.convert_to_numpy(self.mean)],
                      std=[float(v) for v in keras.ops.convert_to_numpy(self.std)],
                      channels=self.channels, check_pixels=self.check)
        return config


def find_normalization(model):
    """The `PixelNormalization` layer right after a functional model's input, or None."""
    for layer in getattr(model, "layers", [])[:3]:
        if isinstance(layer, PixelNormalization):
            return layer
    return None


def pixel_normalization(mean=None, std=None, channels=None, check_pixels=True, name="pixel_normalization"):
    """The one construction of a model's pixel statistics: a `PixelNormalization(mean, std)` layer
    named `name` (the anchored model, the predictor, a plain backbone and a model given statistics
    all build theirs here)."""
    return PixelNormalization(mean, std, channels=channels, check_pixels=check_pixels, name=name)
