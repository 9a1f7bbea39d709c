"""One detector protocol over every registered score: `fit(model, id_train, id_val)`, then `score(images)`.

Every name of `amp_tf.scores` (and the AMP variants of an anchored model) is a
detector with the same two calls, so the benchmark, `eval.ood` and the callback
loop over names and special-case no family:

    det = detectors.get("mahalanobis").fit(model, id_train=(x_train, y_train), id_val=(x_val, y_val))
    s = det.score(images)            # numpy (N,), higher = in-distribution

* logit scores (`msp`, `energy`, `max_logit`, `entropy`, `amp` on a vanilla model):
  `fit` keeps the model; `score` runs it batched and applies the function;
* model scores (`odin`, `mc_dropout_*`; `ensemble_*` take a list of models);
* fitted scores (`mahalanobis`, `gram`, `knn`, `react`, `temperature_scaling`): fitted
  on the split their class names (`fit_on`: ID training or validation images);
* AMP on an `AnchoredModel`: `amp` (mean, exp), `amp[sum,exp]`, `amp[mean,divide]`,
  `amp[sum,divide]`, and `neg_tau`: `fit` picks K anchors from the ID training
  images (`num_anchors`, `seed`, or any `AnchoredPredictor` option such as
  `anchor_mode="per_image"`).

Images are raw pixels everywhere (the models normalise).

Example:

>>> import numpy as np
>>> from amp_tf.models import build_backbone
>>> model = build_backbone("resnet_small", (28, 28, 1), 10, anchored=False, width=4)
>>> x = np.random.default_rng(0).integers(0, 256, (40, 28, 28, 1)).astype("uint8")
>>> det = get("energy").fit(model)
>>> det.score(x).shape
(40,)
"""

from __future__ import annotations

import inspect

import numpy as np

from amp_tf import scores as _scores

#: AMP variants of an anchored model: name -> (tau_reduction, calibration); neg_tau = -tau.
AMP_VARIANTS = {"amp": ("mean", "exp"), "amp[sum,exp]": ("sum", "exp"),
                "amp[mean,divide]": ("mean", "divide"), "amp[sum,divide]": ("sum", "divide"),
                "neg_tau": ("mean", "exp")}

_PLAIN, _ANCHORED, _ENSEMBLE = "plain", "anchored", "ensemble"
#: Every detector name and the model kinds it scores: a plain classifier (its logits), an
#: `AnchoredModel` (through `AnchoredPredictor`), or a list of plain models. A static table, so
#: `names()` does not depend on what was imported (tests check it against the score registry).
KINDS = {
    "amp": (_PLAIN, _ANCHORED), "msp": (_PLAIN, _ANCHORED), "energy": (_PLAIN, _ANCHORED),
    "max_logit": (_PLAIN,), "entropy": (_PLAIN,), "odin": (_PLAIN,),
    **{v: (_ANCHORED,) for v in AMP_VARIANTS if v != "amp"},
    **{n: (_PLAIN,) for n in ("mahalanobis", "gram", "temperature_scaling", "knn", "react",
                              "mc_dropout_msp", "mc_dropout_entropy", "mc_dropout_variance")},
    **{n: (_ENSEMBLE,) for n in ("ensemble_msp", "ensemble_entropy", "ensemble_variance")},
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
        from amp_tf.baselines._common import model_logits

        x = self._inputs(images)
        logits = model_logits(self.model, x, self.options.get("batch_size", 256))
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
    """AMP of an `AnchoredModel` (`AMP_VARIANTS`, or its `msp`/`energy`), anchors from the ID training images.

    On a plain classifier, `amp`, `msp` and `energy` are the logit functions.
    """

    fit_on = "train"

    def fit(self, model, id_train=None, id_val=None):
        from amp_tf.predictor import AnchoredPredictor, select_anchors

        self._bind(model)
        if model_kind(model) != _ANCHORED:  # a plain classifier: the formula on its logits
            self.__class__ = LogitDetector
            self.options = {k: v for k, v in self.options.items() if k == "batch_size"}
            return self
        self.model = None
        if id_train is None:
            raise ValueError(f"detector {self.name!r}: pass id_train=(images, labels) to pick the anchors from.")
        x = self._inputs(id_train[0] if isinstance(id_train, tuple) else id_train, "id_train images")
        opts = dict(self.options)
        k, seed = int(opts.pop("num_anchors", 5)), int(opts.pop("seed", 0))
        self.batch_size = int(opts.pop("batch_size", 256))
        if opts.get("anchor_mode") == "per_image":
            pool = select_anchors(x, int(opts.pop("pool_size", min(1000, len(x)))), seed=seed)
            opts.setdefault("num_anchors", k)
            self.predictor = AnchoredPredictor.from_model(model, pool, **opts)
        else:
            self.predictor = AnchoredPredictor.from_model(model, select_anchors(x, k, seed=seed), **opts)
        self._fn = None
        self.model = model
        return self

    def score(self, images):
        self._check_fitted()
        from amp_tf.inference import batched
        from amp_tf.predictor import amp_outputs

        x = self._inputs(images)
        red, cal = AMP_VARIANTS.get(self.name, AMP_VARIANTS["amp"])
        key = {"neg_tau": "tau", "msp": "msp", "energy": "energy"}.get(self.name, "amp_score")
        sign = -1.0 if self.name == "neg_tau" else 1.0
        pred = self.predictor
        if getattr(self, "_fn", None) is None:
            import tensorflow as tf

            @tf.function(reduce_retracing=True)
            def fn(x):
                return sign * amp_outputs(pred.per_anchor_logits(pred.normalizer.pixels(x)), red, cal, pred.eps)[key]

            self._fn = fn
        return batched(self._fn, x, self.batch_size)


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
        anchored: True for an `AnchoredModel`, False for a plain classifier, None:
            decided by the model given to `fit` (`amp`, `msp` and `energy` go through
            the predictor on an anchored model, the logit function on a plain one).
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
        return AMPDetector(name, **options)
    if _is_fitted(name):
        return FittedDetector(name, **options)
    return (ModelDetector if _scores.get(name).needs_model else LogitDetector)(name, **options)


def _is_fitted(name):
    reg = _scores._REGISTRY
    if name not in reg:
        _scores.get(name)  # imports the baselines, or raises the clear error
    return inspect.isclass(reg[name])


def fit_and_score(name, model, sets, id_train=None, id_val=None, anchored=None, **options):
    """`get(name).fit(model, id_train, id_val)`, then `{set: score(images)}` for every set."""
    det = get(name, anchored=anchored, **options).fit(model, id_train=id_train, id_val=id_val)
    return {k: det.score(v) for k, v in sets.items()}
