"""Consistency augmentation `T`: the random transform applied to anchors.

Training input is `[T(c), x - c]`: on a schedule the anchor channels get a random
augmentation while the residual keeps the clean anchor (paper, Sec. 3.1 and
Appendix A/C). The paper composes (Algorithm 1, torchvision):

    RandomResizedCrop -> RandomHorizontalFlip -> RandomApply([ColorJitter, GaussianBlur], p=0.8)

(plus RandomGrayscale for RGB, as in its CIFAR code). This module builds the same
composition from plain TensorFlow image ops inside a Keras 3 layer, so nothing
depends on tensorflow-addons. Every transform is:

* per-sample (each image draws its own parameters),
* stateless: randomness is a pure function of a `seed` tensor of shape (2,), so a
  training step is reproducible from (model seed, step, replica id) and resumes
  exactly after a restart,
* range-aware: `value_range` is the range of the (normalised) input, e.g.
  `((0 - mean) / std, (255 - mean) / std)`; colour ops work in that range and clip to it.

Names (the paper's Table 8 ablation uses the presets):

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

Differences from torchvision, on purpose: the crop box is sampled for the whole
batch at once (vectorised, clipped to the image) instead of torchvision's
10 rejection tries per image; the crop's minimum area is 0.25 instead of 0.08
because the default data here are 28x28 and 32x32 images; hue jitter is left out
(no per-sample hue op in TF without a Python loop).

Example:

>>> import numpy as np
>>> t = ConsistencyAugment("all", value_range=(-1.0, 1.0))
>>> x = np.random.uniform(-1, 1, (4, 28, 28, 1)).astype("float32")
>>> y = t(x, seed=[1, 2])
>>> tuple(y.shape)
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


@keras.saving.register_keras_serializable(package="amp_tf")
class ConsistencyAugment(keras.layers.Layer):
    """The anchor transform `T`: a composition of named per-sample transforms.

    Args:
        consistency: a preset (`"all"`, `"none"`, `"jitter_blur"`,
            `"flip_grayscale"`, `"resized_crop"`), a transform name, names joined
            with `+`, or a list of names; see the module docstring.
        value_range: `(low, high)` of the input images: `(0, 255)` for raw pixels,
            `((0 - mean) / std, (255 - mean) / std)` for normalised ones (scalars or
            per-channel sequences). Colour ops clip to it.

    Call with `seed`, an int tensor of shape (2,): the same seed gives the same output.
    """

    def __init__(self, consistency="all", value_range=(0.0, 255.0), **kwargs):
        kwargs.setdefault("dtype", "float32")  # augment in float32 under mixed precision too
        super().__init__(**kwargs)
        self.names = resolve(consistency)
        self.consistency = list(self.names)
        if len(value_range) != 2:
            raise ValueError(
                f"value_range: expected (low, high), got {value_range!r}."
            )
        self.value_range = [np.asarray(v, "float32").tolist() for v in value_range]
        lo, hi = (np.asarray(v, "float32") for v in self.value_range)
        if np.any(hi <= lo):
            raise ValueError(f"value_range: high must exceed low, got {value_range!r}.")
        self._lo, self._hi = lo, hi

    def call(self, images, seed=(0, 0)):
        if not self.names:
            return images
        seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
        lo = tf.constant(self._lo, images.dtype)
        hi = tf.constant(self._hi, images.dtype)
        seeds = tf.random.experimental.stateless_split(seed, len(self.names))
        for i, name in enumerate(self.names):
            images = TRANSFORMS[name](images, seeds[i], lo, hi)
        return images

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(consistency=self.consistency, value_range=self.value_range)
        return config
