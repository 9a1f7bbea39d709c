"""SavedModel export for TF Serving: prediction and OOD score in one call.

The `serving_default` signature takes `images` (uint8, N x H x W x C, raw pixels)
and returns `logits`, `probabilities`, `predicted_class`, `tau`, `amp_score`,
`calibrated_logits`, `msp`, `energy` and `is_ood`. Normalisation with the ID
training statistics happens inside the graph; the K anchors, the statistics
and the OOD threshold are variables of the SavedModel, so it needs no amp_tf
at serving time.

`is_ood = amp_score < threshold`, where the threshold is chosen so that a
fraction `tpr` (default 95%) of the given ID validation images pass.

Example:

>>> export_for_serving(predictor, "serving/", mean=[72.9], std=[90.0],
...                    id_images=val_images_uint8)        # doctest: +SKIP
>>> import tensorflow as tf                                 # doctest: +SKIP
>>> loaded = tf.saved_model.load("serving/")                # doctest: +SKIP
>>> out = loaded.signatures["serving_default"](images=tf.zeros([2, 28, 28, 1], tf.uint8))  # doctest: +SKIP
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from amp_tf.predictor import AnchoredPredictor


def threshold_at_tpr(id_scores, tpr=0.95):
    """The largest threshold t with at least `tpr` of `id_scores` >= t."""
    s = np.sort(np.asarray(id_scores, dtype="float64").ravel())
    if s.size == 0:
        raise ValueError("id_scores: empty; pass ID validation images to set the threshold.")
    if not 0.0 < tpr <= 1.0:
        raise ValueError(f"tpr: expected a fraction in (0, 1], got {tpr}.")
    return float(s[int(np.floor((1.0 - tpr) * s.size + 1e-9))])


def _stats(values, channels, name):
    v = np.asarray(values, dtype="float32").reshape(-1)
    if v.size == 1:
        v = np.repeat(v, channels)
    if v.size != channels:
        raise ValueError(f"{name}: expected 1 or {channels} per-channel values, got {v.size}.")
    if name == "std" and np.any(v <= 0):
        raise ValueError("std: every per-channel std must be > 0.")
    return v


@keras.saving.register_keras_serializable(package="amp_tf")
class ServingHead(keras.layers.Layer):
    """uint8 pixels -> normalise -> AnchoredPredictor -> outputs plus `is_ood`."""

    def __init__(self, predictor, mean, std, threshold=0.0, **kwargs):
        super().__init__(**kwargs)
        c = predictor.anchor_shape[-1]
        self.predictor = predictor
        self.mean = self.add_weight(
            shape=(c,), initializer=keras.initializers.Constant(_stats(mean, c, "mean")),
            trainable=False, name="mean",
        )
        self.std = self.add_weight(
            shape=(c,), initializer=keras.initializers.Constant(_stats(std, c, "std")),
            trainable=False, name="std",
        )
        self.threshold = self.add_weight(
            shape=(), initializer=keras.initializers.Constant(float(threshold)),
            trainable=False, name="threshold",
        )

    def normalise(self, images):
        return (tf.cast(images, tf.float32) - self.mean) / self.std

    def call(self, images):
        out = dict(self.predictor(self.normalise(images)))
        out["is_ood"] = out["amp_score"] < self.threshold
        return out


def export_for_serving(
    predictor, path, mean, std, id_images=None, threshold=None, tpr=0.95, batch_size=256
):
    """Writes a SavedModel whose `serving_default` takes uint8 `images`.

    Args:
        predictor: an `AnchoredPredictor`.
        path: output directory.
        mean, std: per-channel ID training statistics in pixel units (0..255),
            the ones used to preprocess training data.
        id_images: uint8 ID validation images (N, H, W, C); the threshold is set
            so that a fraction `tpr` of them pass (`is_ood` false).
        threshold: a fixed AMP threshold instead of `id_images`.
        tpr: fraction of ID images that must pass.

    Returns:
        The `ServingHead` layer that was exported (callable in-process on uint8).
    """
    if not isinstance(predictor, AnchoredPredictor):
        raise TypeError(f"predictor: expected an AnchoredPredictor, got {type(predictor).__name__}.")
    if (id_images is None) == (threshold is None):
        raise ValueError("Pass exactly one of id_images (to set the threshold at `tpr`) or threshold.")
    head = ServingHead(predictor, mean, std)
    shape = predictor.anchor_shape[1:]
    head(np.zeros((1,) + tuple(shape), np.uint8))  # builds head and predictor
    if id_images is not None:
        id_images = np.asarray(id_images)
        if id_images.dtype != np.uint8 or id_images.shape[1:] != shape:
            raise ValueError(
                f"id_images: expected uint8 (N, {shape[0]}, {shape[1]}, {shape[2]}), got "
                f"{id_images.dtype} {id_images.shape}."
            )
        normed = np.concatenate([
            head.normalise(id_images[i : i + batch_size]).numpy()
            for i in range(0, len(id_images), batch_size)
        ])
        threshold = threshold_at_tpr(predictor.predict(normed, batch_size)["amp_score"], tpr)
    head.threshold.assign(float(threshold))

    spec = tf.TensorSpec((None,) + tuple(shape), tf.uint8, name="images")
    archive = keras.export.ExportArchive()
    archive.track(head)
    archive.add_endpoint(name="serving_default", fn=head.call, input_signature=[spec])
    archive.write_out(str(path), verbose=False)
    return head
