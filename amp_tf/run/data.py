"""A job's ID and OOD data: `IDData` (raw pixels in memory, split into train / validation /
test with the per-channel training statistics the models carry), `StreamedIDData` (the same
views over tf.data for sets too large for memory), and the loaders (`load_id`, `load_ood`,
`load_fmnist_suite`, `load_id_stream`, `load_ood_streams`). `amp_tf.run.pipeline.run_job`
runs a job on them; every name here still imports from `amp_tf.run.pipeline`."""
from __future__ import annotations

import dataclasses

import numpy as np

from amp_tf.models.pixels import check_pixels


@dataclasses.dataclass
class IDData:
    """The ID images of a job, raw pixels (uint8), split three ways.

    Attributes:
        name: registry name of the ID set.
        x_train, y_train: training images and labels.
        x_val, y_val: ID validation images, held out of training: early
            stopping, the serving threshold, every selection.
        x_test, y_test: the reported ID test set.
        num_classes: class count.
        mean, std: per-channel statistics of `x_train` in pixel units.
        sources: where each split was read, ``{"train": path, "test": path}`` (when
            the loader tells; recorded in job.json).
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    mean: np.ndarray = None
    std: np.ndarray = None
    sources: dict = None

    def __post_init__(self):
        from amp_tf.data.preprocessing import channel_stats

        for k in ("x_train", "x_val", "x_test"):
            check_pixels(getattr(self, k), k)
        if self.mean is None or self.std is None:
            self.mean, self.std = channel_stats(self.x_train)

    @property
    def image_shape(self):
        return tuple(self.x_train.shape[1:])

    def sizes(self):
        return {"train": len(self.x_train), "val": len(self.x_val), "test": len(self.x_test)}

    # The three views the job takes of its ID data (`StreamedIDData` has the same):
    def training_input(self):
        """`(x, y, val)` for `amp_tf.run.training.train`: the training arrays and the validation pair."""
        return self.x_train, self.y_train, (self.x_val, self.y_val)

    def anchor_images(self):
        """The images AMP's anchors are picked among: the training images."""
        return self.x_train

    def test_set(self):
        """The reported ID set: `(images, labels)`."""
        return self.x_test, self.y_test


@dataclasses.dataclass
class StreamedIDData:
    """ID data too large for memory (ImageNet-sized folders or tfds sets), streamed through tf.data.

    The same views as `IDData` (`training_input`, `anchor_images`, `test_set`,
    `sizes`, `x_val`), so `run_job` runs either. Built by `load_id_stream`.

    Attributes:
        name: the ID set (the validation set's name).
        num_classes: class count.
        image_shape: the crops' shape.
        mean, std: per-channel statistics in pixel units (given, e.g. ImageNet's).
        train: a repeated, batched tf.data stream of (raw-pixel float crops, labels).
        steps_per_epoch: training batches per epoch.
        x_val, y_val: the ID validation images in memory (uint8): the serving threshold.
        test: the reported ID set: a tf.data stream of (uint8 images, labels) batches.
        anchor_pool: `() -> uint8 images` the anchors are picked among; called once, when the
            anchors are picked (after training: the shuffled training stream is read in the same
            order as before the job was streamed).
        num_train: training images per epoch.
    """

    name: str
    num_classes: int
    image_shape: tuple
    mean: np.ndarray
    std: np.ndarray
    train: object
    steps_per_epoch: int
    x_val: np.ndarray
    y_val: np.ndarray
    test: object
    anchor_pool: object
    num_train: int | None = None

    def training_input(self):
        return self.train, self.steps_per_epoch, None

    def anchor_images(self):
        if callable(self.anchor_pool):
            self.anchor_pool = self.anchor_pool()
        return self.anchor_pool

    def test_set(self):
        return self.test, None

    def sizes(self):
        return {"train": self.num_train, "val": len(self.x_val), "test": None,
                "steps_per_epoch": int(self.steps_per_epoch)}


def split_id(name, x_all, y_all, x_test, y_test, val_size, seed=0, train_limit=None, num_classes=None,
             min_val=20, sources=None):
    """`IDData` from a training pool: `val_size` images held out by a seeded permutation.

    The validation images are the first `val_size` of `permutation(seed)`; the
    rest, in their original order, are the training images (then the first
    `train_limit` of them).
    """
    val_size = int(val_size)
    if val_size < min_val:
        raise ValueError(f"val_size: need at least {min_val} ID validation images (serving threshold, "
                         f"selection), got {val_size}.")
    if val_size >= len(x_all):
        raise ValueError(f"val_size: {val_size} leaves no training images out of {len(x_all)}.")
    if train_limit is not None and int(train_limit) < 1:
        raise ValueError(f"train_limit: expected an int >= 1 (or no limit), got {train_limit}.")
    order = np.random.default_rng(seed).permutation(len(x_all))
    val_idx, train_idx = order[:val_size], np.sort(order[val_size:])
    if train_limit:
        train_idx = train_idx[: int(train_limit)]
    y_all = np.asarray(y_all)
    n = int(num_classes) if num_classes else int(y_all.max()) + 1
    return IDData(name, x_all[train_idx], y_all[train_idx], x_all[val_idx], y_all[val_idx],
                  np.asarray(x_test), np.asarray(y_test), n, sources=sources)


def load_id(name, val_size=5000, seed=0, train_limit=None, eval_limit=None, data_dir=None, download=False):
    """`split_id` of a registry set's `train` split, with its `test` split (first `eval_limit`)."""
    from amp_tf import data

    kw = dict(data_dir=data_dir, download=download)
    train_set = data.load(name, "train", **kw)
    x_all, y_all = data.to_numpy(train_set)
    test_set = data.load(name, "test", **kw)
    x_test, y_test = data.to_numpy(test_set, limit=eval_limit or None)
    sources = {"train": train_set.source, "test": test_set.source}  # val: held out of train
    return split_id(name, x_all, y_all, x_test, y_test, val_size, seed, train_limit,
                    num_classes=train_set.num_classes, sources=sources)


def load_ood(names, image_shape, resize=None, convert_channels=False, limit=None, data_dir=None,
             download=False, skip_missing=False, log=print):
    """`({name: raw-pixel images}, {skipped name: reason})` in the ID geometry.

    Unknown names fail before anything loads; with `skip_missing`, sets whose
    data is not on this machine are skipped with one line each.
    """
    from amp_tf.data import DataNotFoundError, registry
    from amp_tf.data.loading import load_images

    for n in names:
        registry.resolve(n)
    ood, skipped = {}, {}
    for n in names:
        try:
            x, _, _ = load_images(n, "test", image_shape[:2], image_shape[-1], resize=resize,
                                  convert_channels=convert_channels, limit=limit, data_dir=data_dir,
                                  download=download)
        except DataNotFoundError as err:
            if not skip_missing:
                raise
            skipped[n] = (str(err).strip().splitlines() or [type(err).__name__])[0]
            log(f"skipped {n}: {skipped[n]}")
            continue
        ood[n] = x
    return ood, require_some_ood(ood, skipped)


def load_fmnist_suite(job, seed=0, data_dir=None, download=False, log=print):
    """The Fashion-MNIST suite of a job (`amp_tf.config.JobConfig`): `(IDData, {OOD set: images}, near)`.

    The ID set is `job.data.id_set` (``fashion_mnist``, or ``fmnist_holdout_id`` in the
    holdout mode), split with `seed` and the job's validation size and limits; the OOD
    sets are `job.ood` (empty: the far-OOD and covariate-shift sets of
    `amp_tf.data.fmnist_suite`). With `job.data.near`, `near` is the near-OOD group for
    `run_job(near=...)`: per class-holdout split, its `IDData` (the same split rules)
    and its held-out classes `{name: images}`; else empty. The trainer and the
    benchmarks load the suite here.
    """
    from amp_tf.data import fmnist_suite

    dc = job.data
    kw = dict(val_size=dc.val_size, seed=seed, train_limit=dc.train_limit, eval_limit=dc.eval_limit,
              data_dir=data_dir, download=download)
    d = load_id(dc.id_set, **kw)
    ood, _ = load_ood(list(job.ood) or fmnist_suite()["ood"], d.image_shape, limit=dc.eval_limit,
                      data_dir=data_dir)
    near = []
    for ood_name, id_name in (fmnist_suite()["near"].items() if dc.near else ()):
        nd = load_id(id_name, **kw)
        n_ood, _ = load_ood([ood_name], nd.image_shape, limit=dc.eval_limit, data_dir=data_dir)
        log(f"near-OOD split {id_name}: train {len(nd.x_train)}; OOD {ood_name} ({len(n_ood[ood_name])})")
        near.append((nd, n_ood))
    return d, ood, near


def load_id_stream(train, val, image_size, batch_size, mean, std, seed=0, augment=True, train_limit=None,
                   eval_limit=None, anchor_pool=1024, threshold_size=1000, eval_batch_size=64, load_kw=None):
    """`StreamedIDData` of an ImageNet-sized ID set (`amp_tf.data.streaming`'s transforms).

    Training: random-resized crops of `image_size` (+ flip with `augment`) of the
    shuffled (`seed`) training set, `train_limit` images per epoch. Validation:
    center crops; the first `threshold_size` images (at most half of a small set)
    set the serving threshold and are held in memory, the rest (the first
    `eval_limit`) are the reported ID set, in batches of `eval_batch_size`. The
    anchors are picked among the first `anchor_pool` training images.

    Args:
        train, val: `(name, split)` of the training and validation sets
            (`("imagenet2012", "train")`, `("folder:/data/train", "train")` ...).
        mean, std: the per-channel statistics the models carry (pixel units).
        load_kw: more `amp_tf.data.load` arguments for both (data_dir, download, manual_dir).
    """
    from amp_tf import data
    from amp_tf.data.streaming import eval_batches, train_dataset

    kw = dict(load_kw or {})
    train_set = data.load(train[0], train[1], shuffle=True, seed=seed, **kw)
    val_set = data.load(val[0], val[1], **kw)
    if not train_set.num_classes:
        raise ValueError(f"{train[0]}: expected one subfolder per class, found images without class subfolders.")
    if train_set.class_names != val_set.class_names:
        raise ValueError(f"{val[0]}: its class subfolders differ from those of {train[0]} "
                         f"({len(val_set.class_names or ())} vs {len(train_set.class_names)} classes).")
    ds, steps = train_dataset(train_set, batch_size, image_size, seed, augment, train_limit)
    n_thr = threshold_count(val[0], val_set.num_examples, threshold_size)  # refused before any training
    held = eval_batches(val_set.dataset.take(n_thr), image_size)
    x_val, y_val = (np.concatenate(a) for a in zip(*held.as_numpy_iterator()))

    def pool():
        return np.concatenate([xb for xb, _ in eval_batches(train_set.dataset, image_size,
                                                            limit=anchor_pool).as_numpy_iterator()])

    test = eval_batches(val_set.dataset.skip(n_thr), image_size, eval_limit, batch_size=eval_batch_size)
    n = train_set.num_examples if train_limit is None else min(train_limit, train_set.num_examples or train_limit)
    return StreamedIDData(val[0], int(train_set.num_classes), (image_size, image_size, 3),
                          np.asarray(mean, np.float64), np.asarray(std, np.float64), ds, steps, x_val, y_val,
                          test, pool, n)


def threshold_count(name, num_val, threshold_size):
    """How many validation images set the serving threshold: `threshold_size`, at most half of a small set."""
    from amp_tf.serve.export import MIN_ID_IMAGES

    n_thr = threshold_size
    if num_val:  # a small validation set: half sets the threshold, half is reported
        n_thr = min(n_thr, num_val // 2)
    if n_thr < MIN_ID_IMAGES:
        raise ValueError(f"{name}: {n_thr} validation images for the serving threshold; it needs at least "
                         f"{MIN_ID_IMAGES} (half of a small validation set is used): give a larger validation "
                         "set (--val-folder) or --threshold-size.")
    return n_thr


def load_ood_streams(names, image_size, limit=None, batch_size=64, load_kw=None, log=print):
    """`({name: tf.data stream of (uint8 images, labels) batches}, {skipped name: reason})`.

    Each set is center-cropped like the ID validation images, except ImageNet-C
    (`imagenet2012_corrupted/...`: 224x224 center crops already), which is only
    resized. Sets whose data is not on this machine are skipped with one line each.
    """
    from amp_tf import data
    from amp_tf.data.streaming import eval_batches

    ood, skipped = {}, {}
    for n in names:
        try:
            s = data.load(n, "test", **(load_kw or {}))
        except data.DataNotFoundError as err:
            skipped[n] = (str(err).strip().splitlines() or [type(err).__name__])[0]
            log(f"skipped {n}: {skipped[n]}")
            continue
        crop = not n.startswith("imagenet2012_corrupted/")
        ood[n] = eval_batches(s.dataset, image_size, limit, crop, batch_size)
    return ood, require_some_ood(ood, skipped)


def require_some_ood(ood, skipped):
    """`skipped`, when at least one OOD set loaded (or none was asked for); else, before any training, a
    ValueError naming every set asked for and why it was skipped: a job with no OOD set to score would run
    for nothing and report nothing."""
    if ood or not skipped:
        return skipped
    why = "; ".join(f"{n}: {r}" for n, r in skipped.items())
    raise ValueError(f"--ood: none of the OOD sets could be loaded, so nothing would be scored ({why}). Give at "
                     "least one set that is on this machine (a folder of images, or a prepared data set).")
