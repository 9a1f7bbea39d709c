"""The anchors, in one place: the draw (`select_anchors`) and the anchored input `[c, x - c]`
(`anchor_inputs`) that training (`AnchoredModel`) and inference (`AnchoredPredictor`) both feed
the backbone. Every other module that picks anchors or builds anchored rows calls these."""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from amp_tf import recipe
from amp_tf.contract import check_int
from amp_tf.models.pixels import check_pixels


def anchor_inputs(images, anchors, anchor_view=None, residual_scale=None):
    """The anchored input `[T(c), x - c]`, channel-concatenated: the one home of the formula.

    Args:
        images: (..., H, W, C) images `x`.
        anchors: (..., H, W, C) anchors `c`, one per image (the same shape as `images`).
        anchor_view: `T(c)`; defaults to the clean anchors.
        residual_scale: optional function applied to the residual `x - c` (e.g. `PixelNormalization.scale`
            for pixel-unit `x` and `c`); None: the residual as is (already normalised `x` and `c`).
    """
    if anchor_view is None:
        anchor_view = anchors
    residual = images - anchors
    if residual_scale is not None:
        residual = residual_scale(residual)
    return tf.concat([anchor_view, residual], axis=-1)


def select_anchors(images, k, seed=0, labels=None):
    """Picks `k` distinct training images as anchors, deterministically.

    Args:
        images: (N, H, W, C) training images in pixel units (uint8 or float 0..255).
        k: number of anchors, >= 2 (tau is a standard deviation over anchors).
        seed: an int >= 0; the same seed picks the same images (None: a random draw).
        labels: optional (N,) class labels: a class-stratified choice, round-robin
            over the classes (each class's images in a seeded order), so K >= the
            class count covers every class and no class gets two more than another.

    Returns:
        (k, H, W, C) float32 array.
    """
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(
            f"images: expected (N, H, W, C) training images, got shape {images.shape}."
        )
    k = recipe.check_num_anchors(k, "k")
    if seed is not None:
        seed = check_int(seed, "seed", 0, note="the same seed picks the same images")
    if k > len(images):
        raise ValueError(f"k: asked for {k} anchors from only {len(images)} images.")
    check_pixels(images, "images")
    rng = np.random.default_rng(seed)
    if labels is None:
        idx = rng.choice(len(images), size=k, replace=False)
        return images[np.sort(idx)].astype("float32")
    labels = np.asarray(labels).reshape(-1)
    if len(labels) != len(images):
        raise ValueError(f"labels: {len(labels)} labels for {len(images)} images.")
    queues = [list(rng.permutation(np.flatnonzero(labels == c))) for c in rng.permutation(np.unique(labels))]
    idx = []
    while len(idx) < k:
        for q in queues:
            if q and len(idx) < k:
                idx.append(q.pop())
    return images[np.asarray(idx)].astype("float32")
