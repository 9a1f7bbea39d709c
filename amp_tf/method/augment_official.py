"""The official mode of the anchor transform `T` (`ConsistencyAugment(mode="official")`): the
official code's torchvision ops on the normalised tensor, one draw per batch, exactly (see the
table in `amp_tf.method.augment`). Registered here by name in `OFFICIAL_TRANSFORMS`; the layer
in `amp_tf.method.augment` composes them."""
from __future__ import annotations

import numpy as np
import tensorflow as tf


def _uniform(seed, shape, lo=0.0, hi=1.0):
    return tf.random.stateless_uniform(shape, seed=seed, minval=lo, maxval=hi)


MODES = ("per_sample", "official")

OFFICIAL_TRANSFORMS = {}

#: Algorithm 1 of the paper (Appendix C): crop, flip, RandomApply([jitter, blur], 0.8).
OFFICIAL_COMPOSITION = ("resized_crop", "flip", "color_jitter", "blur")

#: The official code's transform (LLNL/AMP, the training script and `ANT`):
#: RandomResizedCrop(scale=(0.6, 1)), RandomHorizontalFlip(), RandomApply([ColorJitter(0.5),
#: GaussianBlur(kernel_size=(3, 9), sigma=(0.1, 5))], p=0.8), RandomGrayscale(p=0.2).
OFFICIAL_PARAMS = dict(
    crop_scale=(0.6, 1.0),
    crop_ratio=(3 / 4, 4 / 3),
    crop_tries=10,
    flip_p=0.5,
    # ColorJitter's arguments as torchvision takes them; ColorJitter(0.5) is brightness only.
    brightness=0.5,
    contrast=0.0,
    saturation=0.0,
    hue=0.0,
    blur_kernel_size=(3, 9),  # torchvision's (x, y): 3 taps wide, 9 tall
    blur_sigma=(0.1, 5.0),  # one sigma for both axes per call
    jitter_blur_p=0.8,  # one switch for jitter and blur together
    grayscale_p=0.2,
)

#: Transforms that share the single RandomApply(p=0.8) switch in official mode.
OFFICIAL_SHARED_SWITCH = ("color_jitter", "blur")

#: Transforms that, like torchvision's, take only 1- or 3-channel images.
OFFICIAL_COLOUR = ("color_jitter", "grayscale")


def register_official_transform(name):
    """Adds a batch-wide transform `fn(images, seed, lo, hi) -> images` for `mode="official"`.

    Official transforms act on the normalised tensor as torchvision's do and
    ignore `lo`, `hi`. Those named in `OFFICIAL_SHARED_SWITCH` are applied
    unconditionally by `fn`; the layer applies the shared p=0.8 switch around them.
    """

    def deco(fn):
        OFFICIAL_TRANSFORMS[name] = fn
        return fn

    return deco


def scalar_coin(seed, p):
    return tf.random.stateless_uniform([], seed=seed) < p


def official_crop_box(seed, h, w, scale, ratio, tries):
    """torchvision RandomResizedCrop.get_params, vectorised over its tries: (i, j, ch, cw)."""
    s = tf.random.experimental.stateless_split(seed, 4)
    area = float(h * w)
    target = area * _uniform(s[0], [tries], *scale)
    aspect = tf.exp(_uniform(s[1], [tries], float(np.log(ratio[0])), float(np.log(ratio[1]))))
    # tf.round rounds half to even, like Python's round() in torchvision.
    cw = tf.cast(tf.round(tf.sqrt(target * aspect)), tf.int32)
    ch = tf.cast(tf.round(tf.sqrt(target / aspect)), tf.int32)
    ok = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
    first = tf.argmax(tf.cast(ok, tf.int32), output_type=tf.int32)  # first valid try
    found = tf.reduce_any(ok)
    # fallback: central crop (torchvision's, computed statically)
    in_ratio = w / h
    if in_ratio < min(ratio):
        fw, fh = w, int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        fh, fw = h, int(round(h * max(ratio)))
    else:
        fw, fh = w, h
    ch = tf.where(found, ch[first], fh)
    cw = tf.where(found, cw[first], fw)
    # randint(0, h - ch + 1): floor of a uniform draw over the h - ch + 1 offsets
    ui, uj = _uniform(s[2], []), _uniform(s[3], [])
    i = tf.minimum(tf.cast(tf.floor(ui * tf.cast(h - ch + 1, tf.float32)), tf.int32), h - ch)
    j = tf.minimum(tf.cast(tf.floor(uj * tf.cast(w - cw + 1, tf.float32)), tf.int32), w - cw)
    i = tf.where(found, i, (h - fh) // 2)
    j = tf.where(found, j, (w - fw) // 2)
    return i, j, ch, cw


def resize_window(images, i, j, ch, cw):
    """Bilinear resize of the window rows [i, i+ch), cols [j, j+cw) back to the input size.

    The same window for the whole batch; torch's `interpolate(mode="bilinear",
    align_corners=False)` sampling (half-pixel centres, source clamped at 0), which
    torchvision's antialiased resize equals when enlarging. Gather-based (XLA-friendly).
    """
    h, w = images.shape[1], images.shape[2]

    def taps(offset, n_in, n_out):
        scale = tf.cast(n_in, tf.float32) / float(n_out)
        src = (tf.range(n_out, dtype=tf.float32) + 0.5) * scale - 0.5
        src = tf.maximum(src, 0.0)
        a = tf.cast(tf.floor(src), tf.int32)
        a = tf.minimum(a, n_in - 1)
        b = tf.minimum(a + 1, n_in - 1)
        frac = tf.cast(src - tf.cast(a, tf.float32), images.dtype)
        return offset + a, offset + b, frac

    ya, yb, wy = taps(i, ch, h)
    xa, xb, wx = taps(j, cw, w)
    rows_a = tf.gather(images, ya, axis=1)
    rows_b = tf.gather(images, yb, axis=1)
    rows = rows_a + (rows_b - rows_a) * wy[None, :, None, None]
    cols_a = tf.gather(rows, xa, axis=2)
    cols_b = tf.gather(rows, xb, axis=2)
    return cols_a + (cols_b - cols_a) * wx[None, None, :, None]


# torchvision's functional ops for float tensors, on NHWC batches. Factors may be
# scalar tensors. Every blend clamps to [0, 1] whatever the input's range is: on
# normalised images (the official T runs after Normalize) that clamp is part of T.


def _blend(a, b, ratio):
    """torchvision's `_blend`: `ratio * a + (1 - ratio) * b`, clamped to [0, 1]."""
    ratio = tf.cast(ratio, a.dtype)
    return tf.clip_by_value(ratio * a + (1.0 - ratio) * b, 0.0, 1.0)


def rgb_to_grayscale(images):
    """torchvision's `rgb_to_grayscale`: 0.2989 R + 0.587 G + 0.114 B, one channel.

    A 1-channel image is returned as it is (torchvision clones it).

    Example:

    >>> tuple(rgb_to_grayscale(tf.ones([2, 4, 4, 3])).shape)
    (2, 4, 4, 1)
    """
    if images.shape[-1] == 1:
        return images
    r, g, b = tf.unstack(images, axis=-1)
    return (0.2989 * r + 0.587 * g + 0.114 * b)[..., None]


def adjust_brightness(images, factor):
    """torchvision's `adjust_brightness`: `factor * x` clamped to [0, 1]."""
    return _blend(images, tf.zeros_like(images), factor)


def adjust_contrast(images, factor):
    """torchvision's `adjust_contrast`: blend with each image's mean grey level, clamp."""
    mean = tf.reduce_mean(rgb_to_grayscale(images), axis=[1, 2, 3], keepdims=True)
    return _blend(images, mean, factor)


def adjust_saturation(images, factor):
    """torchvision's `adjust_saturation`: blend with the grey image, clamp; 1 channel: unchanged."""
    if images.shape[-1] == 1:
        return images
    return _blend(images, rgb_to_grayscale(images), factor)


def _rgb_to_hsv(images):
    r, g, b = tf.unstack(images, axis=-1)
    maxc, minc = tf.reduce_max(images, axis=-1), tf.reduce_min(images, axis=-1)
    eqc = tf.equal(maxc, minc)
    cr = maxc - minc
    ones = tf.ones_like(maxc)
    s = cr / tf.where(eqc, ones, maxc)
    div = tf.where(eqc, ones, cr)
    rc, gc, bc = (maxc - r) / div, (maxc - g) / div, (maxc - b) / div
    is_r, is_g = tf.equal(maxc, r), tf.equal(maxc, g)
    hr = tf.cast(is_r, images.dtype) * (bc - gc)
    hg = tf.cast(is_g & ~is_r, images.dtype) * (2.0 + rc - bc)
    hb = tf.cast(~is_g & ~is_r, images.dtype) * (4.0 + gc - rc)
    h = tf.truncatemod((hr + hg + hb) / 6.0 + 1.0, 1.0)  # torch.fmod
    return h, s, maxc


def _hsv_to_rgb(h, s, v):
    i = tf.floor(h * 6.0)
    f = h * 6.0 - i
    i = tf.math.floormod(tf.cast(i, tf.int32), 6)
    p = tf.clip_by_value(v * (1.0 - s), 0.0, 1.0)
    q = tf.clip_by_value(v * (1.0 - s * f), 0.0, 1.0)
    t = tf.clip_by_value(v * (1.0 - s * (1.0 - f)), 0.0, 1.0)
    mask = tf.one_hot(i, 6, dtype=h.dtype)  # a one-hot sum, as torchvision's einsum
    sextants = ((v, q, p, p, t, v), (t, v, v, q, p, p), (p, p, t, v, v, q))
    return tf.stack([tf.reduce_sum(mask * tf.stack(c, axis=-1), axis=-1) for c in sextants], axis=-1)


def adjust_hue(images, factor):
    """torchvision's `adjust_hue`: rotate the hue by `factor` in [-0.5, 0.5]; 1 channel: unchanged."""
    if images.shape[-1] == 1:
        return images
    h, s, v = _rgb_to_hsv(images)
    return _hsv_to_rgb(tf.math.floormod(h + tf.cast(factor, images.dtype), 1.0), s, v)


#: ColorJitter's ops by torchvision's index (the order its random permutation shuffles).
JITTER_OPS = {"brightness": adjust_brightness, "contrast": adjust_contrast,
              "saturation": adjust_saturation, "hue": adjust_hue}


def jitter_ranges(brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0):
    """ColorJitter's argument rules: each op's factor range `(low, high)`, or None when off.

    A number `v` means `[max(0, 1 - v), 1 + v]` (hue: `[-v, v]`), a pair is taken as is.

    Example:

    >>> jitter_ranges(0.5)["brightness"], jitter_ranges(0.5)["hue"]
    ((0.5, 1.5), None)
    """
    out = {}
    for name, v in dict(brightness=brightness, contrast=contrast, saturation=saturation, hue=hue).items():
        center, bound = (0.0, (-0.5, 0.5)) if name == "hue" else (1.0, (0.0, float("inf")))
        if np.ndim(v) == 0:
            if v < 0:
                raise ValueError(f"{name}: a single number must be >= 0, got {v}.")
            lo, hi = center - float(v), center + float(v)
            lo = lo if name == "hue" else max(lo, 0.0)
        else:
            lo, hi = (float(t) for t in v)
        if not bound[0] <= lo <= hi <= bound[1]:
            raise ValueError(f"{name}: expected a range within {bound}, got {(lo, hi)}.")
        out[name] = None if lo == hi == center else (lo, hi)
    return out


def color_jitter(images, seed, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0):
    """torchvision's `ColorJitter` with one draw for the batch: factors and a random op order.

    Ops that are off are skipped, as torchvision skips them inside its permutation.
    """
    ranges = jitter_ranges(brightness, contrast, saturation, hue)
    active = [k for k in JITTER_OPS if ranges[k] is not None]
    if not active:
        return images
    s = tf.random.experimental.stateless_split(seed, len(active) + 1)
    factors = {k: _uniform(s[i], [], *ranges[k]) for i, k in enumerate(active)}
    if len(active) == 1:
        return JITTER_OPS[active[0]](images, factors[active[0]])
    order = tf.argsort(_uniform(s[-1], [len(active)]))
    out = images
    for step in range(len(active)):
        branches = [lambda z=out, k=k: JITTER_OPS[k](z, factors[k]) for k in active]
        out = tf.switch_case(order[step], branches)
    return out


def gaussian_kernel1d(size, sigma, dtype=tf.float32):
    """torchvision's `_get_gaussian_kernel1d`: `size` taps at -(size-1)/2 .. (size-1)/2, normalised."""
    x = tf.cast(tf.range(size), dtype) - (size - 1) * 0.5
    pdf = tf.exp(-0.5 * tf.square(x / tf.cast(sigma, dtype)))
    return pdf / tf.reduce_sum(pdf)


def gaussian_blur(images, kernel_size, sigma):
    """torchvision's `gaussian_blur`: reflect padding, one kernel for the whole batch.

    Args:
        images: (B, H, W, C) float tensor.
        kernel_size: odd int, or torchvision's `(x, y)` pair: x taps across the
            width, y down the height (`(3, 9)` is 3 wide, 9 tall).
        sigma: a number or scalar tensor (both axes), or an `(x, y)` pair.

    Example:

    >>> x = tf.random.stateless_uniform([2, 12, 12, 3], seed=[1, 2])
    >>> tuple(gaussian_blur(x, (3, 9), 2.0).shape)
    (2, 12, 12, 3)
    """
    kx, ky = (kernel_size, kernel_size) if np.ndim(kernel_size) == 0 else kernel_size
    sx, sy = (sigma, sigma) if not isinstance(sigma, (tuple, list)) else sigma
    h, w, c = images.shape[1], images.shape[2], images.shape[3]
    if min(kx, ky) <= 0 or kx % 2 == 0 or ky % 2 == 0:
        raise ValueError(f"kernel_size: expected odd positive sizes, got {kernel_size!r}.")
    rx, ry = int(kx) // 2, int(ky) // 2
    if (h is not None and ry >= h) or (w is not None and rx >= w):
        raise ValueError(
            f"images: a {kx}x{ky} (width x height) blur kernel needs images at least {ry + 1} "
            f"pixels tall and {rx + 1} wide (reflect padding); got {h}x{w}. Leave 'blur' out "
            "of the consistency transform for such small images."
        )
    kv = gaussian_kernel1d(int(ky), sy, images.dtype)
    kh = gaussian_kernel1d(int(kx), sx, images.dtype)
    x = tf.pad(images, [[0, 0], [ry, ry], [rx, rx], [0, 0]], mode="REFLECT")
    x = tf.nn.depthwise_conv2d(x, tf.tile(kv[:, None, None, None], [1, 1, c, 1]), [1, 1, 1, 1], "VALID")
    return tf.nn.depthwise_conv2d(x, tf.tile(kh[None, :, None, None], [1, 1, c, 1]), [1, 1, 1, 1], "VALID")


@register_official_transform("resized_crop")
def official_resized_crop(images, seed, lo=None, hi=None, scale=None, ratio=None):
    scale = scale or OFFICIAL_PARAMS["crop_scale"]
    ratio = ratio or OFFICIAL_PARAMS["crop_ratio"]
    h, w = images.shape[1], images.shape[2]
    i, j, ch, cw = official_crop_box(seed, h, w, scale, ratio, OFFICIAL_PARAMS["crop_tries"])
    return resize_window(images, i, j, ch, cw)


@register_official_transform("flip")
def official_flip(images, seed, lo=None, hi=None):
    return tf.where(scalar_coin(seed, OFFICIAL_PARAMS["flip_p"]), tf.reverse(images, axis=[2]), images)


@register_official_transform("color_jitter")
def official_color_jitter(images, seed, lo=None, hi=None):
    p = OFFICIAL_PARAMS
    return color_jitter(images, seed, p["brightness"], p["contrast"], p["saturation"], p["hue"])


@register_official_transform("blur")
def official_blur(images, seed, lo=None, hi=None):
    sigma = _uniform(seed, [], *OFFICIAL_PARAMS["blur_sigma"])
    return gaussian_blur(images, OFFICIAL_PARAMS["blur_kernel_size"], sigma)


@register_official_transform("grayscale")
def official_grayscale(images, seed, lo=None, hi=None):
    if images.shape[-1] == 1:
        return images  # torchvision's grayscale of one channel is the image
    gray = tf.broadcast_to(rgb_to_grayscale(images), tf.shape(images))
    return tf.where(scalar_coin(seed, OFFICIAL_PARAMS["grayscale_p"]), gray, images)
