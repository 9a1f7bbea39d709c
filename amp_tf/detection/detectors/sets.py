"""`get(name)`: a fresh detector for a name; `fit_all(names, model)`: several fitted at once, sharing passes."""

from __future__ import annotations

import numpy as np

from amp_tf.method import scores as _scores
from amp_tf.detection.detectors.anchored import AMPDetector, AnchoredFeatureDetector, CombinedDetector, split_options
from amp_tf.detection.detectors.base import (ANCHORED, PLAIN, COMBINATIONS, FEATURE_NAMES, KINDS, Detector,
                                   is_fitted, model_inputs, model_kind, names)
from amp_tf.detection.detectors.plain import FittedDetector, LogitDetector, ModelDetector
from amp_tf.method.inference import model_logits
from amp_tf.method.predictor import AMP_SCORES


def _anchored_detector(name, **options):
    """The detector of `name` for an `AnchoredModel`."""
    if name in FEATURE_NAMES:
        return AnchoredFeatureDetector(name, **options)
    if name in COMBINATIONS:
        return CombinedDetector(name, **options)
    return AMPDetector(name, **options)


class ByModelDetector(Detector):
    """`amp`, `msp`, `energy`, `knn` or `mahalanobis` before the model is known: `fit` builds the
    anchored detector for an `AnchoredModel` (`AMPDetector`, `AnchoredFeatureDetector`) and the
    plain one for a classifier (the function on its logits, or the `FittedDetector`), and this
    detector delegates to it. Options of the other kind are dropped."""

    def fit(self, model, id_train=None, id_val=None):
        self._bind(model)
        if model_kind(model) == ANCHORED:
            self.inner = _anchored_detector(self.name, **self.options)
        elif self.name in FEATURE_NAMES:  # the score's own options (AMP's anchors do not apply)
            self.inner = FittedDetector(self.name, **split_options(self.name, self.options)[0])
        else:  # the formula on the logits: only the batch size applies
            self.inner = LogitDetector(self.name, **{k: v for k, v in self.options.items() if k == "batch_size"})
        self.model = None
        self.inner.fit(model, id_train=id_train, id_val=id_val)
        self.model = model
        return self

    def score(self, images):
        self._check_fitted()
        return self.inner.score(images)


class DetectorSet:
    """Fitted detectors for several names of one model (`fit_all`); `score(images)` -> `{name: (N,)}`.

    The names are grouped so that the backbone runs once per image set: every AMP
    score of an anchored model comes from one `AMPDetector` pass over the anchors;
    the logit scores of a plain classifier share one logits pass (ODIN's first pass
    when `odin` is asked); its fitted scores on the pooled `"features"` layer (KNN,
    Mahalanobis without pre-processing, ReAct) share one pass that gives the features
    and the logits. The other detectors score on their own. `predicted_class`
    (argmax of the mean logits, or of the logits) is added for a single model.
    """

    def __init__(self, names, model, amp=None, logit=(), odin=None, others=(), on_amp=()):
        self.names, self.model = tuple(names), model
        self.amp, self.logit, self.odin, self.others = amp, tuple(logit), odin, tuple(others)
        self.on_amp = tuple(on_amp)  # anchored feature / combined detectors: from the AMP pass's outputs
        self.batch_size = 256

    def score(self, images):
        """`{name: numpy (N,)}` in the order of the names, then `predicted_class` (a single model)."""
        out = {}
        if self.amp is not None:
            amp_out = self.amp.score_all(images)
            out.update({k: v for k, v in amp_out.items() if k != "features"})
            for det in self.on_amp:
                out[det.name] = det.from_outputs(amp_out)
        logits = None
        shared = [d for d in self.others if _on_features(d)]
        if shared:
            feats, logits = self._features_and_logits(images)
            for det in shared:
                out[det.name] = np.asarray(det.estimator.score_features(feats))
        if self.odin is not None:
            out["odin"], logits = self.odin.score_and_logits(images)
        elif logits is None and (self.logit or (self.amp is None and model_kind(self.model) == PLAIN)):
            from amp_tf.models.pixels import check_images

            shape, raw_pixels = model_inputs(self.model)
            logits = model_logits(self.model, check_images(images, shape, raw_pixels), self.batch_size)
        for det in self.logit:
            out[det.name] = det.from_logits(logits)
        for det in self.others:
            if det.name not in out:
                out[det.name] = det.score(images)
        result = {n: out[n] for n in self.names}
        if logits is not None:
            result["predicted_class"] = logits.argmax(-1)
        elif "predicted_class" in out:
            result["predicted_class"] = out["predicted_class"]
        return result

    def _features_and_logits(self, images):
        """`(pooled "features" (N, D) float64, logits (N, classes))` of a plain model: one pass."""
        from amp_tf.detection.baselines import pooled_features
        from amp_tf.method.inference import batched
        from amp_tf.models.pixels import check_images

        if getattr(self, "_feat_fn", None) is None:
            import tensorflow as tf

            feat = pooled_features(self.model, "features", with_logits=True)

            @tf.function(reduce_retracing=True)
            def run(x):
                f, logits = feat(x)
                return {"features": f, "logits": logits}

            self._feat_fn = run
        shape, raw_pixels = model_inputs(self.model)
        out = batched(self._feat_fn, check_images(images, shape, raw_pixels), self.batch_size)
        return out["features"].astype(np.float64), out["logits"]

    def __repr__(self):
        return f"DetectorSet({list(self.names)})"


def _on_features(det):
    """Whether a plain model's fitted detector scores from the pooled `"features"` layer alone."""
    est = getattr(det, "estimator", None)
    return (isinstance(det, FittedDetector) and hasattr(est, "score_features") and model_kind(det.model) == PLAIN
            and getattr(est, "layer", None) == "features" and not float(getattr(est, "epsilon", 0.0) or 0.0))



def get(name, anchored=None, **options):
    """A fresh, unfitted detector for `name` (options go to the score or the predictor).

    Args:
        name: a name of `names()`.
        anchored: True for an `AnchoredModel` (an `AMPDetector`), False for a plain
            classifier, None: decided by the model given to `fit` (`amp`, `msp` and
            `energy` go through the predictor on an anchored model, the logit function
            on a plain one: a `ByModelDetector`).
    """
    kinds = KINDS.get(name)
    if kinds is None and name not in _scores.REGISTRY:
        raise ValueError(f"unknown detector {name!r}; known: {', '.join(names())}.")
    kinds = kinds or (PLAIN,)  # a score registered by the user: a plain classifier's
    if anchored is True and ANCHORED not in kinds:
        raise ValueError(f"detector {name!r} does not score an AnchoredModel; use one of {names(anchored=True)}.")
    if anchored is False and ANCHORED in kinds and PLAIN not in kinds:
        raise ValueError(f"detector {name!r} needs an anchored model (AnchoredModel).")
    if ANCHORED in kinds and anchored is not False:
        if anchored or PLAIN not in kinds:
            return _anchored_detector(name, **options)
        return ByModelDetector(name, **options)
    if is_fitted(name):
        return FittedDetector(name, **options)
    return (ModelDetector if _scores.get(name).needs_model else LogitDetector)(name, **options)



def fit_all(names, model, id_train=None, id_val=None, batch_size=None, options=None, **amp_options):
    """Fits a detector for every name on `model`; returns a `DetectorSet` whose `score(images)`
    gives `{name: (N,) array, "predicted_class": (N,)}` with the backbone run once per image set.

    Args:
        names: detector names (`names()`), e.g. `AMP_SCORES` for an anchored model or
            `("msp", "energy", "odin", "max_logit", "entropy")` for a plain one.
        model: an `AnchoredModel`, a plain classifier, or a list of them (`ensemble_*`).
        id_train, id_val: ID `(images, labels)` for the detectors that are fitted
            (and the anchor choice of AMP, unless `anchors=` is given).
        batch_size: images per forward pass, for every detector (None: each one's
            default, 256 for AMP, the logits and ODIN, 128 for Gram).
        options: `{name: {option: value}}` for single detectors, e.g.
            `{"odin": {"temperature": 1000.0, "epsilon": 0.0014}, "knn": {"k": 50}}`.
        **amp_options: options of the AMP detector of an anchored model (`anchors`,
            `num_anchors`, `seed`, `anchor_mode`, ...; see `AMPDetector`).
    """
    names, options = list(dict.fromkeys(names)), dict(options or {})
    if not names:
        raise ValueError("names: give at least one detector name.")
    unknown = [n for n in options if n not in names]
    if unknown:
        raise ValueError(f"options: {unknown} are not among the names {names}.")
    kind, bs = model_kind(model), {} if batch_size is None else {"batch_size": int(batch_size)}
    amp_names = [n for n in names if kind == ANCHORED and n in AMP_SCORES]
    feat_names = [n for n in names if kind == ANCHORED and (n in FEATURE_NAMES or n in COMBINATIONS)]
    amp = None
    if amp_names or feat_names:
        extra = {"feature_layer": "features"} if feat_names else {}
        amp = get("amp", anchored=True, **bs, **amp_options, **extra).fit(model, id_train=id_train, id_val=id_val)
    on_amp = _fit_on_amp(feat_names, model, amp, id_train, id_val, bs, amp_options, options)
    logit, odin, others = [], None, []
    for n in names:
        if n in amp_names or n in feat_names:
            continue
        det = get(n, anchored=None if kind == ANCHORED else False, **{**bs, **options.get(n, {})})
        det.fit(model, id_train=id_train, id_val=id_val)
        if isinstance(det, LogitDetector):
            logit.append(det)
        elif isinstance(det, ModelDetector) and n == "odin":
            odin = det
        else:
            others.append(det)
    out = DetectorSet(names, model, amp=amp, logit=logit, odin=odin, others=others, on_amp=on_amp)
    out.batch_size = int(batch_size or 256)
    return out


def _fit_on_amp(feat_names, model, amp, id_train, id_val, bs, amp_options, options):
    """The anchored feature and combined detectors of `fit_all`, sharing `amp`'s pass: the anchored
    features of the ID training images are computed once for all of them."""
    if not feat_names:
        return []
    if id_train is None:
        raise ValueError(f"detectors {feat_names} are fitted on ID train data: pass id_train=(images, labels).")
    x = id_train[0] if isinstance(id_train, tuple) else id_train
    train_feats = amp.score_all(x)["features"]
    fitted, out = {}, []

    def feature(name):
        if name not in fitted:
            det = AnchoredFeatureDetector(name, **bs, **amp_options, **options.get(name, {}))
            if det.layer != amp.feature_layer:
                raise ValueError(f"fit_all: {name!r} on an AnchoredModel scores layer 'features' only.")
            fitted[name] = det.fit(model, id_train=id_train, amp=amp, train_features=train_feats)
        return fitted[name]

    for n in feat_names:
        if n in COMBINATIONS:
            opts = dict(options.get(n, {}))
            det = CombinedDetector(n, **bs, **amp_options, **opts)
            same = not (set(opts) - {"w", "amp_score"})  # no score options of its own: share the fitted one
            out.append(det.fit(model, id_train=id_train, id_val=id_val, amp=amp, train_features=train_feats,
                               feature=feature(COMBINATIONS[n]) if same else None))
        else:
            out.append(feature(n))
    return out

