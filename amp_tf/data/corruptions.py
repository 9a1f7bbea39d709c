"""Graded corruptions of the Fashion-MNIST test set, and validation OOD data.

Test sets (covariate shift; split ``"test"``, labels unchanged, each level made
from all 10,000 Fashion-MNIST test images and cached like ``fmnist_blur_*``):

* ``fmnist_jpeg_1`` .. ``fmnist_jpeg_5``: each image saved as JPEG by Pillow
  (8-bit grayscale, Pillow defaults otherwise) at quality `JPEG_QUALITIES`
  = 25, 18, 15, 10, 7 (ImageNet-C's jpeg_compression levels) and decoded
  (done as one mosaic per call, same pixels, see `jpeg`).
* ``fmnist_contrast_1`` .. ``fmnist_contrast_5``: ``(x - m) * c + m`` with ``m``
  each image's own mean pixel value and ``c`` = `CONTRAST_FACTORS` = 0.4, 0.3,
  0.2, 0.1, 0.05 (ImageNet-C's contrast levels), rounded and clipped to 0..255.
* ``fmnist_pixelate_1`` .. ``fmnist_pixelate_5``: reduced with Pillow's box
  filter (area average) to `PIXELATE_SIZES` = 16, 12, 9, 7, 5 pixels square,
  then enlarged back to 28x28 with nearest neighbour.

Validation OOD (`validation_ood_sets`): made only from the images passed in (ID
validation/training images, never test images), with transformations that no
test set uses (`VALIDATION_TRANSFORMS`): pixel shuffle, patch shuffle, Gaussian
noise, inversion, rotation. For choosing hyperparameters without looking at
the test OOD sets.
"""
from __future__ import annotations

import functools
import io

import numpy as np

from amp_tf.data.offline import FASHION_MNIST_CLASSES, fashion_mnist_arrays
from amp_tf.data.registry import ImageSet, LoadRequest, check_split, from_arrays, register

#: JPEG quality of fmnist_jpeg_1 .. fmnist_jpeg_5.
JPEG_QUALITIES = (25, 18, 15, 10, 7)
#: Contrast factor of fmnist_contrast_1 .. fmnist_contrast_5.
CONTRAST_FACTORS = (0.4, 0.3, 0.2, 0.1, 0.05)
#: Side (pixels) images are reduced to in fmnist_pixelate_1 .. fmnist_pixelate_5.
PIXELATE_SIZES = (16, 12, 9, 7, 5)

#: Corruption kinds of the test sets (``fmnist_<kind>_<level>``), including offline.py's blur.
TEST_CORRUPTIONS = ("blur", "jpeg", "contrast", "pixelate")

#: Names of the validation OOD sets and how each is made.
VALIDATION_TRANSFORMS = {
    "val_pixel_shuffle": "the pixels of each image permuted by its own random permutation",
    "val_patch_shuffle": "each image cut into a 4x4 grid of patches, the 16 patches permuted at random",
    "val_noise": "additive Gaussian noise, std 0.2 * 255 per pixel, rounded and clipped",
    "val_invert": "255 - x",
    "val_rotate90": "rotated by 90, 180 or 270 degrees (drawn per image; 180 only for non-square images)",
}

NOISE_STD = 0.2 * 255.0


def _to_uint8(x) -> np.ndarray:
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def _per_image(images: np.ndarray, fn) -> np.ndarray:
    """Applies ``fn(PIL image) -> PIL image`` to each channel plane of uint8 [N, H, W, C]."""
    from PIL import Image

    out = np.empty_like(images)
    for i in range(images.shape[0]):
        for c in range(images.shape[3]):
            out[i, :, :, c] = np.asarray(fn(Image.fromarray(images[i, :, :, c])), np.uint8)
    return out


def jpeg(images: np.ndarray, quality: int) -> np.ndarray:
    """JPEG round trip (Pillow) of uint8 [N, H, W, C] images at ``quality``.

    Gives the same pixels as saving and decoding each image (each channel as an
    8-bit grayscale image) on its own, but encodes one mosaic per channel:
    every image is padded to a multiple of 8 by repeating its last row/column
    (what libjpeg does with a partial block), so no 8x8 block spans two images,
    and grayscale JPEG blocks are quantised independently.

    Example:
        >>> x = np.random.default_rng(0).integers(0, 256, (2, 28, 28, 1)).astype(np.uint8)
        >>> y = jpeg(x, 10)
        >>> y.shape == x.shape and not np.array_equal(x, y)
        True
    """
    from PIL import Image

    images = np.asarray(images, np.uint8)
    n, h, w, ch = images.shape
    if n == 0:
        return images.copy()
    bh, bw = -(-h // 8) * 8, -(-w // 8) * 8
    cols = min(n, 64)
    rows = -(-n // cols)
    padded = np.pad(images, ((0, rows * cols - n), (0, bh - h), (0, bw - w), (0, 0)), mode="edge")
    out = np.empty_like(images)
    for k in range(ch):
        mosaic = padded[..., k].reshape(rows, cols, bh, bw).transpose(0, 2, 1, 3).reshape(rows * bh, cols * bw)
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(mosaic)).save(buf, format="JPEG", quality=int(quality))
        buf.seek(0)
        with Image.open(buf) as decoded:
            back = np.asarray(decoded.convert("L"), np.uint8)
        tiles = back.reshape(rows, bh, cols, bw).transpose(0, 2, 1, 3).reshape(rows * cols, bh, bw)
        out[..., k] = tiles[:n, :h, :w]
    return out


def contrast(images: np.ndarray, factor: float) -> np.ndarray:
    """Pulls each uint8 image toward its own mean: ``(x - mean) * factor + mean``.

    Example:
        >>> x = np.array([0, 100, 200], np.uint8).reshape(1, 1, 3, 1)
        >>> contrast(x, 0.5).ravel().tolist()
        [50, 100, 150]
    """
    x = np.asarray(images, np.float32)
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    return _to_uint8((x - mean) * float(factor) + mean)


def pixelate(images: np.ndarray, size: int) -> np.ndarray:
    """Box-filter reduction to ``size`` x ``size``, then nearest enlargement back.

    Example:
        >>> x = np.arange(16, dtype=np.uint8).reshape(1, 4, 4, 1) * 10
        >>> pixelate(x, 2)[0, :, :, 0].tolist()
        [[25, 25, 45, 45], [25, 25, 45, 45], [105, 105, 125, 125], [105, 105, 125, 125]]
    """
    from PIL import Image

    images = np.asarray(images, np.uint8)
    h, w = images.shape[1:3]

    def fn(img):
        small = img.resize((int(size), int(size)), Image.Resampling.BOX)
        return small.resize((w, h), Image.Resampling.NEAREST)

    return _per_image(images, fn)


_CORRUPTIONS = {
    "jpeg": (jpeg, JPEG_QUALITIES, "JPEG quality"),
    "contrast": (contrast, CONTRAST_FACTORS, "contrast factor"),
    "pixelate": (pixelate, PIXELATE_SIZES, "pixelated to size"),
}


@functools.lru_cache(maxsize=16)
def _corrupted_test_set(kind: str, level: int, source: tuple) -> np.ndarray:
    images, _ = fashion_mnist_arrays("test", *source)
    fn, params, _ = _CORRUPTIONS[kind]
    out = fn(images, params[level - 1])
    out.setflags(write=False)
    return out


def corrupted_test_images(kind: str, level: int, data_dir=None, download=False) -> np.ndarray:
    """The Fashion-MNIST test images under corruption ``kind`` at ``level`` 1..5 (cached).

    Args:
        kind: ``"jpeg"``, ``"contrast"`` or ``"pixelate"``.
        level: 1 (mild) .. 5 (severe).
        data_dir: As for `fashion_mnist_arrays`.
        download: As for `fashion_mnist_arrays`.

    Returns:
        uint8 [10000, 28, 28, 1], read-only.

    Example:
        >>> corrupted_test_images("contrast", 5).shape
        (10000, 28, 28, 1)
    """
    if kind not in _CORRUPTIONS:
        raise ValueError(f"unknown corruption {kind!r}; use one of {', '.join(_CORRUPTIONS)}.")
    if not 1 <= int(level) <= 5:
        raise ValueError(f"level must be 1..5, got {level!r}.")
    return _corrupted_test_set(kind, int(level), (data_dir, bool(download)))


def _loader(kind: str, level: int):
    def load_corrupted(request: LoadRequest) -> ImageSet:
        check_split(request, ("test",), f"{kind} sets are made from the Fashion-MNIST test set")
        _, labels = fashion_mnist_arrays("test", request.data_dir, request.download)
        images = corrupted_test_images(kind, level, request.data_dir, request.download)
        return from_arrays(request, images, labels, 10, FASHION_MNIST_CLASSES)

    _, params, what = _CORRUPTIONS[kind]
    load_corrupted.__doc__ = f"Fashion-MNIST test set, {what} {params[level - 1]}."
    return load_corrupted


for _kind in _CORRUPTIONS:
    for _level in range(1, 6):
        register(f"fmnist_{_kind}_{_level}")(_loader(_kind, _level))


def _patch_shuffle(images: np.ndarray, rng: np.random.Generator, grid: int = 4) -> np.ndarray:
    out = images.copy()
    n, h, w = images.shape[:3]
    ph, pw = h // grid, w // grid  # a remainder strip (H or W not divisible) stays in place
    for i in range(n):
        patches = [images[i, r * ph:(r + 1) * ph, c * pw:(c + 1) * pw] for r in range(grid) for c in range(grid)]
        order = rng.permutation(grid * grid)
        for k, src in enumerate(order):
            r, c = divmod(k, grid)
            out[i, r * ph:(r + 1) * ph, c * pw:(c + 1) * pw] = patches[src]
    return out


def validation_ood_sets(images_uint8: np.ndarray, seed: int = 0) -> dict:
    """Validation OOD sets made only from ``images_uint8`` (ID validation/training images).

    None of their transformations is used by a test OOD set (no blur, JPEG,
    contrast, pixelation, class holdout, digits, letters or photo patches):

    * ``val_pixel_shuffle``: each image's H*W pixel positions permuted by its own
      random permutation (same for all channels); keeps the intensity histogram.
    * ``val_patch_shuffle``: each image cut into a 4x4 grid of (H//4)x(W//4)
      patches and the 16 patches put back in a random order (7x7 patches for 28x28).
    * ``val_noise``: ``x + N(0, (0.2 * 255)^2)`` per pixel, rounded, clipped to 0..255.
    * ``val_invert``: ``255 - x``.
    * ``val_rotate90``: ``np.rot90`` by k = 1, 2 or 3 quarter turns drawn per image
      (k = 2 for all when H != W).

    Args:
        images_uint8: uint8 [N, H, W, C] images.
        seed: Seed of the random draws (``numpy.random.default_rng``); each set
            gets its own stream, so the sets do not depend on each other.

    Returns:
        ``{name: uint8 [N, H, W, C]}`` in `VALIDATION_TRANSFORMS` order; image ``i``
        of each set is made from input image ``i``.

    Example:
        >>> x = np.random.default_rng(1).integers(0, 256, (3, 28, 28, 1)).astype(np.uint8)
        >>> sets = validation_ood_sets(x, seed=0)
        >>> sorted(sets) == sorted(VALIDATION_TRANSFORMS)
        True
        >>> bool(np.array_equal(sets["val_invert"], 255 - x))
        True
    """
    x = np.asarray(images_uint8)
    if x.dtype != np.uint8 or x.ndim != 4:
        raise ValueError(f"images_uint8 must be uint8 [N, H, W, C], got {x.dtype} {x.shape}.")
    n, h, w, c = x.shape
    rngs = dict(zip(VALIDATION_TRANSFORMS, np.random.default_rng(seed).spawn(len(VALIDATION_TRANSFORMS))))

    flat = x.reshape(n, h * w, c)
    perms = np.argsort(rngs["val_pixel_shuffle"].random((n, h * w)), axis=1)
    pixel_shuffle = np.take_along_axis(flat, perms[:, :, None], axis=1).reshape(x.shape)

    patch_shuffle = _patch_shuffle(x, rngs["val_patch_shuffle"])

    noise = _to_uint8(x.astype(np.float32) + rngs["val_noise"].normal(0.0, NOISE_STD, x.shape).astype(np.float32))

    ks = rngs["val_rotate90"].integers(1, 4, size=n) if h == w else np.full(n, 2)
    rotate = np.stack([np.rot90(img, k=int(k), axes=(0, 1)) for img, k in zip(x, ks)]) if n else x.copy()

    return {
        "val_pixel_shuffle": pixel_shuffle,
        "val_patch_shuffle": patch_shuffle,
        "val_noise": noise,
        "val_invert": (255 - x).astype(np.uint8),
        "val_rotate90": rotate,
    }
