"""LiteRT: the `.tflite` of a `ServingHead` (`export_tflite`, `tflite_bytes`) and `TFLiteModel`,
which runs it with the same input checks and outputs as the SavedModel. Every name still imports
from `amp_tf.serve.export`."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import tensorflow as tf

from amp_tf.contract import check_int
from amp_tf.recipe import SERVING_TPR
from amp_tf.serve.head import (ServingHead, check_new_path, empty_message, rank_message, serving_head, size_message,
                               temporary_sibling, wanted_input)


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


def export_tflite(predictor, path, id_images=None, threshold=None, tpr=SERVING_TPR, batch_size=1):
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
    path = check_new_path(path, folder=False)
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
    tmp = temporary_sibling(path)
    try:
        tmp.write_bytes(flat)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return head


#: The first bytes of files given as a .tflite by mistake, and what they are.
_NOT_TFLITE = {b"PK\x03\x04": "a zip archive (a Keras .keras model? load that with keras.models.load_model)",
               b"\x89HDF": "an HDF5 file (a legacy .h5 Keras model? load that with keras.models.load_model)"}


def check_tflite_file(path):
    """Refuses, naming `path` and what it is, anything but a LiteRT flatbuffer (identifier ``TFL3``): a
    missing path, a folder, an empty, text or Keras file. A damaged flatbuffer is the interpreter's to find."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"path: {path} is not a file; pass the .tflite that export_tflite wrote.")
    with open(path, "rb") as f:
        head = f.read(8)
    if head[4:8] == b"TFL3":
        return path
    what = next((w for magic, w in _NOT_TFLITE.items() if head.startswith(magic)), None)
    if what is None:
        text = head and all(32 <= b < 127 or b in (9, 10, 13) for b in head)
        what = "empty (0 bytes)" if not head else "a text file" if text else "no LiteRT flatbuffer (no TFL3 mark)"
    raise ValueError(f"path: {path} is {what}, not a .tflite; pass the .tflite that export_tflite wrote.")


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
        if num_threads is not None:
            check_int(num_threads, "num_threads", 1, note="interpreter threads; None: the runtime's default")
        check_tflite_file(path)
        self.path = str(path)
        try:
            self.interpreter, self.runtime = _interpreter(path, num_threads)
        except ValueError as err:  # the flatbuffer does not parse (a damaged file)
            raise ValueError(f"path: {path} is a damaged .tflite (the interpreter says: {err}); export it again "
                             f"with export_tflite, or copy it again.") from None
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
                f"{wanted_input(self.image_shape)}; got dtype {images.dtype}. The .tflite takes uint8 as "
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
