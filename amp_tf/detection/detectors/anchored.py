"""Detectors of an `AnchoredModel`: AMP (every variant from one pass over the anchors), the anchored
feature scores (KNN, Mahalanobis on `[c, x - c]` features, mean over K; Gram on the Gram features of
the block outputs, mean over K: `AnchoredGram`) and AMP combined with them."""

from __future__ import annotations

import inspect

import numpy as np

from amp_tf import recipe
from amp_tf.method import scores as _scores
from amp_tf.detection.detectors.base import AMP_OPTIONS, ANCHORED, COMBINATIONS, Detector, is_fitted, model_kind
from amp_tf.method.inference import batched
from amp_tf.method.predictor import AMP_SCORES, AMP_VARIANTS


class AMPDetector(Detector):
    """AMP of an `AnchoredModel`: every name of `AMP_SCORES` from one pass over the anchors.

    `fit` takes the anchors as given (`anchors=`, raw pixels) or picks `num_anchors`
    (default 5) of the ID training images with `seed` (default 0); the other options
    (`anchor_mode`, `pool_size` for `"per_image"`, `max_batch`, `eps`, ...) go to
    `AnchoredPredictor`. `score(images)` is this detector's name; `score_all(images)`
    gives every AMP score and `predicted_class` from the same logits. The options
    `feature_layer` and `gram_layers` (`"auto"` or names; with `gram_order`, default 5)
    add the anchored features and Gram features of the same backbone call.
    """

    fit_on = "train"

    def fit(self, model, id_train=None, id_val=None):
        from amp_tf.method.anchors import select_anchors
        from amp_tf.method.predictor import AnchoredPredictor

        self._bind(model)
        self.model = None
        if model_kind(model) != ANCHORED:
            raise TypeError(f"detector {self.name!r} (anchored=True): AMP needs an AnchoredModel, got "
                            f"{type(model).__name__}; for a plain classifier use get({self.name!r}, anchored=False).")
        opts = dict(self.options)
        anchors, k, seed = opts.pop("anchors", None), int(opts.pop("num_anchors", recipe.NUM_ANCHORS)), int(opts.pop("seed", 0))
        self.batch_size = int(opts.pop("batch_size", 256))
        self.feature_layer = opts.pop("feature_layer", None)
        gram_layers, self.gram_order = opts.pop("gram_layers", None), int(opts.pop("gram_order", 5))
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
        self.gram_layers_ = None
        if gram_layers is not None:
            from amp_tf.detection.baselines.gram import default_gram_layers

            self.gram_layers_ = (default_gram_layers(self.predictor.backbone) if gram_layers == "auto"
                                 else list(gram_layers))
        self._fn = None
        self.model = model
        return self

    def score(self, images):
        return self.score_all(images)[self.name]

    def score_all(self, images):
        """`{name: (N,)}` for every name of `AMP_SCORES`, and `predicted_class`: one backbone pass per anchor.

        With the option `feature_layer` (e.g. `"features"`), also `features`: `(N, D)` float64, that
        layer's (pooled) output on the anchored inputs `[c, x - c]`, averaged over the K anchors,
        from the same pass (what the anchored KNN / Mahalanobis score). With `gram_layers`, also
        `gram`: `(N, Dg)` float64, the row-sum Gram features (orders 1..`gram_order`, float32 in-graph)
        of those layers on the anchored inputs, averaged over the K anchors (what `AnchoredGram` scores).
        """
        self._check_fitted()
        out = batched(self._compiled(), self._inputs(images), self.batch_size)
        for name in ("features", "gram"):
            if name in out:
                out[name] = out[name].astype(np.float64)
        return out

    def without_gram(self):
        """Drops the Gram features from later passes (e.g. when they overflowed float32); returns self."""
        self.gram_layers_, self._fn = None, None
        return self

    def _compiled(self):
        if self._fn is None:
            import tensorflow as tf

            from amp_tf.method.predictor import amp_outputs

            pred = self.predictor
            spec = tf.TensorSpec((None,) + tuple(pred.anchor_shape[1:]), tf.float32)
            ext = None
            if self.feature_layer is not None or self.gram_layers_:
                from amp_tf.detection.detectors.shipped import feature_extractor

                ext = feature_extractor(pred.backbone, self.feature_layer or "features", self.gram_layers_,
                                        self.gram_order, pooled=self.feature_layer is not None)

            @tf.function(input_signature=[spec])
            def run(x):
                x = pred.normalizer.pixels(x)
                extra = {}
                if ext is None:
                    k = pred.per_anchor_logits(x)
                else:  # one pass gives features, Gram features and logits: (K*B, D + Dg + N), split after
                    k, mean = pred.logits_and_features(x, ext, ext.width)
                    if ext.feature_dim:
                        extra["features"] = mean[:, :ext.feature_dim]
                    if ext.gram_dim:
                        extra["gram"] = mean[:, ext.feature_dim:]
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


def split_options(name, options):
    """`(score options, AMP options)` of an anchored feature detector: the options the score's class
    takes (`k`, `max_train`, `ridge`, ...; `seed` and `batch_size` go to both) and `AMP_OPTIONS`."""
    is_fitted(name)  # registers the baselines
    params = set(inspect.signature(_scores.REGISTRY[name].__init__).parameters) - {"self"}
    unknown = set(options) - params - set(AMP_OPTIONS)
    if unknown:
        raise TypeError(f"detector {name!r}: unknown options {sorted(unknown)}; the score takes "
                        f"{sorted(params)}, the anchors {sorted(AMP_OPTIONS)}.")
    return ({k: v for k, v in options.items() if k in params},
            {k: v for k, v in options.items() if k in AMP_OPTIONS})


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
        score_opts, self.amp_options = split_options(name, options)
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


class AnchoredGram:
    """The anchored Gram score: Sastry & Oore's Gram deviation on the anchored backbone.

    The Gram features are those of `AMPDetector.score_all` with `gram_layers` (row sums of
    orders 1..`gram_order` of the block outputs on every anchored row `[c, x - c]`, averaged
    over the K anchors); `fit` records their per-class min / max on the ID training images,
    grouped by AMP's predicted class (argmax of the mean logits), with a `Gram` estimator
    (`Gram.fit_values`); `from_outputs(out)` is minus the summed deviation from the ranges of
    each image's predicted class (`Gram.value_deviations`). `ShippedScore(kind="gram")` computes
    the same in-graph from the same state.

    Args:
        amp: a fitted `AMPDetector` with `gram_layers` (its pass gives the Gram features).
        eps: the guard of the relative deviations.
    """

    name = "gram"

    def __init__(self, amp, eps=1e-6):
        from amp_tf.detection.baselines.gram import Gram

        if not getattr(amp, "gram_layers_", None):
            raise ValueError("AnchoredGram: pass an AMPDetector fitted with gram_layers (e.g. 'auto').")
        self.amp = amp
        self.estimator = Gram(layers=list(amp.gram_layers_), max_order=amp.gram_order, eps=eps)
        self.finite = True

    def fit(self, batches, num_classes):
        """`batches`: an iterable of `AMPDetector.score_all` outputs of ID training images (with `gram`
        and `predicted_class`); `finite` says afterwards whether every Gram value was finite."""
        def pairs():
            for out in batches:
                g = np.asarray(out["gram"])
                self.finite = self.finite and bool(np.isfinite(g).all())
                yield out["predicted_class"], g

        self.estimator.fit_values(pairs(), num_classes, layers=self.estimator.layers)
        return self

    def from_outputs(self, out):
        """The score `(N,)` from `AMPDetector.score_all`'s outputs (`gram`, `predicted_class`), or their
        `gram_score` when it was computed already."""
        if "gram_score" in out:
            return np.asarray(out["gram_score"])
        return 0.0 - self.estimator.value_deviations(out["predicted_class"], out["gram"])

    def score(self, images):
        return self.from_outputs(self.amp.score_all(images))


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


