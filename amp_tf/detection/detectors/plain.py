"""Detectors of a plain classifier: a logit score, a score that needs the model, a fitted score."""

from __future__ import annotations

import numpy as np

from amp_tf.method import scores as _scores
from amp_tf.detection.detectors.base import Detector
from amp_tf.method.inference import model_logits


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
        odin, logits = _scores.odin_and_logits(self.model, x, opts["temperature"], opts["epsilon"],
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


