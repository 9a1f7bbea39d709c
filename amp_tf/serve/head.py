"""What both exports (the SavedModel and the .tflite) are made of: `ServingHead` (the predictor,
its threshold and the shipped detector's score in one layer), `serving_head` (its threshold from the
ID validation images), `float32_predictor`, the input messages and the output-path checks.
Every name still imports from `amp_tf.serve.export`."""
from __future__ import annotations

import math
import uuid
import warnings
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from amp_tf.contract import check_folder_path
from amp_tf.detection.metrics import check_tpr as _check_tpr, threshold_at_tpr  # noqa: F401  (public here too)
from amp_tf.models.pixels import check_pixels
from amp_tf.detection.detectors.shipped import ShippedDetector, feature_extractor, shipped_outputs
from amp_tf.method.inference import batched
from amp_tf.method.predictor import AnchoredPredictor
from amp_tf.recipe import SERVING_TPR

#: The fewest ID images `id_images` may set a threshold from.
MIN_ID_IMAGES = 20

OUTPUTS = ("logits", "probabilities", "predicted_class", "tau", "amp_score",
           "calibrated_logits", "msp", "energy", "ood_score", "is_ood")


# ------------------------------------------------------------------ input messages (SavedModel and .tflite)
def wanted_input(shape):
    h, w, c = shape
    return f"images: expected images of shape (N, {h}, {w}, {c}) with N >= 1 (uint8 raw pixels)"


def rank_message(shape):
    """The first line for input of another rank (both exports)."""
    return (f"{wanted_input(shape)}; got another rank. One image without its batch axis? "
            "Add one: images[None].")


def size_message(shape):
    """The first line for images of another H, W or C (both exports)."""
    return f"{wanted_input(shape)}; got another size. Resize the images (or convert their channels) first."


def empty_message(shape):
    """The first line for an empty batch (both exports)."""
    return f"{wanted_input(shape)}; got an empty batch."


@keras.saving.register_keras_serializable(package="amp_tf")
class ServingHead(keras.layers.Layer):
    """Raw pixels -> AnchoredPredictor (which normalises) -> outputs plus `ood_score` and `is_ood`.

    Computes in float32 whatever the global dtype policy (the threshold and the
    scores it is compared with are float32).

    Args:
        predictor: an `AnchoredPredictor` (it carries anchors and statistics).
        threshold: `is_ood = ood_score < threshold`.
        score: the shipped detector's `ShippedScore` (None: AMP alone, `ood_score = amp_score`).
        detector: its name and label, `{"name": ..., "label": ...}` (readable from both exports).
    """

    def __init__(self, predictor, threshold=0.0, score=None, detector=None, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if isinstance(predictor, dict):  # from_config
            predictor = keras.saving.deserialize_keras_object(predictor)
        if isinstance(score, dict):
            score = keras.saving.deserialize_keras_object(score)
        self.predictor, self.score = predictor, score
        self.detector = dict(detector or {"name": "amp", "label": "amp"})
        self.extractor = (feature_extractor(predictor.backbone, score=score)  # what the score takes
                          if score is not None and score.uses_features() else None)
        self.threshold = self.add_weight(
            shape=(), initializer=keras.initializers.Constant(_finite(threshold)),
            trainable=False, name="threshold",
        )

    def build(self, input_shape=None):
        self.built = True

    def call(self, images):
        images = self.check_shape(images)
        out = shipped_outputs(self.predictor, self.score, self.extractor, images)
        out["is_ood"] = out["ood_score"] < tf.cast(self.threshold, tf.float32)
        return out

    def fixed_shape_call(self, images):
        """`call` for the TFLite trace: no in-graph checks, one backbone call (see the module doc)."""
        out = shipped_outputs(self.predictor, self.score, self.extractor, images, fixed_shape=True)
        out["is_ood"] = out["ood_score"] < tf.cast(self.threshold, tf.float32)
        return out

    def detector_info(self):
        """`{"name", "label", "threshold"}` of the shipped detector, as tensors (the exports' `detector`)."""
        return {"name": tf.constant(self.detector["name"]), "label": tf.constant(self.detector["label"]),
                "threshold": tf.cast(self.threshold, tf.float32)}

    def check_shape(self, images):
        """In-graph: a non-empty batch of the anchors' (H, W, C), with a message naming it.

        The rank is read from the runtime shape, not `tf.rank`: a signature
        declared rank 4 folds `tf.rank` to 4 even when it is fed one image of
        rank 3. The size and emptiness checks run only after the rank passed.
        """
        hwc = tuple(self.predictor.anchor_shape[1:])
        ext = tf.concat([tf.shape(images), tf.fill([5], -1)], 0)  # real dims, then -1s: rank 4 <=> ext[3] >= 0 > ext[4]
        rank_ok = tf.debugging.Assert(tf.logical_and(ext[3] >= 0, ext[4] < 0), [rank_message(hwc)])
        with tf.control_dependencies([rank_ok]):
            checks = [
                tf.debugging.assert_equal(ext[1:4], tf.constant(hwc, tf.int32), message=size_message(hwc)),
                tf.debugging.assert_positive(ext[0], message=empty_message(hwc)),
            ]
        with tf.control_dependencies(checks):
            return tf.identity(images)

    def get_config(self):
        config = super().get_config()
        config.update(predictor=keras.saving.serialize_keras_object(self.predictor),
                      threshold=float(keras.ops.convert_to_numpy(self.threshold)), detector=self.detector,
                      score=None if self.score is None else keras.saving.serialize_keras_object(self.score))
        return config


def _finite(threshold):
    t = float(threshold)
    if not np.isfinite(t):
        raise ValueError(f"threshold: expected a finite AMP score, got {threshold!r}.")
    return t


# ------------------------------------------------------------------ float32 for export
def _all_layers(layer):
    yield layer
    for sub in getattr(layer, "layers", []):
        yield from _all_layers(sub)


def _float32_layer(layer):
    config = layer.get_config()
    config["dtype"] = "float32"
    return layer.__class__.from_config(config)


def float32_predictor(predictor):
    """`predictor` with a float32 copy of its backbone when that computes in another dtype.

    A backbone trained under `mixed_bfloat16` keeps float32 variables; the copy
    has the same layers and weights with a float32 policy. A predictor whose
    backbone is float32 already is returned as it is.

    Raises:
        ValueError: a mixed-precision backbone that is not functional or
            Sequential (its layers cannot be rebuilt in float32).

    Example:

    >>> from amp_tf.method.predictor import AnchoredPredictor
    >>> from amp_tf.models import build_backbone
    >>> bb = build_backbone("resnet_small", (8, 8, 1), 3, width=4, anchored=True)
    >>> p = AnchoredPredictor(bb, np.zeros((2, 8, 8, 1)), mean=0, std=1)
    >>> float32_predictor(p) is p
    True
    """
    backbone = predictor.backbone
    if all(layer.compute_dtype == "float32" for layer in _all_layers(backbone)):
        return predictor
    try:
        clone = keras.models.clone_model(backbone, clone_function=_float32_layer, recursive=True)
    except (ValueError, TypeError, NotImplementedError) as err:
        raise ValueError(
            f"predictor: its backbone {backbone.name!r} computes in "
            f"{backbone.compute_dtype} and cannot be rebuilt in float32 for export "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}). Build the "
            "backbone under the float32 policy, load the trained weights, and export that."
        ) from err
    clone.set_weights(backbone.get_weights())
    config = predictor.get_config()
    config["backbone"] = clone
    twin = type(predictor)(**config)
    twin.anchors.assign(keras.ops.convert_to_numpy(predictor.anchors))
    return twin


# ------------------------------------------------------------------ the head both exports use
def _check_id_images(id_images, shape, tpr):
    id_images = check_pixels(id_images, "id_images")
    if id_images.ndim != 4 or id_images.shape[1:] != tuple(shape) or len(id_images) == 0:
        raise ValueError(
            f"id_images: expected raw pixels of shape (N, {shape[0]}, {shape[1]}, {shape[2]}), "
            f"N >= {MIN_ID_IMAGES}, got {id_images.shape}."
        )
    n = len(id_images)
    if n < MIN_ID_IMAGES:
        raise ValueError(
            f"id_images: {n} image(s) cannot set a serving threshold: pass at least {MIN_ID_IMAGES} "
            f"ID validation images (the threshold is the {1 - tpr:.0%} quantile of their AMP "
            "scores), or a fixed threshold=."
        )
    need = math.ceil(1.0 / (1.0 - tpr) - 1e-9)
    if n < need:
        warnings.warn(
            f"id_images: {n} images cannot resolve tpr={tpr}: the threshold is the lowest of their "
            f"AMP scores. Pass at least {need} ID validation images for this tpr.", UserWarning,
            stacklevel=3)
    return id_images


def serving_head(predictor, id_images=None, threshold=None, tpr=SERVING_TPR, batch_size=256):
    """The `ServingHead` both exports write: float32, built, its threshold set.

    Args:
        predictor: a `ShippedDetector` (the validation-selected detector, attached to its
            model: its score, name and threshold are shipped; `id_images` or `threshold`
            override the threshold), an `AnchoredPredictor` (AMP alone), or a `ServingHead`
            (e.g. the one `export_for_serving` returned: everything is kept; then pass
            neither `id_images` nor `threshold`).
        id_images, threshold, tpr: see `export_for_serving`.
        batch_size: images per call while scoring `id_images`.
    """
    score, detector = None, None
    if isinstance(predictor, ServingHead):
        if id_images is not None or threshold is not None:
            raise ValueError("predictor: a ServingHead carries its threshold; pass neither id_images "
                             "nor threshold with it (or pass its predictor to set a new one).")
        threshold = float(keras.ops.convert_to_numpy(predictor.threshold))
        predictor, score, detector = predictor.predictor, predictor.score, predictor.detector
    elif isinstance(predictor, ShippedDetector):
        det = predictor
        if det.predictor is None:
            raise ValueError("predictor: this ShippedDetector is not attached to a model; use "
                             "load_detector(folder, model) or det.attach(model) first.")
        if id_images is None and threshold is None:
            if det.threshold is None:
                raise ValueError("predictor: the ShippedDetector has no threshold; pass id_images (ID validation "
                                 "images) or threshold=.")
            threshold = det.threshold
        elif id_images is not None and threshold is not None:
            raise ValueError("Pass at most one of id_images (to set the threshold at `tpr`) or threshold.")
        predictor, score, detector = det.predictor, det.score_layer, {"name": det.name, "label": det.label}
    elif not isinstance(predictor, AnchoredPredictor):
        raise TypeError(f"predictor: expected a ShippedDetector, an AnchoredPredictor or a ServingHead, "
                        f"got {type(predictor).__name__}.")
    elif (id_images is None) == (threshold is None):
        raise ValueError("Pass exactly one of id_images (to set the threshold at `tpr`) or threshold.")
    _check_tpr(tpr)
    shape = tuple(predictor.anchor_shape[1:])
    if threshold is not None:
        threshold = _finite(threshold)
    else:
        id_images = _check_id_images(id_images, shape, tpr)
    predictor = float32_predictor(predictor)
    head = ServingHead(predictor, 0.0 if threshold is None else threshold, score=score, detector=detector)
    head(np.zeros((1,) + shape, np.uint8))  # builds head and predictor
    if id_images is not None:
        fn = tf.function(lambda x: {"ood_score": head.call(x)["ood_score"]}, reduce_retracing=True)
        threshold = threshold_at_tpr(batched(fn, id_images, batch_size)["ood_score"], tpr)
    head.threshold.assign(_finite(threshold))
    return head


# ------------------------------------------------------------------ output paths
def check_new_path(path, folder):
    """Refuses an existing file, or a non-empty folder (a folder export may go into an empty one), or a
    path under a file."""
    path = Path(path)
    check_folder_path(path.parent, f"path {path}")
    if folder and path.is_dir():
        if any(path.iterdir()):
            raise ValueError(f"path: {path} is a folder that is not empty; export into a new or empty "
                             "folder (an export never writes beside or over other files).")
        return path
    if path.exists():
        kind = "a folder" if path.is_dir() else "an existing file"
        raise ValueError(f"path: {path} is {kind}; export to a new path (an export never overwrites).")
    return path


def temporary_sibling(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.parent / f".{path.name}.partial-{uuid.uuid4().hex[:8]}"
