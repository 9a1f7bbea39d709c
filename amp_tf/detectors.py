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

`get(name)` of `amp`, `msp` or `energy` without `anchored=` gives a detector that
picks AMP or the logit function when `fit` sees the model (it delegates to an
`AMPDetector` or a `LogitDetector`). Adding a detector = one score (a function or a
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
        """`{name: (N,)}` for every name of `AMP_SCORES`, and `predicted_class`: one backbone pass per anchor."""
        self._check_fitted()
        return batched(self._compiled(), self._inputs(images), self.batch_size)

    def _compiled(self):
        if self._fn is None:
            import tensorflow as tf

            from amp_tf.predictor import amp_outputs

            pred = self.predictor
            spec = tf.TensorSpec((None,) + tuple(pred.anchor_shape[1:]), tf.float32)

            @tf.function(input_signature=[spec])
            def run(x):
                k = pred.per_anchor_logits(pred.normalizer.pixels(x))
                out = {}
                for name, (red, cal) in AMP_VARIANTS.items():
                    o = amp_outputs(k, red, cal, pred.eps)
                    out[name] = o["amp_score"]
                    if name == "amp":
                        out.update(msp=o["msp"], energy=o["energy"], neg_tau=-o["tau"],
                                   predicted_class=o["predicted_class"])
                return {n: out[n] for n in (*AMP_SCORES, "predicted_class")}

            self._fn = run
        return self._fn


class ByModelDetector(Detector):
    """`amp`, `msp` or `energy` before the model is known: `fit` builds an `AMPDetector` for an
    `AnchoredModel` and a `LogitDetector` (the function on its logits) for a plain classifier,
    and this detector delegates to it."""

    def fit(self, model, id_train=None, id_val=None):
        self._bind(model)
        if model_kind(model) == _ANCHORED:
            self.inner = AMPDetector(self.name, **self.options)
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

    def __init__(self, names, model, amp=None, logit=(), odin=None, others=()):
        self.names, self.model = tuple(names), model
        self.amp, self.logit, self.odin, self.others = amp, tuple(logit), odin, tuple(others)
        self.batch_size = 256

    def score(self, images):
        """`{name: numpy (N,)}` in the order of the names, then `predicted_class` (a single model)."""
        out = {}
        if self.amp is not None:
            out.update(self.amp.score_all(images))
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
        return AMPDetector(name, **options) if anchored or _PLAIN not in kinds else ByModelDetector(name, **options)
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
    amp = None
    if amp_names:
        amp = get("amp", anchored=True, **bs, **amp_options).fit(model, id_train=id_train, id_val=id_val)
    logit, odin, others = [], None, []
    for n in names:
        if n in amp_names:
            continue
        det = get(n, anchored=None if kind == _ANCHORED else False, **{**bs, **options.get(n, {})})
        det.fit(model, id_train=id_train, id_val=id_val)
        if isinstance(det, LogitDetector):
            logit.append(det)
        elif isinstance(det, ModelDetector) and n == "odin":
            odin = det
        else:
            others.append(det)
    out = DetectorSet(names, model, amp=amp, logit=logit, odin=odin, others=others)
    out.batch_size = int(batch_size or 256)
    return out
