"""Consistency augmentation `T`: the random transform applied to anchors.

Training input is `[T(c), x - c]`: on a schedule the anchor channels get a random
augmentation while the residual keeps the clean anchor (paper, Sec. 3.1 and
Appendix A/C). The paper's Algorithm 1 (Appendix C, torchvision) composes

    RandomResizedCrop -> RandomHorizontalFlip -> RandomApply([ColorJitter, GaussianBlur], p=0.8)

and its Table 8 / Sec. 4 text speaks of "all the five corruptions" (colour jitter,
Gaussian blur, horizontal flip, grayscale, resized crop). `ConsistencyAugment`
builds these from plain TensorFlow image ops inside a Keras 3 layer (no
tensorflow-addons), in one of two modes:

* `mode="per_sample"` (default, this library's original `T`): every image of the
  batch draws its own parameters, with the ranges in the table below. It is
  *not* the official composition; it differs in: per-image instead of per-batch
  draws; crop area [0.25, 1] (not [0.6, 1]), boxes clipped to the image instead of
  rejection-sampled, corner-aligned sampling (`tf.image.crop_and_resize`
  convention) instead of torchvision's half-pixel resize; colour jitter is
  brightness (additive, +-0.4 of the range), contrast and saturation 0.4 in random
  order instead of brightness-only x[0.5, 1.5]; jitter and blur each have their
  own p=0.8 switch instead of one shared switch; blur sigma [0.1, 2] with a 5x5
  kernel instead of a 3-wide, 9-tall kernel with sigma [0.1, 5]; and it acts on
  pixels in `value_range` (`AnchoredModel`: 0..255, normalised afterwards) with
  clips to that range, not on the normalised tensor with torchvision's [0, 1] clamps.
* `mode="official"`: the official code's transform, exactly (LLNL/AMP's training
  script and `ANT` class): torchvision's

      RandomResizedCrop(scale=(0.6, 1)) -> RandomHorizontalFlip()
      -> RandomApply([ColorJitter(0.5), GaussianBlur(kernel_size=(3, 9), sigma=(0.1, 5))], p=0.8)
      -> RandomGrayscale(p=0.2)

  applied to the *normalised* anchor batch (the official T runs after `Normalize`;
  `on_normalised` tells `AnchoredModel` to normalise first). torchvision transforms
  applied to a batch tensor draw ONE set of parameters per call, so every image of
  the batch (per replica, under a distribution strategy) gets the same transform:

  ================ =====================================================
  `resized_crop`    RandomResizedCrop(scale=(0.6, 1.0), ratio=(3/4, 4/3)) back to
                    the input size (the official code: to 32, its input size):
                    torchvision's 10 tries then centre-crop fallback, integer
                    boxes, bilinear resize with half-pixel centres.
  `flip`            horizontal flip, p = 0.5.
  `color_jitter`    ColorJitter(0.5) = brightness only: `x <- clamp(f * x, 0, 1)`,
                    f ~ U[0.5, 1.5]. On the normalised tensor this scales around
                    the channel mean and sends every below-mean value to 0.
                    (`OFFICIAL_PARAMS` also takes contrast, saturation and hue,
                    applied in a random order per call as torchvision's; each
                    blend clamps to [0, 1]; saturation and hue leave 1 channel as is.)
  `blur`            GaussianBlur(kernel_size=(3, 9)): torchvision's (x, y), i.e. a
                    fixed kernel 3 taps wide and 9 tall, ONE sigma ~ U(0.1, 5) for
                    both axes, reflect padding.
  (jitter, blur)    applied together under ONE p = 0.8 switch
                    (RandomApply([jitter, blur], p=0.8)).
  `grayscale`       RandomGrayscale p = 0.2: 0.2989 R + 0.587 G + 0.114 B of the
                    normalised channels, no clamp; 1 channel: unchanged.
  ================ =====================================================

  Composition followed: the order of the names; `"all"` is the official code's
  (crop, flip, jitter, blur, grayscale). `OFFICIAL_COMPOSITION` =
  `"resized_crop+flip+color_jitter+blur"` is the paper's Algorithm 1, which leaves
  out grayscale. `value_range` is not used in this mode. Checked against
  torchvision itself on fixed parameters in `tests/test_augment_official.py`.

Both modes are

* stateless: randomness is a pure function of a `seed` tensor of shape (2,), so a
  training step is reproducible from (model seed, step, replica id) and resumes
  exactly after a restart,
* range-aware (per-sample mode): `value_range` is the range of the input, e.g.
  `(0, 255)` for pixels; colour ops work in that range and clip to it,
* graph/XLA friendly: resizing is written with gathers (XLA has no CropAndResize).

Per-sample names (the paper's Table 8 ablation uses the presets):

=============== ======================================================
`resized_crop`   random area in [0.25, 1] of the image, aspect ratio in [3/4, 4/3],
                 resized back to the input size (bilinear).
`flip`           horizontal flip with probability 0.5.
`color_jitter`   brightness, contrast (0.4 each) and saturation (0.4, RGB only),
                 in random order per call; applied with probability 0.8.
`blur`           Gaussian blur, sigma in [0.1, 2.0], kernel 5; probability 0.8.
`grayscale`      RGB -> luminance with probability 0.2 (no-op for 1 channel).
=============== ======================================================

Presets: `none`, `jitter_blur`, `flip_grayscale`, `resized_crop`, `all`.

Other per-sample differences from torchvision, on purpose: the crop box is
sampled for the whole batch at once (vectorised, clipped to the image) instead of
torchvision's 10 rejection tries per image; the crop's minimum area is 0.25
instead of 0.08 because the default data here are 28x28 and 32x32 images; hue
jitter is left out (no per-sample hue op in TF without a Python loop).

Example:

>>> import numpy as np
>>> t = ConsistencyAugment("all", value_range=(-1.0, 1.0))
>>> x = np.random.uniform(-1, 1, (4, 28, 28, 1)).astype("float32")
>>> y = t(x, seed=[1, 2])
>>> tuple(y.shape)
(4, 28, 28, 1)
>>> t = ConsistencyAugment("all", mode="official")  # takes the normalised tensor
>>> tuple(t(x, seed=[1, 2]).shape)
(4, 28, 28, 1)
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

TRANSFORMS = {}

PRESETS = {
    "none": (),
    "jitter_blur": ("color_jitter", "blur"),
    "flip_grayscale": ("flip", "grayscale"),
    "resized_crop": ("resized_crop",),
    "all": ("resized_crop", "flip", "color_jitter", "blur", "grayscale"),
}


def register_transform(name):
    """Adds a transform `fn(images, seed, lo, hi) -> images` to the registry."""

    def deco(fn):
        TRANSFORMS[name] = fn
        return fn

    return deco


def transform_names():
    return sorted(TRANSFORMS)


def resolve(consistency):
    """Turns a preset name, a transform name or a list of names into a tuple of names."""
    if consistency is None or consistency is False:
        return ()
    if isinstance(consistency, str):
        if consistency in PRESETS:
            return PRESETS[consistency]
        consistency = [c.strip() for c in consistency.split("+") if c.strip()]
    names = tuple(consistency)
    unknown = [n for n in names if n not in TRANSFORMS]
    if unknown:
        raise ValueError(
            f"consistency: unknown transform(s) {unknown}. Use a preset "
            f"{sorted(PRESETS)} or names from {transform_names()} "
            "(a list, or joined with '+', e.g. 'flip+blur')."
        )
    return names


def _uniform(seed, shape, lo=0.0, hi=1.0):
    return tf.random.stateless_uniform(shape, seed=seed, minval=lo, maxval=hi)


def _coin(seed, batch, p):
    return _uniform(seed, [batch]) < p


def _select(mask, a, b):
    return tf.where(mask[:, None, None, None], a, b)


def _gray(images):
    c = images.shape[-1]
    if c != 3:
        return images
    w = tf.constant([0.299, 0.587, 0.114], images.dtype)
    g = tf.reduce_sum(images * w, axis=-1, keepdims=True)
    return tf.repeat(g, 3, axis=-1)


def crop_resize(images, boxes):
    """Bilinear crop-and-resize of per-sample boxes back to the input size.

    Same sampling as `tf.image.crop_and_resize` (box corners map to the corner
    pixels), written with gathers so that it also compiles under XLA, which has
    no CropAndResize kernel.
    """
    h, w = images.shape[1], images.shape[2]
    y0, x0, y1, x1 = tf.unstack(boxes, axis=1)

    def grid(lo, hi, n, size):
        t = tf.cast(tf.range(n), images.dtype) / float(max(n - 1, 1))
        return (lo[:, None] + t[None, :] * (hi - lo)[:, None]) * float(size - 1)

    def taps(coord, size):
        c = tf.clip_by_value(coord, 0.0, float(size - 1))
        lo = tf.floor(c)
        return tf.cast(lo, tf.int32), tf.minimum(tf.cast(lo, tf.int32) + 1, size - 1), c - lo

    ya, yb, wy = taps(grid(y0, y1, h, h), h)
    xa, xb, wx = taps(grid(x0, x1, w, w), w)
    rows_a = tf.gather(images, ya, axis=1, batch_dims=1)
    rows_b = tf.gather(images, yb, axis=1, batch_dims=1)
    rows = rows_a + (rows_b - rows_a) * wy[:, :, None, None]
    cols_a = tf.gather(rows, xa, axis=2, batch_dims=1)
    cols_b = tf.gather(rows, xb, axis=2, batch_dims=1)
    return cols_a + (cols_b - cols_a) * wx[:, None, :, None]


@register_transform("resized_crop")
def resized_crop(images, seed, lo, hi, scale=(0.25, 1.0), ratio=(3 / 4, 4 / 3)):
    batch = tf.shape(images)[0]
    h, w = images.shape[1], images.shape[2]
    s = tf.random.experimental.stateless_split(seed, 4)
    area = _uniform(s[0], [batch], *scale)
    log_r = _uniform(s[1], [batch], float(np.log(ratio[0])), float(np.log(ratio[1])))
    r = tf.exp(log_r)
    bh = tf.minimum(tf.sqrt(area / r), 1.0)
    bw = tf.minimum(tf.sqrt(area * r), 1.0)
    y0 = _uniform(s[2], [batch]) * (1.0 - bh)
    x0 = _uniform(s[3], [batch]) * (1.0 - bw)
    boxes = tf.stack([y0, x0, y0 + bh, x0 + bw], axis=1)
    return crop_resize(images, boxes)


@register_transform("flip")
def flip(images, seed, lo, hi, p=0.5):
    mask = _coin(seed, tf.shape(images)[0], p)
    return _select(mask, tf.reverse(images, axis=[2]), images)


@register_transform("color_jitter")
def color_jitter(images, seed, lo, hi, strength=0.4, p=0.8):
    batch = tf.shape(images)[0]
    s = tf.random.experimental.stateless_split(seed, 5)
    span = hi - lo
    out = images
    # brightness: additive shift of up to +-strength of the range (TF's convention).
    delta = _uniform(s[0], [batch, 1, 1, 1], -strength, strength) * span
    bright = lambda z: z + delta  # noqa: E731
    # contrast: scale around each image's mean by a factor in [1-s, 1+s].
    cf = _uniform(s[1], [batch, 1, 1, 1], 1 - strength, 1 + strength)
    contrast = lambda z: (z - tf.reduce_mean(z, axis=[1, 2, 3], keepdims=True)) * cf + tf.reduce_mean(z, axis=[1, 2, 3], keepdims=True)  # noqa: E731,E501
    sf = _uniform(s[2], [batch, 1, 1, 1], 1 - strength, 1 + strength)
    saturate = lambda z: _gray(z) + (z - _gray(z)) * sf  # noqa: E731
    ops = [bright, contrast] + ([saturate] if images.shape[-1] == 3 else [])
    # random order, decided once per call (torchvision decides once per image).
    order = tf.argsort(_uniform(s[3], [len(ops)]))
    for i in range(len(ops)):
        branches = [lambda z=out, f=f: f(z) for f in ops]
        out = tf.switch_case(order[i], branches)
        out = tf.clip_by_value(out, lo, hi)
    return _select(_coin(s[4], batch, p), out, images)


@register_transform("blur")
def blur(images, seed, lo, hi, sigma=(0.1, 2.0), kernel_size=5, p=0.8):
    batch = tf.shape(images)[0]
    h, w, c = images.shape[1], images.shape[2], images.shape[3]
    s = tf.random.experimental.stateless_split(seed, 2)
    sig = _uniform(s[0], [batch], *sigma)
    r = kernel_size // 2
    xs = tf.cast(tf.range(-r, r + 1), images.dtype)
    k = tf.exp(-(xs[None, :] ** 2) / (2.0 * sig[:, None] ** 2))
    k = k / tf.reduce_sum(k, axis=1, keepdims=True)  # (B, ks)
    # One depthwise conv over B*C channels applies a different kernel per image.
    kc = tf.repeat(k, c, axis=0)  # (B*C, ks)
    x = tf.transpose(images, [1, 2, 0, 3])
    x = tf.reshape(x, [1, h, w, -1])
    x = tf.pad(x, [[0, 0], [r, r], [r, r], [0, 0]], mode="REFLECT")
    kv = tf.transpose(kc)[:, None, :, None]  # (ks, 1, B*C, 1)
    kh = tf.transpose(kc)[None, :, :, None]  # (1, ks, B*C, 1)
    x = tf.nn.depthwise_conv2d(x, kv, [1, 1, 1, 1], "VALID")
    x = tf.nn.depthwise_conv2d(x, kh, [1, 1, 1, 1], "VALID")
    x = tf.reshape(x, [h, w, batch, c])
    out = tf.transpose(x, [2, 0, 1, 3])
    return _select(_coin(s[1], batch, p), out, images)


@register_transform("grayscale")
def grayscale(images, seed, lo, hi, p=0.2):
    if images.shape[-1] != 3:
        return images
    return _select(_coin(seed, tf.shape(images)[0], p), _gray(images), images)


# The official mode lives in amp_tf.method.augment_official; its names stay importable from here
# (`color_jitter` at module level is the official op, as it was before the split).
from amp_tf.method.augment_official import (  # noqa: E402,F401,F811
    MODES, OFFICIAL_TRANSFORMS, OFFICIAL_COMPOSITION, OFFICIAL_PARAMS, OFFICIAL_SHARED_SWITCH,
    OFFICIAL_COLOUR, register_official_transform, scalar_coin, official_crop_box, resize_window,
    rgb_to_grayscale, adjust_brightness, adjust_contrast, adjust_saturation,
    adjust_hue, JITTER_OPS, jitter_ranges,
    color_jitter, gaussian_kernel1d, gaussian_blur, official_resized_crop, official_flip,
    official_color_jitter, official_blur, official_grayscale,
)

_official_crop_box = official_crop_box  # its old private name (tests)


@keras.saving.register_keras_serializable(package="amp_tf")
class ConsistencyAugment(keras.layers.Layer):
    """The anchor transform `T`: a composition of named transforms.

    Args:
        consistency: a preset (`"all"`, `"none"`, `"jitter_blur"`,
            `"flip_grayscale"`, `"resized_crop"`), a transform name, names joined
            with `+`, or a list of names; see the module docstring.
        value_range: `(low, high)` of the input images: `(0, 255)` for raw pixels,
            `((0 - mean) / std, (255 - mean) / std)` for normalised ones (scalars or
            per-channel sequences). Per-sample colour ops clip to it; official mode
            does not use it (torchvision's ops clamp to [0, 1]).
        mode: `"per_sample"` (default): each image draws its own parameters (this
            library's ranges), on pixels; `"official"`: the official code's
            torchvision transform, one draw per batch, on the normalised tensor
            (`on_normalised`). See the module docstring for both.

    Call with `seed`, an int tensor of shape (2,): the same seed gives the same output.
    """

    def __init__(self, consistency="all", value_range=(0.0, 255.0), mode="per_sample", **kwargs):
        kwargs.setdefault("dtype", "float32")  # augment in float32 under mixed precision too
        super().__init__(**kwargs)
        if mode not in MODES:
            raise ValueError(f"mode: expected one of {list(MODES)}, got {mode!r}.")
        self.mode = mode
        self.names = resolve(consistency)
        self.consistency = list(self.names)
        if mode == "official":
            missing = [n for n in self.names if n not in OFFICIAL_TRANSFORMS]
            if missing:
                raise ValueError(
                    f"consistency: transform(s) {missing} have no official-mode version; "
                    f"mode='official' supports {sorted(OFFICIAL_TRANSFORMS)}."
                )
        if len(value_range) != 2:
            raise ValueError(
                f"value_range: expected (low, high), got {value_range!r}."
            )
        self.value_range = [np.asarray(v, "float32").tolist() for v in value_range]
        lo, hi = (np.asarray(v, "float32") for v in self.value_range)
        if np.any(hi <= lo):
            raise ValueError(f"value_range: high must exceed low, got {value_range!r}.")
        self._lo, self._hi = lo, hi

    @property
    def on_normalised(self):
        """Whether `T` takes the normalised tensor (official mode: the official T ran after
        `Normalize`) rather than pixels in `value_range` (per-sample mode)."""
        return self.mode == "official"

    def check_shape(self, image_shape):
        """Raises a clear `ValueError` if `T` cannot take `(..., H, W, C)` images.

        Official mode has torchvision's limits: colour jitter and grayscale take 1 or
        3 channels; the 3x9 blur's reflect padding needs images at least 5 pixels
        tall and 2 wide. Per-sample mode takes any shape.
        """
        if self.mode != "official" or len(image_shape) < 3:
            return
        h, w, c = image_shape[-3:]
        colour = [n for n in self.names if n in OFFICIAL_COLOUR]
        if colour and c is not None and c not in (1, 3):
            raise ValueError(
                f"images: mode='official' {colour} take 1- or 3-channel images (torchvision's "
                f"colour ops), got {c} channels. Leave {colour} out of the consistency "
                "transform, or use mode='per_sample'."
            )
        kx, ky = OFFICIAL_PARAMS["blur_kernel_size"]
        if "blur" in self.names and ((h is not None and h <= ky // 2) or (w is not None and w <= kx // 2)):
            raise ValueError(
                f"images: mode='official' 'blur' ({kx} wide, {ky} tall, reflect padding) needs images "
                f"at least {ky // 2 + 1} pixels tall and {kx // 2 + 1} wide; got {h}x{w}. Leave 'blur' "
                "out of the consistency transform for such small images."
            )

    def __call__(self, images, *args, **kwargs):
        shape = getattr(images, "shape", None)
        self.check_shape(tuple(np.shape(images) if shape is None else shape))  # before Keras wraps errors
        return super().__call__(images, *args, **kwargs)

    def call(self, images, seed=(0, 0)):
        if not self.names:
            return images
        seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
        lo = tf.constant(self._lo, images.dtype)
        hi = tf.constant(self._hi, images.dtype)
        if self.mode == "official":
            return self._call_official(images, seed, lo, hi)
        seeds = tf.random.experimental.stateless_split(seed, len(self.names))
        for i, name in enumerate(self.names):
            images = TRANSFORMS[name](images, seeds[i], lo, hi)
        return images

    def _call_official(self, images, seed, lo, hi):
        n = len(self.names)
        seeds = tf.random.experimental.stateless_split(seed, n + 1)
        # RandomApply([jitter, blur], p): one switch for the group, drawn once per call.
        group_on = scalar_coin(seeds[n], OFFICIAL_PARAMS["jitter_blur_p"])
        for i, name in enumerate(self.names):
            out = OFFICIAL_TRANSFORMS[name](images, seeds[i], lo, hi)
            images = tf.where(group_on, out, images) if name in OFFICIAL_SHARED_SWITCH else out
        return images

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(consistency=self.consistency, value_range=self.value_range, mode=self.mode)
        return config
