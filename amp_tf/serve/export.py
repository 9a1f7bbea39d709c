"""Export for serving: a SavedModel (TF Serving) and a `.tflite` (LiteRT, on devices).

Both take raw pixels and answer prediction and OOD verdict in one call. Their
outputs are the same: `logits`, `probabilities`, `predicted_class`, `tau`,
`amp_score`, `calibrated_logits`, `msp`, `energy`, `ood_score` and `is_ood`, where
`ood_score` is the shipped detector's score (higher = in-distribution) and
`is_ood = ood_score < threshold`, the threshold chosen so that a fraction `tpr`
(default 95%) of the ID validation images pass. The shipped detector is the one
`amp_tf.detection.detectors.select_detector` chose on validation data (pass the
`ShippedDetector`); given a bare `AnchoredPredictor`, the exports ship AMP alone
(`ood_score = amp_score`). Its score comes from the same pass over the K anchors
as the logits (features and logits of one backbone call). Both exports also answer
which detector they ship: the SavedModel's `detector` signature and the `.tflite`'s
`detector` signature return `name`, `label` and `threshold` (`TFLiteModel.detector`).

* `export_for_serving(predictor, "serving/", id_images=...)`: a SavedModel whose
  `serving_default` signature takes `images` (uint8, N x H x W x C, any N >= 1).
  Normalisation with the ID training statistics happens inside the graph (the
  predictor carries them); the K anchors, the statistics and the threshold are
  variables of the SavedModel, so it needs no amp_tf at serving time. A batch
  of another rank, H, W or C, or an empty batch, is answered with an error that
  names the expected shape.
* `export_tflite(predictor_or_head, "model.tflite")`: the same model as a
  `.tflite` of TFLite *builtin* ops only (no Flex / select TF ops), input
  `images` uint8 of a fixed shape (batch_size, H, W, C) (default batch 1). It is
  traced from `AnchoredPredictor.fixed_shape_outputs`: the K*B anchored rows go
  through the backbone in one call (the SavedModel's chunked `tf.map_fn` cannot
  be lowered), with the same numbers; batch normalisation is traced in inference
  mode and lowers to builtin multiply-adds. `TFLiteModel(path)` runs it in the
  LiteRT interpreter (`ai-edge-litert`, else TensorFlow's own `tf.lite.Interpreter`)
  with the SavedModel's input checks and messages, any N (run in batches of
  the fixed size, the last one padded), and returns the same dict.

Rules both exports follow:

* The output path must be new (or an empty folder for the SavedModel): an
  export never writes beside or over what is there, and is checked before any
  work. Files are written under a temporary name and renamed when complete.
* The threshold needs at least `MIN_ID_IMAGES` (20) ID images, and warns when
  the count cannot resolve `tpr` (fewer than 1 / (1 - tpr): the threshold is
  then simply the lowest ID score). Or pass a fixed `threshold=`.
* A model trained under a mixed precision policy (`mixed_bfloat16`) is exported
  in float32: its variables are float32 already, TFLite has no bfloat16
  kernels, and the threshold is set by the same float32 predictor that is
  exported (`float32_predictor`). Its exported scores therefore differ from the
  in-process bfloat16 scores by bfloat16 rounding.

Example:

>>> predictor = AnchoredPredictor.from_model(model, anchors)                # doctest: +SKIP
>>> head = export_for_serving(predictor, "run/serving", id_images=x_val_u8)  # doctest: +SKIP
>>> export_tflite(head, "run/model.tflite")                                  # doctest: +SKIP
>>> TFLiteModel("run/model.tflite", num_threads=1)(x_test_u8[:3])["is_ood"]  # doctest: +SKIP
array([False, False,  True])

(`examples/export_litert.py` runs this end to end.)
"""

from __future__ import annotations

import os
import shutil

import keras
import tensorflow as tf

from amp_tf.detection.metrics import check_tpr as _check_tpr, threshold_at_tpr  # noqa: F401  (public here too)

from amp_tf.serve.head import (  # noqa: F401  (importable from here as before)
    MIN_ID_IMAGES, OUTPUTS, ServingHead, check_new_path, empty_message, float32_predictor, rank_message,
    serving_head, size_message, temporary_sibling,
)
from amp_tf.serve.litert import TFLiteModel, export_tflite, tflite_bytes  # noqa: F401
from amp_tf.recipe import SERVING_TPR


def export_for_serving(predictor, path, id_images=None, threshold=None, tpr=SERVING_TPR, batch_size=256):
    """Writes a SavedModel whose `serving_default` takes uint8 `images`.

    Args:
        predictor: an `AnchoredPredictor` (`AnchoredPredictor.from_model`): it
            carries the training statistics, so the SavedModel takes raw pixels.
            Or a `ServingHead` (its threshold is kept).
        path: output folder: new, or empty (checked before any work).
        id_images: ID *validation* images in pixel units (N, H, W, C), N >= 20,
            never the reported test set; the threshold is set so that a
            fraction `tpr` of them pass (`is_ood` false).
        threshold: a fixed AMP threshold instead of `id_images`.
        tpr: fraction of ID images that must pass.
        batch_size: images per call while scoring `id_images`.

    Returns:
        The `ServingHead` layer that was exported (callable in-process on uint8;
        `export_tflite(head, ...)` writes the same model as a `.tflite`).

    Example:

    >>> predictor = AnchoredPredictor.from_model(model, anchors)  # doctest: +SKIP
    >>> export_for_serving(predictor, "serving/", id_images=val_images_uint8)  # doctest: +SKIP
    >>> loaded = tf.saved_model.load("serving/")                  # doctest: +SKIP
    >>> out = loaded.signatures["serving_default"](images=tf.zeros([2, 28, 28, 1], tf.uint8))  # doctest: +SKIP
    """
    path = check_new_path(path, folder=True)
    head = serving_head(predictor, id_images, threshold, tpr, batch_size)
    spec = tf.TensorSpec((None, None, None, None), tf.uint8, name="images")
    archive = keras.export.ExportArchive()
    archive.track(head)
    archive.add_endpoint(name="serving_default", fn=head.call, input_signature=[spec])
    archive.add_endpoint(name="detector", fn=head.detector_info, input_signature=[])
    tmp = temporary_sibling(path)
    try:
        archive.write_out(str(tmp), verbose=False)
        os.replace(tmp, path)  # an empty folder is replaced too
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return head
