"""Anchor Marginalized Prediction (paper Sec. 3.1 "Inference", Eq. 1-2, Fig. 3).

For a test batch `x` and K fixed anchors `c_1..c_K`:

    P_k   = f([c_k, x - c_k])                   # logits, (K, B, N): one tiled batch of K*B
    H     = mean_k P_k                          # marginalized logits
    tau   = reduce_classes( std_k sigmoid(P_k) )  # std with ddof=1 (as the official code)
    H^c   = H / (1 + exp(tau))   or   H / tau   # heteroscedastic temperature scaling
    AMP   = -(1/N) sum_classes log softmax(H^c) = logsumexp(H^c) - mean(H^c)   # Eq. 2

Choices and where they come from:

* `tau_reduction="mean"` (default) averages the per-class std over classes, as
  the authors' released code does; `"sum"` sums it, as the paper's Eq. 1 writes.
  They differ by the factor N, which matters only through the calibration.
* `calibration="exp"` (default) divides by `1 + exp(tau)`: the variant the paper
  uses for CIFAR-sized data "to avoid scaling issues" (end of Sec. 3.1);
  `"divide"` divides by `tau` itself (the main-text formula), with `tau`
  clipped below at `eps` so that a zero spread cannot divide by zero.
* AMP is higher for in-distribution inputs (a peaked calibrated softmax has a
  large mean negative log-likelihood over classes).

Raw pixels in: images and anchors are in pixel units (uint8, or float in
0..255); the predictor normalises both with the training statistics it carries
(`mean`/`std`, taken from the `AnchoredModel` by `from_model`). There is no
default: a bare backbone without `mean`/`std` is refused (a guessed 127.5 /
127.5 moved AMP scores by up to 1.6); pass `mean=0, std=1` for a backbone that
takes raw pixels as they are.

Deployment formats that need fixed shapes and no control flow (TFLite) trace
`fixed_shape_outputs`: the same numbers as `call`, with the K*B rows in one
backbone call instead of the sequential chunks of `max_batch`, and without the
in-graph input checks (the caller checks; `amp_tf.serve.export.TFLiteModel` does).

Example:

>>> import numpy as np
>>> from amp_tf.method.anchoring import AnchoredModel
>>> from amp_tf.models import build_backbone
>>> model = AnchoredModel(build_backbone("resnet_small", (28, 28, 1), 10), mean=73.0, std=90.0)
>>> train = np.random.randint(0, 256, (100, 28, 28, 1)).astype("uint8")
>>> predictor = AnchoredPredictor.from_model(model, select_anchors(train, k=5))
>>> out = predictor.predict(train[:8])
>>> sorted(out)[:4]
['amp_score', 'calibrated_logits', 'energy', 'logits']
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from amp_tf import recipe
from amp_tf.method.amp import (  # noqa: F401  (the formula's names, importable from here as before)
    AMP_SCORES, AMP_VARIANTS, CALIBRATIONS, TAU_REDUCTIONS, amp_outputs, amp_variant_name, calibrate,
)
from amp_tf.method.anchors import anchor_inputs, select_anchors  # noqa: F401  (select_anchors: its old home)
from amp_tf.method.inference import batched
from amp_tf.models import pixels
from amp_tf.models.pixels import pixel_normalization
from amp_tf.method.serialization import WrapsBackbone

ANCHOR_MODES = ("fixed", "per_image")

_NO_STATS = (
    "mean/std: AnchoredPredictor(backbone, anchors) needs the training images' per-channel mean "
    "and std in pixel units (the backbone was trained on (x - mean) / std). Pass mean=..., std=... "
    "(e.g. amp_tf.data.channel_stats(train_images)), or use AnchoredPredictor.from_model("
    "anchored_model, anchors), which takes them from the model; pass mean=0, std=1 if the backbone "
    "takes raw pixels unnormalised."
)


def _backbone_and_stats(backbone, mean, std):
    """`(backbone, mean, std)`: an `AnchoredModel` gives its own; a bare backbone needs both."""
    from amp_tf.method.anchoring import AnchoredModel

    if isinstance(backbone, AnchoredModel):
        own_mean, own_std = backbone.normalizer.statistics()
        mean = own_mean if mean is None else mean
        std = own_std if std is None else std
        backbone = backbone.backbone
    if mean is None or std is None:
        given = "neither" if mean is None and std is None else ("std only" if mean is None else "mean only")
        raise ValueError(f"{_NO_STATS} Got {given}.")
    return backbone, mean, std


def _check_options(tau_reduction, calibration, max_batch):
    """ValueError for an unknown tau reduction or calibration, or a bad `max_batch`."""
    if tau_reduction not in TAU_REDUCTIONS:
        raise ValueError(f"tau_reduction: expected one of {TAU_REDUCTIONS}, got {tau_reduction!r}.")
    if calibration not in CALIBRATIONS:
        raise ValueError(f"calibration: expected one of {CALIBRATIONS}, got {calibration!r}.")
    if max_batch not in (None, "auto") and (isinstance(max_batch, str) or int(max_batch) < 1):
        raise ValueError(f"max_batch: expected a positive int, 'auto' or None, got {max_batch!r}.")


def _anchor_images(anchors, anchor_shape, check_pixels):
    """``(anchors float32 or None, anchor_shape (K, H, W, C))``, checked: K >= 2, raw pixels."""
    if anchors is None and anchor_shape is None:
        raise ValueError("anchors: pass the (K, H, W, C) anchor images (see select_anchors).")
    if anchors is not None:
        anchors = np.asarray(anchors, dtype="float32")
        anchor_shape = anchors.shape
    anchor_shape = tuple(int(d) for d in anchor_shape)
    if len(anchor_shape) != 4:
        raise ValueError(f"anchors: expected shape (K, H, W, C), got {anchor_shape}.")
    recipe.check_num_anchors(anchor_shape[0], f"anchors {tuple(anchor_shape)}")
    if anchors is not None:
        if check_pixels:
            anchors = pixels.check_pixels(anchors, "anchors")
        elif not np.all(np.isfinite(anchors)):
            raise ValueError("anchors: contain NaN or Inf values.")
        anchors = np.asarray(anchors, "float32")
    return anchors, anchor_shape


def _check_backbone_fits(backbone, anchor_shape):
    """ValueError when the backbone does not take (anchor, residual) pairs of the anchors' shape."""
    in_shape = backbone.input_shape
    if len(in_shape) != 4 or in_shape[-1] != 2 * anchor_shape[-1]:
        raise ValueError(
            f"anchors: {anchor_shape[-1]}-channel anchors need a backbone over "
            f"{2 * anchor_shape[-1]} channels, but the backbone takes input_shape={in_shape}."
        )
    if tuple(in_shape[1:3]) != anchor_shape[1:3] and None not in in_shape[1:3]:
        raise ValueError(
            f"anchors: spatial size {anchor_shape[1:3]} differs from the backbone's {tuple(in_shape[1:3])}."
        )


@keras.saving.register_keras_serializable(package="amp_tf")
class AnchoredPredictor(WrapsBackbone, keras.layers.Layer):
    """K-anchor inference for a trained anchored backbone, on raw pixels.

    Build it with `AnchoredPredictor.from_model(anchored_model, anchors)`, which
    takes the backbone and the training statistics from the model.

    Args:
        backbone: the trained backbone over 2C channels (e.g. `model.backbone` of an
            `AnchoredModel`), or the `AnchoredModel` itself (its backbone and
            statistics are used, as `from_model` does).
        anchors: (K, H, W, C) anchors from the training data in pixel units, K >= 2
            (see `select_anchors`). Stored as a non-trainable weight, so they
            travel with saved models.
        mean, std: the training statistics in pixel units (as the `AnchoredModel`'s),
            required for a bare backbone: the images are normalised with
            `(x - mean) / std` as in training. `mean=0, std=1` says explicitly
            that the backbone takes raw pixels unnormalised (identity).
        check_pixels: refuse input that is not raw pixels (see `amp_tf.models.pixels`).
        anchor_mode: `"fixed"`: the same K anchors for every image (`anchors`
            holds them); `"per_image"`: `anchors` is a pool of P training images
            and each image gets `num_anchors` of them, drawn by a hash of its own
            pixels and `anchor_seed` (as the official evaluation draws anchors per
            test image; the same image always gets the same anchors, so serving is
            reproducible).
        num_anchors: K in `"per_image"` mode (2 <= K <= P).
        anchor_seed: seed of the per-image draw.
        tau_reduction: `"mean"` (official code) or `"sum"` (paper Eq. 1).
        calibration: `"exp"`: H / (1 + exp(tau)) (paper, CIFAR; default) or
            `"divide"`: H / max(tau, eps) (paper, main text).
        max_batch: the backbone sees at most this many of the K*B tiled rows at a
            time (sequentially, in equal chunks), which bounds activation memory.
            `"auto"` (default): on CPU about 100k pixels of rows per call (128 rows
            at 28x28, 98 at 32x32: 1.32x the speed of one K*B batch at K = 5,
            B = 128, and 1.10x 256-row chunks, `benchmarks/speed/main.py`), on GPU one
            batch; None: always one batch.
        eps: floor for tau with `calibration="divide"`.

    `call(images)` returns a dict of tensors: `logits` (mean over anchors), `tau`,
    `calibrated_logits`, `probabilities`, `predicted_class`, `amp_score`, `msp`
    and `energy` (both on the calibrated logits).
    """

    def __init__(
        self,
        backbone,
        anchors=None,
        tau_reduction="mean",
        calibration="exp",
        max_batch="auto",
        eps=1e-6,
        anchor_shape=None,
        mean=None,
        std=None,
        check_pixels=True,
        anchor_mode="fixed",
        num_anchors=None,
        anchor_seed=0,
        **kwargs,
    ):
        kwargs.setdefault("dtype", "float32")  # tau and calibration in float32 always
        super().__init__(**kwargs)
        backbone, mean, std = _backbone_and_stats(backbone, mean, std)
        _check_options(tau_reduction, calibration, max_batch)
        anchors, anchor_shape = _anchor_images(anchors, anchor_shape, check_pixels)
        _check_backbone_fits(backbone, anchor_shape)
        self.backbone = backbone
        self.tau_reduction = tau_reduction
        self.calibration = calibration
        self.max_batch = max_batch if max_batch in (None, "auto") else int(max_batch)
        self.eps = float(eps)
        self.anchor_shape = anchor_shape
        self._set_anchor_mode(anchor_mode, num_anchors, anchor_seed)
        self.normalizer = pixel_normalization(mean, std, anchor_shape[-1], check_pixels)
        self.anchors = self.add_weight(
            shape=anchor_shape,
            initializer="zeros" if anchors is None else keras.initializers.Constant(anchors),
            trainable=False,
            name="anchors",
        )

    def _set_anchor_mode(self, anchor_mode, num_anchors, anchor_seed):
        """Checks and sets `anchor_mode`, `k` (anchors per image) and, per image, the hash weights."""
        anchor_shape = self.anchor_shape
        if anchor_mode not in ANCHOR_MODES:
            raise ValueError(f"anchor_mode: expected one of {ANCHOR_MODES}, got {anchor_mode!r}.")
        self.anchor_mode = anchor_mode
        self.anchor_seed = int(anchor_seed)
        if anchor_mode == "per_image":
            if num_anchors is None or not 2 <= int(num_anchors) <= anchor_shape[0]:
                raise ValueError(
                    f"num_anchors: per_image mode draws K anchors per image from the pool of "
                    f"{anchor_shape[0]}; expected 2 <= K <= {anchor_shape[0]}, got {num_anchors!r}."
                )
            self.k = int(num_anchors)
            d = int(np.prod(anchor_shape[1:]))
            self._hash_w = np.random.default_rng(self.anchor_seed).integers(1, 2**31 - 1, d, dtype=np.int64)
        else:
            if num_anchors is not None and int(num_anchors) != anchor_shape[0]:
                raise ValueError(f"num_anchors: fixed mode uses all {anchor_shape[0]} anchors, got {num_anchors}.")
            self.k = anchor_shape[0]

    def build(self, input_shape=None):
        self.built = True  # the backbone arrives built; the anchors are created in __init__

    @classmethod
    def from_model(cls, model, anchors, **kwargs):
        """The predictor of a trained `AnchoredModel`: its backbone and statistics.

        Args:
            model: an `AnchoredModel`.
            anchors: (K, H, W, C) training images in pixel units (`select_anchors`).
            **kwargs: other `AnchoredPredictor` arguments.
        """
        from amp_tf.method.anchoring import AnchoredModel

        if not isinstance(model, AnchoredModel):
            raise TypeError(
                f"model: expected an AnchoredModel, got {type(model).__name__}. For a bare backbone "
                "use AnchoredPredictor(backbone, anchors, mean=..., std=...)."
            )
        kwargs.setdefault("check_pixels", model.normalizer.check)
        return cls(model, anchors, **kwargs)  # the backbone and its statistics: `_backbone_and_stats`

    @property
    def num_anchors(self):
        """K: anchors per image."""
        return self.k

    def anchor_indices(self, images):
        """(B, K) pool indices of each image's anchors (`per_image` mode), a pure function of its pixels.

        The key of an image is a fixed random integer projection of its rounded
        pixels; each pool index j gets a splitmix-style hash of (key, j), and the
        K largest hashes pick the anchors (distinct by construction).
        """
        x = tf.cast(tf.round(tf.cast(images, tf.float32)), tf.int64)
        b = tf.shape(x)[0]
        key = tf.reduce_sum(tf.reshape(x, [b, -1]) * tf.constant(self._hash_w), axis=1)  # wraps: fine
        j = tf.range(self.anchor_shape[0], dtype=tf.int64)
        z = key[:, None] * tf.constant(-7046029254386353131, tf.int64) + (j[None] + 1) * tf.constant(
            -4658895280553007687, tf.int64)
        z = tf.bitwise.bitwise_xor(z, tf.bitwise.right_shift(z, tf.constant(29, tf.int64)))
        z = z * tf.constant(-7723592293110705685, tf.int64)
        z = tf.bitwise.bitwise_xor(z, tf.bitwise.right_shift(z, tf.constant(32, tf.int64)))
        u = tf.cast(tf.bitwise.bitwise_and(z, tf.constant(0x7FFFFFFF, tf.int64)), tf.int32)
        return tf.math.top_k(u, k=self.k, sorted=False).indices

    def _check(self, images):
        if len(images.shape) != 4:
            raise ValueError(
                f"images: expected rank 4 (batch, height, width, channels), got shape {tuple(images.shape)}."
            )
        exp = self.anchor_shape[1:]
        got = tuple(images.shape[1:])
        if any(g is not None and g != e for g, e in zip(got, exp)):
            raise ValueError(
                f"images: expected (batch, {exp[0]}, {exp[1]}, {exp[2]}) like the anchors, got "
                f"{tuple(images.shape)}. Resize or convert channels in preprocessing."
            )

    def normalised(self, images):
        """`(x, c)`: the images and the anchors normalised (float32 pixels in)."""
        n = self.normalizer
        return n.normalise(tf.cast(images, tf.float32)), n.normalise(tf.cast(self.anchors, tf.float32))

    def per_anchor_logits(self, images):
        """Backbone logits for every (anchor, image) pair: (K, B, N), one tiled batch.

        `images` are float32 pixels (already checked by `call`).
        """
        logits = self._run_backbone(self.anchored_rows(images))
        return tf.reshape(logits, [self.num_anchors, tf.shape(images)[0], -1])

    def anchored_rows(self, images):
        """The backbone's inputs `[c, x - c]` of every (anchor, image) pair, normalised as in
        training: (K * B, H, W, 2C), anchor-major (row `k * B + b` = anchor k, image b)."""
        x, a = self.normalised(images)
        k, b = self.num_anchors, tf.shape(x)[0]
        xs = tf.broadcast_to(x[None], tf.concat([[k], tf.shape(x)], 0))
        if self.anchor_mode == "per_image":
            cs = tf.transpose(tf.gather(a, self.anchor_indices(images)), [1, 0, 2, 3, 4])  # (K, B, ...)
        else:
            cs = tf.broadcast_to(a[:, None], tf.concat([[k], tf.shape(x)], 0))
        rows = anchor_inputs(xs, cs)
        return tf.reshape(rows, tf.concat([[k * b], tf.shape(rows)[2:]], 0))

    def logits_and_features(self, images, extractor, width):
        """`(per-anchor logits (K, B, N), mean anchored features (B, D))` from one backbone pass.

        `extractor` maps the anchored rows to `concat([features (D = width), logits])`, e.g.
        `feature_extractor(backbone)` (amp_tf.detection.detectors.shipped); `images` are float32 pixels.
        """
        both = self.run_chunked(extractor, self.anchored_rows(images))
        both = tf.reshape(both, [self.num_anchors, tf.shape(images)[0], -1])
        return both[..., width:], tf.reduce_mean(both[..., :width], axis=0)

    def one_batch(self):
        """A context in which the K*B rows go through the backbone in one call (TFLite traces)."""
        import contextlib

        @contextlib.contextmanager
        def ctx():
            self._one_batch = True
            try:
                yield
            finally:
                self._one_batch = False
        return ctx()

    def _run_backbone(self, rows):
        return self.run_chunked(self.backbone, rows)

    def chunk_rows(self):
        """The rows per backbone call: `max_batch`, or the `"auto"` choice (None = one batch)."""
        if getattr(self, "_one_batch", False):
            return None
        if self.max_batch != "auto":
            return self.max_batch
        if tf.config.list_logical_devices("GPU"):
            return None
        h, w = self.anchor_shape[1:3]
        return max(32, 100_352 // (h * w))

    def run_chunked(self, model, rows):
        """`model(rows)`, at most `chunk_rows()` rows at a time (sequentially, equal chunks)."""
        limit = self.chunk_rows()
        if limit is None:
            return model(rows, training=False)
        n = tf.shape(rows)[0]
        chunks = (n + limit - 1) // limit
        m = (n + chunks - 1) // chunks  # equal chunks: at most chunks - 1 padded rows
        padded = tf.pad(rows, [[0, chunks * m - n], [0, 0], [0, 0], [0, 0]])
        padded = tf.reshape(padded, tf.concat([[chunks, m], tf.shape(rows)[1:]], 0))

        @tf.autograph.experimental.do_not_convert
        def chunk(r):
            return tf.cast(model(r, training=False), tf.float32)

        out = tf.map_fn(chunk, padded, fn_output_signature=tf.float32)
        return tf.reshape(out, [chunks * m, -1])[:n]

    def call(self, images):
        images = tf.convert_to_tensor(images)
        self._check(images)
        images = self.normalizer.pixels(images)
        return amp_outputs(
            self.per_anchor_logits(images), self.tau_reduction, self.calibration, self.eps
        )

    def fixed_shape_outputs(self, images):
        """`call`'s outputs with the K*B rows in one backbone call and no in-graph checks.

        The trace TFLite can lower (`amp_tf.serve.export.export_tflite`): no `tf.map_fn`
        over chunks and no assertions, so trace it on a fixed-shape batch. The
        numbers are those of `call` (the same backbone on the same rows). The
        caller checks the input: raw pixels of the anchors' (H, W, C).

        Args:
            images: (B, H, W, C) raw pixels (uint8 or float 0..255).
        """
        self._one_batch = True
        try:
            logits = self.per_anchor_logits(tf.cast(images, tf.float32))
        finally:
            self._one_batch = False
        return amp_outputs(logits, self.tau_reduction, self.calibration, self.eps)

    def predict(self, images, batch_size=256, verbose=0):
        """Runs `call` over an in-memory array in batches; returns a dict of numpy arrays.

        Checks the input first (rank, size, channels, dtype, NaN/Inf) with a clear error.
        """
        images = np.asarray(images)
        if images.ndim != 4:
            raise ValueError(
                f"images: expected (N, H, W, C), got shape {images.shape}."
            )
        if len(images) == 0:
            raise ValueError("images: got an empty array; pass at least one image.")
        self._check(images)
        if self.normalizer.check:
            pixels.check_pixels(images)
        return batched(self._predict_fn(), images, batch_size, verbose=verbose)

    def _predict_fn(self):
        if getattr(self, "_compiled_predict", None) is None:
            self._compiled_predict = tf.function(self.call, reduce_retracing=True)
        return self._compiled_predict

    def get_config(self):
        config = super().get_config()
        config.update(
            self.wrapped_config(),
            anchor_shape=list(self.anchor_shape),
            anchor_mode=self.anchor_mode,
            num_anchors=self.k if self.anchor_mode == "per_image" else None,
            anchor_seed=self.anchor_seed,
            tau_reduction=self.tau_reduction,
            calibration=self.calibration,
            max_batch=self.max_batch,
            eps=self.eps,
        )
        return config
