"""Loading a named set as raw-pixel arrays in a model's geometry (size, channels).

Used by every CLI and the job pipeline: a size or channel mismatch is an error
naming the flag that fixes it, unless the caller asks to resize / convert.

Example:
    >>> x, y, s = load_images("digits", "test", (28, 28), 1, limit=10)
    >>> x.shape, x.dtype
    ((10, 28, 28, 1), dtype('uint8'))
"""
from __future__ import annotations

import numpy as np

from amp_tf.data import preprocessing as _pp
from amp_tf.data.preprocessing import RESIZE_METHODS, preprocess, resize_images
from amp_tf.data.registry import load, to_numpy


def load_images(name, split, image_size, channels, resize=None, convert_channels=False, limit=None,
                data_dir=None, download=False, seed=None, shuffle=False, strict=False):
    """Loads a set as uint8 numpy images in the model's geometry, and int64 labels.

    Args:
        image_size: the model's (height, width).
        channels: the model's channel count.
        resize: None (a size mismatch is an error naming --resize) or one of
            `amp_tf.RESIZE_METHODS`.
        convert_channels: convert grayscale <-> RGB on a channel mismatch
            (else an error naming --channels).
        limit: at most this many images (first ones, or a seeded shuffle).
        strict: folder sets: refuse unreadable files (naming them) instead of skipping them.

    Returns:
        ``(images uint8 (N, H, W, C), labels int64 (N,), image_set)``.

    Raises:
        DataNotFoundError: the data is not on this machine.
        ValueError: unknown name, size/channel mismatch without the fixing flag, no images.
    """
    size = tuple(int(s) for s in image_size)
    s = load(name, split, data_dir=data_dir, download=download, seed=seed, shuffle=shuffle, strict=strict)
    _check_geometry(name, s.image_shape, size, channels, resize, convert_channels)
    xs, ys = _read_batches(s, size, channels, resize, limit)
    if not xs or sum(len(v) for v in xs) == 0:
        why = f" (limit {limit})" if limit is not None else ""
        raise ValueError(f"{name} (split {split!r}) has no images{why}.")
    return np.concatenate(xs), np.concatenate(ys).astype(np.int64), s


def _check_geometry(name, image_shape, size, channels, resize, convert_channels):
    """ValueError (naming --channels / --resize) when the set's images do not fit the model."""
    h, w, c = image_shape
    if c != channels and not convert_channels:
        raise ValueError(
            f"{name}: the images have {c} channel(s) but the model takes {channels}; pass --channels "
            f"to convert {'grayscale to RGB' if c == 1 else 'RGB to grayscale' if c == 3 else 'them'}."
        )
    if c != channels and {c, channels} != {1, 3}:
        raise ValueError(f"{name}: cannot convert {c}-channel images to {channels} channels (only 1 <-> 3).")
    if (h, w) != size and resize is None:
        have = f"{h}x{w}" if h is not None else "of varying sizes"
        raise ValueError(
            f"{name}: the images are {have} but the model takes {size[0]}x{size[1]}; pass --resize tf "
            f"(antialiased bilinear) or one of {', '.join(RESIZE_METHODS[1:])} to resize them."
        )


def _read_batches(s, size, channels, resize, limit):
    """Lists ``(images, labels)`` of the `ImageSet` `s` (at most `limit` images) in the model's geometry."""
    h, w, _ = s.image_shape

    def fix(x):
        if x.shape[1:3] != size:
            x = resize_images(x, size, resize)
        return _pp.convert_channels(x, channels)

    if s.arrays is not None:  # in memory
        x, y = to_numpy(s, limit)
        return [fix(x)], [y]
    ds = s.dataset if limit is None else s.dataset.take(limit)
    xs, ys = [], []
    if h is None or w is None:  # varying sizes: resize per image in the pipeline
        zeros, ones = np.zeros(channels, np.float32), np.ones(channels, np.float32)
        ds = preprocess(ds, zeros, ones, image_size=size, resize_method=resize,
                        channels=channels, batch_size=256)
        for xb, yb in ds.as_numpy_iterator():
            xs.append(np.clip(np.round(xb), 0, 255).astype(np.uint8))
            ys.append(yb)
    else:
        for xb, yb in ds.batch(512).as_numpy_iterator():
            xs.append(fix(xb))
            ys.append(yb)
    return xs, ys
