"""The one training function behind every trainer (`trainers/*` are argparse shells).

`train(config, x, y, ...)` builds the backbone (anchored or vanilla) under a
distribution strategy, compiles SGD with the step schedule of the paper, and
runs `model.fit` with TensorBoard, a `.keras` checkpoint per epoch, and
`BackupAndRestore` (exact resume: see below).

Exact resume after a kill: the order of the training data and the random
crop/flip of epoch `e` are pure functions of `(seed, e)`, the anchors and `T`
of step `s` are pure functions of `(seed, s, replica)`, and BackupAndRestore
restores weights, optimizer state (including the step counter) and the epoch
at the last completed epoch. A run killed in epoch `e` restarts epoch `e` from
its first batch with the state saved at the end of epoch `e - 1`, so with
`tf.config.experimental.enable_op_determinism()` its final weights equal
those of an uninterrupted run. `double_checkpoint=True` keeps the previous
backup, so a checkpoint half-written at the kill never replaces a good one.

Example:

>>> import numpy as np
>>> cfg = TrainConfig(arch="resnet_small", epochs=1, batch_size=32,
...                   backbone_kwargs={"width": 8})
>>> x = np.random.randint(0, 256, (64, 28, 28, 1)).astype("uint8")   # raw pixels
>>> y = np.random.randint(0, 10, 64)
>>> model, history = train(cfg, x, y, num_classes=10, verbose=0)
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from amp_tf.method.anchoring import AnchoredModel
from amp_tf.compat import patch_multiworker_fit
from amp_tf.config import TrainConfig, finetune_options, warmup_epochs  # noqa: F401  (defined without TensorFlow)
from amp_tf.data import tfdata
from amp_tf.run.distribute import get_strategy, sync_batchnorm, worker_info
from amp_tf.run.guards import DivergenceStop, TrainingDiverged  # noqa: F401  (importable from here as before)
from amp_tf.run.guards import FolderCheck as _FolderCheck
from amp_tf.run.files import write_json  # noqa: F401  (its old home; import it from amp_tf.run.files)
from amp_tf.models import build_backbone
from amp_tf.models.pixels import check_pixels
from amp_tf.contract import check_finite_weights, check_image_shape, check_int, check_logits_head
from amp_tf.method.labels import label_problem


def lr_schedule(cfg, steps_per_epoch):
    """The lr schedule of `cfg`: lr x gamma at each milestone epoch, or (no milestones) a linear
    warm-up of `cfg.warmup_epochs` into a cosine decay to 0 (None: the recipe's min(1, epochs / 10)
    epochs, as the CLI's; 0: a constant lr)."""
    boundaries = [int(m * steps_per_epoch) for m in cfg.lr_milestones]
    values = [cfg.lr * cfg.lr_gamma**i for i in range(len(boundaries) + 1)]
    base = (
        keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
        if boundaries else cfg.lr
    )
    epochs = warmup_epochs(cfg.epochs, cfg.lr_milestones) if cfg.warmup_epochs is None else cfg.warmup_epochs
    warm = int(epochs * steps_per_epoch)
    if warm and boundaries:
        raise ValueError("warmup_epochs with lr_milestones: pick one (not combined here).")
    if warm:
        return keras.optimizers.schedules.CosineDecay(
            0.0, max(1, cfg.epochs * steps_per_epoch - warm), warmup_target=cfg.lr, warmup_steps=warm
        )
    return base


def _crop_flip(images, seed, padding):
    """Random crop with zero padding + horizontal flip, per sample, stateless."""
    b = tf.shape(images)[0]
    h, w = images.shape[1], images.shape[2]
    padded = tf.pad(images, [[0, 0], [padding, padding], [padding, padding], [0, 0]])
    s = tf.random.experimental.stateless_split(seed, 3)
    oy = tf.random.stateless_uniform([b], s[0], 0, 2 * padding + 1, dtype=tf.int32)
    ox = tf.random.stateless_uniform([b], s[1], 0, 2 * padding + 1, dtype=tf.int32)
    hp, wp = float(h + 2 * padding - 1), float(w + 2 * padding - 1)
    oyf, oxf = tf.cast(oy, tf.float32), tf.cast(ox, tf.float32)
    boxes = tf.stack([oyf / hp, oxf / wp, (oyf + h - 1) / hp, (oxf + w - 1) / wp], axis=1)
    out = tf.image.crop_and_resize(padded, boxes, tf.range(b), (h, w))  # exact: integer boxes
    flip = tf.random.stateless_uniform([b], s[2]) < 0.5
    return tf.where(flip[:, None, None, None], tf.reverse(out, [2]), out)


def epoch_dataset(x, y, batch_size, seed=0, epochs=1, start_epoch=0, augment="crop_flip",
                  padding=4):
    """Batches of (image, label) for epochs `start_epoch..epochs-1`, deterministic per epoch.

    Epoch `e`'s order is `argsort(stateless_uniform(seed=(seed, e)))` and each
    batch's augmentation is seeded by `(seed, e, batch)`: a restart at epoch
    `e` sees exactly the batches an uninterrupted run would. Incomplete last
    batches are dropped (every step has the same global batch).
    """
    x = np.asarray(x)
    y = np.asarray(y)
    n = len(x)
    if n == 0:
        raise ValueError("x: the training set is empty.")
    if len(y) != n:
        raise ValueError(f"y: {len(y)} labels for {n} images.")
    steps = n // batch_size
    if steps == 0:
        raise ValueError(f"batch_size: {batch_size} is larger than the training set ({n}).")
    if augment not in ("crop_flip", "none"):
        raise ValueError(f"augment: expected 'crop_flip' or 'none', got {augment!r}.")
    xt = tf.constant(x)  # kept in its dtype (uint8: 4x less memory), cast per batch
    yt = tf.constant(y)

    def one_epoch(e):
        perm = tf.argsort(tf.random.stateless_uniform([n], tf.stack([tf.cast(seed, tf.int64), e])))
        idx = tf.reshape(perm[: steps * batch_size], [steps, batch_size])
        batches = tf.data.Dataset.from_tensor_slices((idx, tf.range(steps, dtype=tf.int64)))

        def fetch(i, step):
            xb, yb = tf.cast(tf.gather(xt, i), tf.float32), tf.gather(yt, i)
            if augment == "crop_flip":
                s = tf.stack([tf.cast(seed, tf.int64) + 1, e * 100003 + step])
                xb = _crop_flip(xb, s, padding)
            return xb, yb

        return batches.map(fetch, num_parallel_calls=tfdata.map_calls(per_batch=True), deterministic=True)

    ds = tf.data.Dataset.range(start_epoch, epochs).flat_map(one_epoch)
    return tfdata.finish(ds), steps


def backup_epoch(backup_dir):
    """The epoch BackupAndRestore will resume at (0 when there is no backup)."""
    meta = Path(backup_dir) / "training_metadata.json"
    try:
        return int(json.loads(meta.read_text())["epoch"])
    except (OSError, ValueError, KeyError):
        return 0


def build_model(cfg, image_shape, num_classes, init_from=None):
    """The anchored model (or the vanilla backbone), uncompiled.

    With `init_from` (a trained vanilla `keras.Model` or the path of its `.keras`
    file) and `cfg.anchored`, the anchored model starts from it: `anchor_backbone`
    (function-preserving) with the vanilla model's own statistics.
    """
    if init_from is not None:
        if not cfg.anchored:
            raise ValueError("init_from: only an anchored model is initialised from a vanilla one.")
        from amp_tf.method.anchoring import anchored_model

        vanilla = init_from
        if not isinstance(vanilla, keras.Model):
            path = Path(vanilla)
            if not path.is_file():
                raise FileNotFoundError(f"init_from: {path} is not a file; pass a vanilla .keras model.")
            vanilla = keras.models.load_model(path, compile=False)
        if isinstance(vanilla, AnchoredModel):
            raise ValueError("init_from: expected a vanilla model; this one is already anchored.")
        check_model_for(vanilla, image_shape, num_classes, "init_from")
        return anchored_model(vanilla, consistency=cfg.consistency, consistency_every=cfg.consistency_every,
                              consistency_mode=cfg.consistency_mode, seed=cfg.seed, num_classes=num_classes)
    stats = {} if cfg.anchored else {"mean": cfg.mean, "std": cfg.std}
    backbone = build_backbone(
        cfg.arch, tuple(image_shape), num_classes, anchored=cfg.anchored, **stats, **cfg.backbone_kwargs
    )
    if not cfg.anchored:
        return backbone
    return AnchoredModel(
        backbone,
        consistency=cfg.consistency,
        consistency_every=cfg.consistency_every,
        consistency_mode=cfg.consistency_mode,
        mean=cfg.mean,
        std=cfg.std,
        seed=cfg.seed,
        num_classes=num_classes,
    )


def compile_model(model, cfg, steps_per_epoch):
    from amp_tf.run.optimizers import make_sgd

    opt = make_sgd(lr_schedule(cfg, steps_per_epoch), momentum=cfg.momentum,
                   weight_decay=cfg.weight_decay or 0.0, weight_decay_mode=cfg.weight_decay_mode)
    model.compile(
        optimizer=opt,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile=cfg.jit_compile,
    )
    return model


class dtype_policy:
    """Context manager: the global Keras dtype policy ``mixed_bfloat16`` inside when `mixed`
    (else unchanged), and the previous policy restored on exit, also after an error.

    Example:
        >>> import keras
        >>> with dtype_policy(True):
        ...     keras.mixed_precision.global_policy().name
        'mixed_bfloat16'
        >>> keras.mixed_precision.global_policy().name
        'float32'
    """

    def __init__(self, mixed):
        self.mixed = bool(mixed)
        self.before = None

    def __enter__(self):
        import keras

        self.before = keras.mixed_precision.global_policy()
        if self.mixed:
            keras.mixed_precision.set_global_policy("mixed_bfloat16")
        return self

    def __exit__(self, *exc):
        import keras

        keras.mixed_precision.set_global_policy(self.before)
        return False


@contextlib.contextmanager
def op_determinism(on):
    """TF op determinism inside when `on` (else unchanged); the previous state is restored on exit.

    Example:
        >>> with op_determinism(True):
        ...     pass
    """
    from tensorflow.python.framework import config as tf_config  # enable/disable/is_..._enabled

    before = tf_config.is_op_determinism_enabled()
    if on and not before:
        tf_config.enable_op_determinism()
    try:
        yield
    finally:
        if on and not before:
            tf_config.disable_op_determinism()


def train(cfg, x, y, num_classes, val=None, out_dir=None, callbacks=(), verbose="auto",
          backup=True, strategy=None, init_from=None):
    """Trains per `cfg` on in-memory raw-pixel images; returns (model, history).

    Args:
        cfg: a `TrainConfig`; `cfg.mean`/`cfg.std` None are computed from `x`.
        x, y: training images in pixel units (N, H, W, C) (uint8, or float 0..255)
            and int labels; or `x` a repeated, batched `tf.data.Dataset` of such
            pairs and `y` the number of steps per epoch (then pass the statistics
            in `cfg`).
        num_classes: number of classes.
        val: optional `(x_val, y_val)` for validation loss/accuracy each epoch.
        out_dir: run folder: `tensorboard/`, `checkpoints/last.keras`, `backup/`.
        callbacks: more Keras callbacks (e.g. `OODMetricsCallback`).
        backup: BackupAndRestore (resume after a kill): True = under `out_dir/backup`,
            a path = that folder, False = off. Non-chief workers add `worker<i>/`.
        strategy: a `tf.distribute.Strategy`; default from `cfg.strategy`.
        init_from: a trained vanilla model (or its `.keras` path): anchored
            fine-tuning from it (see `build_model`, `finetune_anchored`).
    """
    # the global dtype policy and op determinism are restored afterwards
    with dtype_policy(cfg.mixed_precision), op_determinism(cfg.deterministic):
        return _train(cfg, x, y, num_classes, val, out_dir, callbacks, verbose, backup, strategy, init_from)


def _train(cfg, x, y, num_classes, val, out_dir, callbacks, verbose, backup, strategy, init_from):
    keras.utils.set_random_seed(cfg.seed)
    strategy = strategy or get_strategy(cfg.strategy)
    cbs, backup_dir = _run_callbacks(out_dir, backup, callbacks)
    start = backup_epoch(backup_dir) if (backup and backup_dir) else 0
    cfg = _with_statistics_of(cfg, x)
    ds, steps, sample = _training_data(cfg, x, y, start)
    val_data = None
    if val is not None:
        val_data = tf.data.Dataset.from_tensor_slices((np.asarray(check_pixels(val[0], "val"), "float32"),
                                                       val[1]))
        val_data = tfdata.finish(val_data.batch(cfg.batch_size))
    with strategy.scope():
        model = build_model(cfg, sample.shape[1:], num_classes,
                            init_from=init_from if init_from is not None else cfg.init_from)
        if strategy.num_replicas_in_sync > 1:
            sync_batchnorm(model)
        compile_model(model, cfg, steps)
        model(sample[:2])  # build the sublayers (BackupAndRestore needs a built model)
        if os.environ.get("AMP_TF_NO_COMPAT_PATCH") != "1":  # the test of the bug turns it off
            patch_multiworker_fit(model, strategy)
    history = model.fit(
        ds,
        epochs=cfg.epochs,
        initial_epoch=0,
        steps_per_epoch=steps,
        validation_data=val_data,
        callbacks=cbs,
        verbose=verbose,
        shuffle=False,  # the dataset is already in its (seeded, per-epoch) order
    )
    return model, history


def _run_callbacks(out_dir, backup, callbacks):
    """``(callbacks, backup_dir)``: `DivergenceStop` and, in a guarded run folder, its epoch-end check
    (first: a vanished folder is noticed before anything writes into it again); with a run folder,
    BackupAndRestore, `callbacks`, a `.keras` checkpoint per epoch and TensorBoard; non-chief workers
    write to ``worker<i>/``."""
    from amp_tf.run.runfolder import epoch_check

    check = epoch_check(out_dir)
    first = [DivergenceStop()] + ([_FolderCheck(check)] if check is not None else [])
    cbs = list(callbacks)
    if out_dir is None:
        return first + cbs, None
    _, task_index, is_chief = worker_info()
    out_dir = Path(out_dir)
    sub = "" if is_chief else f"worker{task_index}/"  # non-chief workers write to scratch
    backup_dir = out_dir / sub / "backup"
    if backup not in (True, False, None):
        backup_dir = Path(backup) / sub
    if backup:
        cbs.insert(0, keras.callbacks.BackupAndRestore(str(backup_dir), double_checkpoint=True))
    (out_dir / sub / "checkpoints").mkdir(parents=True, exist_ok=True)
    cbs.append(keras.callbacks.ModelCheckpoint(str(out_dir / sub / "checkpoints" / "last.keras")))
    cbs.append(keras.callbacks.TensorBoard(str(out_dir / sub / "tensorboard"), update_freq="epoch"))
    return first + cbs, backup_dir


def _with_statistics_of(cfg, x):
    """`cfg` with the per-channel pixel statistics of `x` when it has none."""
    if cfg.mean is not None and cfg.std is not None:
        return cfg
    if isinstance(x, tf.data.Dataset):
        raise ValueError("cfg.mean / cfg.std: pass the training statistics with a tf.data input.")
    from amp_tf.data.preprocessing import channel_stats

    mean, std = channel_stats(check_pixels(x, "x"))
    return dataclasses.replace(cfg, mean=tuple(mean.tolist()), std=tuple(std.tolist()))


def _training_data(cfg, x, y, start):
    """``(dataset, steps per epoch, a sample batch as numpy)`` of arrays (from epoch `start`) or a stream."""
    if isinstance(x, tf.data.Dataset):
        # Streaming data (e.g. ImageNet): batched, preprocessed (image, label) pairs,
        # repeated by the caller; `y` is then the number of steps per epoch.
        # Resume restarts the epoch with the restored weights, but the data
        # order is the stream's, so it is not bit-exact as with arrays.
        return x, int(y), next(iter(x.take(1)))[0].numpy()
    ds, steps = epoch_dataset(
        x, y, cfg.batch_size, cfg.seed, cfg.epochs, start, cfg.augment, cfg.crop_padding
    )
    return ds, steps, np.asarray(x[: min(2, len(x))], "float32")


def finetune_anchored(vanilla, x, y, num_classes=None, epochs=2, **config):
    """Anchored fine-tuning: `anchor_backbone` on a trained vanilla model, then anchored training with T.

    Right after `anchor_backbone` the model computes exactly the vanilla function
    for any anchor, so tau is ~0 and AMP means nothing; the fine-tuning epochs
    teach it to depend on the anchor. See BENCHMARKS.md for what they buy.

    Any Keras classifier that `amp_tf.method.anchoring.anchored_model` accepts works (e.g. a
    ``keras.applications`` model with ``classifier_activation=None``): it must output logits.

    The defaults (2 epochs at lr 0.1) suit the main job's short-trained vanilla twin; for a converged
    model (e.g. yours) pass ``**amp_tf.recipe.FINETUNE_CONVERGED`` (12 epochs at lr 0.01: 0.32 points
    below a 94 % Fashion-MNIST model on validation, where the defaults lose 2.2; BENCHMARKS.md section 1).

    Args:
        vanilla: a trained vanilla `keras.Model` (raw pixels in, logits out) or its `.keras` path.
        x, y: training images (raw pixels) and labels (class ids; one-hot rows: pass ``y.argmax(-1)``).
        num_classes: default: the model's output width.
        epochs: fine-tuning epochs (an int >= 1).
        **config: other `TrainConfig` fields (lr, consistency, seed, batch_size, ...; defaults: `amp_tf.recipe`)
            and `train` arguments (val, out_dir, callbacks, verbose, backup, strategy); others are refused.
            ``mean``/``std`` (pixel units) normalise the pixels before a model
            without its own `PixelNormalization` (see `anchored_model`).

    Returns:
        `(AnchoredModel, history)`.

    Raises:
        ValueError: before any training: an unknown keyword, epochs or batch_size < 1, labels that are no
            class ids, a model that ends in a softmax or sigmoid (not logits), whose input does not take the
            images of `x`, or that cannot be anchored (named layer and what would work).

    Example:
        >>> import numpy as np
        >>> x = np.random.randint(0, 256, (64, 28, 28, 1)).astype("uint8")
        >>> y = np.random.randint(0, 10, 64)
        >>> vanilla, _ = train(TrainConfig(anchored=False, epochs=1, batch_size=32,
        ...                                backbone_kwargs={"width": 4}), x, y, 10, verbose=0)
        >>> model, _ = finetune_anchored(vanilla, x, y, epochs=1, batch_size=32, lr=0.01, verbose=0)
        >>> model.backbone.input.shape
        (None, 28, 28, 2)
    """
    from amp_tf.models.anchor import anchor_backbone

    epochs = check_int(epochs, "epochs", 1, note="fine-tuning epochs")
    config, train_kw = finetune_options(config)
    if not isinstance(vanilla, keras.Model):
        vanilla = keras.models.load_model(vanilla, compile=False)
    streamed = isinstance(x, tf.data.Dataset)
    check_model_for(vanilla, np.shape(x)[1:] if not streamed else None, num_classes, "vanilla")
    n = num_classes or int(vanilla.output_shape[-1])
    problem = None if streamed else label_problem(y, n, "y", sparse=True, compiled=False)
    if problem:
        raise ValueError(problem)
    stats = {k: config.pop(k) for k in ("mean", "std") if config.get(k) is not None}
    if stats:
        vanilla = _with_statistics(vanilla, stats.get("mean"), stats.get("std"))
    anchor_backbone(vanilla)  # refuses a model that cannot be anchored before any work
    return train(TrainConfig(anchored=True, epochs=epochs, **config), x, y, n, init_from=vanilla, **train_kw)



def check_model_for(model, image_shape, num_classes, what="model"):
    """The contract of a model given to train on data (`amp_tf.contract`): logits out (no final softmax /
    sigmoid), an input that takes `image_shape` images (a model taking any size takes all), and one
    output per class. `image_shape` / `num_classes` None: not checked."""
    check_logits_head(model, what)
    check_finite_weights(model, what)
    check_image_shape(tuple(model.input_shape[1:]), image_shape, f"{what}: the model", "the data's images")
    if num_classes is not None and int(model.output_shape[-1]) != int(num_classes):
        raise ValueError(f"{what}: the model has {model.output_shape[-1]} outputs; the data has {num_classes} "
                         "classes. Give a model trained on this data set's classes.")
    return model


def _with_statistics(vanilla, mean, std):
    """``vanilla`` behind a `PixelNormalization(mean, std)` (for a model without its own statistics)."""
    from amp_tf.models.pixels import find_normalization, pixel_normalization

    if mean is None or std is None:
        raise ValueError("mean/std: pass both (per-channel, in pixel units) or neither.")
    if find_normalization(vanilla) is not None:
        raise ValueError(
            "mean/std: the model carries its own statistics (PixelNormalization); do not pass mean/std."
        )
    inp = keras.Input(vanilla.input_shape[1:], name="images")
    channels = vanilla.input_shape[-1]
    norm = pixel_normalization(mean, std, channels, name="given_statistics")
    return keras.Model(inp, vanilla(norm(inp)), name=vanilla.name)
