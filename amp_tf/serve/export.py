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

import math
import os
import shutil
import uuid
import warnings
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from amp_tf.detection.metrics import check_tpr as _check_tpr, threshold_at_tpr  # noqa: F401  (public here too)
from amp_tf.models.pixels import check_pixels
from amp_tf.detection.detectors.shipped import ShippedDetector, feature_extractor, shipped_outputs
from amp_tf.method.inference import batched
from amp_tf.method.predictor import AnchoredPredictor

#: The fewest ID images `id_images` may set a threshold from.
MIN_ID_IMAGES = 20

OUTPUTS = ("logits", "probabilities", "predicted_class", "tau", "amp_score",
           "calibrated_logits", "msp", "energy", "ood_score", "is_ood")


# ------------------------------------------------------------------ input messages (SavedModel and .tflite)
def _want(shape):
    h, w, c = shape
    return f"images: expected images of shape (N, {h}, {w}, {c}) with N >= 1 (uint8 raw pixels)"


def rank_message(shape):
    """The first line for input of another rank (both exports)."""
    return (f"{_want(shape)}; got another rank. One image without its batch axis? "
            "Add one: images[None].")


def size_message(shape):
    """The first line for images of another H, W or C (both exports)."""
    return f"{_want(shape)}; got another size. Resize the images (or convert their channels) first."


def empty_message(shape):
    """The first line for an empty batch (both exports)."""
    return f"{_want(shape)}; got an empty batch."


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


def serving_head(predictor, id_images=None, threshold=None, tpr=0.95, batch_size=256):
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
def _check_new_path(path, folder):
    """Refuses an existing file, or a non-empty folder (a folder export may go into an empty one)."""
    path = Path(path)
    if folder and path.is_dir():
        if any(path.iterdir()):
            raise ValueError(f"path: {path} is a folder that is not empty; export into a new or empty "
                             "folder (an export never writes beside or over other files).")
        return path
    if path.exists():
        kind = "a folder" if path.is_dir() else "an existing file"
        raise ValueError(f"path: {path} is {kind}; export to a new path (an export never overwrites).")
    return path


def _temporary_sibling(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.parent / f".{path.name}.partial-{uuid.uuid4().hex[:8]}"


def export_for_serving(predictor, path, id_images=None, threshold=None, tpr=0.95, batch_size=256):
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
    path = _check_new_path(path, folder=True)
    head = serving_head(predictor, id_images, threshold, tpr, batch_size)
    spec = tf.TensorSpec((None, None, None, None), tf.uint8, name="images")
    archive = keras.export.ExportArchive()
    archive.track(head)
    archive.add_endpoint(name="serving_default", fn=head.call, input_signature=[spec])
    archive.add_endpoint(name="detector", fn=head.detector_info, input_signature=[])
    tmp = _temporary_sibling(path)
    try:
        archive.write_out(str(tmp), verbose=False)
        os.replace(tmp, path)  # an empty folder is replaced too
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return head


# ------------------------------------------------------------------ LiteRT
def tflite_bytes(head, batch_size=1):
    """The `.tflite` flatbuffer of a `ServingHead`: builtin ops only, uint8 (batch_size, H, W, C) in."""
    batch_size = _check_batch_size(batch_size)
    h, w, c = head.predictor.anchor_shape[1:]
    spec = tf.TensorSpec((batch_size, h, w, c), tf.uint8, name="images")
    module = tf.Module()
    # the tf.Variables under the Keras ones, tracked by the module: the converter freezes them
    module.tf_variables = [v.value for v in head.weights]

    def serving_default(images):
        return head.fixed_shape_call(images)

    def detector():
        return head.detector_info()

    module.serve = tf.function(serving_default, input_signature=[spec])
    module.detector = tf.function(detector, input_signature=[])
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [module.serve.get_concrete_function(), module.detector.get_concrete_function()], module)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    try:
        return converter.convert()
    except Exception as err:  # ConverterError and friends: name what did not lower
        lines = str(err).splitlines() or [type(err).__name__]
        what = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("TF Select ops:")), lines[0])
        raise ValueError(
            f"predictor: does not lower to TFLite builtin ops (not lowered: {what}). "
            "The SavedModel export (export_for_serving) still works; for TFLite use a backbone of "
            "standard layers and anchor_mode='fixed'."
        ) from err


def _check_batch_size(batch_size):
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size: expected the fixed batch of the .tflite, an int >= 1; got {batch_size!r}.")
    return int(batch_size)


def export_tflite(predictor, path, id_images=None, threshold=None, tpr=0.95, batch_size=1):
    """Writes the serving model as a `.tflite` (LiteRT): builtin ops, uint8 raw pixels in.

    The same outputs and threshold as `export_for_serving`; the input is
    `images`, uint8 of the fixed shape (batch_size, H, W, C). Run it with
    `TFLiteModel(path)`, which takes any number of images.

    Args:
        predictor: an `AnchoredPredictor`, or the `ServingHead` that
            `export_for_serving` returned (then its threshold is used: pass
            neither `id_images` nor `threshold`).
        path: the `.tflite` file to write; must not exist (checked first).
        id_images, threshold, tpr: as in `export_for_serving`.
        batch_size: the fixed batch of the model (1: one image per invoke).

    Returns:
        The exported `ServingHead`.

    Example:

    >>> head = export_for_serving(predictor, "serving/", id_images=val_u8)  # doctest: +SKIP
    >>> export_tflite(head, "model.tflite")                             # doctest: +SKIP
    >>> TFLiteModel("model.tflite")(val_u8[:4])["is_ood"]                # doctest: +SKIP
    array([False, False,  True, False])
    """
    path = _check_new_path(path, folder=False)
    batch_size = _check_batch_size(batch_size)
    inner = predictor.predictor if isinstance(predictor, ServingHead) else predictor
    if getattr(inner, "anchor_mode", "fixed") != "fixed":
        raise ValueError(
            f"predictor: anchor_mode={inner.anchor_mode!r} draws anchors with an int64 bitwise hash, "
            "which TFLite has no builtin ops for; export a predictor with anchor_mode='fixed' "
            "(the SavedModel export takes either)."
        )
    head = serving_head(predictor, id_images, threshold, tpr)
    flat = tflite_bytes(head, batch_size)
    tmp = _temporary_sibling(path)
    try:
        tmp.write_bytes(flat)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return head


def _interpreter(path, num_threads):
    try:
        from ai_edge_litert.interpreter import Interpreter
        runtime = "ai_edge_litert"
    except ImportError:  # TensorFlow's own interpreter: the same kernels
        Interpreter = tf.lite.Interpreter
        runtime = "tensorflow"
    return Interpreter(model_path=str(path), num_threads=num_threads), runtime


class TFLiteModel:
    """Runs an exported `.tflite` with the SavedModel's input checks; returns its dict.

    Uses the LiteRT interpreter (`ai-edge-litert`) when installed, else
    `tf.lite.Interpreter`. Any number of images N >= 1 is run in batches of
    the model's fixed batch (the last one padded, its padding dropped).

    Args:
        path: a `.tflite` written by `export_tflite`.
        num_threads: interpreter threads (None: the runtime's default).

    Attributes:
        batch_size: the fixed batch of the model.
        image_shape: (H, W, C) the model takes.
        runtime: `"ai_edge_litert"` or `"tensorflow"`.
        detector: `{"name", "label", "threshold"}` of the shipped detector (its `detector` signature).

    Example:

    >>> model = TFLiteModel("model.tflite", num_threads=1)   # doctest: +SKIP
    >>> out = model(images_uint8)                            # doctest: +SKIP
    >>> out["amp_score"].shape, out["is_ood"].dtype          # doctest: +SKIP
    ((8,), dtype('bool'))
    """

    def __init__(self, path, num_threads=None):
        if not Path(path).is_file():
            raise ValueError(f"path: {path} is not a file; pass the .tflite that export_tflite wrote.")
        self.path = str(path)
        self.interpreter, self.runtime = _interpreter(path, num_threads)
        signatures = self.interpreter.get_signature_list()
        if "serving_default" not in signatures or signatures["serving_default"]["inputs"] != ["images"]:
            raise ValueError(f"path: {path} has no serving_default signature taking `images`; "
                             "pass a .tflite written by amp_tf.serve.export.export_tflite.")
        self.runner = self.interpreter.get_signature_runner("serving_default")
        self.detector = {"name": "amp", "label": "amp", "threshold": None}  # a .tflite made before the info
        if "detector" in signatures:
            info = self.interpreter.get_signature_runner("detector")()
            self.detector = {k: (v.item().decode() if isinstance(v.item(), bytes) else float(v))
                             for k, v in ((k, np.asarray(v)) for k, v in info.items())}
        spec = self.runner.get_input_details()["images"]
        self.batch_size = int(spec["shape"][0])
        self.image_shape = tuple(int(d) for d in spec["shape"][1:])

    def check(self, images):
        """The SavedModel's checks, first line first: rank, size, empty, then dtype (uint8)."""
        images = np.asarray(images)
        if images.ndim != 4:
            raise ValueError(rank_message(self.image_shape) + f" Got shape {images.shape}.")
        if images.shape[1:] != self.image_shape:
            raise ValueError(size_message(self.image_shape) + f" Got shape {images.shape}.")
        if len(images) == 0:
            raise ValueError(empty_message(self.image_shape))
        if images.dtype != np.uint8:
            raise TypeError(
                f"{_want(self.image_shape)}; got dtype {images.dtype}. The .tflite takes uint8 as "
                "loaded: convert pixels in 0..255 with np.clip(np.rint(x), 0, 255).astype(np.uint8) "
                "(not x / 255)."
            )
        return images

    def __call__(self, images):
        images = self.check(images)
        n, b = len(images), self.batch_size
        parts = []
        for start in range(0, n, b):
            chunk = images[start:start + b]
            if len(chunk) < b:
                chunk = np.concatenate([chunk, np.zeros((b - len(chunk),) + chunk.shape[1:], np.uint8)])
            parts.append(self.runner(images=chunk))
        return {k: np.concatenate([p[k] for p in parts])[:n] for k in parts[0]}
