"""One detector protocol over every registered score: `fit(model, id_train, id_val)`, then `score(images)`.

The only scoring path of amp-tf: the pipeline, `eval.ood`, the callback and the
benchmarks all score through this module. Every name of `amp_tf.scores` (and
the AMP variants of an anchored model) is a detector with the same two calls,
so they loop over names and special-case no family:

    det = detectors.get("mahalanobis").fit(model, id_train=(x_train, y_train), id_val=(x_val, y_val))
    s = det.score(images)            # numpy (N,), higher = in-distribution

Several names at once, with the backbone run once per image set (once per
anchor for AMP), plus the predicted class:

    dets = detectors.fit_all(["msp", "energy", "odin", "mahalanobis"], model, id_train=(x, y))
    out = dets.score(images)         # {"msp": (N,), ..., "predicted_class": (N,)}

* logit scores (`msp`, `energy`, `max_logit`, `entropy`, `amp` on a plain classifier):
  `fit` keeps the model; `score` runs it batched (`amp_tf.inference.model_logits`)
  and applies the function;
* model scores (`odin`, `mc_dropout_*`; `ensemble_*` take a list of models);
* fitted scores (`mahalanobis`, `gram`, `knn`, `react`, `temperature_scaling`): fitted
  on the split their class names (`fit_on`: ID training or validation images);
* AMP on an `AnchoredModel` (`AMPDetector`): the names of `amp_tf.predictor.AMP_SCORES`
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
  (`id_val`), `w` an option (default 0.5; `benchmarks/anchored_features.py` measures it).

`get(name)` of `amp`, `msp`, `energy`, `knn` or `mahalanobis` without `anchored=` gives
a detector that picks the anchored or the plain detector when `fit` sees the model (it
delegates to an `AMPDetector` / `AnchoredFeatureDetector`, or a `LogitDetector` /
`FittedDetector`). Adding a detector = one score (a function or a
`FittedScore` class, registered in `amp_tf.scores`) + one line in `KINDS`.

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

import inspect

import numpy as np

from amp_tf import scores as _scores
from amp_tf.inference import batched, model_logits
from amp_tf.predictor import AMP_SCORES, AMP_VARIANTS

_PLAIN, _ANCHORED, _ENSEMBLE = "plain", "anchored", "ensemble"
#: Every detector name and the model kinds it scores: a plain classifier (its logits), an
#: `AnchoredModel` (through `AnchoredPredictor`), or a list of plain models. A static table, so
#: `names()` does not depend on what was imported (tests check it against the score registry).
KINDS = {
    "amp": (_PLAIN, _ANCHORED), "msp": (_PLAIN, _ANCHORED), "energy": (_PLAIN, _ANCHORED),
    "max_logit": (_PLAIN,), "entropy": (_PLAIN,), "odin": (_PLAIN,),
    **{v: (_ANCHORED,) for v in AMP_SCORES if v not in ("amp", "msp", "energy")},
    **{n: (_ENSEMBLE,) if n.startswith("ensemble_") else (_PLAIN,) for n in _scores.BASELINE_NAMES},
}
#: The feature-space detectors that also score an `AnchoredModel` (its anchored features, mean over K).
FEATURE_NAMES = ("knn", "mahalanobis")
#: AMP combined with a feature score: `w * z(amp) + (1 - w) * z(feature)` (`CombinedDetector`).
COMBINATIONS = {f"amp+{n}": n for n in FEATURE_NAMES}
KINDS.update({n: (_PLAIN, _ANCHORED) for n in FEATURE_NAMES})
KINDS.update({n: (_ANCHORED,) for n in COMBINATIONS})
#: Options of the AMP detector (the anchors and the predictor), as opposed to the feature score's own.
_AMP_OPTIONS = ("anchors", "num_anchors", "seed", "anchor_mode", "pool_size", "max_batch", "eps",
                "tau_reduction", "calibration", "anchor_seed", "check_pixels", "batch_size")


def model_kind(model):
    """`"anchored"` (an `AnchoredModel`), `"ensemble"` (a list of models) or `"plain"`."""
    from amp_tf.anchoring import AnchoredModel

    if isinstance(model, (list, tuple)):
        return _ENSEMBLE
    return _ANCHORED if isinstance(model, AnchoredModel) else _PLAIN


def model_inputs(model):
    """`(input_shape, raw_pixels)` of a model: the shape of one input (None when unknown) and
    whether it takes raw pixels (an `AnchoredModel`, or a model with a checking `PixelNormalization`)."""
    from amp_tf.pixels import find_normalization

    if isinstance(model, (list, tuple)):
        return model_inputs(model[0]) if model else (None, False)
    if model_kind(model) == _ANCHORED:
        h, w, c2 = model.backbone.input_shape[1:]
        return (h, w, c2 // 2), bool(model.normalizer.check)
    try:
        shape = model.input_shape
    except (AttributeError, ValueError):
        shape = None
    shape = tuple(shape[1:]) if isinstance(shape, tuple) and len(shape) > 1 else None
    norm = find_normalization(model)
    return shape, bool(norm is not None and norm.check)


class Detector:
    """The protocol: `fit(model, id_train=None, id_val=None)` returns self; `score(images)` -> (N,) numpy.

    `fit` checks the model (its kind: plain, anchored or a list) and the ID images;
    `score` checks the images against the fitted model's input shape (and raw
    pixels when the model normalises them), with the messages of `AnchoredPredictor`.
    """

    name = None
    #: which ID split `fit` uses: None (no fitting), "train" or "val"
    fit_on = None

    def __init__(self, name, **options):
        self.name = name
        self.options = dict(options)
        self.model = None

    def fit(self, model, id_train=None, id_val=None):
        self._bind(model)
        return self

    def score(self, images):  # pragma: no cover - abstract
        raise NotImplementedError

    def _bind(self, model):
        """Checks the model kind for this name; records its input shape and pixel check."""
        kind, kinds = model_kind(model), KINDS.get(self.name, (_PLAIN,))
        if kind not in kinds:
            raise TypeError(_kind_error(self.name, kind, model))
        self.input_shape, self.raw_pixels = model_inputs(model)
        self.model = model

    def _inputs(self, images, what="images"):
        """`images` checked against the fitted model (the predictor's messages)."""
        from amp_tf.pixels import check_images

        return check_images(images, self.input_shape, self.raw_pixels, what)

    def _check_fitted(self):
        if self.model is None:
            raise RuntimeError(f"detector {self.name!r}: call fit(model, ...) before score(images).")

    def __repr__(self):
        return f"{type(self).__name__}({self.name!r})"


def _kind_error(name, kind, model):
    got = {_ANCHORED: "an AnchoredModel", _ENSEMBLE: "a list of models"}.get(kind, type(model).__name__)
    if _ANCHORED in KINDS.get(name, ()) and _PLAIN not in KINDS[name]:
        return (f"detector {name!r}: AMP needs an AnchoredModel, got {got}. For a plain classifier use "
                f"one of {names(anchored=False)}.")
    if _ENSEMBLE in KINDS.get(name, ()):
        return f"detector {name!r} scores a list of models (the ensemble's members), got {got}."
    return (f"detector {name!r} scores a plain classifier, got {got}. For an AnchoredModel use one of "
            f"{names(anchored=True)}.")


class LogitDetector(Detector):
    """A pure logit score applied to the model's logits (batched inference)."""

    def score(self, images):
        self._check_fitted()
        return self.from_logits(model_logits(self.model, self._inputs(images), self.options.get("batch_size", 256)))

    def from_logits(self, logits):
        """The score of logits `(N, classes)` already computed (`DetectorSet` runs the model once)."""
        opts = {k: v for k, v in self.options.items() if k != "batch_size"}
        return _scores.to_numpy(_scores.get(self.name)(logits, **opts))


class ModelDetector(Detector):
    """A score that needs the model itself (ODIN, MC dropout) or a list of models (ensembles)."""

    def score(self, images):
        self._check_fitted()
        x = self._inputs(images)
        if self.name == "odin":
            self.options.setdefault("cache", {})  # one compiled step for every scored set
        return np.asarray(_scores.to_numpy(_scores.get(self.name)(self.model, x, **self.options)))

    def score_and_logits(self, images):
        """ODIN only: `(scores, logits)`, the logits from ODIN's first (unperturbed) forward pass."""
        self._check_fitted()
        if self.name != "odin":
            raise ValueError(f"detector {self.name!r}: only 'odin' gives the logits of its first pass.")
        opts = {"temperature": 1000.0, "epsilon": 0.0014, "batch_size": 256, **self.options}
        opts.setdefault("cache", {})
        self.options["cache"] = opts["cache"]
        x = self._inputs(images).astype("float32")
        odin, logits = _scores._odin_and_logits(self.model, x, opts["temperature"], opts["epsilon"],
                                                opts["batch_size"], opts["cache"])
        return np.asarray(odin), logits


class FittedDetector(Detector):
    """A `FittedScore` (Mahalanobis, Gram, KNN, ReAct, temperature scaling), fitted on its split."""

    def __init__(self, name, **options):
        super().__init__(name, **options)
        self.estimator = _scores.get(name, **options)
        self.fit_on = getattr(self.estimator, "fit_on", "train")

    def fit(self, model, id_train=None, id_val=None):
        self._bind(model)
        self.model = None  # fitted only once the estimator is
        if self.fit_on == "val" and id_val is None and id_train is not None:
            import warnings

            warnings.warn(f"{self.name}: no validation split given; fitting on the training data "
                          "(a held-out ID split is the intended use)", stacklevel=2)
        split = id_val if self.fit_on == "val" and id_val is not None else id_train
        if split is None:
            raise ValueError(f"detector {self.name!r} is fitted on ID {self.fit_on} data: pass "
                             f"id_{self.fit_on}=(images, labels).")
        x, y = split if isinstance(split, tuple) else (split, None)
        x = self._inputs(x, f"id_{'val' if split is id_val else 'train'} images")
        self.estimator.fit(model, x, y)
        self.model = model
        return self

    def score(self, images):
        self._check_fitted()
        return np.asarray(self.estimator.score(self._inputs(images)))


class AMPDetector(Detector):
    """AMP of an `AnchoredModel`: every name of `AMP_SCORES` from one pass over the anchors.

    `fit` takes the anchors as given (`anchors=`, raw pixels) or picks `num_anchors`
    (default 5) of the ID training images with `seed` (default 0); the other options
    (`anchor_mode`, `pool_size` for `"per_image"`, `max_batch`, `eps`, ...) go to
    `AnchoredPredictor`. `score(images)` is this detector's name; `score_all(images)`
    gives every AMP score and `predicted_class` from the same logits.
    """

    fit_on = "train"

    def fit(self, model, id_train=None, id_val=None):
        from amp_tf.predictor import AnchoredPredictor, select_anchors

        self._bind(model)
        self.model = None
        if model_kind(model) != _ANCHORED:
            raise TypeError(f"detector {self.name!r} (anchored=True): AMP needs an AnchoredModel, got "
                            f"{type(model).__name__}; for a plain classifier use get({self.name!r}, anchored=False).")
        opts = dict(self.options)
        anchors, k, seed = opts.pop("anchors", None), int(opts.pop("num_anchors", 5)), int(opts.pop("seed", 0))
        self.batch_size = int(opts.pop("batch_size", 256))
        self.feature_layer = opts.pop("feature_layer", None)
        per_image = opts.get("anchor_mode") == "per_image"
        if per_image:
            opts.setdefault("num_anchors", k)
        if anchors is None:
            if id_train is None:
                raise ValueError(f"detector {self.name!r}: pass id_train=(images, labels) to pick the anchors "
                                 "from, or anchors=.")
            x = self._inputs(id_train[0] if isinstance(id_train, tuple) else id_train, "id_train images")
            n = int(opts.pop("pool_size", min(1000, len(x)))) if per_image else k
            anchors = select_anchors(x, n, seed=seed)
        self.predictor = AnchoredPredictor.from_model(model, anchors, **opts)
        self._fn = None
        self.model = model
        return self

    def score(self, images):
        return self.score_all(images)[self.name]

    def score_all(self, images):
        """`{name: (N,)}` for every name of `AMP_SCORES`, and `predicted_class`: one backbone pass per anchor.

        With the option `feature_layer` (e.g. `"features"`), also `features`: `(N, D)` float64, that
        layer's (pooled) output on the anchored inputs `[c, x - c]`, averaged over the K anchors,
        from the same pass (what the anchored KNN / Mahalanobis score).
        """
        self._check_fitted()
        out = batched(self._compiled(), self._inputs(images), self.batch_size)
        if "features" in out:
            out["features"] = out["features"].astype(np.float64)
        return out

    def _compiled(self):
        if self._fn is None:
            import tensorflow as tf

            from amp_tf.predictor import amp_outputs

            pred = self.predictor
            spec = tf.TensorSpec((None,) + tuple(pred.anchor_shape[1:]), tf.float32)
            feat = None
            if self.feature_layer is not None:
                from amp_tf.baselines import pooled_features

                feat = pooled_features(pred.backbone, self.feature_layer, with_logits=True)
                d = int(pred.backbone.get_layer(self.feature_layer).output.shape[-1])  # channels last

            @tf.function(input_signature=[spec])
            def run(x):
                x = pred.normalizer.pixels(x)
                extra = {}
                if feat is None:
                    k = pred.per_anchor_logits(x)
                else:  # one pass gives the features and the logits: (K*B, D + N), split after
                    both = pred._run_chunked(lambda r, training=False: tf.concat(feat(r), -1),
                                             pred.anchored_rows(x))
                    both = tf.reshape(both, [pred.num_anchors, tf.shape(x)[0], -1])
                    k, extra["features"] = both[..., d:], tf.reduce_mean(both[..., :d], axis=0)
                out = {}
                for name, (red, cal) in AMP_VARIANTS.items():
                    o = amp_outputs(k, red, cal, pred.eps)
                    out[name] = o["amp_score"]
                    if name == "amp":
                        out.update(msp=o["msp"], energy=o["energy"], neg_tau=-o["tau"],
                                   predicted_class=o["predicted_class"])
                return {**{n: out[n] for n in (*AMP_SCORES, "predicted_class")}, **extra}

            self._fn = run
        return self._fn


def _split_options(name, options):
    """`(score options, AMP options)` of an anchored feature detector: the options the score's class
    takes (`k`, `max_train`, `ridge`, ...; `seed` and `batch_size` go to both) and `_AMP_OPTIONS`."""
    _is_fitted(name)  # registers the baselines
    params = set(inspect.signature(_scores._REGISTRY[name].__init__).parameters) - {"self"}
    unknown = set(options) - params - set(_AMP_OPTIONS)
    if unknown:
        raise TypeError(f"detector {name!r}: unknown options {sorted(unknown)}; the score takes "
                        f"{sorted(params)}, the anchors {sorted(_AMP_OPTIONS)}.")
    return ({k: v for k, v in options.items() if k in params},
            {k: v for k, v in options.items() if k in _AMP_OPTIONS})


class AnchoredFeatureDetector(Detector):
    """KNN or Mahalanobis on an `AnchoredModel`: the backbone's pooled `"features"` of the anchored
    inputs `[c, x - c]` (normalised as `AnchoredPredictor` does), averaged over the K anchors.

    The anchors are AMP's (`num_anchors`, `seed` from the ID training images, or `anchors=`);
    the bank / class means are fitted on the anchored features of the ID training images with
    the score's own `fit_features`, and `score` is its `score_features`. The pass is an
    `AMPDetector` with `feature_layer`, so `fit_all` shares it with AMP (`amp`).
    Mahalanobis's input pre-processing (`epsilon > 0`) is not offered here.
    """

    fit_on = "train"

    def __init__(self, name, **options):
        super().__init__(name, **options)
        score_opts, self.amp_options = _split_options(name, options)
        self.estimator = _scores.get(name, **score_opts)
        if float(getattr(self.estimator, "epsilon", 0.0)):
            raise ValueError(f"detector {name!r} on an AnchoredModel: input pre-processing (epsilon > 0) "
                             "is not offered; use epsilon=0.")
        self.layer = getattr(self.estimator, "layer", "features")

    def fit(self, model, id_train=None, id_val=None, amp=None, train_features=None):
        """`amp`: a fitted `AMPDetector` with this `feature_layer` to share (`fit_all`);
        `train_features`: the anchored features of all of `id_train` already computed with it."""
        self._bind(model)
        self.model = None
        if id_train is None:
            raise ValueError(f"detector {self.name!r} is fitted on ID train data: pass id_train=(images, labels).")
        x, y = id_train if isinstance(id_train, tuple) else (id_train, None)
        x = self._inputs(x, "id_train images")
        if y is None and self.name == "mahalanobis":
            raise ValueError("detector 'mahalanobis' needs the labels: pass id_train=(images, labels).")
        if amp is None:
            amp = AMPDetector("amp", feature_layer=self.layer, **self.amp_options).fit(model, id_train=x)
        self.amp = amp
        rows = self.estimator.bank_rows(len(x))
        feats = (self.amp.score_all(x[rows])["features"] if train_features is None
                 else np.asarray(train_features)[rows])
        self.estimator.fit_features(feats, None if y is None else np.asarray(y)[rows])
        self.model = model
        return self

    def score(self, images):
        self._check_fitted()
        return self.from_outputs(self.amp.score_all(images))

    def from_outputs(self, out):
        """The score from `AMPDetector.score_all`'s outputs (with `features`)."""
        return np.asarray(self.estimator.score_features(out["features"]))


def zscore_combination(amp_score, feature_score, stats, w):
    """`w * z(amp) + (1 - w) * z(feature)`, `z(s) = (s - mean) / std` with `stats =
    ((amp mean, amp std), (feature mean, feature std))` of the ID validation images."""
    (ma, sa), (mf, sf) = stats
    w = float(w)
    return w * (np.asarray(amp_score) - ma) / sa + (1.0 - w) * (np.asarray(feature_score) - mf) / sf


class CombinedDetector(Detector):
    """`amp+knn`, `amp+mahalanobis` on an `AnchoredModel`: `w * z(amp) + (1 - w) * z(feature)`.

    Each score is standardised by its mean and std on the ID VALIDATION images (`id_val`,
    required); `w` (option, default 0.5) weighs AMP (`w = 1`: AMP alone, `w = 0`: the anchored
    feature score alone, both up to an increasing affine map). `amp_score` (default `"amp"`)
    picks the AMP variant. The other options go to the `AnchoredFeatureDetector` (its score and
    anchors); AMP and the features come from one pass.
    """

    fit_on = "val"

    def __init__(self, name, **options):
        super().__init__(name, **options)
        opts = dict(options)
        self.w, self.amp_score = float(opts.pop("w", 0.5)), opts.pop("amp_score", "amp")
        if not 0.0 <= self.w <= 1.0:
            raise ValueError(f"detector {name!r}: w must be in [0, 1], got {self.w}.")
        if self.amp_score not in AMP_SCORES:
            raise ValueError(f"detector {name!r}: amp_score must be one of {AMP_SCORES}, got {self.amp_score!r}.")
        self.feature = AnchoredFeatureDetector(COMBINATIONS[name], **opts)

    def fit(self, model, id_train=None, id_val=None, amp=None, feature=None, train_features=None):
        """`feature`: a fitted `AnchoredFeatureDetector` of this score to share (`fit_all`)."""
        self._bind(model)
        self.model = None
        if id_val is None:
            raise ValueError(f"detector {self.name!r} standardises each score on ID validation images: "
                             "pass id_val=(images, labels).")
        self.feature = feature or self.feature.fit(model, id_train=id_train, amp=amp, train_features=train_features)
        x_val = self._inputs(id_val[0] if isinstance(id_val, tuple) else id_val, "id_val images")
        out = self.feature.amp.score_all(x_val)
        a, f = out[self.amp_score], self.feature.from_outputs(out)
        self.stats = ((float(np.mean(a)), float(np.std(a)) or 1.0), (float(np.mean(f)), float(np.std(f)) or 1.0))
        self.model = model
        return self

    def score(self, images):
        self._check_fitted()
        return self.from_outputs(self.feature.amp.score_all(images))

    def from_outputs(self, out, w=None):
        """The combination from `AMPDetector.score_all`'s outputs; `w` overrides the option."""
        return zscore_combination(out[self.amp_score], self.feature.from_outputs(out), self.stats,
                                  self.w if w is None else w)


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
        if model_kind(model) == _ANCHORED:
            self.inner = _anchored_detector(self.name, **self.options)
        elif self.name in FEATURE_NAMES:  # the score's own options (AMP's anchors do not apply)
            self.inner = FittedDetector(self.name, **_split_options(self.name, self.options)[0])
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
    when `odin` is asked). The other detectors score on their own. `predicted_class`
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
        if self.odin is not None:
            out["odin"], logits = self.odin.score_and_logits(images)
        elif self.logit or (self.amp is None and model_kind(self.model) == _PLAIN):
            from amp_tf.pixels import check_images

            shape, raw_pixels = model_inputs(self.model)
            logits = model_logits(self.model, check_images(images, shape, raw_pixels), self.batch_size)
        for det in self.logit:
            out[det.name] = det.from_logits(logits)
        for det in self.others:
            out[det.name] = det.score(images)
        result = {n: out[n] for n in self.names}
        if logits is not None:
            result["predicted_class"] = logits.argmax(-1)
        elif "predicted_class" in out:
            result["predicted_class"] = out["predicted_class"]
        return result

    def __repr__(self):
        return f"DetectorSet({list(self.names)})"


def names(anchored=None):
    """Detector names, independent of what was imported.

    Args:
        anchored: None: every name; True: the names that score an `AnchoredModel`
            (`get(name).fit(anchored_model, ...)` works for each); False: those
            that score a plain classifier (or, `ensemble_*`, a list of them).
            Scores a user registers in `amp_tf.scores` are listed as plain.
    """
    table = dict(KINDS)
    table.update({n: (_PLAIN,) for n in _scores._REGISTRY if n not in KINDS})  # a user's own scores
    if anchored is None:
        return sorted(table)
    if anchored:
        return sorted(n for n, kinds in table.items() if _ANCHORED in kinds)
    return sorted(n for n, kinds in table.items() if _PLAIN in kinds or _ENSEMBLE in kinds)


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
    if kinds is None and name not in _scores._REGISTRY:
        raise ValueError(f"unknown detector {name!r}; known: {', '.join(names())}.")
    kinds = kinds or (_PLAIN,)  # a score registered by the user: a plain classifier's
    if anchored is True and _ANCHORED not in kinds:
        raise ValueError(f"detector {name!r} does not score an AnchoredModel; use one of {names(anchored=True)}.")
    if anchored is False and _ANCHORED in kinds and _PLAIN not in kinds:
        raise ValueError(f"detector {name!r} needs an anchored model (AnchoredModel).")
    if _ANCHORED in kinds and anchored is not False:
        if anchored or _PLAIN not in kinds:
            return _anchored_detector(name, **options)
        return ByModelDetector(name, **options)
    if _is_fitted(name):
        return FittedDetector(name, **options)
    return (ModelDetector if _scores.get(name).needs_model else LogitDetector)(name, **options)


def _is_fitted(name):
    reg = _scores._REGISTRY
    if name not in reg and name in _scores.BASELINE_NAMES:
        import amp_tf.baselines  # noqa: F401  (registers the baselines: the layer above the registry)
    return inspect.isclass(reg[name])


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
    amp_names = [n for n in names if kind == _ANCHORED and n in AMP_SCORES]
    feat_names = [n for n in names if kind == _ANCHORED and (n in FEATURE_NAMES or n in COMBINATIONS)]
    amp = None
    if amp_names or feat_names:
        extra = {"feature_layer": "features"} if feat_names else {}
        amp = get("amp", anchored=True, **bs, **amp_options, **extra).fit(model, id_train=id_train, id_val=id_val)
    on_amp = _fit_on_amp(feat_names, model, amp, id_train, id_val, bs, amp_options, options)
    logit, odin, others = [], None, []
    for n in names:
        if n in amp_names or n in feat_names:
            continue
        det = get(n, anchored=None if kind == _ANCHORED else False, **{**bs, **options.get(n, {})})
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
