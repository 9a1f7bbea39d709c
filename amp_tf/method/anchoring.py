"""Anchored training as a plain Keras model (paper Sec. 3.1, Fig. 2, Appendix A/C).

`AnchoredModel` wraps a backbone over 2C channels. Its `call` takes raw
C-channel images in pixel units (uint8, or float in 0..255: what `fit` feeds
it) and anchors inside:

    c    = x[perm]                          # anchors: a random permutation of the same batch
    x_in = concat([n(T(c)), (x - c) / std]) # n(v) = (v - mean) / std; T every n-th step

`T` touches the anchor channels only and works in pixel units (its value range
is 0..255 by construction); the residual always uses the clean anchor. The
model carries the per-channel `mean`/`std` of its training images
(`amp_tf.models.pixels.PixelNormalization`), saved with it; input that is not raw
pixels (already normalised, or divided by 255) is refused with a clear error.
Under a `tf.distribute` strategy each replica permutes its own share of the
global batch, and the replica id enters the seed, so replicas draw different
permutations (a mirrored `SeedGenerator` alone would give them all the same one).

Randomness during `fit` is a pure function of `(seed, optimizer step, replica)`:
a run restarted from a checkpoint at step s draws the same anchors as one that
never stopped.

`anchored_model(vanilla)` wraps a trained vanilla classifier: an `AnchoredModel`
over its anchored backbone (`amp_tf.models.anchor_with_statistics`) that computes
the vanilla function exactly, the start of anchored fine-tuning.

Example:

>>> import keras, numpy as np
>>> from amp_tf.models import build_backbone
>>> backbone = build_backbone("resnet_small", (28, 28, 1), 10, anchored=True)
>>> x = np.random.randint(0, 256, (64, 28, 28, 1)).astype("uint8")   # raw pixels
>>> model = AnchoredModel(backbone, consistency="all", consistency_every=5,
...                       mean=x.mean(), std=x.std(), seed=0)
>>> model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
...               metrics=["accuracy"])
>>> y = np.random.randint(0, 10, 64)
>>> history = model.fit(x, y, batch_size=32, epochs=1, verbose=0)
"""

from __future__ import annotations

import re

import keras
import numpy as np
import tensorflow as tf

from amp_tf import recipe
from amp_tf.contract import check_int
from amp_tf.method.anchors import anchor_inputs
from amp_tf.method.augment import ConsistencyAugment
from amp_tf.method.labels import (LABELS_FRACTIONAL, label_problem, labels_out_of_range,  # noqa: F401
                                 logits_loss, one_hot_shape)  # (label_problem: importable from here as before)
from amp_tf.models.pixels import GRAPH_MESSAGES, check_images, pixel_normalization
from amp_tf.method.serialization import WrapsBackbone
from amp_tf.data.tfdata import array_batches


def replica_seed(base_seed, step):
    """A stateless seed (2,) from a base seed, a step counter and the replica id."""
    rid = tf.cast(_replica_id(), tf.int64)
    seed = tf.stack([tf.constant(base_seed, tf.int64), tf.cast(step, tf.int64)])
    return tf.random.experimental.stateless_fold_in(seed, rid)


def permute_batch(images, seed):
    """A random permutation of the batch (per-replica when `seed` is)."""
    n = tf.shape(images)[0]
    perm = tf.argsort(tf.random.stateless_uniform([n], seed=seed))
    return tf.gather(images, perm)


@keras.saving.register_keras_serializable(package="amp_tf")
class AnchoredModel(WrapsBackbone, keras.Model):
    """Trains any 2C-channel backbone with neural network anchoring via `fit`.

    Args:
        backbone: a Keras model mapping (H, W, 2C) inputs to logits, e.g.
            `build_backbone(name, (H, W, C), N)` or `anchor_backbone(model)`.
        consistency: the anchor transform `T`: a preset name (`"all"`, the
            paper's composition; `"none"` to disable), names joined with `+`, a
            list of names, or a `ConsistencyAugment` layer. See `amp_tf.method.augment`.
        consistency_every: apply `T` on every n-th training step (5 = the paper's
            CIFAR setting, 10 for ImageNet, 0 = never).
        consistency_mode: `"per_sample"` (each anchor its own draw) or `"official"`
            (one draw per batch with the authors' ranges); see `amp_tf.method.augment`.
            The defaults of `T` are the library's recipe (`amp_tf.recipe`).
        mean, std: per-channel statistics of the training images in pixel units
            (`amp_tf.data.channel_stats(x_train)`); None: 127.5 / 127.5.
        check_pixels: refuse input that is not raw pixels (see `amp_tf.models.pixels`);
            False for users with their own preprocessing.
        seed: base seed for anchors and `T`.
        num_classes: optional; when set, integer labels outside
            `[0, num_classes)` raise a clear error during training. Defaults to
            the backbone's output width.
    """

    def __init__(
        self,
        backbone,
        consistency=recipe.CONSISTENCY,
        consistency_every=recipe.CONSISTENCY_EVERY,
        consistency_mode=recipe.CONSISTENCY_MODE,
        mean=None,
        std=None,
        check_pixels=True,
        seed=0,
        num_classes=None,
        **kwargs,
    ):
        # Anchoring (x - c) runs in float32; under mixed precision the backbone casts.
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if not isinstance(backbone, keras.Model):
            raise TypeError(
                f"backbone: expected a keras.Model over 2C channels, got {type(backbone).__name__}."
            )
        shape = backbone.input_shape
        if isinstance(shape, list) or len(shape) != 4:
            raise ValueError(
                "backbone: expected one image input of rank 4 (B, H, W, 2C), "
                f"got input_shape={shape}."
            )
        if shape[-1] is None or shape[-1] % 2:
            raise ValueError(
                f"backbone: its input must have an even channel count 2C (anchor + residual), "
                f"got {shape[-1]}. Build it with build_backbone(..., anchored=True) or anchor_backbone(model)."
            )
        consistency_every = check_int(consistency_every, "consistency_every", 0, note="every n-th step; 0 = off")
        self.backbone = backbone
        self.image_channels = shape[-1] // 2
        self.consistency_every = consistency_every
        if isinstance(consistency, ConsistencyAugment):
            self.augment = consistency
        else:
            self.augment = ConsistencyAugment(consistency, value_range=(0.0, 255.0), mode=consistency_mode)
        self.augment.check_shape((shape[1], shape[2], self.image_channels))  # official T: torchvision's limits
        self.normalizer = pixel_normalization(mean, std, self.image_channels, check_pixels)
        self.seed = int(seed)
        out = backbone.output_shape
        self.num_classes = int(num_classes) if num_classes else (out[-1] if out else None)
        self._eval_seed = keras.random.SeedGenerator(self.seed + 7919)

    def build(self, input_shape=None):
        # The backbone arrives built (it has an Input); T has no weights.
        self.built = True

    # -- forward -----------------------------------------------------------
    def _check_images(self, x):
        if len(x.shape) != 4:
            raise ValueError(
                f"images: expected rank 4 (batch, height, width, channels), got shape {tuple(x.shape)}."
            )
        if x.shape[-1] is not None and x.shape[-1] != self.image_channels:
            raise ValueError(
                f"images: the backbone takes {2 * self.image_channels} channels, i.e. "
                f"{self.image_channels}-channel images (anchor + residual); got "
                f"{x.shape[-1]} channels. Pass raw images; AnchoredModel anchors them."
            )

    def call(self, x, training=False, seed=None, apply_consistency=False):
        """Anchors `x` with a permutation of its own batch and runs the backbone.

        Args:
            x: (B, H, W, C) raw pixels (uint8, or float in 0..255).
            training: Keras' training flag (BatchNorm, Dropout).
            seed: stateless seed (2,); drawn from an internal generator if None.
            apply_consistency: bool or bool tensor: apply `T` to the anchors.
        """
        x = tf.convert_to_tensor(x)
        self._check_images(x)
        x = self.normalizer.pixels(x)  # float32 pixels, checked; the backbone casts for mixed precision
        if seed is None:
            seed = tf.random.experimental.stateless_fold_in(
                tf.cast(self._eval_seed.next(), tf.int64), tf.cast(_replica_id(), tf.int64)
            )
        perm_seed, aug_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        anchors = permute_batch(x, perm_seed)
        n = self.normalizer
        # official T acts on the normalised anchors (torchvision's ran after Normalize); ours on pixels
        pre = n.normalise(anchors) if self.augment.on_normalised else anchors
        if self.augment.names and not (apply_consistency is False):
            view = tf.cond(
                tf.convert_to_tensor(apply_consistency),
                lambda: self.augment(pre, seed=aug_seed),
                lambda: pre,
            )
        else:
            view = pre
        view = view if self.augment.on_normalised else n.normalise(view)
        rows = anchor_inputs(x, anchors, view, residual_scale=n.scale)
        return self.backbone(rows, training=training)

    # -- training ----------------------------------------------------------
    def _check_labels(self, y):
        """In-graph label checks (tf.data batches): the messages of `label_problem`, first."""
        if self.num_classes is None or y is None or isinstance(y, (dict, list, tuple)):
            return []
        if not (y.dtype.is_integer or y.dtype.is_floating) or one_hot_shape(y.shape):
            return []
        checks = []
        if y.dtype.is_floating:
            checks.append(tf.debugging.Assert(tf.reduce_all(tf.equal(y, tf.round(y))), [LABELS_FRACTIONAL]))
        lo, hi = tf.reduce_min(y), tf.reduce_max(y)
        inside = tf.logical_and(lo >= 0, hi < tf.cast(self.num_classes, y.dtype))
        message = labels_out_of_range(self.num_classes)
        checks.append(tf.debugging.Assert(tf.logical_or(tf.size(y) == 0, inside), [message, "min:", lo, "max:", hi]))
        return checks

    def consistency_active(self, step):
        """Whether `T` is applied at optimizer step `step` (0-based): every n-th step."""
        if self.consistency_every == 0 or not self.augment.names:
            return False
        return tf.equal(tf.math.floormod(tf.cast(step, tf.int64), self.consistency_every), 0)

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        step = self.optimizer.iterations
        seed = replica_seed(self.seed, step)
        apply_t = self.consistency_active(step)
        with tf.control_dependencies(self._check_labels(y)):  # the checks run before the loss
            x = tf.identity(x)
            y = tf.identity(y) if isinstance(y, tf.Tensor) else y
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True, seed=seed, apply_consistency=apply_t)
            # compute_loss returns the per-replica share of the global loss
            # (scaled by 1/num_replicas under a strategy): no extra mean here.
            loss = self.compute_loss(
                x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True
            )
            self._loss_tracker.update_state(
                _unscale(loss),
                sample_weight=tf.shape(x)[0],
            )
            scaled = self.optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, self.trainable_weights)
        self.optimizer.apply_gradients(zip(grads, self.trainable_weights))
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    @property
    def image_shape(self):
        """(H, W, C) of the images this model takes (raw pixels; the backbone sees 2C channels)."""
        h, w, c2 = self.backbone.input_shape[1:]
        return (h, w, c2 // 2)

    def compile(self, optimizer="rmsprop", loss=None, *args, **kwargs):
        """`keras.Model.compile`; the model outputs logits, so the loss is read for them (`logits_loss`):
        ``"sparse_categorical_crossentropy"`` means ``SparseCategoricalCrossentropy(from_logits=True)``
        here, and a cross-entropy with ``from_logits=False`` is refused."""
        super().compile(optimizer, logits_loss(loss), *args, **kwargs)

    def compile_from_config(self, config):
        """Keras' own, through this `compile` (Keras skips an overridden `compile` when a model loads)."""
        self.compile(**keras.saving.deserialize_keras_object(config))
        if hasattr(self, "optimizer") and self.built:
            self.optimizer.build(self.trainable_variables)

    def check_inputs(self, x, y=None, what=("x", "y"), labels=False):
        """The input contract of `fit`/`evaluate`/`predict`, before any step: numpy, tensors and tf.data alike.

        Images: a non-empty (N, H, W, C) batch of this model's size, raw pixels
        (`amp_tf.models.pixels.check_images`); labels: class ids in `[0, num_classes)`
        (`label_problem`; one-hot rows under the sparse loss, text labels refused), and present when
        `labels` (fit, evaluate). A `tf.data.Dataset` is checked on its first batch here
        (one extra iterator: a pipeline with a large shuffle buffer fills it once
        more; a seeded `reshuffle_each_iteration` shuffle starts one draw later),
        and every batch in-graph during training with the same messages.
        """
        if isinstance(x, tf.data.Dataset):
            first = next(iter(x.take(1)), None)
            if first is None:
                raise ValueError(f"{what[0]}: the dataset is empty; pass a dataset with at least one batch.")
            x, y, _ = keras.utils.unpack_x_y_sample_weight(first if isinstance(first, tuple) else (first,))
            if labels and y is None and isinstance(x, tf.Tensor):
                raise ValueError(f"{what[0]}: the dataset yields images only, no labels; training needs (images, "
                                 "labels) pairs, e.g. tf.data.Dataset.from_tensor_slices((x, y)) or "
                                 "tf.data.Dataset.zip((images, labels)).")
        if isinstance(x, (np.ndarray, tf.Tensor)):
            check_images(x, self.image_shape, self.normalizer.check, what[0])
            if labels and y is None:
                raise ValueError(f"{what[1]}: no labels given; pass the class ids of the images ({what[1]}=...).")
        if isinstance(y, (np.ndarray, tf.Tensor, list)):
            sparse = isinstance(getattr(self, "loss", None), keras.losses.SparseCategoricalCrossentropy)
            problem = label_problem(y, self.num_classes, what[1], sparse=sparse)
            if problem:
                raise ValueError(problem)

    def fit(self, x=None, y=None, *args, **kwargs):
        """`keras.Model.fit`, with the input contract checked before any step (`check_inputs`).

        Also checks `validation_data` up front. An in-graph check that fails on a
        later tf.data batch raises ValueError with its message first.
        """
        self.check_inputs(x, y, labels=True)
        val = kwargs.get("validation_data")
        if val is not None:
            vx, vy = (val, None) if isinstance(val, tf.data.Dataset) else (tuple(val) + (None,))[:2]
            self.check_inputs(vx, vy, ("validation_data images", "validation_data labels"))
        if not args:  # numpy arrays: amp-tf's tf.data settings (autotuning off), else Keras' own adapter
            x, y, kwargs = _array_input(x, y, kwargs, shuffle=kwargs.get("shuffle", True))
            if isinstance(x, tf.data.Dataset) and "shuffle" not in kwargs:
                kwargs["shuffle"] = False  # shuffled in the dataset (Keras warns about its default otherwise)
            val = kwargs.get("validation_data")
            if isinstance(val, (tuple, list)) and len(val) == 2 and _plain(*val):
                vbs = kwargs.pop("validation_batch_size", None) or kwargs.get("batch_size") or 32
                kwargs["validation_data"] = array_batches(val[0], val[1], vbs)
        with _message_first(labels_out_of_range(self.num_classes)):
            return super().fit(x, y, *args, **kwargs)

    def evaluate(self, x=None, y=None, *args, **kwargs):
        """`keras.Model.evaluate`, with the input contract checked first (`check_inputs`)."""
        self.check_inputs(x, y, labels=True)
        if not args:
            x, y, kwargs = _array_input(x, y, kwargs, shuffle=False)
        with _message_first(labels_out_of_range(self.num_classes)):
            return super().evaluate(x, y, *args, **kwargs)

    def predict(self, x, *args, **kwargs):
        """`keras.Model.predict` (logits of `x` anchored by its own batch), inputs checked first."""
        self.check_inputs(x)
        if not args:
            x, _, kwargs = _array_input(x, None, kwargs, shuffle=False)
        with _message_first(labels_out_of_range(self.num_classes)):
            return super().predict(x, *args, **kwargs)

    # -- saving ------------------------------------------------------------
    def get_config(self):
        config = super().get_config()
        config.update(
            self.wrapped_config(),
            consistency=self.augment.consistency,
            consistency_every=self.consistency_every,
            consistency_mode=self.augment.mode,
            seed=self.seed,
            num_classes=self.num_classes,
        )
        return config


def anchored_model(model, mean=None, std=None, **kwargs):
    """An `AnchoredModel` over ``anchor_backbone(model)`` that computes ``model``'s function on raw pixels.

    Starting point of anchored fine-tuning (`amp_tf.run.training.finetune_anchored`):
    the result computes exactly ``model``'s function for any anchor (on raw pixels),
    and trains like any `AnchoredModel`. Its pixel statistics stand for the model's
    leading preprocessing (`amp_tf.models.model_normalization`): a `PixelNormalization`,
    ``Rescaling`` and ``Normalization`` layers (e.g. ``keras.applications`` models
    built with ``include_preprocessing=True``) are absorbed exactly; a model without
    them gets identity statistics (it sees raw pixels, as before).

    Args:
        model: a vanilla classifier (e.g. ``build_backbone(..., anchored=False)``
            or a ``keras.applications`` model), ideally trained, taking raw pixels.
        mean, std: per-channel statistics in pixel units that replace the model's
            own `PixelNormalization`, or, for a model without one, normalise the
            pixels before its own preprocessing (e.g. ``0, 255`` for a model
            trained on ``x / 255``).
        **kwargs: `AnchoredModel` arguments (``consistency``, ``seed``, ...).

    Example:
        >>> from amp_tf.models import build_backbone
        >>> vanilla = build_backbone("resnet_small", (28, 28, 1), 10, anchored=False, width=8)
        >>> anchored_model(vanilla, seed=0).backbone.input.shape
        (None, 28, 28, 2)
    """
    from amp_tf.contract import check_logits_head
    from amp_tf.models.anchor import anchor_with_statistics

    check_logits_head(model, "anchored_model")  # AMP and the anchored loss need logits
    parts = anchor_with_statistics(model, mean, std)
    if parts.check_pixels is not None:
        kwargs.setdefault("check_pixels", parts.check_pixels)
    return AnchoredModel(parts.backbone, mean=parts.mean, std=parts.std, **kwargs)


class _message_first:
    """Re-raises a failed in-graph input check (InvalidArgumentError) as ValueError, its message first."""

    def __init__(self, *messages):
        self.messages = (*GRAPH_MESSAGES, LABELS_FRACTIONAL, *messages)

    def __enter__(self):
        return self

    def __exit__(self, kind, err, tb):
        if isinstance(err, tf.errors.InvalidArgumentError):
            text = str(err.message)
            found = [m for m in self.messages if m in text]
            if found:
                data = re.findall(r"\[(min:|max:)\] \[([^\]]*)\]", text[text.index(found[0]):])
                extra = f" ({', '.join(f'{k[:-1]} {v}' for k, v in data)})" if data else ""
                raise ValueError(found[0] + extra) from None
        return False


def _replica_id():
    ctx = tf.distribute.get_replica_context()
    return 0 if ctx is None else ctx.replica_id_in_sync_group


def _unscale(loss):
    """The loss as reported: undo the 1/num_replicas scaling of compute_loss."""
    n = tf.distribute.get_strategy().num_replicas_in_sync
    return loss * tf.cast(n, loss.dtype) if n > 1 else loss


def _plain(x, y=None):
    return isinstance(x, np.ndarray) and (y is None or isinstance(y, np.ndarray)) and len(x) > 0


def _array_input(x, y, kwargs, shuffle):
    """`(x, y, kwargs)` for Keras: numpy arrays become `array_batches` (Keras' array adapter prefetches with
    AUTOTUNE, whose teardown stalls the end of every epoch and call on a small machine: ~20 % of a
    2-core training epoch); anything else, or options only Keras' adapter has, goes through untouched."""
    if not _plain(x, y) or shuffle not in (True, False) or {"sample_weight", "validation_split",
                                                             "steps_per_epoch", "steps"} & set(kwargs):
        return x, y, kwargs
    if y is not None and len(y) != len(x):
        raise ValueError(f"y: {len(y)} labels for {len(x)} images; pass one label per image.")
    kwargs = dict(kwargs)
    kwargs.pop("shuffle", None)
    batch_size = kwargs.pop("batch_size", None) or 32
    return array_batches(x, y, batch_size, shuffle=bool(shuffle)), None, kwargs

