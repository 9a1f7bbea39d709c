"""Streaming input for ID sets too large for memory (ImageNet): decode -> crop -> batch, in tf.data.

Training: random-resized crop (area 8-100 %, aspect 3/4-4/3) to `size` + flip,
stateless per (seed, image index), so a given seed gives the same crops;
evaluation: the shorter side to size*256/224, then the center crop (or a plain
resize, for sets that are crops already). Images stay raw pixels (0..255): the
models normalise. `amp_tf.run.pipeline.load_id_stream` builds a job's
`StreamedIDData` from these.

Example:
    >>> import numpy as np, tensorflow as tf
    >>> img = tf.constant(np.zeros((48, 64, 3), np.uint8))
    >>> val_transform(img, 28).shape
    TensorShape([28, 28, 3])
"""

from __future__ import annotations

import tensorflow as tf

from amp_tf.data import tfdata


def _rgb(image):
    if image.shape[-1] == 1:
        image = tf.image.grayscale_to_rgb(image)
    return image


def train_transform(image, seed, size, augment=True):
    """uint8 image -> float32 `size` x `size` x 3 crop in 0..255 (random-resized crop + flip)."""
    image = _rgb(image)
    if not augment:
        return val_transform(image, size)
    s = tf.random.experimental.stateless_split(seed, 2)
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), bounding_boxes=tf.zeros([1, 0, 4]), seed=s[0], min_object_covered=0.0,
        aspect_ratio_range=(3 / 4, 4 / 3), area_range=(0.08, 1.0), max_attempts=10,
        use_image_if_no_bounding_boxes=True)
    crop = tf.slice(image, begin, crop_size)
    crop = tf.image.resize(tf.cast(crop, tf.float32), (size, size), method="bilinear", antialias=True)
    crop = tf.image.stateless_random_flip_left_right(crop, s[1])
    return tf.clip_by_value(crop, 0.0, 255.0)


def val_transform(image, size):
    """uint8 image -> float32 center crop: shorter side to size*256/224, then crop `size`."""
    image = _rgb(image)
    short = int(round(size * 256 / 224))
    hw = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = short / tf.reduce_min(hw)
    new_hw = tf.cast(tf.round(hw * scale), tf.int32)
    resized = tf.image.resize(tf.cast(image, tf.float32), new_hw, method="bilinear", antialias=True)
    top = (new_hw[0] - size) // 2
    left = (new_hw[1] - size) // 2
    crop = tf.image.crop_to_bounding_box(resized, top, left, size, size)
    return tf.clip_by_value(crop, 0.0, 255.0)


def train_dataset(image_set, batch_size, size, seed, augment=True, limit=None):
    """Repeated, batched (raw-pixel float image, label) stream and its steps per epoch."""
    n = image_set.num_examples if limit is None else min(limit, image_set.num_examples or limit)
    if n is None:
        raise ValueError(f"{image_set.name}: the number of training images is unknown; pass --train-limit.")
    steps = n // batch_size
    if steps == 0:
        raise ValueError(f"the training set has {n} images, fewer than one batch of {batch_size}; "
                         "lower --batch-size.")
    ds = image_set.dataset if limit is None else image_set.dataset.take(limit)
    ds = ds.repeat().enumerate()

    def fn(i, pair):
        image, label = pair
        s = tf.stack([tf.cast(seed, tf.int64), i])
        return tf.ensure_shape(train_transform(image, s, size, augment), (size, size, 3)), label

    ds = ds.map(fn, num_parallel_calls=tfdata.map_calls())
    return tfdata.finish(ds.batch(batch_size, drop_remainder=True)), steps


def eval_batches(ds, size, limit=None, center_crop=True, batch_size=256):
    """(uint8 crops, labels) batches of `size` for scoring (val transform, or resize only)."""
    if limit is not None:
        ds = ds.take(limit)

    def fn(image, label):
        if center_crop:
            x = val_transform(image, size)
        else:
            x = tf.image.resize(tf.cast(_rgb(image), tf.float32), (size, size), method="bilinear",
                                antialias=True)
        return tf.cast(tf.round(tf.clip_by_value(x, 0.0, 255.0)), tf.uint8), label

    return tfdata.finish(ds.map(fn, num_parallel_calls=tfdata.map_calls()).batch(batch_size))
