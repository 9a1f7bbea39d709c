"""The shipped detector: the validation-selected score, fitted, saved with the run, computed in-graph.

One implementation of the shipped score, `ShippedScore`, a Keras layer that holds
the fitted state as non-trainable weights and computes the score from what one
pass over the K anchors gives: the per-anchor logits `(K, B, N)` and the anchored
features averaged over the anchors `(B, D)`. The SavedModel and the `.tflite`
(`amp_tf.serve.export`) and `ShippedDetector.score` all run this layer, so a user's
script, `eval.ood` and the served model score with exactly what was shipped.

The kinds (the candidates of `select_detector`):

* `amp` (and every name of `AMP_SCORES`): AMP of the calibrated mean logits;
* `mahalanobis`: `-min_c (f - mu_c)^T P (f - mu_c)`, computed as `-min_c ||f W - mu_c W||^2`
  with `P = W W^T` (P's eigenvectors scaled by the root of their eigenvalues), so float32
  subtracts small projected vectors instead of cancelling large quadratic forms;
* `knn`: minus the distance of the L2-normalised features to their k-th nearest neighbour in
  the bank of normalised ID training features;
* `gram`: the Gram score of Sastry & Oore (`amp_tf.detection.baselines.gram`) on the anchored backbone: the
  row-sum Gram features (orders 1..`gram_order`, signed roots) of the layers `gram_layers`
  (`default_gram_layers`) of every anchored row `[c, x - c]`, averaged over the K anchors (like
  the pooled features), minus their summed deviation from the `[mins, maxs]` ranges of the
  class AMP predicts (argmax of the mean logits), fitted on the ID training images. In float32
  (the exports' dtype): on the default Fashion-MNIST model the largest order-5 row sum before its
  root is about 1e20, far below float32's 3e38 (`select_detector` drops the Gram candidates, with a
  log line, if a training value is not finite);
* `amp+mahalanobis`, `amp+knn`, `amp+gram`: `w * (a - mean_a) / std_a + (1 - w) * (f - mean_f) / std_f`,
  both standardised on the ID validation images;
* `amp+mahalanobis+gram`: `w_a * z(a) + w_m * z(mahalanobis) + w_g * z(gram)` (`weights`, summing to 1),
  each standardised on the ID validation images; one backbone call gives the pooled and the Gram features.

The features come from the same backbone call as the logits (`feature_extractor`: one pass
gives `concat([pooled features, Gram features, logits])` per anchored row).

`ShippedDetector` is the layer plus what it needs around it: the anchors (the features
depend on them), its name, the threshold (`is_ood = ood_score < threshold`, set so that
`tpr` of the ID validation images pass) and the validation table that chose it. `save(folder)`
writes `detector.json` and `detector.npz` into a run folder; `load_detector(folder, model)`
reads them back in a fresh interpreter and refuses a state that does not match the model.

Example:

>>> det = select_detector(model, (x_train, y_train), (x_val, y_val))   # doctest: +SKIP
>>> det.name, round(det.threshold, 3)                                   # doctest: +SKIP
('amp+mahalanobis', -1.234)
>>> det.save("runs/my-run")                                             # doctest: +SKIP
>>> again = load_detector("runs/my-run", model)                         # doctest: +SKIP
>>> again.predict(x_test[:4])["is_ood"]                                 # doctest: +SKIP
array([False, False, False,  True])
"""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from amp_tf.contract import check_folder_path, read_json
from amp_tf.detection.detectors.shipped_score import (  # noqa: F401  (importable from here as before)
    FEATURE_KINDS, GRAM_KINDS, GRAM_ORDER, KINDS, MULTI, POOLED_KINDS, STATE_NAMES, ShippedScore, amp_part, amp_value,
    feature_kinds, mahalanobis_factor, score_layer,
)
from amp_tf.method.predictor import AnchoredPredictor, amp_outputs

#: Files of a saved detector in a run folder.
STATE_JSON, STATE_NPZ = "detector.json", "detector.npz"
_FORMAT = 1


def feature_extractor(backbone, layer="features", gram_layers=None, gram_order=GRAM_ORDER, pooled=True, score=None):
    """`rows -> concat([pooled features of layer (D), Gram features (Dg), logits (N)])`, float32: ONE
    backbone call for all three (the extractor of the anchored feature scores and of the exports).

    Args:
        backbone: the anchored backbone (rows `[c, x - c]`).
        layer: the layer of the pooled features (feature maps are averaged over space).
        gram_layers: None (no Gram features), `"auto"` (`default_gram_layers(backbone)`) or layer names:
            their row-sum Gram features of orders 1..`gram_order` (`gram_row_sums`, float32).
        pooled: whether to give the pooled features.
        score: a `ShippedScore`: exactly what it takes (the pooled features of `mahalanobis` / `knn`,
            the Gram features of its `gram_layers` and `gram_order`); overrides the three above.

    The function has `feature_dim` (D, 0 without), `gram_dim` (Dg, 0 without), `width` (D + Dg),
    `gram_layers` (the names) and `gram_order`.
    """
    from amp_tf.detection.baselines import float_logits, get_layer
    from amp_tf.detection.baselines.gram import default_gram_layers, gram_row_sums, rank4_output

    if score is not None:
        pooled = score.uses_pooled()
        gram_layers, gram_order = (score.gram_layers, score.gram_order) if score.uses_gram() else (None, 0)
    if isinstance(gram_layers, str):
        if gram_layers != "auto":
            raise ValueError(f"gram_layers: 'auto' or a list of layer names, got {gram_layers!r}.")
        gram_layers = default_gram_layers(backbone)
    gram_layers = list(gram_layers or [])
    if gram_layers and int(gram_order) < 1:
        raise ValueError(f"gram_order: expected >= 1, got {gram_order}.")
    maps = []
    for n in gram_layers:
        lay = get_layer(backbone, n)
        if not rank4_output(lay):
            raise ValueError(f"layer {n!r} must have one 4-D (B, H, W, C) output for the Gram features")
        maps.append(lay.output)
    feat = get_layer(backbone, layer).output if pooled else None
    outs = ([feat] if pooled else []) + maps + [backbone.outputs[0]]
    inputs = backbone.inputs if len(backbone.inputs) > 1 else backbone.inputs[0]
    model = keras.Model(inputs, outs, name=f"{backbone.name}_shipped_extractor")
    rank = len(feat.shape) if pooled else 0

    def run(rows, training=False):
        res = model(rows, training=False)
        res = list(res) if isinstance(res, (list, tuple)) else [res]
        parts = []
        if pooled:
            f = float_logits(res[0])
            parts.append(tf.reduce_mean(f, axis=list(range(1, rank - 1))) if rank > 2 else f)
        if maps:
            parts.append(gram_row_sums(res[int(pooled):int(pooled) + len(maps)], gram_order, tf.float32))
        parts.append(float_logits(res[-1]))
        return tf.concat(parts, -1)

    run.feature_dim = int(feat.shape[-1]) if pooled else 0  # channels last
    run.gram_dim = sum(int(m.shape[-1]) for m in maps) * int(gram_order) if maps else 0
    run.width = run.feature_dim + run.gram_dim
    run.gram_layers, run.gram_order = gram_layers, int(gram_order) if maps else 0
    return run


def shipped_outputs(predictor, score, extractor, images, fixed_shape=False):
    """The predictor's outputs plus `ood_score` from ONE pass over the anchors.

    Args:
        predictor: an `AnchoredPredictor` (its anchors must be the detector's).
        score: a `ShippedScore` (or None: `ood_score` is `amp_score`).
        extractor: `feature_extractor(predictor.backbone, score=score)` when the score uses features.
        images: raw pixels (B, H, W, C).
        fixed_shape: the TFLite trace (no pixel check, one backbone call).
    """
    x = tf.cast(images, tf.float32) if fixed_shape else predictor.normalizer.pixels(images)
    if score is None or not score.uses_features():
        if fixed_shape:
            with predictor.one_batch():
                k = predictor.per_anchor_logits(x)
        else:
            k = predictor.per_anchor_logits(x)
        feats = None
    else:
        width = extractor.width
        if fixed_shape:
            with predictor.one_batch():
                k, feats = predictor.logits_and_features(x, extractor, width)
        else:
            k, feats = predictor.logits_and_features(x, extractor, width)
    out = amp_outputs(k, predictor.tau_reduction, predictor.calibration, predictor.eps)
    out["ood_score"] = out["amp_score"] if score is None else score(k, feats)
    return out


class ShippedDetector:
    """The fitted, selected detector that a run ships: score layer, anchors, name, threshold, evidence.

    Attributes:
        name: the detector name (`amp_tf.detection.detectors.names()`), e.g. `"amp+mahalanobis"`.
        options: its options (`{"w": 0.5, "amp_score": "amp"}` for a combination).
        label: name and options in one string, as the report prints it.
        threshold: `is_ood = ood_score < threshold` (None until set).
        tpr: the fraction of ID validation images the threshold lets pass.
        candidates: the selection table, `[{"label", "name", "options", "val_fpr95", "val_auroc"}]`.
        anchors: `(K, H, W, C)` raw pixels: the anchors the features and AMP were computed with.
        score_layer: the `ShippedScore`.
    """

    def __init__(self, score_layer, anchors, name, options=None, threshold=None, tpr=0.95, candidates=(),
                 info=None, feature_layer="features"):
        self.score_layer, self.name, self.options = score_layer, name, dict(options or {})
        self.anchors = np.asarray(anchors, np.float32)
        self.threshold = None if threshold is None else float(threshold)
        self.tpr, self.candidates, self.info = float(tpr), list(candidates), dict(info or {})
        self.feature_layer = feature_layer
        self.predictor = self.extractor = self._fn = None

    @property
    def label(self):
        return candidate_label(self.name, self.options)

    # ---------------------------------------------------------------- scoring
    def attach(self, model, calibration="exp", tau_reduction="mean"):
        """Binds the detector to an `AnchoredModel` (its predictor over the detector's anchors); checks
        that the state fits the model (feature width, classes). Returns self."""
        self.predictor = AnchoredPredictor.from_model(model, self.anchors, calibration=calibration,
                                                      tau_reduction=tau_reduction)
        self.extractor = None
        layer = self.score_layer
        if layer.uses_features():
            missing = [n for n in ([] if not layer.uses_gram() else layer.gram_layers)
                       if n not in {l.name for l in self.predictor.backbone.layers}]
            if missing:
                raise ValueError(f"detector {self.label!r}: its Gram state is of the layers {missing}, which the "
                                 "model does not have; the detector was fitted on another model. Refit it: "
                                 "amp_tf.detection.detectors.select_detector(model, ...).")
            self.extractor = feature_extractor(self.predictor.backbone, self.feature_layer, score=layer)
            check_fits(self, self.extractor.feature_dim, int(model.backbone.output.shape[-1]),
                       self.extractor.gram_dim)
        self._fn = None
        return self

    def predict(self, images, batch_size=256):
        """`{ood_score, is_ood (when a threshold is set), amp_score, predicted_class, ...}` as numpy arrays."""
        if self.predictor is None:
            raise RuntimeError("ShippedDetector: call attach(model) (or load_detector(folder, model)) first.")
        from amp_tf.method.inference import batched
        from amp_tf.models.pixels import check_images

        x = check_images(images, tuple(self.predictor.anchor_shape[1:]), self.predictor.normalizer.check)
        out = batched(self._compiled(), x, batch_size)
        if self.threshold is not None:
            out["is_ood"] = out["ood_score"] < np.float32(self.threshold)
        return out

    def score(self, images, batch_size=256):
        """`ood_score` (N,), higher = in-distribution."""
        return self.predict(images, batch_size)["ood_score"]

    def _compiled(self):
        if self._fn is None:
            pred, score, ext = self.predictor, self.score_layer, self.extractor
            spec = tf.TensorSpec((None,) + tuple(pred.anchor_shape[1:]), tf.float32)

            @tf.function(input_signature=[spec])
            def run(x):
                out = shipped_outputs(pred, score, ext, x)
                return {k: out[k] for k in ("ood_score", "amp_score", "tau", "predicted_class", "msp", "energy")}

            self._fn = run
        return self._fn

    # ---------------------------------------------------------------- saving
    def to_json(self):
        return {"format": _FORMAT, "name": self.name, "options": self.options, "label": self.label,
                "threshold": self.threshold, "tpr": self.tpr, "feature_layer": self.feature_layer,
                "score": self.score_layer.get_config(), "anchors_shape": list(self.anchors.shape),
                "candidates": self.candidates, "info": self.info}

    def save(self, folder):
        """Writes `detector.json` and `detector.npz` into `folder` (a run folder); returns their paths."""
        folder = Path(folder)
        check_folder_path(folder, f"folder {folder}")
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / STATE_NPZ, anchors=self.anchors, **self.score_layer.state())
        (folder / STATE_JSON).write_text(json.dumps(self.to_json(), indent=2) + "\n")
        return folder / STATE_JSON, folder / STATE_NPZ


def candidate_label(name, options):
    """`"amp+mahalanobis[w=0.5]"`, `"amp[sum,exp]+knn[w=0.25]"`,
    `"amp+mahalanobis+gram[w=0.5,0.375,0.125]"` (AMP's weight first), or the name alone."""
    options = dict(options or {})
    amp = options.get("amp_score", "amp")
    if "weights" in options:
        return f"{amp}+{name.split('+', 1)[1]}[w={','.join(f'{float(v):g}' for v in options['weights'])}]"
    if "w" not in options:
        return name
    return f"{amp}+{name.split('+', 1)[1]}[w={float(options['w']):g}]"


def check_fits(det, feature_dim, num_classes, gram_dim=None):
    """Refuses a detector state made for another model (feature width, Gram width, classes), naming both."""
    layer = det.score_layer
    if layer.gram_dim and gram_dim is not None and layer.gram_dim != gram_dim:
        raise ValueError(f"detector {det.label!r}: its state holds {layer.gram_dim} Gram features (layers "
                         f"{', '.join(layer.gram_layers)}, orders 1..{layer.gram_order}), the model gives {gram_dim}; "
                         "the detector was fitted on another model. Refit it: "
                         "amp_tf.detection.detectors.select_detector(model, ...).")
    want = layer.feature_dim
    if want and want != feature_dim:
        raise ValueError(f"detector {det.label!r}: its state holds {want}-wide features, the model's "
                         f"{det.feature_layer!r} layer gives {feature_dim}; the detector was fitted on another "
                         "model. Refit it: amp_tf.detection.detectors.select_detector(model, ...).")
    if layer.num_classes and layer.num_classes != num_classes:
        raise ValueError(f"detector {det.label!r}: its state holds {layer.num_classes} classes, the model has "
                         f"{num_classes}; the detector was fitted on another model. Refit it: "
                         "amp_tf.detection.detectors.select_detector(model, ...).")


def has_detector(folder):
    """Whether `folder` (a run folder) holds a saved detector."""
    return (Path(folder) / STATE_JSON).is_file() and (Path(folder) / STATE_NPZ).is_file()


def load_detector(folder, model=None):
    """The `ShippedDetector` saved in `folder`; attached to `model` (an `AnchoredModel`) when given.

    Raises:
        FileNotFoundError: no `detector.json` / `detector.npz` in `folder` (a run made before
            detectors were saved: its SavedModel decides by AMP alone).
        ValueError: a state that does not fit `model` (another feature width, other classes, other
            image shape).
    """
    folder = Path(folder)
    if not has_detector(folder):
        raise FileNotFoundError(
            f"{folder}: no saved detector ({STATE_JSON}, {STATE_NPZ}); this run was made before the shipped "
            "detector existed and decides by AMP alone. Refit one: amp_tf.detection.detectors.select_detector(model, "
            "id_train, id_val), then .save(folder).")
    meta = read_json(folder / STATE_JSON, "refit the detector (amp_tf.detection.detectors.select_detector(model, "
                     "id_train, id_val), then .save(folder)) or re-run the job.")
    with np.load(folder / STATE_NPZ) as npz:
        arrays = {k: npz[k] for k in npz.files}
    layer = ShippedScore.from_config(meta["score"]).set_state(arrays)
    det = ShippedDetector(layer, arrays["anchors"], meta["name"], meta.get("options"), meta.get("threshold"),
                          meta.get("tpr", 0.95), meta.get("candidates", ()), meta.get("info"),
                          meta.get("feature_layer", "features"))
    if model is not None:
        shape = tuple(model.backbone.input_shape[1:3]) + (model.backbone.input_shape[-1] // 2,)
        if tuple(det.anchors.shape[1:]) != shape:
            raise ValueError(f"detector {det.label!r}: its anchors are {tuple(det.anchors.shape[1:])} images, the "
                             f"model takes {shape}; the detector was fitted for another model.")
        det.attach(model, **det.info.get("predictor", {}))
    return det
