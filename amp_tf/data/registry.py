"""One registry of named image sets, the `ImageSet` record and `load`.

Every entry maps a name to a loader function. A loader receives a `LoadRequest`
and returns an `ImageSet` whose ``dataset`` yields ``(uint8 HxWxC image, int64
label)`` pairs with a static shape. Preprocessing (resize, normalisation) is a
separate step, see `amp_tf.data.preprocess` (module `amp_tf.data.preprocessing`).

Names are plain (``"cifar10"``) or parametric (``"lsun/<category>"``,
``"folder:<path>"``): a parametric entry is registered with its pattern and
resolved by the prefix before ``<``.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import tensorflow as tf

from amp_tf.data import tfdata

_REGISTRY: dict[str, Callable[["LoadRequest"], "ImageSet"]] = {}


class DataNotFoundError(FileNotFoundError):
    """The data for a set is not on this machine (and download was not asked for)."""


@dataclasses.dataclass(frozen=True)
class LoadRequest:
    """What `load` passes to a loader (the arguments of `load`, normalised)."""

    name: str
    split: str = "train"
    data_dir: str | None = None
    download: bool = False
    seed: int | None = None
    shuffle: bool = False
    strict: bool = False
    manual_dir: str | None = None


@dataclasses.dataclass
class ImageSet:
    """A loaded image set.

    Attributes:
        name: The registry name it was loaded under.
        dataset: ``tf.data.Dataset`` of ``(uint8 [H, W, C], int64 [])`` pairs with
            static shape ``image_shape`` (H, W may be None for sets of mixed size).
        image_shape: ``(H, W, C)``.
        num_classes: Number of classes, or None (unlabelled / OOD-only labels).
        num_examples: Number of examples, or None when unknown.
        split: The split that was asked for.
        class_names: Class names when known.
        arrays: ``(images, labels)`` numpy arrays in dataset order for in-memory
            sets (the fast path of `to_numpy`), else None.
        skipped: Files that were skipped as unreadable (folder sets).
        source: Where the images were read (a file or folder path), when the loader
            tells: run folders record it (job.json's ``data_sources``).
    """

    name: str
    dataset: tf.data.Dataset
    image_shape: tuple
    num_classes: int | None
    num_examples: int | None
    split: str
    class_names: tuple | None = None
    arrays: tuple | None = dataclasses.field(default=None, repr=False)
    skipped: tuple = ()
    source: str | None = None


def register(name: str):
    """Decorator that adds a loader to the registry under ``name``.

    A name containing ``<`` is a pattern: every name that starts with the text
    before ``<`` is sent to this loader (e.g. ``"lsun/<category>"``).

    Args:
        name: Registry name or pattern.

    Returns:
        The decorator; it returns the loader unchanged.

    Example:
        >>> from amp_tf.data import registry
        >>> @registry.register("my_toy_set")
        ... def _load_toy(request): ...
        >>> "my_toy_set" in registry.names()
        True
        >>> _ = registry._REGISTRY.pop("my_toy_set")  # undo the example
    """

    def decorator(fn):
        if name in _REGISTRY:
            raise ValueError(f"data set name {name!r} is registered twice; pick another name.")
        _REGISTRY[name] = fn
        return fn

    return decorator


def names(include_patterns: bool = False) -> list[str]:
    """Registered data set names, sorted.

    Args:
        include_patterns: Also list the parametric forms, e.g. ``"folder:<path>"``,
            ``"lsun/<category>"``, ``"imagenet2012_corrupted/<corruption>_<1..5>"``.
            `load` accepts any name matching these patterns.

    Returns:
        The list of names.

    Example:
        >>> from amp_tf import data
        >>> "fashion_mnist" in data.names()
        True
        >>> "folder:<path>" in data.names(include_patterns=True)
        True
    """
    plain = sorted(n for n in _REGISTRY if "<" not in n)
    if include_patterns:
        plain += sorted(n for n in _REGISTRY if "<" in n)
    return plain


def resolve(name: str) -> Callable[[LoadRequest], ImageSet]:
    """Returns the loader for ``name`` (exact name first, then pattern prefix).

    Raises:
        ValueError: Unknown name; the message lists the known names.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"data set name must be a non-empty string, got {name!r}.")
    if name in _REGISTRY and "<" not in name:
        return _REGISTRY[name]
    for pattern, fn in _REGISTRY.items():
        if "<" in pattern:
            prefix = pattern.split("<", 1)[0]
            if name.startswith(prefix) and len(name) > len(prefix):
                return fn
    raise ValueError(
        f"unknown data set name {name!r}. Known names: {', '.join(names())}; "
        f"and the patterns: {', '.join(names(True)[len(names()):])}. "
        "Use one of these (see amp_tf.data.names())."
    )


def load(
    name: str,
    split: str = "train",
    data_dir: str | None = None,
    download: bool = False,
    seed: int | None = None,
    shuffle: bool = False,
    strict: bool = False,
    manual_dir: str | None = None,
) -> ImageSet:
    """Loads a registered image set.

    Args:
        name: A name from `names()`, or a pattern form such as ``"folder:/data/iSUN"``,
            ``"lsun/classroom"``, ``"imagenet2012_corrupted/gaussian_blur_3"``.
        split: ``"train"`` or ``"test"`` (tensorflow-datasets sets also accept their
            own split strings, e.g. ``"validation"`` or ``"train[:10%]"``).
        data_dir: Where the data lives (tfds ``data_dir``; the IDX folder for
            Fashion-MNIST). None uses the defaults.
        download: Allow tensorflow-datasets to download/prepare missing data.
            Without it, missing data fails within seconds with a how-to message.
        seed: Seed for shuffling (deterministic order when given).
        shuffle: Shuffle the examples (reshuffled each epoch).
        strict: Folder sets: raise on unreadable files instead of skipping them.
        manual_dir: tfds manual download dir (ImageNet tar files); default
            ``<data_dir>/downloads/manual``.

    Returns:
        An `ImageSet`.

    Raises:
        ValueError: Unknown name or split.
        DataNotFoundError: The data is not present and download was not asked for.

    Example:
        >>> from amp_tf import data
        >>> s = data.load("fmnist_holdout_ood", split="test")
        >>> s.image_shape, s.num_examples
        ((28, 28, 1), 4000)
    """
    loader = resolve(name)
    request = LoadRequest(
        name=name,
        split=split,
        data_dir=None if data_dir is None else str(data_dir),
        download=bool(download),
        seed=seed,
        shuffle=bool(shuffle),
        strict=bool(strict),
        manual_dir=None if manual_dir is None else str(manual_dir),
    )
    return loader(request)


def finish_dataset(ds: tf.data.Dataset, request: LoadRequest, shuffle_buffer: int) -> tf.data.Dataset:
    """Shared tail of every loader: optional seeded shuffle, then prefetch."""
    if request.shuffle:
        ds = ds.shuffle(max(1, int(shuffle_buffer)), seed=request.seed, reshuffle_each_iteration=True)
    return tfdata.finish(ds)


def from_arrays(
    request: LoadRequest,
    images: np.ndarray,
    labels: np.ndarray,
    num_classes: int | None,
    class_names=None,
) -> ImageSet:
    """Builds an in-memory `ImageSet` from uint8 [N,H,W,C] images and int64 labels."""
    images = np.asarray(images, dtype=np.uint8)
    labels = np.asarray(labels, dtype=np.int64)
    if images.ndim != 4 or labels.shape != (images.shape[0],):
        raise ValueError(
            f"internal: expected images [N,H,W,C] and labels [N], got {images.shape} and {labels.shape}."
        )
    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    ds = finish_dataset(ds, request, shuffle_buffer=len(images))
    return ImageSet(
        name=request.name,
        dataset=ds,
        image_shape=tuple(int(d) for d in images.shape[1:]),
        num_classes=num_classes,
        num_examples=int(len(images)),
        split=request.split,
        class_names=None if class_names is None else tuple(class_names),
        # Shuffled sets have a different order from the arrays: no fast path then.
        arrays=None if request.shuffle else (images, labels),
    )


def to_numpy(image_set: ImageSet, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Materialises a set as numpy arrays (first epoch order).

    In-memory sets (Fashion-MNIST, digits, blur, holdout, uniform folders) are
    returned straight from memory; other sets are read from the dataset in batches.

    Args:
        image_set: An `ImageSet` from `load`.
        limit: Return at most this many examples.

    Returns:
        ``(images uint8 [N, H, W, C], labels int64 [N])``; fresh copies.

    Raises:
        ValueError: The images differ in size (resize them with `preprocess`).

    Example:
        >>> from amp_tf import data
        >>> x, y = data.to_numpy(data.load("digits", split="test"), limit=5)
        >>> x.shape, x.dtype, y.dtype
        ((5, 28, 28, 1), dtype('uint8'), dtype('int64'))
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}.")
    if image_set.arrays is not None:
        images, labels = image_set.arrays
        end = len(images) if limit is None else min(limit, len(images))
        return np.array(images[:end]), np.array(labels[:end])
    ds = image_set.dataset
    if limit is not None:
        ds = ds.take(limit)
    spec = ds.element_spec[0]
    images, labels = [], []
    if spec.shape.is_fully_defined():
        for x, y in ds.batch(1024).as_numpy_iterator():
            images.append(x)
            labels.append(y)
        if not images:
            return np.zeros((0, *spec.shape), np.uint8), np.zeros((0,), np.int64)
        return np.concatenate(images).astype(np.uint8), np.concatenate(labels).astype(np.int64)
    for x, y in ds.as_numpy_iterator():
        if images and x.shape != images[0].shape:
            raise ValueError(
                f"{image_set.name}: images differ in size ({images[0].shape} vs {x.shape}), so they "
                "cannot be stacked into one array; resize them first, e.g. "
                "data.preprocess(s.dataset, mean, std, image_size=(32, 32), resize_method='tf')."
            )
        images.append(x)
        labels.append(y)
    if not images:
        return np.zeros((0, 0, 0, spec.shape[-1] or 0), np.uint8), np.zeros((0,), np.int64)
    return np.stack(images).astype(np.uint8), np.asarray(labels, dtype=np.int64)


def check_split(request: LoadRequest, allowed: tuple[str, ...], hint: str = "") -> None:
    """Raises ValueError when ``request.split`` is not one of ``allowed``."""
    if request.split not in allowed:
        raise ValueError(
            f"{request.name!r} has no split {request.split!r}; use split="
            + " or ".join(repr(a) for a in allowed)
            + (f" ({hint})" if hint else "")
            + "."
        )
