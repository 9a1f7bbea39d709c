"""Offline data: Fashion-MNIST from IDX files and its offline OOD suite.

* ``fashion_mnist``: the IDX files of Debian's ``dataset-fashion-mnist``
  (``/usr/share/datasets/fashion-mnist``), or a ``data_dir`` holding the four
  ``*-ubyte[.gz]`` files, or a prepared tensorflow-datasets copy.
* ``digits``: scikit-learn's ``load_digits`` (1,797 real 8x8 handwritten digits,
  shipped inside scikit-learn), values 0..16 rescaled to 0..255 and resized
  to 28x28x1 with antialiased bilinear (``resize_images(..., "tf")``). Labels are
  the digits 0..9 (not Fashion-MNIST classes). Split ``"test"`` only.
* ``fmnist_blur_1`` .. ``fmnist_blur_5``: the Fashion-MNIST test set under a
  Gaussian blur of rising strength, sigma = `BLUR_SIGMAS` = 1, 2, 3, 4, 6 pixels
  (ImageNet-C's gaussian_blur sigmas, here on 28x28 images; edge mode
  ``nearest``, kernel truncated at 4 sigma). Labels unchanged. Split ``"test"``.
* ``fmnist_holdout_id``: Fashion-MNIST classes 0..5 only (labels unchanged),
  both splits; ``fmnist_holdout_ood``: classes 6..9 of the test split (original
  labels 6..9, ``num_classes`` None). A near-OOD class-holdout benchmark.
* ``fmnist_holdout2_id`` / ``fmnist_holdout2_ood``: a second holdout split, ID
  classes 1, 2, 6, 7, 8, 9 relabelled 0..5 and OOD classes 0, 3, 4, 5 (see
  `HOLDOUT2_ID_CLASSES`; why this partition: comment above it).
"""
from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

import numpy as np

from amp_tf.contract import fashion_mnist_missing
from amp_tf.data import idx
from amp_tf.data.registry import (
    DataNotFoundError,
    ImageSet,
    LoadRequest,
    check_split,
    from_arrays,
    register,
)

logger = logging.getLogger("amp_tf.data")

#: Where Debian's dataset-fashion-mnist puts the files.
DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)

#: Gaussian sigmas (pixels) of fmnist_blur_1 .. fmnist_blur_5.
BLUR_SIGMAS = (1.0, 2.0, 3.0, 4.0, 6.0)

#: Class holdout: ID classes and OOD classes.
HOLDOUT_ID_CLASSES = (0, 1, 2, 3, 4, 5)
HOLDOUT_OOD_CLASSES = (6, 7, 8, 9)

_IDX_PREFIX = {"train": "train", "test": "t10k"}


@functools.lru_cache(maxsize=8)
def _read_idx_cached(images_path: str, labels_path: str, mtime: float) -> tuple[np.ndarray, np.ndarray]:
    del mtime  # part of the cache key only
    images, labels = idx.read_image_label_pair(images_path, labels_path)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def _idx_arrays(folder: Path, prefix: str):
    """The IDX pair in ``folder`` (cached per file path and mtime), or None."""
    pair = idx.find_idx_pair(folder, prefix)
    if pair is None:
        return None
    logger.info("Fashion-MNIST %s from IDX files in %s", prefix, folder)
    mtime = max(os.path.getmtime(p) for p in pair)
    return _read_idx_cached(str(pair[0]), str(pair[1]), mtime)


def fashion_mnist_arrays(
    split: str, data_dir: str | None = None, download: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST as numpy arrays, from the first source that is present.

    With ``data_dir``: IDX files in it (or its ``fashion-mnist/`` subfolder), or a
    prepared tfds copy in it (``download=True``: downloaded into it), and nothing
    else: the data is the one named, never the system copy. Without: Debian's IDX
    files, then a prepared tfds copy in the default tfds dir (``download=True``: a
    tfds download). `fashion_mnist_source` tells which file or folder was read.

    Args:
        split: ``"train"`` (60,000) or ``"test"`` (10,000).
        data_dir: Optional folder, see above.
        download: Allow a tfds download when nothing is present.

    Returns:
        ``(images uint8 [N, 28, 28, 1], labels int64 [N])``, read-only (cached).

    Raises:
        DataNotFoundError: No source present (fails at once, says how to fix it).
        IdxFormatError: A present IDX file is corrupt.

    Example:
        >>> x, y = fashion_mnist_arrays("test")
        >>> x.shape, int(y.max())
        ((10000, 28, 28, 1), 9)
    """
    if split not in _IDX_PREFIX:
        raise ValueError(f"Fashion-MNIST has no split {split!r}; use split='train' or 'test'.")
    arrays, source = _locate(split, data_dir, download)
    _SOURCES[(split, str(data_dir) if data_dir else None)] = source
    return arrays


#: Where each split was read: ``{(split, data_dir): path}`` (`fashion_mnist_source`).
_SOURCES = {}


def fashion_mnist_source(split: str, data_dir: str | None = None) -> str | None:
    """The file or folder Fashion-MNIST's `split` was last read from with this `data_dir`, or None."""
    return _SOURCES.get((split, str(data_dir) if data_dir else None))


def _locate(split, data_dir, download):
    """``(arrays, source)``. With `data_dir`, from there only (IDX files, a tfds copy, or a download into
    it): never from the system copy, so that the data is the one the user named."""
    prefix = _IDX_PREFIX[split]
    if data_dir:
        base = Path(data_dir).expanduser()
        for folder in (base, base / "fashion-mnist", base / "fashion_mnist"):
            arrays = _idx_arrays(folder, prefix)
            if arrays is not None:
                return arrays, str(idx.find_idx_pair(folder, prefix)[0])
        arrays = _tfds_arrays(split, data_dir, download=download)  # a tfds data dir passed as data_dir
        if arrays is not None:
            return arrays, str(base / "fashion_mnist")
        raise DataNotFoundError(fashion_mnist_missing(base, split) or f"data_dir {base}: Fashion-MNIST's "
                                f"{split} split is not there (its tensorflow-datasets copy is incomplete); "
                                "pass download=True (CLI: --download) to fetch it into it.")
    arrays = _idx_arrays(Path(DEBIAN_FASHION_MNIST_DIR), prefix)
    if arrays is not None:
        return arrays, str(idx.find_idx_pair(DEBIAN_FASHION_MNIST_DIR, prefix)[0])
    arrays = _tfds_arrays(split, None, download=download)  # default tfds data dir
    if arrays is not None:
        return arrays, "tensorflow-datasets' default data dir (fashion_mnist)"
    raise DataNotFoundError(
        f"Fashion-MNIST ({split}) not found: no {prefix}-images-idx3-ubyte[.gz] / "
        f"{prefix}-labels-idx1-ubyte[.gz] in {DEBIAN_FASHION_MNIST_DIR}, and no prepared "
        "tensorflow-datasets copy. Fix: `sudo apt-get install dataset-fashion-mnist` (offline "
        f"files in {DEBIAN_FASHION_MNIST_DIR}), or pass data_dir (CLI: --data-dir) pointing at a "
        "folder with the four *-ubyte[.gz] files, or download=True (CLI: --download) to fetch "
        "about 30 MiB through tensorflow-datasets."
    )


def _tfds_arrays(split: str, data_dir: str | None, download: bool = False):
    """Fashion-MNIST from tfds when prepared (or downloaded when asked), else None."""
    from amp_tf.data import tfds_sets
    from amp_tf.data.registry import to_numpy

    request = LoadRequest(name="fashion_mnist", split=split, data_dir=data_dir, download=download)
    try:
        image_set = tfds_sets.load_tfds(request)
    except DataNotFoundError:
        if download:
            raise  # why the download failed
        return None
    logger.info("Fashion-MNIST %s from tensorflow-datasets", split)
    images, labels = to_numpy(image_set)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


@register("fashion_mnist")
def load_fashion_mnist(request: LoadRequest) -> ImageSet:
    """Loads Fashion-MNIST (offline IDX files first, see `fashion_mnist_arrays`).

    Example:
        >>> from amp_tf import data
        >>> s = data.load("fashion_mnist", split="test")
        >>> s.image_shape, s.num_examples, s.num_classes
        ((28, 28, 1), 10000, 10)
    """
    check_split(request, ("train", "test"))
    images, labels = fashion_mnist_arrays(request.split, request.data_dir, request.download)
    out = from_arrays(request, images, labels, 10, FASHION_MNIST_CLASSES)
    out.source = fashion_mnist_source(request.split, request.data_dir)
    return out


@functools.lru_cache(maxsize=1)
def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 digits as uint8 [1797, 28, 28, 1] and int64 labels.

    Example:
        >>> x, y = digits_arrays()
        >>> x.shape, x.dtype
        ((1797, 28, 28, 1), dtype('uint8'))
    """
    from sklearn.datasets import load_digits

    from amp_tf.data.preprocessing import resize_images

    bunch = load_digits()
    small = np.clip(np.round(bunch.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)[..., None]
    images = resize_images(small, (28, 28), "tf")
    labels = bunch.target.astype(np.int64)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


@register("digits")
def load_digits_set(request: LoadRequest) -> ImageSet:
    """Loads the digits OOD set (split ``"test"``: all 1,797 images).

    Example:
        >>> from amp_tf import data
        >>> data.load("digits", split="test").num_examples
        1797
    """
    check_split(request, ("test",), "digits is an OOD evaluation set: all 1,797 images are in 'test'")
    images, labels = digits_arrays()
    return from_arrays(request, images, labels, 10, tuple(str(d) for d in range(10)))


def gaussian_blur(images: np.ndarray, sigma: float) -> np.ndarray:
    """Blurs uint8 [N, H, W, C] images with a Gaussian of ``sigma`` pixels.

    Edge mode ``nearest``, kernel truncated at 4 sigma (as ImageNet-C via skimage).

    Example:
        >>> x = np.zeros((1, 9, 9, 1), np.uint8); x[0, 4, 4, 0] = 255
        >>> y = gaussian_blur(x, 1.0)
        >>> int(y[0, 4, 4, 0]) < 255 and int(y[0, 4, 5, 0]) > 0
        True
    """
    from scipy.ndimage import gaussian_filter

    blurred = gaussian_filter(
        images.astype(np.float32), sigma=(0, sigma, sigma, 0), mode="nearest", truncate=4.0
    )
    return np.clip(np.round(blurred), 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=len(BLUR_SIGMAS))
def _blurred_test_set(level: int, source: tuple) -> np.ndarray:
    images, _ = fashion_mnist_arrays("test", *source)
    out = gaussian_blur(images, BLUR_SIGMAS[level - 1])
    out.setflags(write=False)
    return out


def _blur_loader(level: int):
    def load_blur(request: LoadRequest) -> ImageSet:
        check_split(request, ("test",), "blurred sets are made from the Fashion-MNIST test set")
        _, labels = fashion_mnist_arrays("test", request.data_dir, request.download)
        images = _blurred_test_set(level, (request.data_dir, request.download))
        return from_arrays(request, images, labels, 10, FASHION_MNIST_CLASSES)

    load_blur.__doc__ = f"Fashion-MNIST test set blurred with sigma={BLUR_SIGMAS[level - 1]} pixels."
    return load_blur


for _level in range(1, len(BLUR_SIGMAS) + 1):
    register(f"fmnist_blur_{_level}")(_blur_loader(_level))


def _holdout(images, labels, classes):
    keep = np.isin(labels, classes)
    return images[keep], labels[keep]


def _holdout_id_set(request, classes):
    """The ID side of a class-holdout split: `classes` only, label j = original class classes[j]."""
    check_split(request, ("train", "test"))
    images, labels = _holdout(*fashion_mnist_arrays(request.split, request.data_dir, request.download), classes)
    remap = np.full(10, -1, np.int64)
    remap[list(classes)] = np.arange(len(classes))
    names = tuple(FASHION_MNIST_CLASSES[c] for c in classes)
    out = from_arrays(request, images, remap[labels], len(classes), names)
    out.source = fashion_mnist_source(request.split, request.data_dir)
    return out


def _holdout_ood_set(request, classes):
    """The OOD side: the held-out `classes` of the test split, original labels."""
    check_split(request, ("test",), "the held-out classes are taken from the Fashion-MNIST test set")
    images, labels = _holdout(*fashion_mnist_arrays("test", request.data_dir, request.download), classes)
    return from_arrays(request, images, labels, None, FASHION_MNIST_CLASSES)


@register("fmnist_holdout_id")
def load_holdout_id(request: LoadRequest) -> ImageSet:
    """Fashion-MNIST classes 0..5 (labels unchanged), ``train`` or ``test``.

    Example:
        >>> from amp_tf import data
        >>> s = data.load("fmnist_holdout_id", split="test")
        >>> s.num_examples, s.num_classes
        (6000, 6)
    """
    return _holdout_id_set(request, HOLDOUT_ID_CLASSES)


@register("fmnist_holdout_ood")
def load_holdout_ood(request: LoadRequest) -> ImageSet:
    """Fashion-MNIST test images of classes 6..9 (original labels), split ``test``.

    Example:
        >>> from amp_tf import data
        >>> data.load("fmnist_holdout_ood", split="test").num_examples
        4000
    """
    return _holdout_ood_set(request, HOLDOUT_OOD_CLASSES)


def fmnist_suite(holdout: bool = False) -> dict:
    """The offline benchmark: ID set name and OOD set names.

    Args:
        holdout: Return the class-holdout (near-OOD) mode instead.

    Returns:
        ``{"id": "fashion_mnist", "ood": far + covariate sets, "near": {near OOD set: its ID set}}``
        (the groups of `amp_tf.data.groups`: far = digits, font_letters,
        skimage_patches; covariate = blur / JPEG / contrast / pixelate levels 1..5;
        near = the two class-holdout splits, each needing its own model), or
        ``{"id": "fmnist_holdout_id", "ood": ["fmnist_holdout_ood"]}`` with ``holdout=True``.
        Load the ID set with split ``"train"``/``"test"`` and the OOD sets with ``"test"``.

    Example:
        >>> fmnist_suite()["ood"][:4]
        ['digits', 'font_letters', 'skimage_patches', 'fmnist_blur_1']
    """
    from amp_tf.data.groups import GROUPS, NEAR_ID

    if holdout:
        return {"id": "fmnist_holdout_id", "ood": ["fmnist_holdout_ood"], "near": {}}
    return {"id": "fashion_mnist", "ood": list(GROUPS["far"]) + list(GROUPS["covariate"]), "near": dict(NEAR_ID)}


# --- Second class-holdout split (near-OOD) ---------------------------------
#
# Split 1 holds out Shirt, Sneaker, Bag, Ankle boot. Split 2 holds out T-shirt/top,
# Dress, Coat, Sandal: disjoint from split 1's OOD classes (together 8 of the 10
# classes are OOD in exactly one split; Trouser and Pullover are always ID), and
# every held-out class except Dress has a look-alike among the ID classes
# (T-shirt/top ~ Shirt, Coat ~ Pullover/Shirt, Sandal ~ Sneaker/Ankle boot), as
# Shirt ~ T-shirt/Pullover/Coat and Sneaker/Ankle boot ~ Sandal do in split 1.
# Each split needs its own model, trained on its ID classes.

#: Second class holdout: ID classes (remapped to labels 0..5 in this order) and OOD classes.
HOLDOUT2_ID_CLASSES = (1, 2, 6, 7, 8, 9)
HOLDOUT2_OOD_CLASSES = (0, 3, 4, 5)


@register("fmnist_holdout2_id")
def load_holdout2_id(request: LoadRequest) -> ImageSet:
    """Fashion-MNIST classes 1, 2, 6, 7, 8, 9 relabelled 0..5, ``train`` or ``test``.

    Label ``j`` is original class ``HOLDOUT2_ID_CLASSES[j]`` (Trouser, Pullover,
    Shirt, Sneaker, Bag, Ankle boot).

    Example:
        >>> from amp_tf import data
        >>> s = data.load("fmnist_holdout2_id", split="test")
        >>> s.num_examples, s.num_classes, s.class_names[2]
        (6000, 6, 'Shirt')
    """
    return _holdout_id_set(request, HOLDOUT2_ID_CLASSES)


@register("fmnist_holdout2_ood")
def load_holdout2_ood(request: LoadRequest) -> ImageSet:
    """Fashion-MNIST test images of classes 0, 3, 4, 5 (original labels), split ``test``.

    Example:
        >>> from amp_tf import data
        >>> data.load("fmnist_holdout2_ood", split="test").num_examples
        4000
    """
    return _holdout_ood_set(request, HOLDOUT2_OOD_CLASSES)
