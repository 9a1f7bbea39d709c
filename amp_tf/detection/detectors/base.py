"""The detector protocol and the table of names: which model kinds each detector scores.

`Detector` is the protocol every family implements (`fit(model, id_train, id_val)`, then
`score(images)`); `KINDS` says which model kinds (plain classifier, `AnchoredModel`, list of
models) a name scores; `names()` lists them. The families live one module each: `plain`
(logit, model and fitted scores of a classifier), `anchored` (AMP, anchored features, their
combinations), `sets` (`get`, `fit_all`), `shipped` (the saved, exported detector) and
`selection` (the validation-selected detector).
"""

from __future__ import annotations

import inspect

from amp_tf.method import scores as _scores
from amp_tf.method.predictor import AMP_SCORES

PLAIN, ANCHORED, ENSEMBLE = "plain", "anchored", "ensemble"
#: Every detector name and the model kinds it scores: a plain classifier (its logits), an
#: `AnchoredModel` (through `AnchoredPredictor`), or a list of plain models. A static table, so
#: `names()` does not depend on what was imported (tests check it against the score registry).
KINDS = {
    "amp": (PLAIN, ANCHORED), "msp": (PLAIN, ANCHORED), "energy": (PLAIN, ANCHORED),
    "max_logit": (PLAIN,), "entropy": (PLAIN,), "odin": (PLAIN,),
    **{v: (ANCHORED,) for v in AMP_SCORES if v not in ("amp", "msp", "energy")},
    **{n: (ENSEMBLE,) if n.startswith("ensemble_") else (PLAIN,) for n in _scores.BASELINE_NAMES},
}
#: The feature-space detectors that also score an `AnchoredModel` (its anchored features, mean over K).
FEATURE_NAMES = ("knn", "mahalanobis")
#: AMP combined with a feature score: `w * z(amp) + (1 - w) * z(feature)` (`CombinedDetector`).
COMBINATIONS = {f"amp+{n}": n for n in FEATURE_NAMES}
KINDS.update({n: (PLAIN, ANCHORED) for n in FEATURE_NAMES})
KINDS.update({n: (ANCHORED,) for n in COMBINATIONS})
#: Options of the AMP detector (the anchors and the predictor), as opposed to the feature score's own.
AMP_OPTIONS = ("anchors", "num_anchors", "seed", "anchor_mode", "pool_size", "max_batch", "eps",
                "tau_reduction", "calibration", "anchor_seed", "check_pixels", "batch_size")


def model_kind(model):
    """`"anchored"` (an `AnchoredModel`), `"ensemble"` (a list of models) or `"plain"`."""
    from amp_tf.method.anchoring import AnchoredModel

    if isinstance(model, (list, tuple)):
        return ENSEMBLE
    return ANCHORED if isinstance(model, AnchoredModel) else PLAIN


def model_inputs(model):
    """`(input_shape, raw_pixels)` of a model: the shape of one input (None when unknown) and
    whether it takes raw pixels (an `AnchoredModel`, or a model with a checking `PixelNormalization`)."""
    from amp_tf.models.pixels import find_normalization

    if isinstance(model, (list, tuple)):
        return model_inputs(model[0]) if model else (None, False)
    if model_kind(model) == ANCHORED:
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
        kind, kinds = model_kind(model), KINDS.get(self.name, (PLAIN,))
        if kind not in kinds:
            raise TypeError(_kind_error(self.name, kind, model))
        if kind == PLAIN:  # the contract of every door: logits out (scores of probabilities are meaningless)
            from amp_tf.contract import check_logits_head

            check_logits_head(model, f"detector {self.name!r}: the model")
        self.input_shape, self.raw_pixels = model_inputs(model)
        self.model = model

    def _inputs(self, images, what="images"):
        """`images` checked against the fitted model (the predictor's messages)."""
        from amp_tf.models.pixels import check_images

        return check_images(images, self.input_shape, self.raw_pixels, what)

    def _check_fitted(self):
        if self.model is None:
            raise RuntimeError(f"detector {self.name!r}: call fit(model, ...) before score(images).")

    def __repr__(self):
        return f"{type(self).__name__}({self.name!r})"


def _kind_error(name, kind, model):
    got = {ANCHORED: "an AnchoredModel", ENSEMBLE: "a list of models"}.get(kind, type(model).__name__)
    if ANCHORED in KINDS.get(name, ()) and PLAIN not in KINDS[name]:
        return (f"detector {name!r}: AMP needs an AnchoredModel, got {got}. For a plain classifier use "
                f"one of {names(anchored=False)}.")
    if ENSEMBLE in KINDS.get(name, ()):
        return f"detector {name!r} scores a list of models (the ensemble's members), got {got}."
    return (f"detector {name!r} scores a plain classifier, got {got}. For an AnchoredModel use one of "
            f"{names(anchored=True)}.")



def names(anchored=None):
    """Detector names, independent of what was imported.

    Args:
        anchored: None: every name; True: the names that score an `AnchoredModel`
            (`get(name).fit(anchored_model, ...)` works for each); False: those
            that score a plain classifier (or, `ensemble_*`, a list of them).
            Scores a user registers in `amp_tf.method.scores` are listed as plain.
    """
    table = dict(KINDS)
    table.update({n: (PLAIN,) for n in _scores.REGISTRY if n not in KINDS})  # a user's own scores
    if anchored is None:
        return sorted(table)
    if anchored:
        return sorted(n for n, kinds in table.items() if ANCHORED in kinds)
    return sorted(n for n, kinds in table.items() if PLAIN in kinds or ENSEMBLE in kinds)



def is_fitted(name):
    reg = _scores.REGISTRY
    if name not in reg and name in _scores.BASELINE_NAMES:
        import amp_tf.detection.baselines  # noqa: F401  (registers the baselines: the layer above the registry)
    return inspect.isclass(reg[name])


