"""`OODMetricsCallback`: exact OOD metrics in `logs`, for checkpointing and tuning.

The images are checked when the callback is made (raw pixels, one size) and
against the model when training begins (its image size and channels), so a
mistake stops `fit` before its first step.

Every `every` epochs it scores ID and OOD validation images and writes, for the
mean over OOD sets, `val_ood_fpr95`, `val_ood_auroc`, `val_ood_aupr_in`,
`val_ood_aupr_out`, `val_ood_detection_accuracy`, and per set
`val_ood_<set>_<metric>`. `ModelCheckpoint(monitor="val_ood_auroc", mode="max")`,
`EarlyStopping`, TensorBoard and KerasTuner objectives can use them. On epochs in
between, the last values are repeated so monitors always find the keys.

Example:

>>> cb = OODMetricsCallback(x_val, {"blur": x_blur}, every=2)   # doctest: +SKIP
>>> model.fit(x, y, epochs=10, callbacks=[cb])                  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping

import keras
import numpy as np

from amp_tf import recipe
from amp_tf.contract import check_int
from amp_tf.detection import detectors, metrics
from amp_tf.method import scores
from amp_tf.method.anchoring import AnchoredModel
from amp_tf.method.anchors import select_anchors

#: The callback's names of an anchored model's scores -> (detector name, negate); `tau` is raw tau.
_ANCHORED_NAMES = {None: ("amp", False), "amp": ("amp", False), "amp_score": ("amp", False),
                   "msp": ("msp", False), "energy": ("energy", False), "tau": ("neg_tau", True)}


def _detector(model, score, anchors, batch_size, **predictor_kwargs):
    """`(fitted detector, negate)` of `score` on `model` (an `AnchoredModel` with `anchors`, or a plain one)."""
    if isinstance(model, AnchoredModel):
        if score not in _ANCHORED_NAMES:
            raise ValueError(f"score: {score!r} is not a score of an AnchoredModel; use one of "
                             f"{[k for k in _ANCHORED_NAMES if k]}.")
        name, negate = _ANCHORED_NAMES[score]
        det = detectors.get(name, anchored=True, anchors=anchors, batch_size=batch_size, **predictor_kwargs)
        return det.fit(model), negate
    return detectors.get(score, anchored=False, batch_size=batch_size).fit(model), False


def score_images(model, images, score="amp", anchors=None, batch_size=256, **predictor_kwargs):
    """One OOD score per image for an `AnchoredModel` (via AMP) or any logits model.

    For an `AnchoredModel`, `score` is `amp` (or `amp_score`), `msp`, `energy` or
    `tau`, computed with `anchors` (`amp_tf.detection.detectors.AMPDetector`); for a plain
    model it is a logit score name from `amp_tf.method.scores`.
    """
    det, negate = _detector(model, score, anchors, batch_size, **predictor_kwargs)
    s = det.score(images)
    return -s if negate else s


def _checked(images, what):
    from amp_tf.models.pixels import check_pixels

    x = np.asarray(images)
    if x.ndim != 4 or len(x) == 0:
        raise ValueError(f"{what}: expected a non-empty (N, H, W, C) array of raw pixels, got shape {x.shape}.")
    return check_pixels(x, what)


class OODMetricsCallback(keras.callbacks.Callback):
    """Writes exact OOD metrics of the model being trained into `logs`.

    Args:
        id_images: ID validation images (N, H, W, C), raw pixels.
        ood_sets: `{name: images}` of OOD validation images (raw pixels). Without
            outlier exposure, use ID-derived proxies (e.g. heavily blurred ID images).
        anchors: (K, H, W, C) anchors for anchored models; by default
            `num_anchors` images picked from `id_images` with `seed`.
        score: `"amp"` for anchored models (or `msp`, `energy`); any logit score
            name for plain models (default for those: `"msp"`).
        every: compute every n-th epoch (and always on the last).
        positive: metric convention, `"id"` (paper) or `"ood"` (OpenOOD).
        prefix: key prefix in `logs`.
    """

    def __init__(
        self,
        id_images,
        ood_sets,
        anchors=None,
        num_anchors=recipe.NUM_ANCHORS,
        score=None,
        every=1,
        positive="id",
        prefix="val_ood_",
        batch_size=256,
        seed=0,
        verbose=1,
    ):
        super().__init__()
        if not isinstance(ood_sets, Mapping):
            raise TypeError(f"ood_sets: expected a dict {{name: images}} of OOD validation sets, got "
                            f"{type(ood_sets).__name__}; e.g. ood_sets={{'blurred': x_blur}}.")
        if not ood_sets:
            raise ValueError("ood_sets: pass at least one {name: images} OOD validation set.")
        every = check_int(every, "every", 1)
        batch_size = check_int(batch_size, "batch_size", 1)
        if positive not in ("id", "ood"):
            raise ValueError(f"positive: expected 'id' or 'ood', got {positive!r}.")
        if anchors is None:
            recipe.check_num_anchors(num_anchors)
        if score is not None and score not in ("amp", "amp_score", "msp", "energy", "tau") \
                and score not in scores.names(needs_model=False, needs_fit=False):
            raise ValueError(f"score: unknown score {score!r}; use 'amp' (anchored models) or one of "
                             f"{scores.names(needs_model=False, needs_fit=False)}.")
        self.id_images = _checked(id_images, "id_images")
        self.ood_sets = {}
        for k, v in ood_sets.items():
            if not isinstance(k, str) or not k:
                raise ValueError(f"ood_sets: keys must be non-empty set names, got {k!r}.")
            v = _checked(v, f"ood_sets[{k!r}]")
            if v.shape[1:] != self.id_images.shape[1:]:
                raise ValueError(f"ood_sets[{k!r}]: images of shape {v.shape[1:]} differ from the ID "
                                 f"images' {self.id_images.shape[1:]}.")
            self.ood_sets[k] = v
        if anchors is not None:
            anchors = _checked(anchors, "anchors")
            recipe.check_num_anchors(len(anchors), "anchors (K = their number)")
            if anchors.shape[1:] != self.id_images.shape[1:]:
                raise ValueError(f"anchors: expected (K, {', '.join(map(str, self.id_images.shape[1:]))}) like "
                                 f"the ID images, got {anchors.shape}.")
        self.anchors = anchors
        self.num_anchors = num_anchors
        self.score = score
        self.every = every
        self.positive = positive
        self.prefix = prefix
        self.batch_size = batch_size
        self.seed = seed
        self.verbose = verbose
        self.last = {}

    def _scores(self, images):
        model = self.model
        if getattr(self, "_det", None) is None or self._det[0] is not model:  # built once: one trace per run
            if isinstance(model, AnchoredModel) and self.anchors is None:
                self.anchors = select_anchors(self.id_images, self.num_anchors, self.seed)
            score = self.score if isinstance(model, AnchoredModel) else self.score or "msp"
            self._det = (model, *_detector(model, score, self.anchors, self.batch_size))
        _, det, negate = self._det
        s = det.score(images)
        return -s if negate else s

    def compute(self):
        """The metrics now: `{key: value}` with mean and per-set keys."""
        id_s = self._scores(self.id_images)
        per_set = {
            name: metrics.ood_metrics(id_s, self._scores(x), positive=self.positive)
            for name, x in self.ood_sets.items()
        }
        out = {}
        keys = [k for k in next(iter(per_set.values())) if k != "positive"]
        for k in keys:
            out[self.prefix + k] = float(np.mean([m[k] for m in per_set.values()]))
            for name, m in per_set.items():
                out[f"{self.prefix}{name}_{k}"] = float(m[k])
        return out

    def on_train_begin(self, logs=None):
        """Checks the images against the model being trained, before its first step."""
        from amp_tf.detection.detectors import model_inputs
        from amp_tf.models.pixels import check_images

        shape, _ = model_inputs(self.model)
        sets = [("id_images", self.id_images), ("anchors", self.anchors),
                *((f"ood_sets[{k!r}]", v) for k, v in self.ood_sets.items())]
        for what, images in sets:
            if images is not None:
                check_images(images, shape, pixels=False, what=what)  # pixels were checked in __init__

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        last_epoch = self.params.get("epochs", 0) - 1 if self.params else -1
        if (epoch + 1) % self.every == 0 or epoch == last_epoch or not self.last:
            self.last = self.compute()
            if self.verbose:
                p = self.prefix
                print(
                    f"\n[OOD] epoch {epoch + 1}: {p}auroc={self.last[p + 'auroc']:.4f} "
                    f"{p}fpr95={self.last[p + 'fpr95']:.4f}"
                )
        logs.update(self.last)
