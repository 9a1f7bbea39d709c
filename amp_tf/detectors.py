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


class Detector:
    """The protocol: `fit(model, id_train=None, id_val=None)` returns self; `score(images)` -> (N,) numpy."""

    name = None
    #: which ID split `fit` uses: None (no fitting), "train" or "val"
    fit_on = None

    def __init__(self, name, **options):
        self.name = name
        self.options = dict(options)
        self.model = None

    def fit(self, model, id_train=None, id_val=None):
        self.model = model
        return self

    def score(self, images):  # pragma: no cover - abstract
        raise NotImplementedError

    def _check_fitted(self):
        if self.model is None:
            raise RuntimeError(f"detector {self.name!r}: call fit(model, ...) before score(images).")

    def __repr__(self):
        return f"{type(self).__name__}({self.name!r})"


class LogitDetector(Detector):
    """A pure logit score applied to the model's logits (batched inference)."""

    def score(self, images):
        self._check_fitted()
        from amp_tf.baselines._common import model_logits

        logits = model_logits(self.model, np.asarray(images), self.options.get("batch_size", 256))
        opts = {k: v for k, v in self.options.items() if k != "batch_size"}
        return _scores.to_numpy(_scores.get(self.name)(logits, **opts))


class ModelDetector(Detector):
    """A score that needs the model itself (ODIN, MC dropout) or a list of models (ensembles)."""

    def score(self, images):
        self._check_fitted()
        if self.name == "odin":
            self.options.setdefault("cache", {})  # one compiled step for every scored set
        return np.asarray(_scores.to_numpy(_scores.get(self.name)(self.model, images, **self.options)))


class FittedDetector(Detector):
    """A `FittedScore` (Mahalanobis, Gram, KNN, ReAct, temperature scaling), fitted on its split."""

    def __init__(self, name, **options):
        super().__init__(name, **options)
        self.estimator = _scores.get(name, **options)
        self.fit_on = getattr(self.estimator, "fit_on", "train")

    def fit(self, model, id_train=None, id_val=None):
        if self.fit_on == "val" and id_val is None and id_train is not None:
            import warnings

            warnings.warn(f"{self.name}: no validation split given; fitting on the training data "
                          "(a held-out ID split is the intended use)", stacklevel=2)
        split = id_val if self.fit_on == "val" and id_val is not None else id_train
        if split is None:
            raise ValueError(f"detector {self.name!r} is fitted on ID {self.fit_on} data: pass "
                             f"id_{self.fit_on}=(images, labels).")
        x, y = split if isinstance(split, tuple) else (split, None)
        self.estimator.fit(model, x, y)
        self.model = model
        return self

    def score(self, images):
        self._check_fitted()
        return np.asarray(self.estimator.score(images))


class AMPDetector(Detector):
    """AMP of an `AnchoredModel` (one of `AMP_VARIANTS`), anchors from the ID training images."""

    fit_on = "train"

    def fit(self, model, id_train=None, id_val=None):
        from amp_tf.anchoring import AnchoredModel
        from amp_tf.predictor import AnchoredPredictor, select_anchors

        if not isinstance(model, AnchoredModel):
            if self.name == "amp":  # a plain classifier: AMP's formula on its logits
                self.__class__ = LogitDetector
                self.options = {k: v for k, v in self.options.items() if k == "batch_size"}
                return LogitDetector.fit(self, model, id_train, id_val)
            raise TypeError(f"detector {self.name!r}: AMP needs an AnchoredModel, got {type(model).__name__}.")
        if id_train is None:
            raise ValueError(f"detector {self.name!r}: pass id_train=(images, labels) to pick the anchors from.")
        x = id_train[0] if isinstance(id_train, tuple) else id_train
        opts = dict(self.options)
        k, seed = int(opts.pop("num_anchors", 5)), int(opts.pop("seed", 0))
        self.batch_size = int(opts.pop("batch_size", 256))
        if opts.get("anchor_mode") == "per_image":
            pool = select_anchors(x, int(opts.pop("pool_size", min(1000, len(x)))), seed=seed)
            opts.setdefault("num_anchors", k)
            self.predictor = AnchoredPredictor.from_model(model, pool, **opts)
        else:
            self.predictor = AnchoredPredictor.from_model(model, select_anchors(x, k, seed=seed), **opts)
        self.model = model
        return self

    def score(self, images):
        self._check_fitted()
        from amp_tf.predictor import amp_outputs

        red, cal = AMP_VARIANTS[self.name]
        pred = self.predictor
        if getattr(self, "_fn", None) is None:
            import tensorflow as tf

            @tf.function(reduce_retracing=True)
            def fn(x):
                o = amp_outputs(pred.per_anchor_logits(pred.normalizer.pixels(x)), red, cal, pred.eps)
                return -o["tau"] if self.name == "neg_tau" else o["amp_score"]

            self._fn = fn
        from amp_tf.inference import batched

        return batched(self._fn, np.asarray(images), self.batch_size)


def names(anchored=None):
    """Detector names: every registered score, plus the AMP variants of anchored models."""
    out = set(_scores.names()) | set(AMP_VARIANTS)
    if anchored is True:
        out = set(AMP_VARIANTS) | {"msp", "energy"}
    return sorted(out)


def get(name, anchored=None, **options):
    """A fresh, unfitted detector for `name` (options go to the score or the predictor).

    Args:
        name: a name of `names()`.
        anchored: True for an `AnchoredModel`, False for a plain classifier, None:
            decided by the model given to `fit` (`amp` is AMP through the
            predictor on an anchored model, the logit function on a plain one).
    """
    if name in AMP_VARIANTS and anchored is not False:
        return AMPDetector(name, **options)
    if name in AMP_VARIANTS and name != "amp":
        raise ValueError(f"detector {name!r} needs an anchored model (AnchoredModel).")
    try:
        fitted = _is_fitted(name)
    except ValueError:
        raise ValueError(f"unknown detector {name!r}; known: {', '.join(names())}.") from None
    if fitted:
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
