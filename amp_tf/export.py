"""SavedModel export for TF Serving: prediction and OOD score in one call.

The `serving_default` signature takes `images` (uint8, N x H x W x C, raw pixels)
and returns `logits`, `probabilities`, `predicted_class`, `tau`, `amp_score`,
`calibrated_logits`, `msp`, `energy` and `is_ood`. Normalisation with the ID
training statistics happens inside the graph (the predictor carries them); the
K anchors, the statistics and the OOD threshold are variables of the
SavedModel, so it needs no amp_tf at serving time. A batch of another H, W or C,
or an empty batch, is answered with an error that names the expected shape.

`is_ood = amp_score < threshold`, where the threshold is chosen so that a
fraction `tpr` (default 95%) of the given ID validation images pass.

Example:

>>> predictor = AnchoredPredictor.from_model(model, anchors)  # doctest: +SKIP
>>> export_for_serving(predictor, "serving/", id_images=val_images_uint8)  # doctest: +SKIP
>>> import tensorflow as tf                                 # doctest: +SKIP
>>> loaded = tf.saved_model.load("serving/")                # doctest: +SKIP
>>> out = loaded.signatures["serving_default"](images=tf.zeros([2, 28, 28, 1], tf.uint8))  # doctest: +SKIP
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from amp_tf.pixels import check_pixels
from amp_tf.predictor import AnchoredPredictor


def threshold_at_tpr(id_scores, tpr=0.95):
    """The largest threshold t with at least `tpr` of `id_scores` >= t."""
    s = np.sort(np.asarray(id_scores, dtype="float64").ravel())
    if s.size == 0:
        raise ValueError("id_scores: empty; pass ID validation images to set the threshold.")
    _check_tpr(tpr)
    if not np.all(np.isfinite(s)):
        raise ValueError("id_scores: contain NaN or Inf; the model's scores are not finite.")
    return float(s[int(np.floor((1.0 - tpr) * s.size + 1e-9))])


def _check_tpr(tpr):
    if not (isinstance(tpr, (int, float)) and 0.0 < tpr < 1.0):
        raise ValueError(f"tpr: expected a fraction in (0, 1), e.g. 0.95; got {tpr!r}.")


@keras.saving.register_keras_serializable(package="amp_tf")
class ServingHead(keras.layers.Layer):
    """Raw pixels -> AnchoredPredictor (which normalises) -> outputs plus `is_ood`.

    Args:
        predictor: an `AnchoredPredictor` (it carries anchors and statistics).
        threshold: AMP threshold; `is_ood = amp_score < threshold`.
    """

    def __init__(self, predictor, threshold=0.0, **kwargs):
        super().__init__(**kwargs)
        if isinstance(predictor, dict):  # from_config
            predictor = keras.saving.deserialize_keras_object(predictor)
        self.predictor = predictor
        self.threshold = self.add_weight(
            shape=(), initializer=keras.initializers.Constant(_finite(threshold)),
            trainable=False, name="threshold",
        )

    def build(self, input_shape=None):
        self.built = True

    def call(self, images):
        images = self.check_shape(images)
        out = dict(self.predictor(images))
        out["is_ood"] = out["amp_score"] < self.threshold
        return out

    def check_shape(self, images):
        """In-graph: a non-empty batch of the anchors' (H, W, C), with a message naming it."""
        h, w, c = self.predictor.anchor_shape[1:]
        shape = tf.shape(images)
        want = f"expected images of shape (N, {h}, {w}, {c}) with N >= 1 (uint8 raw pixels)"
        checks = [
            tf.debugging.assert_equal(tf.rank(images), 4, message=f"images: {want}; got another rank."),
            tf.debugging.assert_equal(shape[1:], tf.constant([h, w, c]),
                                      message=f"images: {want}; got another size. Resize the images first."),
            tf.debugging.assert_positive(shape[0], message=f"images: {want}; got an empty batch."),
        ]
        with tf.control_dependencies(checks):
            return tf.identity(images)

    def get_config(self):
        config = super().get_config()
        config.update(predictor=keras.saving.serialize_keras_object(self.predictor),
                      threshold=float(keras.ops.convert_to_numpy(self.threshold)))
        return config


def _finite(threshold):
    t = float(threshold)
    if not np.isfinite(t):
        raise ValueError(f"threshold: expected a finite AMP score, got {threshold!r}.")
    return t


def export_for_serving(predictor, path, id_images=None, threshold=None, tpr=0.95, batch_size=256):
    """Writes a SavedModel whose `serving_default` takes uint8 `images`.

    Args:
        predictor: an `AnchoredPredictor` (`AnchoredPredictor.from_model`): it
            carries the training statistics, so the SavedModel takes raw pixels.
        path: output directory.
        id_images: ID *validation* images in pixel units (N, H, W, C), never the
            reported test set; the threshold is set so that a fraction `tpr` of
            them pass (`is_ood` false).
        threshold: a fixed AMP threshold instead of `id_images`.
        tpr: fraction of ID images that must pass.

    Returns:
        The `ServingHead` layer that was exported (callable in-process on uint8).
    """
    if not isinstance(predictor, AnchoredPredictor):
        raise TypeError(f"predictor: expected an AnchoredPredictor, got {type(predictor).__name__}.")
    if (id_images is None) == (threshold is None):
        raise ValueError("Pass exactly one of id_images (to set the threshold at `tpr`) or threshold.")
    _check_tpr(tpr)
    head = ServingHead(predictor, 0.0 if threshold is None else _finite(threshold))
    shape = predictor.anchor_shape[1:]
    head(np.zeros((1,) + tuple(shape), np.uint8))  # builds head and predictor
    if id_images is not None:
        id_images = check_pixels(id_images, "id_images")
        if id_images.ndim != 4 or id_images.shape[1:] != shape or len(id_images) == 0:
            raise ValueError(
                f"id_images: expected raw pixels of shape (N, {shape[0]}, {shape[1]}, {shape[2]}), "
                f"N >= 1, got {id_images.shape}."
            )
        threshold = threshold_at_tpr(predictor.predict(id_images, batch_size)["amp_score"], tpr)
    head.threshold.assign(_finite(threshold))

    spec = tf.TensorSpec((None, None, None, None), tf.uint8, name="images")
    archive = keras.export.ExportArchive()
    archive.track(head)
    archive.add_endpoint(name="serving_default", fn=head.call, input_signature=[spec])
    archive.write_out(str(path), verbose=False)
    return head
