"""Preprocessing: resize policy, channel conversion, normalisation with ID statistics.

Resize methods (`RESIZE_METHODS`): ``"tf"`` = ``tf.image.resize`` bilinear with
antialiasing (the default policy), and Pillow's ``"pil_nearest"``,
``"pil_bilinear"``, ``"pil_bicubic"``, ``"pil_lanczos"`` (for the resize study).
Every method returns uint8 (rounded, clipped), so the numpy and the
``tf.data`` paths give the same pixels. Nothing is resized or converted unless
asked: a size or channel mismatch is an error that says which option fixes it.
Grayscale to RGB repeats the channel; RGB to grayscale uses
``round(0.299 R + 0.587 G + 0.114 B)``.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from amp_tf.data import tfdata
from amp_tf.data.registry import ImageSet, to_numpy

RESIZE_METHODS = ("tf", "pil_nearest", "pil_bilinear", "pil_bicubic", "pil_lanczos")
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
_CHUNK = 2048


def _size(size) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    size = tuple(int(s) for s in size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"image size must be an int or (height, width) of positive ints, got {size!r}.")
    return size


def _check_method(method) -> None:
    if method not in RESIZE_METHODS:
        raise ValueError(f"unknown resize method {method!r}; use one of {', '.join(RESIZE_METHODS)}.")


def _pil_resize(images: np.ndarray, size: tuple[int, int], method: str) -> np.ndarray:
    from PIL import Image

    resample = {
        "pil_nearest": Image.Resampling.NEAREST,
        "pil_bilinear": Image.Resampling.BILINEAR,
        "pil_bicubic": Image.Resampling.BICUBIC,
        "pil_lanczos": Image.Resampling.LANCZOS,
    }[method]
    height, width = size
    out = np.empty((len(images), height, width, images.shape[-1]), np.uint8)
    for i, img in enumerate(images):
        if img.shape[-1] == 1:
            out[i, ..., 0] = np.asarray(Image.fromarray(img[..., 0]).resize((width, height), resample))
        elif img.shape[-1] in (3, 4):
            out[i] = np.asarray(Image.fromarray(img).resize((width, height), resample))
        else:  # any other channel count: one channel at a time
            for c in range(img.shape[-1]):
                out[i, ..., c] = np.asarray(Image.fromarray(img[..., c]).resize((width, height), resample))
    return out


def _tf_resize(images, size):
    """Antialiased bilinear resize of a uint8 tensor (3-D or 4-D) to uint8."""
    resized = tf.image.resize(tf.cast(images, tf.float32), size, method="bilinear", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)


def resize_images(images_uint8: np.ndarray, size, method: str = "tf") -> np.ndarray:
    """Resizes uint8 images to ``size`` with one of `RESIZE_METHODS`.

    Args:
        images_uint8: uint8 array ``[N, H, W, C]`` or one image ``[H, W, C]``.
        size: Target ``(height, width)`` or an int for square images.
        method: ``"tf"`` (antialiased bilinear) or ``"pil_nearest"``,
            ``"pil_bilinear"``, ``"pil_bicubic"``, ``"pil_lanczos"``.

    Returns:
        uint8 array of the same rank with height and width ``size`` (the input
        itself when it already has that size).

    Example:
        >>> import numpy as np
        >>> x = np.zeros((2, 32, 32, 3), np.uint8)
        >>> resize_images(x, (28, 28), "pil_bicubic").shape
        (2, 28, 28, 3)
    """
    _check_method(method)
    size = _size(size)
    images = np.asarray(images_uint8)
    if images.dtype != np.uint8:
        raise ValueError(f"resize_images expects uint8 images, got {images.dtype}; pass the raw 0..255 images.")
    single = images.ndim == 3
    if single:
        images = images[None]
    if images.ndim != 4:
        raise ValueError(f"resize_images expects [N, H, W, C] or [H, W, C], got shape {images.shape}.")
    if images.shape[1:3] == size:
        return images[0] if single else images
    if method == "tf":
        parts = [_tf_resize(images[i : i + _CHUNK], size).numpy() for i in range(0, len(images), _CHUNK)]
        out = np.concatenate(parts) if parts else np.zeros((0, *size, images.shape[-1]), np.uint8)
    else:
        out = _pil_resize(images, size, method)
    return out[0] if single else out


def convert_channels(images_uint8: np.ndarray, channels: int) -> np.ndarray:
    """Converts uint8 ``[..., C]`` images between grayscale (1) and RGB (3).

    Example:
        >>> import numpy as np
        >>> convert_channels(np.full((1, 2, 2, 1), 7, np.uint8), 3)[0, 0, 0].tolist()
        [7, 7, 7]
    """
    images = np.asarray(images_uint8)
    have = images.shape[-1]
    if have == channels:
        return images
    if (have, channels) == (1, 3):
        return np.repeat(images, 3, axis=-1)
    if (have, channels) == (3, 1):
        gray = np.tensordot(images.astype(np.float32), _LUMA, axes=([-1], [0]))
        return np.clip(np.round(gray), 0, 255).astype(np.uint8)[..., None]
    raise ValueError(f"can only convert between 1 and 3 channels, not {have} -> {channels}.")


def _tf_convert_channels(image, have: int, channels: int):
    if have == channels:
        return image
    if (have, channels) == (1, 3):
        return tf.repeat(image, 3, axis=-1)
    gray = tf.tensordot(tf.cast(image, tf.float32), tf.constant(_LUMA), axes=[[-1], [0]])
    return tf.cast(tf.clip_by_value(tf.round(gray), 0.0, 255.0), tf.uint8)[..., None]


def channel_stats(images_uint8) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and (population) std in 0..255 units.

    Args:
        images_uint8: uint8 ``[N, H, W, C]`` (or an `ImageSet`, read with `to_numpy`).

    Returns:
        ``(mean, std)``, float32 arrays of shape ``(C,)``.

    Example:
        >>> import numpy as np
        >>> mean, std = channel_stats(np.array([[[[0]], [[255]]]], np.uint8))
        >>> mean.tolist(), std.tolist()
        ([127.5], [127.5])
    """
    if isinstance(images_uint8, ImageSet):
        images_uint8 = to_numpy(images_uint8)[0]
    images = np.asarray(images_uint8)
    if images.ndim != 4 or images.size == 0:
        raise ValueError(f"channel_stats expects a non-empty [N, H, W, C] array, got shape {images.shape}.")
    channels = images.shape[-1]
    total = np.zeros(channels, np.float64)
    total_sq = np.zeros(channels, np.float64)
    for i in range(0, len(images), _CHUNK):
        chunk = images[i : i + _CHUNK].reshape(-1, channels).astype(np.float64)
        total += chunk.sum(axis=0)
        total_sq += np.square(chunk).sum(axis=0)
    count = images.size // channels
    mean = total / count
    var = np.maximum(total_sq / count - np.square(mean), 0.0)
    return mean.astype(np.float32), np.sqrt(var).astype(np.float32)


def _plan(shape, mean, std, image_size, resize_method, channels):
    """Checks the request against an image shape (H, W, C); returns the plan."""
    height, width, have = shape
    if have is None:
        raise ValueError("the channel count of the images is unknown; give the dataset a static channel dimension.")
    mean = np.asarray(mean, np.float32)
    std = np.asarray(std, np.float32)
    if mean.ndim > 1 or std.ndim > 1:
        raise ValueError(f"mean and std must be scalars or per-channel vectors, got shapes {mean.shape}, {std.shape}.")
    if np.any(std <= 0):
        raise ValueError(f"std must be > 0 for every channel, got {std.tolist()}; compute it with channel_stats on the ID training images.")
    model_c = mean.size if mean.ndim == 1 else (std.size if std.ndim == 1 else None)
    if channels is not None:
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}.")
        if have not in (1, 3) and have != channels:
            raise ValueError(f"cannot convert {have}-channel images to {channels} channels (only 1 <-> 3).")
        if model_c is not None and model_c != channels:
            raise ValueError(
                f"channels={channels} but mean/std have {model_c} values; pass the statistics of a "
                f"{channels}-channel training set, or channels={model_c}."
            )
        target_c = channels
    else:
        if model_c is not None and model_c != have:
            raise ValueError(
                f"channel mismatch: the images have {have} channel(s) but mean/std (the model input) "
                f"have {model_c}; pass channels={model_c} to convert "
                f"{'grayscale to RGB' if have == 1 else 'RGB to grayscale' if have == 3 else 'them'}."
            )
        target_c = have
    for v, what in ((mean, "mean"), (std, "std")):
        if v.ndim == 1 and v.size != target_c:
            raise ValueError(f"{what} has {v.size} values but the images will have {target_c} channels.")
    size = None
    if image_size is not None:
        size = _size(image_size)
        if resize_method is not None:
            _check_method(resize_method)
        elif height is not None and width is not None and (height, width) != size:
            raise ValueError(
                f"size mismatch: the images are {height}x{width} but image_size is {size[0]}x{size[1]}; "
                "pass resize_method='tf' (antialiased bilinear) or one of "
                f"{', '.join(RESIZE_METHODS[1:])} to resize them."
            )
    elif resize_method is not None:
        raise ValueError(f"resize_method={resize_method!r} needs image_size=(height, width).")
    return mean, std, size, have, target_c


def preprocess(
    dataset_or_numpy,
    mean,
    std,
    image_size=None,
    resize_method: str | None = None,
    channels: int | None = None,
    batch_size: int | None = None,
):
    """Resize (if asked), convert channels (if asked), then ``(x - mean) / std``.

    Args:
        dataset_or_numpy: uint8 images ``[N, H, W, C]`` (numpy), a ``tf.data.Dataset``
            of uint8 images or of ``(image, label, ...)`` tuples, or an `ImageSet`.
        mean: Per-channel mean of the ID training images (0..255 units), e.g. from
            `channel_stats`; its length is the model's channel count.
        std: Per-channel std, same units.
        image_size: The model's ``(height, width)`` (or int). None: no size check.
        resize_method: None (a size mismatch raises), ``"tf"``, ``"pil_nearest"``,
            ``"pil_bilinear"``, ``"pil_bicubic"`` or ``"pil_lanczos"``.
        channels: None (a channel mismatch with mean/std raises) or 1 / 3 to convert.
        batch_size: Datasets only: batch the output.

    Returns:
        float32 numpy array for numpy input; a dataset (same structure, image
        replaced by float32) for dataset input, batched when ``batch_size`` is set.

    Raises:
        ValueError: Size or channel mismatch without the option that fixes it, bad options.

    Example:
        >>> import numpy as np
        >>> x = np.zeros((4, 32, 32, 3), np.uint8)
        >>> preprocess(x, [0.0], [255.0], image_size=28, resize_method="tf", channels=1).shape
        (4, 28, 28, 1)
    """
    data = dataset_or_numpy.dataset if isinstance(dataset_or_numpy, ImageSet) else dataset_or_numpy
    if isinstance(data, tf.data.Dataset):
        return _preprocess_dataset(data, mean, std, image_size, resize_method, channels, batch_size)
    images = np.asarray(data)
    if images.dtype != np.uint8:
        raise ValueError(
            f"preprocess expects uint8 images in 0..255, got {images.dtype}; pass the raw images "
            "(it does the normalisation itself)."
        )
    if images.ndim != 4:
        raise ValueError(f"preprocess expects images [N, H, W, C], got shape {images.shape} (add a channel axis).")
    mean, std, size, have, target_c = _plan(images.shape[1:], mean, std, image_size, resize_method, channels)
    if size is not None and resize_method is not None:
        images = resize_images(images, size, resize_method)
    images = convert_channels(images, target_c)
    return (images.astype(np.float32) - mean) / std


def _preprocess_dataset(ds, mean, std, image_size, resize_method, channels, batch_size):
    spec = ds.element_spec
    tuple_like = isinstance(spec, tuple)
    image_spec = spec[0] if tuple_like else spec
    if image_spec.dtype != tf.uint8 or image_spec.shape.rank != 3:
        raise ValueError(
            f"preprocess expects a dataset of uint8 [H, W, C] images (or tuples starting with one), "
            f"got {image_spec}; pass an unbatched dataset from data.load(...).dataset."
        )
    shape = tuple(image_spec.shape.as_list())
    mean, std, size, have, target_c = _plan(shape, mean, std, image_size, resize_method, channels)
    if batch_size is not None and size is None and None in shape[:2]:
        raise ValueError("the images differ in size, so they cannot be batched; pass image_size and resize_method.")
    mean_t, std_t = tf.constant(mean), tf.constant(std)
    out_hw = size if size is not None else shape[:2]

    def fix(image):
        if size is not None:
            if resize_method is None:
                if None in shape[:2]:
                    check = tf.debugging.assert_equal(
                        tf.shape(image)[:2], tf.constant(size, tf.int32),
                        message=f"size mismatch: image_size is {size}; pass resize_method='tf' or a pil_* method",
                    )
                    with tf.control_dependencies([check]):
                        image = tf.identity(image)
            elif resize_method == "tf":
                image = _tf_resize(image, size)
            else:
                image = tf.numpy_function(
                    lambda x: resize_images(x, size, resize_method), [image], tf.uint8, stateful=False
                )
            image = tf.ensure_shape(image, (*out_hw, have))
        image = _tf_convert_channels(image, have, target_c)
        return (tf.cast(image, tf.float32) - mean_t) / std_t

    if tuple_like:
        ds = ds.map(lambda image, *rest: (fix(image), *rest), num_parallel_calls=tfdata.map_calls())
    else:
        ds = ds.map(fix, num_parallel_calls=tfdata.map_calls())
    if batch_size is not None:
        ds = ds.batch(int(batch_size))
    return tfdata.finish(ds)
