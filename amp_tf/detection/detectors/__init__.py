"""One detector protocol over every registered score: `fit(model, id_train, id_val)`, then `score(images)`.

The only scoring path of amp-tf: the pipeline, `eval.ood`, the callback and the
benchmarks all score through this module. Every name of `amp_tf.method.scores` (and
the AMP variants of an anchored model) is a detector with the same two calls,
so they loop over names and special-case no family:

    det = detectors.get("mahalanobis").fit(model, id_train=(x_train, y_train), id_val=(x_val, y_val))
    s = det.score(images)            # numpy (N,), higher = in-distribution

Several names at once, with the backbone run once per image set (once per
anchor for AMP), plus the predicted class:

    dets = detectors.fit_all(["msp", "energy", "odin", "mahalanobis"], model, id_train=(x, y))
    out = dets.score(images)         # {"msp": (N,), ..., "predicted_class": (N,)}

* logit scores (`msp`, `energy`, `max_logit`, `entropy`, `amp` on a plain classifier):
  `fit` keeps the model; `score` runs it batched (`amp_tf.method.inference.model_logits`)
  and applies the function;
* model scores (`odin`, `mc_dropout_*`; `ensemble_*` take a list of models);
* fitted scores (`mahalanobis`, `gram`, `knn`, `react`, `temperature_scaling`): fitted
  on the split their class names (`fit_on`: ID training or validation images);
* AMP on an `AnchoredModel` (`AMPDetector`): the names of `amp_tf.method.predictor.AMP_SCORES`
  (`amp` = mean/exp, `amp[sum,exp]`, `amp[mean,divide]`, `amp[sum,divide]`, `msp` and
  `energy` of the calibrated logits, `neg_tau`), all from one pass (`score_all`); `fit`
  picks K anchors from the ID training images (`num_anchors`, `seed`), or takes
  `anchors=` as given, plus any `AnchoredPredictor` option (`anchor_mode="per_image"`).
* anchored features (`knn`, `mahalanobis` on an `AnchoredModel`: `AnchoredFeatureDetector`):
  the backbone's pooled `"features"` of the anchored inputs `[c, x - c]` (normalised as the
  predictor does), averaged over AMP's K anchors, fitted and scored with the baseline's own
  `fit_features` / `score_features`; `fit_all` takes them from AMP's pass;
* AMP combined with a feature score (`amp+knn`, `amp+mahalanobis`: `CombinedDetector`):
  `w * z(amp) + (1 - w) * z(feature)`, each z standardised on the ID validation images
  (`id_val`), `w` an option (default 0.5; `benchmarks/quality/anchored_features.py` measures it).

`get(name)` of `amp`, `msp`, `energy`, `knn` or `mahalanobis` without `anchored=` gives
a detector that picks the anchored or the plain detector when `fit` sees the model (it
delegates to an `AMPDetector` / `AnchoredFeatureDetector`, or a `LogitDetector` /
`FittedDetector`). Adding a detector = one score (a function or a
`FittedScore` class, registered in `amp_tf.method.scores`) + one line in `KINDS`.

Layers: `scores` <- `baselines` <- `detectors`, with `predictor` and `inference`
below; this module imports the baselines (to register them) only when a name needs them.
Images are raw pixels everywhere (the models normalise).

Example:

>>> import numpy as np
>>> from amp_tf.models import build_backbone
>>> model = build_backbone("resnet_small", (28, 28, 1), 10, anchored=False, width=4)
>>> x = np.random.default_rng(0).integers(0, 256, (40, 28, 28, 1)).astype("uint8")
>>> det = get("energy").fit(model)
>>> det.score(x).shape
(40,)
>>> sorted(fit_all(["msp", "energy"], model).score(x))
['energy', 'msp', 'predicted_class']
"""

from __future__ import annotations

from amp_tf.detection.detectors.anchored import AMPDetector, AnchoredFeatureDetector, CombinedDetector, zscore_combination
from amp_tf.detection.detectors.base import COMBINATIONS, FEATURE_NAMES, KINDS, Detector, model_inputs, model_kind, names
from amp_tf.detection.detectors.plain import FittedDetector, LogitDetector, ModelDetector
from amp_tf.detection.detectors.selection import select_detector
from amp_tf.detection.detectors.sets import ByModelDetector, DetectorSet, fit_all, get
from amp_tf.detection.detectors.shipped import ShippedDetector, ShippedScore, has_detector, load_detector

__all__ = ["AMPDetector", "AnchoredFeatureDetector", "ByModelDetector", "COMBINATIONS", "CombinedDetector", "Detector",
           "DetectorSet", "FEATURE_NAMES", "FittedDetector", "KINDS", "LogitDetector", "ModelDetector", "fit_all", "get",
           "model_inputs", "model_kind", "names", "zscore_combination", "select_detector", "ShippedDetector",
           "ShippedScore", "has_detector", "load_detector"]
